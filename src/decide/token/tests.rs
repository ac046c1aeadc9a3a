//! Tokens of every shape against the policy: signatures, algorithms, claims, scopes.

use super::*;
use serde_json::json;

pub(crate) const SECRET: &[u8] = b"test-secret-0123456789abcdef0123456789";

fn now() -> f64 {
    crate::time::unix_seconds(std::time::SystemTime::now()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

/// Signs `claims` under `header` with HMAC-SHA256, by hand (not through the code
/// under test).
pub(crate) fn sign(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
    sign_raw(header, claims.to_string().as_bytes(), secret)
}

fn sign_raw(header: serde_json::Value, payload: &[u8], secret: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn hs256(claims: serde_json::Value) -> String {
    sign(json!({"alg": "HS256", "typ": "JWT"}), claims, SECRET)
}

fn policy() -> Policy {
    Policy {
        leeway: 30,
        require_exp: true,
        issuer: None,
        audience: None,
    }
}

/// HS256 keys: (kid, secret).
fn hmac(keys: Vec<(Option<String>, Vec<u8>)>, policy: Policy) -> Verifier {
    let keys: Vec<VerifyingKey> = keys
        .into_iter()
        .map(|(kid, key)| VerifyingKey::new(kid, Alg::Hs256, Material::Oct(key)))
        .collect();
    Verifier::new(&keys, policy, None)
}

fn verifier(policy: Policy) -> Verifier {
    hmac(vec![(None, SECRET.to_vec())], policy)
}

impl Verifier {
    /// The user of `token`, or why not, asking nothing else.
    fn user(&self, token: &str, now: Option<f64>) -> Result<String, Denied> {
        self.verify(token, now, Ask::default()).map(|v| v.user)
    }
}

#[test]
fn valid_tokens_name_the_user() {
    let v = verifier(policy());
    let exp = now() + 60.0;
    let ok = |claims| v.user(&hs256(claims), Some(now()));
    assert_eq!(ok(json!({"sub": "alice", "exp": exp})), Ok("alice".into()));
    assert_eq!(ok(json!({"user_id": "bob", "exp": exp})), Ok("bob".into()));
    assert_eq!(ok(json!({"user_id": 42, "exp": exp})), Ok("42".into()));
    // sub wins over user_id.
    assert_eq!(
        ok(json!({"sub": "carol", "user_id": 1, "exp": exp})),
        Ok("carol".into())
    );
    // Expired by less than the leeway.
    assert_eq!(
        ok(json!({"sub": "dave", "exp": now() - 10.0})),
        Ok("dave".into())
    );
}

#[test]
fn every_claim_reason_is_reached() {
    let mut p = policy();
    p.issuer = Some("https://issuer.example".into());
    p.audience = Some("jwtguard".into());
    let v = verifier(p);
    let exp = now() + 60.0;
    let good =
        json!({"sub": "alice", "exp": exp, "iss": "https://issuer.example", "aud": "jwtguard"});
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    assert_eq!(
        v.user(&hs256(good.clone()), Some(now())),
        Ok("alice".into())
    );
    let listed = with("aud", json!(["other", "jwtguard"]));
    assert_eq!(v.user(&hs256(listed), Some(now())), Ok("alice".into()));
    let forged = sign(
        json!({"alg": "HS256"}),
        good.clone(),
        b"another-secret-another-secret-xx",
    );
    let cases = [
        ("garbage".to_owned(), Reason::MalformedToken, None),
        ("a.b.c".into(), Reason::MalformedToken, None),
        (
            "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln".into(),
            Reason::BadSignature,
            None,
        ),
        (
            sign_raw(json!({"alg": "HS256"}), b"not json", SECRET),
            Reason::MalformedToken,
            None,
        ),
        (hs256(with("sub", json!(5))), Reason::MalformedToken, None),
        (forged, Reason::BadSignature, None),
        (
            sign(json!({"alg": "none"}), good.clone(), SECRET),
            Reason::AlgNotAllowed,
            None,
        ),
        (
            sign(json!({"alg": "HS512"}), good.clone(), SECRET),
            Reason::AlgNotAllowed,
            None,
        ),
        (
            sign(
                json!({"alg": "HS256", "crit": ["exp"]}),
                good.clone(),
                SECRET,
            ),
            Reason::MalformedToken,
            None,
        ),
        (
            hs256(with("exp", json!(now() - 100.0))),
            Reason::Expired,
            Some("alice"),
        ),
        (
            hs256(with("nbf", json!(now() + 100.0))),
            Reason::NotYetValid,
            Some("alice"),
        ),
        (hs256(without("exp")), Reason::MissingClaim, Some("alice")),
        (hs256(without("iss")), Reason::MissingClaim, Some("alice")),
        (hs256(without("aud")), Reason::MissingClaim, Some("alice")),
        (hs256(without("sub")), Reason::MissingClaim, None),
        (hs256(with("sub", json!(""))), Reason::MissingClaim, None),
        (
            hs256(with("iss", json!("https://evil.example"))),
            Reason::InvalidIssuer,
            Some("alice"),
        ),
        (
            hs256(with("aud", json!("other"))),
            Reason::InvalidAudience,
            Some("alice"),
        ),
        (
            hs256(with("aud", json!(["other", "another"]))),
            Reason::InvalidAudience,
            Some("alice"),
        ),
        (
            hs256(with("exp", json!("tomorrow"))),
            Reason::MalformedToken,
            None,
        ),
    ];
    for (token, reason, user) in cases {
        let denied = v.user(&token, Some(now())).expect_err(&token);
        assert_eq!(denied.reason, reason, "{token}");
        assert_eq!(denied.user.as_deref(), user, "{token}");
    }
}

#[test]
fn token_shape_edge_cases() {
    let v = verifier(policy());
    let exp = now() + 60.0;
    let good = hs256(json!({"sub": "a", "exp": exp}));
    let cases = [
        (format!("{good}.x"), Reason::MalformedToken),
        (good.replacen('.', "", 1), Reason::MalformedToken),
        (format!("{good}="), Reason::MalformedToken),
        (
            sign(json!({"alg": 256}), json!({"sub": "a", "exp": exp}), SECRET),
            Reason::MalformedToken,
        ),
        (
            sign(
                json!({"typ": "JWT"}),
                json!({"sub": "a", "exp": exp}),
                SECRET,
            ),
            Reason::MalformedToken,
        ),
        (
            sign_raw(
                json!({"alg": "HS256"}),
                format!("{{\"sub\":\"a\",\"sub\":\"b\",\"exp\":{exp}}}").as_bytes(),
                SECRET,
            ),
            Reason::MalformedToken,
        ),
        (
            sign_raw(json!({"alg": "HS256"}), b"[1,2]", SECRET),
            Reason::MalformedToken,
        ),
        (
            sign_raw(json!(["HS256"]), b"{}", SECRET),
            Reason::MalformedToken,
        ),
    ];
    for (token, reason) in cases {
        assert_eq!(
            v.user(&token, Some(now())).unwrap_err().reason,
            reason,
            "{token}"
        );
    }
    // NumericDate may be fractional; the boundary is exp == now - leeway.
    let at = 1_000_000.0;
    let token = |exp: f64| hs256(json!({"sub": "a", "exp": exp}));
    assert!(v.user(&token(at - 30.0), Some(at)).is_ok());
    assert_eq!(
        v.user(&token(at - 30.5), Some(at)).unwrap_err().reason,
        Reason::Expired
    );
    let nbf = hs256(json!({"sub": "a", "exp": at + 100.0, "nbf": at + 30.0}));
    assert!(v.user(&nbf, Some(at)).is_ok());
    assert_eq!(
        v.user(&nbf, Some(at - 1.0)).unwrap_err().reason,
        Reason::NotYetValid
    );
}

#[test]
fn deeply_nested_claims_do_not_overflow_the_stack() {
    let v = verifier(policy());
    for depth in [200, 100_000] {
        let claims = format!(
            r#"{{"sub":"a","exp":{},"x":{}{}}}"#,
            now() + 60.0,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let token = sign_raw(json!({"alg": "HS256"}), claims.as_bytes(), SECRET);
        // serde_json skips an unknown claim without recursing: no stack to exhaust.
        assert_eq!(v.user(&token, Some(now())), Ok("a".into()), "{depth}");
    }
}

#[test]
fn the_kid_picks_the_key() {
    let (a, b) = (
        b"key-a-0123456789abcdef0123456789".to_vec(),
        b"key-b-0123456789abcdef0123456789".to_vec(),
    );
    let v = hmac(
        vec![(Some("a".into()), a.clone()), (Some("b".into()), b.clone())],
        policy(),
    );
    let claims = json!({"sub": "alice", "exp": now() + 60.0});
    let signed = |kid: Option<&str>, key: &[u8]| {
        let header = match kid {
            Some(kid) => json!({"alg": "HS256", "kid": kid}),
            None => json!({"alg": "HS256"}),
        };
        sign(header, claims.clone(), key)
    };
    assert_eq!(
        v.user(&signed(Some("a"), &a), Some(now())),
        Ok("alice".into())
    );
    assert_eq!(
        v.user(&signed(Some("b"), &b), Some(now())),
        Ok("alice".into())
    );
    // A kid naming the other key: that key does not verify it.
    assert_eq!(
        v.user(&signed(Some("a"), &b), Some(now()))
            .unwrap_err()
            .reason,
        Reason::BadSignature
    );
    assert_eq!(
        v.user(&signed(Some("c"), &a), Some(now()))
            .unwrap_err()
            .reason,
        Reason::UnknownKey
    );
    assert_eq!(
        v.user(&signed(None, &a), Some(now())).unwrap_err().reason,
        Reason::UnknownKey
    );
    // One key in the set: a token without kid uses it.
    let one = hmac(vec![(Some("a".into()), a.clone())], policy());
    assert_eq!(one.user(&signed(None, &a), Some(now())), Ok("alice".into()));
    // One secret, no kids: a token's kid is not looked at.
    let secret = hmac(vec![(None, a.clone())], policy());
    assert_eq!(
        secret.user(&signed(Some("zzz"), &a), Some(now())),
        Ok("alice".into())
    );
}

#[test]
fn scopes_come_from_scope_scp_or_roles() {
    let v = verifier(policy());
    let exp = now() + 60.0;
    let ask = |claims: serde_json::Value, scopes: &[&str]| {
        v.verify(
            &hs256(claims),
            Some(now()),
            Ask {
                scopes,
                claims: false,
            },
        )
        .map(|v| v.user)
        .map_err(|d| (d.reason, d.scope))
    };
    assert_eq!(
        ask(
            json!({"sub": "a", "exp": exp, "scope": "read write"}),
            &["write"]
        ),
        Ok("a".into())
    );
    assert_eq!(
        ask(
            json!({"sub": "a", "exp": exp, "scp": ["read", "admin"]}),
            &["admin", "read"]
        ),
        Ok("a".into())
    );
    assert_eq!(
        ask(
            json!({"sub": "a", "exp": exp, "roles": ["admin"]}),
            &["admin"]
        ),
        Ok("a".into())
    );
    assert_eq!(
        ask(
            json!({"sub": "a", "exp": exp, "scp": "read admin"}),
            &["admin"]
        ),
        Ok("a".into())
    );
    assert_eq!(
        ask(
            json!({"sub": "a", "exp": exp, "scope": "read writer"}),
            &["write"]
        ),
        Err((Reason::InsufficientScope, Some("write".into())))
    );
    assert_eq!(
        ask(json!({"sub": "a", "exp": exp}), &["read"]),
        Err((Reason::InsufficientScope, Some("read".into())))
    );
    assert_eq!(
        ask(json!({"sub": "a", "exp": exp, "scope": 5}), &["read"])
            .unwrap_err()
            .0,
        Reason::MalformedToken
    );
    // A scope is only looked at once the token is otherwise valid.
    assert_eq!(
        ask(json!({"sub": "a", "exp": 1, "scope": "x"}), &["read"])
            .unwrap_err()
            .0,
        Reason::Expired
    );
    // The claims, when asked for.
    let claims = v
        .verify(
            &hs256(json!({"sub": "a", "exp": exp, "team": {"id": 7}})),
            Some(now()),
            Ask {
                scopes: &[],
                claims: true,
            },
        )
        .unwrap()
        .claims
        .unwrap();
    assert_eq!(claims["team"]["id"], 7);
}

#[test]
fn a_clock_before_1970_judges_no_token() {
    let v = verifier(policy());
    let token = hs256(json!({"sub": "a", "exp": 1}));
    assert_eq!(v.user(&token, None).unwrap_err().reason, Reason::ClockError);
}

#[test]
fn the_header_is_remembered_only_once_a_signature_verified() {
    let v = verifier(policy());
    let claims = json!({"sub": "a", "exp": now() + 60.0});
    // A forged token with a good header: its header is not remembered.
    let forged = sign(
        json!({"alg": "HS256"}),
        claims.clone(),
        b"another-secret-another-secret-xx",
    );
    assert_eq!(
        v.user(&forged, Some(now())).unwrap_err().reason,
        Reason::BadSignature
    );
    assert!(v.accepted_header.get().is_none());
    let good = sign(json!({"alg": "HS256"}), claims, SECRET);
    assert!(v.user(&good, Some(now())).is_ok());
    assert_eq!(
        v.accepted_header.get().map(|(h, _)| &**h),
        good.split('.').next()
    );
}

#[test]
fn missing_exp_passes_only_when_allowed_and_exp_is_still_checked() {
    let mut p = policy();
    let strict = verifier(p.clone());
    p.require_exp = false;
    let lax = verifier(p);
    let token = hs256(json!({"user_id": 7}));
    assert_eq!(
        strict.user(&token, Some(now())).unwrap_err().reason,
        Reason::MissingClaim
    );
    assert_eq!(lax.user(&token, Some(now())), Ok("7".into()));
    let expired = hs256(json!({"sub": "a", "exp": now() - 100.0}));
    assert_eq!(
        lax.user(&expired, Some(now())).unwrap_err().reason,
        Reason::Expired
    );
}

#[test]
fn audience_in_token_is_refused_when_none_is_configured() {
    let v = verifier(policy());
    let token = hs256(json!({"sub": "a", "exp": now() + 60.0, "aud": "x"}));
    assert_eq!(
        v.user(&token, Some(now())).unwrap_err().reason,
        Reason::InvalidAudience
    );
}

/// A public-key token sent again is found in the cache, whose claims are judged on
/// every use; the entry ends at `exp` (the leeway is then the signature's business).
#[cfg(feature = "sign")]
#[test]
fn public_key_tokens_are_cached_and_judged_on_every_use() {
    let pem = include_str!("../../../tests/data/idp/p256.pem");
    let signer = crate::SigningKey::from_pem(pem).unwrap();
    let set = crate::KeySet::parse(signer.jwk_set(None, Some("ec")).unwrap().as_bytes()).unwrap();
    let cache = std::sync::Arc::new(TokenCache::new(8));
    let v = Verifier::new(set.keys(), policy(), Some(cache.clone()));
    let at = 1_000_000.0;
    let claims = json!({"sub": "a", "nbf": at + 10.0, "exp": at + 100.0});
    let token = signer
        .mint(None, Some("ec"), claims.as_object().unwrap())
        .unwrap();
    let hits_misses = || {
        let stats = cache.stats();
        (stats.hits, stats.misses)
    };
    // Not yet valid: the signature verified, and is remembered.
    let early = v.user(&token, Some(at - 100.0)).unwrap_err();
    assert_eq!(early.reason, Reason::NotYetValid);
    assert_eq!(hits_misses(), (0, 1));
    // Found, and still judged: not yet valid.
    let early = v.user(&token, Some(at - 100.0)).unwrap_err();
    assert_eq!(early.reason, Reason::NotYetValid);
    assert_eq!(hits_misses(), (1, 1));
    assert_eq!(v.user(&token, Some(at + 50.0)), Ok("a".into()));
    assert_eq!(hits_misses(), (2, 1));
    // Past exp the entry is gone; within the leeway the token verifies again.
    assert_eq!(v.user(&token, Some(at + 110.0)), Ok("a".into()));
    assert_eq!(hits_misses(), (2, 2));
    assert_eq!(
        v.user(&token, Some(at + 131.0)).unwrap_err().reason,
        Reason::Expired
    );
    // A forged signature of the same claims is another token: never a hit.
    let forged = format!("{}AAAA", &token[..token.len() - 4]);
    assert_eq!(
        v.user(&forged, Some(at + 50.0)).unwrap_err().reason,
        Reason::BadSignature
    );
    // Without a cache every use verifies.
    let uncached = Verifier::new(set.keys(), policy(), None);
    assert_eq!(uncached.user(&token, Some(at + 50.0)), Ok("a".into()));
}
