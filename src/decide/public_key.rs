//! Public keys of identity providers (feature `idp`): RSA (RS256, RS384, RS512, PS256),
//! EC (ES256 on P-256, ES384 on P-384) and Ed25519 (EdDSA), from a JWK or a PEM private
//! key, with the RustCrypto crates and calls jsonwebtoken's `rust_crypto` backend makes.
//!
//! Unlike that backend, a key is parsed and checked once, when its set is loaded, not on
//! every verification; and nothing process-wide is installed (see src/decide/keys.rs).

use base64::Engine as _;
use rsa::signature::Verifier as _;
#[cfg(feature = "sign")]
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
#[cfg(feature = "sign")]
use serde_json::{Map, Value};

use super::jwk::{Alg, BASE64URL, Jwk};
#[cfg(feature = "sign")]
use crate::Error;

/// The smallest RSA modulus accepted, in bits (NIST SP 800-131A; RFC 7518 §3.3 says 2048
/// or larger).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// A public key, parsed and checked.
#[derive(Clone)]
pub(crate) enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A refusal of a key: a log code and the problem.
type Refusal = (&'static str, String);

fn invalid(problem: impl Into<String>) -> Refusal {
    ("invalid_jwks", problem.into())
}

/// The base64url member `name` of a JWK, decoded.
fn member(value: Option<&str>, name: &str) -> Result<Vec<u8>, Refusal> {
    let value = value.ok_or_else(|| invalid(format!("no \"{name}\"")))?;
    BASE64URL
        .decode(value.trim_end_matches('='))
        .map_err(|_| invalid(format!("\"{name}\" is not base64url")))
}

impl PublicKey {
    /// The key of an `RSA`, `EC` or `OKP` JWK, and the algorithm it is pinned to.
    pub(crate) fn from_jwk(jwk: &Jwk) -> Result<(Alg, PublicKey), Refusal> {
        let alg = match jwk.alg.as_deref() {
            None => None,
            Some(name) => Some(
                Alg::from_name(name)
                    .ok_or_else(|| invalid(format!("algorithm {name:?} is not verified")))?,
            ),
        };
        let (default, allowed): (Alg, &[Alg]) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => (
                Alg::Rs256,
                &[Alg::Rs256, Alg::Rs384, Alg::Rs512, Alg::Ps256],
            ),
            ("EC", Some("P-256")) => (Alg::Es256, &[Alg::Es256]),
            ("EC", Some("P-384")) => (Alg::Es384, &[Alg::Es384]),
            ("OKP", Some("Ed25519")) => (Alg::EdDsa, &[Alg::EdDsa]),
            (kty, crv) => return Err(invalid(format!("{kty} key on curve {crv:?}"))),
        };
        let alg = alg.unwrap_or(default);
        if !allowed.contains(&alg) {
            return Err(invalid(format!(
                "a {} key cannot be for {}",
                jwk.kty,
                alg.name()
            )));
        }
        let key = match jwk.kty.as_str() {
            "RSA" => {
                let n = member(jwk.n.as_deref(), "n")?;
                let e = member(jwk.e.as_deref(), "e")?;
                PublicKey::rsa(&n, &e)?
            }
            "EC" => {
                let x = member(jwk.x.as_deref(), "x")?;
                let y = member(jwk.y.as_deref(), "y")?;
                PublicKey::ec(alg, &x, &y)
                    .ok_or_else(|| invalid("\"x\" and \"y\" are not a point of the curve"))?
            }
            _ => {
                let x = member(jwk.x.as_deref(), "x")?;
                let x: [u8; 32] = x.try_into().map_err(|_| invalid("\"x\" is not 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| invalid("\"x\" is not an Ed25519 point"))?;
                PublicKey::Ed25519(key)
            }
        };
        Ok((alg, key))
    }

    fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, Refusal> {
        let n = rsa::BigUint::from_bytes_be(n);
        let bits = n.bits();
        if bits < MIN_RSA_BITS {
            return Err((
                "key_too_weak",
                format!("an RSA key of {bits} bits, under {MIN_RSA_BITS}"),
            ));
        }
        // rsa's own checks: e odd and in 3..2^33, n at most 4096 bits.
        let key = rsa::RsaPublicKey::new(n, rsa::BigUint::from_bytes_be(e))
            .map_err(|e| invalid(format!("not an RSA key jwtguard takes ({e})")))?;
        Ok(PublicKey::Rsa(key))
    }

    fn ec(alg: Alg, x: &[u8], y: &[u8]) -> Option<PublicKey> {
        // The SEC1 uncompressed point: 0x04, x, y; from_sec1_bytes checks it is on the curve.
        let mut sec1 = vec![4];
        sec1.extend_from_slice(x);
        sec1.extend_from_slice(y);
        match alg {
            Alg::Es256 if x.len() == 32 && y.len() == 32 => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .ok()
                    .map(PublicKey::P256)
            }
            Alg::Es384 if x.len() == 48 && y.len() == 48 => {
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .ok()
                    .map(PublicKey::P384)
            }
            _ => None,
        }
    }

    /// Whether `signature` (decoded) is `alg`'s signature of `message` under this key.
    /// `alg` is the key's own (the caller checked the token's against it).
    pub(crate) fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        use rsa::sha2::{Digest as _, Sha256, Sha384, Sha512};
        match (self, alg) {
            (PublicKey::Rsa(key), Alg::Rs256) => key
                .verify(
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(message),
                    signature,
                )
                .is_ok(),
            (PublicKey::Rsa(key), Alg::Rs384) => key
                .verify(
                    rsa::Pkcs1v15Sign::new::<Sha384>(),
                    &Sha384::digest(message),
                    signature,
                )
                .is_ok(),
            (PublicKey::Rsa(key), Alg::Rs512) => key
                .verify(
                    rsa::Pkcs1v15Sign::new::<Sha512>(),
                    &Sha512::digest(message),
                    signature,
                )
                .is_ok(),
            (PublicKey::Rsa(key), Alg::Ps256) => key
                .verify(
                    rsa::Pss::new::<Sha256>(),
                    &Sha256::digest(message),
                    signature,
                )
                .is_ok(),
            // JWS ECDSA signatures are r || s, fixed length (RFC 7518 §3.4), not DER.
            (PublicKey::P256(key), Alg::Es256) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            (PublicKey::P384(key), Alg::Es384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            // Strict: no small-order key or non-canonical signature (RFC 8032 §5.1.7).
            (PublicKey::Ed25519(key), Alg::EdDsa) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok())
            }
            _ => false,
        }
    }

    /// The key's public bytes, for its identity in the verified-token cache.
    pub(crate) fn identity(&self) -> Vec<u8> {
        match self {
            PublicKey::Rsa(key) => {
                let mut bytes = key.n().to_bytes_be();
                bytes.extend(key.e().to_bytes_be());
                bytes
            }
            PublicKey::P256(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            PublicKey::P384(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            PublicKey::Ed25519(key) => key.to_bytes().to_vec(),
        }
    }

    /// The public JWK's required members (RFC 7638 §3.2), in lexicographic order, as
    /// its thumbprint hashes them.
    #[cfg(feature = "sign")]
    fn members(&self) -> Vec<(&'static str, String)> {
        let b64 = |bytes: &[u8]| BASE64URL.encode(bytes);
        match self {
            PublicKey::Rsa(key) => vec![
                ("e", b64(&key.e().to_bytes_be())),
                ("kty", "RSA".into()),
                ("n", b64(&key.n().to_bytes_be())),
            ],
            PublicKey::P256(key) => {
                let point = key.to_encoded_point(false);
                vec![
                    ("crv", "P-256".into()),
                    ("kty", "EC".into()),
                    ("x", b64(point.x().expect("uncompressed"))),
                    ("y", b64(point.y().expect("uncompressed"))),
                ]
            }
            PublicKey::P384(key) => {
                let point = key.to_encoded_point(false);
                vec![
                    ("crv", "P-384".into()),
                    ("kty", "EC".into()),
                    ("x", b64(point.x().expect("uncompressed"))),
                    ("y", b64(point.y().expect("uncompressed"))),
                ]
            }
            PublicKey::Ed25519(key) => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", b64(key.as_bytes())),
            ],
        }
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url): the `kid` jwtguard gives a key.
    #[cfg(feature = "sign")]
    fn thumbprint(&self) -> String {
        use sha2::Digest as _;
        let members: Map<String, Value> = self
            .members()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        // serde_json's map is ordered by key: the canonical form RFC 7638 hashes.
        let canonical = serde_json::to_vec(&members).expect("a JSON map serialises");
        BASE64URL.encode(sha2::Sha256::digest(canonical))
    }
}

#[cfg(feature = "sign")]
/// A private key from a PEM file, to sign tokens with (`jwtguard token --key-file`) and
/// to publish its public JWK Set (`jwtguard jwks --from-pem`): RSA (PKCS#1 or PKCS#8, at
/// least 2048 bits), EC P-256 or P-384 (SEC1 or PKCS#8), or Ed25519 (PKCS#8). Its `Debug`
/// never shows the key.
pub struct SigningKey {
    key: Private,
    public: PublicKey,
}

#[cfg(feature = "sign")]
enum Private {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

#[cfg(feature = "sign")]
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.thumbprint())
            .field("key", &"[redacted]")
            .finish()
    }
}

#[cfg(feature = "sign")]
/// The operating system's random bytes for rsa's blinding and PSS salts, in the
/// rand_core 0.6 traits rsa takes (getrandom, which jwtguard links, speaks 0.4).
struct OsRng;

#[cfg(feature = "sign")]
impl rsa::rand_core::RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // Only `jwtguard token` signs: with no randomness it cannot, and stops.
        getrandom::fill(dest).expect("the operating system gives random bytes");
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        getrandom::fill(dest).map_err(|e| rsa::rand_core::Error::new(std::io::Error::other(e)))
    }
}

#[cfg(feature = "sign")]
impl rsa::rand_core::CryptoRng for OsRng {}

#[cfg(feature = "sign")]
impl SigningKey {
    /// Reads a PEM private key.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (`--key-file`) when it is not one of the keys above; the error
    /// says nothing of the file's content.
    pub fn from_pem(pem: &str) -> Result<SigningKey, Error> {
        use p256::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let bad = |problem: &str| Error::Config {
            setting: "--key-file",
            problem: problem.into(),
        };
        let key = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .ok()
                .map(|k| Private::Rsa(Box::new(k)))
        } else if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(pem)
                .map(|k| Private::P256(k.into()))
                .or_else(|_| p384::SecretKey::from_sec1_pem(pem).map(|k| Private::P384(k.into())))
                .ok()
        } else {
            rsa::RsaPrivateKey::from_pkcs8_pem(pem)
                .map(|k| Private::Rsa(Box::new(k)))
                .or_else(|_| p256::SecretKey::from_pkcs8_pem(pem).map(|k| Private::P256(k.into())))
                .or_else(|_| p384::SecretKey::from_pkcs8_pem(pem).map(|k| Private::P384(k.into())))
                .or_else(|_| {
                    ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                        .map(|k| Private::Ed25519(Box::new(k)))
                })
                .ok()
        };
        let key = key.ok_or_else(|| {
            bad("not a PEM private key of RSA, EC P-256/P-384 or Ed25519 (PKCS#1, SEC1 or PKCS#8, unencrypted)")
        })?;
        let public = match &key {
            Private::Rsa(k) => {
                let public = k.to_public_key();
                let bits = public.n().bits();
                if bits < MIN_RSA_BITS {
                    return Err(bad(&format!(
                        "an RSA key of {bits} bits, under {MIN_RSA_BITS}"
                    )));
                }
                PublicKey::Rsa(public)
            }
            Private::P256(k) => PublicKey::P256(*k.verifying_key()),
            Private::P384(k) => PublicKey::P384(*k.verifying_key()),
            Private::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        };
        Ok(SigningKey { key, public })
    }

    /// The algorithm `alg` names, if this key signs with it; without one, the key's
    /// default (RS256, ES256, ES384, EdDSA).
    fn alg(&self, alg: Option<&str>) -> Result<Alg, Error> {
        let (default, allowed): (Alg, &[Alg]) = match self.public {
            PublicKey::Rsa(_) => (
                Alg::Rs256,
                &[Alg::Rs256, Alg::Rs384, Alg::Rs512, Alg::Ps256],
            ),
            PublicKey::P256(_) => (Alg::Es256, &[Alg::Es256]),
            PublicKey::P384(_) => (Alg::Es384, &[Alg::Es384]),
            PublicKey::Ed25519(_) => (Alg::EdDsa, &[Alg::EdDsa]),
        };
        match alg {
            None => Ok(default),
            Some(name) => Alg::from_name(name)
                .filter(|alg| allowed.contains(alg))
                .ok_or_else(|| Error::Config {
                    setting: "--alg",
                    problem: format!("this key does not sign {name:?}"),
                }),
        }
    }

    /// The key's RFC 7638 thumbprint: the `kid` used when none is given.
    pub fn thumbprint(&self) -> String {
        self.public.thumbprint()
    }

    /// Signs `claims` as a compact JWS with `alg` (or the key's default), naming `kid` (or
    /// the thumbprint) in the header.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (`--alg`) when the key does not sign with `alg`.
    pub fn mint(
        &self,
        alg: Option<&str>,
        kid: Option<&str>,
        claims: &Map<String, Value>,
    ) -> Result<String, Error> {
        let alg = self.alg(alg)?;
        let kid = kid.map_or_else(|| self.thumbprint(), str::to_owned);
        let header = serde_json::json!({"typ": "JWT", "alg": alg.name(), "kid": kid});
        let mut token = BASE64URL.encode(header.to_string());
        token.push('.');
        BASE64URL.encode_string(serde_json::to_vec(claims).expect("JSON"), &mut token);
        let message = token.as_bytes();
        let signature: Vec<u8> = match (&self.key, alg) {
            (Private::Rsa(k), Alg::Ps256) => {
                let signer = rsa::pss::BlindedSigningKey::<rsa::sha2::Sha256>::new((**k).clone());
                signer.sign_with_rng(&mut OsRng, message).to_vec()
            }
            (Private::Rsa(k), alg) => {
                let k = (**k).clone();
                match alg {
                    Alg::Rs384 => rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha384>::new(k)
                        .sign_with_rng(&mut OsRng, message)
                        .to_vec(),
                    Alg::Rs512 => rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha512>::new(k)
                        .sign_with_rng(&mut OsRng, message)
                        .to_vec(),
                    _ => rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(k)
                        .sign_with_rng(&mut OsRng, message)
                        .to_vec(),
                }
            }
            (Private::P256(k), _) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
            (Private::P384(k), _) => {
                let sig: p384::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
            (Private::Ed25519(k), _) => k.sign(message).to_bytes().to_vec(),
        };
        token.push('.');
        BASE64URL.encode_string(signature, &mut token);
        Ok(token)
    }

    /// The public JWK Set of this key: `{"keys":[{...}]}` with `kid` (or the thumbprint),
    /// `alg` (or the key's default) and `"use": "sig"`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (`--alg`) when the key does not sign with `alg`.
    pub fn jwk_set(&self, alg: Option<&str>, kid: Option<&str>) -> Result<String, Error> {
        let alg = self.alg(alg)?;
        let mut jwk: Map<String, Value> = self
            .public
            .members()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        let kid = kid.map_or_else(|| self.thumbprint(), str::to_owned);
        jwk.insert("kid".into(), kid.into());
        jwk.insert("alg".into(), alg.name().into());
        jwk.insert("use".into(), "sig".into());
        Ok(serde_json::json!({ "keys": [jwk] }).to_string())
    }
}

#[cfg(all(test, feature = "sign"))]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example key and its thumbprint.
    #[test]
    fn thumbprint_of_the_rfc7638_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = serde_json::from_value::<Jwk>(serde_json::json!({
            "kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        }))
        .unwrap();
        let (alg, key) = PublicKey::from_jwk(&jwk).map_err(|e| e.1).unwrap();
        assert_eq!(alg, Alg::Rs256);
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
