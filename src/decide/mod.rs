//! Deciding: the plain parts of a request in, a [`Decision`](guard::Decision) out, with
//! its security event recorded.
//!
//! - [`guard`]: the [`Guard`](guard::Guard), built once from a [`Config`](crate::Config).
//! - [`request`]: the parts of a request it decides on; [`decision`]: what it decided.
//! - [`prefix`]: the configured prefixes a path is judged against.
//! - [`bearer`]: the token of the `Authorization` header.
//! - [`path`]: the path a request is judged by, and its other readings.
//! - [`host`]: the `Host` header a request may carry.
//! - [`forwarded`]: who the client is behind a trusted proxy.
//! - [`token`]: from a token to a verified user or a [`Reason`](reason::Reason).
//! - [`keys`], `public_key`: the keys tokens are verified with; [`jwk`]: the members of
//!   a JWK and the algorithms a key is pinned to; [`key_file`] and
//!   [`jwks_url`]: a key set read again from a file or fetched from a URL.
//! - [`token_cache`]: tokens whose public-key signature already verified.
//! - [`limiter`]: the brute-force limiter.
//! - [`reason`]: why a request was refused, its status and its log code.
//! - [`secret`]: the HS256 secret and where it comes from.
//!
//! No I/O on a connection here and no HTTP library: a front end hands in the method,
//! target, headers and peer. It may import [`crate::record`]'s events and its logger (the
//! guard owns a decision and its record, so the code that answers knows whether the event
//! was written), and the leaves `crate::error`, `crate::time` and `crate::metrics`; only
//! the guard imports `crate::config` (it is built from it; tests aside), and nothing here
//! is imported by `crate::config` but value types (secret, key set, network, path). Never
//! `crate::serve` or `crate::http`: those import this.
//! lib.rs keeps each module's crate-level name (`crate::guard`, `crate::token`, ...).

pub(crate) mod bearer;
pub(crate) mod decision;
pub(crate) mod forwarded;
pub(crate) mod guard;
pub(crate) mod host;
pub(crate) mod jwk;
pub(crate) mod jwks_url;
pub(crate) mod key_file;
pub(crate) mod keys;
pub(crate) mod limiter;
pub(crate) mod path;
pub(crate) mod prefix;
#[cfg(feature = "idp")]
pub(crate) mod public_key;
pub(crate) mod reason;
pub(crate) mod request;
pub(crate) mod secret;
pub(crate) mod token;
pub(crate) mod token_cache;
