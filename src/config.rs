//! Settings, their defaults and their validation.
//!
//! Plain values only: the guard (src/decide/guard.rs) and the server are built from a
//! [`Config`]; this module imports the value types its fields hold and checks (the
//! secret, a key set, a network, a path, a log format), never the guard, the token
//! verifier or the server.

use crate::event::LogFormat;
use crate::secret::Secret;
use crate::{Cidr, ClientIpHeader, KeySet};

/// Everything the guard and the server need. [`Guard::new`](crate::Guard::new) validates
/// it with [`Config::validate`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on, `IP:PORT` or `NAME:PORT`; port 0 picks a free port.
    /// Defaults to `127.0.0.1:8080`.
    pub listen: String,
    /// Path prefixes that need a token, matched on segment boundaries: `/api/` (or
    /// `/api`) protects `/api` and `/api/x` but not `/apix`; and under any reading of a
    /// path (`/api;x/y`, `/API./y`: README, "Paths are matched after normalising").
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
    /// Accept a secret shorter than [`MIN_SECRET_BYTES`](crate::MIN_SECRET_BYTES). Weakens security: a short
    /// secret can be brute-forced from any one token.
    /// Defaults to `false`.
    pub allow_weak_secret: bool,
    /// Keys by `kid` (`--jwks`), instead of one [`Config::secret`]: HS256 keys, or an
    /// identity provider's public keys. A set loaded from a file is read again when the
    /// file changes.
    /// Defaults to `None`.
    pub keys: Option<KeySet>,
    /// `http://HOST:PORT/PATH` of a JWK Set served by a local agent or sidecar (plain
    /// HTTP: a trusted network only), instead of a secret or [`Config::keys`]. Fetched by
    /// a thread of the guard at start (protected paths answer 503 `no_keys` until it
    /// loads), every [`Config::jwks_refresh`], and when a token names an unknown `kid`
    /// (at most every 30 s). A failed fetch keeps the last good set.
    /// Defaults to `None`.
    pub jwks_url: Option<String>,
    /// How often the set of [`Config::jwks_url`] is fetched again.
    /// Defaults to 5 minutes.
    pub jwks_refresh: std::time::Duration,
    /// How many public-key tokens whose signature verified are remembered (keyed by a
    /// digest of the token, each until its `exp`; its claims are checked on every use), so
    /// that a token sent again costs no signature check. `0` turns it off. HS256 tokens
    /// do not use it.
    /// Defaults to `1024`.
    pub token_cache: usize,
    /// `http://HOST:PORT` of the application to forward allowed requests to (reverse
    /// proxy mode). With it, every path needs a token except those under
    /// [`Config::public`], and [`Config::protect`] is not used.
    /// Defaults to `None`.
    pub upstream: Option<String>,
    /// Path prefixes that need no token, with an upstream or a forward-auth endpoint; a
    /// path is public only when every reading of it is under one.
    /// Each one weakens security for what is under it; everything else fails safe.
    /// Defaults to none.
    pub public: Vec<String>,
    /// The path of the forward-auth endpoint for a proxy's subrequests (nginx
    /// `auth_request`, Caddy `forward_auth`), `/auth` say: it answers 200 with the identity
    /// headers, 401, or 403, never 400.
    /// Defaults to `None`.
    pub forward_auth: Option<String>,
    /// Do not forward `Authorization` to the upstream.
    /// Defaults to `false`.
    pub strip_authorization: bool,
    /// Forward a body on `GET`, `HEAD`, `OPTIONS` and `DELETE` too. Weakens security: an
    /// app that does not read such a body (it need not, RFC 9110 §9.3) takes it for the
    /// next request on that upstream connection, a request the guard never saw. Without
    /// it such a request is refused (400, `body_not_allowed`) before it is judged.
    /// Defaults to `false`.
    pub allow_body_on_any_method: bool,
    /// More identity headers: (claim, header). The claim is a name or a dotted path into
    /// nested objects (`team.id`); `X-Auth-User` always carries the user.
    /// Defaults to none.
    pub claim_headers: Vec<(String, String)>,
    /// Proxies whose `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are believed (for
    /// `client.ip`, and a forward-auth request's original method and URI).
    /// Defaults to none.
    pub trusted_proxies: Vec<Cidr>,
    /// The one header the trusted proxies name the client in; the others are then
    /// ignored. Defaults to none: the first of `X-Forwarded-For`, `Forwarded` and
    /// `X-Real-IP` that is present.
    pub client_ip_header: Option<ClientIpHeader>,
    /// Scopes paths require: (path prefix, scope). A token must grant every scope whose
    /// prefix matches any reading of the path, in `scope`, `scp` or `roles`.
    /// Defaults to none.
    pub require: Vec<(String, String)>,
    /// How long, in seconds, the upstream may take to accept a connection, and then
    /// between any two reads or writes.
    /// Defaults to `30`.
    pub upstream_timeout: u64,
    /// The longest request head, in bytes (nginx `large_client_header_buffers`): a longer
    /// one is answered 431 and its connection closed.
    /// Defaults to `16384`.
    pub max_header_bytes: usize,
    /// Seconds a request head may take to arrive whole, from its first byte (from the
    /// connection's start for its first request; nginx `client_header_timeout`): then
    /// 408 and the connection is closed.
    /// Defaults to `10`.
    pub header_timeout: u64,
    /// Seconds a kept-alive connection may wait for its next request (nginx
    /// `keepalive_timeout`).
    /// Defaults to `60`.
    pub idle_timeout: u64,
    /// Seconds for the whole of a request body thrown away (serve mode), from its start:
    /// a body dripped a byte at a time cannot hold its connection (nginx `lingering_time`).
    /// Defaults to `60`.
    pub body_timeout: u64,
    /// Seconds an answer may wait for the client to read any of it (nginx
    /// `send_timeout`): then the connection is dropped (`client_not_reading`). jwtguard's
    /// answers are a few hundred bytes: only a client that stops reading ever waits.
    /// Defaults to `5`.
    pub send_timeout: u64,
    /// The most connections held at once (nginx `worker_connections`). At the cap, the
    /// connection idle the longest is closed to make room; with none idle, the new one is
    /// closed at once (`too_many_connections`).
    /// Defaults to `1024`.
    pub max_connections: usize,
    /// The most connections from one address (an IPv6 /64 counts as one, as in the
    /// brute-force limiter; nginx `limit_conn`), 0 for no cap; the peers
    /// of `--trusted-proxy` are not capped (they carry many clients, whose caps are
    /// theirs to keep). At the cap, that address's longest idle connection is closed to
    /// make room, or the new one is (`too_many_from_address`).
    /// Defaults to `256`.
    pub max_connections_per_address: usize,
    /// Failed authentications (a bad signature, an unknown key, a malformed token or a
    /// refused algorithm) one client address may make within [`Config::failure_window`];
    /// past them it is answered 429 until the window ends, even with a valid token. The
    /// address is `client.ip` behind a trusted proxy, else the peer; IPv6 by /64. Users
    /// behind one NAT share it. `0` turns the limiter off.
    /// Defaults to `20`.
    pub max_failures: u32,
    /// The window of [`Config::max_failures`], in seconds, 1 to 86400.
    /// Defaults to `60`.
    pub failure_window: u64,
    /// How many addresses the limiter remembers, 8 to 1048576 (a fixed table of about
    /// 32 bytes each); when it is full, a new address replaces the oldest that is not
    /// blocked.
    /// Defaults to `4096`.
    pub limiter_table: usize,
    /// Where to answer `GET /metrics` (Prometheus, `HOST:PORT`), if anywhere: a thread
    /// that lasts as long as the process, bound with `SO_REUSEPORT` (so that an old and
    /// a new worker share it). It has no authentication: keep it off the public network.
    /// Defaults to `None`.
    pub metrics: Option<String>,
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
            keys: None,
            jwks_url: None,
            jwks_refresh: std::time::Duration::from_secs(300),
            token_cache: 1024,
            upstream: None,
            public: Vec::new(),
            forward_auth: None,
            strip_authorization: false,
            allow_body_on_any_method: false,
            claim_headers: Vec::new(),
            trusted_proxies: Vec::new(),
            client_ip_header: None,
            require: Vec::new(),
            upstream_timeout: 30,
            max_header_bytes: 16 * 1024,
            header_timeout: 10,
            idle_timeout: 60,
            body_timeout: 60,
            send_timeout: 5,
            max_connections: 1024,
            max_connections_per_address: 256,
            max_failures: 20,
            failure_window: 60,
            limiter_table: 4096,
            metrics: None,
        }
    }
}

/// The identity header that always carries the user.
pub(crate) const USER_HEADER: &str = "X-Auth-User";

mod validate;

pub(crate) use validate::upstream_address;

impl Config {
    /// The settings for the start-up event, by name. Never the secret or a key, only
    /// where the secret came from and its length, and the keys' kids.
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("listen", self.listen.clone())];
        match &self.upstream {
            Some(upstream) => {
                fields.push(("upstream", upstream.clone()));
                fields.push(("upstream_timeout", self.upstream_timeout.to_string()));
                fields.push(("strip_authorization", self.strip_authorization.to_string()));
                fields.push((
                    "allow_body_on_any_method",
                    self.allow_body_on_any_method.to_string(),
                ));
            }
            None => {
                fields.push(("protect", self.protect.join(",")));
                // Serve mode's own HTTP layer (src/serve/): its limits.
                fields.extend([
                    ("max_header_bytes", self.max_header_bytes.to_string()),
                    ("header_timeout", self.header_timeout.to_string()),
                    ("idle_timeout", self.idle_timeout.to_string()),
                    ("body_timeout", self.body_timeout.to_string()),
                    ("send_timeout", self.send_timeout.to_string()),
                    ("max_connections", self.max_connections.to_string()),
                    (
                        "max_connections_per_address",
                        self.max_connections_per_address.to_string(),
                    ),
                ]);
            }
        }
        if !self.public.is_empty() {
            fields.push(("public", self.public.join(",")));
        }
        fields.extend(self.forward_auth.clone().map(|v| ("forward_auth", v)));
        fields.extend([
            ("max_token_bytes", self.max_token_bytes.to_string()),
            ("leeway", self.leeway.to_string()),
            ("require_exp", self.require_exp.to_string()),
            ("max_failures", self.max_failures.to_string()),
        ]);
        fields.extend(self.metrics.clone().map(|v| ("metrics", v)));
        if self.max_failures > 0 {
            fields.push(("failure_window", self.failure_window.to_string()));
            fields.push(("limiter_table", self.limiter_table.to_string()));
        }
        fields.extend(self.issuer.clone().map(|v| ("issuer", v)));
        fields.extend(self.audience.clone().map(|v| ("audience", v)));
        let pairs = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(a, b)| format!("{a}={b}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.require.is_empty() {
            fields.push(("require", pairs(&self.require)));
        }
        if !self.claim_headers.is_empty() {
            fields.push(("claim_headers", pairs(&self.claim_headers)));
        }
        if !self.trusted_proxies.is_empty() {
            let nets: Vec<String> = self.trusted_proxies.iter().map(Cidr::to_string).collect();
            fields.push(("trusted_proxies", nets.join(",")));
            if let Some(header) = self.client_ip_header {
                fields.push(("client_ip_header", header.name().into()));
            }
        }
        match (&self.secret, &self.keys) {
            (Some(s), _) => fields.push((
                "secret",
                format!("{} ({} bytes)", s.source(), s.expose().len()),
            )),
            (None, Some(keys)) => {
                fields.push(("kids", keys.kids().collect::<Vec<_>>().join(",")));
                fields.push(("token_cache", self.token_cache.to_string()));
            }
            (None, None) => match &self.jwks_url {
                Some(url) => {
                    // Shown without its query (an access key may ride in it).
                    let shown = crate::jwks_url::Url::parse(url).map(|u| u.to_string());
                    fields.push(("jwks_url", shown.unwrap_or_default()));
                    fields.push(("jwks_refresh", self.jwks_refresh.as_secs().to_string()));
                    fields.push(("token_cache", self.token_cache.to_string()));
                }
                None => fields.push(("secret", "none".into())),
            },
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretSource;

    pub(super) fn with_secret(bytes: &[u8]) -> Config {
        Config {
            secret: Some(Secret::new(bytes, SecretSource::Env)),
            ..Config::default()
        }
    }

    #[test]
    fn start_up_fields_never_show_the_secret() {
        let config = with_secret(b"super-secret-value-super-secret-value");
        let shown = format!("{config:?} {:?}", config.fields());
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(
            config
                .fields()
                .contains(&("secret", "env:JWTGUARD_SECRET (37 bytes)".into()))
        );
    }
}
