//! The configured path prefixes (`--protect`, `--public`, `--require`) and how the
//! readings of a request's path are judged against them.

use crate::path::{Kind, Readings};

/// Which paths need a token.
#[derive(Debug)]
pub(super) enum Protected {
    /// Those under these prefixes.
    Under(Vec<Prefix>),
    /// All but those under these prefixes: with an upstream.
    AllBut(Vec<Prefix>),
}

/// A configured path prefix, without its trailing `/`, as each kind of reading compares.
#[derive(Debug)]
pub(super) struct Prefix {
    pub(super) exact: String,
    /// [`crate::path::fold`]ed, when that differs.
    pub(super) folded: Option<String>,
}

impl Prefix {
    /// `prefix` (validated by [`Config::validate`]).
    pub(super) fn new(prefix: &str) -> Prefix {
        let exact = prefix.trim_end_matches('/').to_owned();
        let folded = crate::path::fold(prefix)
            .map(|folded| folded.trim_end_matches('/').to_owned())
            .unwrap_or_else(|_| exact.clone());
        Prefix {
            folded: (folded != exact).then_some(folded),
            exact,
        }
    }

    /// Whether the reading `path` of a request is this prefix or under it.
    pub(super) fn holds(&self, (path, kind): (&str, Kind)) -> bool {
        match (kind, &self.folded) {
            (Kind::Folded, Some(folded)) => under(path, folded),
            _ => under(path, &self.exact),
        }
    }

    /// Whether some reading of a request is this prefix or under it.
    pub(super) fn holds_for_any(&self, readings: &Readings<'_>, folds: bool) -> bool {
        readings.iter(folds).any(|reading| self.holds(reading))
    }
}

/// Whether every reading of a request is under one of `prefixes` (not necessarily the
/// same one).
pub(super) fn all_under(readings: &Readings<'_>, folds: bool, prefixes: &[Prefix]) -> bool {
    readings
        .iter(folds)
        .all(|reading| prefixes.iter().any(|p| p.holds(reading)))
}

/// Whether `path` is `prefix` (without its trailing `/`) or under it.
pub(super) fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

pub(super) fn prefixes(prefixes: &[String]) -> Vec<Prefix> {
    prefixes.iter().map(|p| Prefix::new(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::decision::Pending;
    use crate::decide::guard::Decision;
    use crate::decide::guard::Guard;
    use crate::decide::guard::tests::{decide, guard, guard_with, valid};
    use crate::decide::request::Request;
    use crate::logger::Recorded;
    use crate::{Config, Reason};

    /// Whether `g` protects `path` (outside forward-auth).
    fn protects(g: &Guard, path: &str) -> bool {
        g.is_protected(&crate::path::readings(path).unwrap(), false)
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let g = guard(&["/api/", "/admin"]);
        for path in [
            "/api",
            "/api/",
            "/api/protected",
            "/api/a/b",
            "/admin",
            "/admin/x",
        ] {
            assert!(protects(&g, path), "{path}");
        }
        for path in [
            "/",
            "/apix",
            "/apix/y",
            "/administrator",
            "/healthz",
            "/x/api/",
        ] {
            assert!(!protects(&g, path), "{path}");
        }
        let all = guard(&["/"]);
        assert!(protects(&all, "/") && protects(&all, "/anything"));
    }

    /// A guard in front of an app with `--public /static/` and `--require /admin=admin`,
    /// and a valid token without the scope.
    fn app_guard() -> (Guard, String) {
        let config = Config {
            upstream: Some("http://127.0.0.1:5000".into()),
            public: vec!["/static/".into()],
            require: vec![("/admin".into(), "admin".into())],
            ..Config::default()
        };
        let claims = serde_json::json!({"sub": "a", "exp": u32::MAX, "scope": "read"});
        guard_with(config, claims)
    }

    /// The reason `target` is refused for, with `token`; `None` when it is served.
    fn refusal(g: &Guard, target: &str, token: &str) -> Option<Reason> {
        match decide(g, target, token, &[]) {
            Decision::Refused(r) => r.reason(),
            Decision::Public | Decision::Allowed(_) => None,
        }
    }

    #[test]
    fn every_reading_of_a_path_is_judged() {
        let (g, token) = app_guard();
        let cases = [
            // A scope prefix applies when it holds for any reading.
            ("/admin;x", Some(Reason::InsufficientScope)),
            (
                "/admin;jsessionid=1/secret",
                Some(Reason::InsufficientScope),
            ),
            ("/admin;/", Some(Reason::InsufficientScope)),
            ("/ADMIN/secret", Some(Reason::InsufficientScope)),
            ("/Admin", Some(Reason::InsufficientScope)),
            ("/admin./secret", Some(Reason::InsufficientScope)),
            ("/admin%20/secret", Some(Reason::InsufficientScope)),
            ("/admin.%20./secret", Some(Reason::InsufficientScope)),
            ("/ADMIN;x./secret", Some(Reason::InsufficientScope)),
            ("/%41DMIN/secret", Some(Reason::InsufficientScope)),
            ("/admin%2e/secret", Some(Reason::InsufficientScope)),
            // What cannot be read safely one way or another.
            ("/admin%3Bx/secret", Some(Reason::BadPath)),
            ("/x/%2e%2e;/admin", Some(Reason::BadPath)),
            ("/x/..%20/admin", Some(Reason::BadPath)),
            ("/x/.../admin", Some(Reason::BadPath)),
            ("/..;/admin", Some(Reason::BadPath)),
            // A dot or empty segment with parameters, which normalising takes for a name
            // and Tomcat for a dot segment or nothing.
            ("/x/..;/admin/secret", Some(Reason::BadPath)),
            ("/;x/admin/secret", Some(Reason::BadPath)),
            ("/admin;x/.;/../secret", Some(Reason::BadPath)),
            ("/admin;x/;y/../secret", Some(Reason::BadPath)),
            // Served: no reading is under /admin.
            ("/administrator", None),
            ("/x/admin", None),
            ("/x;/admin", None),
            ("/api/v1.2/x", None),
        ];
        for (target, want) in cases {
            assert_eq!(refusal(&g, target, &token), want, "{target}");
        }
    }

    #[test]
    fn a_public_prefix_applies_only_when_it_holds_for_every_reading() {
        let (g, _) = app_guard();
        for target in ["/static;x/../admin", "/STATIC/x"] {
            assert_eq!(
                refusal(&g, target, "x"),
                Some(Reason::MalformedToken),
                "{target}"
            );
        }
        for target in [
            "/static/..%20/admin",
            "/static/static/..%20/..",
            "/static/..;/admin/secret",
            "/static/x/..;/..;/admin",
            "/static;x/..;/admin",
        ] {
            assert_eq!(refusal(&g, target, "x"), Some(Reason::BadPath), "{target}");
        }
        for target in ["/static/app.js", "/static/app.js;v=2", "/static/App.JS"] {
            assert_eq!(decide(&g, target, "x", &[]), Decision::Public, "{target}");
        }
        // Forward-auth's original URI too, and a 401 where another reading is refused.
        let config = Config {
            forward_auth: Some("/auth".into()),
            public: vec!["/open".into()],
            ..Config::default()
        };
        let (g, _) = guard_with(config, valid("a"));
        for (target, want) in [
            ("/open/x", None),
            ("/open/..;/admin", Some(401)),
            ("/OPEN/x", Some(401)),
            ("/open/x%3B", Some(401)),
        ] {
            let headers = [("Authorization", "")];
            let pending =
                g.decide(&Request::new("GET", "/auth", &headers).forward_auth("GET", target));
            let status = match (Pending {
                recorded: Recorded::Written,
                ..pending
            })
            .settle(0)
            {
                Decision::Refused(r) => Some(r.status()),
                _ => None,
            };
            assert_eq!(status, want, "{target}");
        }
    }

    #[test]
    fn configured_prefixes_are_compared_folded_with_folded_readings() {
        let config = Config {
            upstream: Some("http://127.0.0.1:5000".into()),
            public: vec!["/Static/".into()],
            require: vec![("/Admin".into(), "admin".into())],
            ..Config::default()
        };
        let claims = serde_json::json!({"sub": "a", "exp": u32::MAX, "scope": "read"});
        let (g, token) = guard_with(config, claims);
        for target in ["/admin/x", "/ADMIN/x", "/Admin/x"] {
            assert_eq!(
                refusal(&g, target, &token),
                Some(Reason::InsufficientScope),
                "{target}"
            );
        }
        assert_eq!(decide(&g, "/Static/x", "x", &[]), Decision::Public);
        // To a case-sensitive app `/static/x` is not `/Static/x`.
        assert!(matches!(
            decide(&g, "/static/x", "x", &[]),
            Decision::Refused(_)
        ));
    }

    /// A backend's view of a raw path, modelled apart from the code under test: each
    /// segment's parameters removed (`params`), everything percent-decoded, and for IIS
    /// (`iis`) lower case with trailing dots and spaces trimmed, a segment of them only
    /// (but `.` and `..`) taken for `..` (the worst case); `None` when it climbs above the
    /// root.
    fn backend_view(path: &str, params: bool, iis: bool) -> Option<String> {
        let mut segments: Vec<Vec<u8>> = Vec::new();
        for raw in path.split('/').skip(1) {
            let raw = if params {
                raw.split(';').next().unwrap_or("")
            } else {
                raw
            };
            let mut segment = Vec::new();
            let mut bytes = raw.bytes();
            while let Some(b) = bytes.next() {
                segment.push(match b {
                    b'%' => {
                        let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                        u8::from_str_radix(&hex, 16).ok()?
                    }
                    b => b,
                });
            }
            if iis && !matches!(segment.as_slice(), b"." | b"..") {
                segment.make_ascii_lowercase();
                let had = !segment.is_empty();
                while segment.last().is_some_and(|b| matches!(b, b'.' | b' ')) {
                    segment.pop();
                }
                if had && segment.is_empty() {
                    segment = b"..".to_vec();
                }
            }
            match segment.as_slice() {
                b"" | b"." => {}
                b".." => {
                    segments.pop()?;
                }
                _ => segments.push(segment),
            }
        }
        let joined: Vec<String> = segments
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        Some(format!("/{}", joined.join("/")))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Whatever a backend makes of a path: served without a token only when every
        /// backend sees it under `/static/`, to a token without the scope only when none
        /// sees it under `/admin`.
        #[test]
        fn no_backend_reading_escapes_the_rules(
            segments in proptest::collection::vec(proptest::sample::select(vec![
                "static", "STATIC", "static.", "static%20", "static;x", "admin", "Admin",
                "admin.", "x", ".", "..", "..;", "..;x", ".;", ";", ";x", "", "%2e",
                "%2e%2e;", "..%20", "...", "%73tatic", "%3B", "%3b..", "admin%20", "ADMIN;x.",
                "%41dmin", ".%20", "static..", "%E2%84%AA",
            ]), 1..6),
            slash in proptest::bool::ANY,
        ) {
            let path = format!("/{}{}", segments.join("/"), if slash { "/" } else { "" });
            let (g, token) = &*APP_GUARD;
            let views: Vec<String> = [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .filter_map(|(params, iis)| backend_view(&path, params, iis))
                .collect();
            if decide(g, &path, "x", &[]) == Decision::Public {
                for view in &views {
                    proptest::prop_assert!(under(view, "/static"), "{} seen as {}", path, view);
                }
            }
            if refusal(g, &path, token).is_none() {
                for view in &views {
                    proptest::prop_assert!(!under(view, "/admin"), "{} seen as {}", path, view);
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// What reaches the app is the normalised path: no backend reading of it may be
        /// under a public prefix unless the request was judged public, nor under a scope's
        /// prefix when a token without the scope was let through (`/admin;x/.;/../secret`
        /// was forwarded as `/admin;x/secret`, Tomcat's `/admin/secret`).
        #[test]
        fn no_backend_reading_of_the_forwarded_path_escapes_the_rules(
            segments in proptest::collection::vec(proptest::sample::select(vec![
                "static", "STATIC", "static.", "static%20", "static;x", "admin", "Admin",
                "admin.", "x", ".", "..", "..;", "..;x", ".;", ";", ";x", "", "%2e",
                "%2e%2e;", "..%20", "...", "%73tatic", "%3b..", "admin%20", "ADMIN;x.",
                "%41dmin", ".%20", "static..", "%E2%84%AA", "a;..", ";.", ";..", ".%2e", "%2E.",
                "x.;", "x;.", "%20", "%20.", "admin;", ";admin", "admin.;x", "%61dmin", "..;%20",
                "%2e;", ".;.", "static%2e", "%C5%BF", "%E2%84%AAey", "admin%2E", "%2e%2e%3b",
            ]), 1..7),
            slash in proptest::bool::ANY,
        ) {
            let path = format!("/{}{}", segments.join("/"), if slash { "/" } else { "" });
            let (g, token) = &*APP_GUARD;
            let Ok(normal) = crate::path::normalise(&path) else { return Ok(()); };
            let normal = normal.into_owned();
            let views: Vec<String> = [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .filter_map(|(params, iis)| backend_view(&normal, params, iis))
                .collect();
            if decide(g, &path, "x", &[]) == Decision::Public {
                for view in &views {
                    proptest::prop_assert!(under(view, "/static"), "{} forwarded as {} seen as {}", path, normal, view);
                }
            }
            if refusal(g, &path, token).is_none() {
                for view in &views {
                    proptest::prop_assert!(!under(view, "/admin"), "{} forwarded as {} seen as {}", path, normal, view);
                }
            }
        }
    }

    /// One [`app_guard`] for every case.
    static APP_GUARD: std::sync::LazyLock<(Guard, String)> = std::sync::LazyLock::new(app_guard);
}
