//! The tiny_http adapter: a tiny_http request as the guard's [`Request`], and the answers
//! jwtguard writes, each in one write.
//!
//! tiny_http reads a request's unread body when the request is dropped, with no timeout
//! and into a buffer of the whole announced length; [`respond`] and [`answer`] keep both
//! traps away from the serving thread.

use std::cell::RefCell;
use std::io::Write as _;

use tiny_http::{HTTPVersion, Method, StatusCode};

use crate::guard::{Allowed, Headers, Refused, Request};

impl Headers for [tiny_http::Header] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.iter()
            .filter(move |h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// The parts of `request` the guard decides on, with the connection's peer address.
pub fn request(request: &tiny_http::Request) -> Request<'_, [tiny_http::Header]> {
    let parts = Request::new(request.method().as_str(), request.url(), request.headers());
    match request.remote_addr() {
        Some(peer) => parts.with_peer(peer.ip()),
        None => parts,
    }
}

/// Sends the answer to a refused request: its status, `WWW-Authenticate` challenge,
/// `X-Request-Id` and a small JSON body that says nothing of the reason (that is in the
/// log). Written in one write; a client that hung up is ignored.
pub fn answer(request: tiny_http::Request, refused: &Refused) {
    send(request, &Reply::Refused(refused));
}

/// A response jwtguard writes itself: a status, a few headers and a small JSON body.
pub(crate) enum Reply<'a> {
    /// 200 with the user.
    Allowed(&'a Allowed),
    /// The refusal's status and challenge.
    Refused(&'a Refused),
    /// `/healthz`: 200, or 503 when the security log is failing.
    Health { log_failing: bool },
    /// 404.
    NotFound,
}

impl Reply<'_> {
    fn status(&self) -> u16 {
        match self {
            Reply::Allowed(_) => 200,
            Reply::Refused(refused) => refused.status(),
            Reply::Health { log_failing } => {
                if *log_failing {
                    503
                } else {
                    200
                }
            }
            Reply::NotFound => 404,
        }
    }

    /// Calls `f` with each header beyond `Date`, `Content-Type` and `Content-Length`.
    fn each_header(&self, f: &mut dyn FnMut(&str, &[u8])) {
        let id = match self {
            Reply::Allowed(allowed) => Some(allowed.request_id()),
            Reply::Refused(refused) => Some(refused.request_id()),
            _ => None,
        };
        if let Some(id) = id {
            f("X-Request-Id", id.text().as_str().as_bytes());
        }
        if let Reply::Refused(refused) = self
            && let Some(challenge) = refused.challenge()
        {
            f("WWW-Authenticate", challenge.as_bytes());
        }
        if self.status() == 503 {
            f("Retry-After", b"5");
        }
    }

    fn push_body(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Allowed(allowed) => {
                out.extend_from_slice(b"{\"status\":\"ok\",\"user\":");
                serde_json::to_writer(&mut *out, allowed.user())
                    .expect("writing to a Vec cannot fail");
                out.extend_from_slice(b"}\n");
            }
            Reply::Health { log_failing: true } => {
                out.extend_from_slice(b"{\"status\":\"unavailable\",\"log\":\"failing\"}\n")
            }
            Reply::Health { log_failing: false } => {
                out.extend_from_slice(b"{\"status\":\"ok\",\"log\":\"ok\"}\n")
            }
            _ => {
                let status = match self.status() {
                    400 => "bad_request",
                    401 => "unauthorized",
                    404 => "not_found",
                    _ => "unavailable",
                };
                out.extend_from_slice(b"{\"status\":\"");
                out.extend_from_slice(status.as_bytes());
                out.extend_from_slice(b"\"}\n");
            }
        }
    }
}

/// Writes `reply` as an HTTP/1.x response into `out`, its body by way of `body`.
fn wire(
    reply: &Reply,
    version: &HTTPVersion,
    head_only: bool,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) {
    let mut digits = itoa::Buffer::new();
    let status = reply.status();
    body.clear();
    reply.push_body(body);
    out.extend_from_slice(b"HTTP/");
    out.extend_from_slice(digits.format(version.0).as_bytes());
    out.push(b'.');
    out.extend_from_slice(digits.format(version.1).as_bytes());
    out.push(b' ');
    out.extend_from_slice(digits.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(StatusCode(status).default_reason_phrase().as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    crate::time::push_http_date(out);
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    out.extend_from_slice(digits.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    reply.each_header(&mut |name, value| {
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

/// Sends `reply` to `request`: in one write from a reused buffer when the request can be
/// dropped here, else through [`respond`].
pub(crate) fn send(request: tiny_http::Request, reply: &Reply) {
    if unread_body(&request) > 0 {
        return respond(request, response(reply));
    }
    thread_local! {
        static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    BUFFERS.with_borrow_mut(|(out, body)| {
        out.clear();
        let head_only = *request.method() == Method::Head;
        wire(reply, request.http_version(), head_only, out, body);
        let mut writer = request.into_writer();
        // A client that hung up is no concern here.
        let _ = writer.write_all(out).and_then(|()| writer.flush());
    });
}

/// `reply` as a tiny_http response, for [`respond`].
fn response(reply: &Reply) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut body = Vec::new();
    reply.push_body(&mut body);
    let mut response = tiny_http::Response::from_data(body)
        .with_status_code(reply.status())
        .with_header(header("Content-Type", b"application/json"));
    reply.each_header(&mut |name, value| response.add_header(header(name, value)));
    response
}

fn header(name: &str, value: &[u8]) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name, value).expect("jwtguard's own headers are ASCII")
}

/// The largest body tiny_http reads before it hands a request over; a larger unread body
/// is drained when the request is dropped.
const TINY_HTTP_BUFFERED_BODY: usize = 1024;

/// The largest unread body left for tiny_http to drain. Its drain allocates a buffer of
/// the whole remaining length at once, and a failed allocation aborts the process.
const MAX_DRAINED_BODY: usize = 16 * 1024 * 1024;

/// The body tiny_http has not read yet and reads when the request is dropped. It reads
/// a body of up to 1 KiB before it hands the request over, unless the client sent
/// `Expect: 100-continue` (then it waits to be asked for it).
fn unread_body(request: &tiny_http::Request) -> usize {
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
/// own. A request announcing more than 16 MiB is never dropped, so never drained: it is
/// left unanswered and its connection abandoned, which costs a thread and a socket, not
/// the process.
pub fn respond<R: std::io::Read + Send + 'static>(
    request: tiny_http::Request,
    response: tiny_http::Response<R>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;
    use crate::event::RequestId;

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

    /// `reply` from [`wire`] and from tiny_http's `raw_print` of [`response`].
    fn both_ways(reply: &Reply) -> Vec<[(String, Vec<String>, String); 2]> {
        let mut seen = Vec::new();
        for version in [HTTPVersion(1, 0), HTTPVersion(1, 1)] {
            for head_only in [false, true] {
                let mut ours = Vec::new();
                wire(reply, &version, head_only, &mut ours, &mut Vec::new());
                let mut theirs = Vec::new();
                response(reply)
                    .raw_print(&mut theirs, version.clone(), &[], head_only, None)
                    .unwrap();
                seen.push([lines_and_body(&ours), lines_and_body(&theirs)]);
            }
        }
        seen
    }

    #[test]
    fn one_write_responses_are_what_tiny_http_would_send() {
        let allowed = Allowed::for_test(RequestId::new(0xab, 7), "al\"ice\u{e9}");
        let refusals = [
            Refused::for_test(RequestId::new(0xab, 8), Some(Reason::BadSignature)),
            Refused::for_test(RequestId::new(0xab, 9), Some(Reason::InvalidRequest)),
            Refused::for_test(RequestId::new(0xab, 10), None),
        ];
        let mut replies = vec![Reply::Allowed(&allowed)];
        replies.extend(refusals.iter().map(Reply::Refused));
        replies.extend([
            Reply::Health { log_failing: false },
            Reply::Health { log_failing: true },
            Reply::NotFound,
        ]);
        let compared: Vec<_> = replies.iter().flat_map(both_ways).collect();
        assert_eq!(compared.len(), 28);
        for [ours, theirs] in &compared {
            assert_eq!(ours, theirs);
            assert!(ours.2.is_empty() || ours.2.ends_with("}\n"), "{ours:?}");
        }
    }
}
