//! The guard: from the plain parts of a request to a decision, with its security event
//! recorded. No HTTP library here: [`crate::http`] adapts tiny_http's requests.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::event::{Event, Fingerprint, RequestEvent, RequestId};
use crate::logger::{self, Recorded};
use crate::token::{Denied, Verifier};
use crate::{Config, Error, Reason};

/// A request's headers, as the guard reads them.
///
/// Implemented for slices and arrays of `(name, value)` pairs, and for tiny_http's headers.
pub trait Headers {
    /// The values of every header called `name` (ASCII case-insensitive), in order.
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's;
}

impl<'a> Headers for [(&'a str, &'a str)] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<'a, const N: usize> Headers for [(&'a str, &'a str); N] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.as_slice().values(name)
    }
}

/// The parts of a request the guard decides on.
///
/// ```
/// use jwtguard::Request;
/// let headers = [("Authorization", "Bearer abc.def.ghi"), ("User-Agent", "curl/8")];
/// let request = Request::new("GET", "/api/orders?page=2", &headers)
///     .with_peer("127.0.0.1".parse().unwrap());
/// ```
#[derive(Debug)]
pub struct Request<'a, H: ?Sized> {
    method: &'a str,
    target: &'a str,
    headers: &'a H,
    peer: Option<IpAddr>,
}

impl<H: ?Sized> Clone for Request<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: ?Sized> Copy for Request<'_, H> {}

impl<'a, H: Headers + ?Sized> Request<'a, H> {
    /// A request: its method, its target as received (path and query) and its headers.
    pub fn new(method: &'a str, target: &'a str, headers: &'a H) -> Self {
        Request {
            method,
            target,
            headers,
            peer: None,
        }
    }

    /// The address of the connection's peer (`source.ip` in the log).
    pub fn with_peer(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer.to_canonical());
        self
    }

    /// The path: the target without its query or fragment.
    pub(crate) fn path(&self) -> &'a str {
        path_of(self.target)
    }
}

/// The path of a request target, without the query string or fragment.
pub(crate) fn path_of(target: &str) -> &str {
    match target.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => &target[..end],
        None => target,
    }
}

/// What the guard decided about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// The path is not protected: serve the request. No event was written.
    Public,
    /// The token verified and the event is in the log: serve the request.
    Allowed(Allowed),
    /// Refused, or not to be served because its event could not be written: send
    /// [`Refused`]'s answer (with tiny_http, [`crate::http::answer`]).
    Refused(Refused),
}

/// A request to a protected path whose token verified and whose event is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    request_id: RequestId,
    user: String,
}

impl Allowed {
    /// The user: the token's `sub`, or its `user_id`.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The id of its event (`http.request.id`); send it back as `X-Request-Id`.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }
}

/// A request to a protected path that must not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    request_id: RequestId,
    /// `None` when the event could not be written (the answer is then 503).
    reason: Option<Reason>,
}

impl Refused {
    /// Why, when the event is in the log; `None` when the request is refused because its
    /// event could not be written.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// The status to answer: the reason's, or 503 when the event could not be written.
    pub fn status(&self) -> u16 {
        self.reason.map_or(503, Reason::status)
    }

    /// The `WWW-Authenticate` value to send, if any.
    pub fn challenge(&self) -> Option<&'static str> {
        self.reason.and_then(Reason::challenge)
    }

    /// The id of its event (`http.request.id`); send it back as `X-Request-Id`.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }
}

#[cfg(test)]
impl Allowed {
    pub(crate) fn for_test(request_id: RequestId, user: &str) -> Allowed {
        Allowed {
            request_id,
            user: user.into(),
        }
    }
}

#[cfg(test)]
impl Refused {
    pub(crate) fn for_test(request_id: RequestId, reason: Option<Reason>) -> Refused {
        Refused { request_id, reason }
    }
}

/// A decision whose event may still be waiting in the serving thread's batch.
#[derive(Debug)]
pub(crate) struct Pending {
    decision: Decision,
    recorded: Recorded,
}

impl Pending {
    /// The decision, once `written` bytes of the batch are in the log: a request whose
    /// event did not make it is refused with 503.
    pub(crate) fn settle(self, written: usize) -> Decision {
        let recorded = match self.recorded {
            Recorded::Written => true,
            Recorded::Held(end) => end <= written,
            Recorded::Lost => false,
        };
        match self.decision {
            Decision::Allowed(allowed) if !recorded => Decision::Refused(Refused {
                request_id: allowed.request_id,
                reason: None,
            }),
            Decision::Refused(refused) if !recorded => Decision::Refused(Refused {
                reason: None,
                ..refused
            }),
            decision => decision,
        }
    }
}

/// Decides on requests to protected paths and records one security event per decision.
///
/// Build it once from a [`Config`]; it is `Sync` and cheap to call per request.
pub struct Guard {
    verifier: Verifier,
    /// Protected prefixes without their trailing `/`; an empty one protects everything.
    protect: Vec<String>,
    max_token_bytes: usize,
    /// Random, so that request ids differ between processes.
    id_prefix: u32,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("protect", &self.protect)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Validates `config` and builds the guard.
    ///
    /// # Errors
    ///
    /// The first problem [`Config::validate`] finds, or [`Error::Random`] when the
    /// operating system gives no random bytes (for the request ids).
    pub fn new(config: &Config) -> Result<Guard, Error> {
        config.validate()?;
        let secret = config.secret.as_ref().ok_or(Error::NoSecret)?;
        let id_prefix = getrandom::u32().map_err(|e| Error::Random(e.to_string()))?;
        Ok(Guard {
            verifier: Verifier::new(secret.expose(), config.policy()),
            protect: config
                .protect
                .iter()
                .map(|p| p.trim_end_matches('/').to_owned())
                .collect(),
            max_token_bytes: config.max_token_bytes,
            id_prefix,
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether `path` (without the query string) needs a token: it is a protected prefix,
    /// or starts with one followed by `/`.
    pub(crate) fn is_protected(&self, path: &str) -> bool {
        self.protect.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Decides on `request`: [`Decision::Public`] for a path that is not protected;
    /// otherwise verifies its bearer token and records the security event, and returns
    /// the decision only the log can back (503 when the event could not be written).
    pub fn check<H: Headers + ?Sized>(&self, request: &Request<'_, H>) -> Decision {
        self.decide(request).settle(0)
    }

    /// [`Guard::check`], with the event possibly held in this thread's batch.
    pub(crate) fn decide<H: Headers + ?Sized>(&self, request: &Request<'_, H>) -> Pending {
        let path = request.path();
        if !self.is_protected(path) {
            return Pending {
                decision: Decision::Public,
                recorded: Recorded::Written,
            };
        }
        let token = bearer_token(
            request.headers.values("Authorization"),
            self.max_token_bytes,
        );
        let result = token.map_err(Denied::from).and_then(|token| {
            self.verifier
                .verify(token, crate::time::unix_seconds(SystemTime::now()))
        });
        self.record(request, result, token.ok())
    }

    /// Refuses `request`, whatever its path, for `reason` found by the HTTP layer (its
    /// framing), and records the event.
    pub(crate) fn refuse<H: Headers + ?Sized>(
        &self,
        request: &Request<'_, H>,
        reason: Reason,
    ) -> Pending {
        self.record(request, Err(reason.into()), None)
    }

    /// Records the event of `result` for `request` and makes the decision.
    fn record<H: Headers + ?Sized>(
        &self,
        request: &Request<'_, H>,
        result: Result<String, Denied>,
        token: Option<&str>,
    ) -> Pending {
        let request_id =
            RequestId::new(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        let (reason, reason_text, user, status) = match &result {
            Ok(user) => ("ok", "the token verified", Some(user.as_str()), 200),
            Err(denied) => (
                denied.reason.code(),
                denied.reason.text(),
                denied.user.as_deref(),
                denied.reason.status(),
            ),
        };
        let event = Event::Request(RequestEvent {
            success: result.is_ok(),
            reason,
            reason_text,
            source_ip: request.peer,
            status,
            request_id,
            fingerprint: token.map(Fingerprint::of),
            method: request.method,
            path: request.path(),
            user,
            user_agent: request.headers.values("User-Agent").next(),
        });
        let recorded = logger::record(&event);
        let decision = match result {
            Ok(user) => Decision::Allowed(Allowed { request_id, user }),
            Err(denied) => Decision::Refused(Refused {
                request_id,
                reason: Some(denied.reason),
            }),
        };
        Pending { decision, recorded }
    }
}

/// Extracts the bearer token from the values of a request's `Authorization` headers
/// (RFC 6750 §2.1): `Bearer`, case-insensitive, one or more spaces, then a `b64token`
/// of at most `max_bytes` bytes.
pub(crate) fn bearer_token<'a>(
    values: impl IntoIterator<Item = &'a str>,
    max_bytes: usize,
) -> Result<&'a str, Reason> {
    let mut values = values.into_iter();
    let value = values.next().ok_or(Reason::MissingToken)?;
    if values.next().is_some() {
        return Err(Reason::InvalidRequest);
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.is_empty() {
        return Err(Reason::InvalidRequest);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::UnsupportedScheme);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.len() > max_bytes || !is_b64token(token) {
        return Err(Reason::InvalidRequest);
    }
    Ok(token)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &str) -> bool {
    /// The `b64token` characters other than `=`.
    const B64TOKEN: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] =
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            b += 1;
        }
        table
    };
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
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
    fn bearer_header_cases() {
        let ok = |v: &'static str| bearer_token([v], 16);
        assert_eq!(ok("Bearer abc"), Ok("abc"));
        assert_eq!(ok("bearer abc"), Ok("abc"));
        assert_eq!(ok("BEARER abc"), Ok("abc"));
        assert_eq!(ok("Bearer   abc"), Ok("abc"));
        assert_eq!(ok("Bearer a-b.c_d~e+f/g=="), Ok("a-b.c_d~e+f/g=="));
        assert_eq!(ok("Bearer 0123456789abcdef"), Ok("0123456789abcdef"));
        let cases = [
            ("Basic dXNlcjpwYXNz", Reason::UnsupportedScheme),
            ("Bearerabc", Reason::UnsupportedScheme),
            ("Token abc", Reason::UnsupportedScheme),
            ("", Reason::InvalidRequest),
            ("Bearer", Reason::InvalidRequest),
            ("Bearer ", Reason::InvalidRequest),
            ("Bearer a b", Reason::InvalidRequest),
            ("Bearer a,b", Reason::InvalidRequest),
            ("Bearer ===", Reason::InvalidRequest),
            ("Bearer a=b", Reason::InvalidRequest),
            ("Bearer a\tb", Reason::InvalidRequest),
            ("Bearer \"abc\"", Reason::InvalidRequest),
            ("Bearer 0123456789abcdefX", Reason::InvalidRequest),
        ];
        for (value, want) in cases {
            assert_eq!(ok(value), Err(want), "{value:?}");
        }
        assert_eq!(bearer_token([], 16), Err(Reason::MissingToken));
        assert_eq!(
            bearer_token(["Bearer a", "Bearer a"], 16),
            Err(Reason::InvalidRequest)
        );
    }

    /// lexopt's basic_fuzz idea: every short string over an awkward alphabet, no panic,
    /// and any token returned is a non-empty b64token within the cap.
    #[test]
    fn bearer_parser_never_panics() {
        let alphabet = [
            "B", "bearer", "Bearer", " ", "\t", "=", "a", ".", "é", "\r", ",", "\"",
        ];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for input in &inputs {
                for piece in alphabet {
                    next.push(format!("{input}{piece}"));
                }
            }
            inputs.extend(next);
            inputs.dedup();
        }
        for input in &inputs {
            if let Ok(token) = bearer_token([input.as_str()], 8) {
                assert!(!token.is_empty() && token.len() <= 8 && is_b64token(token));
            }
        }
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
    fn without_a_jwtguard_logger_nothing_is_served() {
        // No logger is installed in unit tests: the event cannot be written anywhere.
        let g = guard(&["/api/"]);
        let secret = Secret::new([1; 32], SecretSource::Env);
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        claims.insert("exp".into(), (u32::MAX).into());
        let bearer = format!("Bearer {}", crate::mint(&secret, &claims));
        let headers = [("Authorization", bearer.as_str())];
        let pending = g.decide(&Request::new("GET", "/api/x", &headers));
        assert!(matches!(&pending.decision, Decision::Allowed(a) if a.user() == "alice"));
        let Decision::Refused(refused) = pending.settle(0) else {
            panic!("served without a log")
        };
        assert_eq!(
            (refused.status(), refused.reason(), refused.challenge()),
            (503, None, None)
        );
        assert_eq!(
            g.check(&Request::new("GET", "/public", &headers)),
            Decision::Public
        );
    }

    #[test]
    fn a_held_event_counts_only_once_the_batch_write_covers_it() {
        let allowed = |recorded| Pending {
            decision: Decision::Allowed(Allowed {
                request_id: RequestId::new(1, 1),
                user: "alice".into(),
            }),
            recorded,
        };
        assert!(matches!(
            allowed(Recorded::Held(100)).settle(100),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            allowed(Recorded::Held(101)).settle(100),
            Decision::Refused(Refused { reason: None, .. })
        ));
        assert!(matches!(
            allowed(Recorded::Written).settle(0),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            allowed(Recorded::Lost).settle(1000),
            Decision::Refused(_)
        ));
        let refused = Pending {
            decision: Decision::Refused(Refused {
                request_id: RequestId::new(1, 2),
                reason: Some(Reason::Expired),
            }),
            recorded: Recorded::Held(10),
        };
        let Decision::Refused(r) = refused.settle(5) else {
            panic!()
        };
        assert_eq!(r.status(), 503);
    }
}
