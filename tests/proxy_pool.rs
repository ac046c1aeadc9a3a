//! `jwtguard --upstream` on the event loop: the keep-alive pool of upstream connections,
//! what makes one unfit for reuse, and `100 Continue` only once a request is allowed.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Server, token};

/// A request as the upstream saw it: its connection, its request line, its body.
type Seen = (usize, String, Vec<u8>);

/// An upstream that counts its connections and records each request (its connection and
/// request line, and its body).
struct Counting {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Counting {
    fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (accepts.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let connection = count.fetch_add(1, Ordering::SeqCst);
                let record = record.clone();
                std::thread::spawn(move || serve(stream, connection, &record));
            }
        });
        Counting {
            addr,
            accepts,
            seen,
        }
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Answers each request with its path as the body; `/extra` with its answer and, in the
/// same write, a second answer nobody asked for (as an app does that took a request's
/// unread body for a request of its own).
fn serve(stream: TcpStream, connection: usize, record: &Mutex<Vec<Seen>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some(n) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = n.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        record
            .lock()
            .unwrap()
            .push((connection, line.trim_end().to_owned(), body));
        let answer = match path.as_str() {
            "/extra" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                         HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                .to_owned(),
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            ),
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn jwtguard(upstream: &Counting) -> Server {
    let url = format!("http://{}", upstream.addr);
    Server::start(&["--upstream", &url, "--upstream-timeout", "2"])
}

#[test]
fn one_upstream_connection_carries_the_requests_of_many_clients_in_turn() {
    let upstream = Counting::start();
    let server = jwtguard(&upstream);
    let token = token(&["--sub", "pool"]);
    // Each on a client connection of its own (Connection: close), one after the other.
    for i in 0..20 {
        let response = server.get_with_token(&format!("/n/{i}"), &token);
        assert_eq!(response.status, 200);
        assert_eq!(response.body, format!("/n/{i}"));
    }
    let mut connections: Vec<usize> = upstream.seen().iter().map(|s| s.0).collect();
    connections.dedup();
    assert_eq!(connections.len(), 1, "{:?}", upstream.seen());
    // Besides the one start-up's reachability check makes (and closes at once).
    assert_eq!(upstream.accepts(), 2);
}

#[test]
fn an_upstream_connection_with_bytes_after_its_answer_is_not_reused() {
    let upstream = Counting::start();
    let server = jwtguard(&upstream);
    let token = token(&["--sub", "desync"]);
    let first = server.get_with_token("/extra", &token);
    assert_eq!((first.status, first.body.as_str()), (200, "ok"));
    // The next request, of another client, gets its own answer, never the one left over.
    let next = server.get_with_token("/next", &token);
    assert_eq!((next.status, next.body.as_str()), (200, "/next"));
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(
        seen[0].0, seen[1].0,
        "reused after unasked-for bytes: {seen:?}"
    );
}

/// The status line of the next response on `stream`, and the rest of its head.
fn next_head(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed: {head}");
        head.push_str(&line);
        if line == "\r\n" {
            return head;
        }
    }
}

#[test]
fn continue_is_sent_only_once_the_token_is_checked() {
    let upstream = Counting::start();
    let server = jwtguard(&upstream);
    let token = token(&["--sub", "uploader"]);
    let expecting = |auth: &str| {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        write!(
            reader.get_mut(),
            "POST /up HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        .unwrap();
        reader
    };
    // No token: refused at once, without a 100 that would ask for the body.
    let mut refused = expecting("");
    let head = next_head(&mut refused);
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    // Allowed: 100 Continue, then the body goes up and the app's answer comes back.
    let mut allowed = expecting(&format!("Authorization: Bearer {token}\r\n"));
    let head = next_head(&mut allowed);
    assert!(head.starts_with("HTTP/1.1 100 Continue\r\n"), "{head}");
    allowed.get_mut().write_all(b"hello").unwrap();
    let head = next_head(&mut allowed);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let seen = upstream.seen();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed one reached the app: {seen:?}"
    );
    assert_eq!(seen[0].1, "POST /up HTTP/1.1");
    assert_eq!(seen[0].2, b"hello");
}
