//! Why a request was refused: one `match` maps each reason to its log code, its HTTP
//! status and its `WWW-Authenticate` challenge.

use std::fmt;

/// Why a request to a protected path was refused.
///
/// Each reason has a stable [`code`](Reason::code) for the log (`event.reason`), an HTTP
/// [`status`](Reason::status) and a [`challenge`](Reason::challenge) (RFC 6750 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No `Authorization` header.
    MissingToken,
    /// An `Authorization` header with a scheme other than `Bearer`.
    UnsupportedScheme,
    /// A malformed request: several `Authorization` headers, an empty one, `Bearer`
    /// without a token, characters outside RFC 6750's `b64token`, or a token over the
    /// size cap; or a `Host` header missing (HTTP/1.1), repeated, or not an authority
    /// (RFC 9110 §7.2), whatever the path.
    InvalidRequest,
    /// Not a JWS in compact form, or a header or claims that are not the JSON they must be.
    MalformedToken,
    /// A header `alg` that no key verifies: `none`, `HS512`, `hs256`, ... (jwtguard
    /// verifies HS256, RS256, RS384, RS512, PS256, ES256, ES384 and EdDSA).
    AlgNotAllowed,
    /// A header `alg` other than the one the key its `kid` picks is pinned to: an HS256
    /// token for an RSA key (signed with the public key's bytes as a secret), an ES256
    /// token for an RSA key, an RS256 token for an HS256 secret. Algorithm confusion.
    AlgorithmMismatch,
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
    /// The server's clock reads before 1970: no token can be judged.
    ClockError,
    /// The request's framing is ambiguous or its header syntax invalid (RFC 9112 §6,
    /// RFC 9110 §5): several or non-numeric `Content-Length`, `Transfer-Encoding` other
    /// than `chunked` or together with `Content-Length`, control characters in a header,
    /// a method or a header name that is not a token. Its body
    /// could be read as another request, so the connection is closed.
    BadFraming,
    /// The request announces a `Content-Length` over 16 MiB.
    BodyTooLarge,
    /// With an upstream, a body on `GET`, `HEAD`, `OPTIONS` or `DELETE` (without
    /// `--allow-body-on-any-method`): an app that does not read it would take it for the
    /// next request, one the guard never saw. The connection is closed.
    BodyNotAllowed,
    /// The token's `kid` names no key of the key set (or it names none, and the set holds
    /// several).
    UnknownKey,
    /// The token is valid but lacks a scope its path requires (`--require`).
    InsufficientScope,
    /// The path cannot be normalised safely (an encoded `/`, a backslash, NUL, a bad
    /// escape, `..` above the root): it is refused rather than judged.
    BadPath,
    /// The client's address made more failed authentications than `--max-failures` within
    /// `--failure-window`: refused until the window ends, whatever its token.
    RateLimited,
    /// The keys come from `--jwks-url` and no JWK Set was fetched yet: 503 with
    /// `Retry-After`, whatever the token.
    NoKeys,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: [Reason; 21] = [
        Reason::MissingToken,
        Reason::UnsupportedScheme,
        Reason::InvalidRequest,
        Reason::MalformedToken,
        Reason::AlgNotAllowed,
        Reason::AlgorithmMismatch,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::MissingClaim,
        Reason::InvalidIssuer,
        Reason::InvalidAudience,
        Reason::ClockError,
        Reason::BadFraming,
        Reason::BodyTooLarge,
        Reason::BodyNotAllowed,
        Reason::UnknownKey,
        Reason::InsufficientScope,
        Reason::BadPath,
        Reason::RateLimited,
        Reason::NoKeys,
    ];

    /// The stable code written to the log as `event.reason`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::InvalidRequest => "invalid_request",
            Reason::MalformedToken => "malformed_token",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::AlgorithmMismatch => "algorithm_mismatch",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::MissingClaim => "missing_claim",
            Reason::InvalidIssuer => "invalid_issuer",
            Reason::InvalidAudience => "invalid_audience",
            Reason::ClockError => "clock_error",
            Reason::BadFraming => "bad_framing",
            Reason::BodyTooLarge => "body_too_large",
            Reason::BodyNotAllowed => "body_not_allowed",
            Reason::UnknownKey => "unknown_key",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::BadPath => "bad_path",
            Reason::RateLimited => "rate_limited",
            Reason::NoKeys => "no_keys",
        }
    }

    /// The HTTP status: 400 for a malformed request, 403 for a missing scope, 413 for a
    /// body too large, 429 for an address rate limited, 503 for a server fault, 401
    /// otherwise.
    pub fn status(self) -> u16 {
        match self {
            Reason::InvalidRequest
            | Reason::BadFraming
            | Reason::BadPath
            | Reason::BodyNotAllowed => 400,
            Reason::InsufficientScope => 403,
            Reason::BodyTooLarge => 413,
            Reason::RateLimited => 429,
            Reason::ClockError | Reason::NoKeys => 503,
            _ => 401,
        }
    }

    /// The `WWW-Authenticate` value: no error code when no credentials were offered
    /// (RFC 6750 §3.1), `invalid_request`, `invalid_token` or `insufficient_scope`
    /// otherwise (the last followed by the scope: see [`Refused::challenge`]); none for a
    /// server fault, a request refused for its framing or path, or a rate-limited one.
    ///
    /// [`Refused::challenge`]: crate::Refused::challenge
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            Reason::MissingToken | Reason::UnsupportedScheme => Some("Bearer realm=\"jwtguard\""),
            Reason::InvalidRequest => Some("Bearer realm=\"jwtguard\", error=\"invalid_request\""),
            Reason::InsufficientScope => {
                Some("Bearer realm=\"jwtguard\", error=\"insufficient_scope\"")
            }
            Reason::ClockError
            | Reason::NoKeys
            | Reason::BadFraming
            | Reason::BodyTooLarge
            | Reason::BadPath
            | Reason::BodyNotAllowed
            | Reason::RateLimited => None,
            _ => Some("Bearer realm=\"jwtguard\", error=\"invalid_token\""),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl Reason {
    /// What the reason means, for people (the log's `message`).
    pub(crate) fn text(self) -> &'static str {
        match self {
            Reason::MissingToken => "no bearer token",
            Reason::UnsupportedScheme => "authorization scheme is not Bearer",
            Reason::InvalidRequest => "malformed Authorization or Host header",
            Reason::MalformedToken => "token is not a well-formed JWT",
            Reason::AlgNotAllowed => "token algorithm is not one jwtguard verifies",
            Reason::AlgorithmMismatch => "token algorithm is not its key's",
            Reason::BadSignature => "token signature does not verify",
            Reason::Expired => "token has expired",
            Reason::NotYetValid => "token is not valid yet",
            Reason::MissingClaim => "token lacks a required claim",
            Reason::InvalidIssuer => "token issuer is not accepted",
            Reason::InvalidAudience => "token audience is not accepted",
            Reason::ClockError => "the server clock reads before 1970",
            Reason::BadFraming => "ambiguous framing or invalid header syntax",
            Reason::BodyTooLarge => "announced body too large",
            Reason::BodyNotAllowed => "a body on a method that forwards none",
            Reason::UnknownKey => "token key id is not in the key set",
            Reason::InsufficientScope => "token lacks a required scope",
            Reason::BadPath => "path cannot be normalised safely",
            Reason::RateLimited => "too many failed authentications from this address",
            Reason::NoKeys => "no JWK Set fetched from --jwks-url yet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges() {
        for reason in Reason::ALL {
            let (status, challenge) = (reason.status(), reason.challenge());
            match reason {
                Reason::MissingToken | Reason::UnsupportedScheme => {
                    assert_eq!(
                        (status, challenge),
                        (401, Some("Bearer realm=\"jwtguard\""))
                    )
                }
                Reason::InvalidRequest => assert_eq!(
                    (status, challenge),
                    (
                        400,
                        Some("Bearer realm=\"jwtguard\", error=\"invalid_request\"")
                    )
                ),
                Reason::ClockError | Reason::NoKeys => assert_eq!((status, challenge), (503, None)),
                Reason::BadFraming => assert_eq!((status, challenge), (400, None)),
                Reason::BodyTooLarge => assert_eq!((status, challenge), (413, None)),
                Reason::BadPath | Reason::BodyNotAllowed => {
                    assert_eq!((status, challenge), (400, None))
                }
                Reason::RateLimited => assert_eq!((status, challenge), (429, None)),
                Reason::InsufficientScope => assert_eq!(
                    (status, challenge),
                    (
                        403,
                        Some("Bearer realm=\"jwtguard\", error=\"insufficient_scope\"")
                    )
                ),
                _ => assert_eq!(
                    (status, challenge),
                    (
                        401,
                        Some("Bearer realm=\"jwtguard\", error=\"invalid_token\"")
                    )
                ),
            }
        }
    }
}
