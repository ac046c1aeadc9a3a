//! The HS256 secret: where it comes from (a file, the environment, or random), and a
//! `Debug` that never shows it.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::Error;

/// The environment variable holding the secret itself.
pub const SECRET_ENV: &str = "JWTGUARD_SECRET";
/// The environment variable naming a file that holds the secret.
pub const SECRET_FILE_ENV: &str = "JWTGUARD_SECRET_FILE";

/// The shortest secret accepted without [`Config::allow_weak_secret`](crate::Config::allow_weak_secret): 256 bits, the
/// size of the HS256 hash output (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Where a secret came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The `JWTGUARD_SECRET` environment variable.
    Env,
    /// A file, from `--secret-file` or `JWTGUARD_SECRET_FILE`.
    File(PathBuf),
    /// Generated at random for this process.
    Random,
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env => write!(f, "env:{SECRET_ENV}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
            SecretSource::Random => f.write_str("random"),
        }
    }
}

/// The HS256 secret. Its `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
    source: SecretSource,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("bytes", &"[redacted]")
            .field("len", &self.bytes.len())
            .field("source", &self.source)
            .finish()
    }
}

impl Secret {
    /// A secret given as bytes. [`Config::validate`](crate::Config::validate) checks its length.
    pub fn new(bytes: impl Into<Vec<u8>>, source: SecretSource) -> Secret {
        Secret {
            bytes: bytes.into(),
            source,
        }
    }

    /// 32 random bytes from the operating system.
    ///
    /// # Errors
    ///
    /// [`Error::Random`] when the operating system gives no random bytes.
    pub fn random() -> Result<Secret, Error> {
        let mut bytes = vec![0; MIN_SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        Ok(Secret::new(bytes, SecretSource::Random))
    }

    /// Reads the secret from, in this order: `file` (the `--secret-file` flag), the file
    /// named by `JWTGUARD_SECRET_FILE`, or `JWTGUARD_SECRET`. One trailing newline (LF or
    /// CRLF) is stripped from a file. `None` when none of them is set.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `JWTGUARD_SECRET` is set together with a file (ambiguous),
    /// when a variable is set but empty, or when `JWTGUARD_SECRET` ends with a newline
    /// (a token signed without it would not verify, and the mistake would not show);
    /// [`Error::SecretFile`] when the file cannot be read.
    pub fn load(file: Option<&Path>) -> Result<Option<Secret>, Error> {
        Secret::from_sources(
            file,
            std::env::var_os(SECRET_FILE_ENV),
            std::env::var_os(SECRET_ENV),
        )
    }

    /// [`Secret::load`] with the two variables' values given.
    fn from_sources(
        file: Option<&Path>,
        env_file: Option<OsString>,
        env_value: Option<OsString>,
    ) -> Result<Option<Secret>, Error> {
        let bad = |setting, problem: String| Err(Error::Config { setting, problem });
        if env_file.as_ref().is_some_and(|v| v.is_empty()) && file.is_none() {
            return bad(
                SECRET_FILE_ENV,
                "set but empty: name a file, or unset it".into(),
            );
        }
        let file = file
            .map(Path::to_path_buf)
            .or(env_file.filter(|v| !v.is_empty()).map(PathBuf::from));
        let secret = match (file, env_value) {
            (Some(_), Some(_)) => {
                return bad(
                    SECRET_ENV,
                    format!("set together with a secret file; use one ({SECRET_ENV} or a file)"),
                );
            }
            (Some(path), None) => {
                let mut bytes = read_capped(&path).map_err(|source| Error::SecretFile {
                    path: path.clone(),
                    source,
                })?;
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                Secret::new(bytes, SecretSource::File(path))
            }
            (None, Some(value)) => {
                let bytes = value.into_encoded_bytes();
                if bytes.ends_with(b"\n") || bytes.ends_with(b"\r") {
                    return bad(
                        SECRET_ENV,
                        "ends with a newline: set it without one (printf, not echo), or put the secret in a file (one trailing newline is stripped there)".into(),
                    );
                }
                Secret::new(bytes, SecretSource::Env)
            }
            (None, None) => return Ok(None),
        };
        if secret.bytes.is_empty() {
            return bad(
                "secret",
                format!("the secret from {} is empty", secret.source),
            );
        }
        Ok(Some(secret))
    }

    /// Whether the secret comes from a file that users other than its owner may read.
    pub fn is_readable_by_others(&self) -> bool {
        use std::os::unix::fs::PermissionsExt as _;
        match &self.source {
            SecretSource::File(path) => {
                std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
            }
            _ => false,
        }
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// Where it came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

/// The longest secret file read: a secret is a few dozen bytes, and `/dev/zero` or a
/// log file named by mistake must not be read for ever.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

pub(crate) fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other("over 64 KiB: not a secret file"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_sources() {
        let dir = std::env::temp_dir().join(format!("jwtguard-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        for (content, want) in [
            (&b"abc\n"[..], &b"abc"[..]),
            (b"abc\r\n", b"abc"),
            (b"abc\n\n", b"abc\n"),
            (b"abc", b"abc"),
        ] {
            std::fs::write(&path, content).unwrap();
            let secret = Secret::from_sources(Some(&path), None, None)
                .unwrap()
                .unwrap();
            assert_eq!(secret.expose(), want);
            assert_eq!(secret.source(), &SecretSource::File(path.clone()));
            // The variable naming a file, the same way.
            let secret = Secret::from_sources(None, Some(path.clone().into()), None)
                .unwrap()
                .unwrap();
            assert_eq!(secret.expose(), want);
        }
        let env = |v: &str| Some(OsString::from(v));
        assert_eq!(
            Secret::from_sources(None, None, None)
                .unwrap()
                .map(|s| s.bytes),
            None
        );
        assert_eq!(
            Secret::from_sources(None, None, env("s3cret"))
                .unwrap()
                .unwrap()
                .expose(),
            b"s3cret"
        );
        let refused = |result: Result<Option<Secret>, Error>| match result {
            Err(Error::Config { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(Secret::from_sources(None, None, env(""))), "secret");
        assert_eq!(
            refused(Secret::from_sources(None, None, env("s3cret\n"))),
            SECRET_ENV
        );
        assert_eq!(
            refused(Secret::from_sources(None, env(""), None)),
            SECRET_FILE_ENV
        );
        assert_eq!(
            refused(Secret::from_sources(Some(&path), None, env("s3cret"))),
            SECRET_ENV
        );
        std::fs::write(&path, b"\n").unwrap();
        assert_eq!(
            refused(Secret::from_sources(Some(&path), None, None)),
            "secret"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
