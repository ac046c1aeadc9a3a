//! One client connection's protocol, apart from its socket: fed the bytes that arrived,
//! it hands each request head it completes to the caller, in order, and says whether the
//! connection goes on. No `Read` or `Write` here: the loop, the proptests and the fuzz
//! target drive the same code, split byte by byte or not at all.

use super::head::{self, Body, Expect, Head, MAX_HEADERS, Unreadable};

/// The fields a head is read into first ([`MAX_HEADERS`] when it has more).
const FEW_HEADERS: usize = 24;

/// The longest body of a kept-alive request read and thrown away (the guard never needs
/// one in serve mode); past it, the answer closes the connection instead.
pub(crate) const MAX_DISCARDED_BODY: u64 = 64 * 1024;

/// What the connection hands its caller.
#[derive(Debug)]
pub(crate) enum Item<'h> {
    /// A request to decide (perhaps refused for its framing: then `close` is set).
    Request {
        head: Head<'h>,
        fields: &'h head::Fields<'h>,
        /// The answer says `Connection: close` and ends the connection.
        close: bool,
    },
    /// A head the HTTP layer answers itself with this status (400, 417, 431), and then
    /// closes the connection.
    Refused(u16),
}

/// Where the connection is in its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a head (or the rest of one).
    Head,
    /// Throwing away this many more bytes of a body.
    Discard(u64),
    /// An answer that ends the connection was given: what comes is thrown away.
    Closing,
    /// A request's body is the caller's (proxy mode forwards it): nothing is read as a
    /// request until [`Conn::resume`] gives back what followed the body.
    Passed,
}

/// A connection's protocol state.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Input not consumed yet: a head not complete, or heads not yet handed over
    /// (`max_requests` reached). Allocated when first needed, returned when empty.
    held: Vec<u8>,
    /// How much of `held` holds no end of a head.
    scanned: usize,
    phase: Phase,
    /// Requests handed over since the connection began.
    requests: u64,
    /// Proxy mode: a body goes to the caller ([`Phase::Passed`]) instead of being thrown
    /// away.
    pass_bodies: bool,
    /// It ends because its last request asked to (`Connection: close`, HTTP/1.0 without
    /// keep-alive), with no body and no byte after it: the client sends nothing more
    /// (RFC 9112 §9.6), so closing at once cannot reset the connection under the answer.
    quiet_end: bool,
}

/// What [`Conn::feed`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fed {
    /// Items handed over.
    pub items: usize,
    /// Stopped at `max_requests` with complete input held: feed again (with no bytes).
    pub more: bool,
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new()
    }
}

impl Conn {
    pub(crate) const fn new() -> Conn {
        Conn {
            held: Vec::new(),
            scanned: 0,
            phase: Phase::Head,
            requests: 0,
            pass_bodies: false,
            quiet_end: false,
        }
    }

    /// Whether it ends with nothing more to come from the client (see `quiet_end`): no
    /// lingering close is needed.
    pub(crate) fn ends_quietly(&self) -> bool {
        self.phase == Phase::Closing && self.quiet_end
    }

    /// A connection whose bodies are the caller's (proxy mode).
    pub(crate) fn passing_bodies() -> Conn {
        Conn {
            pass_bodies: true,
            ..Conn::new()
        }
    }

    /// In [`Phase::Passed`]: takes the bytes held after the head (the start of the body
    /// and perhaps what follows it).
    pub(crate) fn take_held(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.held)
    }

    /// The passed body ended: `rest` (what followed it) is read as requests again.
    pub(crate) fn resume(&mut self, rest: &[u8]) {
        if self.phase == Phase::Passed {
            self.phase = Phase::Head;
            self.held.clear();
            self.held.extend_from_slice(rest);
            self.scanned = 0;
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Bytes held (a head under way, or heads not handed over yet).
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests
    }

    /// Whether the connection sits between requests with nothing held: it may be closed
    /// without losing a byte of a request.
    pub(crate) fn is_idle(&self) -> bool {
        self.phase == Phase::Head && self.held.is_empty()
    }

    /// The connection is to end after what is already answered (a head timed out, a
    /// drain): nothing more is read as a request.
    pub(crate) fn close(&mut self) {
        self.phase = Phase::Closing;
        self.held = Vec::new();
        self.scanned = 0;
        self.quiet_end = false;
    }

    /// Takes `input`, hands over each item it completes (at most `max_requests`), and
    /// keeps what it cannot use yet; at most `max_head` bytes of a head are held (past
    /// them, 431 and the connection ends). Returns how many bytes of body it threw away,
    /// too, in [`Fed`].
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        max_head: usize,
        max_requests: usize,
        on: &mut dyn FnMut(Item<'_>),
    ) -> Fed {
        if self.held.is_empty() {
            let (used, fed) = self.process(input, max_head, max_requests, on);
            if self.phase != Phase::Closing {
                self.held.extend_from_slice(&input[used..]);
            }
            fed
        } else {
            let mut held = std::mem::take(&mut self.held);
            held.extend_from_slice(input);
            let (used, fed) = self.process(&held, max_head, max_requests, on);
            if self.phase != Phase::Closing && used < held.len() {
                held.drain(..used);
                self.held = held;
            }
            fed
        }
    }

    /// Consumes from `buf` what it can; returns how much.
    fn process(
        &mut self,
        buf: &[u8],
        max_head: usize,
        max_requests: usize,
        on: &mut dyn FnMut(Item<'_>),
    ) -> (usize, Fed) {
        let mut at = 0;
        let mut fed = Fed::default();
        loop {
            match self.phase {
                Phase::Closing => {
                    // Bytes after the last request: the client did send more.
                    self.quiet_end &= at == buf.len();
                    return (buf.len(), fed);
                }
                Phase::Passed => return (at, fed),
                Phase::Discard(left) => {
                    let take = left.min((buf.len() - at) as u64);
                    at += take as usize;
                    self.phase = match left - take {
                        0 => Phase::Head,
                        left => Phase::Discard(left),
                    };
                    if at == buf.len() {
                        return (at, fed);
                    }
                }
                Phase::Head => {
                    // Empty lines before a request line are skipped (RFC 9112 §2.2); they
                    // are not a request, and restart no timer in the loop.
                    if self.scanned == 0 {
                        while buf[at..].starts_with(b"\r\n") {
                            at += 2;
                        }
                    }
                    let rest = &buf[at..];
                    if rest.is_empty() || (rest == b"\r" && self.scanned == 0) {
                        return (at, fed);
                    }
                    if fed.items == max_requests {
                        fed.more = true;
                        return (at, fed);
                    }
                    let Some(end) = self.head_end(rest) else {
                        if rest.len() > max_head {
                            self.refuse(431, on, &mut fed);
                            return (buf.len(), fed);
                        }
                        return (at, fed);
                    };
                    self.scanned = 0;
                    if end > max_head {
                        self.refuse(431, on, &mut fed);
                        return (buf.len(), fed);
                    }
                    at += end;
                    self.request(&rest[..end], on, &mut fed);
                }
            }
        }
    }

    /// Where the head at the start of `rest` ends (after its blank line), if it does;
    /// remembers how far it looked.
    fn head_end(&mut self, rest: &[u8]) -> Option<usize> {
        let from = self.scanned.saturating_sub(3);
        /// The blank line's searcher, built once (building one costs about what a search
        /// of a common head does).
        static BLANK_LINE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
        let found = BLANK_LINE.find(&rest[from..]);
        match found {
            Some(at) => Some(from + at + 4),
            None => {
                self.scanned = rest.len();
                None
            }
        }
    }

    fn refuse(&mut self, status: u16, on: &mut dyn FnMut(Item<'_>), fed: &mut Fed) {
        self.close();
        fed.items += 1;
        on(Item::Refused(status));
    }

    fn request(&mut self, bytes: &[u8], on: &mut dyn FnMut(Item<'_>), fed: &mut Fed) {
        // Most heads have a few fields: room for all 100 is 400 stores a request, so a
        // head is read into room for a few first, and only again when it has more.
        let mut few = [("", ""); FEW_HEADERS];
        match head::parse(bytes, &mut few) {
            Ok(head) => self.handle(head, &few, on, fed),
            Err(Unreadable::TooManyFields) => {
                let mut all = [("", ""); MAX_HEADERS];
                match head::parse(bytes, &mut all) {
                    Ok(head) => self.handle(head, &all, on, fed),
                    Err(unreadable) => self.unreadable(unreadable, on, fed),
                }
            }
            Err(unreadable) => self.unreadable(unreadable, on, fed),
        }
    }

    fn unreadable(&mut self, why: Unreadable, on: &mut dyn FnMut(Item<'_>), fed: &mut Fed) {
        match why {
            Unreadable::Malformed => self.refuse(400, on, fed),
            Unreadable::TooManyFields => self.refuse(431, on, fed),
        }
    }

    /// Hands over a head read into `fields`, and moves on to what follows it.
    fn handle(
        &mut self,
        head: Head<'_>,
        fields: &[(&str, &str)],
        on: &mut dyn FnMut(Item<'_>),
        fed: &mut Fed,
    ) {
        let mut asked = false;
        let close = match &head.framing {
            Err(_) => true,
            Ok(framing) if framing.expect == Expect::Other => return self.refuse(417, on, fed),
            Ok(framing) => {
                let persistent = match head.version {
                    (1, 1) => !framing.close,
                    _ => framing.keep_alive && !framing.close,
                };
                asked = !persistent && matches!(framing.body, Body::None | Body::Length(0));
                // A body is thrown away only when it is small and on its way: with
                // `Expect: 100-continue` the client waits for a 100 that is never sent
                // before the token is checked, so the answer closes instead.
                let body = match framing.body {
                    Body::None | Body::Length(0) => Some(Phase::Head),
                    Body::Length(_) | Body::Chunked if self.pass_bodies => Some(Phase::Passed),
                    Body::Length(n)
                        if n <= MAX_DISCARDED_BODY && framing.expect == Expect::None =>
                    {
                        Some(Phase::Discard(n))
                    }
                    _ => None,
                };
                match body {
                    // The caller ends the connection after the body, when it is to end.
                    Some(Phase::Passed) => {
                        self.phase = Phase::Passed;
                        !persistent
                    }
                    Some(next) if persistent => {
                        self.phase = next;
                        false
                    }
                    _ => true,
                }
            }
        };
        if close && self.phase != Phase::Passed {
            self.close();
            self.quiet_end = asked;
        }
        self.requests += 1;
        fed.items += 1;
        let n = head.fields;
        on(Item::Request {
            head,
            fields: &fields[..n],
            close,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_of_up_to_100_fields_is_read_whole_and_one_of_more_is_refused() {
        // Both readings: httparse's, and the lenient one (a bare CR in a value).
        for bare_cr in [false, true] {
            for n in [0, 1, 23, 24, 25, 60, 99, 100, 101, 150] {
                let mut head = String::from("GET /a HTTP/1.1\r\n");
                for i in 0..n {
                    let value = if bare_cr && i == 0 {
                        "a\rb".to_owned()
                    } else {
                        format!("v{i}")
                    };
                    head.push_str(&format!("X-{i}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let mut seen = None;
                Conn::new().feed(head.as_bytes(), 1 << 20, 8, &mut |item| {
                    seen = Some(match item {
                        Item::Request { fields, .. } => Ok(fields
                            .iter()
                            .map(|(name, value)| format!("{name}={value}"))
                            .collect::<Vec<_>>()),
                        Item::Refused(status) => Err(status),
                    })
                });
                let expected = match n {
                    ..=100 => Ok((0..n)
                        .map(|i| match (bare_cr, i) {
                            (true, 0) => "X-0=a\rb".to_owned(),
                            _ => format!("X-{i}=v{i}"),
                        })
                        .collect()),
                    _ => Err(431),
                };
                assert_eq!(seen, Some(expected), "{n} fields, bare CR {bare_cr}");
            }
        }
    }

    /// What `input` gives, fed in pieces at `cuts`: (method target close) or the status.
    fn items(input: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut conn = Conn::new();
        let mut seen = Vec::new();
        let mut on = |item: Item<'_>| {
            seen.push(match item {
                Item::Request { head, close, .. } => format!(
                    "{} {} {}{}",
                    head.method,
                    head.target,
                    if close { "close" } else { "keep" },
                    head.framing
                        .err()
                        .map_or(String::new(), |r| format!(" {}", r.code()))
                ),
                Item::Refused(status) => status.to_string(),
            })
        };
        let mut from = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            let mut fed = conn.feed(&input[from..cut], 16 * 1024, 4, &mut on);
            while fed.more {
                fed = conn.feed(&[], 16 * 1024, 4, &mut on);
            }
            from = cut;
        }
        seen
    }

    #[test]
    fn pipelined_requests_come_out_in_order_however_the_bytes_are_cut() {
        let input = b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /3 HTTP/1.0\r\n\r\nGET /4 HTTP/1.1\r\n\r\n";
        let whole = items(input, &[]);
        assert_eq!(whole, ["GET /1 keep", "POST /2 keep", "GET /3 close"]);
        for cut in 0..input.len() {
            assert_eq!(items(input, &[cut]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn refused_framing_ends_the_connection_and_nothing_after_it_is_a_request() {
        let smuggled = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 20\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(items(smuggled, &[]), ["POST /a close bad_framing"]);
        let chunked = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(items(chunked, &[]), ["POST /a close"]);
        let expect = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(items(expect, &[]), ["POST /a close"]);
        assert_eq!(
            items(
                b"GET /a HTTP/1.1\r\nExpect: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
                &[]
            ),
            ["417"]
        );
    }

    #[test]
    fn only_a_request_that_asked_to_close_with_nothing_after_it_ends_quietly() {
        let quiet = |input: &[u8]| {
            let mut conn = Conn::new();
            conn.feed(input, 16 * 1024, 4, &mut |_| {});
            conn.ends_quietly()
        };
        assert!(quiet(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(quiet(b"GET /a HTTP/1.0\r\n\r\n"));
        // More bytes after it, a body, a refused head, or a kept connection: not quiet.
        assert!(!quiet(
            b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
        ));
        assert!(!quiet(
            b"POST /a HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\n\r\nabcde"
        ));
        assert!(!quiet(
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        ));
        assert!(!quiet(b"GET /a HTTP/1.1\r\nExpect: x\r\n\r\n"));
        assert!(!quiet(b"GET /a HTTP/1.1\r\n\r\n"));
        let mut conn = Conn::new();
        conn.feed(
            b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
            16 * 1024,
            4,
            &mut |_| {},
        );
        conn.feed(b"G", 16 * 1024, 4, &mut |_| {});
        assert!(!conn.ends_quietly(), "a byte that came later");
    }

    #[test]
    fn a_head_over_the_limit_is_431_and_nothing_more_is_held() {
        let mut conn = Conn::new();
        let mut seen = Vec::new();
        let long = format!("GET /a HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        conn.feed(long.as_bytes(), 64, 4, &mut |item| {
            seen.push(matches!(item, Item::Refused(431)))
        });
        assert_eq!(seen, [true]);
        assert_eq!((conn.held(), conn.phase()), (0, Phase::Closing));
        conn.feed(b"GET /b HTTP/1.1\r\n\r\n", 64, 4, &mut |_| {
            panic!("closing")
        });
    }

    #[test]
    fn http_1_0_keeps_alive_only_when_asked() {
        let input = b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n";
        assert_eq!(items(input, &[]), ["GET /1 keep", "GET /2 close"]);
        let closing = b"GET /1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
        assert_eq!(items(closing, &[]), ["GET /1 close"]);
    }

    /// One request of a pipelined stream: `kind` picks its shape.
    fn request(kind: u8, i: usize, body: usize) -> String {
        match kind % 6 {
            0 => format!("GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n"),
            1 => format!("HEAD /r{i} HTTP/1.1\r\nHost: x\r\nUser-Agent: p\r\n\r\n"),
            2 => format!(
                "POST /r{i} HTTP/1.1\r\nContent-Length: {body}\r\n\r\n{}",
                "GET /smuggled HTTP/1.1\r\n\r\n"
                    .chars()
                    .cycle()
                    .take(body)
                    .collect::<String>()
            ),
            3 => format!("GET /r{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            4 => format!("\r\nGET /r{i} HTTP/1.1\r\n\r\n"),
            _ => format!("GET /r{i} HTTP/1.1\r\nX: a\x01b\r\n\r\nGET /after HTTP/1.1\r\n\r\n"),
        }
    }

    proptest::proptest! {
        /// However a pipelined stream is cut into reads, the same requests come out, in
        /// the same order, with the same framing decisions.
        #[test]
        fn a_pipelined_stream_cut_anywhere_gives_the_same_items(
            shapes in proptest::collection::vec((0u8..6, 0usize..40), 1..8),
            cuts in proptest::collection::vec(0usize..2000, 0..12),
        ) {
            let input: String = shapes
                .iter()
                .enumerate()
                .map(|(i, &(kind, body))| request(kind, i, body))
                .collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let whole = items(input.as_bytes(), &[]);
            proptest::prop_assert!(!whole.is_empty());
            proptest::prop_assert_eq!(items(input.as_bytes(), &cuts), whole);
        }
    }

    #[test]
    fn a_pipelined_stream_cut_at_every_byte_gives_the_same_items() {
        let input: String = (0..6).map(|i| request(i as u8, i, 7)).collect();
        let whole = items(input.as_bytes(), &[]);
        // Every request up to the refused one, which ends the connection.
        assert_eq!(whole.len(), 6, "{whole:?}");
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(items(input.as_bytes(), &every), whole);
        for cut in 0..input.len() {
            assert_eq!(items(input.as_bytes(), &[cut]), whole, "cut at {cut}");
        }
    }
}
