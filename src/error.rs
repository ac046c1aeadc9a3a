//! The start-up error.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why jwtguard could not start (or, for [`Error::Accept`], could not go on).
///
/// Request-time failures are not errors: they are [`Reason`](crate::Reason)s.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range or malformed.
    Config {
        /// Which setting, as its flag is spelled (`--leeway`).
        setting: &'static str,
        /// What is wrong with it, including the offending value where it is not secret.
        problem: String,
    },
    /// No secret was configured.
    NoSecret,
    /// The secret is shorter than 32 bytes (RFC 7518 §3.2) and weak secrets are not allowed.
    WeakSecret {
        /// Its length in bytes.
        len: usize,
    },
    /// The secret file could not be read.
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The log file could not be opened.
    LogFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The listening socket could not be bound.
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP layer stopped accepting connections (out of file descriptors, say).
    Accept(io::Error),
    /// The operating system gave no random bytes (for the request ids, or a demo secret).
    Random(String),
    /// A `log` logger was installed already, so the security log could not be.
    Logger,
    /// The sealing key file could not be created, read or used.
    SealKey {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { setting, problem } => write!(f, "invalid {setting}: {problem}"),
            Error::NoSecret => f.write_str(
                "no secret configured: set JWTGUARD_SECRET or JWTGUARD_SECRET_FILE, or pass --secret-file (without one, serve runs a demo, and only on a loopback address)",
            ),
            Error::WeakSecret { len } => write!(
                f,
                "the secret is {len} bytes; HS256 needs at least 32 (RFC 7518 section 3.2): use a longer one, or pass --allow-weak-secret"
            ),
            Error::SecretFile { path, .. } => {
                write!(f, "cannot read the secret file {}", path.display())
            }
            Error::LogFile { path, .. } => write!(f, "cannot open the log file {}", path.display()),
            Error::Bind { addr, .. } => write!(f, "cannot listen on {addr}"),
            Error::Accept(_) => f.write_str("the server stopped accepting connections"),
            Error::Random(cause) => write!(f, "the operating system gave no random bytes: {cause}"),
            Error::Logger => f.write_str("a logger is installed already: the security log must be the process's logger"),
            Error::SealKey { path, .. } => {
                write!(f, "cannot use the sealing key file {}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::SecretFile { source, .. }
            | Error::LogFile { source, .. }
            | Error::SealKey { source, .. } => Some(source),
            Error::Bind { source, .. } => Some(source.as_ref()),
            Error::Accept(source) => Some(source),
            _ => None,
        }
    }
}
