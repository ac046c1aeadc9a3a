//! The load client of `tests/crash.sh` (a test tool, not an example of the library): keeps
//! keep-alive connections busy, one request in flight on each, and records every response
//! it receives whole, until the server is killed.
//!
//! `crash_client PORT CONNECTIONS SECONDS OUT`, with the tokens in `CRASH_VALID` and
//! `CRASH_FORGED`. One thread per connection sends `GET /api/protected` with, in turn, a
//! valid token, a forged one and none. It prints `ready` once every connection has its
//! first request out, and stops when every connection has ended (the server was killed) or
//! after SECONDS. OUT gets one JSON object:
//! `{"received": [[X-Request-Id, status], ...], "ends": [[epoch µs, how], ...],
//! "cut": N, "still_open": N, "unexpected": [head, ...]}`: `received` holds each response
//! whose head and `Content-Length` bytes of body all arrived, `cut` counts connections that
//! ended inside a response, `unexpected` heads without `X-Request-Id` or `Content-Length`.
//! A std-only thread per connection is fast enough to keep jwtguard's queue full: a python3
//! client tops out around 15,000 responses/s, a third of what the server answers.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct Connection {
    received: Vec<(String, u16)>,
    end: Option<(u64, String)>,
    cut: bool,
    unexpected: Vec<String>,
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (ASCII case-insensitive) in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// Sends and reads until the connection ends or `deadline` passes.
fn drive(
    mut stream: TcpStream,
    requests: &[Vec<u8>],
    first: usize,
    ready: &Barrier,
    deadline: Instant,
) -> Connection {
    let mut conn = Connection::default();
    let mut next = first;
    let sent = stream.write_all(&requests[next % requests.len()]);
    ready.wait();
    if let Err(err) = sent {
        conn.end = Some((epoch_us(), format!("send: {err}")));
        return conn;
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                conn.end = Some((epoch_us(), "eof".into()));
                break;
            }
            Ok(n) => n,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    break; // still open: reported as such
                }
                continue;
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => {
                conn.end = Some((epoch_us(), format!("read: {err}")));
                break;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        // One request in flight: at most one response in the buffer.
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let (Some(length), Some(id)) = (
            header(&head, "Content-Length").and_then(|v| v.parse::<usize>().ok()),
            header(&head, "X-Request-Id"),
        ) else {
            conn.unexpected.push(head.chars().take(200).collect());
            conn.end = Some((epoch_us(), "unexpected response".into()));
            break;
        };
        let total = end + 4 + length;
        if buf.len() < total {
            continue;
        }
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        conn.received.push((id.to_owned(), status));
        buf.drain(..total);
        if Instant::now() >= deadline {
            break;
        }
        next += 1;
        if let Err(err) = stream.write_all(&requests[next % requests.len()]) {
            conn.end = Some((epoch_us(), format!("send: {err}")));
            break;
        }
    }
    conn.cut = !buf.is_empty();
    conn
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, connections, seconds, out] = args.as_slice() else {
        return Err("usage: crash_client PORT CONNECTIONS SECONDS OUT".into());
    };
    let port: u16 = port.parse()?;
    let connections: usize = connections.parse()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds.parse()?);
    let valid = std::env::var("CRASH_VALID")?;
    let forged = std::env::var("CRASH_FORGED")?;
    let head = "GET /api/protected HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(vec![
        format!("{head}Authorization: Bearer {valid}\r\n\r\n").into_bytes(),
        format!("{head}Authorization: Bearer {forged}\r\n\r\n").into_bytes(),
        format!("{head}\r\n").into_bytes(),
    ]);

    let ready = Arc::new(Barrier::new(connections + 1));
    let mut threads = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        // Wakes a reader now and then to look at the deadline.
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let (requests, ready) = (requests.clone(), ready.clone());
        threads.push(std::thread::spawn(move || {
            drive(stream, &requests, i, &ready, deadline)
        }));
    }
    ready.wait();
    println!("ready");
    std::io::stdout().flush()?;

    let conns: Vec<Connection> = threads
        .into_iter()
        .map(|t| t.join().expect("a client thread panicked"))
        .collect();
    let received: Vec<_> = conns
        .iter()
        .flat_map(|c| c.received.iter().map(|(id, status)| (id, status)))
        .collect();
    let ends: Vec<_> = conns.iter().filter_map(|c| c.end.as_ref()).collect();
    let report = serde_json::json!({
        "received": received,
        "ends": ends,
        "cut": conns.iter().filter(|c| c.cut).count(),
        "still_open": conns.iter().filter(|c| c.end.is_none()).count(),
        "unexpected": conns.iter().flat_map(|c| &c.unexpected).take(5).collect::<Vec<_>>(),
    });
    std::fs::write(out, serde_json::to_vec(&report)?)?;
    Ok(())
}
