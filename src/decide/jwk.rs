//! The JSON Web Key members jwtguard reads, and the algorithms a key may be pinned to: the
//! vocabulary src/decide/keys.rs (key sets) and src/decide/public_key.rs (one public key)
//! share, so that neither imports the other's.

pub(crate) const BASE64URL: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The algorithms jwtguard verifies (RFC 7518 §3.1 names). Each key is pinned to one:
/// a token's `alg` must be its key's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    Hs256,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    const ALL: [Alg; 8] = [
        Alg::Hs256,
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Es256,
        Alg::Es384,
        Alg::EdDsa,
    ];

    /// The `alg` value, as written in a JOSE header or a JWK.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm named exactly `name` (case matters: `hs256` and `none` are none).
    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }
}

/// A JWK's members that jwtguard reads (RFC 7517 §4, RFC 7518 §6).
#[derive(serde::Deserialize)]
#[cfg_attr(not(feature = "idp"), allow(dead_code))]
pub(crate) struct Jwk {
    pub kty: String,
    pub kid: Option<String>,
    pub alg: Option<String>,
    #[serde(rename = "use")]
    pub usage: Option<String>,
    pub key_ops: Option<Vec<String>>,
    pub k: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    /// Private members: present, the set is refused.
    pub d: Option<serde::de::IgnoredAny>,
}

impl Jwk {
    /// A key published for encryption, as providers' sets hold beside their signing keys
    /// (Keycloak's `RSA-OAEP` key): not a key to verify with.
    pub(crate) fn for_encryption(&self) -> bool {
        let enc_alg = self.alg.as_deref().is_some_and(|alg| {
            alg.starts_with("RSA-OAEP")
                || alg.starts_with("ECDH-ES")
                || alg == "RSA1_5"
                || alg == "dir"
                || alg.ends_with("KW")
        });
        let no_verify = self
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"));
        self.usage.as_deref().is_some_and(|u| u != "sig") || enc_alg || no_verify
    }
}
