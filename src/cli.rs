//! The command line: `serve` (the default), `token`, `jwks`, `seal-init`, `verify-log`,
//! `help`, `--version`.

use std::path::PathBuf;

use jwtguard::{Config, Error, LogFormat, Secret};
use serde_json::{Map, Value};

/// `jwtguard help` and `jwtguard --help`: the commands, and where each one's options are.
pub const USAGE: &str = "\
Usage: jwtguard [serve] [OPTIONS]
       jwtguard token --sub NAME [--ttl SECONDS] [--claim KEY=VALUE]... [OPTIONS]
       jwtguard jwks --from-pem PRIVATE_KEY [--kid KID] [--alg ALG]
       jwtguard seal-init KEYFILE
       jwtguard verify-log --key VERIFICATION_KEY [--as-of TIME] LOGFILE...
       jwtguard report [--since TIME] [--until TIME] [--html FILE] LOGFILE...
       jwtguard help [COMMAND] | --help | --version

Commands:
  serve       guard HTTP paths with tokens and write the security log (the default)
  token       print a token signed with the configured secret, or with --key-file
  jwks        print the public JWK Set of a PEM private key (for --jwks)
  seal-init   create a key to seal the security log with (serve --seal-key)
  verify-log  check a sealed log: exit 0 intact, 1 tampered or cut short
  report      sum a security log up on one screen, or as an HTML page
  help        print this, or a command's options: jwtguard help COMMAND

Each command's options: `jwtguard help COMMAND` or `jwtguard COMMAND --help`.

The secret comes from JWTGUARD_SECRET, or from the file named by JWTGUARD_SECRET_FILE
or --secret-file. With none, `serve` makes a random one for this run and prints a demo
token (on a loopback address only); `token` fails.

Environment: JWTGUARD_SECRET, JWTGUARD_SECRET_FILE, RUST_LOG (levels of everything but
the security events; default info). Exit codes: 0 success, 2 usage (a malformed or
out-of-range value), 1 any other failure.
";

/// `jwtguard help serve`.
const SERVE: &str = "\
Usage: jwtguard [serve] [OPTIONS]

Serves HTTP on --listen: paths under --protect need a bearer token (HS256 with a secret,
or RS256/RS384/RS512/PS256/ES256/ES384/EdDSA with keys from --jwks), /healthz is
open, anything else is 404. Prints `listening on http://IP:PORT` on stdout once bound;
writes one security event per decision to stderr, or to --log-file. A supervisor
process holds the socket and runs the server in a worker (or --workers N sharing
it): it restarts a worker that dies, replaces one that stalls, and on SIGHUP reloads
(a new worker reads the --config file, the secret file and the keys again, and takes
over without a dropped request); SIGTERM and SIGINT stop. A socket passed by systemd
(LISTEN_FDS) is served.

Serve options:
  --listen HOST:PORT       address to listen on, port 0 for any [default: 127.0.0.1:8080]
  --protect PREFIX         path prefix that needs a token, repeatable [default: /api/]
  --upstream http://HOST:PORT
                           forward allowed requests to this application; then every
                           path needs a token but those under --public
  --public PREFIX          path prefix that needs no token, repeatable (with --upstream
                           or --forward-auth)
  --forward-auth PATH      answer a proxy's auth subrequests here (nginx auth_request,
                           Caddy forward_auth): 200, 401 or 403, never 400
  --strip-authorization    do not forward Authorization to the upstream
  --allow-body-on-any-method
                           forward a body on GET, HEAD, OPTIONS and DELETE too (weaker:
                           an app that does not read it takes it for a request); without
                           it such a request is refused, 400
  --claim-header CLAIM=HEADER
                           also pass this claim (a dotted path for nested ones) on in
                           this header, repeatable; X-Auth-User always carries the user
  --require PREFIX=SCOPE   paths under PREFIX need SCOPE (in scope, scp or roles): 403
                           without it; repeatable
  --trusted-proxy CIDR     believe X-Forwarded-For, Forwarded, X-Real-IP and the
                           original method and URI from these peers, repeatable
  --upstream-timeout SECONDS
                           for the upstream to connect and between reads [default: 30]
  --max-token-bytes N      longest token accepted, 1 to 65536 [default: 8192]
  --max-header-bytes N     longest request head, then 431 [default: 16384]
  --header-timeout SECONDS for a whole request head, then 408 [default: 10]
  --idle-timeout SECONDS   between requests on a kept-alive connection [default: 60]
  --body-timeout SECONDS   between two reads of a request body [default: 60]
  --send-timeout SECONDS   for a client to read any of its answers, else it is
                           dropped [default: 5]
  --max-connections N      connections held at once; past it the longest idle one
                           is closed, or the new one [default: 1024]
  --max-connections-per-address N
                           the same from one address, 0 for no cap; --trusted-proxy
                           peers are not capped [default: 256]
  --leeway SECONDS         clock skew allowed on exp and nbf, 0 to 300 [default: 30]
  --max-failures N         failed authentications (bad signature, unknown key,
                           malformed token) an address may make per window; past them
                           429 until the window ends; 0 turns it off [default: 20]
  --failure-window SECONDS the window of --max-failures, 1 to 86400 [default: 60]
  --limiter-table N        addresses the limiter remembers, 8 to 1048576 [default: 4096]
  --metrics HOST:PORT      answer GET /metrics (Prometheus) there; no authentication:
                           keep it off the public network [default: off]
  --allow-missing-exp      accept tokens without exp (weaker; warns at start-up)
  --log-format json|text   security log encoding [default: json]
  --log-file PATH          append the security log to PATH instead of stderr
                           (a new file gets mode 0600)
  --config FILE            options from FILE, one per line (NAME VALUE, no --), here
                           in the command line; read again on a reload
  --no-supervisor          serve in this one process: no restart, no reload
  --workers N|auto         worker processes sharing the listening socket, auto for
                           one per CPU; fixed at start (a reload keeps it) [default: 1]
  --seal-key KEYFILE       seal every log line (event.sequence, event.hash) with the
                           key seal-init made; the key moves on every 15 minutes
";

/// `jwtguard help token`.
const TOKEN: &str = "\
Usage: jwtguard token --sub NAME [--ttl SECONDS] [--claim KEY=VALUE]... [OPTIONS]

Prints a token signed with the configured secret (or the --jwks key --kid names), or
with --key-file.

Token options:
  --sub NAME               the subject (user) of the token
  --ttl SECONDS            lifetime [default: 3600]
  --claim KEY=VALUE        an extra claim, repeatable; VALUE is JSON if it parses,
                           else a string; null removes the claim (exp=null)
  --kid KID                sign with this key of --jwks, and name it in the header
                           (with --key-file: the kid to name [default: thumbprint])
  --key-file PEM           sign with this RSA (2048 bits or more), EC P-256/P-384 or
                           Ed25519 private key (PKCS#1, SEC1 or PKCS#8 PEM)
  --alg ALG                with --key-file: RS256, RS384, RS512 or PS256 for an RSA
                           key [default: RS256; ES256, ES384, EdDSA by key]
";

/// `jwtguard help jwks`.
const JWKS: &str = "\
Usage: jwtguard jwks --from-pem PRIVATE_KEY [--kid KID] [--alg ALG]

Prints the public JWK Set of a PEM private key, for `serve --jwks`.

Jwks options:
  --from-pem PRIVATE_KEY   an RSA, EC P-256/P-384 or Ed25519 private key (PEM)
  --kid KID                the key's kid [default: its RFC 7638 thumbprint]
  --alg ALG                for an RSA key: RS256, RS384, RS512 or PS256 [default: RS256]
  -h, --help               print this help
";

/// `jwtguard help seal-init`.
const SEAL_INIT: &str = "\
Usage: jwtguard seal-init KEYFILE

Creates a sealing key file (mode 0600, never overwritten) for `serve --seal-key` and
prints its verification key on stdout: keep that off this host.

Seal-init options:
  -h, --help               print this help
";

/// `jwtguard help verify-log`.
const VERIFY_LOG: &str = "\
Usage: jwtguard verify-log --key VERIFICATION_KEY [--as-of TIME] LOGFILE...

Checks a sealed log, its files oldest first (rotated ones, then the current one):
exit 0 intact, 1 tampered or cut short, 2 usage.

Verify-log options:
  --key VERIFICATION_KEY   the line seal-init printed
  --as-of TIME             judge the log's end as of TIME (2026-11-27T21:42:09Z)
                           instead of now
  -h, --help               print this help
";

/// `jwtguard help report`.
const REPORT: &str = "\
Usage: jwtguard report [--since TIME] [--until TIME] [--html FILE] LOGFILE...

Sums a security log up on one screen (json or text, sealed or not, rotated files, .gz
ones too): requests allowed and refused, refusals by reason, top refused clients and
users, rate-limited clients, upstream, process and seal events, a timeline. It does not
verify a sealed log: run verify-log for that.

Report options:
  --since TIME, --until TIME
                           only lines from TIME on, or before TIME (UTC,
                           like 2026-11-27T21:42:09Z)
  -h, --help               print this help
  --html FILE              also write the report as one HTML page (no script)
";

/// The options `serve` and `token` share.
const COMMON: &str = "
Common options:
  --jwks FILE              keys by kid, a JWK Set (instead of a secret): oct (HS256),
                           RSA, EC (P-256, P-384), OKP (Ed25519); each key accepts only
                           its alg; the token's kid picks the key. The file is read
                           again when it changes (looked at once a second at most): a
                           set that does not load leaves the last good one in use
  --jwks-url URL           serve: keys from a JWK Set at http://HOST:PORT/PATH (a local
                           agent or sidecar; plain HTTP, no https: use --jwks FILE and
                           curl for that). Protected paths answer 503 until it loads;
                           fetched again every --jwks-refresh and, at most every 30 s,
                           when a token names an unknown kid
  --jwks-refresh SECONDS   how often --jwks-url is fetched [default: 300]
  --token-cache N          public-key tokens whose signature verified, remembered
                           until their exp (claims checked on every use); 0: off
                           [default: 1024]
  --issuer ISS             tokens must carry iss=ISS (and `token` sets it)
  --audience AUD           tokens must carry aud=AUD (and `token` sets it)
  --secret-file PATH       read the secret from PATH (one trailing newline is stripped)
  --allow-weak-secret      accept a secret shorter than 32 bytes (weaker)
  -h, --help               print this help
  -V, --version            print the version

";

/// The help of `command` (`serve`, `token`, ...), or `None` for an unknown one.
pub fn help(command: &str) -> Option<String> {
    let (text, common) = match command {
        "serve" => (SERVE, true),
        "token" => (TOKEN, true),
        "jwks" => (JWKS, false),
        "seal-init" => (SEAL_INIT, false),
        "verify-log" => (VERIFY_LOG, false),
        "report" => (REPORT, false),
        "help" => (USAGE, false),
        _ => return None,
    };
    Some(if common {
        format!("{text}{COMMON}")
    } else {
        text.to_owned()
    })
}

pub enum Command {
    Serve {
        config: Config,
        log_file: Option<PathBuf>,
        /// Run under jwtguard's supervisor (the default; `--no-supervisor` for one process).
        supervise: bool,
        seal_key: Option<PathBuf>,
        /// Worker processes under the supervisor (`--workers`, at least 1).
        workers: usize,
    },
    SealInit(PathBuf),
    VerifyLog {
        key: jwtguard::seal::VerificationKey,
        as_of: std::time::SystemTime,
        files: Vec<PathBuf>,
    },
    Token {
        config: Config,
        claims: Map<String, Value>,
        kid: Option<String>,
        /// `--key-file` and `--alg`: sign with a private key instead.
        key_file: Option<PathBuf>,
        alg: Option<String>,
    },
    /// `jwks --from-pem FILE`: print its public JWK Set.
    Jwks {
        pem: PathBuf,
        kid: Option<String>,
        alg: Option<String>,
    },
    Report(crate::report::Options),
    /// Print this text (`help [COMMAND]`, `--help`).
    Help(String),
    Version,
}

/// A failure and the exit code it maps to.
pub enum Failure {
    /// Bad command line or a malformed value: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Fatal(Box<dyn std::error::Error>),
    /// Exit with this code; what there was to say is said.
    Exit(u8),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        match err {
            Error::Config { .. } => Failure::Usage(err.to_string()),
            err => Failure::Fatal(Box::new(err)),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure::Fatal(Box::new(err))
    }
}

/// Parses the command line and loads the secret (or the key set).
pub fn parse() -> Result<Command, Failure> {
    let (mut command, secret_file, jwks) =
        parse_flags().map_err(|e| Failure::Usage(e.to_string()))?;
    if let Command::Serve { config, .. }
    | Command::Token {
        config,
        key_file: None,
        ..
    } = &mut command
    {
        match jwks {
            Some(_)
                if ["JWTGUARD_SECRET", "JWTGUARD_SECRET_FILE"]
                    .iter()
                    .any(|v| std::env::var_os(v).is_some()) =>
            {
                return Err(Failure::Usage(
                    "--jwks and a secret in the environment: use one".into(),
                ));
            }
            Some(path) => config.keys = Some(jwtguard::KeySet::load(&path)?),
            None => config.secret = Secret::load(secret_file.as_deref())?,
        }
    }
    Ok(command)
}

/// The rest of `help [COMMAND]`: the overview, or that command's help.
fn help_command(parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    match parser.next()? {
        None => Ok(Command::Help(USAGE.to_owned())),
        Some(lexopt::Arg::Value(word)) => {
            let word = word.string()?;
            help(&word)
                .map(Command::Help)
                .ok_or_else(|| format!("unknown command {word:?}: {}", COMMANDS.join(", ")).into())
        }
        Some(arg) => Err(arg.unexpected()),
    }
}

/// The commands, as `help` names them.
const COMMANDS: [&str; 6] = [
    "serve",
    "token",
    "jwks",
    "seal-init",
    "verify-log",
    "report",
];

/// Options people reach for that jwtguard spells otherwise (other servers' names): what
/// to use instead.
const ALIASES: &[(&str, &str)] = &[
    ("port", "--listen HOST:PORT"),
    ("bind", "--listen HOST:PORT"),
    ("host", "--listen HOST:PORT"),
    ("address", "--listen HOST:PORT"),
    (
        "secret",
        "--secret-file PATH, or the JWTGUARD_SECRET variable",
    ),
    (
        "key",
        "--secret-file PATH, --jwks FILE or the JWTGUARD_SECRET variable",
    ),
    ("log", "--log-file PATH"),
    ("backend", "--upstream http://HOST:PORT"),
    ("proxy-pass", "--upstream http://HOST:PORT"),
];

/// An unknown argument's error, with the nearest option of `command` when one is near
/// (an alias from [`ALIASES`], or one edit or two away), or the command that has it.
fn unexpected(arg: lexopt::Arg<'_>, command: &str) -> lexopt::Error {
    let lexopt::Arg::Long(name) = arg else {
        return arg.unexpected();
    };
    let options = |command: &str| -> Vec<String> {
        let text = help(command).unwrap_or_default();
        let mut names: Vec<String> = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter_map(|word| word.strip_prefix("--"))
            .map(|word| word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
            .filter(|word| {
                !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            })
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let mine = options(command);
    let hint = if let Some((_, instead)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
        format!("; did you mean {instead}?")
    } else if let Some(other) = COMMANDS
        .iter()
        .find(|other| **other != command && options(other).iter().any(|o| o == name))
    {
        format!("; it is an option of `jwtguard {other}` (jwtguard help {other})")
    } else if let Some(near) = mine
        .iter()
        .map(|option| (distance(name, option), option))
        .filter(|(d, option)| *d <= 2 && *d < option.len())
        .min()
    {
        format!("; did you mean --{}?", near.1)
    } else {
        format!("; jwtguard help {command} lists them")
    };
    format!("invalid option '--{name}' for {command}{hint}").into()
}

/// The Levenshtein distance between `a` and `b` (options are short: a row at a time).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `NAME=VALUE` for `flag`.
fn pair(flag: &str, text: String) -> Result<(String, String), lexopt::Error> {
    match text.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(format!("{flag} takes A=B, not {text:?}").into()),
    }
}

/// The command line, and the `--secret-file` and `--jwks` given if any.
#[allow(clippy::type_complexity)]
fn parse_flags() -> Result<(Command, Option<PathBuf>, Option<PathBuf>), lexopt::Error> {
    let mut flags = Flags {
        config: Config::default(),
        protect: Vec::new(),
        secret_file: None,
        jwks: None,
        kid: None,
        key_file: None,
        alg: None,
        log_file: None,
        subcommand: None,
        sub: None,
        ttl: 3600,
        extra: Map::new(),
        seen_flag: false,
        supervise: true,
        workers: Some(1),
        read_config: false,
        seal_key: None,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        let arg = Owned::from(arg);
        if let Some(early) = flags.take(arg.arg(), &mut parser)? {
            return Ok((early, None, None));
        }
    }
    let Flags {
        mut config,
        protect,
        secret_file,
        jwks,
        kid,
        key_file,
        alg,
        log_file,
        subcommand,
        sub,
        ttl,
        extra,
        supervise,
        workers,
        seal_key,
        ..
    } = flags;
    let workers = match workers {
        Some(n) => n,
        // One per CPU the process may run on.
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    if !supervise && workers > 1 {
        return Err("--workers more than 1 needs the supervisor: drop --no-supervisor".into());
    }
    // Each worker keeps its own counters and binds the metrics port itself: a scrape would
    // see one worker's share of the requests (and of a brute force) as if it were all.
    if workers > 1 && config.metrics.is_some() {
        return Err("--metrics shows one worker's counters only: with it, use --workers 1".into());
    }
    if !protect.is_empty() {
        if config.upstream.is_some() {
            return Err("--protect does not go with --upstream: with an upstream every path needs a token but those under --public".into());
        }
        config.protect = protect;
    }
    if secret_file.is_some() && jwks.is_some() {
        return Err("--secret-file and --jwks: use one".into());
    }
    if kid.is_some() && jwks.is_none() && key_file.is_none() {
        return Err("--kid goes with --jwks or --key-file".into());
    }
    if key_file.is_some() && (jwks.is_some() || secret_file.is_some()) {
        return Err("--key-file signs instead of --jwks or --secret-file: use one".into());
    }
    if alg.is_some() && key_file.is_none() {
        return Err("--alg goes with --key-file".into());
    }
    let command = if subcommand.as_deref() == Some("token") {
        let sub = sub
            .filter(|s| !s.is_empty())
            .ok_or("token needs --sub NAME")?;
        let claims = claims(&config, sub, ttl, extra);
        Command::Token {
            config,
            claims,
            kid,
            key_file,
            alg,
        }
    } else {
        Command::Serve {
            config,
            log_file,
            supervise,
            seal_key,
            workers,
        }
    };
    Ok((command, secret_file, jwks))
}

/// An argument, apart from the parser it came from (which gives the option's value).
enum Owned {
    Short(char),
    Long(String),
    Value(std::ffi::OsString),
}

impl From<lexopt::Arg<'_>> for Owned {
    fn from(arg: lexopt::Arg<'_>) -> Owned {
        match arg {
            lexopt::Arg::Short(c) => Owned::Short(c),
            lexopt::Arg::Long(name) => Owned::Long(name.to_owned()),
            lexopt::Arg::Value(value) => Owned::Value(value),
        }
    }
}

impl Owned {
    fn arg(&self) -> lexopt::Arg<'_> {
        match self {
            Owned::Short(c) => lexopt::Arg::Short(*c),
            Owned::Long(name) => lexopt::Arg::Long(name),
            Owned::Value(value) => lexopt::Arg::Value(value.clone()),
        }
    }
}

/// The most `--workers`: more processes than this serve no machine better.
const MAX_WORKERS: usize = 256;

/// The command line as parsed so far.
struct Flags {
    config: Config,
    protect: Vec<String>,
    secret_file: Option<PathBuf>,
    jwks: Option<PathBuf>,
    kid: Option<String>,
    key_file: Option<PathBuf>,
    alg: Option<String>,
    log_file: Option<PathBuf>,
    subcommand: Option<String>,
    sub: Option<String>,
    ttl: u64,
    extra: Map<String, Value>,
    seen_flag: bool,
    supervise: bool,
    /// `--workers`: `None` for `auto`.
    workers: Option<usize>,
    /// A `--config` file was read (one may not name another).
    read_config: bool,
    seal_key: Option<PathBuf>,
}

impl Flags {
    /// Takes one argument (and its value from `parser`); `Some` for `help` and
    /// `--version`, which end the parsing.
    fn take(
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
fn config_file(path: &std::path::Path) -> Result<Vec<String>, lexopt::Error> {
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

/// The rest of a `jwks` command line.
fn jwks(parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let (mut pem, mut kid, mut alg) = (None, None, None);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("from-pem") => pem = Some(PathBuf::from(parser.value()?)),
            Long("kid") => kid = Some(parser.value()?.string()?),
            Long("alg") => alg = Some(parser.value()?.string()?),
            Short('h') | Long("help") => {
                return Ok(Command::Help(help("jwks").unwrap_or_default()));
            }
            _ => return Err(unexpected(arg, "jwks")),
        }
    }
    let pem = pem.ok_or("jwks needs --from-pem PRIVATE_KEY")?;
    Ok(Command::Jwks { pem, kid, alg })
}

/// The rest of a `seal-init` or `verify-log` command line.
fn tool(command: &str, parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let verify = command == "verify-log";
    let mut files = Vec::new();
    let mut key = None;
    let mut as_of = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Value(file) => files.push(PathBuf::from(file)),
            Long("key") if verify => {
                let text = parser.value()?.string()?;
                key = Some(
                    text.parse()
                        .map_err(|e: String| format!("invalid --key: {e}"))?,
                );
            }
            Long("as-of") if verify => {
                let text = parser.value()?.string()?;
                let ms = jwtguard::seal::parse_time(&text).ok_or_else(|| {
                    format!("invalid --as-of: {text:?} is not a UTC time like 2026-11-27T21:42:09Z")
                })?;
                as_of = Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
            }
            Short('h') | Long("help") => {
                return Ok(Command::Help(help(command).unwrap_or_default()));
            }
            _ => return Err(unexpected(arg, command)),
        }
    }
    if !verify {
        return match <[PathBuf; 1]>::try_from(files) {
            Ok([file]) => Ok(Command::SealInit(file)),
            Err(_) => Err("seal-init takes one KEYFILE".into()),
        };
    }
    let key = key.ok_or("verify-log needs --key VERIFICATION_KEY (the line seal-init printed)")?;
    if files.is_empty() {
        return Err("verify-log needs the log files, oldest first".into());
    }
    Ok(Command::VerifyLog {
        key,
        as_of: as_of.unwrap_or_else(std::time::SystemTime::now),
        files,
    })
}

/// The rest of a `report` command line.
fn report(parser: &mut lexopt::Parser) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut options = crate::report::Options {
        files: Vec::new(),
        html: None,
        since: None,
        until: None,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Value(file) => options.files.push(PathBuf::from(file)),
            Long("html") => options.html = Some(PathBuf::from(parser.value()?)),
            Long(flag @ ("since" | "until")) => {
                let flag = flag.to_owned();
                let text = parser.value()?.string()?;
                let ms = jwtguard::seal::parse_time(&text).ok_or_else(|| {
                    format!(
                        "invalid --{flag}: {text:?} is not a UTC time like 2026-11-27T21:42:09Z"
                    )
                })?;
                match flag.as_str() {
                    "since" => options.since = Some(ms),
                    _ => options.until = Some(ms),
                }
            }
            Short('h') | Long("help") => {
                return Ok(Command::Help(help("report").unwrap_or_default()));
            }
            _ => return Err(unexpected(arg, "report")),
        }
    }
    if options.files.is_empty() {
        return Err("report needs the log files (rotated ones too, .gz or not)".into());
    }
    Ok(Command::Report(options))
}

/// The claims of a token for `sub` that expires `ttl` seconds from now, with `iat`, and
/// `iss` and `aud` when configured; `extra` claims last: they replace any of those, and a
/// `null` removes the claim (`exp=null` makes a token that never expires).
pub fn claims(
    config: &Config,
    sub: String,
    ttl: u64,
    extra: Map<String, Value>,
) -> Map<String, Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = Map::new();
    claims.insert("sub".into(), sub.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl).into());
    if let Some(issuer) = &config.issuer {
        claims.insert("iss".into(), issuer.clone().into());
    }
    if let Some(audience) = &config.audience {
        claims.insert("aud".into(), audience.clone().into());
    }
    for (key, value) in extra {
        if value.is_null() {
            claims.remove(&key);
        } else {
            claims.insert(key, value);
        }
    }
    claims
}
