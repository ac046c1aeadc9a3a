//! The guard: from the plain parts of a request to a decision, with its security event
//! recorded. No HTTP library here: [`crate::http`] adapts tiny_http's requests.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::config::USER_HEADER;
use crate::event::RateLimited;
use crate::event::{Action, Event, Fingerprint, RequestEvent, RequestId};
use crate::forwarded::Trusted;
use crate::keys::{Alg, Material, VerifyingKey};
use crate::limiter::{Block, Limiter};
use crate::logger::{self, Recorded};
// src/proxy.rs reads the path as `crate::guard::path_of`.
pub(crate) use crate::path::path_of;
use crate::path::{Kind, Readings};
use crate::token::{Ask, Denied, Policy, Verified};
use crate::{Config, Error, Reason};

/// A request's headers, as the guard reads them.
///
/// Implemented for slices and arrays of `(name, value)` pairs, and for tiny_http's headers.
pub trait Headers {
    /// The values of every header called `name` (ASCII case-insensitive), in order.
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's;
}

impl<'a> Headers for [(&'a str, &'a str)] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<'a, const N: usize> Headers for [(&'a str, &'a str); N] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.as_slice().values(name)
    }
}

/// The parts of a request the guard decides on.
///
/// ```
/// use jwtguard::Request;
/// let headers = [("Authorization", "Bearer abc.def.ghi"), ("User-Agent", "curl/8")];
/// let request = Request::new("GET", "/api/orders?page=2", &headers)
///     .with_peer("127.0.0.1".parse().unwrap());
/// ```
#[derive(Debug)]
pub struct Request<'a, H: ?Sized> {
    method: &'a str,
    target: &'a str,
    headers: &'a H,
    peer: Option<IpAddr>,
    /// A proxy's forward-auth subrequest, carrying the original method and target.
    forward_auth: bool,
    /// HTTP/1.1: a request without `Host` is refused (RFC 9112 §3.2).
    host_required: bool,
}

impl<H: ?Sized> Clone for Request<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: ?Sized> Copy for Request<'_, H> {}

impl<'a, H: Headers + ?Sized> Request<'a, H> {
    /// A request: its method, its target as received (path and query) and its headers.
    pub fn new(method: &'a str, target: &'a str, headers: &'a H) -> Self {
        Request {
            method,
            target,
            headers,
            peer: None,
            forward_auth: false,
            host_required: false,
        }
    }

    /// The address of the connection's peer (`source.ip` in the log).
    pub fn with_peer(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer.to_canonical());
        self
    }

    /// A forward-auth subrequest about a request with this method and target.
    pub(crate) fn forward_auth(mut self, method: &'a str, target: &'a str) -> Self {
        self.method = method;
        self.target = target;
        self.forward_auth = true;
        self
    }

    /// An HTTP/1.1 request, which must carry a `Host` header.
    pub(crate) fn requiring_host(mut self) -> Self {
        self.host_required = true;
        self
    }

    pub(crate) fn peer(&self) -> Option<IpAddr> {
        self.peer
    }
}

/// What the guard decided about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// The path needs no token: serve the request. No event was written.
    Public,
    /// The token verified and the event is in the log: serve the request.
    Allowed(Allowed),
    /// Refused, or not to be served because its event could not be written: send
    /// [`Refused`]'s answer (with tiny_http, [`crate::http::answer`]).
    Refused(Refused),
}

/// A request whose token verified and whose event is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    request_id: RequestId,
    user: String,
    /// The identity headers, `X-Auth-User` first, values percent-encoded.
    headers: Vec<(String, String)>,
}

impl Allowed {
    /// The user: the token's `sub`, or its `user_id`.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The id of its event (`http.request.id`); send it back as `X-Request-Id`.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The identity headers to pass on: `X-Auth-User` with the user, then each configured
    /// claim header, empty when the token lacks the claim (so that it always replaces a
    /// copy a client sent). Values are percent-encoded: every byte outside `!`..`~`, and
    /// `%` and `,`, as `%XX`; an array's elements are joined with `,`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// A request that must not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    request_id: RequestId,
    /// `None` when the event could not be written (the answer is then 503).
    reason: Option<Reason>,
    /// The scope the token lacked, for `insufficient_scope`.
    scope: Option<String>,
    /// A forward-auth answer: never 400 (a proxy turns it into 500).
    forward_auth: bool,
    /// Seconds until a rate-limited address may try again.
    retry_after: Option<u32>,
}

impl Refused {
    /// Why, when the event is in the log; `None` when the request is refused because its
    /// event could not be written.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// The status to answer: the reason's, or 503 when the event could not be written.
    /// To a forward-auth subrequest, 401 wherever the reason says 400 or 413: nginx's
    /// `auth_request` turns any status but 2xx, 401 and 403 into 500.
    pub fn status(&self) -> u16 {
        self.reason
            .map_or(503, |reason| answer_status(reason, self.forward_auth))
    }

    /// The `WWW-Authenticate` value to send, if any; for `insufficient_scope`, with the
    /// scope (RFC 6750 §3).
    pub fn challenge(&self) -> Option<Cow<'static, str>> {
        let reason = self.reason?;
        if answer_status(reason, self.forward_auth) != reason.status() {
            // A forward-auth answer, 401 instead of 400 or 413.
            return Reason::InvalidRequest.challenge().map(Cow::Borrowed);
        }
        match (&self.scope, reason.challenge()) {
            (Some(scope), Some(challenge)) => {
                Some(Cow::Owned(format!("{challenge}, scope=\"{scope}\"")))
            }
            (None, challenge) => challenge.map(Cow::Borrowed),
            (Some(_), None) => None,
        }
    }

    /// The id of its event (`http.request.id`); send it back as `X-Request-Id`.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The `Retry-After` value to send, in seconds: for [`Reason::RateLimited`], the rest
    /// of the window.
    pub fn retry_after(&self) -> Option<u32> {
        self.retry_after.filter(|_| self.reason.is_some())
    }
}

/// The status answered for `reason`: as the reason says, but to a forward-auth subrequest
/// 401 for what would be 400, 413 or 429.
fn answer_status(reason: Reason, forward_auth: bool) -> u16 {
    match reason.status() {
        400 | 413 | 429 if forward_auth => 401,
        status => status,
    }
}

#[cfg(test)]
impl Allowed {
    pub(crate) fn for_test(request_id: RequestId, user: &str) -> Allowed {
        Allowed {
            request_id,
            user: user.into(),
            headers: vec![(USER_HEADER.into(), {
                let mut value = String::new();
                push_header_value(user, &mut value);
                value
            })],
        }
    }
}

#[cfg(test)]
impl Refused {
    pub(crate) fn for_test(request_id: RequestId, reason: Option<Reason>) -> Refused {
        Refused {
            request_id,
            reason,
            scope: None,
            forward_auth: false,
            retry_after: None,
        }
    }
}

/// A decision whose event may still be waiting in the serving thread's batch.
#[derive(Debug)]
pub(crate) struct Pending {
    decision: Decision,
    recorded: Recorded,
}

impl Pending {
    /// The decision, once `written` bytes of the batch are in the log: a request whose
    /// event did not make it is refused with 503.
    pub(crate) fn settle(self, written: usize) -> Decision {
        let recorded = match self.recorded {
            Recorded::Written => true,
            Recorded::Held(end) => end <= written,
            Recorded::Lost => false,
        };
        use crate::metrics::Outcome;
        crate::metrics::decision(match &self.decision {
            Decision::Allowed(_) if recorded => Outcome::Allowed,
            Decision::Public => Outcome::Public,
            Decision::Refused(refused) if recorded => Outcome::Refused(refused.reason),
            _ => Outcome::Refused(None),
        });
        match self.decision {
            Decision::Allowed(allowed) if !recorded => Decision::Refused(Refused {
                request_id: allowed.request_id,
                reason: None,
                scope: None,
                forward_auth: false,
                retry_after: None,
            }),
            Decision::Refused(refused) if !recorded => Decision::Refused(Refused {
                reason: None,
                scope: None,
                ..refused
            }),
            decision => decision,
        }
    }
}

/// Which paths need a token.
#[derive(Debug)]
enum Protected {
    /// Those under these prefixes.
    Under(Vec<Prefix>),
    /// All but those under these prefixes: with an upstream.
    AllBut(Vec<Prefix>),
}

/// A configured path prefix, without its trailing `/`, as each kind of reading compares.
#[derive(Debug)]
struct Prefix {
    exact: String,
    /// [`crate::path::fold`]ed, when that differs.
    folded: Option<String>,
}

impl Prefix {
    /// `prefix` (validated by [`Config::validate`]).
    fn new(prefix: &str) -> Prefix {
        let exact = prefix.trim_end_matches('/').to_owned();
        let folded = crate::path::fold(prefix)
            .map(|folded| folded.trim_end_matches('/').to_owned())
            .unwrap_or_else(|_| exact.clone());
        Prefix {
            folded: (folded != exact).then_some(folded),
            exact,
        }
    }

    /// Whether the reading `path` of a request is this prefix or under it.
    fn holds(&self, (path, kind): (&str, Kind)) -> bool {
        match (kind, &self.folded) {
            (Kind::Folded, Some(folded)) => under(path, folded),
            _ => under(path, &self.exact),
        }
    }

    /// Whether some reading of a request is this prefix or under it.
    fn holds_for_any(&self, readings: &Readings<'_>, folds: bool) -> bool {
        readings.iter(folds).any(|reading| self.holds(reading))
    }
}

/// Whether every reading of a request is under one of `prefixes` (not necessarily the
/// same one).
fn all_under(readings: &Readings<'_>, folds: bool, prefixes: &[Prefix]) -> bool {
    readings
        .iter(folds)
        .all(|reading| prefixes.iter().any(|p| p.holds(reading)))
}

/// Whether `path` is `prefix` (without its trailing `/`) or under it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn prefixes(prefixes: &[String]) -> Vec<Prefix> {
    prefixes.iter().map(|p| Prefix::new(p)).collect()
}

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
            trusted: Trusted::new(&config.trusted_proxies),
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
    fn is_protected(&self, readings: &Readings<'_>, forward_auth: bool) -> bool {
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
                let now = crate::time::unix_seconds(SystemTime::now());
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
            fingerprint: token.map(Fingerprint::of),
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
                let headers = self.identity_headers(&verified);
                Decision::Allowed(Allowed {
                    request_id,
                    user: verified.user,
                    headers,
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

    /// `X-Auth-User`, then each claim header, with their percent-encoded values.
    fn identity_headers(&self, verified: &Verified) -> Vec<(String, String)> {
        let mut headers = Vec::with_capacity(1 + self.claim_headers.len());
        let mut user = String::new();
        push_header_value(&verified.user, &mut user);
        headers.push((USER_HEADER.to_owned(), user));
        for (path, header) in &self.claim_headers {
            let mut value = String::new();
            let claim = verified
                .claims
                .as_ref()
                .and_then(|claims| path.iter().try_fold(claims, |v, key| v.get(key.as_str())));
            if let Some(claim) = claim {
                push_claim(claim, &mut value);
            }
            headers.push((header.clone(), value));
        }
        headers
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
fn push_header_value(value: &str, out: &mut String) {
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

/// Extracts the bearer token from the values of a request's `Authorization` headers
/// (RFC 6750 §2.1): `Bearer`, case-insensitive, one or more spaces, then a `b64token`
/// of at most `max_bytes` bytes.
pub(crate) fn bearer_token<'a>(
    values: impl IntoIterator<Item = &'a str>,
    max_bytes: usize,
) -> Result<&'a str, Reason> {
    let mut values = values.into_iter();
    let value = values.next().ok_or(Reason::MissingToken)?;
    if values.next().is_some() {
        return Err(Reason::InvalidRequest);
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.is_empty() {
        return Err(Reason::InvalidRequest);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::UnsupportedScheme);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || token.len() > max_bytes || !is_b64token(token) {
        return Err(Reason::InvalidRequest);
    }
    Ok(token)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &str) -> bool {
    /// The `b64token` characters other than `=`.
    const B64TOKEN: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] =
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            b += 1;
        }
        table
    };
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Secret, SecretSource};

    fn guard(protect: &[&str]) -> Guard {
        Guard::new(&Config {
            protect: protect.iter().map(|p| p.to_string()).collect(),
            secret: Some(Secret::new([1; 32], SecretSource::Env)),
            ..Config::default()
        })
        .unwrap()
    }

    #[test]
    fn bearer_header_cases() {
        let ok = |v: &'static str| bearer_token([v], 16);
        assert_eq!(ok("Bearer abc"), Ok("abc"));
        assert_eq!(ok("bearer abc"), Ok("abc"));
        assert_eq!(ok("BEARER abc"), Ok("abc"));
        assert_eq!(ok("Bearer   abc"), Ok("abc"));
        assert_eq!(ok("Bearer a-b.c_d~e+f/g=="), Ok("a-b.c_d~e+f/g=="));
        assert_eq!(ok("Bearer 0123456789abcdef"), Ok("0123456789abcdef"));
        let cases = [
            ("Basic dXNlcjpwYXNz", Reason::UnsupportedScheme),
            ("Bearerabc", Reason::UnsupportedScheme),
            ("Token abc", Reason::UnsupportedScheme),
            ("", Reason::InvalidRequest),
            ("Bearer", Reason::InvalidRequest),
            ("Bearer ", Reason::InvalidRequest),
            ("Bearer a b", Reason::InvalidRequest),
            ("Bearer a,b", Reason::InvalidRequest),
            ("Bearer ===", Reason::InvalidRequest),
            ("Bearer a=b", Reason::InvalidRequest),
            ("Bearer a\tb", Reason::InvalidRequest),
            ("Bearer \"abc\"", Reason::InvalidRequest),
            ("Bearer 0123456789abcdefX", Reason::InvalidRequest),
        ];
        for (value, want) in cases {
            assert_eq!(ok(value), Err(want), "{value:?}");
        }
        assert_eq!(bearer_token([], 16), Err(Reason::MissingToken));
        assert_eq!(
            bearer_token(["Bearer a", "Bearer a"], 16),
            Err(Reason::InvalidRequest)
        );
    }

    /// lexopt's basic_fuzz idea: every short string over an awkward alphabet, no panic,
    /// and any token returned is a non-empty b64token within the cap.
    #[test]
    fn bearer_parser_never_panics() {
        let alphabet = [
            "B", "bearer", "Bearer", " ", "\t", "=", "a", ".", "é", "\r", ",", "\"",
        ];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for input in &inputs {
                for piece in alphabet {
                    next.push(format!("{input}{piece}"));
                }
            }
            inputs.extend(next);
            inputs.dedup();
        }
        for input in &inputs {
            if let Ok(token) = bearer_token([input.as_str()], 8) {
                assert!(!token.is_empty() && token.len() <= 8 && is_b64token(token));
            }
        }
    }

    /// Whether `g` protects `path` (outside forward-auth).
    fn protects(g: &Guard, path: &str) -> bool {
        g.is_protected(&crate::path::readings(path).unwrap(), false)
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let g = guard(&["/api/", "/admin"]);
        for path in [
            "/api",
            "/api/",
            "/api/protected",
            "/api/a/b",
            "/admin",
            "/admin/x",
        ] {
            assert!(protects(&g, path), "{path}");
        }
        for path in [
            "/",
            "/apix",
            "/apix/y",
            "/administrator",
            "/healthz",
            "/x/api/",
        ] {
            assert!(!protects(&g, path), "{path}");
        }
        let all = guard(&["/"]);
        assert!(protects(&all, "/") && protects(&all, "/anything"));
    }

    /// A guard in front of an app with `--public /static/` and `--require /admin=admin`,
    /// and a valid token without the scope.
    fn app_guard() -> (Guard, String) {
        let config = Config {
            upstream: Some("http://127.0.0.1:5000".into()),
            public: vec!["/static/".into()],
            require: vec![("/admin".into(), "admin".into())],
            ..Config::default()
        };
        let claims = serde_json::json!({"sub": "a", "exp": u32::MAX, "scope": "read"});
        guard_with(config, claims)
    }

    /// The reason `target` is refused for, with `token`; `None` when it is served.
    fn refusal(g: &Guard, target: &str, token: &str) -> Option<Reason> {
        match decide(g, target, token, &[]) {
            Decision::Refused(r) => r.reason(),
            Decision::Public | Decision::Allowed(_) => None,
        }
    }

    #[test]
    fn every_reading_of_a_path_is_judged() {
        let (g, token) = app_guard();
        let cases = [
            // A scope prefix applies when it holds for any reading.
            ("/admin;x", Some(Reason::InsufficientScope)),
            (
                "/admin;jsessionid=1/secret",
                Some(Reason::InsufficientScope),
            ),
            ("/admin;/", Some(Reason::InsufficientScope)),
            ("/ADMIN/secret", Some(Reason::InsufficientScope)),
            ("/Admin", Some(Reason::InsufficientScope)),
            ("/admin./secret", Some(Reason::InsufficientScope)),
            ("/admin%20/secret", Some(Reason::InsufficientScope)),
            ("/admin.%20./secret", Some(Reason::InsufficientScope)),
            ("/ADMIN;x./secret", Some(Reason::InsufficientScope)),
            ("/%41DMIN/secret", Some(Reason::InsufficientScope)),
            ("/admin%2e/secret", Some(Reason::InsufficientScope)),
            // What cannot be read safely one way or another.
            ("/admin%3Bx/secret", Some(Reason::BadPath)),
            ("/x/%2e%2e;/admin", Some(Reason::BadPath)),
            ("/x/..%20/admin", Some(Reason::BadPath)),
            ("/x/.../admin", Some(Reason::BadPath)),
            ("/..;/admin", Some(Reason::BadPath)),
            // A dot or empty segment with parameters, which normalising takes for a name
            // and Tomcat for a dot segment or nothing.
            ("/x/..;/admin/secret", Some(Reason::BadPath)),
            ("/;x/admin/secret", Some(Reason::BadPath)),
            ("/admin;x/.;/../secret", Some(Reason::BadPath)),
            ("/admin;x/;y/../secret", Some(Reason::BadPath)),
            // Served: no reading is under /admin.
            ("/administrator", None),
            ("/x/admin", None),
            ("/x;/admin", None),
            ("/api/v1.2/x", None),
        ];
        for (target, want) in cases {
            assert_eq!(refusal(&g, target, &token), want, "{target}");
        }
    }

    #[test]
    fn a_public_prefix_applies_only_when_it_holds_for_every_reading() {
        let (g, _) = app_guard();
        for target in ["/static;x/../admin", "/STATIC/x"] {
            assert_eq!(
                refusal(&g, target, "x"),
                Some(Reason::MalformedToken),
                "{target}"
            );
        }
        for target in [
            "/static/..%20/admin",
            "/static/static/..%20/..",
            "/static/..;/admin/secret",
            "/static/x/..;/..;/admin",
            "/static;x/..;/admin",
        ] {
            assert_eq!(refusal(&g, target, "x"), Some(Reason::BadPath), "{target}");
        }
        for target in ["/static/app.js", "/static/app.js;v=2", "/static/App.JS"] {
            assert_eq!(decide(&g, target, "x", &[]), Decision::Public, "{target}");
        }
        // Forward-auth's original URI too, and a 401 where another reading is refused.
        let config = Config {
            forward_auth: Some("/auth".into()),
            public: vec!["/open".into()],
            ..Config::default()
        };
        let (g, _) = guard_with(config, valid("a"));
        for (target, want) in [
            ("/open/x", None),
            ("/open/..;/admin", Some(401)),
            ("/OPEN/x", Some(401)),
            ("/open/x%3B", Some(401)),
        ] {
            let headers = [("Authorization", "")];
            let pending =
                g.decide(&Request::new("GET", "/auth", &headers).forward_auth("GET", target));
            let status = match (Pending {
                recorded: Recorded::Written,
                ..pending
            })
            .settle(0)
            {
                Decision::Refused(r) => Some(r.status()),
                _ => None,
            };
            assert_eq!(status, want, "{target}");
        }
    }

    #[test]
    fn configured_prefixes_are_compared_folded_with_folded_readings() {
        let config = Config {
            upstream: Some("http://127.0.0.1:5000".into()),
            public: vec!["/Static/".into()],
            require: vec![("/Admin".into(), "admin".into())],
            ..Config::default()
        };
        let claims = serde_json::json!({"sub": "a", "exp": u32::MAX, "scope": "read"});
        let (g, token) = guard_with(config, claims);
        for target in ["/admin/x", "/ADMIN/x", "/Admin/x"] {
            assert_eq!(
                refusal(&g, target, &token),
                Some(Reason::InsufficientScope),
                "{target}"
            );
        }
        assert_eq!(decide(&g, "/Static/x", "x", &[]), Decision::Public);
        // To a case-sensitive app `/static/x` is not `/Static/x`.
        assert!(matches!(
            decide(&g, "/static/x", "x", &[]),
            Decision::Refused(_)
        ));
    }

    /// A backend's view of a raw path, modelled apart from the code under test: each
    /// segment's parameters removed (`params`), everything percent-decoded, and for IIS
    /// (`iis`) lower case with trailing dots and spaces trimmed, a segment of them only
    /// (but `.` and `..`) taken for `..` (the worst case); `None` when it climbs above the
    /// root.
    fn backend_view(path: &str, params: bool, iis: bool) -> Option<String> {
        let mut segments: Vec<Vec<u8>> = Vec::new();
        for raw in path.split('/').skip(1) {
            let raw = if params {
                raw.split(';').next().unwrap_or("")
            } else {
                raw
            };
            let mut segment = Vec::new();
            let mut bytes = raw.bytes();
            while let Some(b) = bytes.next() {
                segment.push(match b {
                    b'%' => {
                        let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                        u8::from_str_radix(&hex, 16).ok()?
                    }
                    b => b,
                });
            }
            if iis && !matches!(segment.as_slice(), b"." | b"..") {
                segment.make_ascii_lowercase();
                let had = !segment.is_empty();
                while segment.last().is_some_and(|b| matches!(b, b'.' | b' ')) {
                    segment.pop();
                }
                if had && segment.is_empty() {
                    segment = b"..".to_vec();
                }
            }
            match segment.as_slice() {
                b"" | b"." => {}
                b".." => {
                    segments.pop()?;
                }
                _ => segments.push(segment),
            }
        }
        let joined: Vec<String> = segments
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        Some(format!("/{}", joined.join("/")))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Whatever a backend makes of a path: served without a token only when every
        /// backend sees it under `/static/`, to a token without the scope only when none
        /// sees it under `/admin`.
        #[test]
        fn no_backend_reading_escapes_the_rules(
            segments in proptest::collection::vec(proptest::sample::select(vec![
                "static", "STATIC", "static.", "static%20", "static;x", "admin", "Admin",
                "admin.", "x", ".", "..", "..;", "..;x", ".;", ";", ";x", "", "%2e",
                "%2e%2e;", "..%20", "...", "%73tatic", "%3B", "%3b..", "admin%20", "ADMIN;x.",
                "%41dmin", ".%20", "static..", "%E2%84%AA",
            ]), 1..6),
            slash in proptest::bool::ANY,
        ) {
            let path = format!("/{}{}", segments.join("/"), if slash { "/" } else { "" });
            let (g, token) = &*APP_GUARD;
            let views: Vec<String> = [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .filter_map(|(params, iis)| backend_view(&path, params, iis))
                .collect();
            if decide(g, &path, "x", &[]) == Decision::Public {
                for view in &views {
                    proptest::prop_assert!(under(view, "/static"), "{} seen as {}", path, view);
                }
            }
            if refusal(g, &path, token).is_none() {
                for view in &views {
                    proptest::prop_assert!(!under(view, "/admin"), "{} seen as {}", path, view);
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// What reaches the app is the normalised path: no backend reading of it may be
        /// under a public prefix unless the request was judged public, nor under a scope's
        /// prefix when a token without the scope was let through (`/admin;x/.;/../secret`
        /// was forwarded as `/admin;x/secret`, Tomcat's `/admin/secret`).
        #[test]
        fn no_backend_reading_of_the_forwarded_path_escapes_the_rules(
            segments in proptest::collection::vec(proptest::sample::select(vec![
                "static", "STATIC", "static.", "static%20", "static;x", "admin", "Admin",
                "admin.", "x", ".", "..", "..;", "..;x", ".;", ";", ";x", "", "%2e",
                "%2e%2e;", "..%20", "...", "%73tatic", "%3b..", "admin%20", "ADMIN;x.",
                "%41dmin", ".%20", "static..", "%E2%84%AA", "a;..", ";.", ";..", ".%2e", "%2E.",
                "x.;", "x;.", "%20", "%20.", "admin;", ";admin", "admin.;x", "%61dmin", "..;%20",
                "%2e;", ".;.", "static%2e", "%C5%BF", "%E2%84%AAey", "admin%2E", "%2e%2e%3b",
            ]), 1..7),
            slash in proptest::bool::ANY,
        ) {
            let path = format!("/{}{}", segments.join("/"), if slash { "/" } else { "" });
            let (g, token) = &*APP_GUARD;
            let Ok(normal) = crate::path::normalise(&path) else { return Ok(()); };
            let normal = normal.into_owned();
            let views: Vec<String> = [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .filter_map(|(params, iis)| backend_view(&normal, params, iis))
                .collect();
            if decide(g, &path, "x", &[]) == Decision::Public {
                for view in &views {
                    proptest::prop_assert!(under(view, "/static"), "{} forwarded as {} seen as {}", path, normal, view);
                }
            }
            if refusal(g, &path, token).is_none() {
                for view in &views {
                    proptest::prop_assert!(!under(view, "/admin"), "{} forwarded as {} seen as {}", path, normal, view);
                }
            }
        }
    }

    /// One [`app_guard`] for every case.
    static APP_GUARD: std::sync::LazyLock<(Guard, String)> = std::sync::LazyLock::new(app_guard);

    #[test]
    fn query_and_fragment_are_not_part_of_the_path() {
        assert_eq!(path_of("/api/x?token=abc"), "/api/x");
        assert_eq!(path_of("/api/x#frag"), "/api/x");
        assert_eq!(path_of("/api/x"), "/api/x");
    }

    #[test]
    fn without_a_jwtguard_logger_nothing_is_served() {
        // No logger is installed in unit tests: the event cannot be written anywhere.
        let g = guard(&["/api/"]);
        let secret = Secret::new([1; 32], SecretSource::Env);
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        claims.insert("exp".into(), (u32::MAX).into());
        let bearer = format!("Bearer {}", crate::mint(&secret, &claims));
        let headers = [("Authorization", bearer.as_str())];
        let pending = g.decide(&Request::new("GET", "/api/x", &headers));
        assert!(matches!(&pending.decision, Decision::Allowed(a) if a.user() == "alice"));
        let Decision::Refused(refused) = pending.settle(0) else {
            panic!("served without a log")
        };
        assert_eq!(
            (refused.status(), refused.reason(), refused.challenge()),
            (503, None, None)
        );
        assert_eq!(
            g.check(&Request::new("GET", "/public", &headers)),
            Decision::Public
        );
    }

    #[test]
    fn a_held_event_counts_only_once_the_batch_write_covers_it() {
        let allowed = |recorded| Pending {
            decision: Decision::Allowed(Allowed::for_test(RequestId::new(1, 1), "alice")),
            recorded,
        };
        assert!(matches!(
            allowed(Recorded::Held(100)).settle(100),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            allowed(Recorded::Held(101)).settle(100),
            Decision::Refused(Refused { reason: None, .. })
        ));
        assert!(matches!(
            allowed(Recorded::Written).settle(0),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            allowed(Recorded::Lost).settle(1000),
            Decision::Refused(_)
        ));
        let refused = Pending {
            decision: Decision::Refused(Refused::for_test(
                RequestId::new(1, 2),
                Some(Reason::Expired),
            )),
            recorded: Recorded::Held(10),
        };
        let Decision::Refused(r) = refused.settle(5) else {
            panic!()
        };
        assert_eq!(r.status(), 503);
    }

    /// A guard over `config` (with a secret), and a valid token for `claims`.
    fn guard_with(config: Config, claims: serde_json::Value) -> (Guard, String) {
        let secret = Secret::new([1; 32], SecretSource::Env);
        let token = crate::mint(&secret, claims.as_object().unwrap());
        let guard = Guard::new(&Config {
            secret: Some(secret),
            ..config
        })
        .unwrap();
        (guard, token)
    }

    /// The decision on `method path` with `token`, had the event been written.
    fn decide(guard: &Guard, target: &str, token: &str, extra: &[(&str, &str)]) -> Decision {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("Authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        let pending = guard.decide(&Request::new("GET", target, headers.as_slice()));
        Pending {
            recorded: Recorded::Written,
            ..pending
        }
        .settle(0)
    }

    fn valid(sub: &str) -> serde_json::Value {
        serde_json::json!({"sub": sub, "exp": u32::MAX})
    }

    #[test]
    fn paths_are_judged_normalised_and_the_unjudgeable_refused() {
        let (g, _) = guard_with(Config::default(), valid("a"));
        for target in [
            "/%61pi/x",
            "//api/x",
            "/public/../api/x",
            "/./api",
            "/api/x/../y",
        ] {
            assert!(
                matches!(decide(&g, target, "x", &[]), Decision::Refused(r) if r.reason() == Some(Reason::MalformedToken)),
                "{target}"
            );
        }
        for target in [
            "/api%2Fx",
            "/api\\x",
            "/api/..%2F",
            "/..",
            "/api%00",
            "/api%zz",
        ] {
            let Decision::Refused(r) = decide(&g, target, "x", &[]) else {
                panic!("{target}")
            };
            assert_eq!(
                (r.reason(), r.status(), r.challenge()),
                (Some(Reason::BadPath), 400, None),
                "{target}"
            );
        }
        assert_eq!(decide(&g, "/apix", "x", &[]), Decision::Public);
    }

    #[test]
    fn with_an_upstream_everything_is_protected_but_public_prefixes() {
        let config = Config {
            upstream: Some("http://127.0.0.1:5000".into()),
            public: vec!["/static/".into(), "/login".into()],
            ..Config::default()
        };
        let (g, token) = guard_with(config, valid("alice"));
        for public in ["/static/app.js", "/static", "/login"] {
            assert_eq!(decide(&g, public, "x", &[]), Decision::Public, "{public}");
        }
        for protected in [
            "/",
            "/api/x",
            "/staticx",
            "/login2",
            "/static/../admin",
            "/healthz",
        ] {
            assert!(
                matches!(decide(&g, protected, "x", &[]), Decision::Refused(_)),
                "{protected}"
            );
        }
        assert!(
            matches!(decide(&g, "/anything", &token, &[]), Decision::Allowed(a) if a.user() == "alice")
        );
    }

    #[test]
    fn a_bad_host_is_refused_on_any_path_before_the_token_is_looked_at() {
        let config = Config {
            upstream: Some("http://127.0.0.1:5000".into()),
            public: vec!["/static/".into()],
            ..Config::default()
        };
        let (g, token) = guard_with(config, valid("alice"));
        for (target, hosts) in [
            ("/static/app.js", &["a/b"][..]),
            ("/api/x", &["a,b"][..]),
            ("/api/x", &["x", "x"][..]),
            ("/a%2Fb", &["a b"][..]),
        ] {
            let extra: Vec<(&str, &str)> = hosts.iter().map(|h| ("Host", *h)).collect();
            let Decision::Refused(r) = decide(&g, target, &token, &extra) else {
                panic!("{target} {hosts:?}")
            };
            assert_eq!(
                (r.reason(), r.status()),
                (Some(Reason::InvalidRequest), 400),
                "{target} {hosts:?}"
            );
        }
        let host = [("Host", "app.example:8080")];
        assert_eq!(decide(&g, "/static/app.js", "x", &host), Decision::Public);
        assert!(matches!(
            decide(&g, "/api/x", &token, &host),
            Decision::Allowed(_)
        ));
        // Without Host: refused only when the adapter says HTTP/1.1.
        let bearer = format!("Bearer {token}");
        let headers = [("Authorization", bearer.as_str())];
        let request = Request::new("GET", "/static/app.js", &headers);
        assert_eq!(
            Pending {
                recorded: Recorded::Written,
                ..g.decide(&request)
            }
            .settle(0),
            Decision::Public
        );
        let Decision::Refused(r) = Pending {
            recorded: Recorded::Written,
            ..g.decide(&request.requiring_host())
        }
        .settle(0) else {
            panic!("HTTP/1.1 without Host")
        };
        assert_eq!(r.reason(), Some(Reason::InvalidRequest));
    }

    #[test]
    fn scopes_are_required_by_prefix_and_missing_ones_named() {
        let config = Config {
            require: vec![
                ("/api/admin".into(), "admin".into()),
                ("/api/".into(), "read".into()),
            ],
            ..Config::default()
        };
        let claims = serde_json::json!({"sub": "a", "exp": u32::MAX, "scope": "read"});
        let (g, token) = guard_with(config, claims);
        assert!(matches!(
            decide(&g, "/api/x", &token, &[]),
            Decision::Allowed(_)
        ));
        let Decision::Refused(r) = decide(&g, "/api/admin/users", &token, &[]) else {
            panic!()
        };
        assert_eq!(r.reason(), Some(Reason::InsufficientScope));
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.challenge().as_deref(),
            Some("Bearer realm=\"jwtguard\", error=\"insufficient_scope\", scope=\"admin\"")
        );
    }

    #[test]
    fn forward_auth_never_answers_400() {
        let config = Config {
            forward_auth: Some("/auth".into()),
            public: vec!["/open".into()],
            ..Config::default()
        };
        let (g, token) = guard_with(config, valid("a"));
        let sub = |method, target, authorization: &str| {
            let headers = [("Authorization", authorization)];
            let pending =
                g.decide(&Request::new("GET", "/auth", &headers).forward_auth(method, target));
            Pending {
                recorded: Recorded::Written,
                ..pending
            }
            .settle(0)
        };
        // The original path decides, with --public exempt and everything else protected.
        assert_eq!(sub("GET", "/open/x", ""), Decision::Public);
        assert!(matches!(
            sub("POST", "/anything", &format!("Bearer {token}")),
            Decision::Allowed(_)
        ));
        for (authorization, target) in [
            ("Bearer", "/x"),
            ("Bearer a b", "/x"),
            ("Bearer x", "/a%2Fb"),
        ] {
            let Decision::Refused(r) = sub("GET", target, authorization) else {
                panic!()
            };
            assert_eq!(r.status(), 401, "{authorization} {target}");
            assert_eq!(
                r.challenge().as_deref(),
                Some("Bearer realm=\"jwtguard\", error=\"invalid_request\""),
                "{authorization} {target}"
            );
        }
    }

    #[test]
    fn identity_headers_carry_the_user_and_claims_percent_encoded() {
        let config = Config {
            claim_headers: vec![
                ("email".into(), "X-Auth-Email".into()),
                ("groups".into(), "X-Auth-Groups".into()),
                ("team.id".into(), "X-Auth-Team".into()),
                ("missing".into(), "X-Auth-Missing".into()),
                ("admin".into(), "X-Auth-Admin".into()),
            ],
            ..Config::default()
        };
        let claims = serde_json::json!({
            "sub": "al ice\r\nX-Evil: 1",
            "exp": u32::MAX,
            "email": "a@example.com",
            "groups": ["dev", "o,ps", 7],
            "team": {"id": 42},
            "admin": true,
        });
        let (g, token) = guard_with(config, claims);
        let Decision::Allowed(a) = decide(&g, "/api/x", &token, &[]) else {
            panic!()
        };
        let headers: Vec<(&str, &str)> = a.headers().collect();
        assert_eq!(
            headers,
            [
                ("X-Auth-User", "al%20ice%0D%0AX-Evil:%201"),
                ("X-Auth-Email", "a@example.com"),
                ("X-Auth-Groups", "dev,o%2Cps,7"),
                ("X-Auth-Team", "42"),
                ("X-Auth-Missing", ""),
                ("X-Auth-Admin", "true"),
            ]
        );
    }

    /// The cache counts through the guard's API: a public-key token's first use is a miss,
    /// its second a hit; HS256 tokens and a guard with the cache off count nothing.
    #[cfg(feature = "sign")]
    #[test]
    fn the_token_cache_counts_hits_and_misses() {
        let signer =
            crate::SigningKey::from_pem(include_str!("../../tests/data/idp/ed25519.pem")).unwrap();
        let set = crate::KeySet::parse(signer.jwk_set(None, Some("k")).unwrap().as_bytes());
        let guard = |token_cache| {
            Guard::new(&Config {
                keys: Some(set.as_ref().unwrap().clone()),
                token_cache,
                ..Config::default()
            })
            .unwrap()
        };
        let claims = serde_json::json!({"sub": "a", "exp": u32::MAX});
        let token = signer
            .mint(None, Some("k"), claims.as_object().unwrap())
            .unwrap();
        let (on, off) = (guard(16), guard(0));
        for g in [&on, &off] {
            for _ in 0..2 {
                assert!(matches!(
                    decide(g, "/api/x", &token, &[]),
                    Decision::Allowed(_)
                ));
            }
        }
        let stats = on.token_cache_stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
        assert_eq!(off.token_cache_stats(), crate::CacheStats::default());
    }
}
