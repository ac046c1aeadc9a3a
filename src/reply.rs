//! jwtguard's own answers' contents (a status, a few headers, a small JSON body), apart
//! from any HTTP layer: the event loop writes them (src/serve/answer.rs), and so does the
//! tiny_http adapter (src/http.rs).

use crate::guard::{Allowed, Refused};

/// A response jwtguard writes itself: a status, a few headers and a small JSON body.
pub(crate) enum Reply<'a> {
    /// 200 with the user.
    Allowed(&'a Allowed),
    /// The refusal's status and challenge.
    Refused(&'a Refused),
    /// `/healthz`: 200, or 503 when the security log is failing or there are no keys
    /// (`--jwks-url` not fetched yet); whether this worker still accepts connections (not
    /// while it hands over to a new one).
    Health {
        log_failing: bool,
        draining: bool,
        no_keys: bool,
    },
    /// 404.
    NotFound,
    /// 413, for the tiny_http adapter's own answer to a body too large to drain.
    #[cfg_attr(
        not(feature = "tiny_http"),
        allow(dead_code, reason = "the adapter's only")
    )]
    TooLarge,
    /// 502, 503 or 504 from the reverse proxy, with the decision's id if any.
    Status(u16, Option<crate::RequestId>),
    /// 200 to a forward-auth subrequest about a public path: the identity headers, empty.
    Open(Vec<&'a str>),
}

impl Reply<'_> {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Reply::Allowed(_) => 200,
            Reply::Refused(refused) => refused.status(),
            Reply::Health {
                log_failing,
                no_keys,
                ..
            } => {
                if *log_failing || *no_keys {
                    503
                } else {
                    200
                }
            }
            Reply::NotFound => 404,
            Reply::TooLarge => 413,
            Reply::Status(status, _) => *status,
            Reply::Open(_) => 200,
        }
    }

    /// Calls `f` with each header beyond `Date`, `Content-Type` and `Content-Length`.
    pub(crate) fn each_header(&self, f: &mut dyn FnMut(&str, &[u8])) {
        let id = match self {
            Reply::Allowed(allowed) => Some(allowed.request_id()),
            Reply::Refused(refused) => Some(refused.request_id()),
            Reply::Status(_, id) => *id,
            _ => None,
        };
        if let Some(id) = id {
            f("X-Request-Id", id.text().as_str().as_bytes());
        }
        if let Reply::Allowed(allowed) = self {
            for (name, value) in allowed.headers() {
                f(name, value.as_bytes());
            }
        }
        if let Reply::Open(names) = self {
            for name in names {
                f(name, b"");
            }
        }
        if let Reply::Refused(refused) = self
            && let Some(challenge) = refused.challenge()
        {
            f("WWW-Authenticate", challenge.as_bytes());
        }
        if self.status() == 503 {
            f("Retry-After", b"5");
        }
        if let Reply::Refused(refused) = self
            && let Some(seconds) = refused.retry_after()
        {
            f(
                "Retry-After",
                itoa::Buffer::new().format(seconds).as_bytes(),
            );
        }
    }

    pub(crate) fn push_body(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Allowed(allowed) => {
                out.extend_from_slice(b"{\"status\":\"ok\",\"user\":");
                serde_json::to_writer(&mut *out, allowed.user())
                    .expect("writing to a Vec cannot fail");
                out.extend_from_slice(b"}\n");
            }
            Reply::Health {
                log_failing,
                draining,
                no_keys,
            } => {
                out.extend_from_slice(match (log_failing, no_keys) {
                    (true, _) => b"{\"status\":\"unavailable\",\"log\":\"failing\"",
                    (false, true) => b"{\"status\":\"unavailable\",\"log\":\"ok\"",
                    (false, false) => b"{\"status\":\"ok\",\"log\":\"ok\"",
                });
                if *no_keys {
                    out.extend_from_slice(b",\"keys\":\"none\"");
                }
                out.extend_from_slice(match draining {
                    true => b",\"accepting\":false}\n",
                    false => b",\"accepting\":true}\n",
                });
            }
            _ => {
                let status = match self.status() {
                    200 => "ok",
                    400 => "bad_request",
                    401 => "unauthorized",
                    403 => "forbidden",
                    404 => "not_found",
                    408 => "request_timeout",
                    413 => "too_large",
                    417 => "expectation_failed",
                    431 => "header_too_large",
                    502 => "bad_gateway",
                    504 => "gateway_timeout",
                    _ => "unavailable",
                };
                out.extend_from_slice(b"{\"status\":\"");
                out.extend_from_slice(status.as_bytes());
                out.extend_from_slice(b"\"}\n");
            }
        }
    }
}
