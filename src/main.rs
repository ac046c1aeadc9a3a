//! The `jwtguard` command: parse, install the security log and the signal handlers, call
//! the library, map errors to exit codes.

mod allocator;
mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use cli::{Command, Failure};
use jwtguard::{Cause, Config, Error, Secret, SecurityLog, Server};
use nix::sys::signal::{SigSet, Signal};

/// dlmalloc, with large blocks mapped from the kernel (src/allocator.rs).
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn main() -> ExitCode {
    // Before any other thread exists, so that every thread inherits it: SIGTERM and SIGHUP
    // wait for the thread that takes them (sigwait) instead of running a handler. SIGINT
    // is ctrlc's.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGHUP]);
    let blocked = signals.thread_block();
    let result = blocked
        .map_err(|e| Failure::Fatal(Box::new(e)))
        .and_then(|()| run(signals));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            let _ = writeln!(
                std::io::stderr(),
                "jwtguard: {message}\nTry 'jwtguard --help'."
            );
            ExitCode::from(2)
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
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

fn run(signals: SigSet) -> Result<(), Failure> {
    match cli::parse()? {
        Command::Help => print!("{}", cli::USAGE),
        Command::Version => println!("jwtguard {}", env!("CARGO_PKG_VERSION")),
        Command::Token {
            config,
            claims,
            kid,
        } => {
            config.validate()?;
            let token = match (&config.secret, &config.keys) {
                (Some(secret), _) => jwtguard::mint(secret, &claims),
                (None, Some(keys)) => {
                    let kids: Vec<&str> = keys.kids().collect();
                    let kid = match (kid.as_deref(), kids.as_slice()) {
                        (Some(kid), _) => kid,
                        (None, [only]) => only,
                        (None, _) => {
                            let problem =
                                format!("--kid is needed: the keys are {}", kids.join(", "));
                            return Err(Failure::Usage(problem));
                        }
                    };
                    keys.mint(kid, &claims)
                        .ok_or_else(|| Failure::Usage(format!("no key {kid:?} in --jwks")))?
                }
                (None, None) => return Err(Error::NoSecret.into()),
            };
            println!("{token}");
        }
        Command::Serve {
            config,
            log_file,
            seal_key,
        } => serve(config, log_file, seal_key, signals)?,
        Command::SealInit(path) => {
            let key = jwtguard::seal::init(&path)?;
            println!("{key}");
            let _ = writeln!(
                std::io::stderr(),
                "jwtguard: sealing key written to {} (mode 0600): use it with serve --seal-key; the line above is its verification key, for verify-log --key: keep it off this host, it is not stored anywhere",
                path.display()
            );
        }
        Command::VerifyLog { key, as_of, files } => {
            let report = jwtguard::seal::verify(&key, &files, as_of)
                .map_err(|e| Failure::Usage(format!("verify-log: {e}")))?;
            println!("{report}");
            if !report.is_intact() {
                return Err(Failure::Exit(1));
            }
        }
    }
    Ok(())
}

fn serve(
    mut config: Config,
    log_file: Option<std::path::PathBuf>,
    seal_key: Option<std::path::PathBuf>,
    signals: SigSet,
) -> Result<(), Failure> {
    let demo = config.secret.is_none() && config.keys.is_none();
    if demo {
        config.secret = Some(Secret::random()?);
    }
    config.validate()?;
    if demo && !is_loopback(&config.listen) {
        // A missing secret on a reachable address is a broken deployment, not a demo.
        return Err(Error::NoSecret.into());
    }
    let mut log = match &log_file {
        Some(path) => SecurityLog::file(path, config.log_format)?,
        None => SecurityLog::stderr(config.log_format)?,
    };
    if let Some(key) = &seal_key {
        log = log.sealed(key)?;
    }
    // Every other target goes to env_logger, which RUST_LOG filters, into the same sink.
    let others =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format(|buf, record| jwtguard::write_record(buf, record))
            .target(env_logger::Target::Pipe(Box::new(log.other_records())))
            .build();
    let level = others.filter();
    log.others(Box::new(others), level).install()?;

    let server = Server::bind(&config)?;
    let addr = server.addr();
    // The handlers go in before anyone can know the address: a signal from then on always
    // ends in a shutdown event and exit 0.
    let stopper = server.stopper();
    ctrlc::set_handler(move || stopper.stop(Cause::Signal("SIGINT")))
        .map_err(|e| Failure::Fatal(Box::new(e)))?;
    let stopper = server.stopper();
    std::thread::Builder::new()
        .name("jwtguard-signals".into())
        .spawn(move || {
            while let Ok(signal) = signals.wait() {
                stopper.stop(Cause::Signal(signal.as_str()));
            }
        })?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    if demo {
        let mut claims = cli::claims(&config, "demo".into(), 3600, Default::default());
        claims.retain(|_, v| !v.is_null());
        let token = jwtguard::mint(config.secret.as_ref().expect("set above"), &claims);
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
    if config.forward_auth.is_some() && config.trusted_proxies.is_empty() {
        log::warn!(
            "--forward-auth without --trusted-proxy: the proxy's X-Original-URI and X-Forwarded-Uri are ignored, every subrequest is decided on its own path"
        );
    }
    if config.allow_weak_secret {
        log::warn!("--allow-weak-secret: a short secret can be brute-forced from one token");
    }
    server.run()?;
    Ok(())
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
