//! The reverse proxy: allowed (and public) requests go on to the upstream application
//! from a bounded pool of threads, so that a slow upstream, or a slow client, never holds
//! up the serving thread.
//!
//! jwtguard speaks HTTP/1.1 to the upstream itself, with `httparse` for the response head:
//! a proxy must pass a message on as it came (any method, a body on any method, headers
//! in order and repeated, its framing), which a general HTTP client would rewrite.
//!
//! Each client connection has a lane: its requests are forwarded, and answered, in order,
//! by one thread at a time. While a lane is busy, the serving thread hands it its other
//! answers too (a 401, say) instead of writing them itself: tiny_http writes a connection's
//! answers in order, so that write would wait for the forwarding to finish.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::event::{Action, Event, RequestEvent, RequestId};
use crate::forwarded::Trusted;
use crate::http::{self, Reply};
use crate::{Config, Error, Headers, logger};

/// The most forwarding threads.
const MAX_THREADS: usize = 64;
/// The most client connections waiting for a forwarding thread; past it, 503.
const MAX_WAITING: usize = 1024;
/// Idle upstream connections kept for reuse.
const MAX_IDLE: usize = 64;
/// The longest upstream response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The most upstream response headers.
const MAX_HEADERS: usize = 128;
/// The most a response of unknown length is held, for an HTTP/1.0 client that keeps its
/// connection: it needs a `Content-Length`.
const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and those
/// jwtguard sets itself on the way to the upstream.
const HOP_BY_HOP: [&str; 10] = [
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Content-Length",
];

/// A request on its way to the upstream.
pub(crate) struct Forward {
    pub request: tiny_http::Request,
    /// The normalised path and the query.
    pub target: String,
    /// The decision's id, for a request the guard allowed (none for a public one).
    pub id: Option<RequestId>,
    /// The identity headers to set.
    pub identity: Vec<(String, String)>,
    /// The event's method and path, for a failure event.
    pub path: String,
}

enum Job {
    Forward(Box<Forward>),
    /// An answer of jwtguard's own, already written out, for a busy lane.
    Answer(Box<(tiny_http::Request, Vec<u8>)>),
}

/// The reverse proxy: its upstream, its idle connections, its lanes and threads.
#[derive(Clone)]
pub(crate) struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    upstream: Vec<SocketAddr>,
    timeout: Duration,
    strip_authorization: bool,
    /// Identity header names: a client's copies never reach the upstream.
    identity: Vec<String>,
    trusted: Trusted,
    idle: Mutex<Vec<TcpStream>>,
    lanes: Mutex<Lanes>,
    work: Condvar,
    /// The worker is handing over to another: every answer says `Connection: close`,
    /// and no upstream connection is kept.
    draining: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Lanes {
    /// Each busy client connection's jobs, in order.
    busy: HashMap<SocketAddr, VecDeque<Job>>,
    /// Connections with jobs and no thread on them.
    ready: VecDeque<SocketAddr>,
    threads: usize,
    idle_threads: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// The proxy for `config.upstream`; its address is resolved now.
    pub(crate) fn new(config: &Config, upstream: &str) -> Result<Proxy, Error> {
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
        Ok(Proxy {
            shared: Arc::new(Shared {
                upstream: resolved,
                timeout: Duration::from_secs(config.upstream_timeout),
                strip_authorization: config.strip_authorization,
                identity,
                trusted: Trusted::new(&config.trusted_proxies),
                idle: Mutex::new(Vec::new()),
                lanes: Mutex::new(Lanes::default()),
                work: Condvar::new(),
                draining: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// From now on, every answer closes its connection, and no upstream connection is
    /// kept idle.
    pub(crate) fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        lock(&self.shared.idle).clear();
    }

    /// Whether no request is being forwarded or waits to be.
    pub(crate) fn is_idle(&self) -> bool {
        lock(&self.shared.lanes).busy.is_empty()
    }

    /// Whether `peer`'s connection has a request being forwarded or waiting.
    pub(crate) fn busy(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|peer| lock(&self.shared.lanes).busy.contains_key(&peer))
    }

    /// Forwards `job` on its connection's lane; gives it back when too many connections
    /// wait for a thread already (the caller answers 503).
    pub(crate) fn forward(&self, job: Box<Forward>) -> Result<(), Box<Forward>> {
        let peer = job.request.remote_addr().copied();
        let peer = peer.unwrap_or(([0, 0, 0, 0], 0).into());
        self.enqueue(peer, Job::Forward(job))
            .map_err(|job| match job {
                Job::Forward(forward) => forward,
                Job::Answer(..) => unreachable!("only forwards are turned away"),
            })
    }

    /// Queues `answer` (written out) for `request` behind its connection's forwarding.
    pub(crate) fn answer_after(&self, request: tiny_http::Request, answer: Vec<u8>) {
        let peer = request
            .remote_addr()
            .copied()
            .unwrap_or(([0, 0, 0, 0], 0).into());
        let _ = self.enqueue(peer, Job::Answer(Box::new((request, answer))));
    }

    fn enqueue(&self, peer: SocketAddr, job: Job) -> Result<(), Job> {
        let mut lanes = lock(&self.shared.lanes);
        if let Some(queue) = lanes.busy.get_mut(&peer) {
            queue.push_back(job);
            return Ok(());
        }
        if lanes.ready.len() >= MAX_WAITING && matches!(job, Job::Forward(_)) {
            return Err(job);
        }
        lanes.busy.insert(peer, VecDeque::from([job]));
        lanes.ready.push_back(peer);
        if lanes.idle_threads == 0 && lanes.threads < MAX_THREADS {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("jwtguard-forward".into())
                .stack_size(256 * 1024)
                .spawn(move || shared.run());
            if spawned.is_ok() {
                lanes.threads += 1;
            }
        }
        drop(lanes);
        self.shared.work.notify_one();
        Ok(())
    }
}

impl Shared {
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
                match job {
                    Job::Forward(forward) => self.forward(*forward),
                    Job::Answer(answer) => {
                        let (request, answer) = *answer;
                        http::write_to(request, &answer);
                    }
                }
            }
        }
    }

    /// Forwards one request and answers it: the upstream's response, or 502 or 504 (with
    /// an event) when the upstream could not be reached or did not answer in time.
    fn forward(&self, job: Forward) {
        let Forward {
            request,
            target,
            id,
            identity,
            path,
        } = job;
        let who = Who::of(&request, &self.trusted);
        match self.exchange(request, &target, id, &identity) {
            Ok(()) | Err((_, Failure::ClientGone)) => {}
            Err((request, Failure::Before(reason, status))) => {
                logger::record(&Event::Request(who.event(id, &path, reason, status)));
                if let Some(request) = request {
                    http::send(*request, &Reply::Status(status, id), false);
                }
            }
            Err((_, Failure::During(reason))) => {
                // The head went out: the client sees the response cut short.
                logger::record(&Event::Request(who.event(id, &path, reason, 502)));
            }
        }
    }

    /// An idle upstream connection, or a new one.
    fn connection(&self) -> Result<(TcpStream, bool), Failure> {
        if let Some(stream) = lock(&self.idle).pop() {
            return Ok((stream, true));
        }
        let mut last = None;
        for addr in &self.upstream {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(self.timeout));
                    let _ = stream.set_write_timeout(Some(self.timeout));
                    return Ok((stream, false));
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

    /// Sends `request` upstream and its response to the client. On a failure before the
    /// answer started, the request comes back, to be answered 502 or 504.
    fn exchange(
        &self,
        mut request: tiny_http::Request,
        target: &str,
        id: Option<RequestId>,
        identity: &[(String, String)],
    ) -> Result<(), (Option<Box<tiny_http::Request>>, Failure)> {
        let head = self.request_head(&request, target, id, identity);
        let (mut reader, response, framing) = match self.request_upstream(&mut request, &head) {
            Ok(answer) => answer,
            Err(failure) => return Err((Some(Box::new(request)), failure)),
        };
        let version = request.http_version().clone();
        let client_closes = closes(&request) || self.draining.load(Ordering::SeqCst);
        let client_1_0 = version == tiny_http::HTTPVersion(1, 0);
        // The body of an HTTP/1.0 client that keeps its connection needs a length.
        let (framing, buffered) = match framing {
            Framing::Unknown if client_1_0 && !client_closes => {
                let mut body = Vec::new();
                let read = (&mut reader)
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
        response.write_head(&mut out, &version, id, &framing, client_closes, client_1_0);
        let mut client = ClientWriter::new(request.into_writer(), self.timeout);
        let gone = |_| (None, Failure::ClientGone);
        client.write(&out).map_err(gone)?;
        let reusable = match buffered {
            Some(body) => {
                client.write(&body).map_err(gone)?;
                response.keep_alive
            }
            None => {
                let whole = copy_body(&mut reader, &mut client, &framing, client_1_0)
                    .map_err(|f| (None, f))?;
                whole && response.keep_alive
            }
        };
        client.flush().map_err(gone)?;
        if reusable && !self.draining.load(Ordering::SeqCst) {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE {
                idle.push(reader.into_inner());
            }
        }
        Ok(())
    }

    /// Sends the request (`head`, then its body) upstream and reads the response head.
    /// A kept-alive connection the upstream had closed meanwhile is replaced by a new one,
    /// once, when the request had no body to send.
    fn request_upstream(
        &self,
        request: &mut tiny_http::Request,
        head: &[u8],
    ) -> Result<(BufReader<TcpStream>, ResponseHead, Framing), Failure> {
        let has_body = request.body_length().is_some_and(|n| n > 0) || chunked(request.headers());
        let (mut upstream, mut reused) = self.connection()?;
        let mut reader = loop {
            let sent = (&upstream).write_all(head).and_then(|()| {
                if has_body {
                    send_body(request, &mut &upstream)
                } else {
                    Ok(())
                }
            });
            let mut reader = BufReader::with_capacity(8192, upstream);
            match sent.and_then(|()| reader.fill_buf().map(|b| b.len())) {
                Ok(n) if n > 0 => break reader,
                Ok(_) if reused && !has_body => {}
                Err(ref e) if reused && !has_body && status_of(e) == 502 => {}
                Ok(_) => return Err(Failure::Before("upstream_error", 502)),
                Err(e) => {
                    return Err(Failure::Before(
                        timeout_or(&e, "upstream_error"),
                        status_of(&e),
                    ));
                }
            }
            (upstream, reused) = (self.connection()?.0, false);
        };
        let response = read_head(&mut reader)?;
        let head_request = *request.method() == tiny_http::Method::Head;
        let framing = response.framing(head_request)?;
        Ok((reader, response, framing))
    }

    /// The request line and headers for the upstream.
    fn request_head(
        &self,
        request: &tiny_http::Request,
        target: &str,
        id: Option<RequestId>,
        identity: &[(String, String)],
    ) -> Vec<u8> {
        let headers = request.headers();
        let peer = request.remote_addr().map(|a| a.ip().to_canonical());
        let trusted = peer.is_some_and(|p| self.trusted.contains(p));
        let listed = connection_listed(headers);
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(request.method().as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut header = |name: &str, value: &str| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        let host = headers.values("Host").next();
        for h in headers {
            let name = h.field.as_str().as_str();
            let is = |other: &str| name.eq_ignore_ascii_case(other);
            // A name with "_": CGI-style apps read it as its "-" twin (X-Auth_User as
            // X-Auth-User), so none goes on, as with nginx's underscores_in_headers off.
            let dropped = name.contains('_')
                || HOP_BY_HOP.iter().any(|n| is(n))
                || listed.iter().any(|n| is(n))
                || is("Expect")
                || is("X-Request-Id")
                || (is("Authorization") && self.strip_authorization)
                || self.identity.iter().any(|n| is(n))
                || is("X-Forwarded-For")
                || ((is("X-Forwarded-Proto")
                    || is("X-Forwarded-Host")
                    || is("Forwarded")
                    || is("X-Real-IP"))
                    && !trusted);
            if !dropped {
                header(name, h.value.as_str());
            }
        }
        if host.is_none() {
            header("Host", "localhost");
        }
        let peer_text = peer.map(|p| p.to_string()).unwrap_or_default();
        let earlier: Vec<&str> = if trusted {
            headers.values("X-Forwarded-For").collect()
        } else {
            Vec::new()
        };
        let forwarded_for = if earlier.is_empty() {
            peer_text
        } else {
            format!("{}, {peer_text}", earlier.join(", "))
        };
        header("X-Forwarded-For", &forwarded_for);
        if !(trusted && headers.values("X-Forwarded-Proto").next().is_some()) {
            header("X-Forwarded-Proto", "http");
        }
        if !(trusted && headers.values("X-Forwarded-Host").next().is_some())
            && let Some(host) = host
        {
            header("X-Forwarded-Host", host);
        }
        for (name, value) in identity {
            header(name, value);
        }
        if let Some(id) = id {
            header("X-Request-Id", id.text().as_str());
        }
        match request.body_length() {
            _ if chunked(headers) => header("Transfer-Encoding", "chunked"),
            Some(n) if n > 0 || request.method().as_str() != "GET" => {
                header("Content-Length", itoa::Buffer::new().format(n))
            }
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Why a forwarding failed.
enum Failure {
    /// Before anything was sent to the client: it gets the status; the reason goes to the log.
    Before(&'static str, u16),
    /// After the response head went to the client.
    During(&'static str),
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
        }
    }
}

/// Records that a request could not even wait for the upstream (503).
pub(crate) fn busy_event(
    request: &tiny_http::Request,
    id: Option<RequestId>,
    path: &str,
    trusted: &Trusted,
) {
    let who = Who::of(request, trusted);
    logger::record(&Event::Request(who.event(id, path, "upstream_busy", 503)));
}

fn chunked(headers: &[tiny_http::Header]) -> bool {
    headers.values("Transfer-Encoding").next().is_some()
}

/// The header names `Connection` lists (hop-by-hop too).
fn connection_listed(headers: &[tiny_http::Header]) -> Vec<&str> {
    headers
        .values("Connection")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect()
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

/// Copies the request's body to the upstream with the framing its head announced.
fn send_body(request: &mut tiny_http::Request, upstream: &mut &TcpStream) -> io::Result<()> {
    let chunked = chunked(request.headers());
    let reader = request.as_reader();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if chunked {
            if n == 0 {
                return upstream.write_all(b"0\r\n\r\n");
            }
            write!(upstream, "{n:x}\r\n")?;
            upstream.write_all(&buf[..n])?;
            upstream.write_all(b"\r\n")?;
        } else if n == 0 {
            return Ok(());
        } else {
            upstream.write_all(&buf[..n])?;
        }
    }
}

/// An upstream response head.
struct ResponseHead {
    status: u16,
    reason: String,
    headers: Vec<(String, Vec<u8>)>,
    keep_alive: bool,
}

/// How the upstream's body is framed.
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Unknown,
}

/// Reads the response head, past interim (1xx) ones.
fn read_head(reader: &mut BufReader<TcpStream>) -> Result<ResponseHead, Failure> {
    let bad = || Failure::Before("upstream_error", 502);
    loop {
        let mut head = Vec::with_capacity(1024);
        loop {
            let before = head.len();
            let n = reader
                .read_until(b'\n', &mut head)
                .map_err(|e| Failure::Before(timeout_or(&e, "upstream_error"), status_of(&e)))?;
            if n == 0 || head.len() > MAX_HEAD {
                return Err(bad());
            }
            let line = &head[before..];
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(bad()),
        }
        let status = parsed.code.ok_or_else(bad)?;
        if status == 101 {
            return Err(bad());
        }
        if (100..200).contains(&status) {
            continue;
        }
        let http_1_1 = parsed.version == Some(1);
        let mut keep_alive = http_1_1;
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("Connection") {
                for token in String::from_utf8_lossy(h.value).split(',') {
                    match token.trim().to_ascii_lowercase().as_str() {
                        "close" => keep_alive = false,
                        "keep-alive" if !http_1_1 => keep_alive = true,
                        _ => {}
                    }
                }
            }
        }
        return Ok(ResponseHead {
            status,
            reason: parsed.reason.unwrap_or("").to_owned(),
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_owned()))
                .collect(),
            keep_alive,
        });
    }
}

impl ResponseHead {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The body's framing (RFC 9112 §6.3); an ambiguous one is an upstream error.
    fn framing(&self, head_request: bool) -> Result<Framing, Failure> {
        let bad = || Failure::Before("upstream_error", 502);
        if head_request || matches!(self.status, 204 | 304) {
            return Ok(Framing::None);
        }
        let encodings: Vec<&[u8]> = self.values("Transfer-Encoding").collect();
        if !encodings.is_empty() {
            let last = encodings.last().expect("not empty");
            let last = String::from_utf8_lossy(last);
            let chunked = last
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            return Ok(if chunked {
                Framing::Chunked
            } else {
                Framing::Unknown
            });
        }
        let mut lengths = self.values("Content-Length");
        match (lengths.next(), lengths.next()) {
            (None, _) => Ok(Framing::Unknown),
            (Some(one), None) => std::str::from_utf8(one)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .map(Framing::Length)
                .ok_or_else(bad),
            (Some(_), Some(_)) => Err(bad()),
        }
    }

    /// The head for the client: the upstream's status and end-to-end headers, the request
    /// id, and framing of jwtguard's own.
    fn write_head(
        &self,
        out: &mut Vec<u8>,
        version: &tiny_http::HTTPVersion,
        id: Option<RequestId>,
        framing: &Framing,
        closes: bool,
        client_1_0: bool,
    ) {
        let listed: Vec<String> = self
            .values("Connection")
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let _ = write!(out, "HTTP/{}.{} {} ", version.0, version.1, self.status);
        let reason = if self
            .reason
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            self.reason.as_str()
        } else {
            ""
        };
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            let is = |other: &str| name.eq_ignore_ascii_case(other);
            if HOP_BY_HOP.iter().any(|n| is(n))
                || listed.iter().any(|n| is(n))
                || is("X-Request-Id")
                || !value
                    .iter()
                    .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(id) = id {
            out.extend_from_slice(b"X-Request-Id: ");
            out.extend_from_slice(id.text().as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match framing {
            Framing::Length(n) => {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
            Framing::None => {
                // A HEAD answer keeps the length its GET would have.
                if let Some(n) = self.values("Content-Length").next() {
                    out.extend_from_slice(b"Content-Length: ");
                    out.extend_from_slice(n);
                    out.extend_from_slice(b"\r\n");
                }
            }
            Framing::Chunked | Framing::Unknown if !client_1_0 => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
            }
            Framing::Chunked | Framing::Unknown => {}
        }
        if closes {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Copies the upstream's body to the client; returns whether the upstream connection can
/// carry another request.
fn copy_body(
    reader: &mut BufReader<TcpStream>,
    client: &mut ClientWriter,
    framing: &Framing,
    client_1_0: bool,
) -> Result<bool, Failure> {
    let upstream_err = |e: io::Error| Failure::During(timeout_or(&e, "upstream_error"));
    let mut buf = vec![0u8; 16 * 1024];
    match framing {
        Framing::None => Ok(true),
        Framing::Length(n) => {
            let mut left = *n;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let got = reader.read(&mut buf[..want]).map_err(upstream_err)?;
                if got == 0 {
                    return Err(Failure::During("upstream_error"));
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
            let mut line = Vec::new();
            loop {
                line.clear();
                reader.read_until(b'\n', &mut line).map_err(upstream_err)?;
                let size = std::str::from_utf8(&line)
                    .ok()
                    .map(|l| l.trim_end().split(';').next().unwrap_or("").trim())
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    .ok_or(Failure::During("upstream_error"))?;
                if size == 0 {
                    // Trailers, to the blank line: not passed on.
                    loop {
                        line.clear();
                        let n = reader.read_until(b'\n', &mut line).map_err(upstream_err)?;
                        if n == 0 || line == b"\r\n" || line == b"\n" {
                            break;
                        }
                    }
                    client
                        .end_chunks(client_1_0)
                        .map_err(|_| Failure::ClientGone)?;
                    return Ok(true);
                }
                let mut left = size;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let got = reader.read(&mut buf[..want]).map_err(upstream_err)?;
                    if got == 0 {
                        return Err(Failure::During("upstream_error"));
                    }
                    client
                        .chunk(&buf[..got], client_1_0)
                        .map_err(|_| Failure::ClientGone)?;
                    left -= got as u64;
                }
                line.clear();
                reader.read_until(b'\n', &mut line).map_err(upstream_err)?;
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
