//! From an `Authorization` header to a verified user or a reason for refusal. No I/O.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Why a request to a protected path was refused.
///
/// Each reason has a stable [`code`](Reason::code) for the log, an HTTP
/// [`status`](Reason::status) and a `WWW-Authenticate` challenge (RFC 6750 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No `Authorization` header.
    MissingToken,
    /// An `Authorization` header with a scheme other than `Bearer`.
    UnsupportedScheme,
    /// A malformed request: several `Authorization` headers, an empty one, `Bearer`
    /// without a token, characters outside RFC 6750's `b64token`, or a token over the
    /// size cap.
    InvalidRequest,
    /// Not a JWS in compact form, or a header or claims that are not the JSON they must be.
    MalformedToken,
    /// A header `alg` other than `HS256` (`none`, `HS512`, `RS256`, ...).
    AlgNotAllowed,
    /// The signature does not match the secret.
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// A required claim (`exp`, `iss`, `aud`, or a user: `sub` or `user_id`) is absent.
    MissingClaim,
    /// `iss` is not the configured issuer.
    InvalidIssuer,
    /// `aud` does not name the configured audience, or is present when none is configured.
    InvalidAudience,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: [Reason; 11] = [
        Reason::MissingToken,
        Reason::UnsupportedScheme,
        Reason::InvalidRequest,
        Reason::MalformedToken,
        Reason::AlgNotAllowed,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::MissingClaim,
        Reason::InvalidIssuer,
        Reason::InvalidAudience,
    ];

    /// The stable code written to the log as `event.reason`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::InvalidRequest => "invalid_request",
            Reason::MalformedToken => "malformed_token",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::MissingClaim => "missing_claim",
            Reason::InvalidIssuer => "invalid_issuer",
            Reason::InvalidAudience => "invalid_audience",
        }
    }

    /// The HTTP status: 400 for a malformed request, 401 otherwise.
    pub fn status(self) -> u16 {
        match self {
            Reason::InvalidRequest => 400,
            _ => 401,
        }
    }

    /// The `WWW-Authenticate` value: no error code when no credentials were offered
    /// (RFC 6750 §3.1), `invalid_request` or `invalid_token` otherwise.
    pub fn challenge(self) -> &'static str {
        match self {
            Reason::MissingToken | Reason::UnsupportedScheme => "Bearer realm=\"jwtguard\"",
            Reason::InvalidRequest => "Bearer realm=\"jwtguard\", error=\"invalid_request\"",
            _ => "Bearer realm=\"jwtguard\", error=\"invalid_token\"",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::MissingToken => "no bearer token",
            Reason::UnsupportedScheme => "authorization scheme is not Bearer",
            Reason::InvalidRequest => "malformed authorization header",
            Reason::MalformedToken => "token is not a well-formed JWT",
            Reason::AlgNotAllowed => "token algorithm is not HS256",
            Reason::BadSignature => "token signature does not verify",
            Reason::Expired => "token has expired",
            Reason::NotYetValid => "token is not valid yet",
            Reason::MissingClaim => "token lacks a required claim",
            Reason::InvalidIssuer => "token issuer is not accepted",
            Reason::InvalidAudience => "token audience is not accepted",
        })
    }
}

/// Extracts the bearer token from the values of a request's `Authorization` headers
/// (RFC 6750 §2.1): `Bearer`, case-insensitive, one or more spaces, then a `b64token`
/// of at most `max_bytes` bytes.
///
/// ```
/// use jwtguard::{bearer_token, Reason};
/// assert_eq!(bearer_token(["bearer abc.def.ghi"], 8192), Ok("abc.def.ghi"));
/// assert_eq!(bearer_token([], 8192), Err(Reason::MissingToken));
/// assert_eq!(bearer_token(["Basic YWxhZGRpbjpvcGVuc2VzYW1l"], 8192), Err(Reason::UnsupportedScheme));
/// assert_eq!(bearer_token(["Bearer a b"], 8192), Err(Reason::InvalidRequest));
/// ```
pub fn bearer_token<'a>(
    values: impl IntoIterator<Item = &'a str>,
    max_bytes: usize,
) -> Result<&'a str, Reason> {
    let mut values = values.into_iter();
    let value = values.next().ok_or(Reason::MissingToken)?;
    if values.next().is_some() {
        return Err(Reason::InvalidRequest);
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.is_empty() {
        return Err(Reason::InvalidRequest);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::UnsupportedScheme);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.len() > max_bytes || !is_b64token(token) {
        return Err(Reason::InvalidRequest);
    }
    Ok(token)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &str) -> bool {
    /// The `b64token` characters other than `=`.
    const B64TOKEN: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] =
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            b += 1;
        }
        table
    };
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
}

/// What a verifier checks besides the signature. Built from [`Config`](crate::Config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Whether `exp` must be present. When present it is always checked.
    pub require_exp: bool,
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must name it.
    pub audience: Option<String>,
}

/// A refusal: the reason, and the user when the signature had verified (an expired but
/// genuine token still names its user in the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Why.
    pub reason: Reason,
    /// `sub` or `user_id` of a token whose signature verified.
    pub user: Option<String>,
}

/// What the log and the client are told of a verification result:
/// (`event.reason`, `user.id`, HTTP status).
pub fn outcome(result: &Result<String, Denied>) -> (&'static str, Option<&str>, u16) {
    match result {
        Ok(user) => ("ok", Some(user), 200),
        Err(denied) => (
            denied.reason.code(),
            denied.user.as_deref(),
            denied.reason.status(),
        ),
    }
}

impl From<Reason> for Denied {
    fn from(reason: Reason) -> Self {
        Denied { reason, user: None }
    }
}

/// The JOSE header fields jwtguard looks at. Unknown fields are ignored; a repeated
/// field is an error.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
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
    aud: Option<Audience<'a>>,
    #[serde(borrow, default)]
    sub: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<UserId<'a>>,
}

/// `aud`: one string or an array of them (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

/// The blog's `user_id`: a string or an integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserId<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(i64),
}

impl Claims<'_> {
    /// `sub`, or else `user_id`; an empty one is no user.
    fn user(&self) -> Option<String> {
        let user = match (&self.sub, &self.user_id) {
            (Some(sub), _) => sub.to_string(),
            (None, Some(UserId::Text(id))) => id.to_string(),
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
            (Some(Audience::One(aud)), Some(want)) if aud != want => {
                return Err(Reason::InvalidAudience);
            }
            (Some(Audience::Many(auds)), Some(want)) if !auds.iter().any(|a| a == want) => {
                return Err(Reason::InvalidAudience);
            }
            (Some(_), Some(_)) => {}
        }
        match self.user() {
            Some(_) => Ok(()),
            None => Err(Reason::MissingClaim),
        }
    }
}

/// Verifies HS256 tokens against one secret and one [`Policy`].
///
/// One pass over the token: the header is parsed once (its `alg` must be `HS256` and it
/// must not carry `crit`), the signature is checked through jsonwebtoken's crypto
/// provider (the HS256 one of [`crate::crypto`]), and only then are the claims parsed,
/// once, and checked.
pub struct Verifier {
    key: DecodingKey,
    policy: Policy,
    /// The encoded header of the first token whose header passed.
    accepted_header: OnceLock<Box<str>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("key", &"[redacted]")
            .field("policy", &self.policy)
            .finish()
    }
}

const BASE64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl Verifier {
    /// A verifier for tokens signed with `secret` under `policy`.
    ///
    /// Installs the HS256 crypto provider ([`crate::crypto::install`]) if none is.
    pub fn new(secret: &[u8], policy: &Policy) -> Verifier {
        crate::crypto::install();
        crate::crypto::prepare(secret);
        Verifier {
            key: DecodingKey::from_secret(secret),
            policy: policy.clone(),
            accepted_header: OnceLock::new(),
        }
    }

    /// Verifies `token`: the signature first, then the claims. Returns the user.
    pub fn verify(&self, token: &str) -> Result<String, Denied> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.verify_at(token, now)
    }

    fn verify_at(&self, token: &str, now: f64) -> Result<String, Denied> {
        thread_local! {
            /// The decoded header or claims: one buffer per thread, reused.
            static JSON: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        JSON.with_borrow_mut(|json| self.verify_with(token, now, json))
    }

    fn verify_with(&self, token: &str, now: f64, json: &mut Vec<u8>) -> Result<String, Denied> {
        let Some((message, signature)) = token.rsplit_once('.') else {
            return Err(Reason::MalformedToken.into());
        };
        let Some((header, payload)) = message.split_once('.') else {
            return Err(Reason::MalformedToken.into());
        };
        if payload.contains('.') {
            return Err(Reason::MalformedToken.into());
        }
        // Tokens of one issuer share their header: the one accepted first is remembered,
        // and the same bytes need no second look.
        if self.accepted_header.get().map(|h| &**h) != Some(header) {
            json.clear();
            BASE64URL
                .decode_vec(header, json)
                .map_err(|_| Reason::MalformedToken)?;
            let parsed: JoseHeader = parse_object(json)?;
            if parsed.alg != "HS256" {
                return Err(Reason::AlgNotAllowed.into());
            }
            if parsed.crit.is_some() {
                // RFC 7515 §4.1.11: jwtguard understands no extension, so none may be critical.
                return Err(Reason::MalformedToken.into());
            }
            let _ = self.accepted_header.set(header.into());
        }
        match jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &self.key,
            Algorithm::HS256,
        ) {
            Ok(true) => {}
            Ok(false) => return Err(Reason::BadSignature.into()),
            Err(_) => return Err(Reason::MalformedToken.into()),
        }
        // The signature verified: from here on the claims are the issuer's.
        json.clear();
        BASE64URL
            .decode_vec(payload, json)
            .map_err(|_| Reason::MalformedToken)?;
        let claims: Claims = parse_object(json)?;
        let user = claims.user();
        match claims.check(&self.policy, now) {
            Ok(()) => Ok(user.expect("check found a user")),
            Err(reason) => Err(Denied { reason, user }),
        }
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
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-0123456789abcdef0123456789";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs `claims` under `header` with HMAC-SHA256, by hand (not through the code
    /// under test).
    fn sign(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
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

    #[test]
    fn bearer_header_cases() {
        let ok = |v: &'static str| bearer_token([v], 16);
        assert_eq!(ok("Bearer abc"), Ok("abc"));
        assert_eq!(ok("bearer abc"), Ok("abc"));
        assert_eq!(ok("BEARER abc"), Ok("abc"));
        assert_eq!(ok("Bearer   abc"), Ok("abc"));
        assert_eq!(ok("Bearer a-b.c_d~e+f/g=="), Ok("a-b.c_d~e+f/g=="));
        assert_eq!(ok("Bearer 0123456789abcdef"), Ok("0123456789abcdef"));
        let cases = [
            ("Basic dXNlcjpwYXNz", Reason::UnsupportedScheme),
            ("Bearerabc", Reason::UnsupportedScheme),
            ("Token abc", Reason::UnsupportedScheme),
            ("", Reason::InvalidRequest),
            ("Bearer", Reason::InvalidRequest),
            ("Bearer ", Reason::InvalidRequest),
            ("Bearer a b", Reason::InvalidRequest),
            ("Bearer a,b", Reason::InvalidRequest),
            ("Bearer ===", Reason::InvalidRequest),
            ("Bearer a=b", Reason::InvalidRequest),
            ("Bearer a\tb", Reason::InvalidRequest),
            ("Bearer \"abc\"", Reason::InvalidRequest),
            ("Bearer 0123456789abcdefX", Reason::InvalidRequest),
        ];
        for (value, want) in cases {
            assert_eq!(ok(value), Err(want), "{value:?}");
        }
        assert_eq!(bearer_token([], 16), Err(Reason::MissingToken));
        assert_eq!(
            bearer_token(["Bearer a", "Bearer a"], 16),
            Err(Reason::InvalidRequest)
        );
    }

    /// lexopt's basic_fuzz idea: every short string over an awkward alphabet, no panic,
    /// and any token returned is a non-empty b64token within the cap.
    #[test]
    fn bearer_parser_never_panics() {
        let alphabet = [
            "B", "bearer", "Bearer", " ", "\t", "=", "a", ".", "é", "\r", ",", "\"",
        ];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for input in &inputs {
                for piece in alphabet {
                    next.push(format!("{input}{piece}"));
                }
            }
            inputs.extend(next);
            inputs.dedup();
        }
        for input in &inputs {
            if let Ok(token) = bearer_token([input.as_str()], 8) {
                assert!(!token.is_empty() && token.len() <= 8 && is_b64token(token));
            }
        }
    }

    #[test]
    fn valid_tokens_name_the_user() {
        let v = Verifier::new(SECRET, &policy());
        let exp = now() + 60;
        assert_eq!(
            v.verify(&hs256(json!({"sub": "alice", "exp": exp}))),
            Ok("alice".into())
        );
        assert_eq!(
            v.verify(&hs256(json!({"user_id": "bob", "exp": exp}))),
            Ok("bob".into())
        );
        assert_eq!(
            v.verify(&hs256(json!({"user_id": 42, "exp": exp}))),
            Ok("42".into())
        );
        // sub wins over user_id.
        assert_eq!(
            v.verify(&hs256(json!({"sub": "carol", "user_id": 1, "exp": exp}))),
            Ok("carol".into())
        );
        // Expired by less than the leeway.
        assert_eq!(
            v.verify(&hs256(json!({"sub": "dave", "exp": now() - 10}))),
            Ok("dave".into())
        );
    }

    #[test]
    fn every_reason_is_reached() {
        let mut p = policy();
        p.issuer = Some("https://issuer.example".into());
        p.audience = Some("jwtguard".into());
        let v = Verifier::new(SECRET, &p);
        let exp = now() + 60;
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
        assert_eq!(v.verify(&hs256(good.clone())), Ok("alice".into()));
        let listed = with("aud", json!(["other", "jwtguard"]));
        assert_eq!(v.verify(&hs256(listed)), Ok("alice".into()));
        let forged = sign(
            json!({"alg": "HS256"}),
            good.clone(),
            b"another-secret-another-secret-xx",
        );
        let cases = [
            ("garbage", Reason::MalformedToken, None),
            ("a.b.c", Reason::MalformedToken, None),
            (
                "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
                Reason::BadSignature,
                None,
            ),
            (
                &sign_raw(json!({"alg": "HS256"}), b"not json", SECRET),
                Reason::MalformedToken,
                None,
            ),
            (&hs256(with("sub", json!(5))), Reason::MalformedToken, None),
            (&*forged, Reason::BadSignature, None),
            (
                &sign(json!({"alg": "none"}), good.clone(), SECRET),
                Reason::AlgNotAllowed,
                None,
            ),
            (
                &sign(json!({"alg": "HS512"}), good.clone(), SECRET),
                Reason::AlgNotAllowed,
                None,
            ),
            (
                &sign(json!({"alg": "RS256"}), good.clone(), SECRET),
                Reason::AlgNotAllowed,
                None,
            ),
            (
                &sign(
                    json!({"alg": "HS256", "crit": ["exp"]}),
                    good.clone(),
                    SECRET,
                ),
                Reason::MalformedToken,
                None,
            ),
            (
                &hs256(with("exp", json!(now() - 100))),
                Reason::Expired,
                Some("alice"),
            ),
            (
                &hs256(with("nbf", json!(now() + 100))),
                Reason::NotYetValid,
                Some("alice"),
            ),
            (&hs256(without("exp")), Reason::MissingClaim, Some("alice")),
            (&hs256(without("iss")), Reason::MissingClaim, Some("alice")),
            (&hs256(without("aud")), Reason::MissingClaim, Some("alice")),
            (&hs256(without("sub")), Reason::MissingClaim, None),
            (&hs256(with("sub", json!(""))), Reason::MissingClaim, None),
            (
                &hs256(with("iss", json!("https://evil.example"))),
                Reason::InvalidIssuer,
                Some("alice"),
            ),
            (
                &hs256(with("aud", json!("other"))),
                Reason::InvalidAudience,
                Some("alice"),
            ),
            // Claims of the wrong type: the claims as a whole are not what they must be.
            (
                &hs256(with("aud", json!(["other", "another"]))),
                Reason::InvalidAudience,
                Some("alice"),
            ),
            (
                &hs256(with("exp", json!("tomorrow"))),
                Reason::MalformedToken,
                None,
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (token, reason, user) in cases {
            let denied = v.verify(token).expect_err(token);
            assert_eq!(denied.reason, reason, "{token}");
            assert_eq!(denied.user.as_deref(), user, "{token}");
            seen.insert(reason);
        }
        let header_only = [
            Reason::MissingToken,
            Reason::UnsupportedScheme,
            Reason::InvalidRequest,
        ];
        for reason in Reason::ALL {
            assert!(
                seen.contains(&reason) || header_only.contains(&reason),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn token_shape_edge_cases() {
        let v = Verifier::new(SECRET, &policy());
        let exp = now() + 60;
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
            assert_eq!(v.verify(&token).unwrap_err().reason, reason, "{token}");
        }
        // NumericDate may be fractional; the boundary is exp == now - leeway.
        let at = 1_000_000.0;
        let token = |exp: f64| hs256(json!({"sub": "a", "exp": exp}));
        assert!(v.verify_at(&token(at - 30.0), at).is_ok());
        assert_eq!(
            v.verify_at(&token(at - 30.5), at).unwrap_err().reason,
            Reason::Expired
        );
        let nbf = hs256(json!({"sub": "a", "exp": at + 100.0, "nbf": at + 30.0}));
        assert!(v.verify_at(&nbf, at).is_ok());
        assert_eq!(
            v.verify_at(&nbf, at - 1.0).unwrap_err().reason,
            Reason::NotYetValid
        );
    }

    #[test]
    fn missing_exp_passes_only_when_allowed_and_exp_is_still_checked() {
        let mut p = policy();
        let strict = Verifier::new(SECRET, &p);
        p.require_exp = false;
        let lax = Verifier::new(SECRET, &p);
        let token = hs256(json!({"user_id": 7}));
        assert_eq!(
            strict.verify(&token).unwrap_err().reason,
            Reason::MissingClaim
        );
        assert_eq!(lax.verify(&token), Ok("7".into()));
        let expired = hs256(json!({"sub": "a", "exp": now() - 100}));
        assert_eq!(lax.verify(&expired).unwrap_err().reason, Reason::Expired);
    }

    #[test]
    fn audience_in_token_is_refused_when_none_is_configured() {
        let v = Verifier::new(SECRET, &policy());
        let token = hs256(json!({"sub": "a", "exp": now() + 60, "aud": "x"}));
        assert_eq!(
            v.verify(&token).unwrap_err().reason,
            Reason::InvalidAudience
        );
    }

    #[test]
    fn statuses_and_challenges() {
        for reason in Reason::ALL {
            let (status, challenge) = (reason.status(), reason.challenge());
            match reason {
                Reason::MissingToken | Reason::UnsupportedScheme => {
                    assert_eq!((status, challenge), (401, "Bearer realm=\"jwtguard\""))
                }
                Reason::InvalidRequest => assert_eq!(
                    (status, challenge),
                    (400, "Bearer realm=\"jwtguard\", error=\"invalid_request\"")
                ),
                _ => assert_eq!(
                    (status, challenge),
                    (401, "Bearer realm=\"jwtguard\", error=\"invalid_token\"")
                ),
            }
        }
    }
}
