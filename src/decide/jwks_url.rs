//! `--jwks-url http://HOST:PORT/PATH`: a JWK Set served over plain HTTP by a local agent
//! or sidecar on a trusted network, fetched at start, every `--jwks-refresh`, and at
//! once (at most every [`KID_REFETCH_EVERY`]) when a token names a `kid` the set lacks.
//!
//! The fetch is a blocking GET on a thread of its own (one per guard): the event loop
//! never waits on the network, it only reads the current set (an `Arc` swapped under a
//! lock held for that swap only, as src/decide/key_file.rs does). No TLS: an HTTPS endpoint is
//! fetched by curl into a file (`--jwks FILE`, contrib/systemd) or by a sidecar.
//!
//! The sidecar is trusted to be there, not to be right: a response is read within
//! [`FETCH_TIMEOUT`] in all (a slow drip is cut), at most [`MAX_RESPONSE`] bytes, status
//! 200 only (a redirect is not followed), and the set is validated as a file's is.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::{Arc, Condvar, Mutex, Once, RwLock};
use std::time::{Duration, Instant};

use crate::event::{Event, KeySetEvent};
use crate::token::{Policy, Verifier};
use crate::token_cache::TokenCache;

/// The least time between two fetches asked for by unknown `kid`s: a client sending
/// random kids cannot make jwtguard hammer its sidecar.
const KID_REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Connect, send and read the whole response within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response read (head and body): a JWK Set is a few KiB.
const MAX_RESPONSE: usize = 1 << 20;
/// The first retry while no set was ever loaded; doubled up to `--jwks-refresh`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A validated `http://HOST:PORT/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    /// `HOST:PORT`, as given: what is connected to and sent as `Host`.
    authority: String,
    /// `/PATH` with its query, if any.
    path: String,
}

impl Url {
    /// Parses `url`, or says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Url, String> {
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(
                "https is not fetched by jwtguard (no TLS stack): fetch it with curl \
                 into a file and use --jwks FILE (contrib/systemd has a timer), or use a \
                 sidecar that serves it over http on a trusted network"
                    .into(),
            );
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or("must be http://HOST:PORT/PATH")?;
        let (authority, path) = rest
            .find('/')
            .map(|at| rest.split_at(at))
            .ok_or("needs a path: http://HOST:PORT/PATH")?;
        if authority.contains('@') {
            return Err("credentials in the URL are refused".into());
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("needs a port: http://HOST:PORT/PATH")?;
        let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
        let host_ok = if bracketed {
            host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
        } else {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        if !host_ok {
            return Err("the host is not a name, an IPv4 address or a [IPv6] address".into());
        }
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err("the port is not in 1..=65535".into());
        }
        // Only what goes in a request line unchanged: no space, no control, no fragment.
        if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
            return Err("the path has a space, a control character or a fragment".into());
        }
        Ok(Url {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Without the query: it may carry an access key, and this is what the log shows.
        match self.path.split_once('?') {
            Some((path, _)) => write!(f, "http://{}{path}?...", self.authority),
            None => write!(f, "http://{}{}", self.authority, self.path),
        }
    }
}

/// The body of a 200 answer to `GET url`, or what went wrong (a log code and the problem).
fn fetch(url: &Url) -> Result<Vec<u8>, (&'static str, String)> {
    let unreachable = |what: String| ("fetch_failed", what);
    let deadline = Instant::now() + FETCH_TIMEOUT;
    let addrs = url
        .authority
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve the host: {e}")))?;
    let mut stream = None;
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream.ok_or_else(|| {
        unreachable(match last {
            Some(e) => format!("cannot connect: {e}"),
            None => "cannot connect: no address".into(),
        })
    })?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: jwtguard\r\n\
         Connection: close\r\n\r\n",
        url.path, url.authority
    );
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            unreachable(format!("no whole answer within {FETCH_TIMEOUT:?}"))
        }
        _ => unreachable(format!("the connection failed: {e}")),
    };
    let left = |deadline: Instant| {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero())
            .then_some(left)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "the deadline passed"))
    };
    stream
        .set_write_timeout(Some(left(deadline).map_err(io)?))
        .map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    // Read to the end (Connection: close), each read bounded by what is left of the
    // deadline, so that a server dripping a byte at a time is cut off too.
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left(deadline).map_err(io)?))
            .map_err(io)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if response.len() + n > MAX_RESPONSE {
                    return Err(("invalid_jwks", format!("over {MAX_RESPONSE} bytes")));
                }
                response.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    body(&response)
}

/// The body of the HTTP/1.1 response `response` read to its end, if its status is 200.
fn body(response: &[u8]) -> Result<Vec<u8>, (&'static str, String)> {
    let bad = |what: &str| ("fetch_failed", format!("the answer {what}"));
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(response) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(bad("ends within its head")),
        Err(_) => return Err(bad("is not HTTP/1")),
    };
    let status = parsed.code.unwrap_or(0);
    if status != 200 {
        // A redirect too: the set is where it was configured, or nowhere.
        return Err(bad(&format!("has status {status}, not 200")));
    }
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect::<Vec<_>>()
    };
    let rest = &response[head_len..];
    let encodings = header("Transfer-Encoding");
    let lengths = header("Content-Length");
    match (encodings.as_slice(), lengths.as_slice()) {
        ([], []) => Ok(rest.to_vec()),
        ([], [length]) => {
            let length: usize = std::str::from_utf8(length)
                .ok()
                .and_then(|l| l.trim().parse().ok())
                .ok_or_else(|| bad("has an invalid Content-Length"))?;
            rest.get(..length)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| bad("ends before its Content-Length"))
        }
        ([chunked], []) if chunked.eq_ignore_ascii_case(b"chunked") => {
            dechunk(rest).ok_or_else(|| bad("has an invalid chunked body"))
        }
        _ => Err(bad("has an ambiguous framing")),
    }
}

/// The body of the chunked encoding `bytes` (RFC 9112 §7.1), trailers ignored.
fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = bytes.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&bytes[..eol]).ok()?;
        let size = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        bytes = &bytes[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// The set fetched from a URL, and the thread that fetches it.
pub(crate) struct Fetched {
    shared: Arc<Shared>,
    started: Once,
}

struct Shared {
    url: Url,
    refresh: Duration,
    policy: Policy,
    /// Whether HS256 keys shorter than 32 bytes are allowed (`--allow-weak-secret`).
    allow_weak: bool,
    cache: Option<Arc<TokenCache>>,
    /// `None` until a set was loaded.
    current: RwLock<Option<Arc<Verifier>>>,
    wake: Mutex<Wake>,
    ring: Condvar,
}

#[derive(Default)]
struct Wake {
    /// A token named an unknown `kid`, and no such fetch was asked for within
    /// [`KID_REFETCH_EVERY`].
    kid: bool,
    last_kid: Option<Instant>,
    stop: bool,
}

impl Fetched {
    pub(crate) fn new(
        url: Url,
        refresh: Duration,
        policy: Policy,
        allow_weak: bool,
        cache: Option<Arc<TokenCache>>,
    ) -> Fetched {
        Fetched {
            shared: Arc::new(Shared {
                url,
                refresh,
                policy,
                allow_weak,
                cache,
                current: RwLock::new(None),
                wake: Mutex::new(Wake::default()),
                ring: Condvar::new(),
            }),
            started: Once::new(),
        }
    }

    /// Starts the fetching thread, once (a guard built only to validate a configuration
    /// never fetches).
    pub(crate) fn start(&self) {
        self.started.call_once(|| {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("jwks-fetch".into())
                .spawn(move || shared.run());
            if let Err(e) = spawned {
                // No thread, no keys: every protected path keeps answering 503.
                log::error!(target: "jwtguard::jwks", "cannot start the JWK Set fetcher: {e}");
            }
        });
    }

    /// The current set's verifier, `None` until one was loaded.
    pub(crate) fn current(&self) -> Option<Arc<Verifier>> {
        self.start();
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A token named a `kid` the set lacks: fetch again now, unless one such fetch was
    /// asked for within [`KID_REFETCH_EVERY`].
    pub(crate) fn unknown_kid(&self) {
        let mut wake = self.shared.wake.lock().unwrap_or_else(|e| e.into_inner());
        if wake
            .last_kid
            .is_some_and(|t| t.elapsed() < KID_REFETCH_EVERY)
        {
            return;
        }
        wake.last_kid = Some(Instant::now());
        wake.kid = true;
        self.shared.ring.notify_one();
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.shared
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop = true;
        self.shared.ring.notify_one();
    }
}

impl Shared {
    /// Fetches, then waits for the next refresh or an unknown kid, until stopped.
    fn run(&self) {
        let mut last_body: Option<Vec<u8>> = None;
        let mut last_problem: Option<String> = None;
        let mut retry = FIRST_RETRY;
        loop {
            self.fetch_once(&mut last_body, &mut last_problem);
            let loaded = self.current.read().is_ok_and(|c| c.is_some());
            let wait = if loaded {
                self.refresh
            } else {
                let wait = retry.min(self.refresh);
                retry = retry.saturating_mul(2);
                wait
            };
            let deadline = Instant::now() + wait;
            let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if wake.stop {
                    return;
                }
                if std::mem::take(&mut wake.kid) {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                wake = self
                    .ring
                    .wait_timeout(wake, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    /// One fetch: the set replaces the current one if it loads and changed; an event for
    /// each new set and each failure unlike the one before (a sidecar down for an hour
    /// writes one line, not one per retry).
    fn fetch_once(&self, last_body: &mut Option<Vec<u8>>, last_problem: &mut Option<String>) {
        let loaded = fetch(&self.url).and_then(|body| {
            if last_body.as_ref() == Some(&body) {
                return Ok(None);
            }
            let verifier = self.load(&body)?;
            *last_body = Some(body);
            Ok(Some(verifier))
        });
        let url = self.url.to_string();
        let event = |reason, keys, problem: Option<&str>| {
            // Not a decision: nothing waits on it being written.
            let _ = crate::logger::record(&Event::KeySet(KeySetEvent {
                loaded: problem.is_none(),
                reason,
                path: &url,
                keys,
                problem,
            }));
        };
        match loaded {
            Ok(None) => *last_problem = None,
            Ok(Some(verifier)) => {
                *last_problem = None;
                let keys = verifier.key_ids();
                if let Some(cache) = &self.cache {
                    cache.keep_keys(&keys);
                }
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(verifier));
                event("changed", keys.len(), None);
            }
            Err((reason, problem)) => {
                if last_problem.as_deref() != Some(problem.as_str()) {
                    event(reason, 0, Some(&problem));
                    *last_problem = Some(problem);
                }
            }
        }
    }

    /// The verifier of the set in `body`, or why not (a log code and the problem). The set
    /// came over plain HTTP, readable on the way: a public key may, an HS256 secret (an
    /// `oct` key) may not, since whoever reads it mints tokens.
    fn load(&self, body: &[u8]) -> Result<Verifier, (&'static str, String)> {
        let verifier = Verifier::of_set(body, self.allow_weak, &self.policy, &self.cache)?;
        if crate::keys::KeySet::parse_set(body).is_ok_and(|set| set.shortest() != usize::MAX) {
            return Err((
                "invalid_jwks",
                "an HS256 secret (an \"oct\" key) over plain HTTP: serve public keys only, \
                 or put the secret in a file (--jwks FILE)"
                    .into(),
            ));
        }
        Ok(verifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = Url::parse("http://127.0.0.1:8080/jwks.json?x=1").unwrap();
        assert_eq!(ok.authority, "127.0.0.1:8080");
        assert_eq!(ok.path, "/jwks.json?x=1");
        assert!(Url::parse("http://[::1]:80/k").is_ok());
        assert!(Url::parse("http://sidecar.local:80/").is_ok());
        for (url, says) in [
            ("https://idp.example.com:443/jwks", "curl"),
            ("HTTPS://idp.example.com:443/jwks", "curl"),
            ("ftp://h:1/x", "http://"),
            ("http://h:1", "path"),
            ("http://h/x", "port"),
            ("http://h:0/x", "port"),
            ("http://h:99999/x", "port"),
            ("http://user:pw@h:1/x", "credentials"),
            ("http://:1/x", "host"),
            ("http://h_x:1/x", "host"),
            ("http://[zz]:1/x", "host"),
            ("http://h:1/a b", "path"),
            ("http://h:1/a\r\nX: y", "path"),
            ("http://h:1/a#f", "path"),
        ] {
            let problem = Url::parse(url).expect_err(url);
            assert!(problem.contains(says), "{url}: {problem}");
        }
    }

    #[test]
    fn the_query_is_fetched_but_never_shown() {
        let url = Url::parse("http://127.0.0.1:8/jwks?access_key=s3cret").unwrap();
        assert_eq!(url.path, "/jwks?access_key=s3cret");
        assert_eq!(url.to_string(), "http://127.0.0.1:8/jwks?...");
        let plain = Url::parse("http://idp:8/jwks").unwrap();
        assert_eq!(plain.to_string(), "http://idp:8/jwks");
    }

    #[test]
    fn bodies() {
        let ok = |r: &[u8]| body(r).map_err(|e| e.1);
        assert_eq!(ok(b"HTTP/1.1 200 OK\r\n\r\n{}").unwrap(), b"{}");
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk").unwrap(),
            b"{}"
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1;x=y\r\n}\r\n0\r\n\r\n")
                .unwrap(),
            b"{}"
        );
        for (response, says) in [
            (
                &b"HTTP/1.1 302 Found\r\nLocation: http://evil/\r\n\r\n"[..],
                "302",
            ),
            (b"HTTP/1.1 500 Oops\r\n\r\n", "500"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", "before"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}", "invalid"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
                "ambiguous",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunked",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
                "chunked",
            ),
            (b"HTTP/1.1 200 OK\r\nContent", "head"),
            (b"garbage\r\n\r\n", "HTTP"),
        ] {
            let problem = ok(response).expect_err(says);
            assert!(problem.contains(says), "{says}: {problem}");
        }
    }

    /// A sidecar on port 0 that answers one connection with `answer`.
    fn sidecar(answer: impl FnOnce(TcpStream) + Send + 'static) -> Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            answer(stream);
        });
        url
    }

    #[test]
    fn a_huge_answer_is_cut_at_the_cap() {
        let url = sidecar(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let _ = s.write_all(&vec![b' '; 2 * MAX_RESPONSE]);
        });
        let (code, problem) = fetch(&url).unwrap_err();
        assert_eq!(code, "invalid_jwks");
        assert!(problem.contains("over"), "{problem}");
    }

    #[test]
    fn a_slow_drip_is_cut_at_the_deadline() {
        let url = sidecar(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            // A byte every 100 ms: each read succeeds, the whole never ends.
            for _ in 0..200 {
                if s.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        let (_, problem) = fetch(&url).unwrap_err();
        assert!(problem.contains("no whole answer"), "{problem}");
        let took = started.elapsed();
        assert!(took < FETCH_TIMEOUT + Duration::from_secs(1), "{took:?}");
    }

    #[test]
    fn a_redirect_is_not_followed() {
        let url = sidecar(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:1/\r\n\r\n");
        });
        let (_, problem) = fetch(&url).unwrap_err();
        assert!(problem.contains("status 301"), "{problem}");
    }
}
