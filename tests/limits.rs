//! Serve mode's limits and timeouts, each against the real binary: what a client past
//! each one gets, what the log says, and that everyone else is still served. tiny_http
//! had none of them: a 70 KiB head was answered, a trickled head held open for good, a
//! thread spent on every idle connection.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Server, token};

/// Reads until the server closes `stream` (or `within` passes); returns what came and
/// whether it was closed.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let closed = match stream.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// The `connection` events of `reason`.
fn connection_events(server: &Server, reason: &str) -> Vec<serde_json::Value> {
    server
        .log_json()
        .into_iter()
        .filter(|e| e["event.action"] == "connection" && e["event.reason"] == reason)
        .collect()
}

/// Waits (bounded) until the log has a `connection` event of `reason`.
fn wait_for_event(server: &Server, reason: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(event) = connection_events(server, reason).pop() {
            return event;
        }
        assert!(Instant::now() < deadline, "no {reason} event");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_head_over_max_header_bytes_is_431_with_an_event() {
    // The default, 16 KiB.
    let server = Server::start(&[]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let filler = "a".repeat(20 * 1024);
    write!(
        stream,
        "GET /api/x HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n"
    )
    .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(closed);
    let event = wait_for_event(&server, "header_too_large");
    assert_eq!(event["http.response.status_code"], 431);
    assert_eq!(event["source.ip"], "127.0.0.1");
    assert!(
        server.requests_logged().is_empty(),
        "never reached the guard"
    );
    // A smaller limit, and a head just under it served.
    let small = Server::start(&["--max-header-bytes", "2048"]);
    let head = format!(
        "GET /api/x HTTP/1.1\r\nHost: x\r\nX-Filler: {}",
        "b".repeat(1900)
    );
    assert_eq!(small.raw(&head).status, 401);
    let head = format!("GET /api/x HTTP/1.1\r\nX-Filler: {}", "b".repeat(2100));
    assert_eq!(small.raw(&head).status, 431);
}

#[test]
fn a_head_trickled_past_header_timeout_is_408_and_closed() {
    let server = Server::start(&["--header-timeout", "1"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let start = Instant::now();
    slow.write_all(b"GET /api/x HTTP/1.1\r\n").unwrap();
    // One byte every 200 ms: progress does not extend a head's time.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        slow.write_all(b"X").unwrap();
    }
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(5));
    let took = start.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(closed);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let event = wait_for_event(&server, "header_timeout");
    assert_eq!(event["http.response.status_code"], 408);
    // Meanwhile and after, others are served.
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
fn a_connection_that_never_sends_is_closed_silently_after_header_timeout() {
    let server = Server::start(&["--header-timeout", "1"]);
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let start = Instant::now();
    let (answer, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    assert!(closed && answer.is_empty(), "{answer:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(connection_events(&server, "header_timeout").is_empty());
}

#[test]
fn a_kept_alive_connection_is_closed_after_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut conn = support::Connection::open(server.addr);
    assert_eq!(
        conn.send("GET /healthz HTTP/1.1\r\nHost: x", false).status,
        200
    );
    let start = Instant::now();
    assert!(conn.is_closed(), "closed by the server");
    let idle = start.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
}

#[test]
fn a_body_that_stops_coming_is_dropped_after_body_timeout() {
    let server = Server::start(&["--body-timeout", "1"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    // A small body is answered at once (the guard needs none) and thrown away as it comes;
    // this one stops after 10 of its 100 bytes.
    stream
        .write_all(b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let start = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    assert!(
        !answer.contains("Connection: close"),
        "kept alive for its body: {answer}"
    );
    assert!(closed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn a_small_body_is_thrown_away_and_the_connection_kept() {
    let server = Server::start(&[]);
    let valid = token(&["--sub", "alice"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    // A body that reads like a request must not be taken for one.
    let body =
        format!("GET /api/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\n\r\n");
    write!(
        stream,
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}GET /api/y HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 1, "{answer}");
    let paths: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| e["url.path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/api/x", "/api/y"]);
}

#[test]
fn a_client_that_does_not_read_is_dropped_after_send_timeout() {
    let server = Server::start(&["--send-timeout", "1"]);
    let mut attacker = TcpStream::connect(server.addr).unwrap();
    nix::sys::socket::setsockopt(
        &std::os::fd::AsFd::as_fd(&attacker),
        nix::sys::socket::sockopt::RcvBuf,
        &4096,
    )
    .unwrap();
    attacker
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let batch = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let start = Instant::now();
    // The server stops reading once its answers back up, so these writes block and fail
    // in the end; what counts is that the server drops the connection.
    let mut dropped = false;
    for _ in 0..200 {
        if attacker.write_all(batch.as_bytes()).is_err() {
            dropped = true;
            break;
        }
        if !connection_events_undelivered(&server).is_empty() {
            break;
        }
    }
    let _ = dropped;
    let deadline = Instant::now() + Duration::from_secs(5);
    while connection_events_undelivered(&server).is_empty() {
        assert!(Instant::now() < deadline, "no client_not_reading event");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Dropped: reading what was sent ends at the server's close.
    let (_, closed) = read_until_closed(&mut attacker, Duration::from_secs(5));
    assert!(closed, "the connection is closed");
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

fn connection_events_undelivered(server: &Server) -> Vec<serde_json::Value> {
    server
        .log_json()
        .into_iter()
        .filter(|e| e["event.reason"] == "client_not_reading")
        .collect()
}

/// A connection with half a head sent: busy, not idle.
fn busy(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    stream
}

/// Finishes a [`busy`] connection's head and reads its answer.
fn finish(mut stream: TcpStream) -> String {
    stream.write_all(b"Connection: close\r\n\r\n").unwrap();
    read_until_closed(&mut stream, Duration::from_secs(5)).0
}

/// Whether the server closes `stream` at once, with nothing said.
fn closed_at_once(stream: &mut TcpStream) -> bool {
    let (answer, closed) = read_until_closed(stream, Duration::from_secs(2));
    closed && answer.is_empty()
}

#[test]
fn past_max_connections_new_ones_are_closed_and_held_ones_keep_working() {
    let server = Server::start(&["--max-connections", "4", "--no-supervisor"]);
    let held: Vec<TcpStream> = (0..4).map(|_| busy(&server)).collect();
    // Let the server take them all in.
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(server.addr).unwrap();
    assert!(closed_at_once(&mut extra), "the fifth is closed");
    let event = wait_for_event(&server, "too_many_connections");
    assert!(
        event["jwtguard.connections"].as_u64().unwrap() >= 1,
        "{event}"
    );
    for stream in held {
        assert!(finish(stream).starts_with("HTTP/1.1 200 OK\r\n"));
    }
    // With room again, served.
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
fn at_max_connections_the_longest_idle_connection_makes_room() {
    let server = Server::start(&["--max-connections", "2", "--no-supervisor"]);
    let mut oldest = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let _newer = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Idle connections (nothing sent yet) are the ones closed to make room, oldest first.
    assert_eq!(server.get("/healthz", &[]).status, 200);
    assert!(closed_at_once(&mut oldest));
    assert!(connection_events(&server, "too_many_connections").is_empty());
}

#[test]
fn the_per_address_cap_closes_new_connections_but_not_a_trusted_proxys() {
    let server = Server::start(&["--max-connections-per-address", "2", "--no-supervisor"]);
    let held: Vec<TcpStream> = (0..2).map(|_| busy(&server)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(server.addr).unwrap();
    assert!(closed_at_once(&mut third));
    let event = wait_for_event(&server, "too_many_from_address");
    assert!(
        event["jwtguard.connections"].as_u64().unwrap() >= 1,
        "{event}"
    );
    for stream in held {
        assert!(finish(stream).starts_with("HTTP/1.1 200 OK\r\n"));
    }
    // Behind a trusted proxy the peer is the proxy: not capped.
    let proxied = Server::start(&[
        "--max-connections-per-address",
        "2",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--no-supervisor",
    ]);
    let held: Vec<TcpStream> = (0..4).map(|_| busy(&proxied)).collect();
    for stream in held {
        assert!(finish(stream).starts_with("HTTP/1.1 200 OK\r\n"));
    }
}

/// (threads, resident KiB) of process `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("Threads:"), field("VmRSS:"))
}

#[test]
fn a_thousand_idle_connections_add_no_thread_and_at_most_a_mebibyte() {
    // This process holds the client ends: 1000 descriptors and the other tests' own.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 4096,
        "this test needs a hard limit on open files of 4096 or more"
    );
    setrlimit(Resource::RLIMIT_NOFILE, soft.max(4096), hard).unwrap();
    let server = Server::start(&["--no-supervisor", "--max-connections-per-address", "0"]);
    // Warm: the loop's buffers and the first answer's allocations.
    assert_eq!(server.get("/healthz", &[]).status, 200);
    let (threads, rss) = usage(server.pid());
    let held: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Every one of them accepted (the server answers after it took them).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.get("/healthz", &[]).status, 200);
    let (threads_now, rss_now) = usage(server.pid());
    assert_eq!(threads_now, threads, "no thread per connection");
    assert!(
        rss_now <= rss + 1024,
        "{rss} KiB -> {rss_now} KiB with 1000 idle connections"
    );
    println!("1000 idle connections: {rss} KiB -> {rss_now} KiB, {threads} threads");
    drop(held);
}

/// A body thrown away (up to 64 KiB) has one `--body-timeout` from its start, and its
/// connection is closed to make room under `--max-connections`: four connections each
/// dripping a byte a second (each within the timeout) must not keep the server full.
/// Failed before: every byte restarted the timeout and such connections were never
/// evicted.
#[test]
fn a_dripped_body_does_not_hold_a_connection_past_its_deadline() {
    let server = Server::start(&[
        "--max-connections",
        "4",
        "--body-timeout",
        "2",
        "--header-timeout",
        "2",
        "--no-supervisor",
    ]);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // A byte each second for 8 s: each within --body-timeout, the whole past any
    // deadline a body should have (4 x the timeout).
    for _ in 0..8 {
        for s in &mut held {
            let _ = s.write_all(b"a");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

/// Under `--max-connections`, a connection throwing away a body already answered is
/// closed to make room, as an idle one is (before, only idle and lingering ones were).
#[test]
fn a_connection_discarding_a_body_makes_room_at_max_connections() {
    let server = Server::start(&[
        "--max-connections",
        "4",
        "--body-timeout",
        "60",
        "--no-supervisor",
    ]);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\na")
                .unwrap();
            s
        })
        .collect();
    // Their answers (404: no guarded path) come first: then they only throw their
    // bodies away.
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 404");
    }
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

/// Empty lines between requests (RFC 9112 §2.2 lets a server skip them) are not a
/// request: a `\r\n` every half second does not keep a connection past `--idle-timeout`
/// from its last request. Before, each one restarted the idle timeout.
#[test]
fn empty_lines_between_requests_do_not_keep_a_connection_open() {
    let server = Server::start(&["--idle-timeout", "2", "--no-supervisor"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404 "));
    // 5 s of empty lines, well past the 2 s idle timeout.
    for _ in 0..10 {
        let _ = s.write_all(b"\r\n");
        std::thread::sleep(Duration::from_millis(500));
    }
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection is still open: {other:?}"),
    }
}
