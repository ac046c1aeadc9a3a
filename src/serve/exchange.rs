//! One request's exchange with the upstream, apart from the sockets: fed the client's
//! body and the upstream's answer as they come, it says what goes up, what goes to the
//! client, and whether the upstream connection may carry another request (only when the
//! answer ended exactly at its framing). The loop (src/serve/proxy.rs) drives it; the
//! unit tests and the proptest below drive the same code, cut anywhere.

use std::io::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use super::chunked::Chunked;
use super::head;
use super::request_head::Body;
use super::response::{self, Framing, Parsed};
use crate::event::{Action, RequestEvent, RequestId};

/// The longest upstream response head.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line of a chunked body, either way.
const MAX_LINE: usize = 4 * 1024;
/// Past this many bytes for the upstream not written yet, the client's body is not read.
const HIGH_WATER: usize = super::event_loop::HIGH_WATER;

/// A request on its way to the upstream: what its head said.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(super) method: Box<str>,
    /// The normalised path, without the query (the events').
    pub(super) path: Box<str>,
    /// The upstream head so far ([`request_head::start`]).
    pub(super) head: Vec<u8>,
    /// How the body goes up.
    pub(super) body: Body,
    /// How the client frames it.
    pub(super) client_body: head::Body,
    pub(super) minor: u8,
    pub(super) head_only: bool,
    /// The client connection ends after the answer.
    pub(super) close: bool,
    pub(super) expect_continue: bool,
    pub(super) peer: IpAddr,
    /// The client a trusted proxy names.
    pub(super) client: Option<IpAddr>,
    pub(super) user_agent: Option<Box<str>>,
}

/// The client's body, as it comes.
#[derive(Debug)]
pub(super) enum BodyIn {
    Done,
    Length(u64),
    Chunked(Box<Chunked>),
}

/// The upstream's answer, as it comes.
#[derive(Debug)]
pub(super) enum Answer {
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
pub(crate) enum Failure {
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
    pub(super) fwd: Box<Forward>,
    pub(super) id: Option<RequestId>,
    /// The upstream connection, by its index in the pool.
    pub(super) up: Option<usize>,
    /// Its connect finished.
    pub(super) connected: bool,
    /// It carried an answer before.
    pub(super) reused: bool,
    /// Which of the upstream's addresses it tries.
    pub(super) addr: usize,
    /// Bytes for the upstream, not written yet: the head, then the body as it comes.
    pub(super) to_up: Vec<u8>,
    /// The head again, for one retry on a fresh connection: only an idempotent request
    /// without a body (GET, HEAD, OPTIONS: nginx's default) may go twice.
    pub(super) again: Option<Vec<u8>>,
    pub(super) body: BodyIn,
    /// The body's data bytes so far.
    pub(super) body_bytes: u64,
    /// Counted as an upload of this client.
    pub(super) upload: Option<IpAddr>,
    pub(super) answer: Answer,
    /// When the head began to go up (for the upstream's share of the latency).
    pub(super) sent: Option<Instant>,
    /// Any byte of the answer came.
    pub(super) answered: bool,
    /// The client connection ends after the answer.
    pub(super) closes: bool,
}

impl Exchange {
    pub(super) fn new(fwd: Box<Forward>, id: Option<RequestId>, head: Vec<u8>) -> Exchange {
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
    pub(super) fn waits_for_client(&self) -> bool {
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
    pub(super) fn take_answer(
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
                    // Whether the head fits does not depend on how the reads were cut.
                    Parsed::Partial if input.len() > MAX_HEAD => return Err(bad),
                    Parsed::Interim(len) | Parsed::Final(len, _) if len > MAX_HEAD => {
                        return Err(bad);
                    }
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
    pub(super) fn upstream_ended(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
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
    pub(super) fn event<'a>(
        &'a self,
        reason: &'static str,
        status: u16,
        during: bool,
    ) -> RequestEvent<'a> {
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

/// Test and fuzzing helpers: the exchange driven by bytes alone.
#[cfg(any(test, fuzzing))]
pub(crate) mod driven {
    use super::*;

    /// An exchange for `method` with a client body framed as `body`.
    pub(crate) fn exchange(method: &str, body: head::Body) -> Exchange {
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
    pub(crate) fn answered(
        answer: &[u8],
        cuts: &[usize],
    ) -> (Vec<u8>, Result<Option<bool>, Failure>, usize) {
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

    /// The client's head and body as data: a chunked body decoded (its chunks follow the
    /// reads, not the app's), as far as it goes.
    pub(crate) fn decoded(out: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (out.to_vec(), Vec::new());
        };
        let (head, body) = out.split_at(at + 4);
        if !head.windows(26).any(|w| w == b"Transfer-Encoding: chunked") {
            return (head.to_vec(), body.to_vec());
        }
        let mut data = Vec::new();
        let mut reader = Chunked::new(MAX_LINE);
        // Whole, or cut short: the data so far.
        let _ = reader.feed(body, &mut |d| data.extend_from_slice(d));
        (head.to_vec(), data)
    }
}

#[cfg(test)]
mod tests {
    use super::driven::{answered, decoded, exchange};
    use super::*;

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
        // A whole head over the limit, read at once or not: the same failure.
        let mut whole = long.clone();
        whole.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        for cuts in [&[][..], &[100]] {
            assert_eq!(
                answered(&whole, cuts).1,
                Err(Failure::Before("upstream_error", 502)),
                "{cuts:?}"
            );
        }
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
