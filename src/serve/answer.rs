//! jwtguard's own answers as bytes: the status line, `Date`, `Content-Type`,
//! `Content-Length`, the reply's headers and its small JSON body, written whole into the
//! connection's output so that one `send` carries it (and the answers pipelined with it).

use crate::reply::Reply;

/// How to frame one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    /// The request's minor version: 0 is answered in HTTP/1.0, anything else in 1.1.
    pub minor: u8,
    /// A `HEAD` request: the head only.
    pub head_only: bool,
    /// `Connection: close`, and the connection ends after it.
    pub close: bool,
}

/// Appends `reply` to `out`; `body` is scratch space.
pub(crate) fn push(reply: &Reply, framing: Framing, out: &mut Vec<u8>, body: &mut Vec<u8>) {
    let mut digits = itoa::Buffer::new();
    let status = reply.status();
    body.clear();
    reply.push_body(body);
    out.extend_from_slice(match framing.minor {
        0 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    out.extend_from_slice(digits.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(phrase(status).as_bytes());
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
    if framing.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if framing.minor == 0 {
        // An HTTP/1.0 client that asked to keep the connection is told it is kept.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !framing.head_only {
        out.extend_from_slice(body);
    }
}

/// The reason phrase of each status jwtguard answers (RFC 9110 §15).
fn phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;
    use crate::event::RequestId;
    use crate::guard::{Allowed, Refused};

    /// Without the Date line.
    fn dateless(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.starts_with("Date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn every_status_a_reason_answers_has_its_phrase() {
        for reason in Reason::ALL {
            assert_ne!(phrase(reason.status()), "Unknown", "{reason:?}");
        }
    }

    #[test]
    #[cfg(feature = "tiny_http")]
    fn answers_are_byte_for_byte_what_main_wrote() {
        let allowed = Allowed::for_test(RequestId::new(0xab, 7), "al\"ice\u{e9}");
        let refused = Refused::for_test(RequestId::new(0xab, 8), Some(Reason::BadSignature));
        let lost = Refused::for_test(RequestId::new(0xab, 9), None);
        let replies = [
            Reply::Allowed(&allowed),
            Reply::Refused(&refused),
            Reply::Refused(&lost),
            Reply::Health {
                log_failing: false,
                draining: true,
                no_keys: false,
            },
            Reply::NotFound,
            Reply::TooLarge,
            Reply::Status(408, None),
            Reply::Open(vec!["X-Auth-User"]),
        ];
        for reply in &replies {
            for minor in [0, 1] {
                for head_only in [false, true] {
                    for close in [false, true] {
                        let mut ours = Vec::new();
                        let framing = Framing {
                            minor,
                            head_only,
                            close: close || minor == 0,
                        };
                        push(reply, framing, &mut ours, &mut Vec::new());
                        let mut main = Vec::new();
                        let version = tiny_http::HTTPVersion(1, minor);
                        crate::http::wire_raw(
                            reply,
                            close || minor == 0,
                            &version,
                            head_only,
                            &mut main,
                            &mut Vec::new(),
                        );
                        assert_eq!(dateless(&ours), dateless(&main));
                    }
                }
            }
        }
        let mut kept = Vec::new();
        let framing = Framing {
            minor: 0,
            head_only: false,
            close: false,
        };
        push(&Reply::NotFound, framing, &mut kept, &mut Vec::new());
        assert!(dateless(&kept).contains("\r\nConnection: keep-alive\r\n"));
        // The statuses only this layer answers, with their own phrases.
        for (status, phrase) in [
            (417, "Expectation Failed"),
            (431, "Request Header Fields Too Large"),
        ] {
            let mut out = Vec::new();
            let framing = Framing {
                minor: 1,
                head_only: false,
                close: true,
            };
            push(
                &Reply::Status(status, None),
                framing,
                &mut out,
                &mut Vec::new(),
            );
            assert!(out.starts_with(format!("HTTP/1.1 {status} {phrase}\r\n").as_bytes()));
        }
    }
}
