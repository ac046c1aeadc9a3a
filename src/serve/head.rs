//! A request head, parsed from the caller's bytes into the caller's arrays: httparse for
//! what RFC 9112 allows, and a lenient second reading of what it refuses, so that a head
//! with a control character or a bad name is still recorded as the request it claims to
//! be (refused for its framing) rather than dropped without a trace.

use crate::Reason;

/// The most header fields a head may have (past it: 431).
pub(crate) const MAX_HEADERS: usize = 100;

/// The largest body announced with `Content-Length` that is refused only once it is seen:
/// past it, 413 (`body_too_large`), as main refused what tiny_http could not drain.
pub(crate) const MAX_BODY: u64 = 16 * 1024 * 1024;

/// A head's fields, as the caller's arrays hold them.
pub(crate) type Fields<'h> = [(&'h str, &'h str)];

/// How a request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    None,
    Length(u64),
    Chunked,
}

/// What the `Expect` header asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    None,
    Continue,
    /// An expectation jwtguard cannot meet: 417.
    Other,
}

/// What the framing headers say, once they are unambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    pub body: Body,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive` (what an HTTP/1.0 client says to keep the connection).
    pub keep_alive: bool,
    pub expect: Expect,
}

/// A parsed head.
#[derive(Debug)]
pub(crate) struct Head<'h> {
    pub method: &'h str,
    pub target: &'h str,
    /// (1, 0) or (1, 1); another version is refused by `framing`.
    pub version: (u8, u8),
    pub fields: usize,
    /// Unambiguous framing, or why not (`bad_framing`, `body_too_large`).
    pub framing: Result<Framing, Reason>,
}

/// Why a head cannot even be read as a request (no event of the guard's: the HTTP layer
/// answers it itself, as tiny_http did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Not a request line and header lines: 400.
    Malformed,
    /// More than [`MAX_HEADERS`] fields: 431.
    TooManyFields,
}

/// Reads `head` (the bytes up to and with the blank line) into `fields`: more fields
/// than it holds are [`Unreadable::TooManyFields`].
pub(crate) fn parse<'h, const N: usize>(
    head: &'h [u8],
    fields: &mut [(&'h str, &'h str); N],
) -> Result<Head<'h>, Unreadable> {
    // A bare CR or LF inside the head: httparse would take a lone LF for a line end, and
    // a proxy in front may not (RFC 9112 §2.2): read it the strict way instead, where it is
    // a control character in a field and refused as `bad_framing`.
    if line_ends_paired(head) {
        // Not zeroed first (100 fields a request): httparse hands back only those it wrote.
        let mut raw = [const { std::mem::MaybeUninit::uninit() }; N];
        let mut request = httparse::Request::new(&mut []);
        match request.parse_with_uninit_headers(head, &mut raw) {
            Ok(httparse::Status::Complete(_)) => {
                let n = request.headers.len();
                for (slot, h) in fields.iter_mut().zip(request.headers.iter()) {
                    *slot = (h.name, text(h.value));
                }
                let method = request.method.unwrap_or("");
                let target = request.path.unwrap_or("");
                let version = (1, request.version.unwrap_or(1));
                return Ok(finish(method, target, version, &fields[..n]));
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Unreadable::TooManyFields),
            _ => {}
        }
    }
    lenient(head, fields)
}

/// The head as tiny_http read it: lines split at CRLF, the request line at spaces, a
/// field at its first colon. Refused here, as tiny_http refused it (400, no event): a
/// request line without a version tiny_http knew, a folded line, a name with a space, a
/// line without a colon.
fn lenient<'h, const N: usize>(
    head: &'h [u8],
    fields: &mut [(&'h str, &'h str); N],
) -> Result<Head<'h>, Unreadable> {
    let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let mut lines = split(body, b"\r\n");
    let line = lines.next().ok_or(Unreadable::Malformed)?;
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().filter(|m| !m.is_empty());
    let target = parts.next();
    let version = match parts.next() {
        Some(b"HTTP/0.9") => (0, 9),
        Some(b"HTTP/1.0") => (1, 0),
        Some(b"HTTP/1.1") => (1, 1),
        Some(b"HTTP/2.0") => (2, 0),
        Some(b"HTTP/3.0") => (3, 0),
        _ => return Err(Unreadable::Malformed),
    };
    let (Some(method), Some(target)) = (method, target) else {
        return Err(Unreadable::Malformed);
    };
    let mut n = 0;
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(Unreadable::Malformed);
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(Unreadable::Malformed)?;
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| *b == b' ' || *b == b'\t') {
            return Err(Unreadable::Malformed);
        }
        if n == N {
            return Err(Unreadable::TooManyFields);
        }
        fields[n] = (text(name), text(trim(&line[colon + 1..])));
        n += 1;
    }
    Ok(finish(text(method), text(target), version, &fields[..n]))
}

/// Whether every CR in `head` starts a CRLF and every LF ends one.
fn line_ends_paired(head: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', head).all(|i| match head[i] {
        b'\r' => head.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && head[i - 1] == b'\r',
    })
}

/// A head's bytes as the guard reads them. Only a head refused for its framing can hold
/// bytes that are not UTF-8 (its event escapes what it shows): they read as U+FFFD, which
/// the framing refuses as it refuses any byte outside ASCII.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("\u{fffd}")
}

/// Checks the framing of a head read into `fields`.
fn finish<'h>(
    method: &'h str,
    target: &'h str,
    version: (u8, u8),
    fields: &[(&'h str, &'h str)],
) -> Head<'h> {
    Head {
        method,
        target,
        version: match version {
            (1, 0) => (1, 0),
            _ => (1, 1),
        },
        fields: fields.len(),
        framing: framing(version, method.as_bytes(), target.as_bytes(), fields),
    }
}

/// The origin form of a request target (RFC 9112 §3.2): an absolute-form target
/// (`http://host/path?query`, which a server must accept, §3.2.2) without its scheme and
/// authority, `/` for an empty path; any other target as it is.
pub(crate) fn origin_form(target: &str) -> &str {
    let scheme = target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .or_else(|| {
            target
                .get(..8)
                .filter(|s| s.eq_ignore_ascii_case("https://"))
        });
    let Some(scheme) = scheme else {
        return target;
    };
    let rest = &target[scheme.len()..];
    match rest.find(['/', '?', '#']) {
        Some(at) if rest.as_bytes()[at] == b'/' => &rest[at..],
        // `http://host?query`: the path is `/`, and the query is dropped with it (the
        // guard never reads a query).
        _ => "/",
    }
}

fn split<'a>(bytes: &'a [u8], by: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(by.len()).position(|w| w == by) {
            Some(at) => {
                rest = Some(&r[at + by.len()..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| *b != b' ' && *b != b'\t');
    let end = value.iter().rposition(|b| *b != b' ' && *b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &value[s..=e],
        _ => &[],
    }
}

/// The framing and field syntax of a head (RFC 9112 §6.1-6.3, RFC 9110 §5.5, §5.6.2), as
/// main checked tiny_http's requests (src/http.rs `framing`).
///
/// Refused, as [`Reason::BadFraming`]: a method or field name that is not a token; a
/// target or field value with a control character or a byte outside ASCII; a version
/// other than 1.0 and 1.1; several `Content-Length` fields, or one
/// that is not a plain decimal number; several `Transfer-Encoding` fields, one that is
/// not exactly `chunked`, one with `Content-Length`, or one in an HTTP/1.0 request; a
/// `Connection` field naming `upgrade`. [`Reason::BodyTooLarge`]: a `Content-Length`
/// over [`MAX_BODY`].
pub(crate) fn framing(
    version: (u8, u8),
    method: &[u8],
    target: &[u8],
    fields: &[(&str, &str)],
) -> Result<Framing, Reason> {
    if !(version == (1, 0) || version == (1, 1)) || !is_token(method) {
        return Err(Reason::BadFraming);
    }
    if target.is_empty() || !every(target, |b| (b'!'..=b'~').contains(&b)) {
        return Err(Reason::BadFraming);
    }
    let (mut lengths, mut encodings) = (0, 0);
    let mut framing = Framing {
        body: Body::None,
        close: false,
        keep_alive: false,
        expect: Expect::None,
    };
    let mut chunked = false;
    let mut length = None;
    for (name, value) in fields {
        let (name, value) = (name.as_bytes(), value.as_bytes());
        if !is_token(name) || !every(value, |b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(Reason::BadFraming);
        }
        // Several `Host` fields do not frame anything: the guard refuses them
        // (`invalid_request`, src/host.rs) and the connection goes on.
        if name.eq_ignore_ascii_case(b"Content-Length") {
            lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Reason::BadFraming);
            }
            let digits = std::str::from_utf8(value).map_err(|_| Reason::BadFraming)?;
            length = Some(digits.parse::<u64>().map_err(|_| Reason::BadFraming)?);
        } else if name.eq_ignore_ascii_case(b"Transfer-Encoding") {
            encodings += 1;
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"Connection") {
            for option in value.split(|b| *b == b',').map(trim) {
                framing.close |= option.eq_ignore_ascii_case(b"close");
                framing.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
            if value.windows(7).any(|w| w.eq_ignore_ascii_case(b"upgrade")) {
                return Err(Reason::BadFraming);
            }
        } else if name.eq_ignore_ascii_case(b"Expect") {
            framing.expect = match value.eq_ignore_ascii_case(b"100-continue") {
                true if framing.expect != Expect::Other => Expect::Continue,
                _ => Expect::Other,
            };
        }
    }
    if lengths > 1
        || encodings > 1
        || (encodings == 1 && (!chunked || lengths > 0 || version == (1, 0)))
    {
        return Err(Reason::BadFraming);
    }
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(Reason::BodyTooLarge);
    }
    framing.body = match (length, chunked) {
        (_, true) => Body::Chunked,
        (Some(0) | None, false) => Body::None,
        (Some(n), false) => Body::Length(n),
    };
    Ok(framing)
}

/// Whether `ok` holds for every byte: one pass without an early exit, which the compiler
/// turns into 16 bytes a step (a token is most of a head).
fn every(bytes: &[u8], ok: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |all, &b| all & ok(b))
}

/// `tchar` of RFC 9110 §5.6.2, one or more.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Method, target, version and framing.
    type Read = (String, String, (u8, u8), Result<Framing, Reason>);

    fn read(head: &str) -> Result<Read, Unreadable> {
        let mut fields = [("", ""); MAX_HEADERS];
        let head = parse(head.as_bytes(), &mut fields)?;
        Ok((
            head.method.into(),
            head.target.into(),
            head.version,
            head.framing,
        ))
    }

    #[test]
    fn heads_are_read_strictly_and_refused_for_their_framing_or_answered_by_the_layer() {
        let ok = read("GET /a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((ok.0.as_str(), ok.1.as_str(), ok.2), ("GET", "/a", (1, 1)));
        assert!(ok.3.is_ok());
        // What tiny_http refused itself (no event), and what main refused for its framing.
        for (head, expected) in [
            (
                "GET /a HTTP/1.2\r\nHost: x\r\n\r\n",
                Err(Unreadable::Malformed),
            ),
            ("GET /a\r\nHost: x\r\n\r\n", Err(Unreadable::Malformed)),
            (
                "GET /a HTTP/1.1\r\nX Y: z\r\n\r\n",
                Err(Unreadable::Malformed),
            ),
            (
                "GET /a HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                Err(Unreadable::Malformed),
            ),
            (
                "GET /a HTTP/1.1\r\nnocolon\r\n\r\n",
                Err(Unreadable::Malformed),
            ),
            ("GET /a HTTP/2.0\r\nHost: x\r\n\r\n", Ok(Reason::BadFraming)),
            ("GET /a HTTP/0.9\r\nHost: x\r\n\r\n", Ok(Reason::BadFraming)),
            ("G@T /a HTTP/1.1\r\nHost: x\r\n\r\n", Ok(Reason::BadFraming)),
            ("GET /a HTTP/1.1\r\nX/Y: z\r\n\r\n", Ok(Reason::BadFraming)),
            ("GET /a HTTP/1.1\r\nX: a\rb\r\n\r\n", Ok(Reason::BadFraming)),
            (
                "GET /a HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            ("GET /a HTTP/1.1\r\nX: a\0b\r\n\r\n", Ok(Reason::BadFraming)),
            (
                "GET /a HTTP/1.1\r\nX: caf\u{e9}\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            (
                "POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            (
                "POST /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            (
                "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            (
                "POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            (
                "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            (
                "GET /a HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
                Ok(Reason::BadFraming),
            ),
            (
                "POST /a HTTP/1.1\r\nContent-Length: 16777217\r\n\r\n",
                Ok(Reason::BodyTooLarge),
            ),
        ] {
            let got = read(head).map(|r| r.3.expect_err(head));
            assert_eq!(got, expected, "{head:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_for_their_framing_wherever_they_are() {
        // The framing reads the head as strings, where such bytes become U+FFFD: it must
        // refuse them as it refuses any byte outside ASCII, on either reading of the head
        // (httparse takes them in a value; in a method, target or name it refuses them and
        // the lenient reading takes them).
        for head in [
            &b"G\xffT /a HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /a\xff HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /\xc3 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHo\xffst: x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nX-Y: a\xffb\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 5\xff\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\x80\r\n\r\n",
        ] {
            let mut fields = [("", ""); MAX_HEADERS];
            let framing = parse(head, &mut fields).map(|h| h.framing);
            let shown = String::from_utf8_lossy(head);
            assert_eq!(framing, Ok(Err(Reason::BadFraming)), "{shown:?}");
        }
    }

    #[test]
    fn absolute_form_targets_are_read_in_origin_form() {
        for (target, origin) in [
            ("http://example/api/x?a=1", "/api/x?a=1"),
            ("HTTPS://example:8443/api/x", "/api/x"),
            ("http://example", "/"),
            ("http://example?x", "/"),
            ("http://user@example/a", "/a"),
            ("/api/x", "/api/x"),
            ("*", "*"),
            ("httpx://example/a", "httpx://example/a"),
        ] {
            assert_eq!(origin_form(target), origin, "{target}");
        }
    }

    #[test]
    fn bodies_connection_options_and_expectations_are_read() {
        let framing = |head: &str| read(head).unwrap().3.unwrap();
        let f = framing(
            "POST /a HTTP/1.1\r\nContent-Length: 0005\r\nConnection: keep-alive, Close\r\n\r\n",
        );
        assert_eq!(
            (f.body, f.close, f.keep_alive),
            (Body::Length(5), true, true)
        );
        let f = framing(
            "POST /a HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!((f.body, f.expect), (Body::Chunked, Expect::Continue));
        assert_eq!(
            framing("GET /a HTTP/1.1\r\nExpect: 200-ok\r\n\r\n").expect,
            Expect::Other
        );
        let many = format!(
            "GET /a HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(read(&many).unwrap_err(), Unreadable::TooManyFields);
    }
}
