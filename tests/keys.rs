//! `--jwks`: HS256 keys by kid, for rotation without a flag day.

mod support;

use support::{Server, TempDir, run};

/// A JWK Set of oct keys, `k` in base64url as RFC 7517 has it.
fn jwks(keys: &[(&str, &str)]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(kid, k)| format!(r#"{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{k}"}}"#))
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

// 32 bytes each, base64url without padding.
const OLD: &str = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleS0";
const NEW: &str = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleS0";

fn mint(file: &str, kid: &str) -> String {
    let out = run(
        &["token", "--jwks", file, "--kid", kid, "--sub", "kim"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `jwtguard serve --jwks FILE`, with no secret in the environment.
fn serve(file: &str) -> Server {
    let dir = TempDir::new();
    let log = dir.path("security.log");
    let args = ["--jwks", file, "--log-file", log.to_str().unwrap()];
    Server::spawn(dir, &args, &[], std::process::Stdio::null())
}

#[test]
fn tokens_are_verified_with_the_key_their_kid_names() {
    let dir = TempDir::new();
    let both = dir.path("both.json");
    std::fs::write(&both, jwks(&[("2026-10", OLD), ("2026-11", NEW)])).unwrap();
    let only_new = dir.path("new.json");
    std::fs::write(&only_new, jwks(&[("2026-11", NEW)])).unwrap();
    let (both, only_new) = (both.to_str().unwrap(), only_new.to_str().unwrap());

    let old_token = mint(both, "2026-10");
    let new_token = mint(both, "2026-11");
    // During the rotation both verify.
    let server = serve(both);
    assert_eq!(server.get_with_token("/api/x", &old_token).status, 200);
    assert_eq!(server.get_with_token("/api/x", &new_token).status, 200);
    // No kid, with two keys to choose from: refused, whichever key signed it.
    let plain = support::token(&["--sub", "kim"]);
    assert_eq!(server.get_with_token("/api/x", &plain).status, 401);
    let reasons = server.requests_logged();
    assert_eq!(reasons[2]["event.reason"], "unknown_key");
    drop(server);

    // After it, the old key's tokens are refused as unknown_key, with a 401.
    let server = serve(only_new);
    assert_eq!(server.get_with_token("/api/x", &new_token).status, 200);
    assert_eq!(server.get_with_token("/api/x", &old_token).status, 401);
    // A kid that names the new key on a token signed with the old one: bad signature.
    let swapped = {
        let out = run(
            &["token", "--jwks", both, "--kid", "2026-10", "--sub", "kim"],
            &[],
        );
        let token = String::from_utf8(out.stdout).unwrap();
        let header = r#"{"alg":"HS256","typ":"JWT","kid":"2026-11"}"#;
        let header = base64url(header.as_bytes());
        let (_, rest) = token.trim().split_once('.').unwrap();
        format!("{header}.{rest}")
    };
    assert_eq!(server.get_with_token("/api/x", &swapped).status, 401);
    // No kid, with one key in the set: checked against it (a set of one key stands in
    // for a secret), and this one was signed with another.
    assert_eq!(server.get_with_token("/api/x", &plain).status, 401);

    let reasons: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| e["event.reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons[1..],
        ["unknown_key", "bad_signature", "bad_signature"],
        "{reasons:?}"
    );
}

#[test]
fn bad_key_files_are_refused_at_start_up() {
    let dir = TempDir::new();
    for (name, text) in [
        ("empty", r#"{"keys":[]}"#.to_owned()),
        ("short", jwks(&[("a", "c2hvcnQ")])),
        ("duplicate", jwks(&[("a", OLD), ("a", NEW)])),
        (
            "rsa",
            r#"{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}]}"#.to_owned(),
        ),
        ("not json", "keys".to_owned()),
    ] {
        let file = dir.path(name);
        std::fs::write(&file, text).unwrap();
        let out = run(&["serve", "--jwks", file.to_str().unwrap()], &[]);
        assert!(!out.status.success(), "{name}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(OLD) && !stderr.contains(NEW), "{stderr}");
    }
    // A secret and a key set: ambiguous.
    let file = dir.path("ok");
    std::fs::write(&file, jwks(&[("a", OLD)])).unwrap();
    let out = run(
        &["serve", "--jwks", file.to_str().unwrap()],
        &[("JWTGUARD_SECRET", support::SECRET)],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The README's rotation: add the new key and reload, sign with it, remove the old key
/// and reload; a client that always sends the token of the current key never fails.
#[test]
fn a_rotation_by_reload_fails_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = TempDir::new();
    let file = dir.path("jwks.json");
    let path = file.to_str().unwrap().to_owned();
    std::fs::write(&file, jwks(&[("2026-10", OLD)])).unwrap();
    let old_token = mint(&path, "2026-10");
    let server = serve(&path);
    let current = Arc::new(Mutex::new(old_token.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (current, stop, addr) = (current.clone(), stop.clone(), server.addr);
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let token = current.lock().unwrap().clone();
                let mut c = support::Connection::open(addr);
                let head =
                    format!("GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}");
                statuses.push(c.send(&head, false).status);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            statuses
        })
    };
    let reload = |keys: &[(&str, &str)]| {
        std::fs::write(&file, jwks(keys)).unwrap();
        let reloads = |s: &Server| {
            s.log_json()
                .iter()
                .filter(|e| e["event.action"] == "reload")
                .count()
        };
        let before = reloads(&server);
        let status = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reloads(&server) == before {
            assert!(std::time::Instant::now() < deadline, "no reload event");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    // 1. Both keys: the old tokens still verify, the new ones already do.
    reload(&[("2026-10", OLD), ("2026-11", NEW)]);
    // 2. The issuer signs with the new key.
    *current.lock().unwrap() = mint(&path, "2026-11");
    std::thread::sleep(std::time::Duration::from_millis(100));
    // 3. The old tokens have expired (here: no one sends them): the old key goes.
    reload(&[("2026-11", NEW)]);
    stop.store(true, Ordering::SeqCst);
    let statuses = client.join().unwrap();
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // And the old key's tokens are refused now.
    assert_eq!(server.get_with_token("/api/x", &old_token).status, 401);
}
