//! jwtguard guards the paths of a small HTTP API with JSON Web Tokens (HS256, or an
//! identity provider's RS256, PS256, ES256, ES384 or EdDSA keys from a JWK Set: see
//! [`KeySet`]) and writes one security event per decision.
//!
//! The `jwtguard` binary is a complete server; this library is the same guard for your
//! own [`tiny_http`] loop: the [`Guard`] decides from the plain parts of a [`Request`],
//! [`http`] adapts tiny_http's, and the [`SecurityLog`] writes the events.
//!
//! # Quick start
//!
//! ```
//! use jwtguard::{Config, Decision, Guard, LogFormat, Secret, SecretSource, SecurityLog, http};
//! use tiny_http::Response;
//!
//! SecurityLog::stderr(LogFormat::Json)?.install()?; // the log owns the `security` target
//! let secret = Secret::new(*b"an example secret of 32 bytes ..", SecretSource::Env);
//! let guard = Guard::new(&Config { secret: Some(secret.clone()), ..Config::default() })?;
//! let server = tiny_http::Server::http("127.0.0.1:0")?;
//! # let addr = server.server_addr().to_ip().unwrap();
//! # let mut claims = serde_json::Map::new();
//! # claims.insert("sub".into(), "alice".into());
//! # claims.insert("exp".into(), u32::MAX.into());
//! # let token = jwtguard::mint(&secret, &claims);
//! # let client = std::thread::spawn(move || {
//! #     use std::io::{Read, Write};
//! #     let mut stream = std::net::TcpStream::connect(addr).unwrap();
//! #     write!(stream, "GET /api/orders HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
//! #     let mut answer = String::new();
//! #     stream.read_to_string(&mut answer).unwrap();
//! #     answer
//! # });
//! for request in server.incoming_requests().take(1) {
//!     match guard.check(&http::request(&request)) {
//!         Decision::Refused(refused) => http::answer(request, &refused), // 400, 401, 403, 429, 503
//!         Decision::Allowed(user) => http::respond(request, Response::from_string(user.user())),
//!         Decision::Public => http::respond(request, Response::from_string("hello")),
//!     }
//! }
//! # let answer = client.join().unwrap();
//! # assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
//! # assert!(answer.ends_with("alice"), "{answer}");
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```
//!
//! # Security log
//!
//! Every decision on a protected path records exactly one event through the [`log`]
//! facade, target [`TARGET`] (`security`), save the refusals (429) of an address the
//! brute-force limiter blocks after its window's first ([`Config::max_failures`]). The installed [`SecurityLog`] writes it as one
//! line in the configured [`LogFormat`] and tells the guard whether it reached the sink: a
//! request is served only then. With no logger, another logger, or a maximum level below
//! `info`, nothing confirms the event, and the guard answers 503: it fails closed.
//!
//! | level | target | what |
//! |---|---|---|
//! | `info` | `security` | a request allowed; start-up and shutdown |
//! | `warn` | `security` | a request refused |
//! | `error` | `security` | the server stopped accepting connections |
//! | any | any other | passed to the logger given to [`SecurityLog::others`] |
//!
//! The line carries the fields listed in docs/security-log.md (Elastic Common Schema names), never
//! the token or the secret; values from the request are escaped into printable ASCII and
//! capped at 256 bytes.
//!
//! A log built with [`SecurityLog::sealed`] ends every line with `event.sequence` and
//! `event.hash`, chaining it to the line before under a key that moves forward every epoch;
//! [`seal::verify`] checks it with the verification key [`seal::init`] returned. See
//! [`seal`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod decide;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "tiny_http")]
pub mod http;
mod metrics;
#[cfg(test)]
mod proptests;
mod record;
mod reply;
mod serve;
mod time;

// The modules keep their crate-level names (`crate::guard`, `crate::event`, ...): the
// front ends and the other branches import them so.
#[cfg(feature = "idp")]
use decide::public_key;
use decide::{
    forwarded, guard, host, jwks_url, key_file, keys, limiter, path, reason, secret, token,
    token_cache,
};
pub use record::seal;
use record::{event, logger, sink, verify};

pub use config::Config;
pub use error::Error;
pub use event::{Cause, LogFormat, RequestId, Supervision};
pub use forwarded::{Cidr, ClientIpHeader};
pub use guard::{Allowed, Decision, Guard, Headers, Refused, Request};
pub use keys::{KeySet, mint};
pub use logger::{OtherRecords, SecurityLog, TARGET, record_supervision, write_record};
#[cfg(feature = "sign")]
pub use public_key::SigningKey;
pub use reason::Reason;
pub use secret::{MIN_SECRET_BYTES, SECRET_ENV, SECRET_FILE_ENV, Secret, SecretSource};
pub use serve::server::{Server, Stopper};
pub use token_cache::CacheStats;
