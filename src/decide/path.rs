//! The path a request is judged by: normalised, so that `/api/../admin`, `//admin` and
//! `/%61dmin` are all `/admin` and cannot slip past a prefix; refused when it cannot be
//! normalised safely. And its other readings: what Tomcat, Jetty or Spring (`;parameters`
//! removed) and IIS (case and trailing dots ignored) make of it, so that a prefix is judged
//! against the path the application behind will route.

use std::borrow::Cow;

/// The path of a request target, without the query string or fragment.
pub(crate) fn path_of(target: &str) -> &str {
    match target.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => &target[..end],
        None => target,
    }
}

/// Why a path cannot be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadPath;

/// The normalised path of a request target (its query and fragment set aside):
/// percent-encoded unreserved characters decoded (`%61` is `a`; RFC 3986 §6.2.2.2), the
/// other escapes kept with upper-case hex, empty segments (`//`) dropped, and `.` and `..`
/// segments resolved (RFC 3986 §5.2.4); a trailing `/` is kept.
///
/// Refused: a target that does not start with `/`; an encoded `/`, `\` or `;` (`%2F`,
/// `%5C`, `%3B`), which the application behind may or may not take for a separator; a
/// backslash; NUL, encoded or not, or any control character; a `%` not followed by two
/// hex digits; an encoded `.` that makes a dot segment; and `..` that climbs above the root.
pub(crate) fn normalise(target: &str) -> Result<Cow<'_, str>, BadPath> {
    let path = path_of(target);
    if !path.starts_with('/') {
        return Err(BadPath);
    }
    if shape(path.as_bytes()) != Shape::Unclean {
        return Ok(Cow::Borrowed(path));
    }
    normalise_slowly(path).map(Cow::Owned)
}

/// How a reading is compared with a configured prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// As it is.
    Exact,
    /// With the prefix [`fold`]ed too: the reading of a case-insensitive backend.
    Folded,
}

/// Every reading a common backend may give one request path: the normalised path
/// ([`normalise`]), the normalised path with each segment's `;parameters` removed before
/// dot segments are resolved (Tomcat, Jetty, Spring: `/x/..;/admin` is `/admin`), and
/// each of these [`fold`]ed (IIS).
#[derive(Debug)]
pub(crate) struct Readings<'a> {
    /// What the log records and the upstream receives.
    normal: Cow<'a, str>,
    /// Whether `normal` is its own fold, so that it is a folded reading too.
    normal_folds: bool,
    /// The readings that differ from those of `normal`, each once.
    others: Vec<(String, Kind)>,
}

impl Readings<'_> {
    /// The normalised path.
    pub(crate) fn normal(&self) -> &str {
        &self.normal
    }

    /// Each reading, with how it is to be compared; the normalised path first. The folded
    /// reading that is the normalised path itself only with `folded_prefixes` (some prefix
    /// differs from its fold): compared with prefixes that do not, it is the first again.
    pub(crate) fn iter(&self, folded_prefixes: bool) -> impl Iterator<Item = (&str, Kind)> {
        let normal = self.normal.as_ref();
        std::iter::once((normal, Kind::Exact))
            .chain((self.normal_folds && folded_prefixes).then_some((normal, Kind::Folded)))
            .chain(
                self.others
                    .iter()
                    .map(|(path, kind)| (path.as_str(), *kind)),
            )
    }
}

/// The readings of a request target's path; refused when any of them cannot be made
/// safely ([`normalise`], [`fold`]). A clean path without `;`, upper-case letters or a
/// segment ending in `.` is all its readings at once, and is not copied.
pub(crate) fn readings(target: &str) -> Result<Readings<'_>, BadPath> {
    let path = path_of(target);
    if !path.starts_with('/') {
        return Err(BadPath);
    }
    let normal = match shape(path.as_bytes()) {
        Shape::Plain => {
            return Ok(Readings {
                normal: Cow::Borrowed(path),
                normal_folds: true,
                others: Vec::new(),
            });
        }
        Shape::Clean => Cow::Borrowed(path),
        Shape::Unclean => Cow::Owned(normalise_slowly(path)?),
    };
    let mut others = Vec::new();
    let mut add = |path: String, kind| {
        if !others.iter().any(|(p, k)| *p == path && *k == kind) {
            others.push((path, kind));
        }
    };
    // From the target as received, as the backend reads it: parameters removed and
    // segments folded before dot segments are resolved, so that `..;` and `..%20` are `..`.
    let normal_folded = fold(path)?;
    let normal_folds = normal_folded == *normal;
    if path.contains(';') {
        if !params_keep_segments(path) {
            return Err(BadPath);
        }
        let without = without_params(path);
        let params = normalise(&without)?.into_owned();
        let params_folded = fold(&without)?;
        if params != *normal {
            add(params, Kind::Exact);
        }
        if params_folded != normal_folded {
            add(params_folded, Kind::Folded);
        }
    }
    if !normal_folds {
        add(normal_folded, Kind::Folded);
    }
    Ok(Readings {
        normal,
        normal_folds,
        others,
    })
}

/// Whether removing each segment's parameters leaves every segment that has some a name:
/// not empty, `.` or `..` once decoded (`;x`, `.;x`, `..;`, `%2e%2e;`). Such a segment is
/// a name to [`normalise`] and a dot segment or nothing to a backend that drops parameters,
/// so the two would resolve `..` differently: `/admin;x/.;/../secret` is forwarded as
/// `/admin;x/secret`, which Tomcat routes to `/admin/secret`. With none of them, removing
/// parameters before or after normalising gives the same path, and what the app receives
/// (the normalised path) reads as the readings say.
fn params_keep_segments(path: &str) -> bool {
    path.split('/')
        .all(|segment| match segment.split_once(';') {
            None => true,
            Some((name, _)) => {
                decode_segment(name).is_ok_and(|name| !matches!(name.as_str(), "" | "." | ".."))
            }
        })
}

/// `path` with each segment's parameters (from its first `;`) removed.
fn without_params(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split_once(';').map_or(segment, |(kept, _)| kept));
    }
    out
}

/// A path (as sent, or a prefix) as a case-insensitive backend that ignores trailing dots
/// and spaces (IIS, Windows) takes it: normalised ([`normalise`]) with each segment folded
/// ([`fold_segment`]) before dot segments are resolved, so that `/x/..%20/..` is refused
/// rather than read as `/x/` (IIS may take `..%20` for `..`).
pub(crate) fn fold(path: &str) -> Result<String, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath);
    }
    normalise_with(path, fold_segment)
}

/// One decoded segment but `.` and `..`, as IIS takes it: the dots and `%20`s at its end
/// removed, ASCII letters in lower case, and the escaped non-ASCII letters whose case
/// mapping is an ASCII letter (the Kelvin sign, `ſ`, `ı`, `İ`) replaced by it. Refused: a
/// segment of dots and spaces only (`...`, `..%20`), which Windows may take for `..`.
fn fold_segment(segment: String) -> Result<String, BadPath> {
    /// UTF-8 escapes that case-fold onto an ASCII letter, and that letter.
    const ONTO_ASCII: [(&str, char); 4] = [
        ("%E2%84%AA", 'k'),
        ("%C5%BF", 's'),
        ("%C4%B0", 'i'),
        ("%C4%B1", 'i'),
    ];
    if segment == "." || segment == ".." {
        return Ok(segment);
    }
    let mut rest = segment.as_str();
    while let Some(shorter) = rest.strip_suffix('.').or_else(|| rest.strip_suffix("%20")) {
        rest = shorter;
    }
    if rest.is_empty() && !segment.is_empty() {
        return Err(BadPath);
    }
    let mut out = String::with_capacity(rest.len());
    while let Some(c) = rest.chars().next() {
        let mapped = ONTO_ASCII
            .iter()
            .find(|(escape, _)| rest.starts_with(escape));
        let taken = match (c, mapped) {
            (_, Some((escape, letter))) => {
                out.push(*letter);
                escape.len()
            }
            // An escape's hex digits stay as they are.
            ('%', None) => {
                let escape = rest.get(..3).unwrap_or(rest);
                out.push_str(escape);
                escape.len()
            }
            (c, None) => {
                out.push(c.to_ascii_lowercase());
                c.len_utf8()
            }
        };
        rest = &rest[taken..];
    }
    Ok(out)
}

/// What one pass over a path (starting with `/`) finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Not its own normal form.
    Unclean,
    /// Its own normal form.
    Clean,
    /// Its own normal form, and every other reading of it too: no `;`, no upper-case
    /// letter, no segment ending in `.`.
    Plain,
}

/// Whether `path` (starting with `/`) is its own normal form: printable ASCII, no `%` or
/// `\\`, and no empty segment but a last one, no `.` or `..` segment; and whether it is
/// [`Shape::Plain`]. One pass over the bytes: `str::contains` on a path as short as most
/// are compares at every position.
fn shape(path: &[u8]) -> Shape {
    let mut segment = 1;
    let mut plain = true;
    for (i, &b) in path.iter().enumerate().skip(1) {
        match b {
            b'%' | b'\\' => return Shape::Unclean,
            b'/' => {
                if matches!(&path[segment..i], b"" | b"." | b"..") {
                    return Shape::Unclean;
                }
                plain &= path[i - 1] != b'.';
                segment = i + 1;
            }
            b';' | b'A'..=b'Z' => plain = false,
            b'!'..=b'~' => {}
            _ => return Shape::Unclean,
        }
    }
    match &path[segment..] {
        b"." | b".." => Shape::Unclean,
        _ if plain && path.last() != Some(&b'.') => Shape::Plain,
        _ => Shape::Clean,
    }
}

/// [`normalise`] for a path that is not clean.
fn normalise_slowly(path: &str) -> Result<String, BadPath> {
    normalise_with(path, Ok)
}

/// [`normalise_slowly`], with each decoded segment given to `read` before dot segments
/// are resolved.
fn normalise_with(
    path: &str,
    read: fn(String) -> Result<String, BadPath>,
) -> Result<String, BadPath> {
    let mut segments: Vec<String> = Vec::new();
    let trailing = path.ends_with('/');
    for raw in path.split('/').skip(1) {
        let segment = read(decode_segment(raw)?)?;
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
                    b'/' | b'\\' | b';' | 0 => return Err(BadPath),
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
    fn query_and_fragment_are_not_part_of_the_path() {
        assert_eq!(path_of("/api/x?token=abc"), "/api/x");
        assert_eq!(path_of("/api/x#frag"), "/api/x");
        assert_eq!(path_of("/api/x"), "/api/x");
    }

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
        /// The shortcut takes only paths that the full normalisation leaves as they are,
        /// and the one-reading shortcut only those that every other reading leaves too.
        #[test]
        fn the_clean_path_shortcut_agrees_with_the_full_normalisation(
            path in r"(/(|\.|\.\.|a|\.a|a\.|A|;|a;b|%61|%2e|%E2|%|\\| |~|\x7f)){1,5}/?"
        ) {
            let shape = shape(path.as_bytes());
            if shape != Shape::Unclean {
                proptest::prop_assert_eq!(normalise_slowly(&path), Ok(path.clone()));
            }
            if shape == Shape::Plain {
                proptest::prop_assert_eq!(without_params(&path), path.clone());
                proptest::prop_assert_eq!(fold(&path), Ok(path));
            }
        }
    }

    /// The readings of `target`, each as `path` for an exact one and `~path` for a
    /// folded one.
    fn readings_of(target: &str) -> Result<Vec<String>, BadPath> {
        Ok(readings(target)?
            .iter(true)
            .map(|(path, kind)| match kind {
                Kind::Exact => path.to_owned(),
                Kind::Folded => format!("~{path}"),
            })
            .collect())
    }

    #[test]
    fn each_backend_reading_of_a_path() {
        let cases: &[(&str, &[&str])] = &[
            ("/api/x", &["/api/x", "~/api/x"]),
            ("/a/../api/x/", &["/api/x/", "~/api/x/"]),
            // Tomcat, Jetty, Spring: each segment's parameters removed, before `..`.
            ("/admin;x", &["/admin;x", "/admin", "~/admin", "~/admin;x"]),
            (
                "/admin;jsessionid=1/secret",
                &[
                    "/admin;jsessionid=1/secret",
                    "/admin/secret",
                    "~/admin/secret",
                    "~/admin;jsessionid=1/secret",
                ],
            ),
            (
                "/admin;/",
                &["/admin;/", "/admin/", "~/admin/", "~/admin;/"],
            ),
            // IIS: case and trailing dots and spaces ignored.
            ("/ADMIN/secret", &["/ADMIN/secret", "~/admin/secret"]),
            ("/admin./secret", &["/admin./secret", "~/admin/secret"]),
            ("/admin.%20./x", &["/admin.%20./x", "~/admin/x"]),
            ("/admin%20/x", &["/admin%20/x", "~/admin/x"]),
            ("/%41dmin/%C3%A9", &["/Admin/%C3%A9", "~/admin/%C3%A9"]),
            (
                "/%E2%84%AAey/%C5%BFecret",
                &["/%E2%84%AAey/%C5%BFecret", "~/key/secret"],
            ),
            // Both at once.
            (
                "/ADMIN;x./secret",
                &[
                    "/ADMIN;x./secret",
                    "/ADMIN/secret",
                    "~/admin/secret",
                    "~/admin;x/secret",
                ],
            ),
        ];
        for (target, want) in cases {
            let mut got = readings_of(target).unwrap_or_else(|_| panic!("{target}"));
            got.sort();
            let mut want = want.to_vec();
            want.sort();
            assert_eq!(got, want, "{target}");
        }
    }

    #[test]
    fn a_path_one_reading_of_which_cannot_be_made_is_refused() {
        for target in [
            "/admin%3Bx/secret",
            "/admin%3bx",
            "/..;/admin",
            "/x/%2e%2e;/admin",
            // A dot or empty segment with parameters: a name to normalising, a dot
            // segment or nothing to Tomcat.
            "/x/..;/admin/secret",
            "/static/..;/admin",
            "/;x/admin",
            "/admin/.;/x",
            "/admin;x/.;/../secret",
            "/x/%2e;y",
            "/x/...",
            "/x/.. /admin",
            "/x/..%20/admin",
            "/x/.%20./admin",
            // Gone from the normalised path, but IIS may take it for `..` first.
            "/static/static/..%20/..",
            "/static/x/.../..",
        ] {
            assert_eq!(readings_of(target), Err(BadPath), "{target}");
        }
    }

    #[test]
    fn a_plain_path_is_all_its_readings_and_is_not_copied() {
        let plain = readings("/api/protected?x=1").unwrap();
        assert!(matches!(plain.normal, Cow::Borrowed("/api/protected")));
        assert!(plain.others.is_empty() && plain.normal_folds);
        for target in ["/Api", "/api;x", "/api./x", "/api."] {
            assert_ne!(shape(target.as_bytes()), Shape::Plain, "{target}");
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
