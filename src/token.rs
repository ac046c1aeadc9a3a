//! Issuing tokens: for the `token` subcommand and the start-up demo.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::Secret;

/// Signs an HS256 token for `sub` that expires `ttl` seconds from now, with `iat`,
/// `iss` and `aud` when given, and `extra` claims last: they replace any of those, and a
/// `null` removes the claim (`exp: null` makes a token that never expires).
pub fn mint(
    secret: &Secret,
    sub: &str,
    ttl: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
    extra: Map<String, Value>,
) -> String {
    crate::crypto::install();
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Map::new();
    claims.insert("sub".into(), sub.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl).into());
    if let Some(issuer) = issuer {
        claims.insert("iss".into(), issuer.into());
    }
    if let Some(audience) = audience {
        claims.insert("aud".into(), audience.into());
    }
    for (key, value) in extra {
        if value.is_null() {
            claims.remove(&key);
        } else {
            claims.insert(key, value);
        }
    }
    let key = EncodingKey::from_secret(secret.expose());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .expect("HS256 signing of a JSON map cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Policy, Verifier};
    use crate::{Reason, SecretSource};

    #[test]
    fn minted_tokens_verify_through_the_hs256_provider() {
        let secret = Secret::new([9; 32], SecretSource::Env);
        let policy = Policy {
            leeway: 0,
            require_exp: true,
            issuer: Some("me".into()),
            audience: Some("you".into()),
        };
        let verifier = Verifier::new(secret.expose(), &policy);
        let token = mint(&secret, "alice", 60, Some("me"), Some("you"), Map::new());
        assert_eq!(verifier.verify(&token), Ok("alice".into()));

        let mut extra = Map::new();
        extra.insert("exp".into(), 1000.into());
        let expired = mint(&secret, "alice", 60, Some("me"), Some("you"), extra);
        assert_eq!(
            verifier.verify(&expired).unwrap_err().reason,
            Reason::Expired
        );

        let other = Secret::new([8; 32], SecretSource::Env);
        let forged = mint(&other, "alice", 60, Some("me"), Some("you"), Map::new());
        assert_eq!(
            verifier.verify(&forged).unwrap_err().reason,
            Reason::BadSignature
        );
    }
}
