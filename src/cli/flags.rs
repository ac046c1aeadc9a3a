//! The flags of `serve` and `token`, one argument at a time, and a `--config` file's.

use std::path::PathBuf;

use jwtguard::{Config, LogFormat};
use serde_json::{Map, Value};

use super::help::{USAGE, help};
use super::tools::{jwks, report, tool};
use super::{Command, Owned, help_command, pair, unexpected};

/// The most `--workers`: more processes than this serve no machine better.
pub(super) const MAX_WORKERS: usize = 256;

/// The command line as parsed so far.
pub(super) struct Flags {
    pub(super) config: Config,
    pub(super) protect: Vec<String>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) jwks: Option<PathBuf>,
    pub(super) kid: Option<String>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) alg: Option<String>,
    pub(super) log_file: Option<PathBuf>,
    pub(super) subcommand: Option<String>,
    pub(super) sub: Option<String>,
    pub(super) ttl: u64,
    pub(super) extra: Map<String, Value>,
    pub(super) seen_flag: bool,
    pub(super) supervise: bool,
    /// `--workers`: `None` for `auto`.
    pub(super) workers: Option<usize>,
    /// A `--config` file was read (one may not name another).
    pub(super) read_config: bool,
    pub(super) seal_key: Option<PathBuf>,
}

impl Flags {
    /// Takes one argument (and its value from `parser`); `Some` for `help` and
    /// `--version`, which end the parsing.
    pub(super) fn take(
        &mut self,
        arg: lexopt::Arg<'_>,
        parser: &mut lexopt::Parser,
    ) -> Result<Option<Command>, lexopt::Error> {
        use lexopt::prelude::*;
        let in_token = self.subcommand.as_deref() == Some("token");
        match arg {
            Value(word) if self.subcommand.is_none() && !self.seen_flag => {
                let word = word.string()?;
                match word.as_str() {
                    "serve" | "token" => self.subcommand = Some(word),
                    "seal-init" | "verify-log" => return Ok(Some(tool(&word, parser)?)),
                    "report" => return Ok(Some(report(parser)?)),
                    "jwks" => return Ok(Some(jwks(parser)?)),
                    "help" => return Ok(Some(help_command(parser)?)),
                    _ => return Err(format!("unknown command {word:?}").into()),
                }
            }
            Short('h') | Long("help") => {
                let text = match &self.subcommand {
                    Some(command) => help(command).unwrap_or_default(),
                    None => USAGE.to_owned(),
                };
                return Ok(Some(Command::Help(text)));
            }
            Short('V') | Long("version") => return Ok(Some(Command::Version)),
            Long("issuer") => self.config.issuer = Some(parser.value()?.string()?),
            Long("audience") => self.config.audience = Some(parser.value()?.string()?),
            Long("secret-file") => self.secret_file = Some(PathBuf::from(parser.value()?)),
            Long("jwks") => self.jwks = Some(PathBuf::from(parser.value()?)),
            Long("kid") if in_token => self.kid = Some(parser.value()?.string()?),
            Long("key-file") if in_token => self.key_file = Some(PathBuf::from(parser.value()?)),
            Long("alg") if in_token => self.alg = Some(parser.value()?.string()?),
            Long("jwks-url") if !in_token => self.config.jwks_url = Some(parser.value()?.string()?),
            Long("jwks-refresh") if !in_token => {
                let seconds: u64 = parser.value()?.parse()?;
                self.config.jwks_refresh = std::time::Duration::from_secs(seconds);
            }
            Long("token-cache") if !in_token => {
                self.config.token_cache = parser.value()?.parse()?
            }
            Long("upstream") if !in_token => self.config.upstream = Some(parser.value()?.string()?),
            Long("public") if !in_token => self.config.public.push(parser.value()?.string()?),
            Long("forward-auth") if !in_token => {
                self.config.forward_auth = Some(parser.value()?.string()?)
            }
            Long("strip-authorization") if !in_token => self.config.strip_authorization = true,
            Long("allow-body-on-any-method") if !in_token => {
                self.config.allow_body_on_any_method = true
            }
            Long("claim-header") if !in_token => {
                let value = parser.value()?.string()?;
                self.config
                    .claim_headers
                    .push(pair("--claim-header", value)?);
            }
            Long("require") if !in_token => {
                let value = parser.value()?.string()?;
                self.config.require.push(pair("--require", value)?);
            }
            Long("trusted-proxy") if !in_token => {
                let value = parser.value()?.string()?;
                let cidr = value
                    .parse()
                    .map_err(|problem: String| format!("invalid --trusted-proxy: {problem}"))?;
                self.config.trusted_proxies.push(cidr);
            }
            Long("client-ip-header") if !in_token => {
                let value = parser.value()?.string()?;
                let header = value
                    .parse()
                    .map_err(|problem: String| format!("invalid --client-ip-header: {problem}"))?;
                self.config.client_ip_header = Some(header);
            }
            Long("upstream-timeout") if !in_token => {
                self.config.upstream_timeout = parser.value()?.parse()?
            }
            Long("allow-weak-secret") => self.config.allow_weak_secret = true,
            Long("listen") if !in_token => self.config.listen = parser.value()?.string()?,
            Long("protect") if !in_token => self.protect.push(parser.value()?.string()?),
            Long("max-token-bytes") if !in_token => {
                self.config.max_token_bytes = parser.value()?.parse()?
            }
            Long("max-header-bytes") if !in_token => {
                self.config.max_header_bytes = parser.value()?.parse()?
            }
            Long("header-timeout") if !in_token => {
                self.config.header_timeout = parser.value()?.parse()?
            }
            Long("idle-timeout") if !in_token => {
                self.config.idle_timeout = parser.value()?.parse()?
            }
            Long("body-timeout") if !in_token => {
                self.config.body_timeout = parser.value()?.parse()?
            }
            Long("send-timeout") if !in_token => {
                self.config.send_timeout = parser.value()?.parse()?
            }
            Long("max-connections") if !in_token => {
                self.config.max_connections = parser.value()?.parse()?
            }
            Long("max-connections-per-address") if !in_token => {
                self.config.max_connections_per_address = parser.value()?.parse()?
            }
            Long("leeway") if !in_token => self.config.leeway = parser.value()?.parse()?,
            Long("max-failures") if !in_token => {
                self.config.max_failures = parser.value()?.parse()?
            }
            Long("failure-window") if !in_token => {
                self.config.failure_window = parser.value()?.parse()?
            }
            Long("metrics") if !in_token => self.config.metrics = Some(parser.value()?.string()?),
            Long("limiter-table") if !in_token => {
                self.config.limiter_table = parser.value()?.parse()?
            }
            Long("allow-missing-exp") if !in_token => self.config.require_exp = false,
            Long("log-format") if !in_token => {
                self.config.log_format = parser
                    .value()?
                    .string()?
                    .parse::<LogFormat>()
                    .map_err(|e| e.to_string())?;
            }
            Long("log-file") if !in_token => self.log_file = Some(PathBuf::from(parser.value()?)),
            Long("sub") if in_token => self.sub = Some(parser.value()?.string()?),
            Long("ttl") if in_token => self.ttl = parser.value()?.parse()?,
            Long("claim") if in_token => {
                let pair = parser.value()?.string()?;
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--claim takes KEY=VALUE, not {pair:?}"))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
                self.extra.insert(key.to_owned(), value);
            }
            Long("no-supervisor") if !in_token => self.supervise = false,
            Long("workers") if !in_token => {
                let value = parser.value()?.string()?;
                self.workers = match value.as_str() {
                    "auto" => None,
                    n => match n.parse::<usize>() {
                        Ok(n @ 1..=MAX_WORKERS) => Some(n),
                        _ => {
                            return Err(format!(
                                "--workers takes 1 to {MAX_WORKERS} or auto, not {value:?}"
                            )
                            .into());
                        }
                    },
                };
            }
            Long("seal-key") if !in_token => self.seal_key = Some(PathBuf::from(parser.value()?)),
            Long("config") if !in_token && !self.read_config => {
                let path = PathBuf::from(parser.value()?);
                self.read_config = true;
                let args = config_file(&path)?;
                let mut file = lexopt::Parser::from_args(args);
                while let Some(arg) = file.next()? {
                    let arg = Owned::from(arg);
                    if let Value(word) = arg.arg() {
                        return Err(format!("{}: {word:?} is not an option", path.display()).into());
                    }
                    self.take(arg.arg(), &mut file)?;
                }
            }
            _ => {
                return Err(unexpected(
                    arg,
                    self.subcommand.as_deref().unwrap_or("serve"),
                ));
            }
        }
        self.seen_flag |= self.subcommand.is_none();
        Ok(None)
    }
}

/// The options in a `--config` file, as arguments: one per line, `NAME VALUE` or `NAME`
/// (a long option without its `--`, which may also be written), `#` comments and blank
/// lines skipped.
pub(super) fn config_file(path: &std::path::Path) -> Result<Vec<String>, lexopt::Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
    let mut args = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once(char::is_whitespace) {
            Some((name, value)) => (name, Some(value.trim())),
            None => (line, None),
        };
        args.push(format!("--{}", name.trim_start_matches("--")));
        args.extend(value.map(str::to_owned));
    }
    Ok(args)
}
