//! The `Host` header a request may carry (RFC 9110 §7.2, RFC 9112 §3.2): one, and its value
//! an authority the application behind can route by, never a list, a path or a second
//! header smuggled in after a tab.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Whether a request's `Host` values are acceptable: at most one, and that one
/// [`is_authority`]; none only when `required` is false (HTTP/1.0).
pub(crate) fn acceptable<'a>(mut values: impl Iterator<Item = &'a str>, required: bool) -> bool {
    match (values.next(), values.next()) {
        (None, _) => !required,
        (Some(value), None) => is_authority(value),
        (Some(_), Some(_)) => false,
    }
}

/// `uri-host [ ":" port ]` of RFC 9110 §7.2, stricter in what no client sends:
///
/// - a reg-name (RFC 3986 §3.2.2) without `,`: a comma is how several `Host` values
///   joined into a list look, and `Host` is a single value; without `%`: percent-encoded
///   reg-names are legal but no client sends them, and an application that decodes one
///   could find `/` or NUL in it; without an empty label (`a..b`, `.a`): `..` in a Host an
///   application puts in a file path climbs out of it (nginx refuses it for that too); a
///   single trailing dot (`example.com.`) is kept;
/// - a name whose last label is a number (`127.1`, `2130706433`, `0x7f.1`) only as a
///   dotted-quad IPv4 address: resolvers and URL parsers read the others as IPv4 addresses
///   of their own (`inet_aton`, WHATWG), and the application would route by another host;
/// - an IPv6 address in brackets; no zone (`%25eth0`, never sent on the wire) and no
///   IPvFuture (no client sends it);
/// - a port of one to five digits, at most 65535; an empty port (`host:`, legal) is
///   refused, since RFC 3986 §3.2.3 says to omit the `:` then and a port parser behind
///   may not expect it;
/// - an empty host is refused: every target jwtguard serves has an authority.
fn is_authority(value: &str) -> bool {
    // A `:` after a bracketed IPv6 address, or the only one in a name, starts the port.
    let (host, port) = match value.rfind(':') {
        Some(at) if !value.ends_with(']') => (&value[..at], Some(&value[at + 1..])),
        _ => (value, None),
    };
    port.is_none_or(is_port) && is_host(host)
}

/// One to five digits (an empty port fails to parse), at most 65535.
fn is_port(port: &str) -> bool {
    port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|n| n <= 65535)
}

fn is_host(host: &str) -> bool {
    if let Some(ip) = host.strip_prefix('[') {
        return ip
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // One pass over the bytes (this runs on every request): reg-name bytes, no empty label.
    let mut label = 0;
    for (i, &b) in name.as_bytes().iter().enumerate() {
        if b == b'.' {
            if i == label {
                return false;
            }
            label = i + 1;
        } else if !REG_NAME[usize::from(b)] {
            return false;
        }
    }
    let last = &name[label..];
    !last.is_empty() && (!is_number(last) || host.parse::<Ipv4Addr>().is_ok())
}

/// The reg-name bytes (RFC 3986 §3.2.2: unreserved or sub-delims) but `.`, which separates
/// labels, and `,`; `%` is left out too, so no pct-encoded triplet either.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let others = b"-_~!$&'()*+;=";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether a label reads as a number to an IPv4 parser: decimal digits, or `0x` and hex.
fn is_number(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_clients_send_are_accepted() {
        for value in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com",
            "example.com.",
            "localhost",
            "x",
            "xn--bcher-kva.example",
            "under_score.example",
            "127.0.0.1",
            "127.0.0.1:1",
            "0.0.0.0:65535",
            "host:0",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::a:b]:443",
            "[::ffff:192.0.2.1]",
            "a-b.c~d!$&'()*+;=",
            "1a.example",
            "example.123a",
        ] {
            assert!(is_authority(value), "{value:?}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for value in [
            "",
            ":80",
            "x\tX-Auth-User: root",
            "a b",
            "a,b",
            "a, b",
            "a/b",
            "a\\b",
            "a?b",
            "a#b",
            "a@b",
            "user@example.com",
            "a%2Fb",
            "a%41",
            "a\"b",
            "a<b>",
            "a..b",
            ".a",
            "..",
            ".",
            "a.b..",
            "example.com:",
            "example.com:80:80",
            "example.com:65536",
            "example.com:123456",
            "example.com:000080",
            "example.com:0080x",
            "example.com:+80",
            "example.com: 80",
            "example.com:-1",
            "é.example",
            "::1",
            "[::1",
            "::1]",
            "[::1]:",
            "[::1]x",
            "[::1]:99999",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "[127.0.0.1]",
            "[]",
            "999.1.1.1",
            "127.1",
            "1.2.3",
            "2130706433",
            "0x7f.0.0.1",
            "1.0x1",
            "0177.0.0.1",
            "1.2.3.4.",
            "example.0x",
        ] {
            assert!(!is_authority(value), "{value:?}");
        }
    }

    #[test]
    fn exactly_one_host_or_none_when_not_required() {
        let one = ["example.com"];
        let two = ["example.com", "example.com"];
        assert!(acceptable(one.into_iter(), true));
        assert!(acceptable(one.into_iter(), false));
        assert!(!acceptable(two.into_iter(), true));
        assert!(!acceptable(two.into_iter(), false));
        assert!(!acceptable(std::iter::empty(), true));
        assert!(acceptable(std::iter::empty(), false));
        assert!(!acceptable(["a b"].into_iter(), false));
    }

    /// lexopt's basic_fuzz idea: every short string over an awkward alphabet, no panic, and
    /// nothing accepted that could be a list, a path, whitespace, an escape or a second
    /// port.
    #[test]
    fn the_host_parser_never_panics_nor_lets_through_a_separator() {
        let alphabet = [
            "a", "1", ".", ":", "[", "]", "::1", ",", "%", " ", "\t", "/", "é",
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
        }
        for input in &inputs {
            if is_authority(input) {
                assert!(
                    !input.contains([',', '%', ' ', '\t', '/', '\u{e9}']) && !input.is_empty(),
                    "{input:?}"
                );
                let outside = input.rsplit(']').next().unwrap_or(input);
                assert!(outside.matches(':').count() <= 1, "{input:?}");
            }
        }
    }
}
