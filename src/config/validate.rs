//! Checking a [`Config`] once, at start-up: every setting in range, every prefix a path
//! each backend reads alike, every identity header a name that cannot clash, and a
//! secret or key set strong enough.

use super::{Config, USER_HEADER};
use crate::Error;
use crate::secret::MIN_SECRET_BYTES;

/// Headers an identity header may not be: the request's own framing, routing and
/// credentials, and what jwtguard sets.
const RESERVED_HEADERS: [&str; 17] = [
    "Authorization",
    "Connection",
    "Content-Length",
    "Content-Type",
    "Cookie",
    "Expect",
    "Forwarded",
    "Host",
    "Keep-Alive",
    "Proxy-Authorization",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "X-Forwarded-For",
    "X-Request-Id",
    "X-Real-IP",
];

/// `http://HOST:PORT`, with nothing after but an optional `/`: the address.
pub(crate) fn upstream_address(url: &str) -> Result<&str, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("{url:?}: jwtguard speaks plain HTTP to the upstream (put it next to the application)")
        } else {
            format!("{url:?} is not http://HOST:PORT")
        }
    })?;
    let addr = rest.strip_suffix('/').unwrap_or(rest);
    if addr.is_empty() || addr.contains(['/', '@', '?', '#']) {
        return Err(format!(
            "{url:?} is not http://HOST:PORT (no path, user or query)"
        ));
    }
    check_listen(addr)?;
    Ok(addr)
}

/// A path prefix for `--protect`, `--public`, `--require`, `--forward-auth`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    match crate::path::normalise(prefix) {
        Ok(_) if prefix.contains(';') => {
            // Tomcat's `/a;b` is `/a`: a prefix that means one path to some applications
            // and another to others cannot be matched.
            Err(format!("{prefix:?} has a ';' (path parameters)"))
        }
        Ok(_) if crate::path::fold(prefix).is_err() => Err(format!(
            "{prefix:?} has a segment of dots and spaces only (Windows may take it for '.' or '..')"
        )),
        Ok(normal) if normal == prefix && !prefix.contains(['?', '#']) => Ok(()),
        Ok(normal) if !prefix.contains(['?', '#']) => Err(format!(
            "{prefix:?} is not a normalised path (it means {normal:?})"
        )),
        _ => Err(format!(
            "{prefix:?} must be a path starting with '/', without '?', '#', '..', '//' or escapes of '/'"
        )),
    }
}

/// A header name that is a token (RFC 9110 §5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Config {
    /// Checks every setting; returns the first problem found.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed or out-of-range setting, [`Error::NoSecret`]
    /// and [`Error::WeakSecret`] for the secret.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |setting, problem: String| Err(Error::Config { setting, problem });
        if let Err(problem) = check_listen(&self.listen) {
            return bad("--listen", problem);
        }
        if self.protect.is_empty() {
            return bad("--protect", "at least one prefix is needed".into());
        }
        for prefix in &self.protect {
            if let Err(problem) = check_prefix(prefix) {
                return bad("--protect", problem);
            }
            if prefix.trim_end_matches('/') == "/healthz" {
                return bad(
                    "--protect",
                    "/healthz is always open (it is the health check)".into(),
                );
            }
        }
        if let Some(upstream) = &self.upstream
            && let Err(problem) = upstream_address(upstream)
        {
            return bad("--upstream", problem);
        }
        if !self.public.is_empty() && self.upstream.is_none() && self.forward_auth.is_none() {
            return bad("--public", "goes with --upstream or --forward-auth".into());
        }
        for prefix in &self.public {
            if let Err(problem) = check_prefix(prefix) {
                return bad("--public", problem);
            }
        }
        if self.client_ip_header.is_some() && self.trusted_proxies.is_empty() {
            return bad(
                "--client-ip-header",
                "goes with --trusted-proxy: only a trusted proxy's header is read".into(),
            );
        }
        if let Some(path) = &self.forward_auth {
            if let Err(problem) = check_prefix(path) {
                return bad("--forward-auth", problem);
            }
            if path.trim_end_matches('/') == "/healthz" {
                return bad("--forward-auth", "/healthz is the health check".into());
            }
        }
        for (prefix, scope) in &self.require {
            if let Err(problem) = check_prefix(prefix) {
                return bad("--require", problem);
            }
            // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            let scope_char = |b: u8| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e);
            if scope.is_empty() || !scope.bytes().all(scope_char) {
                return bad(
                    "--require",
                    format!("{scope:?} is not a scope (RFC 6749 scope-token)"),
                );
            }
        }
        let mut headers = vec![USER_HEADER.to_owned()];
        for (claim, header) in &self.claim_headers {
            if claim.is_empty() || claim.split('.').any(str::is_empty) {
                return bad(
                    "--claim-header",
                    format!("{claim:?} is not a claim name or dotted path"),
                );
            }
            if !is_token(header)
                || RESERVED_HEADERS
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(header))
                || header.to_ascii_lowercase().starts_with("x-forwarded-")
            {
                return bad(
                    "--claim-header",
                    format!("{header:?} cannot be an identity header"),
                );
            }
            if headers.iter().any(|h| h.eq_ignore_ascii_case(header)) {
                return bad("--claim-header", format!("{header:?} twice"));
            }
            headers.push(header.clone());
        }
        if !(1..=3600).contains(&self.upstream_timeout) {
            return bad(
                "--upstream-timeout",
                format!("{} is not in 1..=3600", self.upstream_timeout),
            );
        }
        for (setting, seconds) in [
            ("--header-timeout", self.header_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--body-timeout", self.body_timeout),
            ("--send-timeout", self.send_timeout),
        ] {
            if !(1..=3600).contains(&seconds) {
                return bad(setting, format!("{seconds} is not in 1..=3600"));
            }
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return bad(
                "--max-header-bytes",
                format!("{} is not in 1024..=1048576", self.max_header_bytes),
            );
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad(
                "--max-connections",
                format!("{} is not in 1..=1000000", self.max_connections),
            );
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
        if !(1..=86_400).contains(&self.failure_window) {
            return bad(
                "--failure-window",
                format!("{} is not in 1..=86400", self.failure_window),
            );
        }
        if !(8..=1 << 20).contains(&self.limiter_table) {
            return bad(
                "--limiter-table",
                format!("{} is not in 8..=1048576", self.limiter_table),
            );
        }
        for (setting, value) in [("--issuer", &self.issuer), ("--audience", &self.audience)] {
            if value.as_deref() == Some("") {
                return bad(setting, "must not be empty".into());
            }
        }
        if let Some(url) = &self.jwks_url {
            if self.secret.is_some() || self.keys.is_some() {
                return bad(
                    "--jwks-url",
                    "set together with a secret or --jwks; use one".into(),
                );
            }
            crate::jwks_url::Url::parse(url).map_err(|problem| Error::Config {
                setting: "--jwks-url",
                problem,
            })?;
            if self.jwks_refresh.is_zero() {
                return bad("--jwks-refresh", "must be at least 1 second".into());
            }
            return Ok(());
        }
        let shortest = match (&self.secret, &self.keys) {
            (Some(_), Some(_)) => {
                return bad("--jwks", "set together with a secret; use one".into());
            }
            (None, None) => return Err(Error::NoSecret),
            (Some(secret), None) => {
                if secret.expose().is_empty() {
                    return bad(
                        "secret",
                        format!("the secret from {} is empty", secret.source()),
                    );
                }
                secret.expose().len()
            }
            (None, Some(keys)) => keys.shortest(),
        };
        if shortest < MIN_SECRET_BYTES && !self.allow_weak_secret {
            return Err(Error::WeakSecret { len: shortest });
        }
        Ok(())
    }
}

/// Whether `listen` is `HOST:PORT` with a port in range; says what is wrong otherwise.
fn check_listen(listen: &str) -> Result<(), String> {
    if listen.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    if listen.contains("://") {
        return Err(format!("{listen:?}: give HOST:PORT, without a scheme"));
    }
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(if listen.is_empty() {
            "is empty: give HOST:PORT".into()
        } else if listen.bytes().all(|b| b.is_ascii_digit()) {
            format!(
                "{listen:?} needs a host: 127.0.0.1:{listen} (this machine only) or 0.0.0.0:{listen} (every interface)"
            )
        } else {
            format!("{listen:?} needs a port: {listen}:8080, or {listen}:0 for any free one")
        });
    };
    if host.is_empty() {
        return Err(format!(
            "{listen:?} needs a host: 127.0.0.1{listen} (this machine only) or 0.0.0.0{listen} (every interface)"
        ));
    }
    if port.parse::<u16>().is_err() {
        return Err(
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                format!("port {port} is not in 0..=65535")
            } else {
                format!("{listen:?}: {port:?} is not a port number")
            },
        );
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "{listen:?}: write an IPv6 address in brackets, [{host}]:{port}"
        ));
    }
    if host.starts_with('[') {
        return Err(format!("{listen:?}: {host} is not an IPv6 address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::with_secret;
    use crate::{Secret, SecretSource};

    fn setting_of(result: Result<(), Error>) -> &'static str {
        match result {
            Err(Error::Config { setting, .. }) => setting,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_validate_once_a_secret_is_set() {
        assert!(matches!(Config::default().validate(), Err(Error::NoSecret)));
        with_secret(&[7; 32]).validate().unwrap();
    }

    #[test]
    fn short_or_empty_secrets_are_refused() {
        let mut config = with_secret(b"short");
        assert!(matches!(
            config.validate(),
            Err(Error::WeakSecret { len: 5 })
        ));
        config.allow_weak_secret = true;
        config.validate().unwrap();
        config.secret = Some(Secret::new(Vec::new(), SecretSource::Env));
        assert_eq!(setting_of(config.validate()), "secret");
    }

    #[test]
    fn bad_settings_are_named() {
        type Change = fn(&mut Config);
        let cases: [(Change, &str); 15] = [
            (|c| c.protect = vec![], "--protect"),
            (|c| c.max_header_bytes = 1023, "--max-header-bytes"),
            (|c| c.header_timeout = 0, "--header-timeout"),
            (|c| c.idle_timeout = 3601, "--idle-timeout"),
            (|c| c.body_timeout = 0, "--body-timeout"),
            (|c| c.send_timeout = 0, "--send-timeout"),
            (|c| c.max_connections = 0, "--max-connections"),
            (|c| c.max_connections = 1_000_001, "--max-connections"),
            (|c| c.protect = vec!["/healthz/".into()], "--protect"),
            (|c| c.protect = vec!["api".into()], "--protect"),
            (|c| c.max_token_bytes = 0, "--max-token-bytes"),
            (|c| c.leeway = u64::MAX, "--leeway"),
            (|c| c.issuer = Some(String::new()), "--issuer"),
            (|c| c.audience = Some(String::new()), "--audience"),
            (
                |c| c.client_ip_header = Some(crate::ClientIpHeader::XRealIp),
                "--client-ip-header",
            ),
        ];
        for (change, want) in cases {
            let mut config = with_secret(&[7; 32]);
            change(&mut config);
            assert_eq!(setting_of(config.validate()), want);
        }
    }

    #[test]
    fn a_prefix_every_backend_reads_alike_is_needed() {
        for (prefix, problem) in [
            ("/api;x/", "has a ';'"),
            ("/api%3Bx/", "must be a path"),
            ("/a/.../b", "dots and spaces only"),
            ("/a/..%20/b", "dots and spaces only"),
        ] {
            let mut config = with_secret(&[7; 32]);
            config.require = vec![(prefix.into(), "admin".into())];
            let Err(Error::Config {
                setting,
                problem: got,
            }) = config.validate()
            else {
                panic!("{prefix} accepted")
            };
            assert_eq!(setting, "--require");
            assert!(got.contains(problem), "{prefix}: {got}");
        }
        let mut config = with_secret(&[7; 32]);
        config.protect = vec!["/Admin./".into(), "/v1.2/".into()];
        assert!(config.validate().is_ok());
    }

    #[test]
    fn listen_mistakes_are_named_for_what_they_are() {
        for ok in [
            "127.0.0.1:8080",
            "[::1]:0",
            "0.0.0.0:65535",
            "localhost:8080",
        ] {
            assert_eq!(check_listen(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("8080", "needs a host: 127.0.0.1:8080"),
            (":8080", "needs a host: 127.0.0.1:8080"),
            ("http://127.0.0.1:8080", "without a scheme"),
            ("127.0.0.1:99999", "port 99999 is not in 0..=65535"),
            ("127.0.0.1:http", "is not a port number"),
            ("127.0.0.1", "needs a port: 127.0.0.1:8080"),
            ("::1:8080", "in brackets, [::1]:8080"),
            ("[::x]:8080", "is not an IPv6 address"),
            ("", "is empty"),
        ];
        for (listen, want) in cases {
            let problem = check_listen(listen).unwrap_err();
            assert!(problem.contains(want), "{listen:?}: {problem}");
        }
    }
}
