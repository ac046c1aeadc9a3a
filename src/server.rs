//! The tiny_http side: decide, record, respond.

use std::cell::RefCell;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use tiny_http::{Header, Request, Response, Server};

use crate::audit::{self, Fingerprint, LogFormat, RequestEvent, RequestId};
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
        let status = self.status();
        let body = match self.user() {
            Some(user) => {
                let mut body = Vec::with_capacity(32 + user.len());
                body.extend_from_slice(b"{\"status\":\"ok\",\"user\":");
                serde_json::to_writer(&mut body, user).expect("writing to a Vec cannot fail");
                body.push(b'}');
                body
            }
            None => status_body(status).into(),
        };
        let mut id = String::with_capacity(28);
        self.request_id.push(&mut id);
        let id = Header::from_bytes(&b"X-Request-Id"[..], id.into_bytes()).expect("ASCII");
        let mut response = json(status, body).with_header(id);
        if let (Err(denied), true) = (&self.result, self.recorded) {
            response.add_header(header("WWW-Authenticate", denied.reason.challenge()));
        }
        if status == 503 {
            response.add_header(header("Retry-After", "5"));
        }
        response
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

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name, value).expect("jwtguard's own headers are ASCII")
}

fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
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

/// Answers one request the way the `jwtguard` binary does: `/healthz`, protected
/// paths through the guard, 404 for anything else.
pub fn handle(guard: &Guard, request: Request) {
    let path = path_of(request.url());
    let response = if path == "/healthz" {
        json(200, status_body(200))
    } else if guard.is_protected(path) {
        guard.check(&request).response()
    } else {
        json(404, status_body(404))
    };
    respond(request, response);
}

/// The largest body tiny_http reads before it hands a request over; a larger unread body
/// is drained when the request is dropped.
const TINY_HTTP_BUFFERED_BODY: usize = 1024;

/// The largest unread body left for tiny_http to drain. Its drain allocates a buffer of
/// the whole remaining length at once, and a failed allocation aborts the process.
pub const MAX_DRAINED_BODY: usize = 16 * 1024 * 1024;

/// Sends `response` to `request`, as tiny_http's `Request::respond` does but without its
/// two traps; use it in your own loop too. A client that hung up is ignored.
///
/// tiny_http drains an unread body of more than 1 KiB when the request is dropped, and
/// reads the socket with no timeout: on the serving thread, one client that announces a
/// body and never sends it would stop the server. Such requests are answered, and
/// dropped, on a thread of their own. A request announcing more than
/// [`MAX_DRAINED_BODY`] is never dropped, so never drained: it is left unanswered and
/// its connection abandoned, which costs a thread and a socket, not the process.
pub fn respond<R: std::io::Read + Send + 'static>(request: Request, response: Response<R>) {
    match request.body_length() {
        Some(n) if n > MAX_DRAINED_BODY => {
            log::warn!(
                "a request announced a {n}-byte body: left unanswered, its connection abandoned (tiny_http would abort draining it)"
            );
            std::mem::forget(request);
        }
        Some(n) if n > TINY_HTTP_BUFFERED_BODY => {
            let spawned = std::thread::Builder::new()
                .name("jwtguard-drain".into())
                .spawn(move || {
                    let _ = request.respond(response);
                });
            if let Err(err) = spawned {
                log::error!("cannot start a thread to answer a request with a body: {err}");
            }
        }
        _ => {
            let _ = request.respond(response);
        }
    }
}

/// Serves requests until `stop` is set (and [`Server::unblock`] called, so that the
/// wait ends). The request in hand when `stop` is set is answered first. Returns how
/// many requests were answered.
pub fn serve(server: &Server, guard: &Guard, stop: &AtomicBool) -> Result<u64, Error> {
    let mut answered = 0;
    while !stop.load(Ordering::SeqCst) {
        match server.recv() {
            Ok(request) => {
                handle(guard, request);
                answered += 1;
            }
            // `unblock` wakes `recv` with an error; so does a dead accept thread.
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(err) => return Err(Error::Accept(err)),
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
            .with_header(header("Authorization", &format!("Bearer {token}")))
            .into();
        let decision = g.check(&request);
        assert_eq!(decision.result, Ok("alice".into()));
        assert!(!decision.recorded);
        assert_eq!((decision.status(), decision.user()), (503, None));
    }

    #[test]
    fn decisions_map_to_statuses() {
        let decision = |result, recorded| Decision {
            request_id: RequestId { prefix: 1, n: 1 },
            result,
            recorded,
        };
        let ok = decision(Ok("alice".into()), true);
        assert_eq!((ok.status(), ok.user()), (200, Some("alice")));
        let unrecorded = decision(Ok("alice".into()), false);
        assert_eq!((unrecorded.status(), unrecorded.user()), (503, None));
        let denied = decision(Err(crate::Reason::Expired.into()), true);
        assert_eq!((denied.status(), denied.user()), (401, None));
        let bad = decision(Err(crate::Reason::InvalidRequest.into()), true);
        assert_eq!(bad.status(), 400);
    }
}
