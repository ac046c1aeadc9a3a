//! The tiny_http side: decide, record, respond.

use std::cell::RefCell;
use std::io::{Cursor, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use tiny_http::{HTTPVersion, Header, Method, Request, Response, Server, StatusCode};

use crate::audit::{self, Fingerprint, Hold, LogFormat, LogWriter, RequestEvent, RequestId};
use crate::auth::{self, Denied, Verifier};
use crate::{Config, Error};

/// A response with an in-memory body, as the guard builds them.
pub type Reply = Response<Cursor<Vec<u8>>>;

/// Checks requests to protected paths and records one security event per decision.
///
/// Build it once from a [`Config`]; it is `Sync` and cheap to call per request.
#[derive(Debug)]
pub struct Guard {
    verifier: Verifier,
    /// Protected prefixes without their trailing `/`; an empty one protects everything.
    protect: Vec<String>,
    max_token_bytes: usize,
    format: LogFormat,
    /// Random, so that request ids differ between runs.
    id_prefix: u32,
    next_id: AtomicU64,
}

/// What the guard decided about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `http.request.id` of the event; sent back as `X-Request-Id`.
    pub request_id: RequestId,
    /// The verified user, or why not.
    pub result: Result<String, Denied>,
    /// Whether the security event reached the log. When it did not, the request must
    /// not be served: [`Decision::status`] is 503.
    pub recorded: bool,
}

impl Decision {
    /// The user, when the request may be served: the token verified and the event was
    /// recorded.
    pub fn user(&self) -> Option<&str> {
        match &self.result {
            Ok(user) if self.recorded => Some(user),
            _ => None,
        }
    }

    /// 200, the reason's 400 or 401, or 503 when the event could not be recorded.
    pub fn status(&self) -> u16 {
        match (&self.result, self.recorded) {
            (_, false) => 503,
            (Ok(_), true) => 200,
            (Err(denied), true) => denied.reason.status(),
        }
    }

    /// The response jwtguard's own server sends: a small JSON body that names the user
    /// on success and says nothing of the reason otherwise (that goes to the log), with
    /// the `WWW-Authenticate` challenge on 400 and 401.
    pub fn response(&self) -> Reply {
        reply(self)
    }

    /// Sends [`Decision::response`] to `request`, its head and body in one write
    /// (tiny_http's `Request::respond` formats each header and the date anew), with
    /// [`respond`]'s protections.
    pub fn answer(&self, request: Request) {
        send(request, self);
    }
}

/// A response jwtguard writes itself: a status, headers and a small JSON body.
trait Answer {
    fn status(&self) -> u16;
    /// Calls `f` with each header beyond `Content-Type`, `Content-Length` and `Date`.
    fn each_header(&self, f: &mut dyn FnMut(&str, &[u8]));
    fn push_body(&self, out: &mut Vec<u8>);
}

impl Answer for Decision {
    fn status(&self) -> u16 {
        Decision::status(self)
    }

    fn each_header(&self, f: &mut dyn FnMut(&str, &[u8])) {
        f("X-Request-Id", self.request_id.text().as_str().as_bytes());
        if let (Err(denied), true) = (&self.result, self.recorded) {
            f("WWW-Authenticate", denied.reason.challenge().as_bytes());
        }
        if self.status() == 503 {
            f("Retry-After", b"5");
        }
    }

    fn push_body(&self, out: &mut Vec<u8>) {
        match self.user() {
            Some(user) => {
                out.extend_from_slice(b"{\"status\":\"ok\",\"user\":");
                serde_json::to_writer(&mut *out, user).expect("writing to a Vec cannot fail");
                out.push(b'}');
            }
            None => out.extend_from_slice(status_body(self.status()).as_bytes()),
        }
    }
}

/// `/healthz` (200) and paths jwtguard does not serve (404).
struct Plain(u16);

impl Answer for Plain {
    fn status(&self) -> u16 {
        self.0
    }

    fn each_header(&self, _: &mut dyn FnMut(&str, &[u8])) {}

    fn push_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(status_body(self.0).as_bytes());
    }
}

fn status_body(status: u16) -> &'static str {
    match status {
        200 => "{\"status\":\"ok\"}",
        400 => "{\"status\":\"bad_request\"}",
        401 => "{\"status\":\"unauthorized\"}",
        404 => "{\"status\":\"not_found\"}",
        _ => "{\"status\":\"unavailable\"}",
    }
}

/// `answer` as a tiny_http response.
fn reply(answer: &impl Answer) -> Reply {
    let mut body = Vec::new();
    answer.push_body(&mut body);
    let mut response = Response::from_data(body)
        .with_status_code(answer.status())
        .with_header(header("Content-Type", b"application/json"));
    answer.each_header(&mut |name, value| response.add_header(header(name, value)));
    response
}

fn header(name: &str, value: &[u8]) -> Header {
    Header::from_bytes(name, value).expect("jwtguard's own headers are ASCII")
}

/// Writes `answer` as an HTTP/1.x response into `out`, its body by way of `body`: what
/// tiny_http's `Response::raw_print` sends for [`reply`], without its `Server` header.
fn wire(
    answer: &impl Answer,
    version: &HTTPVersion,
    head_only: bool,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) {
    let mut digits = itoa::Buffer::new();
    let status = answer.status();
    body.clear();
    answer.push_body(body);
    out.extend_from_slice(b"HTTP/");
    out.extend_from_slice(digits.format(version.0).as_bytes());
    out.push(b'.');
    out.extend_from_slice(digits.format(version.1).as_bytes());
    out.push(b' ');
    out.extend_from_slice(digits.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(StatusCode(status).default_reason_phrase().as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    push_http_date(out);
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    out.extend_from_slice(digits.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    answer.each_header(&mut |name, value| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    });
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// The current time as an HTTP date (RFC 9110 IMF-fixdate), formatted once a second.
fn push_http_date(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *text = httpdate::fmt_http_date(now);
            *cached = secs;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Sends `answer` to `request`: in one write from a reused buffer when the request can
/// be dropped here, else through [`respond`].
fn send(request: Request, answer: &impl Answer) {
    if unread_body(&request) > 0 {
        return respond(request, reply(answer));
    }
    thread_local! {
        static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    BUFFERS.with_borrow_mut(|(out, body)| {
        out.clear();
        let head_only = *request.method() == Method::Head;
        wire(answer, request.http_version(), head_only, out, body);
        let mut writer = request.into_writer();
        // A client that hung up is no concern here.
        let _ = writer.write_all(out).and_then(|()| writer.flush());
    });
}

impl Guard {
    /// Validates `config` and builds the guard.
    pub fn new(config: &Config) -> Result<Guard, Error> {
        config.validate()?;
        let secret = config.secret.as_ref().ok_or(Error::NoSecret)?;
        let id_prefix = getrandom::u32().expect("the operating system has no random source");
        Ok(Guard {
            verifier: Verifier::new(secret.expose(), &config.policy()),
            protect: config
                .protect
                .iter()
                .map(|p| p.trim_end_matches('/').to_owned())
                .collect(),
            max_token_bytes: config.max_token_bytes,
            format: config.log_format,
            id_prefix,
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether `path` (without the query string) needs a token.
    pub fn is_protected(&self, path: &str) -> bool {
        self.protect.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Decides on `request` and writes its security event. Call it only for protected
    /// paths ([`Guard::is_protected`]); it does not respond.
    pub fn check(&self, request: &Request) -> Decision {
        let authorization = request
            .headers()
            .iter()
            .filter(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str());
        let token = auth::bearer_token(authorization, self.max_token_bytes);
        let result = token
            .map_err(Denied::from)
            .and_then(|token| self.verifier.verify(token));
        let request_id = RequestId {
            prefix: self.id_prefix,
            n: self.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let (reason, user, status) = auth::outcome(&result);
        let event = RequestEvent {
            success: result.is_ok(),
            reason,
            source_ip: request.remote_addr().map(|a| a.ip().to_canonical()),
            method: request.method().as_str(),
            path: path_of(request.url()),
            status,
            user_agent: request
                .headers()
                .iter()
                .find(|h| h.field.equiv("User-Agent"))
                .map(|h| h.value.as_str()),
            request_id,
            user,
            fingerprint: token.ok().map(Fingerprint::of),
        };
        let recorded = self.record(&event);
        Decision {
            request_id,
            result,
            recorded,
        }
    }

    /// Writes `event` through the `log` facade; `false` if the sink reported a failure,
    /// or if no logger takes `security` events at this level (a decision that cannot be
    /// logged is not acted on).
    fn record(&self, event: &RequestEvent) -> bool {
        if !log::log_enabled!(target: audit::TARGET, event.level()) {
            return false;
        }
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            event.encode(self.format, SystemTime::now(), line);
            let before = audit::sink_failures();
            log::log!(target: audit::TARGET, event.level(), "{line}");
            audit::sink_failures() == before
        })
    }

    /// Writes a service event (`startup`, `shutdown`) at `level`, target `security`.
    pub fn record_service(&self, level: log::Level, action: &str, message: &str) {
        let mut line = String::new();
        audit::encode_message(
            self.format,
            SystemTime::now(),
            level,
            "jwtguard",
            Some(action),
            message,
            &mut line,
        );
        log::log!(target: audit::TARGET, level, "{line}");
    }
}

/// The path of a request target, without the query string or fragment.
pub fn path_of(url: &str) -> &str {
    match url.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => &url[..end],
        None => url,
    }
}

/// Where a request goes in the `jwtguard` binary.
enum Route {
    /// `/healthz`, 200, open to all.
    Health,
    /// A protected path: the guard's decision, its event written.
    Guarded(Decision),
    /// Anything else: 404.
    NotFound,
}

fn route(guard: &Guard, request: &Request) -> Route {
    let path = path_of(request.url());
    if path == "/healthz" {
        Route::Health
    } else if guard.is_protected(path) {
        Route::Guarded(guard.check(request))
    } else {
        Route::NotFound
    }
}

impl Route {
    fn answer(self, request: Request) {
        match self {
            Route::Health => send(request, &Plain(200)),
            Route::Guarded(decision) => decision.answer(request),
            Route::NotFound => send(request, &Plain(404)),
        }
    }
}

/// Answers one request the way the `jwtguard` binary does: `/healthz`, protected
/// paths through the guard, 404 for anything else.
pub fn handle(guard: &Guard, request: Request) {
    route(guard, &request).answer(request);
}

/// The largest body tiny_http reads before it hands a request over; a larger unread body
/// is drained when the request is dropped.
const TINY_HTTP_BUFFERED_BODY: usize = 1024;

/// The largest unread body left for tiny_http to drain. Its drain allocates a buffer of
/// the whole remaining length at once, and a failed allocation aborts the process.
pub const MAX_DRAINED_BODY: usize = 16 * 1024 * 1024;

/// The body tiny_http has not read yet and reads when the request is dropped. It reads
/// a body of up to 1 KiB before it hands the request over, unless the client sent
/// `Expect: 100-continue` (then it waits to be asked for it).
fn unread_body(request: &Request) -> usize {
    let expects_continue = || request.headers().iter().any(|h| h.field.equiv("Expect"));
    match request.body_length() {
        Some(n) if n > TINY_HTTP_BUFFERED_BODY || (n > 0 && expects_continue()) => n,
        _ => 0,
    }
}

/// Sends `response` to `request`, as tiny_http's `Request::respond` does but without its
/// two traps; use it in your own loop too. A client that hung up is ignored.
///
/// tiny_http drains an unread body (more than 1 KiB, or any body announced with
/// `Expect: 100-continue`) when the request is dropped, and reads the socket with no
/// timeout: on the serving thread, one client that announces a body and never sends it
/// would stop the server. Such requests are answered, and dropped, on a thread of their
/// own. A request announcing more than [`MAX_DRAINED_BODY`] is never dropped, so never
/// drained: it is left unanswered and its connection abandoned, which costs a thread and
/// a socket, not the process.
pub fn respond<R: std::io::Read + Send + 'static>(request: Request, response: Response<R>) {
    match unread_body(&request) {
        0 => {
            let _ = request.respond(response);
        }
        n if n > MAX_DRAINED_BODY => {
            log::warn!(
                "a request announced a {n}-byte body: left unanswered, its connection abandoned (tiny_http would abort draining it)"
            );
            std::mem::forget(request);
        }
        _ => {
            let spawned = std::thread::Builder::new()
                .name("jwtguard-drain".into())
                .spawn(move || {
                    let _ = request.respond(response);
                });
            if let Err(err) = spawned {
                log::error!("cannot start a thread to answer a request with a body: {err}");
            }
        }
    }
}

/// The most requests [`serve`] decides before it writes their events and answers them.
const MAX_BATCH: usize = 64;

/// Serves requests until `stop` is set (and [`Server::unblock`] called, so that the
/// wait ends). Returns how many requests were answered.
///
/// With `log`, the sink under the logger, the requests already waiting (up to 64) are
/// decided together: their events are held, written in one `write(2)`, and only then are
/// the requests answered, each with 503 if its event did not reach the sink (a group
/// commit). No request waits for others to arrive: a batch is what had queued up. Without
/// `log`, each event is written as it is logged. Either way every response leaves after
/// its event is in the kernel.
pub fn serve(
    server: &Server,
    guard: &Guard,
    log: Option<&LogWriter>,
    stop: &AtomicBool,
) -> Result<u64, Error> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut answered = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut next = match server.recv() {
            Ok(request) => Some(request),
            // `unblock` wakes `recv` with an error; so does a dead accept thread.
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(err) => return Err(Error::Accept(err)),
        };
        let hold = log.map(LogWriter::hold);
        let mut accept_failed = None;
        while let Some(request) = next {
            let route = route(guard, &request);
            // Where this request's event ends in the held log.
            let end = hold.as_ref().map_or(0, Hold::held);
            batch.push((request, route, end));
            next = None;
            if batch.len() < MAX_BATCH {
                match server.try_recv() {
                    Ok(request) => next = request,
                    // The accept thread died: answer this batch, then stop.
                    Err(err) => accept_failed = Some(err),
                }
            }
        }
        let written = hold.map_or(0, Hold::release);
        for (request, mut route, end) in batch.drain(..) {
            if let Route::Guarded(decision) = &mut route
                && end > written
            {
                decision.recorded = false;
            }
            route.answer(request);
            answered += 1;
        }
        if let Some(err) = accept_failed {
            return Err(Error::Accept(err));
        }
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Secret, SecretSource};

    fn guard(protect: &[&str]) -> Guard {
        Guard::new(&Config {
            protect: protect.iter().map(|p| p.to_string()).collect(),
            secret: Some(Secret::new([1; 32], SecretSource::Env)),
            ..Config::default()
        })
        .unwrap()
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let g = guard(&["/api/", "/admin"]);
        for path in [
            "/api",
            "/api/",
            "/api/protected",
            "/api/a/b",
            "/admin",
            "/admin/x",
        ] {
            assert!(g.is_protected(path), "{path}");
        }
        for path in [
            "/",
            "/apix",
            "/apix/y",
            "/administrator",
            "/healthz",
            "/x/api/",
        ] {
            assert!(!g.is_protected(path), "{path}");
        }
        let all = guard(&["/"]);
        assert!(all.is_protected("/") && all.is_protected("/anything"));
    }

    #[test]
    fn query_and_fragment_are_not_part_of_the_path() {
        assert_eq!(path_of("/api/x?token=abc"), "/api/x");
        assert_eq!(path_of("/api/x#frag"), "/api/x");
        assert_eq!(path_of("/api/x"), "/api/x");
    }

    #[test]
    fn without_a_logger_for_security_events_nothing_is_served() {
        // No logger is installed in unit tests: the event cannot be written anywhere.
        let g = guard(&["/api/"]);
        let token = crate::mint(
            &Secret::new([1; 32], SecretSource::Env),
            "alice",
            60,
            None,
            None,
            serde_json::Map::new(),
        );
        let request: Request = tiny_http::TestRequest::new()
            .with_path("/api/x")
            .with_header(header(
                "Authorization",
                format!("Bearer {token}").as_bytes(),
            ))
            .into();
        let decision = g.check(&request);
        assert_eq!(decision.result, Ok("alice".into()));
        assert!(!decision.recorded);
        assert_eq!((decision.status(), decision.user()), (503, None));
    }

    fn decision(result: Result<String, Denied>, recorded: bool) -> Decision {
        Decision {
            request_id: RequestId { prefix: 0xab, n: 7 },
            result,
            recorded,
        }
    }

    #[test]
    fn decisions_map_to_statuses() {
        let ok = decision(Ok("alice".into()), true);
        assert_eq!((ok.status(), ok.user()), (200, Some("alice")));
        let unrecorded = decision(Ok("alice".into()), false);
        assert_eq!((unrecorded.status(), unrecorded.user()), (503, None));
        let denied = decision(Err(crate::Reason::Expired.into()), true);
        assert_eq!((denied.status(), denied.user()), (401, None));
        let bad = decision(Err(crate::Reason::InvalidRequest.into()), true);
        assert_eq!(bad.status(), 400);
    }

    /// The head lines of a response, sorted, without `Server` and `Date`, and the body.
    fn lines_and_body(bytes: &[u8]) -> (String, Vec<String>, String) {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_owned();
        let mut headers: Vec<String> = lines
            .filter(|l| !l.starts_with("Server: ") && !l.starts_with("Date: "))
            .map(str::to_owned)
            .collect();
        headers.sort();
        (status, headers, body.to_owned())
    }

    /// `answer` from [`wire`] and from tiny_http's `raw_print` of [`reply`], as
    /// (status line, sorted header lines without `Server` and `Date`, body).
    fn both_ways(answer: &impl Answer) -> Vec<[(String, Vec<String>, String); 2]> {
        let mut seen = Vec::new();
        for version in [HTTPVersion(1, 0), HTTPVersion(1, 1)] {
            for head_only in [false, true] {
                let mut ours = Vec::new();
                wire(answer, &version, head_only, &mut ours, &mut Vec::new());
                let mut theirs = Vec::new();
                reply(answer)
                    .raw_print(&mut theirs, version.clone(), &[], head_only, None)
                    .unwrap();
                seen.push([lines_and_body(&ours), lines_and_body(&theirs)]);
            }
        }
        seen
    }

    #[test]
    fn one_write_responses_are_what_tiny_http_would_send() {
        let decisions = [
            decision(Ok("al\"ice\u{e9}".into()), true),
            decision(Err(crate::Reason::BadSignature.into()), true),
            decision(Err(crate::Reason::InvalidRequest.into()), true),
            decision(Ok("alice".into()), false),
        ];
        let mut compared: Vec<_> = decisions.iter().flat_map(both_ways).collect();
        compared.extend(both_ways(&Plain(200)));
        compared.extend(both_ways(&Plain(404)));
        assert_eq!(compared.len(), 24);
        for [ours, theirs] in &compared {
            assert_eq!(ours, theirs);
        }
        // And the Date header is an HTTP date.
        let mut out = Vec::new();
        wire(
            &Plain(200),
            &HTTPVersion(1, 1),
            false,
            &mut out,
            &mut Vec::new(),
        );
        let text = String::from_utf8(out).unwrap();
        let date = text.lines().find_map(|l| l.strip_prefix("Date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }
}
