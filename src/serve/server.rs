//! The `jwtguard` binary's server: jwtguard's own event loop (src/serve/) in serve mode,
//! forward-auth and proxy mode (`--upstream`) alike; it decides, records and answers, with
//! a group commit of the security events.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::event_loop::Front;
use super::proxy::Proxy;
use crate::event::{Cause, Event, ServiceEvent};
use crate::logger;
use crate::{Config, Error, Guard};

/// The `jwtguard` binary's server: bound, not yet serving.
///
/// [`Server::run`] writes the start-up event, serves until a [`Stopper`] stops it, and
/// writes the shutdown event with its cause.
pub struct Server {
    front: Option<Front>,
    waker: Arc<mio::Waker>,
    limits: super::Limits,
    guard: Guard,
    proxy: Option<Proxy>,
    forward_auth: Option<String>,
    addr: SocketAddr,
    config: Vec<(&'static str, String)>,
    stop: Arc<Stop>,
    heartbeat: Option<Box<dyn FnMut() + Send>>,
    /// Where `/metrics` is answered, if anywhere.
    metrics: Option<SocketAddr>,
}

struct Stop {
    flag: AtomicBool,
    cause: Mutex<Option<Cause>>,
    /// Hand over to another process: stop accepting, finish what is held, stop.
    drain: AtomicBool,
}

/// Stops a running [`Server`] from another thread (a signal handler's).
#[derive(Clone)]
pub struct Stopper {
    waker: Arc<mio::Waker>,
    stop: Arc<Stop>,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper").finish_non_exhaustive()
    }
}

impl Stopper {
    /// Asks the server to stop: it answers the requests in hand, writes the shutdown
    /// event naming `cause` (the first cause given, if several), and returns.
    pub fn stop(&self, cause: Cause) {
        self.stop
            .cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(cause);
        self.stop.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Asks the server to hand over to another process serving the same listening socket:
    /// the loop stops accepting connections (it drops its listening descriptor), answers
    /// every request still coming on the connections it holds with `Connection: close`,
    /// closes each connection once it has been idle for 1 s, and returns once none is left,
    /// 10 s at most; the shutdown event says `drained`.
    pub fn drain(&self) {
        self.stop.drain.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Validates `config`, builds the guard and binds `config.listen`.
    ///
    /// # Errors
    ///
    /// What [`Guard::new`] refuses, or [`Error::Bind`].
    pub fn bind(config: &Config) -> Result<Server, Error> {
        Server::from_listener(config, Server::listen(&config.listen)?)
    }

    /// Binds `addr` (`IP:PORT`), as [`Server::bind`] does, for [`Server::from_listener`]
    /// (in this process, or in another one it is passed to).
    ///
    /// # Errors
    ///
    /// [`Error::Bind`].
    pub fn listen(addr: &str) -> Result<std::net::TcpListener, Error> {
        super::sys::listen(addr).map_err(|e| Error::Bind {
            addr: addr.to_owned(),
            source: e.into(),
        })
    }

    /// Validates `config`, builds the guard, and serves on `listener` (inherited from
    /// systemd or jwtguard's supervisor, say), giving it the send timeout every accepted
    /// connection inherits. `config.listen` is only reported.
    ///
    /// # Errors
    ///
    /// What [`Guard::new`] refuses, or [`Error::Bind`].
    pub fn from_listener(
        config: &Config,
        listener: std::net::TcpListener,
    ) -> Result<Server, Error> {
        let guard = Guard::new(config)?;
        // A server fetches `--jwks-url` now, not at its first request.
        guard.start_fetching();
        let proxy = Proxy::new(config)?;
        let bind = |source| Error::Bind {
            addr: config.listen.clone(),
            source,
        };
        let mut front = Front::new(listener).map_err(|e| bind(Box::new(e)))?;
        let addr = front.local_addr().map_err(|e| bind(Box::new(e)))?;
        let metrics = match &config.metrics {
            Some(at) => {
                let bind = |source: std::io::Error| Error::Bind {
                    addr: at.clone(),
                    source: source.into(),
                };
                let listener = super::sys::listen_shared(at).map_err(bind)?;
                let addr = listener.local_addr().map_err(bind)?;
                let cache = guard.cache.clone();
                let listener =
                    crate::metrics::listener(listener, move || cache.as_ref().map(|c| c.stats()))
                        .map_err(bind)?;
                front.serve_metrics(listener);
                crate::metrics::connections(0, config.max_connections);
                Some(addr)
            }
            None => None,
        };
        let open_files = super::sys::raise_open_files();
        Ok(Server {
            waker: front.waker(),
            front: Some(front),
            limits: super::Limits::new(config),
            guard,
            proxy,
            forward_auth: config.forward_auth.clone(),
            addr,
            config: {
                let mut fields = config.fields();
                fields.push(("max_open_files", open_files.to_string()));
                fields
            },
            stop: Arc::new(Stop {
                flag: AtomicBool::new(false),
                cause: Mutex::new(None),
                drain: AtomicBool::new(false),
            }),
            heartbeat: None,
            metrics,
        })
    }

    /// Calls `beat` from the serving loop about once a second while it runs (not at all
    /// while it is stuck): a supervisor's or systemd's watchdog.
    pub fn on_heartbeat(&mut self, beat: impl FnMut() + Send + 'static) {
        self.heartbeat = Some(Box::new(beat));
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is answered (`Config::metrics`), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// A handle that stops it.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            waker: self.waker.clone(),
            stop: self.stop.clone(),
        }
    }

    /// Writes the start-up event, serves until stopped, and writes the shutdown event.
    /// Returns how many requests were answered.
    ///
    /// It answers `/healthz` (200, or 503 while the security log is failing), protected
    /// paths through the guard, and 404 for anything else (with an upstream, an allowed
    /// or public request goes on to it). The requests already waiting (up to 64) are
    /// decided together: their events are written in one `write(2)`, and
    /// only then are the requests answered, each with 503 if its event did not reach the
    /// log (a group commit). No request waits for others to arrive.
    ///
    /// # Errors
    ///
    /// [`Error::Accept`] when the server cannot go on accepting connections (the event
    /// loop's poll or its listening socket failed); the shutdown event says so too.
    pub fn run(mut self) -> Result<u64, Error> {
        let url = format!("http://{}", self.addr);
        logger::record(&Event::Service(ServiceEvent::Startup {
            url: &url,
            config: &self.config,
        }));
        let front = self.front.take().expect("run once");
        let cx = super::event_loop::Context {
            guard: &self.guard,
            forward_auth: self.forward_auth.as_deref(),
            limits: &self.limits,
            proxy: self.proxy.as_ref(),
            stop: &self.stop.flag,
            drain: &self.stop.drain,
            heartbeat: self.heartbeat.as_mut(),
        };
        let (answered, result) = super::event_loop::serve(front, cx);
        let cause = match &result {
            Ok(()) if self.stop.drain.load(Ordering::SeqCst) => Cause::Drained,
            Ok(()) => self
                .stop
                .cause
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or(Cause::Signal("stop")),
            Err(_) => Cause::AcceptFailed,
        };
        logger::record(&Event::Service(ServiceEvent::Shutdown { cause, answered }));
        result.map(|()| answered)
    }
}
