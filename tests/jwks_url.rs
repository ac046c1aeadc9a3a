//! `--jwks-url`: a JWK Set fetched over plain HTTP from a sidecar (here a tiny server on
//! port 0 in the test): nothing is served before the first fetch, a rotation is picked up
//! when a token names an unknown kid (but not more often than every 30 s), a failed fetch
//! keeps the last good set and writes one event.

#![cfg(feature = "sign")]

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Server, TempDir, idp_key as key, output, run, wait_for};

/// The public JWK of the PEM key `name` under `kid`.
fn jwk(name: &str, kid: &str) -> serde_json::Value {
    let pem = key(name);
    let set: serde_json::Value =
        serde_json::from_str(&output(&["jwks", "--from-pem", &pem, "--kid", kid])).unwrap();
    set["keys"][0].clone()
}

fn set(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

/// A token for `alice` signed with the PEM key `name`, naming `kid`.
fn mint(name: &str, kid: &str) -> String {
    let pem = key(name);
    output(&["token", "--key-file", &pem, "--kid", kid, "--sub", "alice"])
}

/// A sidecar serving a JWK Set: it answers every GET with the status and body set last,
/// and counts the requests. Stopped when dropped.
struct Sidecar {
    addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Sidecar {
    fn start(status: u16, body: &str) -> Sidecar {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sidecar = Sidecar {
            addr: listener.local_addr().unwrap(),
            answer: Arc::new(Mutex::new((status, body.to_owned()))),
            hits: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (answer, hits, stop) = (
            sidecar.answer.clone(),
            sidecar.hits.clone(),
            sidecar.stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        sidecar
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn serve(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept.
        let _ = TcpStream::connect(self.addr);
    }
}

/// `jwtguard serve --jwks-url URL ARGS`, with no secret.
fn serve(url: &str, args: &[&str]) -> Server {
    let dir = TempDir::new();
    let log = dir.path("security.log");
    let mut all = vec!["--jwks-url", url, "--log-file", log.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::spawn(dir, &all, &[], std::process::Stdio::null())
}

fn key_set_events(server: &Server) -> Vec<serde_json::Value> {
    server
        .log_json()
        .into_iter()
        .filter(|e| e["event.action"] == "jwks_load")
        .collect()
}

#[test]
fn nothing_is_served_before_the_first_fetch() {
    let sidecar = Sidecar::start(503, "not yet");
    let server = serve(&sidecar.url(), &["--jwks-refresh", "3600"]);
    let token = mint("p256", "one");
    wait_for("a first fetch", || sidecar.hits() >= 1);

    let health = server.get("/healthz", &[]);
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["keys"], "none", "{}", health.body);
    let refused = server.get_with_token("/api/x", &token);
    assert_eq!(refused.status, 503);
    assert!(refused.header("Retry-After").is_some());
    assert!(refused.header("WWW-Authenticate").is_none());
    let events = server.requests_logged();
    assert_eq!(events.last().unwrap()["event.reason"], "no_keys");

    // The sidecar comes up: retried within seconds, not after --jwks-refresh.
    sidecar.serve(200, &set(&[jwk("p256", "one")]));
    wait_for("the set", || server.get("/healthz", &[]).status == 200);
    assert!(server.get("/healthz", &[]).json().get("keys").is_none());
    assert_eq!(server.get_with_token("/api/x", &token).status, 200);
    let loads = key_set_events(&server);
    assert_eq!(
        loads.last().unwrap()["event.reason"],
        "changed",
        "{loads:?}"
    );
    assert_eq!(loads.last().unwrap()["jwtguard.jwks.keys"], 1);
}

#[test]
fn an_unknown_kid_fetches_the_set_again_at_most_every_30_s() {
    let sidecar = Sidecar::start(200, &set(&[jwk("p256", "one")]));
    // Without the limiter: the random kids below are failed authentications.
    let server = serve(
        &sidecar.url(),
        &["--jwks-refresh", "3600", "--max-failures", "0"],
    );
    wait_for("the set", || server.get("/healthz", &[]).status == 200);
    assert_eq!(sidecar.hits(), 1);

    // The provider rotates: the first token with the new kid asks for the set again.
    sidecar.serve(200, &set(&[jwk("p256", "one"), jwk("ed25519", "two")]));
    let two = mint("ed25519", "two");
    let asked = Instant::now();
    wait_for("the new key", || {
        server.get_with_token("/api/x", &two).status == 200
    });
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(sidecar.hits(), 2);

    // Random kids: refused, and the sidecar is not asked again within 30 s.
    sidecar.serve(200, &set(&[jwk("p256", "three")]));
    let three = mint("p256", "three");
    let spam: Vec<String> = (0..20).map(|i| mint("p256", &format!("r{i}"))).collect();
    for token in spam.iter().chain([&three]) {
        assert_eq!(server.get_with_token("/api/x", token).status, 401);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.get_with_token("/api/x", &three).status, 401);
    assert_eq!(sidecar.hits(), 2);
    let last = server.requests_logged().pop().unwrap();
    assert_eq!(last["event.reason"], "unknown_key");
}

#[test]
fn a_failed_fetch_keeps_the_last_set_and_writes_one_event() {
    let sidecar = Sidecar::start(200, &set(&[jwk("p256", "one")]));
    let server = serve(&sidecar.url(), &["--jwks-refresh", "1"]);
    let token = mint("p256", "one");
    wait_for("the set", || server.get("/healthz", &[]).status == 200);

    for (status, body, reason) in [
        (500, "oops", "fetch_failed"),
        (302, "", "fetch_failed"),
        (200, "<html>", "invalid_jwks"),
        // A set with a weak key is refused as from a file (an 8-byte HS256 secret).
        (
            200,
            r#"{"keys":[{"kty":"oct","kid":"weak","alg":"HS256","k":"c2hvcnRrZXk"}]}"#,
            "key_too_weak",
        ),
    ] {
        let before = key_set_events(&server).len();
        let hits = sidecar.hits();
        sidecar.serve(status, body);
        // Three fetches of the same failure at least (one a second).
        wait_for("three fetches", || sidecar.hits() >= hits + 3);
        let events = key_set_events(&server);
        let new = &events[before..];
        assert_eq!(new.len(), 1, "{status} {body}: {new:?}");
        assert_eq!(new[0]["event.outcome"], "failure");
        assert_eq!(new[0]["event.reason"], reason, "{new:?}");
        assert_eq!(server.get_with_token("/api/x", &token).status, 200);
        assert_eq!(server.get("/healthz", &[]).status, 200);
    }
}

#[test]
fn an_https_or_a_credentials_url_is_a_usage_error() {
    for (url, says) in [
        ("https://idp.example.com:443/jwks", "--jwks FILE"),
        ("http://user:pw@127.0.0.1:1/jwks", "credentials"),
        ("http://127.0.0.1/jwks", "port"),
    ] {
        let out = run(
            &["serve", "--listen", "127.0.0.1:0", "--jwks-url", url],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}");
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
}

/// A JWK Set fetched over plain HTTP is readable by anyone on the path: public keys may
/// cross it, an HS256 secret may not (whoever reads it mints tokens). A set with an `oct`
/// key is refused (`invalid_jwks`, the last good set kept); before, it was loaded and a
/// token minted with the secret seen on the wire was let in.
#[test]
fn an_hs256_secret_is_not_taken_over_plain_http() {
    let secret = "a-shared-secret-of-32-bytes-long";
    let k = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret);
    let oct = serde_json::json!({"kty": "oct", "kid": "hs", "alg": "HS256", "k": k});
    let both = set(&[jwk("p256", "one"), oct]);
    let sidecar = Sidecar::start(200, &set(&[jwk("p256", "one")]));
    let server = serve(&sidecar.url(), &["--jwks-refresh", "1"]);
    wait_for("the set", || server.get("/healthz", &[]).status == 200);
    let before = key_set_events(&server).len();
    sidecar.serve(200, &both);
    let hits = sidecar.hits();
    wait_for("two fetches", || sidecar.hits() >= hits + 2);

    let dir = TempDir::new();
    let file = dir.path("sniffed.json");
    std::fs::write(&file, &both).unwrap();
    let forged = output(&[
        "token",
        "--jwks",
        file.to_str().unwrap(),
        "--kid",
        "hs",
        "--sub",
        "mallory",
    ]);
    assert_eq!(server.get_with_token("/api/x", &forged).status, 401);
    assert_eq!(
        server.get_with_token("/api/x", &mint("p256", "one")).status,
        200
    );
    let events = key_set_events(&server);
    let new = &events[before..];
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["event.reason"], "invalid_jwks", "{new:?}");
    let problem = new[0]["error.message"].as_str().unwrap_or_default();
    assert!(!problem.contains(&k), "{problem}");
}
