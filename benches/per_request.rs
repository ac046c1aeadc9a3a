//! Per-request work of the guard, without HTTP: `cargo bench --bench per_request`.
//!
//! For each case, one "request" is what `Guard::check` does besides tiny_http and the log
//! sink: parse the `Authorization` value (`bearer_token`), verify the token
//! (`Verifier::verify`), fingerprint it, and encode the security event into a reused
//! `String`, with the clock read as the guard does. The components are also timed on their
//! own. Prints the median ns/op over
//! several rounds, with the fastest and slowest round.
//!
//! `PER_REQUEST_ROUNDS` (default 15) and `PER_REQUEST_MS` (milliseconds per round,
//! default 100) tune the run.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use jwtguard::audit::{Fingerprint, RequestEvent};
use jwtguard::{LogFormat, Policy, Secret, SecretSource, Verifier, bearer_token};

const MAX_TOKEN_BYTES: usize = 8192;

/// One timed operation.
type Op<'a> = Box<dyn FnMut() + 'a>;

/// One request through the guard's own work; returns the encoded line's length.
fn request(verifier: &Verifier, header: Option<&str>, line: &mut String, now: SystemTime) -> usize {
    let token = bearer_token(header, MAX_TOKEN_BYTES);
    let result = match token {
        Ok(token) => verifier.verify(token),
        Err(reason) => Err(reason.into()),
    };
    let (reason, user, status) = jwtguard::outcome(&result);
    let event = RequestEvent {
        success: result.is_ok(),
        reason,
        source_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        method: "GET",
        path: "/api/protected",
        status,
        user_agent: None,
        request_id: jwtguard::audit::RequestId {
            prefix: 0x0a1b_2c3d,
            n: 42,
        },
        user,
        fingerprint: token.ok().map(Fingerprint::of),
    };
    line.clear();
    event.encode(LogFormat::Json, now, line);
    line.len()
}

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

    let secret = Secret::new([7u8; 32], SecretSource::Env);
    let wrong = Secret::new([8u8; 32], SecretSource::Env);
    let policy = Policy {
        leeway: 30,
        require_exp: true,
        issuer: None,
        audience: None,
    };
    let verifier = Verifier::new(secret.expose(), &policy);
    let valid = jwtguard::mint(&secret, "bench", 3600, None, None, serde_json::Map::new());
    // Same shape and claims, signed with another secret.
    let forged = jwtguard::mint(&wrong, "bench", 3600, None, None, serde_json::Map::new());
    let valid_header = format!("Bearer {valid}");
    let forged_header = format!("Bearer {forged}");

    assert_eq!(verifier.verify(&valid).as_deref(), Ok("bench"));
    assert_eq!(
        verifier.verify(&forged).map_err(|d| d.reason),
        Err(jwtguard::Reason::BadSignature)
    );

    // One request of each case; each case reuses its own line buffer, as the guard does.
    let case = |header: Option<&'static str>| {
        let mut line = String::new();
        let verifier = &verifier;
        move || {
            black_box(request(
                verifier,
                black_box(header),
                &mut line,
                SystemTime::now(),
            ));
        }
    };
    let valid_header: &'static str = Box::leak(valid_header.into_boxed_str());
    let forged_header: &'static str = Box::leak(forged_header.into_boxed_str());
    let cases: Vec<(&str, Op)> = vec![
        ("request: valid token", Box::new(case(Some(valid_header)))),
        (
            "request: forged token (bad signature)",
            Box::new(case(Some(forged_header))),
        ),
        ("request: missing header", Box::new(case(None))),
        (
            "  part: bearer_token",
            Box::new(|| {
                let _ = black_box(bearer_token(black_box(Some(valid_header)), MAX_TOKEN_BYTES));
            }),
        ),
        (
            "  part: Verifier::verify, valid",
            Box::new(|| {
                let _ = black_box(verifier.verify(black_box(&valid)));
            }),
        ),
        (
            "  part: Verifier::verify, forged",
            Box::new(|| {
                let _ = black_box(verifier.verify(black_box(&forged)));
            }),
        ),
        (
            "  part: Fingerprint::of",
            Box::new(|| {
                black_box(Fingerprint::of(black_box(&valid)));
            }),
        ),
        (
            "  part: SystemTime::now",
            Box::new(|| {
                black_box(SystemTime::now());
            }),
        ),
    ];

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
