//! The guard: from the plain parts of a request to a decision, with its security event
//! recorded. No HTTP library here: [`crate::http`] adapts tiny_http's requests.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::USER_HEADER;
use crate::event::RateLimited;
use crate::event::{Action, Event, Fingerprint, RequestEvent, RequestId};
use crate::forwarded::Trusted;
use crate::keys::{Alg, Material, VerifyingKey};
use crate::limiter::{Block, Limiter};
use crate::logger::{self, Recorded};
use crate::path::Readings;
use crate::token::{Ask, Denied, Policy, Verified};
use crate::{Config, Error, Reason};

use super::bearer::bearer_token;
use super::decision::answer_status;
use super::prefix::{Prefix, Protected, all_under, prefixes};

// The front ends and the adapter name these `crate::guard::...`.
pub(crate) use super::decision::Pending;
pub use super::decision::{Allowed, Decision, Refused};
pub use super::request::{Headers, Request};
pub(crate) use crate::path::path_of;

/// Decides on requests to protected paths and records one security event per decision.
///
/// Build it once from a [`Config`]; it is `Sync` and cheap to call per request.
pub struct Guard {
    keys: crate::key_file::Keys,
    pub(crate) cache: Option<std::sync::Arc<crate::token_cache::TokenCache>>,
    protected: Protected,
    /// `--public` prefixes, for forward-auth subrequests.
    public: Vec<Prefix>,
    /// (prefix, scope) pairs.
    require: Vec<(Prefix, String)>,
    /// Whether some prefix differs from its fold ([`crate::path::Readings::iter`]).
    folds: bool,
    /// (dotted claim path, header name).
    claim_headers: Vec<(Vec<String>, String)>,
    trusted: Trusted,
    /// Allowed requests go on to an upstream.
    forwards: bool,
    max_token_bytes: usize,
    /// The brute-force limiter; `None` when off.
    limiter: Option<Limiter>,
    /// Random, so that request ids differ between processes.
    id_prefix: u32,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("protected", &self.protected)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Validates `config` and builds the guard.
    ///
    /// # Errors
    ///
    /// The first problem [`Config::validate`] finds, or [`Error::Random`] when the
    /// operating system gives no random bytes (for the request ids).
    pub fn new(config: &Config) -> Result<Guard, Error> {
        config.validate()?;
        let id_prefix = getrandom::u32().map_err(|e| Error::Random(e.to_string()))?;
        let folds = [&config.protect, &config.public]
            .into_iter()
            .flatten()
            .chain(config.require.iter().map(|(prefix, _)| prefix))
            .any(|prefix| Prefix::new(prefix).folded.is_some());
        let protected = match config.upstream {
            Some(_) => Protected::AllBut(prefixes(&config.public)),
            None => Protected::Under(prefixes(&config.protect)),
        };
        let cache = (config.token_cache > 0)
            .then(|| std::sync::Arc::new(crate::token_cache::TokenCache::new(config.token_cache)));
        Ok(Guard {
            keys: match &config.jwks_url {
                Some(url) => crate::key_file::Keys::Fetched(crate::jwks_url::Fetched::new(
                    crate::jwks_url::Url::parse(url).map_err(|problem| Error::Config {
                        setting: "--jwks-url",
                        problem,
                    })?,
                    config.jwks_refresh,
                    policy(config),
                    config.allow_weak_secret,
                    cache.clone(),
                )),
                None => crate::key_file::Keys::new(
                    config.keys.as_ref().filter(|_| config.secret.is_none()),
                    verifying_keys(config),
                    policy(config),
                    config.allow_weak_secret,
                    cache.clone(),
                ),
            },
            cache,
            protected,
            public: prefixes(&config.public),
            require: config
                .require
                .iter()
                .map(|(prefix, scope)| (Prefix::new(prefix), scope.clone()))
                .collect(),
            folds,
            claim_headers: config
                .claim_headers
                .iter()
                .map(|(claim, header)| {
                    (
                        claim.split('.').map(str::to_owned).collect(),
                        header.clone(),
                    )
                })
                .collect(),
            trusted: Trusted::new(&config.trusted_proxies).reading(config.client_ip_header),
            forwards: config.upstream.is_some(),
            max_token_bytes: config.max_token_bytes,
            limiter: Limiter::new(
                config.max_failures,
                config.failure_window,
                config.limiter_table,
            ),
            id_prefix,
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether a path needs a token: when a protected prefix holds for any of its
    /// readings, or a public one not for every reading.
    pub(super) fn is_protected(&self, readings: &Readings<'_>, forward_auth: bool) -> bool {
        match (&self.protected, forward_auth) {
            (_, true) => !all_under(readings, self.folds, &self.public),
            (Protected::Under(prefixes), false) => readings
                .iter(self.folds)
                .any(|reading| prefixes.iter().any(|p| p.holds(reading))),
            (Protected::AllBut(public), false) => !all_under(readings, self.folds, public),
        }
    }

    /// The verified-token cache's hits, misses and entries (all zero when it is off).
    pub fn token_cache_stats(&self) -> crate::CacheStats {
        self.cache.as_ref().map(|c| c.stats()).unwrap_or_default()
    }

    /// Whether it has keys to verify with: not until the JWK Set of `--jwks-url` was
    /// fetched (which this starts, in a thread of its own, if it has not yet).
    pub fn keys_loaded(&self) -> bool {
        self.keys.start();
        self.keys.loaded()
    }

    /// Starts fetching the JWK Set of `--jwks-url`, if that is where the keys come from.
    pub(crate) fn start_fetching(&self) {
        self.keys.start();
    }

    /// Whether the peer is a trusted proxy.
    pub(crate) fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|p| self.trusted.contains(p))
    }

    /// A forward-auth subrequest's parts with the original request's method and target,
    /// when its peer is a trusted proxy that says them (`X-Original-Method` and
    /// `X-Original-URI`, nginx's; `X-Forwarded-Method` and `X-Forwarded-Uri`, Traefik's and
    /// Caddy's); the subrequest's own otherwise. `Err` (with the subrequest's own) when
    /// they disagree: Caddy and Traefik pass a client's own `X-Original-URI` on beside
    /// theirs, nginx a client's `X-Forwarded-Uri`, so two different values (of one name or
    /// of the two) mean a client is naming another request.
    pub(crate) fn original<'a, H: Headers + ?Sized>(
        &self,
        parts: Request<'a, H>,
    ) -> Result<Request<'a, H>, Request<'a, H>> {
        let (own_method, own_target, headers) = (parts.method, parts.target, parts.headers);
        if !self.trusts(parts.peer()) {
            return Ok(parts.forward_auth(own_method, own_target));
        }
        let agreed = |a: &'static str, b: &'static str| {
            let mut values = headers.values(a).chain(headers.values(b));
            let first = values.next();
            match values.all(|v| Some(v) == first) {
                true => Ok(first),
                false => Err(()),
            }
        };
        match (
            agreed("X-Original-Method", "X-Forwarded-Method"),
            agreed("X-Original-URI", "X-Forwarded-Uri"),
        ) {
            (Ok(method), Ok(target)) => {
                Ok(parts.forward_auth(method.unwrap_or(own_method), target.unwrap_or(own_target)))
            }
            _ => Err(parts.forward_auth(own_method, own_target)),
        }
    }

    /// A new request id, for a request that has no decision of its own (a public path
    /// forwarded to the upstream): its answer, and any event about it, carry one too.
    pub(crate) fn new_request_id(&self) -> RequestId {
        RequestId::new(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The identity headers' names: `X-Auth-User`, then the claim headers.
    pub(crate) fn identity_names(&self) -> Vec<&str> {
        std::iter::once(USER_HEADER)
            .chain(self.claim_headers.iter().map(|(_, h)| h.as_str()))
            .collect()
    }

    /// Decides on `request`: [`Decision::Public`] for a path that needs no token;
    /// otherwise verifies its bearer token and records the security event, and returns
    /// the decision only the log can back (503 when the event could not be written).
    ///
    /// The path is normalised first (`//`, `.` and `..` segments, escapes of unreserved
    /// characters): a path that cannot be is refused (400, `bad_path`), never taken for a
    /// public one. It is judged under each reading a common backend gives it (`;parameters`
    /// removed; case and trailing dots ignored): a protected or `--require` prefix applies
    /// when it holds for any reading, a `--public` one only when it holds for every one.
    ///
    /// Any path, public ones included, is refused (400, `invalid_request`) when the
    /// request has several `Host` headers, or one whose value is not an RFC 9110 §7.2
    /// `uri-host [":" port]` (stricter: no `,`, no `%`, no empty label, no empty port; the
    /// README lists it all), or none in an HTTP/1.1 request ([`crate::http::request`]
    /// knows the version; a `Request` built by hand may go without).
    ///
    /// A protected path asked for by an address past [`Config::max_failures`] failed
    /// authentications within [`Config::failure_window`] (`client.ip` behind a trusted
    /// proxy, else the peer given by [`Request::with_peer`]; none, none limited) is refused
    /// (429, [`Reason::RateLimited`], with [`Refused::retry_after`]) before its token is
    /// read; only the window's first such refusal records an event.
    pub fn check<H: Headers + ?Sized>(&self, request: &Request<'_, H>) -> Decision {
        self.decide(request).settle(0)
    }

    /// [`Guard::check`], with the event possibly held in this thread's batch.
    pub(crate) fn decide<H: Headers + ?Sized>(&self, request: &Request<'_, H>) -> Pending {
        let start = crate::metrics::start();
        let pending = self.judge(request);
        crate::metrics::decided(start);
        pending
    }

    fn judge<H: Headers + ?Sized>(&self, request: &Request<'_, H>) -> Pending {
        // Before the path: a public request goes on to the upstream with its Host too.
        if !crate::host::acceptable(request.headers.values("Host"), request.host_required) {
            return self.refuse(request, Reason::InvalidRequest);
        }
        let readings = match crate::path::readings(request.target) {
            Ok(readings) => readings,
            Err(_) => {
                // The normalised path when there is one: another reading may be what failed.
                let path = crate::path::normalise(request.target);
                let path = path.as_deref().unwrap_or(path_of(request.target));
                return self.record(request, path, Err(Reason::BadPath.into()), None);
            }
        };
        if !self.is_protected(&readings, request.forward_auth) {
            return Pending {
                decision: Decision::Public,
                recorded: Recorded::Written,
            };
        }
        // The limiter's one lookup: a blocked address costs no signature check.
        let limited = self.limiter.as_ref().and_then(|limiter| {
            let ip = self
                .trusted
                .client(request.peer, request.headers)
                .or(request.peer)?;
            Some((limiter, ip, limiter.now()))
        });
        if let Some((limiter, ip, now)) = limited
            && let Some(block) = limiter.check(ip, now)
        {
            return self.rate_limited(request, readings.normal(), block);
        }
        let required: Vec<&str> = self
            .require
            .iter()
            .filter(|(prefix, _)| prefix.holds_for_any(&readings, self.folds))
            .map(|(_, scope)| scope.as_str())
            .collect();
        let token = bearer_token(
            request.headers.values("Authorization"),
            self.max_token_bytes,
        );
        let ask = Ask {
            scopes: &required,
            claims: !self.claim_headers.is_empty(),
        };
        // Without keys no token can be judged: the server's fault, whatever the token.
        let result = match self.keys.loaded() {
            false => Err(Reason::NoKeys.into()),
            true => token.map_err(Denied::from).and_then(|token| {
                let now = crate::time::unix_seconds(crate::time::wall());
                self.keys.verify(token, now, ask)
            }),
        };
        if let (Some((limiter, ip, now)), Err(denied)) = (limited, &result)
            && crate::limiter::counts(denied.reason)
        {
            limiter.fail(ip, now);
        }
        self.record(request, readings.normal(), result, token.ok())
    }

    /// Refuses `request`, whatever its path, for `reason` found by the HTTP layer (its
    /// framing) or before its path is judged (its `Host`), and records the event.
    pub(crate) fn refuse<H: Headers + ?Sized>(
        &self,
        request: &Request<'_, H>,
        reason: Reason,
    ) -> Pending {
        let path = crate::path::normalise(request.target);
        let path = path.as_deref().unwrap_or(path_of(request.target));
        self.record(request, path, Err(reason.into()), None)
    }

    /// Refuses `request` from an address the limiter blocks: 429 with `Retry-After`, and
    /// the `rate_limited` event for the window's first refusal only (a flood of them
    /// would fill the log with what one line says).
    fn rate_limited<H: Headers + ?Sized>(
        &self,
        request: &Request<'_, H>,
        path: &str,
        block: Block,
    ) -> Pending {
        let request_id =
            RequestId::new(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        let reason = Reason::RateLimited;
        let recorded = if block.first {
            logger::record(&Event::RateLimited(RateLimited {
                source_ip: request.peer,
                client_ip: self.trusted.client(request.peer, request.headers),
                status: answer_status(reason, request.forward_auth),
                request_id,
                failures: block.failures,
                retry_after: block.retry_after,
                method: request.method,
                path,
                user_agent: request.headers.values("User-Agent").next(),
            }))
        } else {
            Recorded::Written
        };
        let decision = Decision::Refused(Refused {
            request_id,
            reason: Some(reason),
            scope: None,
            forward_auth: request.forward_auth,
            retry_after: Some(block.retry_after),
        });
        Pending { decision, recorded }
    }

    /// Records the event of `result` for `request` (judged on `path`) and makes the
    /// decision.
    fn record<H: Headers + ?Sized>(
        &self,
        request: &Request<'_, H>,
        path: &str,
        result: Result<Verified, Denied>,
        token: Option<&str>,
    ) -> Pending {
        let request_id =
            RequestId::new(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        let forwarded = self.forwards && !request.forward_auth;
        let (reason, reason_text, user, status) = match &result {
            Ok(verified) if forwarded => (
                "ok",
                "the token verified; forwarded to the upstream",
                Some(verified.user.as_str()),
                None,
            ),
            Ok(verified) => (
                "ok",
                "the token verified",
                Some(verified.user.as_str()),
                Some(200),
            ),
            Err(denied) => (
                denied.reason.code(),
                denied.reason.text(),
                denied.user.as_deref(),
                Some(answer_status(denied.reason, request.forward_auth)),
            ),
        };
        let key = match &result {
            Ok(verified) => Some(&verified.key),
            Err(denied) => Some(&denied.key),
        };
        let event = Event::Request(RequestEvent {
            action: Action::Authorize,
            success: result.is_ok(),
            reason,
            reason_text,
            source_ip: request.peer,
            client_ip: self.trusted.client(request.peer, request.headers),
            status,
            request_id: Some(request_id),
            fingerprint: token.map(|token| {
                match result.as_ref().ok().and_then(|v| v.digest.as_ref()) {
                    Some(digest) => Fingerprint::of_digest(digest),
                    None => Fingerprint::of(token),
                }
            }),
            method: request.method,
            path,
            user,
            user_agent: request.headers.values("User-Agent").next(),
            kid: key.and_then(|k| k.kid.as_deref()),
            alg: key.and_then(|k| k.alg.as_deref()),
        });
        let recorded = logger::record(&event);
        let decision = match result {
            Ok(verified) => {
                let (user_header, claim_headers) = self.identity_headers(&verified);
                Decision::Allowed(Allowed {
                    request_id,
                    user: verified.user,
                    user_header,
                    claim_headers,
                })
            }
            Err(denied) => Decision::Refused(Refused {
                request_id,
                reason: Some(denied.reason),
                scope: denied.scope,
                forward_auth: request.forward_auth,
                retry_after: None,
            }),
        };
        Pending { decision, recorded }
    }

    /// `X-Auth-User`'s value, then each claim header, with their percent-encoded values.
    fn identity_headers(&self, verified: &Verified) -> (String, Vec<(String, String)>) {
        let mut user = String::new();
        push_header_value(&verified.user, &mut user);
        let claims = self.claim_headers.iter().map(|(path, header)| {
            let mut value = String::new();
            let claim = verified
                .claims
                .as_ref()
                .and_then(|claims| path.iter().try_fold(claims, |v, key| v.get(key.as_str())));
            if let Some(claim) = claim {
                push_claim(claim, &mut value);
            }
            (header.clone(), value)
        });
        (user, claims.collect())
    }
}

/// A claim as a header value: a string percent-encoded, a number or boolean as written, an
/// array's elements joined with `,`, anything else as its JSON text, percent-encoded.
fn push_claim(claim: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match claim {
        Value::Null => {}
        Value::String(s) => push_header_value(s, out),
        Value::Number(_) | Value::Bool(_) => out.push_str(&claim.to_string()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::Array(_) | Value::Object(_) => push_header_value(&item.to_string(), out),
                    item => push_claim(item, out),
                }
            }
        }
        Value::Object(_) => push_header_value(&claim.to_string(), out),
    }
}

/// Appends `value` percent-encoded for a header: every byte outside `!`..`~`, and `%` and
/// `,`, as `%XX`. No CR, LF or other control character can reach the header.
pub(super) fn push_header_value(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' && b != b',' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The claim checks `config` asks for.
fn policy(config: &Config) -> Policy {
    Policy {
        leeway: config.leeway,
        require_exp: config.require_exp,
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
    }
}

/// The keys to verify with: the secret (no kid), or the key set's keys by kid.
fn verifying_keys(config: &Config) -> Vec<VerifyingKey> {
    match (&config.secret, &config.keys) {
        (Some(secret), _) => vec![VerifyingKey::new(
            None,
            Alg::Hs256,
            Material::Oct(secret.expose().to_vec()),
        )],
        (None, Some(keys)) => keys.keys().to_vec(),
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
