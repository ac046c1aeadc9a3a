//! Settings, their defaults and their validation; the secret.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::auth::Policy;
use crate::{Error, LogFormat};

/// The environment variable holding the secret itself.
pub const SECRET_ENV: &str = "JWTGUARD_SECRET";
/// The environment variable naming a file that holds the secret.
pub const SECRET_FILE_ENV: &str = "JWTGUARD_SECRET_FILE";

/// The shortest secret accepted without [`Config::allow_weak_secret`]: 256 bits, the
/// size of the HS256 hash output (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Everything the guard and the server need. Check it with [`Config::validate`] (the
/// [`Guard`](crate::Guard) does).
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on; port 0 picks a free port.
    /// Defaults to `127.0.0.1:8080`.
    pub listen: String,
    /// Path prefixes that need a token, matched on segment boundaries: `/api/` (or
    /// `/api`) protects `/api` and `/api/x` but not `/apix`.
    /// Defaults to `["/api/"]`.
    pub protect: Vec<String>,
    /// The longest token accepted, in bytes; a longer one is an `invalid_request`.
    /// Defaults to `8192`.
    pub max_token_bytes: usize,
    /// Clock skew allowed on `exp` and `nbf`, in seconds, at most 300.
    /// Defaults to `30`.
    pub leeway: u64,
    /// Whether tokens must carry `exp`. Turning this off weakens security: a token
    /// without `exp` is valid for as long as the secret is.
    /// Defaults to `true`.
    pub require_exp: bool,
    /// When set, tokens must carry this `iss`.
    /// Defaults to `None`.
    pub issuer: Option<String>,
    /// When set, tokens must name this audience in `aud`. When not set, a token that
    /// carries `aud` at all is refused (RFC 7519 §4.1.3).
    /// Defaults to `None`.
    pub audience: Option<String>,
    /// How security events are encoded.
    /// Defaults to [`LogFormat::Json`].
    pub log_format: LogFormat,
    /// The HS256 secret.
    /// Defaults to `None`, which [`Config::validate`] refuses.
    pub secret: Option<Secret>,
    /// Accept a secret shorter than [`MIN_SECRET_BYTES`]. Weakens security: a short
    /// secret can be brute-forced from any one token.
    /// Defaults to `false`.
    pub allow_weak_secret: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            protect: vec!["/api/".into()],
            max_token_bytes: 8192,
            leeway: 30,
            require_exp: true,
            issuer: None,
            audience: None,
            log_format: LogFormat::Json,
            secret: None,
            allow_weak_secret: false,
        }
    }
}

impl Config {
    /// Checks every setting; returns the first problem found.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |setting, problem: String| Err(Error::Config { setting, problem });
        if self.protect.is_empty() {
            return bad("--protect", "at least one prefix is needed".into());
        }
        for prefix in &self.protect {
            if !prefix.starts_with('/') || prefix.contains(['?', '#']) {
                return bad(
                    "--protect",
                    format!("{prefix:?} must be a path starting with '/', without '?' or '#'"),
                );
            }
            if prefix.trim_end_matches('/') == "/healthz" {
                return bad(
                    "--protect",
                    "/healthz is always open (it is the health check)".into(),
                );
            }
        }
        if !(1..=65_536).contains(&self.max_token_bytes) {
            return bad(
                "--max-token-bytes",
                format!("{} is not in 1..=65536", self.max_token_bytes),
            );
        }
        if self.leeway > 300 {
            return bad("--leeway", format!("{} seconds is over 300", self.leeway));
        }
        for (setting, value) in [("--issuer", &self.issuer), ("--audience", &self.audience)] {
            if value.as_deref() == Some("") {
                return bad(setting, "must not be empty".into());
            }
        }
        let secret = self.secret.as_ref().ok_or(Error::NoSecret)?;
        if secret.bytes.len() < MIN_SECRET_BYTES && !self.allow_weak_secret {
            return Err(Error::WeakSecret {
                len: secret.bytes.len(),
            });
        }
        Ok(())
    }

    /// The claim checks this configuration asks for.
    pub fn policy(&self) -> Policy {
        Policy {
            leeway: self.leeway,
            require_exp: self.require_exp,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        }
    }

    /// A one-line summary for the start-up event. Never includes the secret.
    pub fn summary(&self) -> String {
        let secret = match &self.secret {
            Some(s) => format!("{} ({} bytes)", s.source, s.bytes.len()),
            None => "none".into(),
        };
        format!(
            "protect={} max_token_bytes={} leeway={}s require_exp={} issuer={} audience={} secret={}",
            self.protect.join(","),
            self.max_token_bytes,
            self.leeway,
            self.require_exp,
            self.issuer.as_deref().unwrap_or("-"),
            self.audience.as_deref().unwrap_or("-"),
            secret,
        )
    }
}

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
    /// A secret given as bytes.
    pub fn new(bytes: impl Into<Vec<u8>>, source: SecretSource) -> Secret {
        Secret {
            bytes: bytes.into(),
            source,
        }
    }

    /// 32 random bytes from the operating system.
    pub fn random() -> Secret {
        let mut bytes = vec![0; MIN_SECRET_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system has no random source");
        Secret::new(bytes, SecretSource::Random)
    }

    /// Reads the secret from, in this order: `file` (the `--secret-file` flag), the file
    /// named by `JWTGUARD_SECRET_FILE`, or `JWTGUARD_SECRET`. One trailing newline (LF or
    /// CRLF) is stripped from a file. `None` when none of them is set.
    ///
    /// Setting `JWTGUARD_SECRET` together with a file is refused as ambiguous, and so is
    /// an empty secret.
    pub fn load(file: Option<&Path>) -> Result<Option<Secret>, Error> {
        let env_file = std::env::var_os(SECRET_FILE_ENV).filter(|v| !v.is_empty());
        let env_value = std::env::var_os(SECRET_ENV);
        let file = file.map(Path::to_path_buf).or(env_file.map(PathBuf::from));
        let secret = match (file, env_value) {
            (Some(_), Some(_)) => {
                return Err(Error::Config {
                    setting: SECRET_ENV,
                    problem: format!(
                        "set together with a secret file; use one ({SECRET_ENV} or a file)"
                    ),
                });
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
            (None, Some(value)) => Secret::new(value.into_encoded_bytes(), SecretSource::Env),
            (None, None) => return Ok(None),
        };
        if secret.bytes.is_empty() {
            return Err(Error::Config {
                setting: "secret",
                problem: format!("the secret from {} is empty", secret.source),
            });
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

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
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

    fn with_secret(bytes: &[u8]) -> Config {
        Config {
            secret: Some(Secret::new(bytes, SecretSource::Env)),
            ..Config::default()
        }
    }

    #[test]
    fn defaults_validate_once_a_secret_is_set() {
        assert!(matches!(Config::default().validate(), Err(Error::NoSecret)));
        with_secret(&[7; 32]).validate().unwrap();
    }

    #[test]
    fn short_secrets_need_the_flag() {
        let mut config = with_secret(b"short");
        assert!(matches!(
            config.validate(),
            Err(Error::WeakSecret { len: 5 })
        ));
        config.allow_weak_secret = true;
        config.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        type Change = fn(&mut Config);
        let cases: [(Change, &str); 7] = [
            (|c| c.protect = vec![], "--protect"),
            (|c| c.protect = vec!["/healthz/".into()], "--protect"),
            (|c| c.protect = vec!["api".into()], "--protect"),
            (|c| c.max_token_bytes = 0, "--max-token-bytes"),
            (|c| c.leeway = 301, "--leeway"),
            (|c| c.issuer = Some(String::new()), "--issuer"),
            (|c| c.audience = Some(String::new()), "--audience"),
        ];
        for (change, want) in cases {
            let mut config = with_secret(&[7; 32]);
            change(&mut config);
            match config.validate() {
                Err(Error::Config { setting, .. }) => assert_eq!(setting, want),
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_and_summary_never_show_the_secret() {
        let config = with_secret(b"super-secret-value-super-secret-value");
        let shown = format!("{config:?} {}", config.summary());
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(
            config
                .summary()
                .contains("secret=env:JWTGUARD_SECRET (37 bytes)")
        );
    }

    #[test]
    fn secret_file_loses_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("jwtguard-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (content, want) in [
            (&b"abc\n"[..], &b"abc"[..]),
            (b"abc\r\n", b"abc"),
            (b"abc\n\n", b"abc\n"),
            (b"abc", b"abc"),
        ] {
            let path = dir.join("secret");
            std::fs::write(&path, content).unwrap();
            // The flag wins over the variables, which the test does not touch.
            let secret = Secret::load(Some(&path)).unwrap().unwrap();
            assert_eq!(secret.expose(), want);
            assert_eq!(secret.source(), &SecretSource::File(path));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
