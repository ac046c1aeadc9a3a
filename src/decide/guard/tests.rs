//! The guard's decisions, end to end from a request's parts.

use super::*;
use crate::{Secret, SecretSource};

pub(crate) fn guard(protect: &[&str]) -> Guard {
    Guard::new(&Config {
        protect: protect.iter().map(|p| p.to_string()).collect(),
        secret: Some(Secret::new([1; 32], SecretSource::Env)),
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn without_a_jwtguard_logger_nothing_is_served() {
    // No logger is installed in unit tests: the event cannot be written anywhere.
    let g = guard(&["/api/"]);
    let secret = Secret::new([1; 32], SecretSource::Env);
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    claims.insert("exp".into(), (u32::MAX).into());
    let bearer = format!("Bearer {}", crate::mint(&secret, &claims));
    let headers = [("Authorization", bearer.as_str())];
    let pending = g.decide(&Request::new("GET", "/api/x", &headers));
    assert!(matches!(&pending.decision, Decision::Allowed(a) if a.user() == "alice"));
    let Decision::Refused(refused) = pending.settle(0) else {
        panic!("served without a log")
    };
    assert_eq!(
        (refused.status(), refused.reason(), refused.challenge()),
        (503, None, None)
    );
    assert_eq!(
        g.check(&Request::new("GET", "/public", &headers)),
        Decision::Public
    );
}

#[test]
fn a_held_event_counts_only_once_the_batch_write_covers_it() {
    let allowed = |recorded| Pending {
        decision: Decision::Allowed(Allowed::for_test(RequestId::new(1, 1), "alice")),
        recorded,
    };
    assert!(matches!(
        allowed(Recorded::Held(100)).settle(100),
        Decision::Allowed(_)
    ));
    assert!(matches!(
        allowed(Recorded::Held(101)).settle(100),
        Decision::Refused(Refused { reason: None, .. })
    ));
    assert!(matches!(
        allowed(Recorded::Written).settle(0),
        Decision::Allowed(_)
    ));
    assert!(matches!(
        allowed(Recorded::Lost).settle(1000),
        Decision::Refused(_)
    ));
    let refused = Pending {
        decision: Decision::Refused(Refused::for_test(
            RequestId::new(1, 2),
            Some(Reason::Expired),
        )),
        recorded: Recorded::Held(10),
    };
    let Decision::Refused(r) = refused.settle(5) else {
        panic!()
    };
    assert_eq!(r.status(), 503);
}

/// A guard over `config` (with a secret), and a valid token for `claims`.
pub(crate) fn guard_with(config: Config, claims: serde_json::Value) -> (Guard, String) {
    let secret = Secret::new([1; 32], SecretSource::Env);
    let token = crate::mint(&secret, claims.as_object().unwrap());
    let guard = Guard::new(&Config {
        secret: Some(secret),
        ..config
    })
    .unwrap();
    (guard, token)
}

/// The decision on `method path` with `token`, had the event been written.
pub(crate) fn decide(guard: &Guard, target: &str, token: &str, extra: &[(&str, &str)]) -> Decision {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    let pending = guard.decide(&Request::new("GET", target, headers.as_slice()));
    Pending {
        recorded: Recorded::Written,
        ..pending
    }
    .settle(0)
}

pub(crate) fn valid(sub: &str) -> serde_json::Value {
    serde_json::json!({"sub": sub, "exp": u32::MAX})
}

#[test]
fn paths_are_judged_normalised_and_the_unjudgeable_refused() {
    let (g, _) = guard_with(Config::default(), valid("a"));
    for target in [
        "/%61pi/x",
        "//api/x",
        "/public/../api/x",
        "/./api",
        "/api/x/../y",
    ] {
        assert!(
            matches!(decide(&g, target, "x", &[]), Decision::Refused(r) if r.reason() == Some(Reason::MalformedToken)),
            "{target}"
        );
    }
    for target in [
        "/api%2Fx",
        "/api\\x",
        "/api/..%2F",
        "/..",
        "/api%00",
        "/api%zz",
    ] {
        let Decision::Refused(r) = decide(&g, target, "x", &[]) else {
            panic!("{target}")
        };
        assert_eq!(
            (r.reason(), r.status(), r.challenge()),
            (Some(Reason::BadPath), 400, None),
            "{target}"
        );
    }
    assert_eq!(decide(&g, "/apix", "x", &[]), Decision::Public);
}

#[test]
fn with_an_upstream_everything_is_protected_but_public_prefixes() {
    let config = Config {
        upstream: Some("http://127.0.0.1:5000".into()),
        public: vec!["/static/".into(), "/login".into()],
        ..Config::default()
    };
    let (g, token) = guard_with(config, valid("alice"));
    for public in ["/static/app.js", "/static", "/login"] {
        assert_eq!(decide(&g, public, "x", &[]), Decision::Public, "{public}");
    }
    for protected in [
        "/",
        "/api/x",
        "/staticx",
        "/login2",
        "/static/../admin",
        "/healthz",
    ] {
        assert!(
            matches!(decide(&g, protected, "x", &[]), Decision::Refused(_)),
            "{protected}"
        );
    }
    assert!(
        matches!(decide(&g, "/anything", &token, &[]), Decision::Allowed(a) if a.user() == "alice")
    );
}

#[test]
fn a_bad_host_is_refused_on_any_path_before_the_token_is_looked_at() {
    let config = Config {
        upstream: Some("http://127.0.0.1:5000".into()),
        public: vec!["/static/".into()],
        ..Config::default()
    };
    let (g, token) = guard_with(config, valid("alice"));
    for (target, hosts) in [
        ("/static/app.js", &["a/b"][..]),
        ("/api/x", &["a,b"][..]),
        ("/api/x", &["x", "x"][..]),
        ("/a%2Fb", &["a b"][..]),
    ] {
        let extra: Vec<(&str, &str)> = hosts.iter().map(|h| ("Host", *h)).collect();
        let Decision::Refused(r) = decide(&g, target, &token, &extra) else {
            panic!("{target} {hosts:?}")
        };
        assert_eq!(
            (r.reason(), r.status()),
            (Some(Reason::InvalidRequest), 400),
            "{target} {hosts:?}"
        );
    }
    let host = [("Host", "app.example:8080")];
    assert_eq!(decide(&g, "/static/app.js", "x", &host), Decision::Public);
    assert!(matches!(
        decide(&g, "/api/x", &token, &host),
        Decision::Allowed(_)
    ));
    // Without Host: refused only when the adapter says HTTP/1.1.
    let bearer = format!("Bearer {token}");
    let headers = [("Authorization", bearer.as_str())];
    let request = Request::new("GET", "/static/app.js", &headers);
    assert_eq!(
        Pending {
            recorded: Recorded::Written,
            ..g.decide(&request)
        }
        .settle(0),
        Decision::Public
    );
    let Decision::Refused(r) = Pending {
        recorded: Recorded::Written,
        ..g.decide(&request.requiring_host())
    }
    .settle(0) else {
        panic!("HTTP/1.1 without Host")
    };
    assert_eq!(r.reason(), Some(Reason::InvalidRequest));
}

#[test]
fn scopes_are_required_by_prefix_and_missing_ones_named() {
    let config = Config {
        require: vec![
            ("/api/admin".into(), "admin".into()),
            ("/api/".into(), "read".into()),
        ],
        ..Config::default()
    };
    let claims = serde_json::json!({"sub": "a", "exp": u32::MAX, "scope": "read"});
    let (g, token) = guard_with(config, claims);
    assert!(matches!(
        decide(&g, "/api/x", &token, &[]),
        Decision::Allowed(_)
    ));
    let Decision::Refused(r) = decide(&g, "/api/admin/users", &token, &[]) else {
        panic!()
    };
    assert_eq!(r.reason(), Some(Reason::InsufficientScope));
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.challenge().as_deref(),
        Some("Bearer realm=\"jwtguard\", error=\"insufficient_scope\", scope=\"admin\"")
    );
}

#[test]
fn forward_auth_never_answers_400() {
    let config = Config {
        forward_auth: Some("/auth".into()),
        public: vec!["/open".into()],
        ..Config::default()
    };
    let (g, token) = guard_with(config, valid("a"));
    let sub = |method, target, authorization: &str| {
        let headers = [("Authorization", authorization)];
        let pending =
            g.decide(&Request::new("GET", "/auth", &headers).forward_auth(method, target));
        Pending {
            recorded: Recorded::Written,
            ..pending
        }
        .settle(0)
    };
    // The original path decides, with --public exempt and everything else protected.
    assert_eq!(sub("GET", "/open/x", ""), Decision::Public);
    assert!(matches!(
        sub("POST", "/anything", &format!("Bearer {token}")),
        Decision::Allowed(_)
    ));
    for (authorization, target) in [
        ("Bearer", "/x"),
        ("Bearer a b", "/x"),
        ("Bearer x", "/a%2Fb"),
    ] {
        let Decision::Refused(r) = sub("GET", target, authorization) else {
            panic!()
        };
        assert_eq!(r.status(), 401, "{authorization} {target}");
        assert_eq!(
            r.challenge().as_deref(),
            Some("Bearer realm=\"jwtguard\", error=\"invalid_request\""),
            "{authorization} {target}"
        );
    }
}

#[test]
fn identity_headers_carry_the_user_and_claims_percent_encoded() {
    let config = Config {
        claim_headers: vec![
            ("email".into(), "X-Auth-Email".into()),
            ("groups".into(), "X-Auth-Groups".into()),
            ("team.id".into(), "X-Auth-Team".into()),
            ("missing".into(), "X-Auth-Missing".into()),
            ("admin".into(), "X-Auth-Admin".into()),
        ],
        ..Config::default()
    };
    let claims = serde_json::json!({
        "sub": "al ice\r\nX-Evil: 1",
        "exp": u32::MAX,
        "email": "a@example.com",
        "groups": ["dev", "o,ps", 7],
        "team": {"id": 42},
        "admin": true,
    });
    let (g, token) = guard_with(config, claims);
    let Decision::Allowed(a) = decide(&g, "/api/x", &token, &[]) else {
        panic!()
    };
    let headers: Vec<(&str, &str)> = a.headers().collect();
    assert_eq!(
        headers,
        [
            ("X-Auth-User", "al%20ice%0D%0AX-Evil:%201"),
            ("X-Auth-Email", "a@example.com"),
            ("X-Auth-Groups", "dev,o%2Cps,7"),
            ("X-Auth-Team", "42"),
            ("X-Auth-Missing", ""),
            ("X-Auth-Admin", "true"),
        ]
    );
}

/// The cache counts through the guard's API: a public-key token's first use is a miss,
/// its second a hit; HS256 tokens and a guard with the cache off count nothing.
#[cfg(feature = "sign")]
#[test]
fn the_token_cache_counts_hits_and_misses() {
    let signer =
        crate::SigningKey::from_pem(include_str!("../../../tests/data/idp/ed25519.pem")).unwrap();
    let set = crate::KeySet::parse(signer.jwk_set(None, Some("k")).unwrap().as_bytes());
    let guard = |token_cache| {
        Guard::new(&Config {
            keys: Some(set.as_ref().unwrap().clone()),
            token_cache,
            ..Config::default()
        })
        .unwrap()
    };
    let claims = serde_json::json!({"sub": "a", "exp": u32::MAX});
    let token = signer
        .mint(None, Some("k"), claims.as_object().unwrap())
        .unwrap();
    let (on, off) = (guard(16), guard(0));
    for g in [&on, &off] {
        for _ in 0..2 {
            assert!(matches!(
                decide(g, "/api/x", &token, &[]),
                Decision::Allowed(_)
            ));
        }
    }
    let stats = on.token_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    assert_eq!(off.token_cache_stats(), crate::CacheStats::default());
}
