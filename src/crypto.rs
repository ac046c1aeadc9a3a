//! An HS256-only crypto backend for jsonwebtoken.
//!
//! jsonwebtoken 11 leaves the choice of crypto to the application: with no backend
//! feature it panics on the first well-formed token, and its `rust_crypto` backend links
//! RSA and elliptic-curve code that HS256 never uses (and an `rsa` advisory with no fix).
//! This module gives it HMAC-SHA256 from the `hmac` and `sha2` crates and nothing else;
//! every other algorithm is refused as unsupported.

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::Sha256;
use std::sync::OnceLock;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC state after the key, for the first key [`prepare`]d: jsonwebtoken asks for a
/// fresh verifier per token, and starting from here saves the key schedule each time.
static PREPARED: OnceLock<(Box<[u8]>, HmacSha256)> = OnceLock::new();

/// Keys the HMAC for `key` once, so that verifiers for it start from the keyed state.
/// Only the first key prepared in a process is kept; others work, just not as fast.
pub fn prepare(key: &[u8]) {
    if let Ok(mac) = HmacSha256::new_from_slice(key) {
        let _ = PREPARED.set((key.into(), mac));
    }
}

/// The provider: HS256 signing and verifying, no JWK key utilities.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs the HS256 provider as jsonwebtoken's process-wide default.
///
/// Call it once before the first token is signed or verified; [`crate::Guard::new`] does.
/// Calling it again is harmless. It fails only if another provider was installed first,
/// and then returns `false`.
pub fn install() -> bool {
    match PROVIDER.install_default() {
        Ok(()) => true,
        Err(installed) => std::ptr::eq(installed, &PROVIDER),
    }
}

struct Hs256(HmacSha256);

impl Hs256 {
    fn new(algorithm: &Algorithm, key: &[u8]) -> Result<Self> {
        if *algorithm != Algorithm::HS256 {
            return Err(ErrorKind::UnsupportedAlgorithm.into());
        }
        if let Some((prepared, mac)) = PREPARED.get()
            && **prepared == *key
        {
            return Ok(Hs256(mac.clone()));
        }
        HmacSha256::new_from_slice(key)
            .map(Hs256)
            .map_err(|_| ErrorKind::InvalidKeyFormat.into())
    }
}

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), SignatureError> {
        let mut mac = self.0.clone();
        mac.update(msg);
        // verify_slice compares in constant time.
        mac.verify_slice(signature)
            .map_err(|_| SignatureError::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Ok(Box::new(Hs256::new(algorithm, key.as_bytes())?))
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(Hs256::new(algorithm, key.try_get_as_bytes()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_rfc7515_example() {
        // RFC 7515 appendix A.1: a JWS signed with HS256 and a published key.
        assert!(install());
        // The key as given there (base64url), rewritten to the standard alphabet with padding.
        let key =
            "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
                .replace('-', "+")
                .replace('_', "/") + "==";
        let key = jsonwebtoken::DecodingKey::from_base64_secret(&key).unwrap();
        let message = b"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let good = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(jsonwebtoken::crypto::verify(good, message, &key, Algorithm::HS256).unwrap());
        let forged = "eBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(!jsonwebtoken::crypto::verify(forged, message, &key, Algorithm::HS256).unwrap());
    }

    #[test]
    fn refuses_other_algorithms() {
        assert!(install());
        let key = jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        for alg in [
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::ES256,
        ] {
            let err = jsonwebtoken::crypto::verify("AAAA", b"a.b", &key, alg).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::UnsupportedAlgorithm),
                "{alg:?}"
            );
        }
    }
}
