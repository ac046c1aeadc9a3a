//! The reverse proxy: allowed (and public) requests go on to the upstream application,
//! and no slow upstream, nor slow client, holds up the serving thread.
//!
//! jwtguard speaks HTTP/1.1 to the upstream itself, with `httparse` for the response head:
//! a proxy must pass a message on as it came (any method, headers in order and repeated,
//! its framing), which a general HTTP client would rewrite. A body on `GET`, `HEAD`,
//! `OPTIONS` or `DELETE` is the exception ([`Proxy::refuses_body`]).
//!
//! Each client connection has a lane: its requests are forwarded, and answered, in order,
//! by one thread at a time. While a lane is busy, the serving thread hands it its other
//! answers too (a 401, say) instead of writing them itself: tiny_http writes a connection's
//! answers in order, so that write would wait for the forwarding to finish.
//!
//! Most requests take the fast path ([`reactor`]): the serving thread sends the head on an
//! idle kept-alive connection itself, and the reactor thread, which waits on every kept
//! connection at once, passes the answer on. The others (a body to send, a busy lane, no
//! idle connection, an answer that does not fit the connection's buffer, a client that
//! does not take it at once) are forwarded, or finished, by a bounded pool of threads, each
//! blocking on one exchange at a time.

mod conn;
mod reactor;
mod request_head;
mod response;

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::mem;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use conn::Conn;
use reactor::{Kept, MAX_FAST_HEAD};
use response::{Framing, Parsed};

use crate::event::{Action, Event, RequestEvent, RequestId};
use crate::forwarded::Trusted;
use crate::http::{self, Reply};
use crate::serve::chunked::Chunked;
use crate::{Config, Error, Headers, logger};

/// The most forwarding threads.
const MAX_THREADS: usize = 64;
/// The most client connections waiting for a forwarding thread; past it, 503.
const MAX_WAITING: usize = 1024;
/// Upstream connections kept for reuse (idle, or carrying a request for the reactor).
const MAX_IDLE: usize = 64;
/// The longest upstream response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The most a response of unknown length is held, for an HTTP/1.0 client that keeps its
/// connection: it needs a `Content-Length`.
const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// The most jobs queued on one client connection's lane: a client that pipelines further
/// ahead of its answers is served no more.
const MAX_QUEUED: usize = 64;
/// Client connections remembered as slow (an answer of the reactor's found no room).
const MAX_SLOW: usize = 1024;
/// How long a slow client connection is left off the fast path.
const SLOW_FOR: Duration = Duration::from_secs(60);
/// The most request bodies read at once from clients of one address: a quarter of the
/// forwarding threads. A client that sends its body slowly holds a thread while it does.
const MAX_UPLOADS_PER_IP: usize = MAX_THREADS / 4;
/// The shortest pause between two of the watchdog's passes over the descriptors.
const WATCH_PAUSE: Duration = Duration::from_millis(100);
/// How long a closed client connection's requests are still dropped (by then tiny_http
/// has no more of them, and the address may be another client's).
const CLOSED_FOR: Duration = Duration::from_secs(2);
/// The longest chunk-size or trailer line of an upstream's chunked answer.
const MAX_LINE: usize = 4 * 1024;

/// A request on its way to the upstream.
pub(crate) struct Forward {
    pub request: tiny_http::Request,
    /// The normalised path and the query.
    target: String,
    /// The decision's id, for a request the guard allowed (none for a public one).
    id: Option<RequestId>,
    /// The request line and headers for the upstream.
    head: Vec<u8>,
    /// Whether it may take the fast path: no body, and a short head.
    fast: bool,
}

impl Forward {
    /// The event's path: the normalised path, without the query.
    fn path(&self) -> &str {
        crate::guard::path_of(&self.target)
    }
}

/// Why [`Proxy::forward`] gave a request back.
pub(crate) enum NotForwarded {
    /// Too many connections wait for a thread already: answer 503
    /// ([`Proxy::turn_away`]).
    Busy(Box<Forward>),
    /// Its connection has [`MAX_QUEUED`] requests waiting for their answers already: the
    /// client pipelines and does not read. Serve that connection no more.
    Ahead(Box<Forward>),
}

/// Where a forwarding thread takes a request up.
enum Start {
    /// From the beginning.
    Fresh,
    /// The reactor's connection was closed under the request before an answer: send it
    /// again, on a new connection, and not a third time.
    Retry,
    /// The head went out on this connection, and the answer is coming (the start of it in
    /// the connection's buffer).
    Sent(Conn),
    /// The reactor found the upstream failed: answer with this reason and status.
    Failed(&'static str, u16),
}

enum Job {
    Forward(Box<Forward>, Start),
    /// An answer of jwtguard's own, already written out, for a busy lane.
    Answer(Box<(tiny_http::Request, Vec<u8>)>),
    /// The rest of an answer the reactor began: the client did not take it at once.
    Rest(Box<(Box<dyn Write + Send>, Vec<u8>)>),
}

/// The reverse proxy: its upstream, its kept connections, its lanes and threads.
#[derive(Clone)]
pub(crate) struct Proxy {
    shared: Arc<Shared>,
    /// `--allow-body-on-any-method`.
    any_body: bool,
}

struct Shared {
    upstream: Vec<SocketAddr>,
    timeout: Duration,
    strip_authorization: bool,
    /// Identity header names: a client's copies never reach the upstream.
    identity: Vec<String>,
    trusted: Trusted,
    kept: Kept,
    lanes: Mutex<Lanes>,
    work: Condvar,
    /// The worker is handing over to another: every answer says `Connection: close`,
    /// and no upstream connection is kept.
    draining: std::sync::atomic::AtomicBool,
    /// The port clients connect to: with their address, it finds a client's socket.
    listen_port: u16,
    /// What the watchdog looks after, and how it is woken.
    watch: Mutex<Watch>,
    wake_watchdog: Condvar,
    /// Notified after each of the watchdog's passes.
    watched: Condvar,
}

/// The watchdog's work: shutting client connections down is a scan of every descriptor, so
/// it does them together, at most once per [`WATCH_PAUSE`], whatever their number.
#[derive(Default)]
struct Watch {
    /// The request bodies being read from clients, by client connection: when each last
    /// made progress, and whether the watchdog cut it for a stall.
    uploads: HashMap<SocketAddr, (Instant, bool)>,
    /// Whose each of those bodies is: the client a trusted proxy names, else the peer's
    /// address (so that one client behind a shared proxy cannot take everyone's share).
    owners: HashMap<SocketAddr, IpAddr>,
    /// Client connections to shut down, and how.
    shut: Vec<(SocketAddr, Shutdown)>,
    /// The passes that took their work, and those that finished it.
    taken: u64,
    done: u64,
}

#[derive(Default)]
struct Lanes {
    /// Each busy client connection's jobs, in order. A lane with no job queued is being
    /// worked: by a forwarding thread, or (when not in `ready`) by the reactor.
    busy: HashMap<SocketAddr, VecDeque<Job>>,
    /// Connections with jobs and no thread on them.
    ready: VecDeque<SocketAddr>,
    /// Client connections that did not take an answer of the reactor's at once, and when:
    /// they are left to the forwarding threads, which wait for them.
    slow: HashMap<SocketAddr, Instant>,
    /// Client connections closed (or about to be), and when: what comes from them still is
    /// dropped unanswered.
    closed: HashMap<SocketAddr, Instant>,
    threads: usize,
    idle_threads: usize,
}

impl Lanes {
    /// Whether `peer`'s connection was closed lately (no hashing while none was).
    fn is_closed(&self, peer: SocketAddr) -> bool {
        !self.closed.is_empty() && self.closed.contains_key(&peer)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lane of `request`'s client connection.
fn peer_of(request: &tiny_http::Request) -> SocketAddr {
    request
        .remote_addr()
        .copied()
        .unwrap_or(([0, 0, 0, 0], 0).into())
}

/// Whether `request` has a body to send on.
fn has_body(request: &tiny_http::Request) -> bool {
    request.body_length().is_some_and(|n| n > 0) || chunked(request.headers())
}

impl Proxy {
    /// The proxy for `config.upstream`, for clients that connect to `listen_port`; its
    /// address is resolved now.
    pub(crate) fn new(config: &Config, upstream: &str, listen_port: u16) -> Result<Proxy, Error> {
        let addr = crate::config::upstream_address(upstream).map_err(|problem| Error::Config {
            setting: "--upstream",
            problem,
        })?;
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::Config {
                setting: "--upstream",
                problem: format!("{upstream:?}: {e}"),
            })?
            .collect();
        let mut identity = vec![crate::config::USER_HEADER.to_owned()];
        identity.extend(config.claim_headers.iter().map(|(_, h)| h.clone()));
        let shared = Arc::new(Shared {
            upstream: resolved,
            timeout: Duration::from_secs(config.upstream_timeout),
            strip_authorization: config.strip_authorization,
            identity,
            trusted: Trusted::new(&config.trusted_proxies).reading(config.client_ip_header),
            kept: Kept::new(),
            lanes: Mutex::new(Lanes::default()),
            work: Condvar::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            listen_port,
            watch: Mutex::new(Watch::default()),
            wake_watchdog: Condvar::new(),
            watched: Condvar::new(),
        });
        let watchdog = shared.clone();
        std::thread::Builder::new()
            .name("jwtguard-watchdog".into())
            .stack_size(64 * 1024)
            .spawn(move || watchdog.watch())
            .map_err(|e| Error::Config {
                setting: "--upstream",
                problem: format!("cannot start a thread: {e}"),
            })?;
        if shared.kept.can_react() {
            let reactor = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("jwtguard-reactor".into())
                .stack_size(256 * 1024)
                .spawn(move || reactor.react());
            // Without a reactor, every request goes through a forwarding thread.
            if spawned.is_ok() {
                shared.kept.reacting();
            }
        }
        Ok(Proxy {
            shared,
            any_body: config.allow_body_on_any_method,
        })
    }

    /// Whether `request` is refused for its body (`body_not_allowed`): a body on `GET`,
    /// `HEAD`, `OPTIONS` or `DELETE` has no meaning (RFC 9110 §9.3), so an app may leave it
    /// unread and take it for the next request on that upstream connection, one the
    /// guard never saw (issue 17's desync). Unless `--allow-body-on-any-method`.
    pub(crate) fn refuses_body(&self, request: &tiny_http::Request) -> bool {
        use tiny_http::Method::{Delete, Get, Head, Options};
        !self.any_body
            && matches!(request.method(), Get | Head | Options | Delete)
            && has_body(request)
    }

    /// From now on, every answer closes its connection, and no upstream connection is
    /// given back for reuse (those kept idle close when the worker exits).
    pub(crate) fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Whether no request is being forwarded or waits to be.
    pub(crate) fn is_idle(&self) -> bool {
        lock(&self.shared.lanes).busy.is_empty()
    }

    /// Whether `peer`'s connection has a request being forwarded or waiting, or was closed
    /// (an answer cut short on it): its other answers go through [`Proxy::answer_after`].
    pub(crate) fn busy(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|peer| {
            let lanes = lock(&self.shared.lanes);
            lanes.busy.contains_key(&peer) || lanes.is_closed(peer)
        })
    }

    /// Forwards `request` to `target` (the normalised path and the query) with the
    /// `identity` headers, on its connection's lane; or gives it back, saying why.
    pub(crate) fn forward<'i>(
        &self,
        request: tiny_http::Request,
        target: String,
        id: Option<RequestId>,
        identity: impl Iterator<Item = (&'i str, &'i str)>,
    ) -> Result<(), NotForwarded> {
        let shared = &self.shared;
        let head = shared.request_head(&request, &target, id, identity);
        let fast = head.len() <= MAX_FAST_HEAD && !has_body(&request) && shared.kept.reacts();
        let peer = peer_of(&request);
        let job = Box::new(Forward {
            request,
            target,
            id,
            head,
            fast,
        });
        let mut lanes = lock(&shared.lanes);
        if lanes.is_closed(peer) {
            drop(lanes);
            http::dispose(job.request);
            return Ok(());
        }
        if let Some(queue) = lanes.busy.get_mut(&peer) {
            if queue.len() >= MAX_QUEUED {
                return Err(NotForwarded::Ahead(job));
            }
            queue.push_back(Job::Forward(job, Start::Fresh));
            return Ok(());
        }
        let job = if fast && (lanes.slow.is_empty() || !lanes.slow.contains_key(&peer)) {
            match shared.kept.send(job) {
                Ok(()) => {
                    // The lane is the reactor's until it answers: what comes meanwhile
                    // waits behind.
                    lanes.busy.insert(peer, VecDeque::new());
                    return Ok(());
                }
                Err(job) => job,
            }
        } else {
            job
        };
        if lanes.ready.len() >= MAX_WAITING {
            return Err(NotForwarded::Busy(job));
        }
        shared.open_lane(&mut lanes, peer, Job::Forward(job, Start::Fresh));
        drop(lanes);
        shared.work.notify_one();
        Ok(())
    }

    /// Answers 503 to a request [`forward`](Proxy::forward) gave back, with its event.
    pub(crate) fn turn_away(&self, forward: Box<Forward>) {
        let who = Who::of(&forward.request, &self.shared.trusted);
        let event = who.event(forward.id, forward.path(), "upstream_busy", 503);
        logger::record(&Event::Request(event));
        http::send(forward.request, &Reply::Status(503, forward.id), false);
    }

    /// Queues `answer` (written out) for `request` behind its connection's forwarding; gives
    /// both back when [`MAX_QUEUED`] wait there already (as [`NotForwarded::Ahead`]).
    pub(crate) fn answer_after(
        &self,
        request: tiny_http::Request,
        answer: Vec<u8>,
    ) -> Result<(), Box<(tiny_http::Request, Vec<u8>)>> {
        let peer = peer_of(&request);
        let answer = Box::new((request, answer));
        let mut lanes = lock(&self.shared.lanes);
        if lanes.is_closed(peer) {
            drop(lanes);
            http::dispose(answer.0);
            return Ok(());
        }
        if let Some(queue) = lanes.busy.get_mut(&peer) {
            if queue.len() >= MAX_QUEUED {
                return Err(answer);
            }
            queue.push_back(Job::Answer(answer));
            return Ok(());
        }
        self.shared.open_lane(&mut lanes, peer, Job::Answer(answer));
        drop(lanes);
        self.shared.work.notify_one();
        Ok(())
    }
}

impl Shared {
    /// Opens `peer`'s lane with `job`, for a forwarding thread. (The caller notifies
    /// `work`.)
    fn open_lane(self: &Arc<Self>, lanes: &mut Lanes, peer: SocketAddr, job: Job) {
        lanes.busy.insert(peer, VecDeque::from([job]));
        self.ready(lanes, peer);
    }

    /// Puts `peer`'s lane, which has jobs, in line for a forwarding thread; starts one when
    /// more lanes wait than threads sleep (a woken thread counts as sleeping until it
    /// runs), while there are fewer than [`MAX_THREADS`].
    fn ready(self: &Arc<Self>, lanes: &mut Lanes, peer: SocketAddr) {
        lanes.ready.push_back(peer);
        if lanes.ready.len() > lanes.idle_threads && lanes.threads < MAX_THREADS {
            let shared = self.clone();
            let spawned = std::thread::Builder::new()
                .name("jwtguard-forward".into())
                .stack_size(256 * 1024)
                .spawn(move || shared.run());
            if spawned.is_ok() {
                lanes.threads += 1;
            }
        }
    }

    /// The reactor hands `peer`'s lane over, with `job` to do first.
    fn hand_over(self: &Arc<Self>, peer: SocketAddr, job: Job) {
        let mut lanes = lock(&self.lanes);
        lanes.busy.entry(peer).or_default().push_front(job);
        self.ready(&mut lanes, peer);
        drop(lanes);
        self.work.notify_one();
    }

    /// The reactor wrote part of an answer, and `peer` took no more at once: a forwarding
    /// thread writes `rest` as the client takes it, and `peer` is left off the fast path.
    fn hand_over_rest(
        self: &Arc<Self>,
        peer: SocketAddr,
        client: Box<dyn Write + Send>,
        rest: Vec<u8>,
    ) {
        {
            let mut lanes = lock(&self.lanes);
            if lanes.slow.len() >= MAX_SLOW {
                lanes.slow.retain(|_, since| since.elapsed() < SLOW_FOR);
                if lanes.slow.len() >= MAX_SLOW {
                    lanes.slow.clear();
                }
            }
            lanes.slow.insert(peer, Instant::now());
        }
        self.hand_over(peer, Job::Rest(Box::new((client, rest))));
    }

    /// The reactor answered `peer`'s request: its lane ends; or, when the next request came
    /// meanwhile (the client had the answer before the reactor got here), that one is sent
    /// on for the reactor too, when it can be; or else the lane goes to a forwarding thread.
    fn lane_done(self: &Arc<Self>, peer: SocketAddr) {
        let mut lanes = lock(&self.lanes);
        let Some(queue) = lanes.busy.get_mut(&peer) else {
            return;
        };
        let job = match queue.pop_front() {
            None => {
                lanes.busy.remove(&peer);
                return;
            }
            Some(Job::Forward(job, Start::Fresh)) if job.fast => match self.kept.send(job) {
                Ok(()) => return,
                Err(job) => Job::Forward(job, Start::Fresh),
            },
            Some(job) => job,
        };
        if let Some(queue) = lanes.busy.get_mut(&peer) {
            queue.push_front(job);
        }
        self.ready(&mut lanes, peer);
        drop(lanes);
        self.work.notify_one();
    }

    /// A forwarding thread: takes a connection's lane and works it until it is empty.
    fn run(&self) {
        loop {
            let peer = {
                let mut lanes = lock(&self.lanes);
                loop {
                    if let Some(peer) = lanes.ready.pop_front() {
                        break peer;
                    }
                    lanes.idle_threads += 1;
                    lanes = self
                        .work
                        .wait(lanes)
                        .unwrap_or_else(PoisonError::into_inner);
                    lanes.idle_threads -= 1;
                }
            };
            loop {
                let job = {
                    let mut lanes = lock(&self.lanes);
                    let queue = lanes.busy.get_mut(&peer).expect("a ready lane is busy");
                    match queue.pop_front() {
                        Some(job) => job,
                        None => {
                            // Empty: the lane ends, under the same lock that adds to it.
                            lanes.busy.remove(&peer);
                            break;
                        }
                    }
                };
                let delivered = match job {
                    Job::Forward(forward, start) => self.forward(*forward, start),
                    Job::Answer(answer) => {
                        let (request, answer) = *answer;
                        http::write_to(request, &answer);
                        true
                    }
                    Job::Rest(rest) => {
                        let (client, rest) = *rest;
                        let mut client = ClientWriter::new(client, self.timeout);
                        client.write(&rest).and_then(|()| client.flush()).is_ok()
                    }
                };
                if !delivered {
                    // Nothing more may be written on that connection: an answer may have
                    // been cut short on it.
                    self.drop_queued(peer, false);
                    self.close_client(peer);
                }
            }
        }
    }

    /// Closes `peer`'s client connection: from now on nothing more is written on it, nor
    /// forwarded from it, and the watchdog shuts it down (within [`WATCH_PAUSE`]), which
    /// ends tiny_http's thread for it.
    #[inline(never)]
    fn close_client(&self, peer: SocketAddr) {
        lock(&self.lanes).closed.insert(peer, Instant::now());
        lock(&self.watch).shut.push((peer, Shutdown::Both));
        self.wake_watchdog.notify_one();
    }

    /// Shuts the reading of `peer`'s client connection down, and returns once it is done:
    /// a request of it can then be dropped without tiny_http waiting for its body, and
    /// tiny_http's thread for it reads the end of the stream next, and ends.
    #[inline(never)]
    fn shut_reading(&self, peer: SocketAddr) {
        let mut watch = lock(&self.watch);
        watch.shut.push((peer, Shutdown::Read));
        let pass = watch.taken + 1;
        self.wake_watchdog.notify_one();
        while watch.done < pass {
            watch = self
                .watched
                .wait(watch)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The watchdog: shuts down the client connections to close, and the reading of request
    /// bodies that made no progress for the timeout (which wakes the forwarding thread
    /// waiting on one, to answer 408). A client that sends nothing holds a forwarding thread
    /// for the timeout and a tick, no longer. All in one pass over the descriptors, at most
    /// once per [`WATCH_PAUSE`].
    #[inline(never)]
    fn watch(&self) {
        let tick = (self.timeout / 4).clamp(WATCH_PAUSE, Duration::from_secs(1));
        loop {
            let (stalled, close) = {
                let mut watch = lock(&self.watch);
                if watch.shut.is_empty() {
                    watch = self
                        .wake_watchdog
                        .wait_timeout(watch, tick)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                let stalled: Vec<SocketAddr> = watch
                    .uploads
                    .iter_mut()
                    .filter(|(_, (last, cut))| !*cut && last.elapsed() >= self.timeout)
                    .map(|(peer, (_, cut))| {
                        *cut = true;
                        *peer
                    })
                    .collect();
                watch.taken += 1;
                (stalled, mem::take(&mut watch.shut))
            };
            lock(&self.lanes)
                .closed
                .retain(|_, since| since.elapsed() < CLOSED_FOR);
            let shut: Vec<(SocketAddr, Shutdown)> = stalled
                .into_iter()
                .map(|peer| (peer, Shutdown::Read))
                .chain(close)
                .collect();
            if !shut.is_empty() {
                crate::sys::shutdown_peers(self.listen_port, &shut);
            }
            lock(&self.watch).done += 1;
            self.watched.notify_all();
            if !shut.is_empty() {
                std::thread::sleep(WATCH_PAUSE);
            }
        }
    }

    /// `peer`'s client hung up, or took nothing for the whole timeout: what else waits for
    /// it is dropped unanswered, rather than each waiting as long; and its lane ends, when
    /// `end` (else the thread working it ends it).
    fn drop_queued(&self, peer: SocketAddr, end: bool) {
        let queued = {
            let mut lanes = lock(&self.lanes);
            let queued = lanes.busy.get_mut(&peer).map(mem::take);
            if end {
                lanes.busy.remove(&peer);
            }
            queued.unwrap_or_default()
        };
        for job in queued {
            match job {
                Job::Forward(forward, _) => http::dispose(forward.request),
                Job::Answer(answer) => http::dispose(answer.0),
                Job::Rest(_) => {}
            }
        }
    }

    /// Forwards one request and answers it: the upstream's response, or 502 or 504 (with
    /// an event) when the upstream could not be reached or did not answer in time. Returns
    /// whether the client took the answer (a failure event's answer counts as taken), and
    /// false when its connection must be closed: an answer cut short, a stalled body.
    fn forward(&self, job: Forward, start: Start) -> bool {
        let Forward {
            request,
            target,
            id,
            head,
            ..
        } = job;
        let who = Who::of(&request, &self.trusted);
        let path = crate::guard::path_of(&target);
        let (request, failure) = match self.exchange(request, &head, id, start) {
            Ok(()) => return true,
            Err((_, Failure::ClientGone)) => return false,
            Err(failed) => failed,
        };
        let (reason, status) = match failure {
            Failure::Before(reason, status) | Failure::During(reason, status) => (reason, status),
            Failure::Stalled => ("body_timeout", 408),
            Failure::TooManyUploads => ("too_many_uploads", 503),
            Failure::ClientGone => unreachable!("returned above"),
        };
        crate::metrics::upstream_error(reason);
        let mut event = who.event(id, path, reason, status);
        if let Failure::During(..) = failure {
            // The head went out: the client got `status`, its body cut short, and its
            // connection is closed (by the caller), so that nothing is written after.
            event.reason_text = match reason {
                "upstream_timeout" => {
                    "the upstream stopped within its answer: the client got the head and part of the body, then the connection closed"
                }
                _ => {
                    "the upstream's answer broke off: the client got the head and part of the body, then the connection closed"
                }
            };
        }
        logger::record(&Event::Request(event));
        let Some(request) = request else {
            return !matches!(failure, Failure::During(..));
        };
        match failure {
            Failure::Stalled | Failure::TooManyUploads => {
                // Its reading shut down first (by the watchdog, for a stalled body), so that
                // nothing is left to drain: tiny_http's thread reads the end of the stream
                // next, and the connection ends after the answer.
                if let Failure::TooManyUploads = failure {
                    self.shut_reading(peer_of(&request));
                }
                let answer = http::answer_bytes(&request, &Reply::Status(status, id), true);
                http::write_answer(*request, &answer);
            }
            _ => {
                http::send(*request, &Reply::Status(status, id), false);
            }
        }
        true
    }

    /// An idle upstream connection, or a new one; and whether it was idle.
    fn connection(&self) -> Result<(Conn, bool), Failure> {
        match self.kept.take() {
            Some(conn) => Ok((conn, true)),
            None => Ok((self.connect()?, false)),
        }
    }

    /// A new upstream connection.
    fn connect(&self) -> Result<Conn, Failure> {
        let mut last = None;
        for addr in &self.upstream {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(self.timeout));
                    let _ = stream.set_write_timeout(Some(self.timeout));
                    return Ok(Conn::new(stream));
                }
                Err(err) => last = Some(err),
            }
        }
        Err(match last.map(|e| e.kind()) {
            Some(ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                Failure::Before("upstream_timeout", 504)
            }
            _ => Failure::Before("upstream_unreachable", 502),
        })
    }

    /// Sends `request` upstream (from `start`) and its response to the client. On a
    /// failure before the answer started, the request comes back, to be answered 502 or
    /// 504.
    fn exchange(
        &self,
        mut request: tiny_http::Request,
        head: &[u8],
        id: Option<RequestId>,
        start: Start,
    ) -> Result<(), (Option<Box<tiny_http::Request>>, Failure)> {
        let sent = match start {
            Start::Failed(reason, status) => Err(Failure::Before(reason, status)),
            Start::Sent(mut conn) => read_head(&mut conn).map(|head| (conn, head)),
            Start::Fresh => self.request_upstream(&mut request, head, true),
            Start::Retry => self.request_upstream(&mut request, head, false),
        };
        let (mut conn, response_head) = match sent {
            Ok(sent) => sent,
            Err(failure) => return Err((Some(Box::new(request)), failure)),
        };
        let mut room = response::room();
        let response = match response::parse(&response_head, &mut room) {
            Ok(Parsed::Final(_, response)) => response,
            _ => {
                let failure = Failure::Before("upstream_error", 502);
                return Err((Some(Box::new(request)), failure));
            }
        };
        let head_request = *request.method() == tiny_http::Method::Head;
        let framing = match response.framing(head_request) {
            Ok(framing) => framing,
            Err(failure) => return Err((Some(Box::new(request)), failure)),
        };
        let version = request.http_version().clone();
        let client_closes = closes(&request) || self.draining.load(Ordering::SeqCst);
        let client_1_0 = version == tiny_http::HTTPVersion(1, 0);
        // The body of an HTTP/1.0 client that keeps its connection needs a length.
        let (framing, buffered) = match framing {
            Framing::Unknown if client_1_0 && !client_closes => {
                let mut body = Vec::new();
                let read = (&mut conn)
                    .take(MAX_BUFFERED as u64 + 1)
                    .read_to_end(&mut body);
                match read {
                    Err(e) => {
                        let failure =
                            Failure::Before(timeout_or(&e, "upstream_error"), status_of(&e));
                        return Err((Some(Box::new(request)), failure));
                    }
                    Ok(_) if body.len() > MAX_BUFFERED => {
                        return Err((
                            Some(Box::new(request)),
                            Failure::Before("upstream_error", 502),
                        ));
                    }
                    Ok(_) => (Framing::Length(body.len() as u64), Some(body)),
                }
            }
            framing => (framing, None),
        };
        let mut out = Vec::with_capacity(512);
        response.write(&mut out, &version, id, framing, client_closes, client_1_0);
        let keep_alive = response.keep_alive;
        let status = response.status;
        let mut client = ClientWriter::new(request.into_writer(), self.timeout);
        let gone = |_| (None, Failure::ClientGone);
        client.write(&out).map_err(gone)?;
        let reusable = match buffered {
            Some(body) => {
                client.write(&body).map_err(gone)?;
                // Read to the end of the stream.
                false
            }
            None => {
                let whole = copy_body(&mut conn, &mut client, framing, client_1_0, status)
                    .map_err(|f| (None, f))?;
                whole && keep_alive
            }
        };
        client.flush().map_err(gone)?;
        // Anything after the answer was not asked for: the connection is not reused.
        if reusable && conn.buffered().is_empty() && !self.draining.load(Ordering::SeqCst) {
            self.kept.give_back(conn);
        }
        Ok(())
    }

    /// Sends the request (`head`, then its body) upstream and reads the response head. A
    /// kept-alive connection the upstream had closed meanwhile is replaced by a new one,
    /// once, when the request had no body to send and `retry`; without `retry`, the request
    /// goes on a new connection.
    fn request_upstream(
        &self,
        request: &mut tiny_http::Request,
        head: &[u8],
        retry: bool,
    ) -> Result<(Conn, Vec<u8>), Failure> {
        let has_body = has_body(request);
        // Sent again only when it cannot have had an effect twice (nginx's default).
        let again = !has_body && idempotent(request.method());
        // A body still to come from the client (not one tiny_http read already): watched
        // for stalls, and at most MAX_UPLOADS_PER_IP of one address at once.
        let mut upload = match has_body && http::leaves_input(request) {
            true => Some(self.begin_upload(request)?),
            false => None,
        };
        let (mut upstream, mut reused) = if retry {
            self.connection()?
        } else {
            (self.connect()?, false)
        };
        loop {
            let mut sent = upstream.stream().write_all(head);
            if sent.is_ok() && has_body {
                sent = self.send_body(request, &mut upstream.stream())?;
            }
            // Read: no longer watched, while the answer is awaited.
            drop(upload.take());
            match sent.and_then(|()| upstream.fill_buf().map(|b| b.len())) {
                Ok(n) if n > 0 => break,
                Ok(_) if reused && again => {}
                Err(ref e) if reused && again && status_of(e) == 502 => {}
                Ok(_) => return Err(Failure::Before("upstream_error", 502)),
                Err(e) => {
                    return Err(Failure::Before(
                        timeout_or(&e, "upstream_error"),
                        status_of(&e),
                    ));
                }
            }
            (upstream, reused) = (self.connect()?, false);
        }
        let response_head = read_head(&mut upstream)?;
        Ok((upstream, response_head))
    }

    /// The request line and headers for the upstream ([`request_head`]'s rules).
    fn request_head<'i>(
        &self,
        request: &tiny_http::Request,
        target: &str,
        id: Option<RequestId>,
        identity: impl Iterator<Item = (&'i str, &'i str)>,
    ) -> Vec<u8> {
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
            .collect();
        let peer = request.remote_addr().map(|a| a.ip().to_canonical());
        let body = match request.body_length() {
            _ if chunked(request.headers()) => request_head::Body::Chunked,
            Some(n) if n > 0 || request.method().as_str() != "GET" => {
                request_head::Body::Length(n as u64)
            }
            _ => request_head::Body::None,
        };
        let parts = request_head::Parts {
            method: request.method().as_str(),
            target,
            headers: &headers,
            peer,
            trusted: peer.is_some_and(|p| self.trusted.contains(p)),
            body,
        };
        let added = request_head::Added {
            strip_authorization: self.strip_authorization,
            identity_names: &self.identity,
            identity,
            id,
        };
        let mut out = Vec::with_capacity(1024);
        request_head::write(&mut out, &parts, added);
        out
    }
}

/// Why a forwarding failed.
enum Failure {
    /// Before anything was sent to the client: it gets the status; the reason goes to the log.
    Before(&'static str, u16),
    /// After the response head (of this status) went to the client.
    During(&'static str, u16),
    /// The client's body made no progress for the timeout: 408 with `Connection: close`,
    /// and the connection ends (its reading was shut down).
    Stalled,
    /// The client's address has [`MAX_UPLOADS_PER_IP`] bodies on their way already: 503
    /// with `Connection: close` (its reading shut down first), and never upstream.
    TooManyUploads,
    /// The client hung up, or stopped reading for longer than the timeout.
    ClientGone,
}

fn timeout_or(err: &io::Error, otherwise: &'static str) -> &'static str {
    match err.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "upstream_timeout",
        _ => otherwise,
    }
}

fn status_of(err: &io::Error) -> u16 {
    match err.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => 504,
        _ => 502,
    }
}

/// What a failure event says of the request, taken before the request is consumed.
struct Who {
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    method: String,
    user_agent: Option<String>,
}

impl Who {
    fn of(request: &tiny_http::Request, trusted: &Trusted) -> Who {
        let peer = request.remote_addr().map(|a| a.ip().to_canonical());
        let headers = request.headers();
        Who {
            peer,
            client: trusted.client(peer, headers),
            method: request.method().as_str().to_owned(),
            user_agent: headers.values("User-Agent").next().map(str::to_owned),
        }
    }

    /// The failure event of a forwarding.
    fn event<'a>(
        &'a self,
        id: Option<RequestId>,
        path: &'a str,
        reason: &'static str,
        status: u16,
    ) -> RequestEvent<'a> {
        RequestEvent {
            action: Action::Forward,
            success: false,
            reason,
            reason_text: match reason {
                "upstream_timeout" => "the upstream did not answer in time",
                "upstream_unreachable" => "the upstream could not be reached",
                "upstream_busy" => "too many requests wait for the upstream",
                "body_timeout" => {
                    "the client's body made no progress within the timeout: answered, and the connection closed"
                }
                "too_many_uploads" => {
                    "too many bodies from this address are on their way: answered, and the connection closed"
                }
                _ => "the upstream's answer was not a valid HTTP/1.x response",
            },
            source_ip: self.peer,
            client_ip: self.client,
            status: Some(status),
            request_id: id,
            fingerprint: None,
            method: &self.method,
            path,
            user: None,
            user_agent: self.user_agent.as_deref(),
            kid: None,
            alg: None,
        }
    }
}

fn chunked(headers: &[tiny_http::Header]) -> bool {
    headers.values("Transfer-Encoding").next().is_some()
}

/// Whether the client's connection ends with this request.
fn closes(request: &tiny_http::Request) -> bool {
    let mut says = request
        .headers()
        .values("Connection")
        .flat_map(|v| v.split(','))
        .map(str::trim);
    let http_1_0 = *request.http_version() == tiny_http::HTTPVersion(1, 0);
    if http_1_0 {
        !says.any(|t| t.eq_ignore_ascii_case("keep-alive"))
    } else {
        says.any(|t| t.eq_ignore_ascii_case("close"))
    }
}

/// Whether a request may be sent again after a kept connection closed under it: GET,
/// HEAD and OPTIONS (nginx's default), which have no effect that could happen twice.
fn idempotent(method: &tiny_http::Method) -> bool {
    matches!(
        method,
        tiny_http::Method::Get | tiny_http::Method::Head | tiny_http::Method::Options
    )
}

/// A request body on its way from a client: in [`Watch::uploads`] until dropped.
struct Upload<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let mut watch = lock(&self.shared.watch);
        watch.uploads.remove(&self.peer);
        watch.owners.remove(&self.peer);
    }
}

impl Shared {
    /// Registers `request`'s body as on its way, for the watchdog; `Err` when its client
    /// (the one a trusted proxy names, else the peer's address) has
    /// [`MAX_UPLOADS_PER_IP`] already.
    #[inline(never)]
    fn begin_upload(&self, request: &tiny_http::Request) -> Result<Upload<'_>, Failure> {
        let peer = peer_of(request);
        let owner = self
            .trusted
            .client(Some(peer.ip().to_canonical()), request.headers())
            .unwrap_or(peer.ip().to_canonical());
        let mut watch = lock(&self.watch);
        if watch.owners.values().filter(|o| **o == owner).count() >= MAX_UPLOADS_PER_IP {
            return Err(Failure::TooManyUploads);
        }
        watch.uploads.insert(peer, (Instant::now(), false));
        watch.owners.insert(peer, owner);
        Ok(Upload { shared: self, peer })
    }

    /// Copies the request's body to the upstream with the framing its head announced,
    /// never more than its announced length; gives the upstream's side's result. `Err`
    /// when the client's side failed: its body stalled for the timeout (the watchdog shut
    /// its reading down), or it hung up before the whole body.
    fn send_body(
        &self,
        request: &mut tiny_http::Request,
        upstream: &mut &TcpStream,
    ) -> Result<io::Result<()>, Failure> {
        let peer = peer_of(request);
        let progress = || {
            if let Some((last, _)) = lock(&self.watch).uploads.get_mut(&peer) {
                *last = Instant::now();
            }
        };
        progress();
        let sent = copy_request_body(request, upstream, progress);
        // Out of the watchdog's sight at once: it cuts a body it saw stalled, or none.
        let cut = lock(&self.watch)
            .uploads
            .remove(&peer)
            .is_some_and(|(_, cut)| cut);
        match sent {
            _ if cut => Err(Failure::Stalled),
            Err(Side::Client) => Err(Failure::ClientGone),
            Err(Side::Upstream(err)) => Ok(Err(err)),
            Ok(()) => Ok(Ok(())),
        }
    }
}

/// Which side of a body's copy failed.
enum Side {
    /// The client ended before its announced length.
    Client,
    Upstream(io::Error),
}

/// Copies the request's body to the upstream, calling `progress` after each read.
#[inline(never)]
fn copy_request_body(
    request: &mut tiny_http::Request,
    upstream: &mut &TcpStream,
    progress: impl Fn(),
) -> Result<(), Side> {
    let chunked = chunked(request.headers());
    // Never more than the announced length, whatever reader tiny_http gave.
    let length = request.body_length().map(|n| n as u64);
    let mut reader = request.as_reader().take(length.unwrap_or(u64::MAX));
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    let up = Side::Upstream;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            // A chunked body that does not decode: as before, the exchange fails.
            Err(err) => return Err(up(err)),
        };
        progress();
        total += n as u64;
        if chunked {
            if n == 0 {
                return upstream.write_all(b"0\r\n\r\n").map_err(up);
            }
            write!(upstream, "{n:x}\r\n").map_err(up)?;
            upstream.write_all(&buf[..n]).map_err(up)?;
            upstream.write_all(b"\r\n").map_err(up)?;
        } else if n == 0 {
            return match length {
                Some(length) if total < length => Err(Side::Client),
                _ => Ok(()),
            };
        } else {
            upstream.write_all(&buf[..n]).map_err(up)?;
        }
        // A slow upstream is not a stalled client.
        progress();
    }
}

/// Appends a line from `reader` to `line`, up to LF and of at most `limit` bytes (a line
/// cut there ends without LF); returns how many bytes it read, 0 at the end of the stream.
#[inline(never)]
fn read_line(reader: &mut Conn, line: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    reader.take(limit as u64).read_until(b'\n', line)
}

/// Reads the final response head, past interim (1xx) ones.
fn read_head(reader: &mut Conn) -> Result<Vec<u8>, Failure> {
    let bad = || Failure::Before("upstream_error", 502);
    loop {
        let mut head = Vec::with_capacity(1024);
        loop {
            let before = head.len();
            // Never more than MAX_HEAD in all, even in a line without end.
            let n = read_line(reader, &mut head, MAX_HEAD + 1 - before)
                .map_err(|e| Failure::Before(timeout_or(&e, "upstream_error"), status_of(&e)))?;
            if n == 0 || head.len() > MAX_HEAD || !head.ends_with(b"\n") {
                return Err(bad());
            }
            let line = &head[before..];
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let mut room = response::room();
        match response::parse(&head, &mut room)? {
            Parsed::Interim(_) => continue,
            Parsed::Final(..) => return Ok(head),
            Parsed::Partial => return Err(bad()),
        }
    }
}

/// Copies the upstream's body to the client; returns whether the upstream connection can
/// carry another request.
fn copy_body(
    reader: &mut Conn,
    client: &mut ClientWriter,
    framing: Framing,
    client_1_0: bool,
    status: u16,
) -> Result<bool, Failure> {
    let upstream_err = |e: io::Error| Failure::During(timeout_or(&e, "upstream_error"), status);
    let broke = || Failure::During("upstream_error", status);
    let mut buf = vec![0u8; 16 * 1024];
    match framing {
        Framing::None => Ok(true),
        Framing::Length(n) => {
            let mut left = n;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let got = reader.read(&mut buf[..want]).map_err(upstream_err)?;
                if got == 0 {
                    return Err(broke());
                }
                client.write(&buf[..got]).map_err(|_| Failure::ClientGone)?;
                left -= got as u64;
            }
            Ok(true)
        }
        Framing::Unknown => {
            loop {
                let got = reader.read(&mut buf).map_err(upstream_err)?;
                if got == 0 {
                    break;
                }
                client
                    .chunk(&buf[..got], client_1_0)
                    .map_err(|_| Failure::ClientGone)?;
            }
            client
                .end_chunks(client_1_0)
                .map_err(|_| Failure::ClientGone)?;
            Ok(false)
        }
        Framing::Chunked => {
            let mut body = Chunked::new(MAX_LINE);
            loop {
                let got = reader.fill_buf().map_err(upstream_err)?;
                if got.is_empty() {
                    return Err(broke());
                }
                let mut sent = Ok(());
                let used = body
                    .feed(got, &mut |data| {
                        if sent.is_ok() {
                            sent = client.chunk(data, client_1_0);
                        }
                    })
                    .map_err(|_| broke())?;
                reader.consume(used);
                sent.map_err(|_| Failure::ClientGone)?;
                if body.is_done() {
                    client
                        .end_chunks(client_1_0)
                        .map_err(|_| Failure::ClientGone)?;
                    // What follows stays in the buffer: then the connection is not reused.
                    return Ok(true);
                }
            }
        }
    }
}

/// The client's side of a forwarded response: writes that wait out a full send buffer
/// (each write to a client gives up after the listening socket's 10 ms send timeout), for
/// as long as the client keeps taking bytes within the upstream timeout.
struct ClientWriter {
    inner: Box<dyn Write + Send>,
    timeout: Duration,
}

impl ClientWriter {
    fn new(inner: Box<dyn Write + Send>, timeout: Duration) -> ClientWriter {
        ClientWriter { inner, timeout }
    }

    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let mut progress = Instant::now();
        while !bytes.is_empty() {
            match self.inner.write(bytes) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    progress = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if progress.elapsed() > self.timeout {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let progress = Instant::now();
        loop {
            match self.inner.flush() {
                Ok(()) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if progress.elapsed() > self.timeout {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A piece of a body of unknown length: a chunk, or (to HTTP/1.0) the bytes as they are.
    fn chunk(&mut self, bytes: &[u8], raw: bool) -> io::Result<()> {
        if raw {
            return self.write(bytes);
        }
        let mut size = [0u8; 20];
        let size = {
            let mut cursor = io::Cursor::new(&mut size[..]);
            let _ = write!(cursor, "{:x}\r\n", bytes.len());
            let n = cursor.position() as usize;
            &size[..n]
        };
        self.write(size)?;
        self.write(bytes)?;
        self.write(b"\r\n")
    }

    fn end_chunks(&mut self, raw: bool) -> io::Result<()> {
        if raw {
            Ok(())
        } else {
            self.write(b"0\r\n\r\n")
        }
    }
}
