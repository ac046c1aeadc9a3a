//! Proxy mode's keep-alive pool takes an upstream connection back only when it is done
//! with both ways: no byte left in its socket after the answer (one that ended exactly at
//! a read's end left the rest unseen), and the whole request body sent up (an app that
//! answers early and skips the rest of a body would read the next request as its end).
//! Found by an independent review; both failed before the fix (an answer reached another
//! client; the next request was swallowed).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Server, token};

/// What `/early`'s discard took: how many bytes, and whether the next request's line.
type Seen = Mutex<Vec<(usize, bool)>>;

/// jwtguard's read of an upstream socket (`READ_CHUNK`, the loop's scratch buffer).
const READ: usize = 16 * 1024;

/// Reads a request head; its path and `Content-Length`.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, usize)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split(' ').nth(1)?.to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        if header == "\r\n" {
            return Some((path, length));
        }
        if let Some(n) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = n.trim().parse().ok()?;
        }
    }
}

/// A listener on loopback whose connections advertise a small receive window: what
/// jwtguard's side of them holds stays near its first send buffer, the same from one
/// connection to the next.
fn small_window_listener() -> TcpListener {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
        sockopt,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    listen(&fd, Backlog::new(16).unwrap()).unwrap();
    TcpListener::from(fd)
}

/// An upstream run by `serve`, one thread a connection.
fn upstream(serve: fn(TcpStream, &Seen)) -> (SocketAddr, Arc<Seen>) {
    let listener = small_window_listener();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let record = record.clone();
            std::thread::spawn(move || serve(stream, &record));
        }
    });
    (addr, seen)
}

/// `/first` is answered with exactly one jwtguard read's worth of bytes and, in the same
/// write, a second answer nobody asked for; anything else with its path.
fn boundary(stream: TcpStream, _: &Seen) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some((path, _)) = read_head(&mut reader) {
        let answer = if path == "/first" {
            let start = "HTTP/1.1 200 OK\r\nContent-Length: ";
            let n = READ - start.len() - "00000\r\n\r\n".len();
            let mut first = format!("{start}{n:05}\r\n\r\n{}", "a".repeat(n));
            assert_eq!(first.len(), READ);
            first.push_str("HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nalice's-secret!!!");
            first
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            )
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn bytes_left_in_the_socket_after_an_answer_that_ends_at_a_read_boundary_reach_no_other_client() {
    let (addr, _) = upstream(boundary);
    let url = format!("http://{addr}");
    let server = Server::start(&["--upstream", &url, "--upstream-timeout", "2"]);
    let token = token(&["--sub", "alice"]);
    let mut leaked = 0;
    for _ in 0..5 {
        let first = server.get_with_token("/first", &token);
        assert_eq!(first.status, 200);
        let second = server.get_with_token("/second", &token);
        leaked += usize::from(second.body.contains("alice's-secret"));
    }
    assert_eq!(leaked, 0, "another client got the left-over answer");
}

/// `/early` is answered at once, before its body is read; then its body is discarded (as
/// Go's net/http, Node and h11 servers do to keep the connection), and what the discard
/// took recorded: how many bytes, and whether the next request's line was among them.
fn early(stream: TcpStream, record: &Seen) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some((path, length)) = read_head(&mut reader) {
        if path != "/early" {
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            );
            let _ = writer.write_all(answer.as_bytes());
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            continue;
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly");
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 65536];
        while got.len() < length {
            let want = (length - got.len()).min(buf.len());
            match reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let swallowed = got.windows(11).any(|w| w == b"GET /second");
        record.lock().unwrap().push((got.len(), swallowed));
        return;
    }
}

/// POSTs `length` bytes to `/early` and, once its answer came on a kept connection, sends
/// `GET /second` on it; what the app's discard took.
fn attempt(server: &Server, token: &str, seen: &Seen, length: usize) -> (usize, bool) {
    let before = seen.lock().unwrap().len();
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST /early HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
    );
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![b'B'; length]);
    });
    let mut reader = BufReader::new(stream);
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !answer.windows(5).any(|w| w == b"early") {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    if answer.windows(5).any(|w| w == b"early") && sending.join().is_ok() {
        let _ = write!(
            reader.get_mut(),
            "GET /second HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    let seen = seen.lock().unwrap();
    seen.get(before).copied().unwrap_or((0, false))
}

#[test]
fn an_early_answer_with_body_bytes_still_unsent_does_not_return_the_connection_to_the_pool() {
    let (addr, seen) = upstream(early);
    let url = format!("http://{addr}");
    let server = Server::start(&["--upstream", &url, "--upstream-timeout", "5"]);
    let token = token(&["--sub", "uploader"]);
    // How much of a body the sockets between jwtguard and the app hold (the small window
    // keeps it steady): sent with a body far larger, what the app gets once
    // jwtguard stops (at the early answer). A body a little longer is all in jwtguard's
    // hands at the answer, its rest unsent.
    let mut swallowed = Vec::new();
    let (held, _) = attempt(&server, &token, &seen, 8_000_000);
    assert!(held > 0);
    for extra in [4_000, 14_000, 24_000, 34_000, 44_000, 54_000] {
        let (got, next) = attempt(&server, &token, &seen, held + extra);
        if next {
            swallowed.push((held + extra, got));
        }
    }
    assert!(
        swallowed.is_empty(),
        "the next request went up on a connection whose body was cut short: {swallowed:?}"
    );
}
