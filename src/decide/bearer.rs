//! The bearer token of a request's `Authorization` headers (RFC 6750 §2.1).

use crate::Reason;

/// Extracts the bearer token from the values of a request's `Authorization` headers
/// (RFC 6750 §2.1): `Bearer`, case-insensitive, one or more spaces, then a `b64token`
/// of at most `max_bytes` bytes.
pub(crate) fn bearer_token<'a>(
    values: impl IntoIterator<Item = &'a str>,
    max_bytes: usize,
) -> Result<&'a str, Reason> {
    let mut values = values.into_iter();
    let value = values.next().ok_or(Reason::MissingToken)?;
    if values.next().is_some() {
        return Err(Reason::InvalidRequest);
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.is_empty() {
        return Err(Reason::InvalidRequest);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::UnsupportedScheme);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.len() > max_bytes || !is_b64token(token) {
        return Err(Reason::InvalidRequest);
    }
    Ok(token)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Every byte, without an early exit: the compiler checks 16 bytes a step.
    !body.is_empty()
        && body.bytes().fold(true, |all, c| {
            all & (c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_cases() {
        let ok = |v: &'static str| bearer_token([v], 16);
        assert_eq!(ok("Bearer abc"), Ok("abc"));
        assert_eq!(ok("bearer abc"), Ok("abc"));
        assert_eq!(ok("BEARER abc"), Ok("abc"));
        assert_eq!(ok("Bearer   abc"), Ok("abc"));
        assert_eq!(ok("Bearer a-b.c_d~e+f/g=="), Ok("a-b.c_d~e+f/g=="));
        assert_eq!(ok("Bearer 0123456789abcdef"), Ok("0123456789abcdef"));
        let cases = [
            ("Basic dXNlcjpwYXNz", Reason::UnsupportedScheme),
            ("Bearerabc", Reason::UnsupportedScheme),
            ("Token abc", Reason::UnsupportedScheme),
            ("", Reason::InvalidRequest),
            ("Bearer", Reason::InvalidRequest),
            ("Bearer ", Reason::InvalidRequest),
            ("Bearer a b", Reason::InvalidRequest),
            ("Bearer a,b", Reason::InvalidRequest),
            ("Bearer ===", Reason::InvalidRequest),
            ("Bearer a=b", Reason::InvalidRequest),
            ("Bearer a\tb", Reason::InvalidRequest),
            ("Bearer \"abc\"", Reason::InvalidRequest),
            ("Bearer 0123456789abcdefX", Reason::InvalidRequest),
        ];
        for (value, want) in cases {
            assert_eq!(ok(value), Err(want), "{value:?}");
        }
        assert_eq!(bearer_token([], 16), Err(Reason::MissingToken));
        assert_eq!(
            bearer_token(["Bearer a", "Bearer a"], 16),
            Err(Reason::InvalidRequest)
        );
    }

    /// lexopt's basic_fuzz idea: every short string over an awkward alphabet, no panic,
    /// and any token returned is a non-empty b64token within the cap.
    #[test]
    fn bearer_parser_never_panics() {
        let alphabet = [
            "B", "bearer", "Bearer", " ", "\t", "=", "a", ".", "é", "\r", ",", "\"",
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
            inputs.dedup();
        }
        for input in &inputs {
            if let Ok(token) = bearer_token([input.as_str()], 8) {
                assert!(!token.is_empty() && token.len() <= 8 && is_b64token(token));
            }
        }
    }
}
