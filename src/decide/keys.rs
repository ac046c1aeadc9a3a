//! Keys: a JWK Set's keys each pinned to one algorithm (src/decide/jwk.rs),
//! and HS256 itself (HMAC-SHA256 keyed once per key, constant-time verification, and
//! signing for `jwtguard token` and the demo token). Public keys are in src/decide/public_key.rs.
//!
//! jwtguard computes the HMAC itself (the `hmac` and `sha2` crates jsonwebtoken's own
//! RustCrypto backend uses) instead of going through jsonwebtoken's process-wide
//! `CryptoProvider`: installing one would break an embedder's own use of jsonwebtoken for
//! other algorithms. jsonwebtoken gives the JOSE header type.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::jwk::Jwk;
// token.rs and the fuzzers name these `keys::`.
pub(crate) use super::jwk::{Alg, BASE64URL};
use crate::{Error, Secret};

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

/// What a key verifies with: HS256 octets, or a public key.
#[derive(Clone)]
pub(crate) enum Material {
    Oct(Vec<u8>),
    #[cfg(feature = "idp")]
    Public(crate::public_key::PublicKey),
}

/// One key of a set: its `kid` (none for the single secret), its pinned algorithm, what
/// it verifies with, and an identity (a digest of all three) by which the verified-token
/// cache knows that a reloaded set still holds it.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: Alg,
    pub material: Material,
    pub id: [u8; 32],
}

impl VerifyingKey {
    pub(crate) fn new(kid: Option<String>, alg: Alg, material: Material) -> VerifyingKey {
        use sha2::Digest as _;
        let mut digest = Sha256::new();
        for part in [
            kid.as_deref().unwrap_or("").as_bytes(),
            alg.name().as_bytes(),
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        match &material {
            Material::Oct(octets) => digest.update(octets),
            #[cfg(feature = "idp")]
            Material::Public(key) => digest.update(key.identity()),
        }
        VerifyingKey {
            kid,
            alg,
            material,
            id: digest.finalize().into(),
        }
    }
}

/// Why a JWK Set was refused: a stable code for the log (`event.reason` of a reload's
/// failure) and the problem in words.
#[derive(Debug)]
pub(crate) struct SetProblem {
    pub code: &'static str,
    pub problem: String,
}

/// Keys by `kid`, from a JWK Set (RFC 7517): `oct` keys for HS256 and, with the `idp`
/// feature (on by default), the public keys identity providers publish: `RSA` (RS256,
/// RS384, RS512, PS256; at least 2048 bits), `EC` (P-256 for ES256, P-384 for ES384) and
/// `OKP` (Ed25519, EdDSA). Its `Debug` shows the kids, never the keys.
///
/// Every key needs a `kid`, and is pinned to one algorithm: its `alg`, or, without one,
/// the only one its type allows (`RS256` for an RSA key). A set that mixes `oct` and
/// public keys must give every key its `alg`. Keys for encryption (`"use": "enc"`, or a
/// `key_ops` without `verify`) are skipped; other members (`x5c`, `x5t`, ...) are ignored.
///
/// A token's `kid` picks its key; a token without `kid` is accepted only when the set
/// holds one key. Rotate by adding the new key, having the issuer sign with it, and
/// removing the old key once its tokens have expired. A set [loaded](KeySet::load) from a
/// file is read again when the file changes (checked at most once a second).
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    /// The file it was read from, and that file's identity then.
    source: Option<(std::path::PathBuf, Option<FileId>)>,
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
    /// Reads a JWK Set from `path` (at most 64 KiB). The guard built with it reads the
    /// file again when it changes.
    ///
    /// # Errors
    ///
    /// [`Error::SecretFile`] when it cannot be read; [`Error::Config`] (`--jwks`) when it is
    /// not a JWK Set that [`KeySet::parse`] takes.
    pub fn load(path: &std::path::Path) -> Result<KeySet, Error> {
        let id = FileId::of(path).ok();
        let text = crate::secret::read_capped(path).map_err(|source| Error::SecretFile {
            path: path.to_owned(),
            source,
        })?;
        let mut set = KeySet::parse(&text)?;
        set.source = Some((path.to_owned(), id));
        Ok(set)
    }

    /// Parses a JWK Set.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (`--jwks`) when it is not a JWK Set of signature keys each with its
    /// own `kid`: an unsupported key type, curve or algorithm, a key whose `alg` is not one
    /// its type allows, a `k` or coordinate that is not base64url, an RSA key under 2048
    /// bits, a key with private members, an empty set, a missing or repeated `kid`, or
    /// `oct` and public keys mixed without an `alg` on each.
    pub fn parse(json: &[u8]) -> Result<KeySet, Error> {
        KeySet::parse_set(json).map_err(|p| Error::Config {
            setting: "--jwks",
            problem: p.problem,
        })
    }

    pub(crate) fn parse_set(json: &[u8]) -> Result<KeySet, SetProblem> {
        /// The members of RFC 7517's JWK Set and key that jwtguard uses; others are
        /// ignored. (Not jsonwebtoken's `JwkSet`: its deserializer for every key type and
        /// algorithm costs 30 KB of binary.)
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<Jwk>,
        }
        let bad = |problem: String| SetProblem {
            code: "invalid_jwks",
            problem,
        };
        let set: Set =
            serde_json::from_slice(json).map_err(|_| bad("not a JWK Set (RFC 7517)".into()))?;
        let mut keys: Vec<VerifyingKey> = Vec::new();
        #[cfg_attr(not(feature = "idp"), allow(unused_mut))]
        let (mut oct, mut public, mut all_pinned) = (false, false, true);
        for jwk in set.keys {
            let kid = jwk.kid.clone().filter(|k| !k.is_empty());
            let kid = kid.ok_or_else(|| bad("a key without a \"kid\"".into()))?;
            if jwk.for_encryption() {
                continue;
            }
            if jwk.d.is_some() {
                return Err(bad(format!(
                    "key {kid:?} holds a private key: publish only its public part"
                )));
            }
            all_pinned &= jwk.alg.is_some();
            let (alg, material) = match jwk.kty.as_str() {
                "oct" => {
                    oct = true;
                    if !matches!(jwk.alg.as_deref(), None | Some("HS256")) {
                        return Err(bad(format!("key {kid:?} is not for HS256")));
                    }
                    let octets = jwk.k.as_deref().unwrap_or_default();
                    let bytes = BASE64URL
                        .decode(octets.trim_end_matches('='))
                        .map_err(|_| bad(format!("key {kid:?}: \"k\" is not base64url")))?;
                    (Alg::Hs256, Material::Oct(bytes))
                }
                #[cfg(feature = "idp")]
                "RSA" | "EC" | "OKP" => {
                    public = true;
                    let (alg, key) = crate::public_key::PublicKey::from_jwk(&jwk).map_err(
                        |(code, problem)| SetProblem {
                            code,
                            problem: format!("key {kid:?}: {problem}"),
                        },
                    )?;
                    (alg, Material::Public(key))
                }
                #[cfg(not(feature = "idp"))]
                "RSA" | "EC" | "OKP" => {
                    return Err(bad(format!(
                        "key {kid:?}: this build verifies HS256 only (feature `idp`)"
                    )));
                }
                other => return Err(bad(format!("key {kid:?}: key type {other:?}"))),
            };
            if keys.iter().any(|k| k.kid.as_deref() == Some(&kid)) {
                return Err(bad(format!("kid {kid:?} twice")));
            }
            keys.push(VerifyingKey::new(Some(kid), alg, material));
        }
        if keys.is_empty() {
            return Err(bad("the set holds no signature key".into()));
        }
        if oct && public && !all_pinned {
            return Err(bad(
                "\"oct\" and public keys mixed: every key needs its \"alg\"".into(),
            ));
        }
        Ok(KeySet { keys, source: None })
    }

    /// The kids, in the file's order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|key| key.kid.as_deref())
    }

    /// The shortest HS256 key's length in bytes (`usize::MAX` when there is none).
    #[cfg_attr(not(feature = "idp"), allow(clippy::unnecessary_filter_map))]
    pub(crate) fn shortest(&self) -> usize {
        self.keys
            .iter()
            .filter_map(|key| match &key.material {
                Material::Oct(octets) => Some(octets.len()),
                #[cfg(feature = "idp")]
                Material::Public(_) => None,
            })
            .min()
            .unwrap_or(usize::MAX)
    }

    pub(crate) fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    pub(crate) fn source(&self) -> Option<&(std::path::PathBuf, Option<FileId>)> {
        self.source.as_ref()
    }

    /// Signs `claims` with the HS256 key `kid`, naming it in the header; `None` when the
    /// set has no such `oct` key.
    pub fn mint(&self, kid: &str, claims: &Map<String, Value>) -> Option<String> {
        let key = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))?;
        match &key.material {
            Material::Oct(octets) => Some(sign(octets, Some(kid), claims)),
            #[cfg(feature = "idp")]
            Material::Public(_) => None,
        }
    }
}

/// The identity of the file a [`KeySet`] was loaded from (src/decide/key_file.rs watches
/// it). What says a file changed: a rename gives a new inode, a rewrite new times or size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub(crate) fn of(path: &std::path::Path) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
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

    /// An RSA key under 2048 bits is refused with its own code (the `jwks_load` event's
    /// reason when a reloaded file holds one); 2048 bits are taken.
    #[cfg(feature = "sign")]
    #[test]
    fn a_weak_rsa_key_is_refused_as_key_too_weak() {
        use rsa::pkcs8::DecodePrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let set = |pem: &str| {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
            let n = BASE64URL.encode(key.n().to_bytes_be());
            format!(r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{n}","e":"AQAB"}}]}}"#)
        };
        let weak = set(include_str!("../../tests/data/idp/rsa1024.pem"));
        let refused = KeySet::parse_set(weak.as_bytes()).err().unwrap();
        assert_eq!(refused.code, "key_too_weak");
        assert!(refused.problem.contains("1024 bits"), "{}", refused.problem);
        let strong = set(include_str!("../../tests/data/idp/rsa2048.pem"));
        assert_eq!(
            KeySet::parse_set(strong.as_bytes()).unwrap().kids().count(),
            1
        );
    }
}
