//! The upstream's response head: parsed where it lies (in the upstream connection's
//! input), its framing, and the head jwtguard writes to the client.

use std::io::Write as _;

use super::request_head::HOP_BY_HOP;
use crate::event::RequestId;

/// The most upstream response headers.
pub(crate) const MAX_HEADERS: usize = 128;

/// Room for [`MAX_HEADERS`] headers, for [`parse`] to fill ([`room`]).
pub(crate) type Storage<'b> = [httparse::Header<'b>; MAX_HEADERS];

/// An empty [`Storage`].
pub(crate) fn room<'b>() -> Storage<'b> {
    [httparse::EMPTY_HEADER; MAX_HEADERS]
}

/// What the start of a buffer holds.
pub(crate) enum Parsed<'h, 'b> {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response head of this many bytes, to be skipped.
    Interim(usize),
    /// The final response head, of this many bytes.
    Final(usize, Head<'h, 'b>),
}

/// A final response head, borrowed from the bytes it was parsed from.
pub(crate) struct Head<'h, 'b> {
    pub status: u16,
    reason: &'b str,
    headers: &'h [httparse::Header<'b>],
    /// Whether the upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

/// An upstream answer that is not valid HTTP/1.x, or is framed ambiguously
/// (`upstream_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// Parses the response head at the start of `buf`; an invalid one, or an upgrade (101),
/// is an upstream error.
pub(crate) fn parse<'h, 'b>(
    buf: &'b [u8],
    room: &'h mut Storage<'b>,
) -> Result<Parsed<'h, 'b>, Invalid> {
    let bad = || Invalid;
    let mut parsed = httparse::Response::new(room);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(bad()),
    };
    let status = parsed.code.ok_or_else(bad)?;
    if status == 101 {
        return Err(bad());
    }
    if (100..200).contains(&status) {
        return Ok(Parsed::Interim(len));
    }
    let http_1_1 = parsed.version == Some(1);
    let headers: &'h [httparse::Header<'b>] = parsed.headers;
    let mut keep_alive = http_1_1;
    for token in tokens(headers, "Connection") {
        if token.eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") && !http_1_1 {
            keep_alive = true;
        }
    }
    // Both framings: Transfer-Encoding wins, and the connection is closed after (RFC 9112
    // §6.3): what the upstream meant by the length cannot be trusted.
    if values(headers, "Transfer-Encoding").next().is_some()
        && values(headers, "Content-Length").next().is_some()
    {
        keep_alive = false;
    }
    Ok(Parsed::Final(
        len,
        Head {
            status,
            reason: parsed.reason.unwrap_or(""),
            headers,
            keep_alive,
        },
    ))
}

/// The values of the headers named `name`.
fn values<'a>(
    headers: &'a [httparse::Header<'_>],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The comma-separated tokens of the headers named `name`, trimmed, empty ones left out.
fn tokens<'a>(
    headers: &'a [httparse::Header<'_>],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// How the upstream's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Unknown,
}

/// Whether a header value can be passed on as it is: visible ASCII, spaces and tabs.
fn printable(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

impl Head<'_, '_> {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        values(self.headers, name)
    }

    /// The body's framing (RFC 9112 §6.3); an ambiguous one is an upstream error.
    pub(crate) fn framing(&self, head_request: bool) -> Result<Framing, Invalid> {
        let bad = || Invalid;
        if head_request || matches!(self.status, 204 | 304) {
            return Ok(Framing::None);
        }
        if let Some(last) = self.values("Transfer-Encoding").last() {
            let chunked = last
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
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

    /// Appends the head for the client to `out`: the upstream's status and end-to-end
    /// headers, the request id, and framing of jwtguard's own.
    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        id: Option<RequestId>,
        framing: Framing,
        closes: bool,
        client_1_0: bool,
    ) {
        let minor = if client_1_0 { 0 } else { 1 };
        let _ = write!(out, "HTTP/1.{minor} {} ", self.status);
        if printable(self.reason.as_bytes()) {
            out.extend_from_slice(self.reason.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        for header in self.headers {
            let name = header.name;
            let is = |other: &str| name.eq_ignore_ascii_case(other);
            if HOP_BY_HOP.iter().any(|n| is(n))
                || is("X-Request-Id")
                || tokens(self.headers, "Connection")
                    .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
                || !printable(header.value)
            {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(id) = id {
            out.extend_from_slice(b"X-Request-Id: ");
            out.extend_from_slice(id.text().as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match framing {
            Framing::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Framing::None => {
                // A HEAD (or 304) answer keeps the length its GET would have, when it is one
                // valid length; a 204 has none (RFC 9110 §8.6).
                let mut lengths = self.values("Content-Length");
                if let (Some(n), None) = (lengths.next(), lengths.next())
                    && !n.is_empty()
                    && n.iter().all(u8::is_ascii_digit)
                    && self.status != 204
                {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &[u8]) -> (usize, u16, bool, Result<Framing, Invalid>) {
        let mut space = room();
        match parse(raw, &mut space) {
            Ok(Parsed::Final(len, head)) => {
                (len, head.status, head.keep_alive, head.framing(false))
            }
            Ok(Parsed::Partial) => panic!("partial"),
            Ok(Parsed::Interim(_)) => panic!("interim"),
            Err(_) => panic!("error"),
        }
    }

    #[test]
    fn heads_parse_where_they_lie() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nHTTP/1.1";
        let (len, status, keep_alive, framing) = head_of(raw);
        assert_eq!((len, status, keep_alive), (38, 200, true));
        assert_eq!(framing.ok(), Some(Framing::Length(3)));
        let mut space = room();
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", &mut space),
            Ok(Parsed::Partial)
        ));
        let mut space = room();
        assert!(matches!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", &mut space),
            Ok(Parsed::Interim(25))
        ));
        for bad in [&b"HTTP/1.1 101 Switching\r\n\r\n"[..], b"not http\r\n\r\n"] {
            let mut space = room();
            assert!(parse(bad, &mut space).is_err());
        }
        let (_, _, keep_alive, framing) = head_of(b"HTTP/1.0 200 OK\r\n\r\n");
        assert!(!keep_alive);
        assert_eq!(framing.ok(), Some(Framing::Unknown));
        let (_, _, keep_alive, _) =
            head_of(b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(!keep_alive);
        let (_, _, _, framing) =
            head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n");
        assert!(framing.is_err(), "two lengths");
        let (_, _, _, framing) =
            head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(framing.ok(), Some(Framing::Chunked));
    }

    #[test]
    fn both_framings_close_the_upstream_connection_after() {
        let (_, _, keep_alive, framing) =
            head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(framing.ok(), Some(Framing::Chunked));
        assert!(!keep_alive, "RFC 9112 §6.3: closed after");
    }

    #[test]
    fn an_answer_without_a_body_passes_on_only_a_valid_length() {
        let cases: [(&[u8], &str); 5] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                "Content-Length: 12\r\n",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", ""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", ""),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "",
            ),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", ""),
        ];
        for (raw, want) in cases {
            let mut space = room();
            let Ok(Parsed::Final(_, head)) = parse(raw, &mut space) else {
                panic!()
            };
            let mut out = Vec::new();
            head.write(&mut out, None, Framing::None, false, false);
            let text = String::from_utf8(out).unwrap();
            let (_, headers) = text.split_once("\r\n").unwrap();
            assert_eq!(headers, format!("{want}\r\n"), "{raw:?}");
        }
    }

    #[test]
    fn the_client_gets_end_to_end_headers_and_framing_of_jwtguards_own() {
        let raw = b"HTTP/1.1 200 Fine\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\
                    X-Request-Id: forged\r\nX-App: yes\r\nContent-Length: 2\r\n\r\n";
        let mut space = room();
        let Ok(Parsed::Final(_, head)) = parse(raw, &mut space) else {
            panic!()
        };
        let mut out = Vec::new();
        head.write(&mut out, None, Framing::Length(2), true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nX-App: yes\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }
}
