//! jwtguard guards the paths of a small HTTP API with HS256 JSON Web Tokens and writes
//! one security event per decision.
//!
//! The `jwtguard` binary is a complete server; this library is the same guard for your
//! own [`tiny_http`] loop.
//!
//! # Quick start
//!
//! ```no_run
//! use jwtguard::{Config, Guard, Secret, SecretSource};
//!
//! let config = Config {
//!     secret: Some(Secret::new(std::env::var("JWTGUARD_SECRET")?, SecretSource::Env)),
//!     ..Config::default()
//! };
//! let guard = Guard::new(&config)?;
//! // A logger must take `security` events, or every protected request gets 503.
//! env_logger::init();
//! let server = tiny_http::Server::http("127.0.0.1:8080").map_err(|e| e.to_string())?;
//! for request in server.incoming_requests() {
//!     let path = jwtguard::path_of(request.url()).to_owned();
//!     if guard.is_protected(&path) {
//!         let decision = guard.check(&request); // writes the security event
//!         if decision.user().is_none() {
//!             decision.answer(request); // 400, 401 or 503
//!             continue;
//!         }
//!     }
//!     // ... serve the request: it is public, or its token verified ...
//!     jwtguard::respond(request, tiny_http::Response::from_string("hello"));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security log
//!
//! Every [`Guard::check`] emits exactly one event through the [`log`] facade, target
//! `security`, as one line in the configured [`LogFormat`]: `info` for a success,
//! `warn` for a refusal. The line carries the fields listed in the README (Elastic Common
//! Schema names) and never the token or the secret; values from the request are escaped
//! into printable ASCII and capped at [`audit::MAX_FIELD_BYTES`].
//!
//! | level | target | what |
//! |---|---|---|
//! | `info` | `security` | a request allowed; start-up and shutdown |
//! | `warn` | `security` | a request refused |
//! | `error` | `security` | the server stopped accepting connections |
//!
//! The library only calls `log` macros; the application installs the logger. A decision
//! whose event no logger takes (none installed, or `security` filtered out) is not acted
//! on: [`Decision::recorded`] is `false` and the status 503. To refuse requests also when
//! the writes fail, have the logger write through an [`audit::LogWriter`], as the binary
//! does, and give [`serve`] a clone of it to write the events of waiting requests
//! together.
//!
//! [`Guard::is_protected`] matches the raw request path: route on the same string.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
mod auth;
mod config;
pub mod crypto;
mod error;
mod server;
mod token;

pub use audit::LogFormat;
pub use auth::{Denied, Policy, Reason, Verifier, bearer_token, outcome};
pub use config::{Config, MIN_SECRET_BYTES, SECRET_ENV, SECRET_FILE_ENV, Secret, SecretSource};
pub use error::Error;
pub use server::{Decision, Guard, MAX_DRAINED_BODY, Reply, handle, path_of, respond, serve};
pub use token::mint;
