//! The path a request is judged by: normalised, so that `/api/../admin`, `//admin` and
//! `/%61dmin` are all `/admin` and cannot slip past a prefix; refused when it cannot be
//! normalised safely.

use std::borrow::Cow;

/// Why a path cannot be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadPath;

/// The normalised path of a request target (its query and fragment set aside):
/// percent-encoded unreserved characters decoded (`%61` is `a`; RFC 3986 §6.2.2.2), the
/// other escapes kept with upper-case hex, empty segments (`//`) dropped, and `.` and `..`
/// segments resolved (RFC 3986 §5.2.4); a trailing `/` is kept.
///
/// Refused: a target that does not start with `/`; an encoded `/` or `\` (`%2F`, `%5C`),
/// which the application behind may or may not take for a separator; a backslash; NUL,
/// encoded or not, or any control character; a `%` not followed by two hex digits; an
/// encoded `.` that makes a dot segment; and `..` that climbs above the root.
pub(crate) fn normalise(target: &str) -> Result<Cow<'_, str>, BadPath> {
    let path = crate::guard::path_of(target);
    if !path.starts_with('/') {
        return Err(BadPath);
    }
    if is_clean(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    normalise_slowly(path).map(Cow::Owned)
}

/// Whether `path` (starting with `/`) is its own normal form: printable ASCII, no `%` or
/// `\\`, and no empty segment but a last one, no `.` or `..` segment. One pass over the
/// bytes: `str::contains` on a path as short as most are compares at every position.
fn is_clean(path: &[u8]) -> bool {
    let mut segment = 1;
    for (i, &b) in path.iter().enumerate().skip(1) {
        match b {
            b'%' | b'\\' => return false,
            b'/' => {
                if matches!(&path[segment..i], b"" | b"." | b"..") {
                    return false;
                }
                segment = i + 1;
            }
            b'!'..=b'~' => {}
            _ => return false,
        }
    }
    !matches!(&path[segment..], b"." | b"..")
}

/// [`normalise`] for a path that is not clean.
fn normalise_slowly(path: &str) -> Result<String, BadPath> {
    let mut segments: Vec<String> = Vec::new();
    let trailing = path.ends_with('/');
    for raw in path.split('/').skip(1) {
        let segment = decode_segment(raw)?;
        match segment.as_str() {
            "" => {}
            "." => {
                if raw != "." {
                    return Err(BadPath);
                }
            }
            ".." => {
                if raw != ".." || segments.pop().is_none() {
                    return Err(BadPath);
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    let last_is_dot = path
        .rsplit('/')
        .next()
        .is_some_and(|s| s == "." || s == "..");
    if out.is_empty() || ((trailing || last_is_dot) && !out.ends_with('/')) {
        out.push('/');
    }
    Ok(out)
}

/// One segment with its unreserved escapes decoded and the others kept (upper-case).
fn decode_segment(raw: &str) -> Result<String, BadPath> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(BadPath)?;
                let value = (hex_digit(hex[0])? << 4) | hex_digit(hex[1])?;
                match value {
                    b'/' | b'\\' | 0 => return Err(BadPath),
                    _ if value.is_ascii_alphanumeric()
                        || matches!(value, b'-' | b'.' | b'_' | b'~') =>
                    {
                        out.push(value as char)
                    }
                    _ => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(value >> 4)]));
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(value & 15)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(BadPath),
            b'!'..=b'~' => {
                out.push(b as char);
                i += 1;
            }
            _ => return Err(BadPath),
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Result<u8, BadPath> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(BadPath),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_spellings_become_one_path() {
        let cases = [
            ("/api/x", "/api/x"),
            ("/api/x?q=1", "/api/x"),
            ("/api/x/", "/api/x/"),
            ("/", "/"),
            ("//api//x", "/api/x"),
            ("/./api/./x", "/api/x"),
            ("/public/../api/x", "/api/x"),
            ("/api/x/..", "/api/"),
            ("/api/x/.", "/api/x/"),
            ("/%61pi/x", "/api/x"),
            ("/%7Euser", "/~user"),
            ("/a%20b", "/a%20b"),
            ("/a%2bb", "/a%2Bb"),
            ("/api/x%3Fnot-a-query", "/api/x%3Fnot-a-query"),
        ];
        for (target, want) in cases {
            assert_eq!(normalise(target).as_deref(), Ok(want), "{target}");
        }
    }

    #[test]
    fn what_cannot_be_normalised_safely_is_refused() {
        for target in [
            "api/x",
            "*",
            "http://host/api",
            "/api%2Fx",
            "/api%2fx",
            "/api%5Cx",
            "/api\\x",
            "/api%00",
            "/api/%2e%2e/admin",
            "/api/%2E",
            "/..",
            "/a/../..",
            "/api%",
            "/api%4",
            "/api%zz",
            "/api\u{1}",
            "/api x",
        ] {
            assert_eq!(normalise(target), Err(BadPath), "{target}");
        }
    }

    proptest::proptest! {
        /// The shortcut takes only paths that the full normalisation leaves as they are.
        #[test]
        fn the_clean_path_shortcut_agrees_with_the_full_normalisation(
            path in r"(/(|\.|\.\.|a|\.a|%61|%2e|%E2|%|\\| |~|\x7f)){1,5}/?"
        ) {
            if is_clean(path.as_bytes()) {
                proptest::prop_assert_eq!(normalise_slowly(&path), Ok(path));
            }
        }
    }

    #[test]
    fn a_clean_path_is_not_copied() {
        assert!(matches!(
            normalise("/api/protected?x=1"),
            Ok(Cow::Borrowed("/api/protected"))
        ));
    }
}
