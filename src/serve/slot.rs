//! A connection's turn in the loop: its socket read and its heads handed to the guard
//! (`pump`), the turn's answers written into its output once their events are (`answer`),
//! its output sent without blocking (`flush`), then its timer set for what it waits for,
//! or the connection closed (`settle`); and what happens when a wait is over (`expire`).

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpStream;

use super::answer::{self, Framing};
use super::conn::{Conn, Item, Phase};
use super::event_loop::{HIGH_WATER, KEPT_OUTPUT, Loop, MAX_READ_PER_TURN, MAX_REQUESTS_PER_TURN};
use super::exchange::Exchange;
use super::route::{Queued, Route, What, route};
use super::timers::{Armed, Check, Kind};
use crate::event::{Event, RequestId};
use crate::guard::Decision;
use crate::logger;
use crate::reply::Reply;

/// A connection: its socket and protocol state, its unsent answers and its timer.
pub(super) struct Slot {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) conn: Conn,
    pub(super) out: Vec<u8>,
    /// The id of the last answer among the unsent bytes.
    pub(super) unsent_id: Option<RequestId>,
    /// It may have input not read yet (edge-triggered: until a read says `WouldBlock`).
    pub(super) readable: bool,
    /// An event reported its peer's end (or an error): its reads go on until `Ok(0)`.
    pub(super) hup: bool,
    /// Its peer ended its input (or the connection failed).
    pub(super) eof: bool,
    /// The connection failed: close it.
    pub(super) dead: bool,
    /// Its closing answer is out and its write side shut.
    pub(super) lingering: bool,
    /// Complete heads held for a later turn.
    pub(super) more: bool,
    pub(super) timer: Armed,
    /// Counted against its address's cap.
    pub(super) capped: bool,
    /// Came on the `--metrics` listener: answered `GET /metrics` only, and never counted
    /// as a request.
    pub(super) metrics: bool,
    pub(super) progress: bool,
    /// Requests its protocol had taken at the last `settle`.
    pub(super) requests: u64,
    /// Proxy mode: the request being forwarded (one at a time).
    pub(super) exchange: Option<Box<Exchange>>,
}

impl Loop<'_> {
    /// Reads what the connection sent and hands its complete heads to the guard.
    pub(super) fn pump(&mut self, t: usize) {
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
        let (peer, metrics) = (slot.peer, slot.metrics);
        let mut on = |item: Item<'_>| {
            if metrics && let Item::Request { head, .. } = &item {
                return queued.push(scrape(t, head));
            }
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
        // Proxy mode: one request at a time, its exchange over before the next is read; a
        // scrape is answered and its connection closed.
        let mut budget = match proxy.is_some() || metrics {
            true => 1,
            false => MAX_REQUESTS_PER_TURN,
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
    pub(super) fn answer(&mut self, written: usize) {
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
            if self
                .slots
                .get(token)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.metrics)
            {
                self.answer_scrape(token, &q.what, framing);
                continue;
            }
            let auth = matches!(q.what, What::Auth(_));
            let (decision, forward) = match q.what {
                What::Health => (None, None),
                What::Scrape(_) => continue,
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

    /// Answers on a `--metrics` connection: the exposition or an empty error, and the
    /// connection ends. Not a request: not counted, nor timed.
    fn answer_scrape(&mut self, token: usize, what: &What, framing: Framing) {
        let status = match what {
            What::Scrape(status) | What::Status(status) => *status,
            _ => 404,
        };
        let cache = self.metrics.as_ref().and_then(|m| (m.cache)());
        let Some(Some(slot)) = self.slots.get_mut(token) else {
            return;
        };
        crate::metrics::push_answer(status, framing.minor, cache, &mut slot.out);
        slot.conn.close();
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
    pub(super) fn flush(&mut self, t: usize) {
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
    pub(super) fn settle(&mut self, t: usize) {
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        if slot.conn.phase() == Phase::Closing
            && slot.out.is_empty()
            && !slot.lingering
            && slot.exchange.is_none()
        {
            // The client asked for the end, sent nothing after its request and nothing is
            // left in the socket: close at once (no lingering, as nginx's
            // `lingering_close auto`), two system calls and a turn fewer a connection.
            if slot.conn.ends_quietly() && !slot.readable && !slot.hup {
                return self.close(t);
            }
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
        } else if (slot.progress && kind == Kind::Send)
            || (kind == Kind::Idle && slot.conn.requests() != slot.requests)
        {
            // Progress restarts the wait between writes, and a request the wait for the
            // next one (empty lines between requests are not one: RFC 9112 §2.2 lets them
            // be skipped, not keep a connection open). A head's time, a discarded body's
            // and a lingering close's are for the whole of it (a body dripped a byte at a
            // time must not hold its connection for good).
            slot.timer.since = self.now;
        } else if slot.progress && kind == Kind::Upstream {
            slot.timer.since = slot.timer.since.max(match slot.exchange.as_deref() {
                Some(ex) => super::proxy::upload_progress(ex, self.now),
                None => self.now,
            });
        }
        slot.progress = false;
        slot.requests = slot.conn.requests();
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
    pub(super) fn expire(&mut self) {
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
    pub(super) fn head_timed_out(&mut self, t: usize) {
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
}

/// A request on a `--metrics` connection: what it gets, never the guard's.
fn scrape(t: usize, head: &super::head::Head<'_>) -> Queued {
    let path = super::head::origin_form(head.target);
    Queued {
        token: t,
        what: What::Scrape(crate::metrics::status_for(head.method, path)),
        framing: Framing {
            minor: head.version.1,
            head_only: false,
            close: true,
        },
    }
}
