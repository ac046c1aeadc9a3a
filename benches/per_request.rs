//! Per-request work of the guard, without HTTP: `cargo bench --bench per_request`.
//!
//! Each case is one `Guard::check` on the plain parts of a request to a protected path:
//! parse the `Authorization` value, verify the token, build the security event and write
//! it through the installed `SecurityLog` (to `io::sink()`, so no system call is timed).
//! This is the code path the server runs, minus tiny_http and the group commit. Prints
//! the median ns/op over several rounds, with the fastest and slowest round.
//!
//! `PER_REQUEST_ROUNDS` (default 15) and `PER_REQUEST_MS` (milliseconds per round,
//! default 100) tune the run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use jwtguard::{
    Config, Decision, Guard, LogFormat, Reason, Request, Secret, SecretSource, SecurityLog,
};

/// One timed operation.
type Op<'a> = Box<dyn FnMut() + 'a>;

/// Runs `op` for `rounds` rounds of about `per_round` each (after a warm-up of one
/// round) and returns the ns/op of every round, sorted.
fn measure(rounds: usize, per_round: Duration, mut op: impl FnMut()) -> Vec<f64> {
    // Calibrate: how many calls fill a round.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        let took = start.elapsed();
        if took >= per_round / 10 {
            let per_op = took.as_secs_f64() / batch as f64;
            batch = ((per_round.as_secs_f64() / per_op) as u64).max(1);
            break;
        }
        batch *= 2;
    }
    // Warm-up round, discarded.
    for _ in 0..batch {
        op();
    }
    let mut results: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                op();
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    results.sort_by(f64::total_cmp);
    results
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not and wants a quick
    // smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = if benching {
        env_or("PER_REQUEST_ROUNDS", 15) as usize
    } else {
        1
    };
    let per_round = Duration::from_millis(if benching {
        env_or("PER_REQUEST_MS", 100)
    } else {
        1
    });

    SecurityLog::writer(std::io::sink(), "sink", LogFormat::Json)
        .install()
        .expect("the only logger");
    let secret = Secret::new([7u8; 32], SecretSource::Env);
    let wrong = Secret::new([8u8; 32], SecretSource::Env);
    // The limiter on, counting every forged request but never blocking (one address sends
    // them all); beside it the same guard with the limiter off, and one that blocks.
    let guard = Guard::new(&Config {
        secret: Some(secret.clone()),
        max_failures: u32::MAX,
        ..Config::default()
    })
    .expect("a valid configuration");
    let unlimited = Guard::new(&Config {
        secret: Some(secret.clone()),
        max_failures: 0,
        ..Config::default()
    })
    .expect("a valid configuration");
    let blocking = Guard::new(&Config {
        secret: Some(secret.clone()),
        max_failures: 1,
        // Blocked for the whole run.
        failure_window: 86_400,
        ..Config::default()
    })
    .expect("a valid configuration");
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "bench".into());
    claims.insert("exp".into(), u32::MAX.into());
    let valid = jwtguard::mint(&secret, &claims);
    // Same shape and claims, signed with another secret.
    let forged = jwtguard::mint(&wrong, &claims);
    let valid_header = format!("Bearer {valid}");
    let forged_header = format!("Bearer {forged}");
    let peer = "127.0.0.1".parse().expect("an address");

    let check_with = |guard: &Guard, authorization: Option<&str>| {
        let mut headers = vec![("Host", "127.0.0.1:8080"), ("User-Agent", "wrk")];
        headers.extend(authorization.map(|value| ("Authorization", value)));
        guard.check(&Request::new("GET", "/api/protected", headers.as_slice()).with_peer(peer))
    };
    let check = |authorization: Option<&str>| check_with(&guard, authorization);
    assert!(matches!(check(Some(&valid_header)), Decision::Allowed(_)));
    assert!(matches!(
        check(Some(&forged_header)),
        Decision::Refused(r) if r.reason() == Some(Reason::BadSignature)
    ));

    let _ = check_with(&blocking, Some(&forged_header));
    assert!(matches!(
        check_with(&blocking, Some(&valid_header)),
        Decision::Refused(r) if r.reason() == Some(Reason::RateLimited)
    ));
    let case_with = |guard: &'static Guard, authorization: Option<&'static str>| {
        let check_with = &check_with;
        move || {
            let _ = black_box(check_with(guard, black_box(authorization)));
        }
    };
    let guard: &'static Guard = Box::leak(Box::new(guard));
    let unlimited: &'static Guard = Box::leak(Box::new(unlimited));
    let blocking: &'static Guard = Box::leak(Box::new(blocking));
    let case = |authorization: Option<&'static str>| case_with(guard, authorization);
    let valid_header: &'static str = Box::leak(valid_header.into_boxed_str());
    let forged_header: &'static str = Box::leak(forged_header.into_boxed_str());
    let cases: Vec<(String, Op)> = vec![
        (
            "Guard::check, valid token".into(),
            Box::new(case(Some(valid_header))),
        ),
        (
            "Guard::check, forged token".into(),
            Box::new(case(Some(forged_header))),
        ),
        (
            "Guard::check, valid token, limiter off".into(),
            Box::new(case_with(unlimited, Some(valid_header))),
        ),
        (
            "Guard::check, forged token, limiter off".into(),
            Box::new(case_with(unlimited, Some(forged_header))),
        ),
        (
            "Guard::check, address rate-limited".into(),
            Box::new(case_with(blocking, Some(valid_header))),
        ),
        (
            "Guard::check, no Authorization".into(),
            Box::new(case(None)),
        ),
        (
            "Guard::check, public path".into(),
            Box::new(|| {
                let headers = [("Authorization", valid_header)];
                let _ = black_box(guard.check(&Request::new("GET", "/public", &headers)));
            }),
        ),
    ];

    #[cfg(feature = "sign")]
    let cases = {
        let mut cases = cases;
        cases.extend(public_key_cases(benching));
        cases
    };

    println!(
        "per-request work, {rounds} rounds of ~{} ms, median ns/op [min .. max]",
        per_round.as_millis()
    );
    println!("token: {} bytes", valid.len());
    for (name, mut op) in cases {
        let results = measure(rounds, per_round, &mut op);
        let median = results[results.len() / 2];
        println!(
            "{name:<40} {median:>9.0} ns/op  [{:.0} .. {:.0}]",
            results[0],
            results[results.len() - 1]
        );
    }
}

/// For each public-key algorithm, a guard on that key's JWK Set: the same token sent
/// again (a verified-token cache hit), and every token distinct (256 tokens in turn,
/// through a guard without the cache: each a signature verification).
#[cfg(feature = "sign")]
fn public_key_cases(benching: bool) -> Vec<(String, Op<'static>)> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/idp");
    let distinct = if benching { 256 } else { 2 };
    let mut cases: Vec<(String, Op<'static>)> = Vec::new();
    for (file, alg) in [
        ("rsa2048", "RS256"),
        ("rsa2048", "PS256"),
        ("p256", "ES256"),
        ("p384", "ES384"),
        ("ed25519", "EdDSA"),
    ] {
        let pem = std::fs::read_to_string(format!("{data}/{file}.pem")).expect("test key");
        let key = jwtguard::SigningKey::from_pem(&pem).expect("a private key");
        let set = key.jwk_set(Some(alg), Some("k")).expect("its JWK Set");
        let guard = |token_cache| -> &'static Guard {
            Box::leak(Box::new(
                Guard::new(&Config {
                    keys: Some(jwtguard::KeySet::parse(set.as_bytes()).expect("a JWK Set")),
                    token_cache,
                    ..Config::default()
                })
                .expect("a valid configuration"),
            ))
        };
        let (cached, uncached) = (guard(1024), guard(0));
        let tokens: Vec<&'static str> = (0..distinct)
            .map(|i: u64| {
                let mut claims = serde_json::Map::new();
                claims.insert("sub".into(), "bench".into());
                claims.insert("exp".into(), (4_000_000_000 + i).into());
                let token = key.mint(Some(alg), Some("k"), &claims).expect("signs");
                &*Box::leak(format!("Bearer {token}").into_boxed_str())
            })
            .collect();
        let check = move |guard: &Guard, authorization: &str| {
            let headers = [
                ("Host", "127.0.0.1:8080"),
                ("User-Agent", "wrk"),
                ("Authorization", authorization),
            ];
            guard.check(&Request::new("GET", "/api/protected", &headers[..]))
        };
        assert!(matches!(check(uncached, tokens[0]), Decision::Allowed(_)));
        let first = tokens[0];
        cases.push((
            format!("Guard::check, {alg}, same token (cached)"),
            Box::new(move || {
                let _ = black_box(check(cached, black_box(first)));
            }),
        ));
        let mut next = 0;
        cases.push((
            format!("Guard::check, {alg}, every token distinct"),
            Box::new(move || {
                next = (next + 1) % tokens.len();
                let _ = black_box(check(uncached, black_box(tokens[next])));
            }),
        ));
    }
    cases
}
