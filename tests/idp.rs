//! Tokens from identity providers: public keys from a JWK Set file, each pinned to its
//! algorithm; the confusion cases; a provider's set with its extra members; the file read
//! again when it changes, under load.
//!
//! Tokens are signed with the PEM keys in tests/data/idp (made by openssl) through
//! `jwtguard token --key-file`, or by hand here for the forged ones; tests/idp.sh has
//! tokens minted by PyJWT.

// The keys' JWKs and tokens come from `jwtguard jwks` and `jwtguard token --key-file`.
#![cfg(feature = "sign")]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use support::{Server, TempDir, idp_key as key, output, run};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The public JWK of the PEM key `name`, as `jwtguard jwks --from-pem` prints it.
fn jwk(name: &str, kid: &str, alg: Option<&str>) -> serde_json::Value {
    let pem = key(name);
    let mut args = vec!["jwks", "--from-pem", &pem, "--kid", kid];
    args.extend(alg.iter().flat_map(|alg| ["--alg", alg]));
    let set: serde_json::Value = serde_json::from_str(&output(&args)).unwrap();
    set["keys"][0].clone()
}

fn set(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

/// A token for `alice` signed with the PEM key `name`, naming `kid`.
fn mint(name: &str, kid: &str, alg: Option<&str>) -> String {
    let pem = key(name);
    let mut args = vec!["token", "--key-file", &pem, "--kid", kid, "--sub", "alice"];
    args.extend(alg.iter().flat_map(|alg| ["--alg", alg]));
    output(&args)
}

/// Writes `text` to `path` as curl and the contrib timer do: a temporary file renamed.
fn replace(path: &std::path::Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// `jwtguard serve --jwks FILE ARGS`, with no secret.
fn serve(dir: TempDir, file: &std::path::Path, args: &[&str]) -> Server {
    let log = dir.path("security.log");
    let mut all = vec![
        "--jwks",
        file.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    Server::spawn(dir, &all, &[], std::process::Stdio::null())
}

/// A compact JWS of `header` and claims for alice, its signature `signature(input)`.
fn jws(header: serde_json::Value, signature: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"sub": "alice", "exp": exp});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = signature(input.as_bytes());
    format!("{input}.{}", B64.encode(signature))
}

fn hs256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn every_algorithm_verifies_through_a_jwk_set_file() {
    let cases = [
        ("rsa2048", "rs256", None, "RS256"),
        ("rsa2048", "rs384", Some("RS384"), "RS384"),
        ("rsa2048", "rs512", Some("RS512"), "RS512"),
        ("rsa2048", "ps256", Some("PS256"), "PS256"),
        ("p256", "es256", None, "ES256"),
        ("p384", "es384", None, "ES384"),
        ("ed25519", "eddsa", None, "EdDSA"),
    ];
    let dir = TempDir::new();
    let file = dir.path("jwks.json");
    let keys: Vec<_> = cases
        .iter()
        .map(|(name, kid, alg, _)| jwk(name, kid, *alg))
        .collect();
    std::fs::write(&file, set(&keys)).unwrap();
    let server = serve(dir, &file, &[]);
    let mut fingerprints = Vec::new();
    for (name, kid, alg, _) in cases {
        let token = mint(name, kid, alg);
        fingerprints.push(sha256_hex(&token)[..16].to_owned());
        assert_eq!(server.get_with_token("/api/x", &token).status, 200, "{kid}");
        // Again: from the verified-token cache.
        assert_eq!(server.get_with_token("/api/x", &token).status, 200, "{kid}");
        let forged = support::forge(&token);
        assert_eq!(
            server.get_with_token("/api/x", &forged).status,
            401,
            "{kid}"
        );
    }
    let events = server.requests_logged();
    for (i, (_, kid, _, alg)) in cases.iter().enumerate() {
        for (event, reason) in events[3 * i..3 * i + 3]
            .iter()
            .zip(["ok", "ok", "bad_signature"])
        {
            assert_eq!(event["event.reason"], reason, "{event}");
            assert_eq!(event["jwtguard.token.kid"], *kid, "{event}");
            assert_eq!(event["jwtguard.token.alg"], *alg, "{event}");
            assert_eq!(
                event["user.id"].as_str(),
                (reason == "ok").then_some("alice")
            );
        }
        // The fingerprint is the token's SHA-256 however it was verified (the cache's
        // digest is reused for it).
        for event in &events[3 * i..3 * i + 2] {
            assert_eq!(
                event["jwtguard.token.fingerprint"], fingerprints[i],
                "{event}"
            );
        }
    }
}

/// The SHA-256 of `text` in hex, by Python's hashlib: a reference outside jwtguard.
fn sha256_hex(text: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
        ])
        .arg(text)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Each way of making one key verify what another algorithm signed is refused before any
/// signature is computed, with its own reason, and recorded with the kid and alg it named.
#[test]
fn algorithm_confusion_is_refused_with_its_own_reason() {
    let dir = TempDir::new();
    let file = dir.path("jwks.json");
    let rsa = jwk("rsa2048", "rsa", None);
    let hmac_secret = B64.encode(b"a-shared-secret-of-32-bytes-long");
    let oct = serde_json::json!({"kty": "oct", "kid": "hs", "alg": "HS256", "k": hmac_secret});
    std::fs::write(&file, set(&[rsa.clone(), jwk("p256", "ec", None), oct])).unwrap();
    let server = serve(dir, &file, &[]);
    // The RSA key's public bytes, as a verifier that takes the header's alg would use them
    // for an HMAC secret: its PEM, and its modulus.
    let public_pem = {
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in", &key("rsa2048")])
            .output();
        out.map(|o| o.stdout).unwrap_or_default()
    };
    let modulus = B64.decode(rsa["n"].as_str().unwrap()).unwrap();
    let cases = [
        (
            "HS256 signed with the RSA key's PEM",
            jws(serde_json::json!({"alg": "HS256", "kid": "rsa"}), |m| {
                hs256(&public_pem, m)
            }),
            "algorithm_mismatch",
        ),
        (
            "HS256 signed with the RSA key's modulus",
            jws(serde_json::json!({"alg": "HS256", "kid": "rsa"}), |m| {
                hs256(&modulus, m)
            }),
            "algorithm_mismatch",
        ),
        (
            "ES256 for the RSA key",
            mint("p256", "rsa", None),
            "algorithm_mismatch",
        ),
        (
            "RS256 for the EC key",
            mint("rsa2048", "ec", None),
            "algorithm_mismatch",
        ),
        (
            "RS256 for the HS256 key",
            mint("rsa2048", "hs", None),
            "algorithm_mismatch",
        ),
        (
            "none",
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"none","kid":"rsa"}"#),
                B64.encode(r#"{"sub":"alice"}"#)
            ),
            "alg_not_allowed",
        ),
        (
            "an unknown kid",
            mint("rsa2048", "elsewhere", None),
            "unknown_key",
        ),
    ];
    for (what, token, _) in &cases {
        assert_eq!(server.get_with_token("/api/x", token).status, 401, "{what}");
    }
    // The one honest token of the set still passes.
    assert_eq!(
        server
            .get_with_token("/api/x", &mint("rsa2048", "rsa", None))
            .status,
        200
    );
    let events = server.requests_logged();
    // Every case judged before any assertion stops the test: a failure lists them all.
    let wrong: Vec<_> = cases
        .iter()
        .zip(&events)
        .filter(|((_, _, reason), event)| event["event.reason"] != *reason)
        .map(|((what, _, _), event)| (what, event["event.reason"].clone()))
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}");
    for ((what, token, _), event) in cases.iter().zip(&events) {
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(event["jwtguard.token.kid"], header["kid"], "{what}");
        assert_eq!(event["jwtguard.token.alg"], header["alg"], "{what}");
        assert!(event.get("user.id").is_none(), "{what}");
    }
}

/// A set shaped as Keycloak publishes it (realm certs endpoint): a signing key with its
/// certificate chain and thumbprints, and an encryption key beside it.
#[test]
fn a_keycloak_shaped_jwk_set_is_used_for_its_signing_keys_only() {
    let dir = TempDir::new();
    let file = dir.path("certs.json");
    let mut signing = jwk("rsa2048", "kc-sig", None);
    let extra = serde_json::json!({
        "use": "sig",
        "key_ops": ["verify"],
        "x5c": ["MIICnTCCAYUCBgGTn4V0ZTANBgkqhkiG9w0BAQsFADASMRAwDgYDVQQDDAdqd3RndWFyZA=="],
        "x5t": "oJpVf9wMN4gDRhMXG4Bpxlrh8lw",
        "x5t#S256": "t6d0H2bTjEdrPd9Rqzr0bTh5eZtF-9iWq9sXbBRyjSk"
    });
    signing
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut encryption = jwk("rsa2048-b", "kc-enc", None);
    encryption["alg"] = "RSA-OAEP".into();
    encryption["use"] = "enc".into();
    let keycloak = serde_json::json!({ "keys": [signing, encryption] });
    std::fs::write(&file, keycloak.to_string()).unwrap();
    let server = serve(dir, &file, &["--issuer", "http://keycloak/realms/demo"]);
    let token = output(&[
        "token",
        "--key-file",
        &key("rsa2048"),
        "--kid",
        "kc-sig",
        "--sub",
        "alice",
        "--issuer",
        "http://keycloak/realms/demo",
    ]);
    assert_eq!(server.get_with_token("/api/x", &token).status, 200);
    // The encryption key is not in the set: nothing it "signed" verifies.
    let enc = mint("rsa2048-b", "kc-enc", None);
    assert_eq!(server.get_with_token("/api/x", &enc).status, 401);
    let events = server.requests_logged();
    assert_eq!(events[1]["event.reason"], "unknown_key");
}

#[test]
fn weak_rsa_keys_and_bad_mixes_are_refused_at_start() {
    let dir = TempDir::new();
    let weak = {
        // The 1024-bit key's JWK, by hand: jwtguard will not print one for it.
        let out = run(&["jwks", "--from-pem", &key("rsa1024")], &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("1024 bits"));
        let der = std::process::Command::new("openssl")
            .args(["rsa", "-in", &key("rsa1024"), "-noout", "-modulus"])
            .output()
            .unwrap();
        let hex = String::from_utf8(der.stdout).unwrap();
        let hex = hex.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        serde_json::json!({"kty": "RSA", "kid": "weak", "n": B64.encode(n), "e": "AQAB"})
    };
    let oct = serde_json::json!({"kty": "oct", "kid": "hs", "k": B64.encode([7u8; 32])});
    let cases = [
        (set(&[weak]), "1024 bits"),
        (
            set(&[jwk("rsa2048", "r", None), oct]),
            "every key needs its \"alg\"",
        ),
        (
            set(&[{
                let mut k = jwk("rsa2048", "r", None);
                k["alg"] = "ES256".into();
                k
            }]),
            "cannot be for ES256",
        ),
        (
            set(&[{
                let mut k = jwk("p256", "e", None);
                k["d"] = "AAAA".into();
                k
            }]),
            "private key",
        ),
    ];
    for (i, (json, says)) in cases.iter().enumerate() {
        let file = dir.path(&format!("{i}.json"));
        std::fs::write(&file, json).unwrap();
        let out = run(&["--jwks", file.to_str().unwrap()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{says}: {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
}

/// Polls `f` every 50 ms until it holds, for at most `within`.
fn within(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The provider rotates: a new key is published beside the old, tokens move to it, the
/// old key goes. Clients sending the old token, then the new, see no failure; the new
/// key works within 2 s of being written and the old is refused within 2 s of its removal.
#[test]
fn the_jwk_set_file_is_read_again_when_it_changes_without_a_failed_request() {
    let dir = TempDir::new();
    let file = dir.path("jwks.json");
    let (old, new) = (jwk("rsa2048", "old", None), jwk("p256", "new", None));
    std::fs::write(&file, set(std::slice::from_ref(&old))).unwrap();
    // The old token, refused once its key is gone, is sent many times from one address:
    // no brute-force limiter here.
    let server = serve(dir, &file, &["--max-failures", "0"]);
    let (old_token, new_token) = (mint("rsa2048", "old", None), mint("p256", "new", None));
    assert_eq!(server.get_with_token("/api/x", &new_token).status, 401);

    // Clients on the old token keep going through the rotation.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let use_new = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, use_new) = (stop.clone(), use_new.clone());
            let (addr, old_token, new_token) = (server.addr, old_token.clone(), new_token.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && answers.len() < 20_000 {
                    let token = if use_new.load(std::sync::atomic::Ordering::Relaxed) {
                        &new_token
                    } else {
                        &old_token
                    };
                    let mut connection = support::Connection::open(addr);
                    let head = format!(
                        "GET /api/x HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}"
                    );
                    answers.push(connection.send(&head, false).status);
                }
                answers
            })
        })
        .collect();

    replace(&file, &set(&[old.clone(), new.clone()]));
    let took = within(Duration::from_secs(3), || {
        server.get_with_token("/api/x", &new_token).status == 200
    });
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(2)),
        "{took:?}"
    );
    use_new.store(true, std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    replace(&file, &set(std::slice::from_ref(&new)));
    let took = within(Duration::from_secs(3), || {
        server.get_with_token("/api/x", &old_token).status == 401
    });
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(2)),
        "{took:?}"
    );
    std::thread::sleep(Duration::from_millis(300));

    // A broken file: the last good set stays, and one event says so.
    replace(&file, "{\"keys\": [");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.get_with_token("/api/x", &new_token).status, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let answers = client.join().unwrap();
        assert!(!answers.is_empty());
        assert!(
            answers.iter().all(|&s| s == 200),
            "a request failed: {:?}",
            {
                let mut failed: Vec<_> = answers.iter().filter(|&&s| s != 200).collect();
                failed.dedup();
                failed
            }
        );
    }
    let loads: Vec<_> = server
        .log_json()
        .into_iter()
        .filter(|e| e["event.action"] == "jwks_load")
        .collect();
    let outcomes: Vec<_> = loads
        .iter()
        .map(|e| {
            (
                e["event.outcome"].as_str().unwrap(),
                e["event.reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("success", "changed"),
            ("success", "changed"),
            ("failure", "invalid_jwks")
        ],
        "{loads:?}"
    );
    assert_eq!(loads[0]["jwtguard.jwks.keys"], 2);
    assert_eq!(loads[2]["file.path"], file.to_str().unwrap());
}
