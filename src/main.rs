//! The `jwtguard` command: parse, install the security log and the signal handlers, call
//! the library, map errors to exit codes.

// On glibc Linux the entry point is src/entry.rs's `main` (std's start-up costs a worker
// RSS there); tests keep the harness's. Elsewhere std's start-up stays: on musl, for one,
// std takes the arguments from its own start-up, and without it `std::env::args` is empty.
#![cfg_attr(all(not(test), target_os = "linux", target_env = "gnu"), no_main)]

mod cli;
#[cfg(all(not(test), target_os = "linux", target_env = "gnu"))]
mod entry;
mod report;
mod supervisor;

use std::io::Write;

use cli::{Command, Failure};
use jwtguard::{Cause, Config, Error, Secret, SecurityLog, Server};
use nix::sys::signal::{SigSet, Signal};
use supervisor::{fds, recorder};

/// std's entry point where src/entry.rs is not the process's.
#[cfg(not(all(not(test), target_os = "linux", target_env = "gnu")))]
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(command())
}

/// The command; its exit status. Called by src/entry.rs, or by `main` above.
fn command() -> u8 {
    // Before any other thread exists, so that every thread inherits it: SIGTERM and SIGHUP
    // wait for the thread that takes them (sigwait) instead of running a handler. SIGINT
    // is ctrlc's.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR2]);
    let blocked = signals.thread_block();
    let result = blocked
        .map_err(|e| Failure::Fatal(Box::new(e)))
        .and_then(|()| run(signals));
    match result {
        Ok(()) => 0,
        Err(Failure::Usage(message)) => {
            let _ = writeln!(
                std::io::stderr(),
                "jwtguard: {message}\nTry 'jwtguard --help'."
            );
            2
        }
        Err(Failure::Exit(code)) => code,
        Err(Failure::Fatal(err)) => {
            let mut message = format!("jwtguard: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            if let Some(hint) = err.downcast_ref::<Error>().and_then(file_hint) {
                message.push_str("\n  ");
                message.push_str(&hint);
            }
            let _ = writeln!(std::io::stderr(), "{message}");
            1
        }
    }
}

/// What to do about a secret or log file jwtguard cannot use: who it runs as, and the
/// mode the file needs (an operator reads `Permission denied` and guesses otherwise).
fn file_hint(err: &Error) -> Option<String> {
    use std::io::ErrorKind::{NotFound, PermissionDenied};
    let user = user_name();
    match err {
        Error::SecretFile { path, source } => match source.kind() {
            PermissionDenied => Some(format!(
                "jwtguard runs as {user}: let that user alone read {path} and search its directories (chown {user} {path}; chmod 0400 {path})",
                path = path.display()
            )),
            NotFound => Some(format!(
                "create it with a random secret: (umask 077; head -c 32 /dev/urandom | base64 >{})",
                path.display()
            )),
            _ => None,
        },
        Error::LogFile { path, source } => match source.kind() {
            PermissionDenied => Some(format!(
                "jwtguard runs as {user}: it appends to {path}, or creates it (mode 0600) when missing; make the file {user}'s with mode 0600 (install -m 0600 -o {user} /dev/null {path}), or its directory writable by {user}",
                path = path.display()
            )),
            NotFound => Some(format!(
                "its directory does not exist: create it for {user} (install -d -m 0750 -o {user} {})",
                path.parent().unwrap_or(path).display()
            )),
            _ => None,
        },
        _ => None,
    }
}

/// The name of the user this process runs as (its uid when /etc/passwd does not say).
fn user_name() -> String {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "this process's user".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&uid.to_string().as_str()))
        .map_or_else(|| format!("uid {uid}"), |fields| fields[0].to_owned())
}

/// The private key in the PEM file `path` (`token --key-file`, `jwks --from-pem`).
#[cfg(feature = "sign")]
fn signing_key(path: &std::path::Path) -> Result<jwtguard::SigningKey, Failure> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| Failure::Fatal(format!("cannot read {}: {e}", path.display()).into()))?;
    Ok(jwtguard::SigningKey::from_pem(&pem)?)
}

/// Without the `sign` feature no private key signs.
#[cfg(not(feature = "sign"))]
fn signing_key(_: &std::path::Path) -> Result<NoSigningKey, Failure> {
    Err(Failure::Usage(
        "this jwtguard does not sign with private keys (built without the `sign` feature)".into(),
    ))
}

/// What `signing_key` would return without the `sign` feature: never made.
#[cfg(not(feature = "sign"))]
enum NoSigningKey {}

#[cfg(not(feature = "sign"))]
impl NoSigningKey {
    fn mint(
        &self,
        _: Option<&str>,
        _: Option<&str>,
        _: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Failure> {
        match *self {}
    }
    fn jwk_set(&self, _: Option<&str>, _: Option<&str>) -> Result<String, Failure> {
        match *self {}
    }
}

fn run(signals: SigSet) -> Result<(), Failure> {
    match cli::parse()? {
        Command::Help(text) => print!("{text}"),
        Command::Version => println!("jwtguard {}", env!("CARGO_PKG_VERSION")),
        Command::Token {
            key_file: Some(path),
            claims,
            kid,
            alg,
            ..
        } => println!(
            "{}",
            signing_key(&path)?.mint(alg.as_deref(), kid.as_deref(), &claims)?
        ),
        Command::Jwks { pem, kid, alg } => {
            println!(
                "{}",
                signing_key(&pem)?.jwk_set(alg.as_deref(), kid.as_deref())?
            )
        }
        Command::Token {
            config,
            claims,
            kid,
            key_file: None,
            ..
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
            supervise,
            seal_key,
            workers,
        } => serve(config, log_file, supervise, seal_key, workers, signals)?,
        Command::SealInit(path) => {
            let key = jwtguard::seal::init(&path)?;
            println!("{key}");
            let _ = writeln!(
                std::io::stderr(),
                "jwtguard: sealing key written to {} (mode 0600): use it with serve --seal-key; the line above is its verification key, for verify-log --key: keep it off this host, it is not stored anywhere",
                path.display()
            );
        }
        Command::Report(options) => {
            // A closed stdout (`| head`) is no failure worth a message.
            let mut out = std::io::stdout().lock();
            report::run(&options, &mut out).map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => Failure::Exit(0),
                _ => Failure::Fatal(Box::new(e)),
            })?;
        }
        Command::VerifyLog { key, as_of, files } => {
            let report = jwtguard::seal::verify(&key, &files, as_of)
                .map_err(|e| Failure::Usage(format!("verify-log: {e}")))?;
            // Not println!: a reader that stops early (`| head -1`) is no failure to panic on.
            let _ = writeln!(std::io::stdout(), "{report}");
            if !report.is_intact() {
                return Err(Failure::Exit(1));
            }
        }
    }
    Ok(())
}

/// The environment variable that carries the demo secret from a supervisor to its
/// workers, so that the demo token stays good across restarts.
const DEMO_SECRET: &str = "JWTGUARD_DEMO_SECRET";

/// The settings a supervisor holds for its workers (the socket, the log it writes too):
/// a reload cannot change them.
const FIXED: &str = "JWTGUARD_FIXED";

fn serve(
    mut config: Config,
    log_file: Option<std::path::PathBuf>,
    supervise: bool,
    seal_key: Option<std::path::PathBuf>,
    workers: usize,
    signals: SigSet,
) -> Result<(), Failure> {
    // Before any file is opened: the socket passed as descriptor 3, if any.
    let inherited = fds::inherited().map_err(Failure::Usage)?;
    let worker = matches!(inherited, Some((_, fds::From::Supervisor)));
    // What a reload cannot change: the socket old and new workers share, and the log
    // file they write one after the other (one chain when sealed).
    let fixed = format!(
        "listen={} log-file={} log-format={:?}",
        config.listen,
        log_file.as_deref().unwrap_or("-".as_ref()).display(),
        config.log_format,
    );
    if worker && std::env::var(FIXED).ok().as_deref() != Some(fixed.as_str()) {
        return Err(Failure::Usage(
            "--listen, --log-file and --log-format cannot change on a reload: restart jwtguard to change them".into(),
        ));
    }
    let demo = config.secret.is_none() && config.keys.is_none() && config.jwks_url.is_none();
    // The demo secret as text: a supervisor passes it to its workers in the environment.
    let mut demo_secret = None;
    if demo {
        let text = match std::env::var(DEMO_SECRET) {
            Ok(text) if worker => text,
            _ => random_hex()?,
        };
        config.secret = Some(Secret::new(
            text.clone().into_bytes(),
            jwtguard::SecretSource::Random,
        ));
        demo_secret = Some(text);
    }
    config.validate()?;
    jwtguard::Guard::new(&config)?;
    if demo && !is_loopback(&config.listen) {
        // A missing secret on a reachable address is a broken deployment, not a demo.
        return Err(Error::NoSecret.into());
    }
    if worker {
        // A worker outlives no supervisor: the socket and the restarts are its.
        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
        if std::env::var(fds::SUPERVISOR).ok() != Some(nix::unistd::getppid().as_raw().to_string())
        {
            return Ok(());
        }
    }
    let mut log = match &log_file {
        Some(path) => SecurityLog::file(path, config.log_format)?,
        None => SecurityLog::stderr(config.log_format)?,
    };
    // Each process (the supervisor and every worker) opens the key file itself: the
    // chain's lock is per open file (src/seal.rs).
    if let Some(key) = &seal_key {
        if supervise && !worker {
            // A worker stuck under the chain's lock must not hold up its supervisor.
            log = log.lock_timeout(recorder::LOCK_WAIT);
        }
        log = log.sealed(key)?;
    }
    // Every other target goes to env_logger, which RUST_LOG filters, into the same sink.
    let others =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format(|buf, record| jwtguard::write_record(buf, record))
            .target(env_logger::Target::Pipe(Box::new(log.other_records())))
            .build();
    let level = others.filter();
    log.others(Box::new(Others(others)), level).install()?;

    let listener = match inherited {
        Some((listener, _)) => listener,
        None => Server::listen(&config.listen)?,
    };
    if !worker {
        check_upstream(&config, log_file.is_some());
    }
    if supervise && !worker {
        // Each worker binds the metrics port itself (SO_REUSEPORT, so that an old and a
        // new one share it): port 0 would give each its own, unknown to the operator.
        if config.metrics.as_deref().is_some_and(|m| m.ends_with(":0")) {
            return Err(Failure::Usage(
                "--metrics needs a fixed port under the supervisor (port 0 only with --no-supervisor)".into(),
            ));
        }
        return supervise_workers(&config, listener, demo_secret, fixed, workers);
    }
    let mut server = Server::from_listener(&config, listener)?;
    let addr = server.addr();
    if worker {
        let beat = std::io::stdout();
        let _ = nix::fcntl::fcntl(
            &beat,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        // A line a second to the supervisor (stdout is line-buffered: the newline sends
        // it); a full pipe (the supervisor is not reading) is skipped.
        server.on_heartbeat(move || {
            let _ = (&beat).write(b".\n");
        });
    }
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
                match signal {
                    // The supervisor hands over to a new worker.
                    Signal::SIGUSR2 if worker => {
                        DRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
                        stopper.drain();
                    }
                    Signal::SIGHUP => log::warn!(
                        "SIGHUP ignored: reloading is the supervisor's (run without --no-supervisor)"
                    ),
                    Signal::SIGUSR2 => {}
                    signal => stopper.stop(Cause::Signal(signal.as_str())),
                }
            }
        })?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    if let Some(metrics) = server.metrics_addr().filter(|_| !worker) {
        writeln!(stdout, "metrics on http://{metrics}/metrics")?;
    }
    if demo && !worker {
        print_demo(&mut stdout, &config, addr)?;
    }
    stdout.flush()?;
    drop(stdout);
    warn_weaker(&config);
    server.run()?;
    Ok(())
}

/// Set once a worker hands over: its accept thread's failure is then the expected end.
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// env_logger, without tiny_http's "Error accepting new client" once the worker drains:
/// the accept thread was stopped on purpose (src/supervisor/fds.rs), nothing failed.
struct Others(env_logger::Logger);

impl log::Log for Others {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        let drained = DRAINING.load(std::sync::atomic::Ordering::SeqCst)
            && record.target() == "tiny_http"
            && record
                .args()
                .to_string()
                .starts_with("Error accepting new client");
        if !drained {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Holds the listening socket and runs the server in worker processes
/// (src/supervisor/).
fn supervise_workers(
    config: &Config,
    listener: std::net::TcpListener,
    demo_secret: Option<String>,
    fixed: String,
    workers: usize,
) -> Result<(), Failure> {
    let addr = listener.local_addr()?;
    let mut env = vec![(FIXED.to_owned(), fixed)];
    let demo = demo_secret.is_some();
    if let Some(text) = demo_secret {
        env.push((DEMO_SECRET.to_owned(), text));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    if demo {
        print_demo(&mut stdout, config, addr)?;
    }
    stdout.flush()?;
    drop(stdout);
    let options = supervisor::Options {
        exe: std::env::current_exe()?,
        args: std::env::args_os().skip(1).collect(),
        env,
        listener,
        workers,
    };
    supervisor::run(options).map_err(|message| Failure::Fatal(message.into()))
}

/// The demo token line: a token for `demo` signed with this run's random secret.
fn print_demo(
    out: &mut impl Write,
    config: &Config,
    addr: std::net::SocketAddr,
) -> Result<(), Failure> {
    let mut claims = cli::claims(config, "demo".into(), 3600, Default::default());
    claims.retain(|_, v| !v.is_null());
    let token = jwtguard::mint(config.secret.as_ref().expect("set above"), &claims);
    // A path that reaches what this mode guards: the app's root behind --upstream, the
    // auth path for a proxy's subrequests, else jwtguard's own protected answer.
    let path = match (&config.upstream, &config.forward_auth) {
        (Some(_), _) => "/".to_owned(),
        (None, Some(auth)) => auth.clone(),
        (None, None) => format!("{}/protected", config.protect[0].trim_end_matches('/')),
    };
    writeln!(
        out,
        "try: curl -H 'Authorization: Bearer {token}' http://{addr}{path}"
    )?;
    log::warn!(
        "no secret configured: using a random one for this run; tokens signed with it die with the process (set JWTGUARD_SECRET or JWTGUARD_SECRET_FILE)"
    );
    Ok(())
}

/// Says at start-up, in the log and on stderr, when `--upstream` does not accept a
/// connection: otherwise the first sign is a 502 on a real request. Not fatal: the app
/// may start after jwtguard.
fn check_upstream(config: &Config, log_to_file: bool) {
    use std::net::ToSocketAddrs as _;
    let Some(url) = &config.upstream else { return };
    let authority = url.trim_start_matches("http://");
    let authority = authority.split('/').next().unwrap_or(authority);
    let result = authority
        .to_socket_addrs()
        .and_then(|mut addrs| addrs.next().ok_or(std::io::ErrorKind::NotFound.into()))
        .and_then(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1))
        });
    if let Err(err) = result {
        let message = format!(
            "upstream {url} is not reachable: {err}; requests for it are answered 502 until it is (is the app running?)"
        );
        log::warn!("{message}");
        if log_to_file {
            let _ = writeln!(std::io::stderr(), "jwtguard: warning: {message}");
        }
    }
}

/// Start-up warnings for the settings that weaken a check.
fn warn_weaker(config: &Config) {
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
    if config.forward_auth.is_some() && config.trusted_proxies.is_empty() {
        log::warn!(
            "--forward-auth without --trusted-proxy: the proxy's X-Original-URI and X-Forwarded-Uri are ignored, every subrequest is decided on its own path"
        );
    }
}

/// 32 random bytes as 64 hex digits: the demo secret.
fn random_hex() -> Result<String, Failure> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Failure::Fatal(Box::new(Error::Random(e.to_string()))))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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
