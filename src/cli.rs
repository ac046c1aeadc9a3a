//! The command line: `serve` (the default), `token`, `jwks`, `seal-init`, `verify-log`,
//! `help`, `--version`.

use std::path::PathBuf;

use jwtguard::{Config, Error, Secret};
use serde_json::{Map, Value};

mod flags;
mod help;
mod tools;

use flags::Flags;
use help::{USAGE, help};

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
