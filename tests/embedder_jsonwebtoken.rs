//! An embedder who uses jsonwebtoken for its own tokens, with an algorithm jwtguard does not
//! take (HS384 here), installs its own `CryptoProvider`: the guard must leave that choice
//! to it, and keep verifying its HS256 tokens whatever provider is installed.

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use jwtguard::{
    Config, Decision, Guard, LogFormat, Reason, Request, Secret, SecretSource, SecurityLog,
};
use sha2::Sha384;

/// The embedder's provider: HS384 only.
struct Hs384(Hmac<Sha384>);

impl Signer<Vec<u8>> for Hs384 {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs384 {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), SignatureError> {
        let mut mac = self.0.clone();
        mac.update(msg);
        mac.verify_slice(signature)
            .map_err(|_| SignatureError::new())
    }
}

impl JwtSigner for Hs384 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS384
    }
}

impl JwtVerifier for Hs384 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS384
    }
}

fn hs384(algorithm: &Algorithm, key: &[u8]) -> Result<Hs384> {
    if *algorithm != Algorithm::HS384 {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    Ok(Hs384(Hmac::new_from_slice(key).unwrap()))
}

static EMBEDDERS: CryptoProvider = CryptoProvider {
    signer_factory: |alg, key: &EncodingKey| Ok(Box::new(hs384(alg, key.as_bytes())?)),
    verifier_factory: |alg, key: &DecodingKey| Ok(Box::new(hs384(alg, key.try_get_as_bytes()?)?)),
    key_utils: KeyUtils::new_unimplemented(),
};

#[test]
fn the_guard_leaves_jsonwebtokens_provider_to_the_embedder() {
    SecurityLog::writer(std::io::sink(), "nowhere", LogFormat::Json)
        .install()
        .unwrap();
    let secret = Secret::new([5; 32], SecretSource::Env);
    let guard = Guard::new(&Config {
        secret: Some(secret.clone()),
        ..Config::default()
    })
    .unwrap();
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    claims.insert("exp".into(), u32::MAX.into());
    let token = jwtguard::mint(&secret, &claims);
    let check = |token: &str| {
        let bearer = format!("Bearer {token}");
        let headers = [("Authorization", bearer.as_str())];
        guard.check(&Request::new("GET", "/api/x", &headers))
    };
    assert!(matches!(check(&token), Decision::Allowed(a) if a.user() == "alice"));

    // The guard has been built and used: the embedder's provider can still be installed...
    assert!(
        EMBEDDERS.install_default().is_ok(),
        "jwtguard installed a process-wide CryptoProvider"
    );
    // ...and serves the embedder's own tokens.
    let key = b"the embedder's own key, 48 bytes long, for HS384";
    let header = jsonwebtoken::Header::new(Algorithm::HS384);
    let theirs = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key)).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS384);
    validation.validate_exp = false;
    let decoded: serde_json::Value =
        jsonwebtoken::decode(&theirs, &DecodingKey::from_secret(key), &validation)
            .unwrap()
            .claims;
    assert_eq!(decoded["sub"], "alice");
    // And the guard still verifies HS256 itself, whatever provider is installed.
    assert!(matches!(check(&token), Decision::Allowed(_)));
    let forged = format!("{}A", &token[..token.len() - 1]);
    let forged = if forged == token {
        format!("{}B", &token[..token.len() - 1])
    } else {
        forged
    };
    assert!(
        matches!(check(&forged), Decision::Refused(r) if r.reason() == Some(Reason::BadSignature))
    );
    assert!(
        matches!(check(&theirs), Decision::Refused(r) if r.reason() == Some(Reason::AlgNotAllowed))
    );
}
