//! The loop: one thread, one `epoll` (mio), a [`Token`] per connection. Each turn it reads
//! the clock once, accepts, reads every ready connection until `WouldBlock` (or until its
//! answers back up), decides the heads it completes with the guard, writes their events
//! in one `write(2)` (the group commit), then queues each answer (or, in proxy mode,
//! starts its exchange with the upstream, whose sockets are in the same poll) and flushes
//! each connection once. No thread per connection, none per request. The `--metrics`
//! listener, when there is one, is a second listener of the same loop.
//!
//! Here: the turn itself, the loop's state, closing and draining. Taking connections is
//! in [`super::accept`]; a connection's read, answer, flush and timer in [`super::slot`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::Limits;
use super::accept::{Metrics, PerAddress};
use super::proxy::{Proxy, Uploads};
use super::route::Queued;
use super::slot::Slot;
use super::timers::{Kind, Timers};
use super::upstream::Pool;
use crate::event::Event;
use crate::logger::{self, Batch};
use crate::{Error, Guard};

pub(super) const LISTENER: Token = Token(usize::MAX - 1);
pub(super) const WAKER: Token = Token(usize::MAX - 2);
pub(super) const METRICS: Token = Token(usize::MAX - 3);

/// One read's worth: a whole pipelined burst of small requests, or a head at the limit.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Past this many unsent bytes, a connection is not read (backpressure): a client that
/// pipelines without reading costs this much, not memory without end.
pub(super) const HIGH_WATER: usize = 64 * 1024;
/// The most requests taken from one connection in one turn: the others get their turn.
pub(super) const MAX_REQUESTS_PER_TURN: usize = 32;
/// The most bytes read from one connection in one turn (input thrown away included).
pub(super) const MAX_READ_PER_TURN: usize = 4 * READ_CHUNK;
/// The most connections accepted in one turn, so that reads go on during a flood of them.
pub(super) const ACCEPT_BATCH: usize = 128;
/// How long accepting pauses when the process is out of descriptors (or memory).
pub(super) const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long after its closing answer a connection's input is still read and thrown away,
/// so that the kernel does not reset the connection under an answer not yet read (nginx
/// `lingering_timeout`).
pub(super) const LINGER: Duration = Duration::from_secs(2);
/// An output buffer this small is kept between requests; a larger one is returned.
pub(super) const KEPT_OUTPUT: usize = 512;
/// How often the loop calls its heartbeat.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);
/// A drain closes a connection once it has been idle this long.
pub(super) const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// The longest a drain waits for the connections it holds.
pub(super) const GRACE: Duration = Duration::from_secs(10);
/// At most one event a second for connections refused at accept.
pub(super) const REFUSAL_EVENTS: Duration = Duration::from_secs(1);

/// The listening socket on its own poll, ready to serve.
pub(crate) struct Front {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    /// `--metrics`: the second listener, served by the same loop.
    metrics: Option<crate::metrics::Listener>,
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
            metrics: None,
        })
    }

    /// Serves `GET /metrics` on `metrics` too, in the same loop.
    pub(crate) fn serve_metrics(&mut self, metrics: crate::metrics::Listener) {
        self.metrics = Some(metrics);
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

/// Serves on `front` until stopped or drained; returns how many requests were answered.
pub(crate) fn serve(front: Front, cx: Context<'_>) -> (u64, Result<(), Error>) {
    let limits = cx.limits;
    let now = Instant::now();
    let metrics = front
        .metrics
        .and_then(|m| Metrics::register(&front.poll, m));
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
        metrics,
        uploads: Uploads::new(),
        cx,
        slots: Vec::new(),
        free: Vec::new(),
        live: 0,
        per_address: PerAddress::default(),
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
    pub(super) listener: Option<TcpListener>,
    pub(super) metrics: Option<Metrics>,
    pub(super) cx: Context<'a>,
    pub(super) slots: Vec<Option<Slot>>,
    /// Proxy mode: the upstream connections.
    pub(super) pool: Option<Pool>,
    /// Proxy mode: request bodies on their way, by client.
    pub(super) uploads: Uploads,
    pub(super) free: Vec<usize>,
    pub(super) live: usize,
    /// Connections by address, for the per-address cap.
    pub(super) per_address: PerAddress,
    pub(super) timers: Timers,
    pub(super) queued: Vec<Queued>,
    pub(super) touched: Vec<usize>,
    /// Connections with input to go on with next turn.
    pub(super) again: Vec<usize>,
    pub(super) scratch: Box<[u8]>,
    pub(super) body: Vec<u8>,
    pub(super) answered: u64,
    /// The listener may have connections waiting.
    pub(super) accept_more: bool,
    pub(super) accept_paused: Option<Instant>,
    /// Connections refused at accept since the last event, and why (code, text).
    pub(super) refused: u64,
    pub(super) refused_reason: (&'static str, &'static str),
    pub(super) refusal_logged: Option<Instant>,
    pub(super) draining: Option<Instant>,
    /// Why accepting failed for good, if it did.
    pub(super) accept_failed: Option<io::Error>,
    /// The clock, read once a turn.
    pub(super) now: Instant,
}

impl Loop<'_> {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        let turns = crate::time::Turns::new();
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
            self.now = turns.start();
            let batch = Batch::open();
            self.touched.clear();
            self.touched.append(&mut self.again);
            self.expire();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_more = true,
                    METRICS => {
                        if let Some(m) = self.metrics.as_mut() {
                            m.more = true;
                        }
                    }
                    WAKER => {}
                    token if Pool::index(token).is_some() => {
                        let i = Pool::index(token).expect("matched");
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable() || event.is_error();
                        let hup = event.is_read_closed() || event.is_error();
                        let registry = self.poll.registry();
                        if let Some(pool) = self.pool.as_mut()
                            && let Some(t) = pool.event(registry, i, (readable, writable, hup))
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
        let waiting = (self.accept_more && self.listener.is_some())
            || self.metrics.as_ref().is_some_and(|m| m.more);
        let accept_now = waiting && self.accept_paused.is_none_or(|until| until <= now);
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

    pub(super) fn close(&mut self, t: usize) {
        self.end_exchange(t);
        let Some(slot) = self.slots.get_mut(t).and_then(Option::take) else {
            return;
        };
        // Not deregistered: closing its only descriptor (when `slot` drops below) takes it
        // out of the poll too, and `Connection: close` saves an `epoll_ctl` a request.
        if slot.capped {
            self.per_address.remove(slot.peer.ip());
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
        // The next process scrapes from now on: its listener shares the port.
        if let Some(mut metrics) = self.metrics.take() {
            let _ = self.poll.registry().deregister(&mut metrics.listener);
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
