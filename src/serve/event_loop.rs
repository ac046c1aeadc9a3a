//! The loop: one thread, one `epoll` (mio), a [`Token`] per connection. Each turn it reads
//! the clock once, accepts, reads every ready connection until `WouldBlock` (or until its
//! answers back up), decides the heads it completes with the guard, writes their events
//! in one `write(2)` (the group commit), then queues each answer (or, in proxy mode,
//! starts its exchange with the upstream, whose sockets are in the same poll) and flushes
//! each connection once. No thread per connection, none per request.

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::Limits;
use super::answer::{self, Framing};
use super::conn::{Conn, Item, Phase};
use super::exchange::Exchange;
use super::proxy::{Proxy, Uploads};
use super::route::{Queued, Route, What, route};
use super::timers::{Armed, Check, Kind, Timers};
use super::upstream::Pool;
use crate::event::{Event, RequestId};
use crate::guard::Decision;
use crate::logger::{self, Batch};
use crate::reply::Reply;
use crate::{Error, Guard};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// One read's worth: a whole pipelined burst of small requests, or a head at the limit.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Past this many unsent bytes, a connection is not read (backpressure): a client that
/// pipelines without reading costs this much, not memory without end.
pub(super) const HIGH_WATER: usize = 64 * 1024;
/// The most requests taken from one connection in one turn: the others get their turn.
const MAX_REQUESTS_PER_TURN: usize = 32;
/// The most bytes read from one connection in one turn (input thrown away included).
pub(super) const MAX_READ_PER_TURN: usize = 4 * READ_CHUNK;
/// The most connections accepted in one turn, so that reads go on during a flood of them.
const ACCEPT_BATCH: usize = 128;
/// How long accepting pauses when the process is out of descriptors (or memory).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long after its closing answer a connection's input is still read and thrown away,
/// so that the kernel does not reset the connection under an answer not yet read (nginx
/// `lingering_timeout`).
const LINGER: Duration = Duration::from_secs(2);
/// An output buffer this small is kept between requests; a larger one is returned.
const KEPT_OUTPUT: usize = 512;
/// How often the loop calls its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A drain closes a connection once it has been idle this long.
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// The longest a drain waits for the connections it holds.
const GRACE: Duration = Duration::from_secs(10);
/// At most one event a second for connections refused at accept.
const REFUSAL_EVENTS: Duration = Duration::from_secs(1);

/// The listening socket on its own poll, ready to serve.
pub(crate) struct Front {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
}

impl Front {
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<Front> {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Front {
            poll,
            listener,
            waker,
        })
    }

    /// Wakes the loop from another thread (to see a stop or a drain).
    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// What the loop serves with.
pub(crate) struct Context<'a> {
    pub guard: &'a Guard,
    /// The forward-auth endpoint's path, if any.
    pub forward_auth: Option<&'a str>,
    pub limits: &'a Limits,
    /// Proxy mode: the upstream.
    pub proxy: Option<&'a Proxy>,
    /// Stop now (answers in hand are flushed once).
    pub stop: &'a AtomicBool,
    /// Hand over: stop accepting, finish, close idle connections, return.
    pub drain: &'a AtomicBool,
    pub heartbeat: Option<&'a mut Box<dyn FnMut() + Send>>,
}

/// A connection: its socket and protocol state, its unsent answers and its timer.
pub(super) struct Slot {
    pub(super) stream: TcpStream,
    peer: SocketAddr,
    pub(super) conn: Conn,
    pub(super) out: Vec<u8>,
    /// The id of the last answer among the unsent bytes.
    pub(super) unsent_id: Option<RequestId>,
    /// It may have input not read yet (edge-triggered: until a read says `WouldBlock`).
    pub(super) readable: bool,
    /// An event reported its peer's end (or an error): its reads go on until `Ok(0)`.
    hup: bool,
    /// Its peer ended its input (or the connection failed).
    pub(super) eof: bool,
    /// The connection failed: close it.
    pub(super) dead: bool,
    /// Its closing answer is out and its write side shut.
    lingering: bool,
    /// Complete heads held for a later turn.
    pub(super) more: bool,
    timer: Armed,
    /// Counted against its address's cap.
    capped: bool,
    pub(super) progress: bool,
    /// Proxy mode: the request being forwarded (one at a time).
    pub(super) exchange: Option<Box<Exchange>>,
}

/// Serves on `front` until stopped or drained; returns how many requests were answered.
pub(crate) fn serve(front: Front, cx: Context<'_>) -> (u64, Result<(), Error>) {
    let limits = cx.limits;
    let now = Instant::now();
    let mut lp = Loop {
        poll: front.poll,
        listener: Some(front.listener),
        timers: Timers::new([
            limits.header_timeout,
            limits.header_timeout,
            limits.idle_timeout,
            limits.body_timeout,
            limits.send_timeout,
            LINGER,
            // Serve mode has no exchange: any length does.
            cx.proxy.map_or(limits.idle_timeout, |p| p.timeout),
        ]),
        pool: cx.proxy.map(|p| Pool::new(p.addrs.clone())),
        uploads: Uploads::new(),
        cx,
        slots: Vec::new(),
        free: Vec::new(),
        live: 0,
        per_address: HashMap::new(),
        queued: Vec::new(),
        touched: Vec::new(),
        again: Vec::new(),
        scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        body: Vec::new(),
        answered: 0,
        accept_more: true,
        accept_paused: None,
        refused: 0,
        refused_reason: ("", ""),
        refusal_logged: None,
        draining: None,
        accept_failed: None,
        now,
    };
    let result = lp.run();
    (lp.answered, result)
}

pub(super) struct Loop<'a> {
    pub(super) poll: Poll,
    listener: Option<TcpListener>,
    cx: Context<'a>,
    pub(super) slots: Vec<Option<Slot>>,
    /// Proxy mode: the upstream connections.
    pub(super) pool: Option<Pool>,
    /// Proxy mode: request bodies on their way, by client.
    pub(super) uploads: Uploads,
    free: Vec<usize>,
    live: usize,
    /// Connections by address, for the per-address cap.
    per_address: HashMap<IpAddr, usize>,
    timers: Timers,
    queued: Vec<Queued>,
    touched: Vec<usize>,
    /// Connections with input to go on with next turn.
    pub(super) again: Vec<usize>,
    pub(super) scratch: Box<[u8]>,
    pub(super) body: Vec<u8>,
    pub(super) answered: u64,
    /// The listener may have connections waiting.
    accept_more: bool,
    accept_paused: Option<Instant>,
    /// Connections refused at accept since the last event, and why (code, text).
    refused: u64,
    refused_reason: (&'static str, &'static str),
    refusal_logged: Option<Instant>,
    pub(super) draining: Option<Instant>,
    /// Why accepting failed for good, if it did.
    accept_failed: Option<io::Error>,
    /// The clock, read once a turn.
    pub(super) now: Instant,
}

impl Loop<'_> {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        let mut beaten = self.now;
        if let Some(beat) = self.cx.heartbeat.as_mut() {
            beat();
        }
        loop {
            if self.cx.stop.load(Ordering::SeqCst) {
                self.flush_all();
                return Ok(());
            }
            if self.draining.is_none() && self.cx.drain.load(Ordering::SeqCst) {
                self.start_drain();
            }
            if let Some(started) = self.draining
                && (self.live == 0 || self.now.duration_since(started) >= GRACE)
            {
                return Ok(());
            }
            let timeout = self.timeout();
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Accept(err));
            }
            self.now = Instant::now();
            let batch = Batch::open();
            self.touched.clear();
            self.touched.append(&mut self.again);
            self.expire();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_more = true,
                    WAKER => {}
                    token if Pool::index(token).is_some() => {
                        let i = Pool::index(token).expect("matched");
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable() || event.is_error();
                        let registry = self.poll.registry();
                        if let Some(pool) = self.pool.as_mut()
                            && let Some(t) = pool.event(registry, i, readable, writable)
                        {
                            self.touched.push(t);
                        }
                    }
                    Token(t) => {
                        if let Some(Some(slot)) = self.slots.get_mut(t) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                slot.readable = true;
                            }
                            slot.hup |= event.is_read_closed() || event.is_error();
                            self.touched.push(t);
                        }
                    }
                }
            }
            self.accept();
            self.touched.sort_unstable();
            self.touched.dedup();
            for i in 0..self.touched.len() {
                let t = self.touched[i];
                self.pump(t);
            }
            let written = batch.commit();
            self.answer(written);
            for i in 0..self.touched.len() {
                let t = self.touched[i];
                self.drive(t);
                self.flush(t);
                self.settle(t);
            }
            self.housekeeping();
            crate::metrics::connections(self.live, self.cx.limits.max_connections);
            if let Some(err) = self.accept_failed.take() {
                self.flush_all();
                return Err(Error::Accept(err));
            }
            if self.now.duration_since(beaten) >= HEARTBEAT
                && let Some(beat) = self.cx.heartbeat.as_mut()
            {
                beat();
                beaten = self.now;
            }
        }
    }

    /// How long the next poll may wait.
    fn timeout(&self) -> Duration {
        let now = self.now;
        let accept_now = self.accept_more
            && self.listener.is_some()
            && self.accept_paused.is_none_or(|until| until <= now);
        if !self.again.is_empty() || accept_now {
            return Duration::ZERO;
        }
        let mut wait = HEARTBEAT;
        if self.draining.is_some() {
            wait = wait.min(Duration::from_millis(100));
        }
        if let Some(until) = self.accept_paused {
            wait = wait.min(until.saturating_duration_since(now));
        }
        if let Some(deadline) = self.timers.next_deadline() {
            // A millisecond late rather than a turn early.
            wait = wait.min(deadline.saturating_duration_since(now) + Duration::from_millis(1));
        }
        wait
    }

    fn accept(&mut self) {
        if !self.accept_more || self.accept_paused.is_some_and(|until| until > self.now) {
            return;
        }
        self.accept_paused = None;
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more = false;
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors or memory: the connections wait in the queue.
                Err(err) if matches!(err.raw_os_error(), Some(12 | 23 | 24 | 105)) => {
                    log::error!("cannot accept a connection: {err}; pausing for 100 ms");
                    self.accept_paused = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
                // A connection that went away, or was refused, before it was accepted.
                Err(err) if matches!(err.raw_os_error(), Some(1 | 71 | 103 | 110)) => {}
                // The listening socket itself failed: stop, as tiny_http's accept thread
                // did, after this turn's answers (a supervisor starts a new worker).
                Err(err) => {
                    self.accept_failed = Some(err);
                    return;
                }
            }
        }
    }

    /// Takes a new connection, or refuses it over a cap (closing an idle connection to make
    /// room first, as nginx reuses its keep-alive connections).
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let ip = peer.ip().to_canonical();
        let limits = self.cx.limits;
        // Behind a trusted proxy the peer is the proxy: its clients are many, and the cap
        // on each of them is the proxy's to keep.
        let capped = limits.max_connections_per_address > 0 && !self.cx.guard.trusts(Some(ip));
        if capped
            && self.per_address.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_address
            && !self.evict(Some(ip))
        {
            crate::metrics::refused_at_accept(crate::metrics::Limit::MaxConnectionsPerAddress);
            return self.refuse(
                "too_many_from_address",
                "connections closed at once: their address holds --max-connections-per-address",
            );
        }
        if self.live >= limits.max_connections && !self.evict(None) {
            crate::metrics::refused_at_accept(crate::metrics::Limit::MaxConnections);
            return self.refuse(
                "too_many_connections",
                "connections closed at once: the server holds --max-connections",
            );
        }
        let t = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(t), interest)
            .is_err()
        {
            self.free.push(t);
            return;
        }
        let timer = self.timers.arm(Kind::Fresh, t, self.now, self.live);
        if capped {
            *self.per_address.entry(ip).or_default() += 1;
        }
        self.slots[t] = Some(Slot {
            stream,
            peer,
            conn: match self.cx.proxy {
                Some(_) => Conn::passing_bodies(),
                None => Conn::new(),
            },
            out: Vec::new(),
            unsent_id: None,
            readable: false,
            hup: false,
            eof: false,
            dead: false,
            lingering: false,
            more: false,
            timer,
            capped,
            progress: false,
            exchange: None,
        });
        self.live += 1;
    }

    fn refuse(&mut self, code: &'static str, text: &'static str) {
        self.refused += 1;
        self.refused_reason = (code, text);
    }

    /// Closes the connection idle the longest (from `ip` only, if given) to make room: one
    /// whose closing answer is out (lingering) first, then one that sent nothing yet or
    /// waits between requests.
    fn evict(&mut self, ip: Option<IpAddr>) -> bool {
        let mut oldest: Option<(Instant, usize)> = None;
        for kind in [Kind::Linger, Kind::Fresh, Kind::Idle] {
            let found = self.timers.oldest(kind).find(|&(t, seq)| {
                self.slots.get(t).and_then(Option::as_ref).is_some_and(|s| {
                    s.timer.seq == seq
                        && s.timer.kind == kind
                        && s.out.is_empty()
                        && (s.lingering || s.conn.is_idle())
                        && ip.is_none_or(|ip| s.peer.ip().to_canonical() == ip)
                })
            });
            if kind == Kind::Linger
                && let Some((t, _)) = found
            {
                self.close(t);
                return true;
            }
            if let Some((t, _)) = found {
                let since = self.slots[t].as_ref().map_or(self.now, |s| s.timer.since);
                if oldest.is_none_or(|(s, _)| since < s) {
                    oldest = Some((since, t));
                }
            }
        }
        match oldest {
            Some((_, t)) => {
                self.close(t);
                true
            }
            None => false,
        }
    }

    /// Reads what the connection sent and hands its complete heads to the guard.
    fn pump(&mut self, t: usize) {
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        if slot.exchange.is_some() {
            return self.pump_body(t);
        }
        let max_head = self.cx.limits.max_header_bytes;
        let draining = self.draining.is_some();
        let (guard, forward_auth, proxy) = (self.cx.guard, self.cx.forward_auth, self.cx.proxy);
        let queued = &mut self.queued;
        let peer = slot.peer;
        let mut on = |item: Item<'_>| {
            let cx = Route {
                t,
                peer,
                guard,
                forward_auth,
                proxy,
                draining,
            };
            route(item, &cx, queued)
        };
        // Proxy mode: one request at a time, its exchange over before the next is read.
        let mut budget = match proxy {
            Some(_) => 1,
            None => MAX_REQUESTS_PER_TURN,
        };
        let mut bytes = MAX_READ_PER_TURN;
        // Held heads wait while the answers back up, as unread input does.
        if slot.more && slot.out.len() < HIGH_WATER {
            let fed = slot.conn.feed(&[], max_head, budget, &mut on);
            budget -= fed.items.min(budget);
            slot.more = fed.more;
        }
        while slot.readable
            && !slot.eof
            && !slot.more
            && slot.out.len() < HIGH_WATER
            && budget > 0
            && bytes > 0
        {
            match slot.stream.read(&mut self.scratch) {
                Ok(0) => slot.eof = true,
                Ok(n) => {
                    slot.progress = true;
                    bytes = bytes.saturating_sub(n);
                    // A short read emptied the socket: the next bytes are a new edge, and
                    // so is the peer's end unless an event already said so (epoll(7)).
                    // Not reading on to `WouldBlock` saves a third of the system calls
                    // of a kept-alive request.
                    if n < self.scratch.len() && !slot.hup {
                        slot.readable = false;
                    }
                    if slot.lingering {
                        continue;
                    }
                    let fed = slot
                        .conn
                        .feed(&self.scratch[..n], max_head, budget, &mut on);
                    budget -= fed.items.min(budget);
                    slot.more = fed.more;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => slot.readable = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    slot.eof = true;
                    slot.dead = true;
                }
            }
        }
    }

    /// Writes each queued answer into its connection's output, its event now settled.
    fn answer(&mut self, written: usize) {
        let log_failing = logger::installed().is_none_or(|log| log.failing());
        let draining = self.draining.is_some();
        // One clock read a turn, and only with --metrics: from the turn's read to now.
        let took = crate::metrics::on().then(|| self.now.elapsed());
        for q in std::mem::take(&mut self.queued) {
            let names;
            // The shutdown event counts the users' requests: not the supervisor's (or a
            // load balancer's) health checks.
            let counted = !matches!(q.what, What::Health);
            let (token, mut framing) = (q.token, q.framing);
            let auth = matches!(q.what, What::Auth(_));
            let (decision, forward) = match q.what {
                What::Health => (None, None),
                What::Status(status) => {
                    self.answer_with(token, &Reply::Status(status, None), framing, counted, took);
                    continue;
                }
                What::Guarded(pending) | What::Auth(pending) => {
                    (Some(pending.settle(written)), None)
                }
                What::Forward(pending, fwd) => (Some(pending.settle(written)), Some(fwd)),
            };
            if let Some(mut fwd) = forward {
                let id = match &decision {
                    Some(Decision::Allowed(allowed)) => Some(allowed.request_id()),
                    Some(Decision::Public) => Some(self.cx.guard.new_request_id()),
                    _ => None,
                };
                if let Some(id) = id {
                    // Every forwarded answer has an id, a public path's too (its 502 is
                    // the app's trouble, and its event says which request).
                    let mut head = std::mem::take(&mut fwd.head);
                    let identity = match &decision {
                        Some(Decision::Allowed(allowed)) => Some(allowed),
                        _ => None,
                    };
                    let identity = identity.into_iter().flat_map(|a| a.headers());
                    super::request_head::end(&mut head, identity, Some(id), fwd.body);
                    self.start_exchange(token, fwd, Some(id), head);
                    continue;
                }
            }
            let reply = match &decision {
                None => Reply::Health {
                    log_failing,
                    draining,
                    no_keys: !self.cx.guard.keys_loaded(),
                },
                Some(Decision::Public) if auth => {
                    names = self.cx.guard.identity_names();
                    Reply::Open(names)
                }
                Some(Decision::Public) => Reply::NotFound,
                Some(Decision::Allowed(allowed)) => Reply::Allowed(allowed),
                Some(Decision::Refused(refused)) => Reply::Refused(refused),
            };
            if let Some(Some(slot)) = self.slots.get_mut(token)
                && slot.conn.phase() == Phase::Passed
            {
                // Proxy mode: a body not forwarded stays unread, and nothing after it is a
                // request.
                slot.conn.close();
                framing.close = true;
            }
            self.answer_with(token, &reply, framing, counted, took);
        }
    }

    /// Writes `reply` into connection `token`'s output.
    fn answer_with(
        &mut self,
        token: usize,
        reply: &Reply<'_>,
        framing: Framing,
        counted: bool,
        took: Option<Duration>,
    ) {
        self.answered += u64::from(counted);
        crate::metrics::answer(reply.status());
        if let Some(took) = took {
            crate::metrics::request_took(took);
        }
        let Some(Some(slot)) = self.slots.get_mut(token) else {
            return;
        };
        if slot.out.capacity() == 0 {
            slot.out.reserve(KEPT_OUTPUT);
        }
        answer::push(reply, framing, &mut slot.out, &mut self.body);
        slot.unsent_id = match reply {
            Reply::Allowed(a) => Some(a.request_id()),
            Reply::Refused(r) => Some(r.request_id()),
            _ => slot.unsent_id,
        };
    }

    /// Sends what the connection has to send, until it is sent or the socket is full.
    fn flush(&mut self, t: usize) {
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        let mut sent = 0;
        while sent < slot.out.len() {
            match slot.stream.write(&slot.out[sent..]) {
                Ok(0) => {
                    slot.dead = true;
                    break;
                }
                Ok(n) => {
                    sent += n;
                    slot.progress = true;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    slot.dead = true;
                    break;
                }
            }
        }
        slot.out.drain(..sent);
        if slot.out.is_empty() {
            slot.unsent_id = None;
            if slot.out.capacity() > KEPT_OUTPUT {
                slot.out = Vec::new();
            }
        }
    }

    /// After a turn's reads and writes: closes the connection when it is done, or sets its
    /// timer for what it waits for.
    fn settle(&mut self, t: usize) {
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        if slot.conn.phase() == Phase::Closing
            && slot.out.is_empty()
            && !slot.lingering
            && slot.exchange.is_none()
        {
            // The closing answer is out: say so with a FIN, and read until the client's
            // end, so that its unread input does not make the kernel reset the connection
            // under the answer.
            let _ = slot.stream.shutdown(std::net::Shutdown::Write);
            slot.lingering = true;
            slot.readable = true;
        }
        // With the client's input ended, what it asked for before is still answered (an
        // exchange under way, pipelined heads held).
        let done = slot.eof && slot.out.is_empty() && slot.exchange.is_none() && !slot.more;
        if slot.dead || done {
            return self.close(t);
        }
        let kind = if slot.lingering {
            Kind::Linger
        } else if slot.exchange.is_some() {
            match slot.out.len() >= HIGH_WATER {
                true => Kind::Send,
                false => Kind::Upstream,
            }
        } else if !slot.out.is_empty() {
            Kind::Send
        } else {
            match slot.conn.phase() {
                Phase::Discard(_) => Kind::Body,
                Phase::Closing | Phase::Passed => Kind::Send,
                Phase::Head if slot.conn.held() > 0 => Kind::Head,
                Phase::Head if slot.conn.requests() == 0 => Kind::Fresh,
                Phase::Head => Kind::Idle,
            }
        };
        if kind != slot.timer.kind {
            // A head's time counts from the connection's start for its first request.
            let since = match (slot.timer.kind, kind) {
                (Kind::Fresh, Kind::Head) => slot.timer.since,
                _ => self.now,
            };
            slot.timer = self.timers.arm(kind, t, since, self.live);
        } else if slot.progress
            && matches!(kind, Kind::Idle | Kind::Body | Kind::Send | Kind::Upstream)
        {
            // Progress restarts the waits between reads or writes; a head's time and a
            // lingering close's are for the whole of it.
            slot.timer.since = self.now;
        }
        slot.progress = false;
        let backed_up = slot.out.len() >= HIGH_WATER;
        let again = match slot.exchange.as_deref() {
            // An exchange goes on next turn when a side it may read (or write) is ready.
            Some(ex) => {
                let body = slot.readable && !slot.eof && ex.wants_body();
                let up = ex
                    .upstream()
                    .and_then(|i| self.pool.as_mut()?.get(i))
                    .is_some_and(|up| {
                        (up.readable && !backed_up) || (up.writable && ex.has_to_send())
                    });
                body || up
            }
            // Input left for the next turn: heads held back, or a socket not read to its end.
            None => !backed_up && (slot.more || (slot.readable && !slot.eof)),
        };
        if again {
            self.again.push(t);
        }
    }

    /// Deals with the connections whose wait is over.
    fn expire(&mut self) {
        let now = self.now;
        let slots = &self.slots;
        let lengths = self.timers.lengths();
        let mut over = Vec::new();
        self.timers.expired(now, &mut |kind, t, seq| {
            let Some(Some(slot)) = slots.get(t) else {
                return Check::Stale;
            };
            if slot.timer.seq != seq || slot.timer.kind != kind {
                return Check::Stale;
            }
            let end = slot.timer.since + lengths[kind.index()];
            if end > now {
                return Check::Later(end);
            }
            over.push((kind, t));
            Check::Over
        });
        for (kind, t) in over {
            match kind {
                Kind::Head => self.head_timed_out(t),
                Kind::Send => {
                    if let Some(Some(slot)) = self.slots.get(t) {
                        logger::record(&Event::Undelivered {
                            request_id: slot.unsent_id,
                            source_ip: Some(slot.peer.ip().to_canonical()),
                        });
                    }
                    self.close(t);
                }
                Kind::Upstream => {
                    self.exchange_timed_out(t);
                    self.touched.push(t);
                }
                Kind::Fresh | Kind::Idle | Kind::Body | Kind::Linger => self.close(t),
            }
        }
        if self.timers.compact_wanted() {
            let slots = &self.slots;
            self.timers.compact(&|kind, t, seq| {
                slots
                    .get(t)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.timer.seq == seq && s.timer.kind == kind)
            });
        }
    }

    /// A head not complete within `--header-timeout`: 408, an event, and the connection
    /// ends.
    fn head_timed_out(&mut self, t: usize) {
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        crate::metrics::header_timeout();
        logger::record(&Event::Connection {
            reason: "header_timeout",
            text: "the request head did not arrive within --header-timeout: 408, connection closed",
            status: Some(408),
            source_ip: Some(slot.peer.ip().to_canonical()),
            count: 1,
        });
        slot.conn.close();
        // Not to be seen again as waiting for a head: `settle` arms its next wait.
        slot.timer.seq = slot.timer.seq.wrapping_sub(1);
        self.queued.push(Queued {
            token: t,
            what: What::Status(408),
            framing: Framing {
                minor: 1,
                head_only: false,
                close: true,
            },
        });
        self.touched.push(t);
    }

    fn close(&mut self, t: usize) {
        self.end_exchange(t);
        let Some(slot) = self.slots.get_mut(t).and_then(Option::take) else {
            return;
        };
        // Not deregistered: closing its only descriptor (when `slot` drops below) takes it
        // out of the poll too, and `Connection: close` saves an `epoll_ctl` a request.
        if slot.capped {
            let ip = slot.peer.ip().to_canonical();
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
        self.live -= 1;
        self.free.push(t);
    }

    /// Once a turn: the refusal event, and a drain's idle connections.
    fn housekeeping(&mut self) {
        if self.refused > 0
            && self
                .refusal_logged
                .is_none_or(|at| self.now.duration_since(at) >= REFUSAL_EVENTS)
        {
            let (reason, text) = self.refused_reason;
            logger::record(&Event::Connection {
                reason,
                text,
                status: None,
                source_ip: None,
                count: self.refused,
            });
            self.refused = 0;
            self.refusal_logged = Some(self.now);
        }
        if self.draining.is_some() {
            let idle: Vec<usize> = (0..self.slots.len())
                .filter(|&t| {
                    self.slots[t].as_ref().is_some_and(|s| {
                        matches!(s.timer.kind, Kind::Fresh | Kind::Idle)
                            && s.conn.is_idle()
                            && s.out.is_empty()
                            && self.now.duration_since(s.timer.since) >= DRAIN_IDLE
                    })
                })
                .collect();
            for t in idle {
                self.close(t);
            }
        }
    }

    /// Stops accepting: the listening socket is another process's now.
    fn start_drain(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(pool) = self.pool.as_mut() {
            pool.close_idle(self.poll.registry());
        }
        self.draining = Some(self.now);
    }

    /// One last try to send what is unsent.
    fn flush_all(&mut self) {
        for t in 0..self.slots.len() {
            self.flush(t);
        }
    }
}
