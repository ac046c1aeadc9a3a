//! HS256 keys: HMAC-SHA256 keyed once per key, constant-time verification, and signing
//! for `jwtguard token` and the demo token.
//!
//! jwtguard computes the HMAC itself (the `hmac` and `sha2` crates jsonwebtoken's own
//! RustCrypto backend uses) instead of going through jsonwebtoken's process-wide
//! `CryptoProvider`: installing one would break an embedder's own use of jsonwebtoken for
//! other algorithms. jsonwebtoken gives the JOSE header type.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::Secret;

pub(crate) const BASE64URL: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One HS256 key, as the HMAC state after the key: each token starts from a clone of it.
#[derive(Clone)]
pub(crate) struct Key {
    keyed: Hmac<Sha256>,
}

/// A signature that is not base64url.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotBase64;

impl Key {
    pub(crate) fn new(secret: &[u8]) -> Key {
        Key {
            keyed: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"),
        }
    }

    /// Whether `signature` (base64url, unpadded) is the HMAC of `message`, compared in
    /// constant time.
    pub(crate) fn verify(&self, message: &[u8], signature: &str) -> Result<bool, NotBase64> {
        // 32 bytes are 43 characters: a much longer signature cannot match.
        if signature.len() > 64 {
            return Ok(false);
        }
        let mut decoded = [0u8; 48];
        let n = BASE64URL
            .decode_slice(signature, &mut decoded)
            .map_err(|_| NotBase64)?;
        let mut mac = self.keyed.clone();
        mac.update(message);
        Ok(mac.verify_slice(&decoded[..n]).is_ok())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// Signs `claims` as a compact HS256 JWS with `secret`: header `{"typ":"JWT","alg":"HS256"}`.
///
/// ```
/// use jwtguard::{Secret, SecretSource};
/// let secret = Secret::new([7; 32], SecretSource::Env);
/// let mut claims = serde_json::Map::new();
/// claims.insert("sub".into(), "alice".into());
/// let token = jwtguard::mint(&secret, &claims);
/// assert_eq!(token.split('.').count(), 3);
/// ```
pub fn mint(secret: &Secret, claims: &Map<String, Value>) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let header = serde_json::to_vec(&header).expect("a JOSE header serialises");
    let claims = serde_json::to_vec(claims).expect("a JSON map serialises");
    let mut token = BASE64URL.encode(header);
    token.push('.');
    BASE64URL.encode_string(claims, &mut token);
    let signature = Key::new(secret.expose()).sign(token.as_bytes());
    token.push('.');
    BASE64URL.encode_string(signature, &mut token);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_the_rfc7515_example() {
        // RFC 7515 appendix A.1: a JWS signed with HS256 and a published key.
        let key = BASE64URL
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let key = Key::new(&key);
        let message = b"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let good = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(key.verify(message, good), Ok(true));
        assert_eq!(BASE64URL.encode(key.sign(message)), good);
        let forged = "eBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(key.verify(message, forged), Ok(false));
        assert_eq!(key.verify(message, ""), Ok(false));
        assert_eq!(key.verify(message, &good[..40]), Ok(false));
        assert_eq!(key.verify(message, &format!("{good}AAAA")), Ok(false));
        assert_eq!(key.verify(message, &"A".repeat(1000)), Ok(false));
        assert_eq!(key.verify(message, "dBjf+JeZ"), Err(NotBase64));
        // The last character carries 4 bits of the 32nd byte and 2 spare bits: set those
        // and the encoding is not canonical.
        assert_eq!(
            key.verify(message, &format!("{}l", &good[..42])),
            Err(NotBase64)
        );
    }
}
