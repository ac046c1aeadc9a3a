//! `--metrics`: the counters at `/metrics` match what the test sent (allowed, refused by
//! reason, the limiter's 429s, answers by class, log lines), the histograms count every
//! decision, and nothing but `GET /metrics` is answered there.

mod support;

use std::collections::HashMap;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{Server, forge, token};

/// Starts a server with metrics on port 0 and returns it with the metrics address.
fn start(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--no-supervisor", "--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut server = Server::start(&all);
    let mut line = String::new();
    server.stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();
    (server, addr)
}

/// Sends `request_line` to the metrics listener; returns the whole answer.
fn ask(addr: SocketAddr, request_line: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{request_line}\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The samples of a scrape, by name with labels (`name{a="b"}`).
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let answer = ask(addr, "GET /metrics HTTP/1.1");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn refused(reason: &str) -> String {
    format!("jwtguard_decisions_total{{outcome=\"refused\",reason=\"{reason}\"}}")
}

#[test]
fn the_counters_match_what_was_sent() {
    let (server, metrics) = start(&["--max-failures", "3", "--trusted-proxy", "127.0.0.1"]);
    let good = token(&["--sub", "alice"]);
    for _ in 0..4 {
        assert_eq!(server.get_with_token("/api/x", &good).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(server.get("/api/x", &[]).status, 401);
    }
    let attacker = "X-Forwarded-For: 203.0.113.9";
    let forged = format!("Authorization: Bearer {}", forge(&good));
    for _ in 0..3 {
        assert_eq!(server.get("/api/x", &[attacker, &forged]).status, 401);
    }
    let valid = format!("Authorization: Bearer {good}");
    for _ in 0..2 {
        assert_eq!(server.get("/api/x", &[attacker, &valid]).status, 429);
    }
    assert_eq!(server.get("/healthz", &[]).status, 200);

    let m = scrape(metrics);
    let allowed = "jwtguard_decisions_total{outcome=\"allowed\",reason=\"ok\"}";
    assert_eq!(m[allowed], 4.0);
    assert_eq!(m[&refused("missing_token")], 2.0);
    assert_eq!(m[&refused("bad_signature")], 3.0);
    assert_eq!(m[&refused("rate_limited")], 2.0);
    assert_eq!(m[&refused("expired")], 0.0);
    assert_eq!(m[&refused("log_failed")], 0.0);
    assert_eq!(
        m["jwtguard_limit_refusals_total{limit=\"max_failures\"}"],
        2.0
    );
    assert_eq!(m["jwtguard_responses_total{code=\"2xx\"}"], 5.0);
    assert_eq!(m["jwtguard_responses_total{code=\"4xx\"}"], 7.0);
    assert_eq!(m["jwtguard_responses_total{code=\"5xx\"}"], 0.0);
    assert_eq!(m["jwtguard_decision_seconds_count"], 11.0);
    assert_eq!(m["jwtguard_decision_seconds_bucket{le=\"+Inf\"}"], 11.0);
    assert_eq!(m["jwtguard_request_seconds_count"], 12.0, "healthz too");
    assert!(m["jwtguard_decision_seconds_sum"] > 0.0);
    // Every line in the log file, and only those, was counted as written.
    let lines = std::fs::read_to_string(server.log_path()).unwrap();
    assert_eq!(m["jwtguard_log_lines_total"], lines.lines().count() as f64);
    assert_eq!(m["jwtguard_log_write_failures_total"], 0.0);
    assert_eq!(m["jwtguard_max_connections"], 1024.0);
    assert_eq!(m["jwtguard_seal_epoch"], 0.0);
    assert_eq!(m["process_open_fds"].fract(), 0.0);
    assert!(m["process_resident_memory_bytes"] > 1e6);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = m["process_start_time_seconds"];
    assert!(now - 120.0 < started && started <= now + 1.0, "{started}");
    let version = format!(
        "jwtguard_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m[&version], 1.0);
}

#[test]
fn only_get_metrics_is_answered() {
    let (_server, metrics) = start(&[]);
    assert!(ask(metrics, "GET /other HTTP/1.1").starts_with("HTTP/1.1 404 "));
    assert!(ask(metrics, "POST /metrics HTTP/1.1").starts_with("HTTP/1.1 405 "));
    // A scrape still works after those.
    assert!(scrape(metrics).contains_key("process_cpu_seconds_total"));
}

#[test]
fn a_sealed_log_reports_its_epoch() {
    let dir = support::TempDir::new();
    let key = dir.path("seal.key");
    let out = support::run(&["seal-init", key.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{out:?}");
    let (_server, metrics) = start(&["--seal-key", key.to_str().unwrap()]);
    // A key made now is at epoch 0; the start-up opens epoch 1 (plus one: 2).
    assert!(scrape(metrics)["jwtguard_seal_epoch"] >= 1.0);
}

#[test]
fn a_port_chosen_by_the_kernel_needs_no_supervisor() {
    let out = support::run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[("JWTGUARD_SECRET", support::SECRET)],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics needs a fixed port"), "{stderr}");
}

#[test]
fn forwarding_failures_are_counted_by_kind() {
    // An upstream where nothing listens: each allowed request is a 502, counted.
    let (_port, upstream) = support::closed_port();
    let (server, metrics) = start(&["--upstream", &upstream]);
    let alice = token(&["--sub", "alice"]);
    for _ in 0..2 {
        assert_eq!(server.get_with_token("/x", &alice).status, 502);
    }
    let samples = scrape(metrics);
    let kind = |k: &str| samples[&format!("jwtguard_upstream_errors_total{{kind=\"{k}\"}}")];
    assert_eq!(kind("upstream_unreachable"), 2.0, "{samples:?}");
    assert_eq!(kind("upstream_timeout"), 0.0);
}

/// A client that sends its head a byte every second (each read within the per-read
/// timeout) is cut at the scrape's deadline: it cannot keep the listener, which serves one
/// scrape at a time, from answering Prometheus.
#[test]
fn a_dripping_client_does_not_hold_the_listener() {
    let (_server, metrics) = start(&[]);
    let mut drip = TcpStream::connect(metrics).unwrap();
    let dripper = std::thread::spawn(move || {
        // 25 s of drip at most (bounded); ends early once the listener closes it.
        for byte in b"GET /metrics HTTP/1.1\r\nX: aaaaaaaa" {
            if drip.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(700));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let samples = scrape(metrics);
    let took = started.elapsed();
    assert!(samples.contains_key("process_cpu_seconds_total"));
    assert!(took < Duration::from_secs(8), "the scrape waited {took:?}");
    dripper.join().unwrap();
}

/// Workers bind the metrics port each (SO_REUSEPORT) and keep their own counters: with
/// two, a scrape saw one worker's requests only (5 of 10 sent, every scrape). Refused at
/// start rather than half the traffic, a brute force included, missing from the counters.
#[test]
fn metrics_with_several_workers_is_a_usage_error() {
    // A port free now: refused before anything binds it.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = support::run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--metrics",
            &metrics,
        ],
        &[("JWTGUARD_SECRET", support::SECRET)],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--metrics") && stderr.contains("--workers"),
        "{stderr}"
    );
}

#[test]
fn proxy_mode_counts_the_apps_answers_and_its_share_of_the_latency() {
    // An app that takes 100 ms to answer each request.
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in app.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        std::thread::sleep(Duration::from_millis(100));
                        let answer = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
                        if stream.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let (server, metrics) = start(&["--upstream", &url]);
    let alice = token(&["--sub", "alice"]);
    for _ in 0..3 {
        assert_eq!(server.get_with_token("/x", &alice).status, 201);
    }
    assert_eq!(server.get("/x", &[]).status, 401);
    let m = scrape(metrics);
    assert_eq!(m["jwtguard_responses_total{code=\"2xx\"}"], 3.0, "{m:?}");
    assert_eq!(m["jwtguard_responses_total{code=\"4xx\"}"], 1.0);
    // The app's 100 ms, for each of the three forwarded, and none for the refused one.
    assert_eq!(m["jwtguard_upstream_duration_seconds_count"], 3.0);
    let sum = m["jwtguard_upstream_duration_seconds_sum"];
    assert!((0.3..3.0).contains(&sum), "{sum}");
    assert_eq!(
        m["jwtguard_upstream_duration_seconds_bucket{le=\"0.03\"}"],
        0.0
    );
}

/// `--metrics` is a second listener of the worker's loop, not a thread of its own: a
/// worker has as many threads with it as without (it had one more).
#[test]
fn metrics_add_no_thread_to_the_worker() {
    let threads = |server: &Server| {
        std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .unwrap()
            .count()
    };
    let (with, metrics) = start(&[]);
    let without = Server::start(&["--no-supervisor"]);
    for server in [&with, &without] {
        assert_eq!(server.get("/healthz", &[]).status, 200);
    }
    assert!(scrape(metrics).contains_key("process_cpu_seconds_total"));
    let (n_with, n_without) = (threads(&with), threads(&without));
    eprintln!("worker threads: {n_with} with --metrics, {n_without} without");
    assert_eq!(n_with, n_without);
}

/// A scrape is not a request: it moves neither the answers' counters nor the request
/// latency histogram.
#[test]
fn a_scrape_is_not_counted_as_a_request() {
    let (_server, metrics) = start(&[]);
    let first = scrape(metrics);
    let second = scrape(metrics);
    for name in [
        "jwtguard_responses_total{code=\"2xx\"}",
        "jwtguard_request_seconds_count",
    ] {
        assert_eq!(first[name], 0.0, "{name}");
        assert_eq!(second[name], 0.0, "{name}");
    }
}
