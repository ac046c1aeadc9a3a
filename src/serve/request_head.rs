//! The request head jwtguard sends upstream, from plain parts, written in two steps: what
//! the request says while its bytes are at hand ([`start`]), and what the decision adds
//! once its event is written ([`end`]).
//!
//! The rules: hop-by-hop headers, and those the `Connection` list names (never `Host` nor
//! `Authorization`), are dropped; so are a client's own identity headers, `X-Request-Id`,
//! `X-Forwarded-For`, names with `_`, and the headers apps route by (`X-Original-URL`,
//! `X-Rewrite-URL`); `X-Forwarded-Proto`/`-Host`/`-Prefix`/`-Port`, `Forwarded` and
//! `X-Real-IP` go on only from a trusted proxy. Then jwtguard adds `X-Forwarded-*`, the
//! identity, the request id and the framing it sends the body with.

use std::io::Write as _;
use std::net::IpAddr;

use crate::Headers as _;
use crate::event::RequestId;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and those
/// jwtguard sets itself on the way to the upstream.
pub(crate) const HOP_BY_HOP: [&str; 10] = [
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Content-Length",
];

/// How the body goes upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// No body, and no framing header.
    None,
    /// `Content-Length` (also 0: a POST without a body says so).
    Length(u64),
    Chunked,
}

/// A request as it came, in plain parts.
pub(crate) struct Parts<'a> {
    pub method: &'a str,
    /// The normalised path and the query.
    pub target: &'a str,
    /// Every header, in order.
    pub headers: &'a [(&'a str, &'a str)],
    pub peer: Option<IpAddr>,
    /// Whether the peer is a `--trusted-proxy`.
    pub trusted: bool,
}

/// Appends the request line and the request's own headers, as the rules keep them, and
/// `X-Forwarded-*`: all that is known before the decision is settled (the event loop
/// writes this while the request's bytes are at hand, and [`end`] after the group commit).
pub(crate) fn start(
    out: &mut Vec<u8>,
    parts: &Parts<'_>,
    strip_authorization: bool,
    identity_names: &[String],
) {
    let headers = parts.headers;
    let trusted = parts.trusted;
    let listed = |name: &str| {
        headers
            .values("Connection")
            .flat_map(|v| v.split(','))
            .any(|n| n.trim().eq_ignore_ascii_case(name))
    };
    out.extend_from_slice(parts.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let header = |out: &mut Vec<u8>, name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    let host = headers.values("Host").next();
    for &(name, value) in headers {
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        // A name with "_": CGI-style apps read it as its "-" twin (X-Auth_User as
        // X-Auth-User), so none goes on, as with nginx's underscores_in_headers off.
        let dropped = name.contains('_')
            || HOP_BY_HOP.iter().any(|n| is(n))
            || is("Expect")
            || is("X-Request-Id")
            || (is("Authorization") && strip_authorization)
            || identity_names.iter().any(|n| is(n))
            || is("X-Forwarded-For")
            // Apps (Symfony, IIS rewrites) route by these: a client would name a path
            // other than the one the guard decided on.
            || is("X-Original-URL")
            || is("X-Rewrite-URL")
            || ((is("X-Forwarded-Proto")
                || is("X-Forwarded-Host")
                || is("X-Forwarded-Prefix")
                || is("X-Forwarded-Port")
                || is("Forwarded")
                || is("X-Real-IP"))
                && !trusted)
            // The Connection list names hop-by-hop headers, never Host nor
            // Authorization: those are the request's own.
            || (listed(name) && !is("Host") && !is("Authorization"));
        if !dropped {
            header(out, name, value);
        }
    }
    if host.is_none() {
        header(out, "Host", "localhost");
    }
    // A trusted proxy's list, and the peer.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if trusted {
        for earlier in headers.values("X-Forwarded-For") {
            out.extend_from_slice(earlier.as_bytes());
            out.extend_from_slice(b", ");
        }
    }
    if let Some(peer) = parts.peer {
        let _ = write!(out, "{peer}");
    }
    out.extend_from_slice(b"\r\n");
    if !(trusted && headers.values("X-Forwarded-Proto").next().is_some()) {
        header(out, "X-Forwarded-Proto", "http");
    }
    if !(trusted && headers.values("X-Forwarded-Host").next().is_some())
        && let Some(host) = host
    {
        header(out, "X-Forwarded-Host", host);
    }
}

/// Appends the identity headers, the request id and the body's framing, and ends the head.
pub(crate) fn end<'i>(
    out: &mut Vec<u8>,
    identity: impl Iterator<Item = (&'i str, &'i str)>,
    id: Option<RequestId>,
    body: Body,
) {
    let header = |out: &mut Vec<u8>, name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in identity {
        header(out, name, value);
    }
    if let Some(id) = id {
        header(out, "X-Request-Id", id.text().as_str());
    }
    match body {
        Body::Chunked => header(out, "Transfer-Encoding", "chunked"),
        Body::Length(n) => header(out, "Content-Length", itoa::Buffer::new().format(n)),
        Body::None => {}
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head for `headers` from `peer` (trusted or not), as text, for a public request.
    fn head(headers: &[(&str, &str)], trusted: bool, body: Body) -> String {
        let mut out = Vec::new();
        let parts = Parts {
            method: "POST",
            target: "/orders?x=1",
            headers,
            peer: Some([192, 0, 2, 7].into()),
            trusted,
        };
        let names = ["X-Auth-User".to_owned(), "X-Team".to_owned()];
        start(&mut out, &parts, false, &names);
        end(&mut out, [("X-Auth-User", "alice")].into_iter(), None, body);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forged_routing_and_hop_by_hop_headers_never_go_upstream() {
        let sent = [
            ("Host", "app.example"),
            ("Authorization", "Bearer t"),
            ("Connection", "keep-alive, X-Secret, Host, Authorization"),
            ("X-Secret", "hop"),
            ("X-Auth-User", "root"),
            ("x-team", "admins"),
            ("X-Auth_User", "root"),
            ("X-Request-Id", "forged"),
            ("X-Original-URL", "/admin"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Prefix", "/admin"),
            ("Forwarded", "for=10.0.0.1"),
            ("Transfer-Encoding", "chunked"),
            ("Expect", "100-continue"),
            ("Accept", "*/*"),
        ];
        assert_eq!(
            head(&sent, false, Body::Chunked),
            "POST /orders?x=1 HTTP/1.1\r\n\
             Host: app.example\r\n\
             Authorization: Bearer t\r\n\
             Accept: */*\r\n\
             X-Forwarded-For: 192.0.2.7\r\n\
             X-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: app.example\r\n\
             X-Auth-User: alice\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn a_trusted_proxy_keeps_its_forwarded_headers_and_its_list_is_extended() {
        let sent = [
            ("X-Forwarded-For", "203.0.113.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.example"),
            ("X-Real-IP", "203.0.113.1"),
        ];
        assert_eq!(
            head(&sent, true, Body::Length(0)),
            "POST /orders?x=1 HTTP/1.1\r\n\
             X-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: public.example\r\n\
             X-Real-IP: 203.0.113.1\r\n\
             Host: localhost\r\n\
             X-Forwarded-For: 203.0.113.1, 192.0.2.7\r\n\
             X-Auth-User: alice\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }
}
