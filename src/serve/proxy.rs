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
use super::chunked::Chunked;
use super::conn::Phase;
use super::event_loop::{HIGH_WATER, Loop, MAX_READ_PER_TURN, READ_CHUNK};
use super::head::{self, Head};
use super::request_head::{self, Body};
use super::response::{self, Framing, Parsed};
use crate::event::{Action, Event, RequestEvent, RequestId};
use crate::forwarded::Trusted;
use crate::reply::Reply;
use crate::{Config, Error, logger};

/// The longest upstream response head.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line of a chunked body, either way.
const MAX_LINE: usize = 4 * 1024;
/// The most request bodies read at once from one client (the one a trusted proxy names,
/// else the peer's address): each holds an upstream connection while it comes.
const MAX_UPLOADS_PER_CLIENT: usize = 16;
/// A body at most this long, whole in hand with its head, is never counted as an upload:
/// it cannot stall.
const SMALL_BODY: u64 = 1024;

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
            trusted: Trusted::new(&config.trusted_proxies),
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

/// A request on its way to the upstream: what its head said.
#[derive(Debug)]
pub(crate) struct Forward {
    method: Box<str>,
    /// The normalised path, without the query (the events').
    path: Box<str>,
    /// The upstream head so far ([`request_head::start`]).
    pub(super) head: Vec<u8>,
    /// How the body goes up.
    pub(super) body: Body,
    /// How the client frames it.
    client_body: head::Body,
    minor: u8,
    head_only: bool,
    /// The client connection ends after the answer.
    close: bool,
    expect_continue: bool,
    peer: IpAddr,
    /// The client a trusted proxy names.
    client: Option<IpAddr>,
    user_agent: Option<Box<str>>,
}

/// The client's body, as it comes.
#[derive(Debug)]
enum BodyIn {
    Done,
    Length(u64),
    Chunked(Box<Chunked>),
}

/// The upstream's answer, as it comes.
#[derive(Debug)]
enum Answer {
    /// Its head, not complete yet.
    Head,
    /// Its body, to the client.
    Body {
        framing: Framing,
        /// What a `Content-Length` body still lacks.
        left: u64,
        chunked: Option<Box<Chunked>>,
        status: u16,
        keep_alive: bool,
        /// To an HTTP/1.0 client: a body of unknown length goes as it is.
        raw: bool,
    },
}

/// Why an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Before anything of the answer went to the client: it gets the status.
    Before(&'static str, u16),
    /// After the answer's head (of this status) went to the client: it is cut short.
    During(&'static str, u16),
    /// The client's body made no progress within the timeout: 408, and the connection
    /// ends.
    Stalled,
    /// The client has [`MAX_UPLOADS_PER_CLIENT`] bodies on their way already: 503, and
    /// the connection ends.
    TooManyUploads,
    /// The client hung up within its body.
    ClientGone,
}

/// One request's exchange with the upstream.
#[derive(Debug)]
pub(crate) struct Exchange {
    fwd: Box<Forward>,
    id: Option<RequestId>,
    /// The upstream connection, by its index in the pool.
    up: Option<usize>,
    /// Its connect finished.
    connected: bool,
    /// It carried an answer before.
    reused: bool,
    /// Which of the upstream's addresses it tries.
    addr: usize,
    /// Bytes for the upstream, not written yet: the head, then the body as it comes.
    to_up: Vec<u8>,
    /// The head again, for one retry on a fresh connection: only an idempotent request
    /// without a body (GET, HEAD, OPTIONS: nginx's default) may go twice.
    again: Option<Vec<u8>>,
    body: BodyIn,
    /// The body's data bytes so far.
    body_bytes: u64,
    /// Counted as an upload of this client.
    upload: Option<IpAddr>,
    answer: Answer,
    /// When the head began to go up (for the upstream's share of the latency).
    sent: Option<Instant>,
    /// Any byte of the answer came.
    answered: bool,
    /// The client connection ends after the answer.
    closes: bool,
}

impl Exchange {
    fn new(fwd: Box<Forward>, id: Option<RequestId>, head: Vec<u8>) -> Exchange {
        let body = match fwd.client_body {
            head::Body::Length(n) if n > 0 => BodyIn::Length(n),
            head::Body::Chunked => BodyIn::Chunked(Box::new(Chunked::new(MAX_LINE))),
            _ => BodyIn::Done,
        };
        let idempotent = matches!(&*fwd.method, "GET" | "HEAD" | "OPTIONS");
        let again = (idempotent && matches!(body, BodyIn::Done)).then(|| head.clone());
        Exchange {
            closes: fwd.close,
            fwd,
            id,
            up: None,
            connected: false,
            reused: false,
            addr: 0,
            to_up: head,
            again,
            body,
            body_bytes: 0,
            upload: None,
            answer: Answer::Head,
            sent: None,
            answered: false,
        }
    }

    pub(super) fn body_done(&self) -> bool {
        matches!(self.body, BodyIn::Done)
    }

    /// Whether it reads the client's body now: it is not over, and the upstream takes it.
    pub(super) fn wants_body(&self) -> bool {
        !self.body_done() && self.to_up.len() < HIGH_WATER
    }

    /// Whether it waits for the client's body (and nothing else): the upstream has all
    /// that came.
    fn waits_for_client(&self) -> bool {
        !self.body_done() && self.connected && self.to_up.is_empty()
    }

    pub(super) fn upstream(&self) -> Option<usize> {
        self.up
    }

    pub(super) fn has_to_send(&self) -> bool {
        self.connected && !self.to_up.is_empty()
    }

    /// Takes what belongs to the body from `input`, framed for the upstream; returns how
    /// many bytes were the body's (what follows is the client's next request).
    pub(super) fn take_body(&mut self, input: &[u8]) -> Result<usize, Failure> {
        let to_up = &mut self.to_up;
        match &mut self.body {
            BodyIn::Done => Ok(0),
            BodyIn::Length(left) => {
                let take = (*left).min(input.len() as u64);
                to_up.extend_from_slice(&input[..take as usize]);
                self.body_bytes += take;
                *left -= take;
                if *left == 0 {
                    self.body = BodyIn::Done;
                }
                Ok(take as usize)
            }
            BodyIn::Chunked(chunked) => {
                let mut data = 0;
                let used = chunked
                    .feed(input, &mut |piece| {
                        if !piece.is_empty() {
                            push_chunk(to_up, piece, false);
                            data += piece.len() as u64;
                        }
                    })
                    // A chunked body that does not decode: the client's framing is off,
                    // and so is everything after it.
                    .map_err(|_| Failure::ClientGone)?;
                self.body_bytes += data;
                if chunked.is_done() {
                    to_up.extend_from_slice(b"0\r\n\r\n");
                    self.body = BodyIn::Done;
                }
                Ok(used)
            }
        }
    }

    /// Takes what it can of the answer from `input` into the client's `out`: `Some(reusable)`
    /// once the answer ended (reusable: exactly at its framing, nothing after it).
    fn take_answer(
        &mut self,
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
        draining: bool,
    ) -> Result<Option<bool>, Failure> {
        if let Answer::Head = self.answer {
            let bad = Failure::Before("upstream_error", 502);
            let (len, next) = loop {
                let mut room = response::room();
                match response::parse(input, &mut room).map_err(|_| bad)? {
                    Parsed::Partial if input.len() > MAX_HEAD => return Err(bad),
                    Parsed::Partial => return Ok(None),
                    Parsed::Interim(len) => {
                        input.drain(..len);
                    }
                    Parsed::Final(len, head) => {
                        let framing = head.framing(self.fwd.head_only).map_err(|_| bad)?;
                        let raw = self.fwd.minor == 0;
                        // An early answer (the body not all up) leaves the client's input
                        // unread: the connection ends after it.
                        self.closes |= draining
                            || !self.body_done()
                            || (raw && matches!(framing, Framing::Chunked | Framing::Unknown));
                        head.write(out, self.id, framing, self.closes, raw);
                        let next = Answer::Body {
                            framing,
                            left: match framing {
                                Framing::Length(n) => n,
                                _ => 0,
                            },
                            chunked: (framing == Framing::Chunked)
                                .then(|| Box::new(Chunked::new(MAX_LINE))),
                            status: head.status,
                            keep_alive: head.keep_alive,
                            raw,
                        };
                        break (len, next);
                    }
                }
            };
            input.drain(..len);
            self.answer = next;
        }
        let Answer::Body {
            framing,
            left,
            chunked,
            status,
            keep_alive,
            raw,
        } = &mut self.answer
        else {
            return Ok(None);
        };
        let reusable = |input: &Vec<u8>| *keep_alive && input.is_empty();
        match framing {
            Framing::None => Ok(Some(reusable(input))),
            Framing::Length(_) => {
                let take = (*left).min(input.len() as u64) as usize;
                out.extend_from_slice(&input[..take]);
                input.drain(..take);
                *left -= take as u64;
                Ok((*left == 0).then(|| reusable(input)))
            }
            Framing::Chunked => {
                let body = chunked.as_mut().expect("a chunked answer has its reader");
                let raw = *raw;
                let used = body
                    .feed(input, &mut |data| push_chunk(out, data, raw))
                    .map_err(|_| Failure::During("upstream_error", *status))?;
                input.drain(..used);
                if !body.is_done() {
                    return Ok(None);
                }
                if !raw {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                Ok(Some(reusable(input)))
            }
            Framing::Unknown => {
                push_chunk(out, input, *raw);
                input.clear();
                Ok(None)
            }
        }
    }

    /// The upstream's end of stream (or a failed read): the answer's end, or a failure.
    fn upstream_ended(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
        match &self.answer {
            Answer::Head => Err(Failure::Before("upstream_error", 502)),
            Answer::Body {
                framing: Framing::Unknown,
                raw,
                ..
            } => {
                if !raw {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                Ok(())
            }
            Answer::Body { status, .. } => Err(Failure::During("upstream_error", *status)),
        }
    }

    /// What the failure `f` says of a request, in its event.
    fn event<'a>(&'a self, reason: &'static str, status: u16, during: bool) -> RequestEvent<'a> {
        let fwd = &self.fwd;
        RequestEvent {
            action: Action::Forward,
            success: false,
            reason,
            reason_text: match reason {
                "upstream_timeout" if during => {
                    "the upstream stopped within its answer: the client got the head and part of the body, then the connection closed"
                }
                _ if during => {
                    "the upstream's answer broke off: the client got the head and part of the body, then the connection closed"
                }
                "upstream_timeout" => "the upstream did not answer in time",
                "upstream_unreachable" => "the upstream could not be reached",
                "body_timeout" => {
                    "the client's body made no progress within the timeout: answered, and the connection closed"
                }
                "too_many_uploads" => {
                    "too many bodies from this address are on their way: answered, and the connection closed"
                }
                _ => "the upstream's answer was not a valid HTTP/1.x response",
            },
            source_ip: Some(fwd.peer),
            client_ip: fwd.client,
            status: Some(status),
            request_id: self.id,
            fingerprint: None,
            method: &fwd.method,
            path: &fwd.path,
            user: None,
            user_agent: fwd.user_agent.as_deref(),
            kid: None,
            alg: None,
        }
    }
}

/// Appends `data` as one chunk (or as it is, `raw`).
fn push_chunk(out: &mut Vec<u8>, data: &[u8], raw: bool) {
    if raw {
        return out.extend_from_slice(data);
    }
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
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
        if ex.fwd.expect_continue && !ex.body_done() && !over && failed.is_none() {
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
            let at = up.input.len();
            up.input.resize(at + READ_CHUNK, 0);
            match up.stream.read(&mut up.input[at..]) {
                Ok(0) => {
                    up.input.truncate(at);
                    ended = true;
                }
                Ok(n) => {
                    up.input.truncate(at + n);
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
                        Ok(Some(reusable)) => return Step::Done(reusable && ex.body_done()),
                        Ok(None) => {}
                        Err(failure) => return Step::Failed(failure),
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    up.input.truncate(at);
                    up.readable = false;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => up.input.truncate(at),
                Err(_) => {
                    up.input.truncate(at);
                    ended = true;
                }
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
    /// connection on to its next request (or closing).
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

fn release(uploads: &mut Uploads, owner: IpAddr) {
    if let Some(n) = uploads.get_mut(&owner) {
        *n -= 1;
        if *n == 0 {
            uploads.remove(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exchange for `method` with a client body framed as `body`.
    fn exchange(method: &str, body: head::Body) -> Exchange {
        let fwd = Box::new(Forward {
            method: method.into(),
            path: "/p".into(),
            head: Vec::new(),
            body: Body::None,
            client_body: body,
            minor: 1,
            head_only: method == "HEAD",
            close: false,
            expect_continue: false,
            peer: [127, 0, 0, 1].into(),
            client: None,
            user_agent: None,
        });
        Exchange::new(fwd, None, b"HEAD\r\n\r\n".to_vec())
    }

    /// What the client gets from `answer` fed in pieces cut at `cuts`, and how it ended:
    /// `Ok(Some(reusable))`, `Ok(None)` (not yet), or the failure; and how many bytes of
    /// `answer` came after its end (with it, or later).
    fn answered(answer: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<Option<bool>, Failure>, usize) {
        let mut ex = exchange("GET", head::Body::None);
        let (mut input, mut out) = (Vec::new(), Vec::new());
        let mut from = 0;
        for &cut in cuts.iter().chain([&answer.len()]) {
            input.extend_from_slice(&answer[from..cut]);
            from = cut;
            match ex.take_answer(&mut input, &mut out, false) {
                Ok(None) => {}
                ended => return (out, ended, input.len() + answer.len() - from),
            }
        }
        (out, Ok(None), 0)
    }

    /// Without the `Date`-free head's variable parts: the status line and the body bytes.
    fn body_of(out: &[u8]) -> Vec<u8> {
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        out[at + 4..].to_vec()
    }

    #[test]
    fn an_answer_followed_by_bytes_nobody_asked_for_leaves_its_connection_unfit() {
        let exact = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(answered(exact, &[]).1, Ok(Some(true)));
        let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
        let (out, ended, _) = answered(extra, &[]);
        assert_eq!(ended, Ok(Some(false)));
        assert_eq!(
            body_of(&out),
            b"ok",
            "nothing after the answer reaches the client"
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX";
        assert_eq!(answered(chunked, &[]).1, Ok(Some(false)));
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(answered(closing, &[]).1, Ok(Some(false)));
    }

    #[test]
    fn a_broken_or_endless_answer_is_a_failure_before_or_during() {
        let garbage = b"not http\r\n\r\n";
        assert_eq!(
            answered(garbage, &[]).1,
            Err(Failure::Before("upstream_error", 502))
        );
        let long = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; MAX_HEAD + 10]].concat();
        assert_eq!(
            answered(&long, &[]).1,
            Err(Failure::Before("upstream_error", 502))
        );
        let overrun = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXY\r\n";
        assert_eq!(
            answered(overrun, &[]).1,
            Err(Failure::During("upstream_error", 200))
        );
    }

    #[test]
    fn a_request_body_goes_up_reframed_and_ends_exactly() {
        let mut ex = exchange("POST", head::Body::Chunked);
        let input = b"3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
        let used = ex.take_body(input).unwrap();
        assert!(ex.body_done());
        assert_eq!(&input[used..], b"GET /next HTTP/1.1\r\n\r\n");
        assert_eq!(ex.to_up, b"HEAD\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        let mut ex = exchange("PUT", head::Body::Length(4));
        assert_eq!(ex.take_body(b"ab").unwrap(), 2);
        assert!(!ex.body_done());
        assert_eq!(ex.take_body(b"cdEXTRA").unwrap(), 2);
        assert!(ex.body_done());
        assert_eq!(ex.to_up, b"HEAD\r\n\r\nabcd");
        assert!(ex.again.is_none(), "a body never goes twice");
        assert!(exchange("GET", head::Body::None).again.is_some());
        assert!(exchange("POST", head::Body::None).again.is_none());
    }

    /// The client's head and body as data: a chunked body decoded (its chunks follow the
    /// reads, not the app's).
    fn decoded(out: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let (head, body) = out.split_at(at);
        if !head.windows(26).any(|w| w == b"Transfer-Encoding: chunked") {
            return (head.to_vec(), body.to_vec());
        }
        let mut data = Vec::new();
        let mut reader = Chunked::new(MAX_LINE);
        reader
            .feed(body, &mut |d| data.extend_from_slice(d))
            .unwrap();
        assert!(reader.is_done());
        (head.to_vec(), data)
    }

    /// An upstream answer of one of a few shapes.
    fn shape(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match kind % 4 {
            0 => {
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                out.extend_from_slice(body);
            }
            1 => {
                out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n");
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for piece in body.chunks(3) {
                    push_chunk(&mut out, piece, false);
                }
                out.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
            }
            2 => out.extend_from_slice(b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"),
            _ => {
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                out.extend_from_slice(body);
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
            }
        }
        out
    }

    proptest::proptest! {
        /// However the upstream's bytes are cut into reads, the client gets the same
        /// bytes, and the connection the same verdict.
        #[test]
        fn an_answer_cut_anywhere_gives_the_same_bytes_and_verdict(
            kind in 0u8..4,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let answer = shape(kind, &body);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (answer.len() + 1)).collect();
            cuts.sort_unstable();
            let whole = answered(&answer, &[]);
            proptest::prop_assert!(matches!(whole.1, Ok(Some(_))));
            let cut = answered(&answer, &cuts);
            proptest::prop_assert_eq!(decoded(&cut.0), decoded(&whole.0));
            // Reused only when nothing came after the answer: with it (the exchange's
            // verdict), or later (the pool closes an idle connection that becomes readable).
            let reused = |a: &(Vec<u8>, Result<Option<bool>, Failure>, usize)| {
                a.1 == Ok(Some(true)) && a.2 == 0
            };
            proptest::prop_assert_eq!(reused(&cut), reused(&whole));
            proptest::prop_assert_eq!(whole.2 > 0, kind % 4 == 3);
        }
    }
}
