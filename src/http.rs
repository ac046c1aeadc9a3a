//! The tiny_http adapter: a tiny_http request as the guard's [`Request`], and the answers
//! jwtguard writes, each in one write.
//!
//! tiny_http reads a request's unread body when the request is dropped, with no timeout
//! and into a buffer of the whole announced length; [`respond`] and [`answer`] keep both
//! traps away from the serving thread.

use std::cell::RefCell;
use std::io::{ErrorKind, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};

use tiny_http::{HTTPVersion, Method, StatusCode};

use crate::guard::{Headers, Refused, Request};
pub(crate) use crate::reply::Reply;

impl Headers for [tiny_http::Header] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.iter()
            .filter(move |h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// The parts of `request` the guard decides on, with the connection's peer address; but
/// for HTTP/1.0, `Host` is required.
pub fn request(request: &tiny_http::Request) -> Request<'_, [tiny_http::Header]> {
    let mut parts = Request::new(request.method().as_str(), request.url(), request.headers());
    if *request.http_version() != HTTPVersion(1, 0) {
        parts = parts.requiring_host();
    }
    match request.remote_addr() {
        Some(peer) => parts.with_peer(peer.ip()),
        None => parts,
    }
}

/// Whether tiny_http leaves part of the connection's input unread after `request`: a body
/// it did not read (it drains a `Content-Length` body when the request is dropped, and
/// leaves a chunked one to be read as the next request).
pub(crate) fn leaves_input(request: &tiny_http::Request) -> bool {
    unread_body(request) > 0
        || request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding"))
}

/// Sends the answer to a refused request: its status, `WWW-Authenticate` challenge,
/// `X-Request-Id` and a small JSON body that says nothing of the reason (that is in the
/// log). Written in one write; a client that hung up is ignored.
pub fn answer(request: tiny_http::Request, refused: &Refused) {
    let close = leaves_input(&request);
    send(request, &Reply::Refused(refused), close);
}

/// Writes `reply` as an HTTP/1.x response into `out`, its body by way of `body`; with
/// `close`, it says `Connection: close`.
fn wire(
    reply: &Reply,
    close: bool,
    request: &tiny_http::Request,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) {
    // HTTP/1.0 answered in kind; anything else (a version refused) as HTTP/1.1.
    let version = match request.http_version() {
        HTTPVersion(1, 0) => HTTPVersion(1, 0),
        _ => HTTPVersion(1, 1),
    };
    let head_only = *request.method() == Method::Head;
    wire_raw(reply, close, &version, head_only, out, body);
}

/// [`wire`] for a given version and method.
pub(crate) fn wire_raw(
    reply: &Reply,
    close: bool,
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
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// How an answer went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Written (or handed to a thread that writes it).
    Written,
    /// The client hung up.
    Gone,
    /// The client does not read: the write found no room within the send timeout.
    Stalled,
}

/// Sends `reply` to `request`, with `Connection: close` when `close`, its head and body in
/// one write. When tiny_http would drain a body on dropping the request, the answer is
/// written from a thread of its own once the body is read ([`drain`]); when the body is
/// too large to drain, without ever dropping the request ([`abandon`]).
pub(crate) fn send(request: tiny_http::Request, reply: &Reply, close: bool) -> Sent {
    let unread = unread_body(&request);
    if unread == 0 {
        thread_local! {
            static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
        }
        return BUFFERS.with_borrow_mut(|(out, body)| {
            out.clear();
            wire(reply, close, &request, out, body);
            write_answer(request, out)
        });
    }
    let mut out = Vec::new();
    wire(reply, close, &request, &mut out, &mut Vec::new());
    if unread > MAX_DRAINED_BODY {
        abandon(request, &out);
    } else {
        drain(request, Some(out));
    }
    Sent::Written
}

/// Writes `answer` as the whole response to `request`, which has no body left to drain.
#[inline(never)]
pub(crate) fn write_answer(request: tiny_http::Request, answer: &[u8]) -> Sent {
    let mut writer = request.into_writer();
    match writer.write_all(answer).and_then(|()| writer.flush()) {
        Ok(()) => Sent::Written,
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Sent::Stalled
        }
        Err(_) => Sent::Gone,
    }
}

/// Answers a request that announced a body too large to drain, without ever dropping the
/// body's reader: tiny_http would allocate the whole announced length at once to drain it,
/// and a failed allocation aborts the process. tiny_http's `upgrade` is the one call that
/// hands out the writer without dropping the reader; it first writes a response of its own,
/// here an interim `100 Continue` (which every HTTP/1.1 client must skip), and then
/// `answer` follows as the final response, with `Connection: close`. The connection is
/// then abandoned, its reader never dropped: a thread and two file descriptors until the
/// process ends (README, Security).
fn abandon(request: tiny_http::Request, answer: &[u8]) {
    let mut stream = request.upgrade("jwtguard", tiny_http::Response::empty(100));
    let _ = stream.write_all(answer).and_then(|()| stream.flush());
    forget(stream);
}

/// Never drops `what` (a request, or its upgraded stream), so tiny_http never drains its
/// body.
fn forget<T>(what: T) {
    ABANDONED.fetch_add(1, Ordering::Relaxed);
    std::mem::forget(what);
}

/// Requests abandoned since start-up (their reader never dropped).
static ABANDONED: AtomicUsize = AtomicUsize::new(0);
/// Threads draining a request's body now.
static DRAINING: AtomicUsize = AtomicUsize::new(0);
/// The most threads draining bodies at once; past it, a request with a body to drain is
/// abandoned instead (a thread and two descriptors for tiny_http's connection).
const MAX_DRAINING: usize = 256;

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
/// `Expect: 100-continue`) when the request is dropped, reading the socket with no timeout
/// into a buffer of the whole announced length: on the serving thread, one client that
/// announces a body and never sends it would stop the server. Such a request is answered
/// from a thread of its own (at most 256 at once) once its body is read, 8 KiB at a time,
/// and discarded. A request announcing more than 16 MiB is never dropped (tiny_http would
/// allocate it whole, and a failed allocation aborts the process): it is answered 413 and
/// its connection abandoned, which costs a thread and two file descriptors until the
/// process ends.
pub fn respond<R: std::io::Read + Send + 'static>(
    request: tiny_http::Request,
    response: tiny_http::Response<R>,
) {
    match unread_body(&request) {
        0 => {
            let _ = request.respond(response);
        }
        n if n > MAX_DRAINED_BODY => {
            let mut out = Vec::new();
            wire(&Reply::TooLarge, true, &request, &mut out, &mut Vec::new());
            abandon(request, &out);
        }
        _ => spawn_drain(request, move |request| {
            let _ = request.respond(response);
        }),
    }
}

/// Writes `answer` (if any) to `request` from a thread of its own, once the body is read.
fn drain(request: tiny_http::Request, answer: Option<Vec<u8>>) {
    spawn_drain(request, move |request| match answer {
        Some(answer) => {
            let _ = write_answer(request, &answer);
        }
        None => drop(request.into_writer()),
    });
}

/// On a thread of its own, reads what the client sends of `request`'s body, 8 KiB at a
/// time (asking for it with `100 Continue` when the client waits for that), discards it,
/// and then calls `then`. tiny_http's own drain, on drop, would hold a buffer of the whole
/// announced length for as long as the client keeps the connection open without sending;
/// this way a waiting thread holds 8 KiB. Past 256 such threads, the request is abandoned.
fn spawn_drain(
    request: tiny_http::Request,
    then: impl FnOnce(tiny_http::Request) + Send + 'static,
) {
    if DRAINING.fetch_add(1, Ordering::Relaxed) >= MAX_DRAINING {
        DRAINING.fetch_sub(1, Ordering::Relaxed);
        forget(request);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("jwtguard-drain".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut request = request;
            let mut buf = [0u8; 8192];
            let reader = request.as_reader();
            while let Ok(1..) = reader.read(&mut buf) {}
            then(request);
            DRAINING.fetch_sub(1, Ordering::Relaxed);
        });
    if spawned.is_err() {
        // The request went down with the closure: no thread, so it was dropped here, and
        // tiny_http drained it here. Rare (out of threads), and bounded by the client.
        DRAINING.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;
    use crate::event::RequestId;
    use crate::guard::Allowed;

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

    /// `reply` as a tiny_http response.
    fn response(reply: &Reply) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let mut body = Vec::new();
        reply.push_body(&mut body);
        let header = |name: &str, value: &[u8]| tiny_http::Header::from_bytes(name, value).unwrap();
        let mut response = tiny_http::Response::from_data(body)
            .with_status_code(reply.status())
            .with_header(header("Content-Type", b"application/json"));
        reply.each_header(&mut |name, value| response.add_header(header(name, value)));
        response
    }

    /// `reply` from [`wire_raw`] and from tiny_http's `raw_print` of the same response.
    fn both_ways(reply: &Reply) -> Vec<[(String, Vec<String>, String); 2]> {
        let mut seen = Vec::new();
        for version in [HTTPVersion(1, 0), HTTPVersion(1, 1)] {
            for head_only in [false, true] {
                let mut ours = Vec::new();
                wire_raw(
                    reply,
                    false,
                    &version,
                    head_only,
                    &mut ours,
                    &mut Vec::new(),
                );
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
            Reply::Health {
                log_failing: false,
                draining: false,
                no_keys: false,
            },
            Reply::Health {
                log_failing: true,
                draining: true,
                no_keys: false,
            },
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
