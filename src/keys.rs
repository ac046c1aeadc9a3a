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

use crate::{Error, Secret};

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

/// HS256 keys by `kid`, from a JWK Set (RFC 7517): each an `"kty": "oct"` key with a
/// `kid`, its bytes in `k` (base64url), and `"alg": "HS256"` if it says. Its `Debug`
/// shows the kids, never the keys.
///
/// A token's `kid` picks its key; a token without `kid` is accepted only when the set
/// holds one key. Rotate by adding the new key, reloading, having the issuer sign with
/// it, and removing the old key once its tokens have expired.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .field("keys", &"[redacted]")
            .finish()
    }
}

impl KeySet {
    /// Reads a JWK Set from `path` (at most 64 KiB).
    ///
    /// # Errors
    ///
    /// [`Error::SecretFile`] when it cannot be read; [`Error::Config`] (`--jwks`) when it is
    /// not a JWK Set of HS256 keys each with its own `kid`.
    pub fn load(path: &std::path::Path) -> Result<KeySet, Error> {
        let text = crate::config::read_capped(path).map_err(|source| Error::SecretFile {
            path: path.to_owned(),
            source,
        })?;
        KeySet::parse(&text)
    }

    /// Parses a JWK Set.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (`--jwks`) when it is not a JWK Set of HS256 keys each with its
    /// own `kid`: another key type or algorithm, a `use` other than `sig`, a `k` that is
    /// not base64url, an empty set, a missing or repeated `kid`.
    pub fn parse(json: &[u8]) -> Result<KeySet, Error> {
        /// The members of RFC 7517's JWK Set and key that an HS256 set uses; others are
        /// ignored. (Not jsonwebtoken's `JwkSet`: its deserializer for every key type
        /// costs 30 KB of binary, for one type.)
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<Jwk>,
        }
        #[derive(serde::Deserialize)]
        struct Jwk {
            kty: String,
            kid: Option<String>,
            k: Option<String>,
            alg: Option<String>,
            #[serde(rename = "use")]
            usage: Option<String>,
        }
        let bad = |problem: String| Error::Config {
            setting: "--jwks",
            problem,
        };
        let set: Set = serde_json::from_slice(json)
            .map_err(|_| bad("not a JWK Set of \"oct\" keys (RFC 7517)".into()))?;
        if set.keys.is_empty() {
            return Err(bad("the set holds no key".into()));
        }
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for jwk in set.keys {
            let kid = jwk.kid.filter(|k| !k.is_empty());
            let kid = kid.ok_or_else(|| bad("a key without a \"kid\"".into()))?;
            let (true, Some(octets)) = (jwk.kty == "oct", jwk.k) else {
                return Err(bad(format!("key {kid:?} is not an \"oct\" key")));
            };
            if !matches!(jwk.alg.as_deref(), None | Some("HS256")) {
                return Err(bad(format!("key {kid:?} is not for HS256")));
            }
            if !matches!(jwk.usage.as_deref(), None | Some("sig")) {
                return Err(bad(format!("key {kid:?} is not for signatures")));
            }
            let bytes = BASE64URL
                .decode(octets.trim_end_matches('='))
                .map_err(|_| bad(format!("key {kid:?}: \"k\" is not base64url")))?;
            if keys.iter().any(|(k, _)| *k == kid) {
                return Err(bad(format!("kid {kid:?} twice")));
            }
            keys.push((kid, bytes));
        }
        Ok(KeySet { keys })
    }

    /// The kids, in the file's order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    /// The shortest key's length in bytes.
    pub(crate) fn shortest(&self) -> usize {
        self.keys.iter().map(|(_, k)| k.len()).min().unwrap_or(0)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.keys
            .iter()
            .map(|(kid, key)| (kid.as_str(), key.as_slice()))
    }

    /// Signs `claims` with the key `kid`, naming it in the header; `None` when the set has
    /// no such key.
    pub fn mint(&self, kid: &str, claims: &Map<String, Value>) -> Option<String> {
        let (_, key) = self.keys.iter().find(|(k, _)| k == kid)?;
        Some(sign(key, Some(kid), claims))
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
    sign(secret.expose(), None, claims)
}

/// A compact HS256 JWS of `claims` with `key`, its header naming `kid` if given.
fn sign(key: &[u8], kid: Option<&str>, claims: &Map<String, Value>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let header = serde_json::to_vec(&header).expect("a JOSE header serialises");
    let claims = serde_json::to_vec(claims).expect("a JSON map serialises");
    let mut token = BASE64URL.encode(header);
    token.push('.');
    BASE64URL.encode_string(claims, &mut token);
    let signature = Key::new(key).sign(token.as_bytes());
    token.push('.');
    BASE64URL.encode_string(signature, &mut token);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwk_sets_hold_hs256_oct_keys_by_kid() {
        let k = BASE64URL.encode([7u8; 32]);
        let set = KeySet::parse(
            format!(r#"{{"keys":[{{"kty":"oct","kid":"a","k":"{k}","alg":"HS256","use":"sig"}},{{"kty":"oct","kid":"b","k":"{k}"}}]}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!format!("{set:?}").contains(&k));
        let token = set.mint("b", &Map::new()).unwrap();
        let header: Value =
            serde_json::from_slice(&BASE64URL.decode(token.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["kid"], "b");
        assert_eq!(set.mint("c", &Map::new()), None);
        let refused = [
            r#"{"keys":[]}"#.to_owned(),
            "not json".into(),
            format!(r#"{{"keys":[{{"kty":"oct","k":"{k}"}}]}}"#),
            format!(r#"{{"keys":[{{"kty":"oct","kid":"","k":"{k}"}}]}}"#),
            format!(r#"{{"keys":[{{"kty":"oct","kid":"a","k":"{k}","alg":"HS512"}}]}}"#),
            format!(r#"{{"keys":[{{"kty":"oct","kid":"a","k":"{k}","use":"enc"}}]}}"#),
            r#"{"keys":[{"kty":"oct","kid":"a","k":"not base64!"}]}"#.into(),
            format!(
                r#"{{"keys":[{{"kty":"oct","kid":"a","k":"{k}"}},{{"kty":"oct","kid":"a","k":"{k}"}}]}}"#
            ),
            r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}"#.into(),
        ];
        for json in refused {
            assert!(
                matches!(
                    KeySet::parse(json.as_bytes()),
                    Err(Error::Config {
                        setting: "--jwks",
                        ..
                    })
                ),
                "{json}"
            );
        }
    }

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
