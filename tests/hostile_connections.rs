//! Clients that attack the connection rather than the token: one that never reads its
//! answers, ambiguous framing that smuggles a second request, and a flood of requests
//! tiny_http cannot drain. None of them may freeze, fool or kill the server.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{SECRET, Server, TempDir, token};

/// `GET /healthz`, to be pipelined.
const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn a_client_that_never_reads_its_answers_freezes_no_one() {
    let mut server = Server::start(&[]);
    // The attacker: a small receive buffer, 3 MB of pipelined requests (their answers
    // outgrow any send buffer the kernel grows, up to 4 MB), no reads.
    let attacker = TcpStream::connect(server.addr).unwrap();
    nix::sys::socket::setsockopt(&attacker.as_fd(), nix::sys::socket::sockopt::RcvBuf, &4096)
        .unwrap();
    let mut writer = attacker.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let flood = std::thread::spawn(move || {
        let batch = HEALTHZ.repeat(1000);
        for _ in 0..90 {
            if writer.write_all(batch.as_bytes()).is_err() {
                break;
            }
        }
    });
    // The server notices the connection stalls (its answers find no room)...
    let deadline = Instant::now() + Duration::from_secs(10);
    let stalled = |server: &Server| {
        server
            .log_json()
            .iter()
            .any(|e| e["event.reason"] == "client_not_reading")
    };
    while !stalled(&server) {
        assert!(Instant::now() < deadline, "no client_not_reading event");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and everyone else is still served, promptly, while the attacker stays connected.
    let valid = token(&["--sub", "alice"]);
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(server.get_with_token("/api/x", &valid).status, 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "20 requests took {:?}",
        start.elapsed()
    );
    // And the server stops when told, the attacker still connected.
    let start = Instant::now();
    assert!(server.terminate().success());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    flood.join().unwrap();
    let events = server.log_json();
    let stalled: Vec<_> = events
        .iter()
        .filter(|e| e["event.reason"] == "client_not_reading")
        .collect();
    assert_eq!(
        stalled.len(),
        1,
        "one event for the stalled connection (no answer had an id)"
    );
    assert_eq!(stalled[0]["event.action"], "answer");
    assert_eq!(stalled[0]["source.ip"], "127.0.0.1");
    drop(attacker);
}

/// Sends `raw` on one connection, ends the connection's input, and reads every answer
/// until the server closes it.
fn exchange(server: &Server, raw: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn ambiguous_framing_is_refused_and_smuggles_nothing() {
    let server = Server::start(&[]);
    let valid = token(&["--sub", "alice"]);
    // A second request hidden in each body: if framing were misread, it would be decided
    // (and logged) on its own.
    let smuggled =
        format!("GET /api/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\n\r\n");
    let n = smuggled.len();
    let chunk = format!("{n:x}\r\n{smuggled}\r\n0\r\n\r\n");
    let cases = [
        format!(
            "POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nTransfer-Encoding: xchunked\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /api/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {n}\r\n\r\n{smuggled}"
        ),
        format!("POST /api/c HTTP/1.1\r\nHost: x\r\nContent-Length: {n}, {n}\r\n\r\n{smuggled}"),
        format!(
            "POST /api/d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n{chunk}"
        ),
        format!(
            "POST /api/e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{chunk}"
        ),
        format!("POST /api/f HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"),
        format!(
            "POST /api/g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
        ),
        format!("POST /api/h HTTP/1.1\r\nHost: x\r\nContent-Length: +{n}\r\n\r\n{smuggled}"),
        format!("GET /api/j HTTP/1.1\r\nHost: x\r\nX-Evil: a\rb\r\n\r\n{smuggled}"),
    ];
    for raw in &cases {
        let answer = exchange(&server, raw);
        let first = raw.lines().next().unwrap();
        assert!(
            answer.starts_with("HTTP/1.") && answer[8..].starts_with(" 400 "),
            "{first}: {answer}"
        );
        assert!(
            answer.contains("\r\nConnection: close\r\n"),
            "{first}: {answer}"
        );
        // One answer from jwtguard (tiny_http may add its own 400 for the garbage that
        // follows, before it closes the connection); the smuggled request got none.
        assert_eq!(
            answer.matches("X-Request-Id: ").count(),
            1,
            "{first}: {answer}"
        );
        assert!(!answer.contains(" 200 OK"), "{first}: {answer}");
    }
    let events = server.requests_logged();
    let paths: Vec<_> = events
        .iter()
        .map(|e| e["url.path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/a", "/api/b", "/api/c", "/api/d", "/api/e", "/api/f", "/api/g", "/api/h",
            "/api/j"
        ]
    );
    for event in &events {
        assert_eq!(event["event.reason"], "bad_framing", "{event}");
        assert_eq!(event["http.response.status_code"], 400);
    }
    // A chunked body jwtguard does not read is not taken for the next request either.
    let raw =
        format!("POST /api/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}");
    let answer = exchange(&server, &raw);
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert_eq!(answer.matches("X-Request-Id: ").count(), 1, "{answer}");
    assert!(!answer.contains(" 200 OK"), "{answer}");
    assert_eq!(
        server.requests_logged().len(),
        10,
        "nothing smuggled was decided"
    );
}

#[test]
fn a_bad_host_is_refused_but_is_no_framing_error() {
    // Host says nothing of where the request ends: the refusal is `invalid_request`, and
    // the request pipelined behind it is decided on its own.
    let server = Server::start(&[]);
    let valid = token(&["--sub", "alice"]);
    let next = format!("GET /api/next HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\n");
    for hosts in ["Host: x\r\nHost: y", "Host: x\tX-Auth-User: root"] {
        let raw = format!(
            "GET /api/bad HTTP/1.1\r\n{hosts}\r\nAuthorization: Bearer {valid}\r\n\r\n{next}Connection: close\r\n\r\n"
        );
        let answer = exchange(&server, &raw);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{hosts:?}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 200 OK").count(),
            1,
            "{hosts:?}: {answer}"
        );
    }
    let events: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| (e["url.path"].clone(), e["event.reason"].clone()))
        .collect();
    let (bad, next) = (
        ("/api/bad".into(), "invalid_request".into()),
        ("/api/next".into(), "ok".into()),
    );
    assert_eq!(events, [bad.clone(), next.clone(), bad, next]);
}

/// The descriptors the process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_flood_of_bodies_too_large_to_drain_is_answered_and_kills_nothing() {
    // Started with the soft limit on open files at 256: jwtguard raises it to the hard
    // limit, so the 400 requests it must abandon (two descriptors each) do not exhaust it.
    let dir = TempDir::new();
    let log = dir.path("security.log");
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    assert!(
        hard >= 2048,
        "this test needs a hard limit on open files of 2048 or more"
    );
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_jwtguard"));
    let server = Server::spawn_with(
        command,
        dir,
        // One process, whose descriptors are counted (no supervisor in between).
        &["--no-supervisor", "--log-file", log.to_str().unwrap()],
        &[("JWTGUARD_SECRET", SECRET)],
        Stdio::null(),
    );
    let before = open_fds(server.pid());
    let mut clients = Vec::new();
    for _ in 0..400 {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n"
        )
        .unwrap();
        let head = support::final_head(&stream);
        assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Length: "), "{head}");
        clients.push(stream);
    }
    assert_eq!(
        server.get("/healthz", &[]).status,
        200,
        "alive and accepting"
    );
    drop(clients);
    // The bound: two descriptors per abandoned request, until the process is replaced.
    let after = open_fds(server.pid());
    assert!(
        after <= before + 2 * 400 + 8,
        "{before} -> {after} descriptors"
    );
    let events = server.requests_logged();
    assert_eq!(events.len(), 400);
    assert!(events.iter().all(|e| e["event.reason"] == "body_too_large"));
}

#[test]
fn a_burst_of_connections_waits_in_the_queue_instead_of_being_dropped() {
    // A server that is not accepting for a moment (tiny_http starting a thread for each of
    // a burst, here a stopped process): 400 connections must all be taken into the
    // listening socket's queue. With the standard library's queue of 128 the rest are
    // dropped, and their clients retry for seconds.
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let server = Server::start(&["--no-supervisor"]);
    let pid = Pid::from_raw(server.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let addr = server.addr;
    let threads: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for _ in 0..25 {
                    if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                        held.push(s);
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<TcpStream> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    kill(pid, Signal::SIGCONT).unwrap();
    assert_eq!(held.len(), 400);
    drop(held);
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
fn every_connection_of_a_burst_is_served_while_the_others_stay_open() {
    // tiny_http's pool can hand two connections of a burst to one idle thread, and the
    // second then waits for a thread to come free: behind long-lived connections, for
    // good. Five bursts of 200 kept-alive connections, each asking once: every one is
    // answered within 2 s.
    let server = Server::start(&["--no-supervisor"]);
    for burst in 0..5 {
        let mut held: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect();
        for s in &mut held {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let unanswered = held
            .iter_mut()
            .filter(|s| {
                let mut s: &TcpStream = s;
                let left = deadline.saturating_duration_since(Instant::now());
                s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                let mut answer = [0; 12];
                s.read_exact(&mut answer).is_err()
            })
            .count();
        assert_eq!(unanswered, 0, "burst {burst}");
    }
}

#[test]
fn a_client_that_ends_its_input_after_a_request_gets_its_answer_and_the_close() {
    // The request and the end of input arrive together, as from `printf ... | nc -N`:
    // the server answers, then closes at once, not after the 60 s idle timeout.
    let server = Server::start(&[]);
    let valid = token(&["--sub", "alice"]);
    let request =
        format!("GET /api/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\n\r\n");
    for _ in 0..20 {
        let started = Instant::now();
        let answer = exchange(&server, &request);
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "closed {:?} after the end of input",
            started.elapsed()
        );
    }
}
