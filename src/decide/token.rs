//! From a token to a verified user or a reason for refusal. No I/O.
//!
//! One pass over the token: the header is parsed once (its `alg` must be the pinned
//! algorithm of the key its `kid` picks, and it must not carry `crit`), the signature is
//! checked (or a public-key token found in the verified-token cache), and only then are
//! the claims parsed, once, and checked against the [`Policy`].

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::Engine as _;
use serde::Deserialize;

use crate::Reason;
use crate::keys::{Alg, BASE64URL, Key, Material, VerifyingKey};
use crate::token_cache::TokenCache;

/// What a verifier checks besides the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Whether `exp` must be present. When present it is always checked.
    pub require_exp: bool,
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must name it.
    pub audience: Option<String>,
}

/// A refusal: the reason, the user when the signature had verified (an expired but
/// genuine token still names its user in the log), and the scope it lacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Denied {
    pub reason: Reason,
    pub user: Option<String>,
    pub scope: Option<String>,
    /// The key's `kid` and the token's `alg`, as far as the header was read.
    pub key: TokenKey,
}

impl From<Reason> for Denied {
    fn from(reason: Reason) -> Self {
        Denied {
            reason,
            user: None,
            scope: None,
            key: TokenKey::default(),
        }
    }
}

/// The `kid` and `alg` a decision names in its event: the key's once one was picked,
/// else the header's as written (from the token: escaped and capped in the log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenKey {
    pub kid: Option<String>,
    pub alg: Option<Cow<'static, str>>,
}

/// A token that verified: its user, and its claims when they were asked for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Verified {
    pub user: String,
    pub claims: Option<serde_json::Value>,
    pub key: TokenKey,
    /// The token's SHA-256, when verifying computed it (a public key's token, with the
    /// cache on): the event's fingerprint is its first bytes, not a second digest.
    pub digest: Option<[u8; 32]>,
}

/// The JOSE header fields jwtguard looks at. Unknown fields are ignored; a repeated
/// field is an error.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
}

/// The claims jwtguard checks, parsed once. `null` counts as absent.
#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(borrow, default)]
    iss: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    aud: Option<Strings<'a>>,
    #[serde(borrow, default)]
    sub: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<UserId<'a>>,
    #[serde(borrow, default)]
    scope: Option<Strings<'a>>,
    #[serde(borrow, default)]
    scp: Option<Strings<'a>>,
    #[serde(borrow, default)]
    roles: Option<Strings<'a>>,
}

/// `aud` (RFC 7519 §4.1.3), and `scope`, `scp`, `roles` (RFC 8693 §4.2: a space-separated
/// string, or an array of strings as some issuers write `scp` and `roles`).
enum Strings<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl Strings<'_> {
    /// As an audience: it names `want`.
    fn names(&self, want: &str) -> bool {
        match self {
            Strings::One(one) => one == want,
            Strings::Many(many) => many.iter().any(|s| s == want),
        }
    }

    /// As scopes: it grants `scope`.
    fn grants(&self, scope: &str) -> bool {
        match self {
            Strings::One(text) => text.split(' ').any(|s| s == scope),
            Strings::Many(list) => list.iter().any(|s| s == scope),
        }
    }
}

/// A `user_id` claim (common in Flask apps): a string or an integer.
enum UserId<'a> {
    Text(Cow<'a, str>),
    Number(i64),
}

// Written out rather than derived with `#[serde(untagged)]`, which buffers each value
// before trying its variants: that generic buffering was 10 KB of the HS256-only binary.
impl<'de: 'a, 'a> Deserialize<'de> for Strings<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Strings<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Strings::One(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Strings::One(Cow::Owned(s.to_owned())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut many = Vec::new();
                while let Some(s) = seq.next_element::<Cow<'de, str>>()? {
                    many.push(s);
                }
                Ok(Strings::Many(many))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for UserId<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = UserId<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(UserId::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(UserId::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(UserId::Number(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
                // Past i64::MAX: refused, as the derived i64 variant refused it.
                i64::try_from(n)
                    .map(UserId::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl Claims<'_> {
    /// `sub`, or else `user_id`; an empty one is no user.
    fn user(&self) -> Option<String> {
        let user = match (&self.sub, &self.user_id) {
            (Some(sub), _) => String::from(&**sub),
            (None, Some(UserId::Text(id))) => String::from(&**id),
            (None, Some(UserId::Number(id))) => id.to_string(),
            (None, None) => return None,
        };
        (!user.is_empty()).then_some(user)
    }

    /// The claim checks of RFC 7519 §4.1 under `policy`, at `now` (seconds since the epoch).
    fn check(&self, policy: &Policy, now: f64) -> Result<(), Reason> {
        let leeway = policy.leeway as f64;
        match self.exp {
            None if policy.require_exp => return Err(Reason::MissingClaim),
            Some(exp) if exp < now - leeway => return Err(Reason::Expired),
            _ => {}
        }
        if self.nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err(Reason::NotYetValid);
        }
        if let Some(issuer) = &policy.issuer {
            match &self.iss {
                None => return Err(Reason::MissingClaim),
                Some(iss) if iss != issuer => return Err(Reason::InvalidIssuer),
                Some(_) => {}
            }
        }
        match (&self.aud, &policy.audience) {
            (None, None) => {}
            (None, Some(_)) => return Err(Reason::MissingClaim),
            (Some(_), None) => return Err(Reason::InvalidAudience),
            (Some(aud), Some(want)) if !aud.names(want) => return Err(Reason::InvalidAudience),
            (Some(_), Some(_)) => {}
        }
        match self.user() {
            Some(_) => Ok(()),
            None => Err(Reason::MissingClaim),
        }
    }

    /// The first of `required` that none of `scope`, `scp` and `roles` grants.
    fn missing<'r>(&self, required: &[&'r str]) -> Option<&'r str> {
        let granted = |scope: &str| {
            [&self.scope, &self.scp, &self.roles]
                .into_iter()
                .flatten()
                .any(|s| s.grants(scope))
        };
        required.iter().copied().find(|scope| !granted(scope))
    }
}

/// What a key checks a signature with.
enum Check {
    Hmac(Key),
    #[cfg(feature = "idp")]
    Public(crate::public_key::PublicKey),
}

/// A key as the verifier holds it.
struct Slot {
    /// None for a single secret.
    kid: Option<String>,
    alg: Alg,
    check: Check,
    id: [u8; 32],
}

/// Verifies tokens against its keys and one [`Policy`].
pub(crate) struct Verifier {
    keys: Vec<Slot>,
    policy: Policy,
    /// Public-key tokens whose signature verified; none when `--token-cache 0`.
    cache: Option<std::sync::Arc<TokenCache>>,
    /// The encoded header of the first token that verified, and its key: tokens of one
    /// issuer share their header, and the same bytes need no second parse.
    accepted_header: OnceLock<(Box<str>, usize)>,
}

/// What a verification is asked for besides the user.
#[derive(Clone, Copy, Default)]
pub(crate) struct Ask<'a> {
    /// Scopes the token must grant (all of them).
    pub scopes: &'a [&'a str],
    /// Whether to return the claims (for identity headers).
    pub claims: bool,
}

impl Verifier {
    /// The verifier of the JWK Set in `body` (a file's or a fetched one), or why not (a log
    /// code and the problem): HS256 keys under [`crate::MIN_SECRET_BYTES`] are `key_too_weak`
    /// unless `allow_weak`.
    pub(crate) fn of_set(
        body: &[u8],
        allow_weak: bool,
        policy: &Policy,
        cache: &Option<std::sync::Arc<TokenCache>>,
    ) -> Result<Verifier, (&'static str, String)> {
        let set = crate::keys::KeySet::parse_set(body).map_err(|p| (p.code, p.problem))?;
        let shortest = set.shortest();
        if shortest < crate::MIN_SECRET_BYTES && !allow_weak {
            return Err((
                "key_too_weak",
                format!(
                    "an HS256 key of {shortest} bytes, under {}",
                    crate::MIN_SECRET_BYTES
                ),
            ));
        }
        Ok(Verifier::new(set.keys(), policy.clone(), cache.clone()))
    }

    /// A verifier for tokens signed with one of `keys`: one secret (no `kid`), or keys by
    /// `kid`.
    pub(crate) fn new(
        keys: &[VerifyingKey],
        policy: Policy,
        cache: Option<std::sync::Arc<TokenCache>>,
    ) -> Verifier {
        Verifier {
            keys: keys
                .iter()
                .map(|key| Slot {
                    kid: key.kid.clone(),
                    alg: key.alg,
                    check: match &key.material {
                        Material::Oct(octets) => Check::Hmac(Key::new(octets)),
                        #[cfg(feature = "idp")]
                        Material::Public(public) => Check::Public(public.clone()),
                    },
                    id: key.id,
                })
                .collect(),
            policy,
            cache,
            accepted_header: OnceLock::new(),
        }
    }

    /// The identities of its keys.
    pub(crate) fn key_ids(&self) -> Vec<[u8; 32]> {
        self.keys.iter().map(|slot| slot.id).collect()
    }

    /// Verifies `token` at `now` (seconds since the epoch; `None` when the clock reads
    /// before 1970): the signature first, then the claims, then `ask`'s scopes.
    pub(crate) fn verify(
        &self,
        token: &str,
        now: Option<f64>,
        ask: Ask,
    ) -> Result<Verified, Denied> {
        thread_local! {
            /// The decoded header or claims: one buffer per thread, reused.
            static JSON: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let now = now.ok_or(Reason::ClockError)?;
        JSON.with_borrow_mut(|json| self.verify_with(token, now, ask, json))
    }

    /// The key a header names: its `kid`'s, or the only key when it names none (or when
    /// the keys have no kids: one secret).
    fn key_for(&self, kid: Option<&str>) -> Result<usize, Reason> {
        match (kid, self.keys.as_slice()) {
            (_, [Slot { kid: None, .. }]) => Ok(0),
            (None, [_]) => Ok(0),
            (Some(kid), keys) => keys
                .iter()
                .position(|slot| slot.kid.as_deref() == Some(kid))
                .ok_or(Reason::UnknownKey),
            (None, _) => Err(Reason::UnknownKey),
        }
    }

    fn verify_with(
        &self,
        token: &str,
        now: f64,
        ask: Ask,
        json: &mut Vec<u8>,
    ) -> Result<Verified, Denied> {
        let Some((message, signature)) = token.rsplit_once('.') else {
            return Err(Reason::MalformedToken.into());
        };
        let Some((header, payload)) = message.split_once('.') else {
            return Err(Reason::MalformedToken.into());
        };
        if payload.contains('.') {
            return Err(Reason::MalformedToken.into());
        }
        let known = self.accepted_header.get().filter(|(h, _)| **h == *header);
        let key = match known {
            Some((_, key)) => *key,
            None => {
                json.clear();
                BASE64URL
                    .decode_vec(header, json)
                    .map_err(|_| Reason::MalformedToken)?;
                let parsed: JoseHeader = parse_object(json)?;
                let denied = |reason: Reason| Denied {
                    key: TokenKey {
                        kid: parsed.kid.as_deref().map(str::to_owned),
                        alg: Some(Cow::Owned(parsed.alg.to_string())),
                    },
                    ..Denied::from(reason)
                };
                // `none`, `HS512`, `hs256`: no key of any set verifies them.
                let Some(alg) = Alg::from_name(&parsed.alg) else {
                    return Err(denied(Reason::AlgNotAllowed));
                };
                if parsed.crit.is_some() {
                    // RFC 7515 §4.1.11: jwtguard understands no extension, so none may be critical.
                    return Err(denied(Reason::MalformedToken));
                }
                let key = self.key_for(parsed.kid.as_deref()).map_err(denied)?;
                // The key is pinned to its algorithm: an HS256 token for an RSA key (its
                // public bytes taken for a secret), ES256 for an RSA key, are refused
                // here, before any signature is computed.
                if self.keys[key].alg != alg {
                    return Err(denied(Reason::AlgorithmMismatch));
                }
                key
            }
        };
        let slot = &self.keys[key];
        // A public key's token is digested once: the cache's key and the fingerprint.
        #[cfg(feature = "idp")]
        let digest: Option<[u8; 32]> = match (&slot.check, &self.cache) {
            (Check::Public(_), Some(_)) => {
                use sha2::Digest as _;
                Some(sha2::Sha256::digest(token.as_bytes()).into())
            }
            _ => None,
        };
        #[cfg(not(feature = "idp"))]
        let digest = None;
        let token_key = || TokenKey {
            kid: slot.kid.clone(),
            alg: Some(Cow::Borrowed(slot.alg.name())),
        };
        let with_key = |reason: Reason| Denied {
            key: token_key(),
            ..Denied::from(reason)
        };
        // For a public key: whether the cache held it, and the token's digest.
        let cached: Option<(bool, Option<[u8; 32]>)> = match &slot.check {
            Check::Hmac(hmac) => {
                match hmac.verify(message.as_bytes(), signature) {
                    Ok(true) => {}
                    Ok(false) => return Err(with_key(Reason::BadSignature)),
                    Err(_) => return Err(with_key(Reason::MalformedToken)),
                }
                None
            }
            #[cfg(feature = "idp")]
            Check::Public(public) => {
                let hit = match (&self.cache, &digest) {
                    (Some(cache), Some(digest)) => cache.get(digest, &slot.id, now, json),
                    _ => false,
                };
                if !hit {
                    let signature = BASE64URL
                        .decode(signature)
                        .map_err(|_| with_key(Reason::MalformedToken))?;
                    if !public.verify(slot.alg, message.as_bytes(), &signature) {
                        return Err(with_key(Reason::BadSignature));
                    }
                }
                Some((hit, digest))
            }
        };
        // The signature verified: from here on the token is the issuer's.
        if known.is_none() {
            let _ = self.accepted_header.set((header.into(), key));
        }
        if !matches!(cached, Some((true, _))) {
            json.clear();
            BASE64URL
                .decode_vec(payload, json)
                .map_err(|_| with_key(Reason::MalformedToken))?;
        }
        let claims: Claims = parse_object(json).map_err(with_key)?;
        if let (Some(cache), Some((false, Some(digest)))) = (&self.cache, cached) {
            cache.insert(digest, slot.id, claims.exp, json, now);
        }
        let user = claims.user();
        if let Err(reason) = claims.check(&self.policy, now) {
            return Err(Denied {
                reason,
                user,
                scope: None,
                key: token_key(),
            });
        }
        if let Some(scope) = claims.missing(ask.scopes) {
            return Err(Denied {
                reason: Reason::InsufficientScope,
                user,
                scope: Some(scope.to_owned()),
                key: token_key(),
            });
        }
        let user = user.expect("check found a user");
        let claims = if ask.claims {
            Some(serde_json::from_slice(json).map_err(|_| with_key(Reason::MalformedToken))?)
        } else {
            None
        };
        Ok(Verified {
            user,
            claims,
            key: token_key(),
            digest,
        })
    }
}

/// Parses a JSON object into `T`. serde's derived structs also accept an array of the
/// field values in order; a JOSE header and a claims set must be objects (RFC 7515
/// §4, RFC 7519 §7.2).
fn parse_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, Reason> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Reason::MalformedToken);
    }
    serde_json::from_slice(json).map_err(|_| Reason::MalformedToken)
}

#[cfg(test)]
pub(crate) mod tests;
