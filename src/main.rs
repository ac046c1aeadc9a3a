//! The `jwtguard` command: `serve` (the default) and `token`.

use std::error::Error as StdError;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use jwtguard::audit::{self, LogWriter};
use jwtguard::{Config, Error, Guard, LogFormat, Secret};

/// One heap behind one lock, no per-thread caches: tiny_http starts a thread per
/// connection, and glibc's per-thread arenas and caches would hold about 1 MiB more at
/// 32 connections (README, Performance).
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

const USAGE: &str = "\
Usage: jwtguard [serve] [OPTIONS]
       jwtguard token --sub NAME [--ttl SECONDS] [--claim KEY=VALUE]... [OPTIONS]

Serves HTTP on --listen: paths under --protect need an HS256 bearer token, /healthz is
open, anything else is 404. One security event per decision goes to stderr or --log-file.
`token` prints a token signed with the configured secret.

The secret comes from JWTGUARD_SECRET, or from the file named by JWTGUARD_SECRET_FILE
or --secret-file. With none, `serve` makes a random one for this run and prints a demo
token (on a loopback address only); `token` fails.

Serve options:
  --listen ADDR            address to listen on, port 0 for any [default: 127.0.0.1:8080]
  --protect PREFIX         path prefix that needs a token, repeatable [default: /api/]
  --max-token-bytes N      longest token accepted [default: 8192]
  --leeway SECONDS         clock skew allowed on exp and nbf, at most 300 [default: 30]
  --allow-missing-exp      accept tokens without exp (weaker; warns at start-up)
  --log-format json|text   security log encoding [default: json]
  --log-file PATH          append the security log to PATH instead of stderr
                           (a new file gets mode 0600)
Token options:
  --sub NAME               the subject (user) of the token
  --ttl SECONDS            lifetime [default: 3600]
  --claim KEY=VALUE        an extra claim, repeatable; VALUE is JSON if it parses,
                           else a string; null removes the claim (exp=null)
Common options:
  --issuer ISS             tokens must carry iss=ISS (and `token` sets it)
  --audience AUD           tokens must carry aud=AUD (and `token` sets it)
  --secret-file PATH       read the secret from PATH (one trailing newline is stripped)
  --allow-weak-secret      accept a secret shorter than 32 bytes (weaker)
  -h, --help               print this help
  -V, --version            print the version

Environment: JWTGUARD_SECRET, JWTGUARD_SECRET_FILE, RUST_LOG (default: info; it cannot
turn security events off).
";

enum Command {
    Serve {
        config: Config,
        log_file: Option<PathBuf>,
    },
    Token {
        config: Config,
        sub: String,
        ttl: u64,
        claims: serde_json::Map<String, serde_json::Value>,
    },
    Help,
    Version,
}

/// A failure and the exit code it maps to.
enum Failure {
    /// Bad command line: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Fatal(Box<dyn StdError>),
}

/// A setting out of range is a usage error; anything else about the configuration
/// (a missing or weak secret) is fatal.
fn config_failure(err: Error) -> Failure {
    match err {
        Error::Config { .. } => Failure::Usage(err.to_string()),
        err => Failure::Fatal(Box::new(err)),
    }
}

impl<E: StdError + 'static> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure::Fatal(Box::new(err))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            let _ = writeln!(
                std::io::stderr(),
                "jwtguard: {message}\nTry 'jwtguard --help'."
            );
            ExitCode::from(2)
        }
        Err(Failure::Fatal(err)) => {
            let mut message = format!("jwtguard: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            let _ = writeln!(std::io::stderr(), "{message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    match parse_args()? {
        Command::Help => print!("{USAGE}"),
        Command::Version => println!("jwtguard {}", env!("CARGO_PKG_VERSION")),
        Command::Token {
            config,
            sub,
            ttl,
            claims,
        } => {
            config.validate().map_err(config_failure)?;
            let secret = config.secret.as_ref().ok_or(Error::NoSecret)?;
            let token = jwtguard::mint(
                secret,
                &sub,
                ttl,
                config.issuer.as_deref(),
                config.audience.as_deref(),
                claims,
            );
            println!("{token}");
        }
        Command::Serve { config, log_file } => serve(config, log_file)?,
    }
    Ok(())
}

fn serve(mut config: Config, log_file: Option<PathBuf>) -> Result<(), Failure> {
    let demo = config.secret.is_none();
    if demo {
        config.secret = Some(Secret::random());
    }
    let guard = Guard::new(&config).map_err(config_failure)?;
    let log = init_logger(config.log_format, log_file)?;

    if demo && !is_loopback(&config.listen) {
        // A missing secret on a reachable address is a broken deployment, not a demo.
        return Err(Error::NoSecret.into());
    }
    let server = tiny_http::Server::http(&config.listen).map_err(|source| Error::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .expect("a TCP listener has an IP address");
    // The handler goes in before anyone can know the address: a signal from then on
    // always ends in a shutdown event and exit 0.
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (server, stop) = (server.clone(), stop.clone());
        ctrlc::set_handler(move || {
            stop.store(true, Ordering::SeqCst);
            server.unblock();
        })?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    if demo {
        let token = jwtguard::mint(
            config.secret.as_ref().expect("set above"),
            "demo",
            3600,
            config.issuer.as_deref(),
            config.audience.as_deref(),
            serde_json::Map::new(),
        );
        let path = format!("{}/protected", config.protect[0].trim_end_matches('/'));
        writeln!(
            stdout,
            "try: curl -H 'Authorization: Bearer {token}' http://{addr}{path}"
        )?;
        log::warn!(
            "no secret configured: using a random one for this run; tokens signed with it die with the process (set JWTGUARD_SECRET or JWTGUARD_SECRET_FILE)"
        );
    }
    stdout.flush()?;
    drop(stdout);
    if !config.require_exp {
        log::warn!("--allow-missing-exp: tokens without exp are accepted and never expire");
    }
    if config
        .secret
        .as_ref()
        .is_some_and(Secret::is_readable_by_others)
    {
        log::warn!("the secret file is readable by other users: chmod 600 it");
    }
    if config.allow_weak_secret {
        log::warn!("--allow-weak-secret: a short secret can be brute-forced from one token");
    }
    guard.record_service(
        log::Level::Info,
        "startup",
        &format!("listening on http://{addr} {}", config.summary()),
    );

    match jwtguard::serve(&server, &guard, Some(&log), &stop) {
        Ok(answered) => {
            guard.record_service(
                log::Level::Info,
                "shutdown",
                &format!("signal received; {answered} requests answered"),
            );
            Ok(())
        }
        Err(err) => {
            guard.record_service(log::Level::Error, "shutdown", &err.to_string());
            Err(err.into())
        }
    }
}

/// Whether every address `listen` resolves to is a loopback one.
fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs as _;
    let Ok(addrs) = listen.to_socket_addrs() else {
        return false;
    };
    let addrs: Vec<_> = addrs.collect();
    !addrs.is_empty() && addrs.iter().all(|a| a.ip().to_canonical().is_loopback())
}

/// env_logger with RUST_LOG (default `info`), writing each record as one line through
/// a [`LogWriter`] to `log_file` or stderr. Security events arrive encoded; any other
/// record is encoded here the same way. Returns a handle on the writer, for
/// [`jwtguard::serve`]'s group commit.
fn init_logger(format: LogFormat, log_file: Option<PathBuf>) -> Result<LogWriter, Error> {
    let writer = match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| Error::LogFile {
                    path: path.clone(),
                    source,
                })?;
            LogWriter::new(file, path.display().to_string())
        }
        None => {
            // A file on a copy of fd 2, not `io::stderr()`: the standard library treats a
            // closed stderr as a sink that swallows everything, and a dead log must show.
            let fd = std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| Error::LogFile {
                    path: "stderr".into(),
                    source,
                })?;
            LogWriter::new(std::fs::File::from(fd), "stderr")
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        // RUST_LOG sets every other level; security events cannot be turned down or off.
        .filter_module(audit::TARGET, log::LevelFilter::Info)
        .format(move |buf, record| {
            if record.target() == audit::TARGET {
                writeln!(buf, "{}", record.args())
            } else {
                let mut line = String::new();
                audit::encode_message(
                    format,
                    SystemTime::now(),
                    record.level(),
                    record.target(),
                    None,
                    &record.args().to_string(),
                    &mut line,
                );
                writeln!(buf, "{line}")
            }
        })
        .target(env_logger::Target::Pipe(Box::new(writer.clone())))
        .init();
    Ok(writer)
}

fn parse_args() -> Result<Command, Failure> {
    let (mut command, secret_file) = parse_flags().map_err(|e| Failure::Usage(e.to_string()))?;
    if let Command::Serve { config, .. } | Command::Token { config, .. } = &mut command {
        config.secret = Secret::load(secret_file.as_deref())?;
    }
    Ok(command)
}

/// The command line, and the `--secret-file` given if any.
fn parse_flags() -> Result<(Command, Option<PathBuf>), lexopt::Error> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_env();
    let mut config = Config::default();
    let mut protect = Vec::new();
    let mut secret_file = None;
    let mut log_file = None;
    let mut subcommand = None;
    let mut sub = None;
    let mut ttl = 3600;
    let mut claims = serde_json::Map::new();
    let mut seen_flag = false;

    while let Some(arg) = parser.next()? {
        let in_token = subcommand.as_deref() == Some("token");
        match arg {
            Value(word) if subcommand.is_none() && !seen_flag => {
                let word = word.string()?;
                if word != "serve" && word != "token" {
                    return Err(format!("unknown command {word:?}").into());
                }
                subcommand = Some(word);
            }
            Short('h') | Long("help") => return Ok((Command::Help, None)),
            Short('V') | Long("version") => return Ok((Command::Version, None)),
            Long("issuer") => config.issuer = Some(parser.value()?.string()?),
            Long("audience") => config.audience = Some(parser.value()?.string()?),
            Long("secret-file") => secret_file = Some(PathBuf::from(parser.value()?)),
            Long("allow-weak-secret") => config.allow_weak_secret = true,
            Long("listen") if !in_token => config.listen = parser.value()?.string()?,
            Long("protect") if !in_token => protect.push(parser.value()?.string()?),
            Long("max-token-bytes") if !in_token => {
                config.max_token_bytes = parser.value()?.parse()?
            }
            Long("leeway") if !in_token => config.leeway = parser.value()?.parse()?,
            Long("allow-missing-exp") if !in_token => config.require_exp = false,
            Long("log-format") if !in_token => {
                let value = parser.value()?.string()?;
                config.log_format = value
                    .parse()
                    .map_err(|()| format!("--log-format is json or text, not {value:?}"))?;
            }
            Long("log-file") if !in_token => log_file = Some(PathBuf::from(parser.value()?)),
            Long("sub") if in_token => sub = Some(parser.value()?.string()?),
            Long("ttl") if in_token => ttl = parser.value()?.parse()?,
            Long("claim") if in_token => {
                let pair = parser.value()?.string()?;
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--claim takes KEY=VALUE, not {pair:?}"))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
                claims.insert(key.to_owned(), value);
            }
            _ => return Err(arg.unexpected()),
        }
        seen_flag |= subcommand.is_none();
    }
    if !protect.is_empty() {
        config.protect = protect;
    }
    let command = if subcommand.as_deref() == Some("token") {
        let sub = sub
            .filter(|s| !s.is_empty())
            .ok_or("token needs --sub NAME")?;
        Command::Token {
            config,
            sub,
            ttl,
            claims,
        }
    } else {
        Command::Serve { config, log_file }
    };
    Ok((command, secret_file))
}
