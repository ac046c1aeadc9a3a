//! The `jwtguard` binary's server: in serve mode jwtguard's own event loop (src/serve/),
//! in proxy mode (`--upstream`), for now, the tiny_http `recv` loop below; each decides,
//! records and answers, with a group commit of the security events.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::event::{Cause, Event, RequestId, ServiceEvent};
use crate::guard::{Decision, Pending};
use crate::http::{self, Reply, Sent};
use crate::logger::{self, Batch};
use crate::proxy::{NotForwarded, Proxy};
use crate::{Config, Error, Guard};

/// The `jwtguard` binary's server: bound, not yet serving.
///
/// [`Server::run`] writes the start-up event, serves until a [`Stopper`] stops it, and
/// writes the shutdown event with its cause.
pub struct Server {
    front: Front,
    limits: crate::serve::Limits,
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

/// What serves the listening socket.
enum Front {
    /// Serve mode: jwtguard's own event loop (src/serve/).
    Loop(Option<crate::serve::event_loop::Front>),
    /// Proxy mode, for now: tiny_http's threads and the serving loop below.
    Tiny(Arc<tiny_http::Server>),
}

/// How a [`Stopper`] wakes the serving thread.
#[derive(Clone)]
enum Wake {
    Loop(Arc<mio::Waker>),
    Tiny(Arc<tiny_http::Server>),
}

impl Wake {
    fn wake(&self) {
        match self {
            Wake::Loop(waker) => {
                let _ = waker.wake();
            }
            Wake::Tiny(http) => http.unblock(),
        }
    }
}

/// Stops the accept thread: afterwards its next `accept` fails. The binary's replaces the
/// listening descriptor with `/dev/null` (src/fds.rs).
type Unlisten = Box<dyn FnOnce() -> std::io::Result<()> + Send>;

struct Stop {
    flag: AtomicBool,
    cause: Mutex<Option<Cause>>,
    /// Hand over to another process: stop accepting, finish what is held, stop.
    drain: AtomicBool,
    unlisten: Mutex<Option<Unlisten>>,
}

/// Stops a running [`Server`] from another thread (a signal handler's).
#[derive(Clone)]
pub struct Stopper {
    wake: Wake,
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
        self.wake.wake();
    }

    /// Asks the server to hand over to another process serving the same listening socket:
    /// it stops accepting connections (through the hook given to [`Server::on_drain`], run
    /// here, at once), answers every request still coming on the connections it holds with
    /// `Connection: close`, and returns once they are closed or idle (1 s), 10 s at most;
    /// the shutdown event says `drained`. Without a hook it stops as [`Stopper::stop`] does.
    /// In serve mode (no upstream) the event loop stops accepting by itself, without the
    /// hook, and closes each connection once it has been idle for 1 s.
    pub fn drain(&self) {
        if let Wake::Loop(waker) = &self.wake {
            // The loop stops accepting itself: it drops its listening descriptor.
            self.stop.drain.store(true, Ordering::SeqCst);
            let _ = waker.wake();
            return;
        }
        let unlisten = self
            .stop
            .unlisten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match unlisten.map(|unlisten| unlisten()) {
            Some(Ok(())) => {
                self.stop.drain.store(true, Ordering::SeqCst);
                self.wake.wake();
            }
            Some(Err(err)) => {
                log::error!("cannot stop accepting connections: {err}; stopping");
                self.stop(Cause::Drained);
            }
            None => self.stop(Cause::Drained),
        }
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
        crate::sys::listen(addr).map_err(|e| Error::Bind {
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
        let proxy = match &config.upstream {
            Some(upstream) => {
                let port = listener.local_addr().map_or(0, |a| a.port());
                Some(Proxy::new(config, upstream, port)?)
            }
            None => None,
        };
        let bind = |source| Error::Bind {
            addr: config.listen.clone(),
            source,
        };
        let (front, addr) = if proxy.is_none() {
            let front =
                crate::serve::event_loop::Front::new(listener).map_err(|e| bind(Box::new(e)))?;
            let addr = front.local_addr().map_err(|e| bind(Box::new(e)))?;
            (Front::Loop(Some(front)), addr)
        } else {
            crate::sys::set_send_timeout(&listener).map_err(|e| bind(e.into()))?;
            let http = tiny_http::Server::from_listener(listener, None).map_err(bind)?;
            let addr = http
                .server_addr()
                .to_ip()
                .expect("a TCP listener has an IP address");
            (Front::Tiny(Arc::new(http)), addr)
        };
        let metrics = match &config.metrics {
            Some(at) => {
                let bind = |source: std::io::Error| Error::Bind {
                    addr: at.clone(),
                    source: source.into(),
                };
                let listener = crate::sys::listen_shared(at).map_err(bind)?;
                let addr = listener.local_addr().map_err(bind)?;
                let cache = guard.cache.clone();
                crate::metrics::spawn(listener, move || cache.as_ref().map(|c| c.stats()))
                    .map_err(bind)?;
                crate::metrics::connections(0, config.max_connections);
                Some(addr)
            }
            None => None,
        };
        let open_files = crate::sys::raise_open_files();
        Ok(Server {
            front,
            limits: crate::serve::Limits::new(config),
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
                unlisten: Mutex::new(None),
            }),
            heartbeat: None,
            metrics,
        })
    }

    /// Gives [`Stopper::drain`] the way to stop this server's accept thread.
    pub fn on_drain(&mut self, unlisten: impl FnOnce() -> std::io::Result<()> + Send + 'static) {
        *self
            .stop
            .unlisten
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(unlisten));
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
        let wake = match &self.front {
            Front::Loop(front) => Wake::Loop(front.as_ref().expect("not run yet").waker()),
            Front::Tiny(http) => Wake::Tiny(http.clone()),
        };
        Stopper {
            wake,
            stop: self.stop.clone(),
        }
    }

    /// Writes the start-up event, serves until stopped, and writes the shutdown event.
    /// Returns how many requests were answered.
    ///
    /// It answers `/healthz` (200, or 503 while the security log is failing), protected
    /// paths through the guard, and 404 for anything else. The requests already waiting
    /// (up to 64) are decided together: their events are written in one `write(2)`, and
    /// only then are the requests answered, each with 503 if its event did not reach the
    /// log (a group commit). No request waits for others to arrive.
    ///
    /// # Errors
    ///
    /// [`Error::Accept`] when the server cannot go on accepting connections (tiny_http's
    /// accept thread ended, or the event loop's poll failed); the shutdown event says so
    /// too.
    pub fn run(mut self) -> Result<u64, Error> {
        let url = format!("http://{}", self.addr);
        logger::record(&Event::Service(ServiceEvent::Startup {
            url: &url,
            config: &self.config,
        }));
        let (answered, result) = match &mut self.front {
            Front::Loop(front) => {
                let front = front.take().expect("run once");
                let cx = crate::serve::event_loop::Context {
                    guard: &self.guard,
                    forward_auth: self.forward_auth.as_deref(),
                    limits: &self.limits,
                    stop: &self.stop.flag,
                    drain: &self.stop.drain,
                    heartbeat: self.heartbeat.as_mut(),
                };
                crate::serve::event_loop::serve(front, cx)
            }
            Front::Tiny(http) => {
                let http = http.clone();
                self.run_tiny(&http)
            }
        };
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

    /// Proxy mode's serving: tiny_http's threads, the pool kicker, the serving loop.
    fn run_tiny(&mut self, http: &tiny_http::Server) -> (u64, Result<(), Error>) {
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let kicker = std::thread::Builder::new()
                .name("jwtguard-kick".into())
                .stack_size(64 * 1024)
                .spawn_scoped(scope, || kick_pool(self.addr, &self.stop, &done));
            let served = serve(
                http,
                &self.guard,
                self.proxy.as_ref(),
                self.forward_auth.as_deref(),
                &self.stop,
                self.addr,
                self.heartbeat.as_mut(),
            );
            done.store(true, Ordering::SeqCst);
            if let Ok(kicker) = &kicker {
                kicker.thread().unpark();
            }
            served
        })
    }
}

/// Where this process connects to reach its own listening socket bound to `addr`: the
/// loopback address of its family when bound to all addresses.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// How often [`kick_pool`] looks.
const KICK: Duration = Duration::from_millis(250);

/// The most connections [`kick_pool`] makes at one look.
const MAX_KICKS: usize = 64;

/// Connects to the server itself every [`KICK`] and hangs up, until `done` or a stop or a
/// drain. tiny_http's thread pool counts a thread as idle until it has taken the lock
/// again after being woken, so in a burst of connections two can be handed to one idle
/// thread: the second waits in the pool's queue until a thread comes free, which behind
/// long-lived connections may be never (200 connections at once left up to 101 unanswered
/// for good). A new connection finding no idle thread starts one, which takes a queued
/// connection once its own (this empty one) ends. So while each kick starts a thread
/// (the process has one more), another may be queued: kick again, up to [`MAX_KICKS`]. In
/// the usual case the first kick goes to an idle thread, and that is all.
fn kick_pool(addr: SocketAddr, stop: &Stop, done: &AtomicBool) {
    let target = reachable(addr);
    loop {
        std::thread::park_timeout(KICK);
        if done.load(Ordering::SeqCst)
            || stop.flag.load(Ordering::SeqCst)
            || stop.drain.load(Ordering::SeqCst)
        {
            return;
        }
        let mut threads = crate::sys::threads();
        for _ in 0..MAX_KICKS {
            if std::net::TcpStream::connect_timeout(&target, KICK).is_err() {
                break;
            }
            // Time for tiny_http to accept it and hand it to a thread, or start one.
            std::thread::sleep(Duration::from_millis(2));
            let now = crate::sys::threads();
            if now <= threads {
                break;
            }
            threads = now;
        }
    }
}

/// The most requests [`serve`] decides before it writes their events and answers them.
const MAX_BATCH: usize = 64;

/// Serves requests until `stop` is set (and [`tiny_http::Server::unblock`] called, so
/// that the wait ends), or a drain is over. Returns how many requests were answered, and
/// why it stopped if not because of `stop`: [`Error::Accept`] when tiny_http stops
/// accepting connections (out of file descriptors, say), after the requests in hand are
/// answered.
#[allow(clippy::too_many_arguments)]
fn serve(
    http: &tiny_http::Server,
    guard: &Guard,
    proxy: Option<&Proxy>,
    forward_auth: Option<&str>,
    stop: &Stop,
    addr: SocketAddr,
    mut heartbeat: Option<&mut Box<dyn FnMut() + Send>>,
) -> (u64, Result<(), Error>) {
    let mut serving = Serving {
        guard,
        proxy,
        forward_auth,
        dead: HashMap::new(),
        stalled: Vec::new(),
        answered: 0,
        draining: false,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut drain: Option<Drain> = None;
    let mut beaten = Instant::now();
    let mut ticked = Instant::now();
    if let Some(beat) = heartbeat.as_mut() {
        beat();
    }
    while !stop.flag.load(Ordering::SeqCst) {
        if beaten.elapsed() >= HEARTBEAT
            && let Some(beat) = heartbeat.as_mut()
        {
            beat();
            beaten = Instant::now();
        }
        // Under load as when idle: a peer's entry must not outlive its connection.
        if ticked.elapsed() >= TICK {
            serving.tick();
            ticked = Instant::now();
        }
        if drain.is_none() && stop.drain.load(Ordering::SeqCst) {
            serving.draining = true;
            if let Some(proxy) = proxy {
                proxy.drain();
            }
            drain = Some(Drain::new(addr));
        }
        if let Some(drain) = &mut drain {
            if drain.over(proxy) {
                break;
            }
            drain.wake_accept();
        }
        let wait = if drain.is_some() { DRAIN_TICK } else { TICK };
        let mut next = match http.recv_timeout(wait) {
            Ok(Some(request)) => Some(request),
            Ok(None) => continue,
            // Draining: the accept thread stopped, as asked.
            Err(_) if drain.is_some() => {
                drain.as_mut().expect("draining").accepting = false;
                continue;
            }
            Err(err) => return (serving.answered, Err(Error::Accept(err))),
        };
        if let Some(drain) = &mut drain {
            drain.last_request = Instant::now();
        }
        let events = Batch::open();
        let mut accept_failed = None;
        while let Some(request) = next.take() {
            let route = serving.route(&request);
            batch.push((request, route));
            if batch.len() < MAX_BATCH {
                match http.try_recv() {
                    Ok(request) => next = request,
                    Err(_) if drain.is_some() => {
                        drain.as_mut().expect("draining").accepting = false;
                    }
                    // The accept thread died: answer this batch, then stop.
                    Err(err) => accept_failed = Some(err),
                }
            }
        }
        let written = events.commit();
        for (request, route) in batch.drain(..) {
            serving.answer(request, route, written);
        }
        serving.stalled.clear();
        if let Some(err) = accept_failed {
            return (serving.answered, Err(Error::Accept(err)));
        }
    }
    (serving.answered, Ok(()))
}

/// How often the serving loop calls its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often a draining loop looks at what it still holds.
const DRAIN_TICK: Duration = Duration::from_millis(20);

/// The longest a drain waits for the connections it holds.
const GRACE: Duration = Duration::from_secs(10);

/// A connection that sent nothing for this long while draining is idle: closed.
const IDLE: Duration = Duration::from_secs(1);

/// A server handing over to another process on the same listening socket.
struct Drain {
    started: Instant,
    last_request: Instant,
    /// Until the accept thread's failure arrives: it may still take one connection.
    accepting: bool,
    /// Where to connect to wake the accept thread, and when it was last done.
    wake: SocketAddr,
    woken: Option<Instant>,
}

impl Drain {
    fn new(addr: SocketAddr) -> Drain {
        let wake = reachable(addr);
        let now = Instant::now();
        Drain {
            started: now,
            last_request: now,
            accepting: true,
            wake,
            woken: None,
        }
    }

    /// The accept thread sleeps in `accept` until a connection comes, and only then
    /// finds its socket gone: a connection of its own wakes it (or the other process's
    /// accept, which then sees a connection close without a request).
    fn wake_accept(&mut self) {
        if self.accepting && self.woken.is_none_or(|t| t.elapsed() >= DRAIN_TICK) {
            let _ = std::net::TcpStream::connect_timeout(&self.wake, DRAIN_TICK);
            self.woken = Some(Instant::now());
        }
    }

    /// Whether the drain is over: nothing more can be accepted, and the connections are
    /// closed or idle and nothing is being forwarded; or the grace period is over.
    fn over(&self, proxy: Option<&Proxy>) -> bool {
        if self.started.elapsed() >= GRACE {
            return true;
        }
        if self.accepting || !proxy.is_none_or(Proxy::is_idle) {
            return false;
        }
        self.last_request.elapsed() >= IDLE || crate::sys::open_sockets() == 0
    }
}

/// How often the serving loop wakes when no request comes, to forget old dead peers.
const TICK: Duration = Duration::from_secs(1);

/// A connection no longer served is forgotten this long after its last request (by then
/// its client has gone, and its address and port may be another client's).
const DEAD_FOR: Duration = Duration::from_secs(2);

/// The serving thread's state.
struct Serving<'a> {
    guard: &'a Guard,
    /// With an upstream: where allowed and public requests go.
    proxy: Option<&'a Proxy>,
    /// The forward-auth endpoint's path, if any.
    forward_auth: Option<&'a str>,
    /// Connections no longer served (by peer address and port), with when they last sent
    /// a request: their answers stalled, or their framing was refused, or what follows a
    /// request of theirs cannot be trusted to be a request.
    dead: HashMap<SocketAddr, Instant>,
    /// Connections whose answer stalled in the batch being answered: the rest of their
    /// answers in it are not written.
    stalled: Vec<SocketAddr>,
    answered: u64,
    /// Handing over: every answer closes its connection.
    draining: bool,
}

/// Where a request goes.
enum Route {
    /// `/healthz`: open to all, never an event.
    Health,
    /// Decided by the guard (or refused for its framing), with `Connection: close` when
    /// `close`. With an upstream, an allowed or public one goes on to `target` (the
    /// normalised path and the query).
    Guarded {
        pending: Pending,
        close: bool,
        target: Option<String>,
    },
    /// A forward-auth subrequest, decided.
    Auth { pending: Pending, close: bool },
    /// On a connection no longer served: dropped, unanswered.
    Dispose,
}

impl Serving<'_> {
    fn route(&mut self, request: &tiny_http::Request) -> Route {
        let peer = request.remote_addr().copied();
        if let Some(peer) = peer
            && let Some(seen) = self.dead.get_mut(&peer)
        {
            *seen = Instant::now();
            return Route::Dispose;
        }
        let parts = http::request(request);
        let path = crate::path::normalise(request.url());
        let auth = self.forward_auth.is_some() && path.as_deref().ok() == self.forward_auth;
        if let Err(reason) = http::framing(request) {
            // What follows on this connection cannot be trusted to be a request.
            self.kill(peer);
            let parts = if auth {
                self.guard.original(parts).unwrap_or_else(|own| own)
            } else {
                parts
            };
            return Route::Guarded {
                pending: self.guard.refuse(&parts, reason),
                close: true,
                target: None,
            };
        }
        // A body tiny_http does not read is the proxy's: it reads it, and keeps the
        // connection, when it forwards the request; else `reply` closes it. (Serve mode,
        // without a proxy, runs on src/serve/ now.)
        let close = self.draining;
        if close {
            self.kill(peer);
        }
        if path.as_deref() == Ok("/healthz") {
            return Route::Health;
        }
        if let Some(proxy) = self.proxy
            && proxy.refuses_body(request)
        {
            // Its body stays unread: nothing after it on this connection is a request.
            self.kill(peer);
            return Route::Guarded {
                pending: self.guard.refuse(&parts, crate::Reason::BodyNotAllowed),
                close: true,
                target: None,
            };
        }
        if auth {
            let pending = match self.guard.original(parts) {
                Ok(parts) => self.guard.decide(&parts),
                Err(own) => self.guard.refuse(&own, crate::Reason::InvalidRequest),
            };
            return Route::Auth { pending, close };
        }
        let target = match (&self.proxy, &path) {
            (Some(_), Ok(path)) => {
                let query = request
                    .url()
                    .find('?')
                    .map_or("", |at| &request.url()[at..]);
                Some(format!("{path}{query}"))
            }
            _ => None,
        };
        Route::Guarded {
            pending: self.guard.decide(&parts),
            close,
            target,
        }
    }

    /// Answers `request`, once `written` bytes of the batch are in the log.
    fn answer(&mut self, request: tiny_http::Request, route: Route, written: usize) {
        let peer = request.remote_addr().copied();
        let (reply, close, forward) = match route {
            Route::Dispose => return http::dispose(request),
            Route::Health => (Answer::Health, false, None),
            Route::Auth { pending, close } => (Answer::Auth(pending.settle(written)), close, None),
            Route::Guarded {
                pending,
                close,
                target,
            } => (Answer::Decision(pending.settle(written)), close, target),
        };
        let request_id = reply.request_id();
        if let (Some(proxy), Some(target)) = (self.proxy, forward) {
            let allowed = match &reply {
                Answer::Decision(Decision::Public) => None,
                Answer::Decision(Decision::Allowed(allowed)) => Some(allowed),
                _ => return self.reply(request, &reply, close, request_id, peer),
            };
            // Every answer has an id, a public path's too (its 502 is the app's trouble).
            let id = Some(allowed.map_or_else(
                || self.guard.new_request_id(),
                |allowed| allowed.request_id(),
            ));
            if let Some(peer) = peer
                && self.stalled.contains(&peer)
            {
                // Abandoned earlier in this batch.
                http::dispose(request);
                if id.is_some() {
                    self.undelivered(id, Some(peer));
                }
                return;
            }
            let identity = allowed.into_iter().flat_map(|allowed| allowed.headers());
            self.answered += 1;
            match proxy.forward(request, target, id, identity) {
                Ok(()) => {}
                Err(NotForwarded::Busy(forward)) => proxy.turn_away(forward),
                Err(NotForwarded::Ahead(forward)) => self.abandon(forward.request, id, peer),
            }
            return;
        }
        self.reply(request, &reply, close, request_id, peer);
    }

    /// Writes jwtguard's own answer: now, or, when the connection's forwarding is still
    /// under way, behind it.
    fn reply(
        &mut self,
        request: tiny_http::Request,
        answer: &Answer,
        close: bool,
        request_id: Option<RequestId>,
        peer: Option<SocketAddr>,
    ) {
        if let Some(peer) = peer
            && self.stalled.contains(&peer)
        {
            // An earlier answer to this client stalled in this batch: this one would too.
            http::dispose(request);
            if request_id.is_some() {
                self.undelivered(request_id, Some(peer));
            }
            return;
        }
        // A body tiny_http leaves unread (with an upstream, only a forwarded request's is
        // read): answer with Connection: close, and serve nothing more on that connection.
        let close = close || http::leaves_input(&request);
        if close {
            self.kill(peer);
        }
        let log_failing = || logger::installed().is_none_or(|log| log.failing());
        // Health checks are not the users' requests (src/serve/event_loop.rs counts alike).
        let counted = !matches!(answer, Answer::Health);
        let reply = match answer {
            Answer::Health => Reply::Health {
                log_failing: log_failing(),
                draining: self.draining,
                no_keys: !self.guard.keys_loaded(),
            },
            Answer::Decision(Decision::Public) => Reply::NotFound,
            Answer::Auth(Decision::Public) => Reply::Open(self.guard.identity_names()),
            Answer::Decision(Decision::Allowed(allowed))
            | Answer::Auth(Decision::Allowed(allowed)) => Reply::Allowed(allowed),
            Answer::Decision(Decision::Refused(refused))
            | Answer::Auth(Decision::Refused(refused)) => Reply::Refused(refused),
        };
        self.answered += u64::from(counted);
        // jwtguard's own answers; the upstream's are counted once proxy mode is in the loop.
        crate::metrics::answer(reply.status());
        if let Some(proxy) = self.proxy
            && proxy.busy(peer)
        {
            let bytes = http::answer_bytes(&request, &reply, close);
            if let Err(answer) = proxy.answer_after(request, bytes) {
                self.abandon(answer.0, request_id, peer);
            }
            return;
        }
        if http::send(request, &reply, close) == Sent::Stalled {
            // The client does not read: do not wait on it again.
            self.kill(peer);
            self.stalled.extend(peer);
            self.undelivered(request_id, peer);
        }
    }

    /// Serves `peer`'s connection no more: with an upstream, it pipelines requests far ahead
    /// of reading their answers. `request` is dropped unanswered.
    fn abandon(
        &mut self,
        request: tiny_http::Request,
        request_id: Option<RequestId>,
        peer: Option<SocketAddr>,
    ) {
        http::dispose(request);
        self.kill(peer);
        self.stalled.extend(peer);
        self.undelivered(request_id, peer);
    }

    /// Records that the answer to `request_id` (if it has one) did not reach `peer`.
    fn undelivered(&self, request_id: Option<RequestId>, peer: Option<SocketAddr>) {
        logger::record(&Event::Undelivered {
            request_id,
            source_ip: peer.map(|p| p.ip().to_canonical()),
        });
    }

    fn kill(&mut self, peer: Option<SocketAddr>) {
        if let Some(peer) = peer {
            self.dead.insert(peer, Instant::now());
        }
    }

    fn tick(&mut self) {
        self.dead.retain(|_, seen| seen.elapsed() < DEAD_FOR);
    }
}

/// What a request gets, once decided.
enum Answer {
    Health,
    Decision(Decision),
    /// A forward-auth subrequest's decision.
    Auth(Decision),
}

impl Answer {
    fn request_id(&self) -> Option<RequestId> {
        match self {
            Answer::Decision(Decision::Allowed(a)) | Answer::Auth(Decision::Allowed(a)) => {
                Some(a.request_id())
            }
            Answer::Decision(Decision::Refused(r)) | Answer::Auth(Decision::Refused(r)) => {
                Some(r.request_id())
            }
            _ => None,
        }
    }
}
