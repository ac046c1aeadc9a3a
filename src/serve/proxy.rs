//! Proxy mode (`--upstream`) inside the loop: an allowed (or public) request becomes an
//! exchange with an upstream connection of the [`Pool`](super::upstream::Pool), one at a
//! time per client connection (pipelined requests wait, and are answered in order).
//!
//! The request head goes up as [`request_head`](super::request_head) writes it, the body
//! after it, re-framed (a `Content-Length` body as it is, a chunked one chunk by chunk);
//! the answer comes back as [`response`](super::response) reads it, its body re-framed to
//! its exact end. Each side is read only while the other's unsent bytes are under the
//! high-water mark, so a slow client or a slow app holds its own buffers, and no more.
//! `100 Continue` goes to the client once the request is allowed, never before.

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::answer::{self, Framing as Reply_};
use super::conn::Phase;
use super::event_loop::{HIGH_WATER, Loop, MAX_READ_PER_TURN, READ_CHUNK};
use super::exchange::{Answer, Exchange, Failure, Forward};
use super::head::{self, Head};
use super::request_head::{self, Body};
use crate::event::{Event, RequestId};
use crate::forwarded::Trusted;
use crate::reply::Reply;
use crate::{Config, Error, logger};

/// The most request bodies read at once from one client (the one a trusted proxy names,
/// else the peer's address): each holds an upstream connection while it comes.
const MAX_UPLOADS_PER_CLIENT: usize = 16;
/// A body at most this long, whole in hand with its head, is never counted as an upload:
/// it cannot stall.
const SMALL_BODY: u64 = 1024;
/// The slowest a client's body may come, on average from when its request went up
/// (Apache's `mod_reqtimeout` `MinRate`): a body that trickles slower is cut as stalled
/// (408), one `--upstream-timeout` after its average fell behind.
pub(super) const MIN_UPLOAD_RATE: u64 = 1024;

/// Proxy mode's settings, resolved once.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub(super) addrs: Vec<SocketAddr>,
    /// `--upstream-timeout`: connect, and between reads of either side of an exchange.
    pub(super) timeout: Duration,
    strip_authorization: bool,
    /// Identity header names: a client's copies never reach the upstream.
    identity: Vec<String>,
    trusted: Trusted,
    /// `--allow-body-on-any-method`.
    any_body: bool,
}

impl Proxy {
    /// The proxy for `config.upstream` (its address resolved now), if there is one.
    pub(crate) fn new(config: &Config) -> Result<Option<Proxy>, Error> {
        let Some(upstream) = &config.upstream else {
            return Ok(None);
        };
        let bad = |problem| Error::Config {
            setting: "--upstream",
            problem,
        };
        let addr = crate::config::upstream_address(upstream).map_err(bad)?;
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| bad(format!("{upstream:?}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(bad(format!("{upstream:?}: no address")));
        }
        let mut identity = vec![crate::config::USER_HEADER.to_owned()];
        identity.extend(config.claim_headers.iter().map(|(_, h)| h.clone()));
        Ok(Some(Proxy {
            addrs,
            timeout: Duration::from_secs(config.upstream_timeout),
            strip_authorization: config.strip_authorization,
            identity,
            trusted: Trusted::new(&config.trusted_proxies).reading(config.client_ip_header),
            any_body: config.allow_body_on_any_method,
        }))
    }

    /// Whether a request is refused for its body (`body_not_allowed`): a body on `GET`,
    /// `HEAD`, `OPTIONS` or `DELETE` has no meaning (RFC 9110 §9.3), so an app may leave it
    /// unread and take it for the next request on that upstream connection, one the guard
    /// never saw (issue 17's desync). Unless `--allow-body-on-any-method`.
    pub(super) fn refuses_body(&self, method: &str, body: head::Body) -> bool {
        !self.any_body
            && matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE")
            && matches!(body, head::Body::Chunked | head::Body::Length(1..))
    }

    /// What an exchange needs of a request, while its head's bytes are at hand; `target`
    /// is the normalised path and the query.
    pub(super) fn forward(
        &self,
        head: &Head<'_>,
        fields: &head::Fields<'_>,
        peer: IpAddr,
        target: &str,
        close: bool,
    ) -> Box<Forward> {
        use crate::Headers as _;
        let framing = head.framing.ok();
        let client_body = framing.map_or(head::Body::None, |f| f.body);
        let body = match client_body {
            head::Body::Chunked => Body::Chunked,
            head::Body::Length(n) if n > 0 || head.method != "GET" => Body::Length(n),
            _ => Body::None,
        };
        let trusted = self.trusted.contains(peer);
        let parts = request_head::Parts {
            method: head.method,
            target,
            headers: fields,
            peer: Some(peer),
            trusted,
        };
        let mut bytes = Vec::with_capacity(512);
        request_head::start(&mut bytes, &parts, self.strip_authorization, &self.identity);
        Box::new(Forward {
            method: head.method.into(),
            path: crate::guard::path_of(target).into(),
            head: bytes,
            body,
            client_body,
            minor: head.version.1,
            head_only: head.method == "HEAD",
            close,
            expect_continue: framing.is_some_and(|f| f.expect == head::Expect::Continue),
            peer,
            client: self.trusted.client(Some(peer), fields),
            user_agent: fields.values("User-Agent").next().map(Into::into),
        })
    }
}

/// What one step of an exchange came to.
enum Step {
    /// Waiting for a socket.
    Wait,
    /// The answer ended; the upstream connection may be reused.
    Done(bool),
    Failed(Failure),
    /// A kept connection closed under the request before any answer: once more, fresh.
    Retry,
    /// The connect failed: the next address, if any.
    NextAddress,
}

/// Uploads under way, by client.
pub(crate) type Uploads = HashMap<IpAddr, usize>;

impl Loop<'_> {
    /// Starts the exchange of connection `t`'s request, allowed (or public), with its
    /// upstream `head` whole.
    pub(super) fn start_exchange(
        &mut self,
        t: usize,
        fwd: Box<Forward>,
        id: Option<RequestId>,
        head: Vec<u8>,
    ) {
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        self.answered += 1;
        let held = match slot.conn.phase() {
            Phase::Passed => slot.conn.take_held(),
            _ => Vec::new(),
        };
        let mut ex = Exchange::new(fwd, id, head);
        let taken = ex.take_body(&held);
        let in_hand = ex.body_done() && ex.body_bytes <= SMALL_BODY;
        let failed = match taken {
            Ok(used) => {
                if ex.body_done() {
                    slot.conn.resume(&held[used..]);
                }
                None
            }
            Err(failure) => Some(failure),
        };
        let owner = ex.fwd.client.unwrap_or(ex.fwd.peer);
        let over = !in_hand
            && failed.is_none()
            && self.uploads.get(&owner).copied().unwrap_or(0) >= MAX_UPLOADS_PER_CLIENT;
        // A body still on its way is counted while it comes; one over SMALL_BODY that came
        // whole with its head is not, but the cap holds for it too.
        if !ex.body_done() && !over && failed.is_none() {
            *self.uploads.entry(owner).or_default() += 1;
            ex.upload = Some(owner);
        }
        // Never to an HTTP/1.0 client (RFC 9110 §10.1.1): it sends its body anyway.
        if ex.fwd.expect_continue
            && ex.fwd.minor == 1
            && !ex.body_done()
            && !over
            && failed.is_none()
        {
            slot.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        slot.exchange = Some(Box::new(ex));
        if over {
            return self.fail(t, Failure::TooManyUploads);
        }
        if let Some(failure) = failed {
            return self.fail(t, failure);
        }
        let idle = self.pool.as_mut().and_then(|pool| pool.take_idle(t));
        match idle {
            Some(i) => {
                let ex = self.exchange(t).expect("just set");
                ex.up = Some(i);
                ex.connected = true;
                ex.reused = true;
            }
            None => self.connect(t),
        }
        self.drive(t);
    }

    fn exchange(&mut self, t: usize) -> Option<&mut Exchange> {
        self.slots
            .get_mut(t)
            .and_then(Option::as_mut)
            .and_then(|s| s.exchange.as_deref_mut())
    }

    /// Connects anew for `t`'s exchange, from the address it is at.
    fn connect(&mut self, t: usize) {
        let registry = self.poll.registry();
        let (Some(pool), Some(Some(slot))) = (self.pool.as_mut(), self.slots.get_mut(t)) else {
            return;
        };
        let Some(ex) = slot.exchange.as_deref_mut() else {
            return;
        };
        while ex.addr < pool.addresses() {
            match pool.connect(registry, ex.addr, t) {
                Ok(i) => {
                    ex.up = Some(i);
                    ex.connected = false;
                    ex.reused = false;
                    return;
                }
                Err(_) => ex.addr += 1,
            }
        }
        self.fail(t, Failure::Before("upstream_unreachable", 502));
    }

    /// Reads the client's body (connection `t`, which has an exchange) while the upstream
    /// takes it.
    pub(super) fn pump_body(&mut self, t: usize) {
        let mut bytes = MAX_READ_PER_TURN;
        let mut failed = None;
        {
            let Some(Some(slot)) = self.slots.get_mut(t) else {
                return;
            };
            let Some(ex) = slot.exchange.as_deref_mut() else {
                return;
            };
            while slot.readable && !slot.eof && ex.wants_body() && bytes > 0 {
                match slot.stream.read(&mut self.scratch) {
                    Ok(0) => slot.eof = true,
                    Ok(n) => {
                        slot.progress = true;
                        bytes = bytes.saturating_sub(n);
                        match ex.take_body(&self.scratch[..n]) {
                            Ok(used) if ex.body_done() => {
                                slot.conn.resume(&self.scratch[used..n]);
                            }
                            Ok(_) => {}
                            Err(failure) => {
                                failed = Some(failure);
                                break;
                            }
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => slot.readable = false,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        slot.eof = true;
                        slot.dead = true;
                    }
                }
            }
            if ex.body_done()
                && let Some(owner) = ex.upload.take()
            {
                release(&mut self.uploads, owner);
            }
            if slot.eof && !ex.body_done() {
                failed = Some(Failure::ClientGone);
            }
        }
        if let Some(failure) = failed {
            self.fail(t, failure);
        }
    }

    /// Goes on with connection `t`'s exchange as far as its sockets let it.
    pub(super) fn drive(&mut self, t: usize) {
        // Bounded: a retry or a next address at most once per address, and a turn's reads.
        for _ in 0..8 {
            match self.step(t) {
                Step::Wait => return,
                Step::Done(reusable) => return self.finish(t, reusable),
                Step::Failed(failure) => return self.fail(t, failure),
                Step::Retry => {
                    self.drop_upstream(t);
                    if let Some(ex) = self.exchange(t) {
                        let head = ex.again.take().unwrap_or_default();
                        ex.to_up = head;
                        ex.answered = false;
                        ex.sent = None;
                    }
                    self.connect(t);
                }
                Step::NextAddress => {
                    self.drop_upstream(t);
                    match self.exchange(t) {
                        Some(ex) => ex.addr += 1,
                        None => return,
                    }
                    self.connect(t);
                }
            }
        }
    }

    fn drop_upstream(&mut self, t: usize) {
        let registry = self.poll.registry();
        if let (Some(pool), Some(ex)) = (
            self.pool.as_mut(),
            self.slots
                .get_mut(t)
                .and_then(Option::as_mut)
                .and_then(|s| s.exchange.as_deref_mut()),
        ) && let Some(i) = ex.up.take()
        {
            pool.close(registry, i);
        }
    }

    /// Writes what is for the upstream, reads what it answers into the client's output.
    fn step(&mut self, t: usize) -> Step {
        let draining = self.draining.is_some();
        let now = self.now;
        let (Some(pool), Some(Some(slot))) = (self.pool.as_mut(), self.slots.get_mut(t)) else {
            return Step::Wait;
        };
        let scratch = &mut self.scratch;
        let Some(ex) = slot.exchange.as_deref_mut() else {
            return Step::Wait;
        };
        let Some(up) = ex.up.and_then(|i| pool.get(i)) else {
            return Step::Wait;
        };
        if !ex.connected {
            if !(up.writable || up.readable) {
                return Step::Wait;
            }
            match super::upstream::connected(&up.stream) {
                Ok(true) => {
                    ex.connected = true;
                    let _ = up.stream.set_nodelay(true);
                }
                Ok(false) => {
                    up.writable = false;
                    up.readable = false;
                    return Step::Wait;
                }
                Err(_) => return Step::NextAddress,
            }
        }
        let mut broke = false;
        while up.writable && !ex.to_up.is_empty() {
            match up.stream.write(&ex.to_up) {
                Ok(0) => {
                    broke = true;
                    break;
                }
                Ok(n) => {
                    ex.to_up.drain(..n);
                    ex.sent.get_or_insert(now);
                    slot.progress = true;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => up.writable = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    broke = true;
                    break;
                }
            }
        }
        if ex.to_up.capacity() > 2 * HIGH_WATER && ex.to_up.is_empty() {
            ex.to_up = Vec::new();
        }
        let mut budget = MAX_READ_PER_TURN;
        let mut ended = broke;
        while !ended && up.readable && slot.out.len() < HIGH_WATER && budget > 0 {
            // Read into the loop's buffer and keep only what came: growing `input` by a
            // zeroed chunk for each read cost more than the bytes (half the loop's time
            // while 64 slow readers' answers filled their send buffers, debug build).
            match up.stream.read(scratch) {
                Ok(0) => ended = true,
                Ok(n) => {
                    // A short read emptied the socket: what comes next is a new edge (as
                    // for the client's reads in slot.rs), unless its end was reported.
                    if n < scratch.len() && !up.hup {
                        up.readable = false;
                    }
                    up.input.extend_from_slice(&scratch[..n]);
                    budget = budget.saturating_sub(n);
                    slot.progress = true;
                    ex.answered = true;
                    if slot.out.capacity() == 0 {
                        slot.out.reserve(READ_CHUNK);
                    }
                    let before = matches!(ex.answer, Answer::Head);
                    let taken = ex.take_answer(&mut up.input, &mut slot.out, draining);
                    if before && !matches!(ex.answer, Answer::Head) {
                        if let Answer::Body { status, .. } = ex.answer {
                            crate::metrics::answer(status);
                        }
                        if let Some(sent) = ex.sent {
                            crate::metrics::upstream_took(now.saturating_duration_since(sent));
                        }
                    }
                    slot.unsent_id = ex.id.or(slot.unsent_id);
                    match taken {
                        // Reused only when nothing is left either way: the whole body went
                        // up (an app that answers early and skips the rest would read the
                        // next request as its end), and no byte is left in the socket (a
                        // read that filled the buffer may have left some behind, and no
                        // new event would say so), and its input has not ended (a close
                        // that came with the answer's last bytes was this event's: no
                        // other would come to take it out of the pool).
                        Ok(Some(reusable)) => {
                            let clean = reusable
                                && ex.body_done()
                                && ex.to_up.is_empty()
                                && !up.hup
                                && (n < scratch.len() || nothing_waiting(&up.stream));
                            return Step::Done(clean);
                        }
                        Ok(None) => {}
                        Err(failure) => return Step::Failed(failure),
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => up.readable = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => ended = true,
            }
        }
        if !ended {
            return Step::Wait;
        }
        // The upstream ended (or failed) before an answer: a kept connection it closed as
        // the request went out is replaced once, for a request that may go twice.
        if !ex.answered && ex.reused && ex.again.is_some() {
            return Step::Retry;
        }
        match ex.upstream_ended(&mut slot.out) {
            Ok(()) => Step::Done(false),
            Err(failure) => Step::Failed(failure),
        }
    }

    /// The answer ended: the upstream connection back to the pool (or closed), the client
    /// connection on to its next request (or closing). `reusable`: the answer ended at its
    /// framing, the request's body is all sent, and nothing is left in the socket.
    fn finish(&mut self, t: usize, reusable: bool) {
        let draining = self.draining.is_some();
        let registry = self.poll.registry();
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        let Some(ex) = slot.exchange.take() else {
            return;
        };
        if let (Some(pool), Some(i)) = (self.pool.as_mut(), ex.up) {
            match reusable && !draining {
                true => pool.give_back(registry, i),
                false => pool.close(registry, i),
            }
        }
        if let Some(owner) = ex.upload {
            release(&mut self.uploads, owner);
        }
        if ex.closes || slot.conn.phase() == Phase::Passed {
            slot.conn.close();
        } else {
            slot.more = true;
            self.again.push(t);
        }
    }

    /// The exchange of `t` failed: its event, and the client's answer (or the end of its
    /// connection).
    pub(super) fn fail(&mut self, t: usize, failure: Failure) {
        self.drop_upstream(t);
        let draining = self.draining.is_some();
        let Some(Some(slot)) = self.slots.get_mut(t) else {
            return;
        };
        let Some(ex) = slot.exchange.take() else {
            return;
        };
        if let Some(owner) = ex.upload {
            release(&mut self.uploads, owner);
        }
        let (reason, status, during) = match failure {
            Failure::ClientGone => {
                slot.dead = true;
                return;
            }
            Failure::Before(reason, status) => (reason, status, false),
            Failure::During(reason, status) => (reason, status, true),
            Failure::Stalled => ("body_timeout", 408, false),
            Failure::TooManyUploads => ("too_many_uploads", 503, false),
        };
        crate::metrics::upstream_error(reason);
        logger::record(&Event::Request(ex.event(reason, status, during)));
        if during {
            // The head went out: the body is cut short, and nothing may follow it.
            slot.conn.close();
            return;
        }
        let close = ex.closes
            || draining
            || !ex.body_done()
            || matches!(failure, Failure::Stalled | Failure::TooManyUploads);
        crate::metrics::answer(status);
        if slot.out.capacity() == 0 {
            slot.out.reserve(512);
        }
        let framing = Reply_ {
            minor: ex.fwd.minor,
            head_only: ex.fwd.head_only,
            close,
        };
        answer::push(
            &Reply::Status(status, ex.id),
            framing,
            &mut slot.out,
            &mut self.body,
        );
        slot.unsent_id = ex.id.or(slot.unsent_id);
        if close || slot.conn.phase() == Phase::Passed {
            slot.conn.close();
        } else {
            slot.more = true;
            self.again.push(t);
        }
    }

    /// `--upstream-timeout` went by without progress on `t`'s exchange.
    pub(super) fn exchange_timed_out(&mut self, t: usize) {
        let Some(ex) = self.exchange(t) else {
            return;
        };
        let failure = if ex.waits_for_client() {
            Failure::Stalled
        } else if let Answer::Body { status, .. } = ex.answer {
            Failure::During("upstream_timeout", status)
        } else {
            Failure::Before("upstream_timeout", 504)
        };
        self.fail(t, failure);
    }

    /// Connection `t` closes: its exchange ends with it.
    pub(super) fn end_exchange(&mut self, t: usize) {
        self.drop_upstream(t);
        if let Some(Some(slot)) = self.slots.get_mut(t)
            && let Some(ex) = slot.exchange.take()
            && let Some(owner) = ex.upload
        {
            release(&mut self.uploads, owner);
        }
    }
}

/// Whether `stream` has no byte waiting to be read (and has not ended).
fn nothing_waiting(stream: &mio::net::TcpStream) -> bool {
    matches!(stream.peek(&mut [0u8; 1]), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
}

fn release(uploads: &mut Uploads, owner: IpAddr) {
    if let Some(n) = uploads.get_mut(&owner) {
        *n -= 1;
        if *n == 0 {
            uploads.remove(&owner);
        }
    }
}

/// Where an exchange's wait restarts from on progress at `now`: from `now`, unless it
/// waits for its client's body, which has earned only its bytes' worth of time at
/// [`MIN_UPLOAD_RATE`] since the request went up (a trickle cannot hold its connection).
/// Time the upstream takes to take the body is not the client's.
pub(super) fn upload_progress(ex: &Exchange, now: Instant) -> Instant {
    match ex.sent {
        Some(sent) if ex.waits_for_client() => {
            let earned = ex.body_bytes.saturating_mul(1000) / MIN_UPLOAD_RATE;
            now.min(sent + Duration::from_millis(earned))
        }
        _ => now,
    }
}
