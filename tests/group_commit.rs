//! The server's group commit, through the library, with a log that fills up: the events
//! of the requests already waiting go out in one write, and a request is answered with its
//! decision only when its event reached the log, 503 otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jwtguard::{Cause, Config, LogFormat, Secret, SecretSource, SecurityLog, Server};

/// Takes whole lines until `room` lines are in, then fails. Records, per write call, how
/// many lines it was offered. Its first write (the start-up event) waits for `go`.
struct FillingLog {
    room: usize,
    offered: Arc<Mutex<Vec<usize>>>,
    started: Option<mpsc::Sender<()>>,
    go: Option<mpsc::Receiver<()>>,
}

impl Write for FillingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let (Some(started), Some(go)) = (self.started.take(), self.go.take()) {
            started.send(()).unwrap();
            go.recv().unwrap();
            return Ok(buf.len());
        }
        let ends: Vec<usize> = (0..buf.len()).filter(|&i| buf[i] == b'\n').collect();
        self.offered.lock().unwrap().push(ends.len());
        let take = ends.len().min(self.room);
        if take == 0 {
            return Err(std::io::Error::other("no space left"));
        }
        self.room -= take;
        Ok(ends[take - 1] + 1)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many established connections to local `port` still have unread bytes in their
/// receive queue, and how many there are, from the kernel's table.
fn server_side_queues(port: u16) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let (mut unread, mut connections) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(fields[1].rsplit(':').next().unwrap(), 16).unwrap();
        let established = fields[3] == "01";
        if local_port == port && established {
            connections += 1;
            let rx = fields[4].split(':').nth(1).unwrap();
            if u64::from_str_radix(rx, 16).unwrap() > 0 {
                unread += 1;
            }
        }
    }
    (unread, connections)
}

#[test]
fn requests_whose_events_did_not_reach_the_log_get_503() {
    const REQUESTS: usize = 5;
    const ROOM: usize = 2; // lines the log takes before it is full
    let offered = Arc::new(Mutex::new(Vec::new()));
    let (started, startup_write) = mpsc::channel();
    let (go, wait) = mpsc::channel();
    let log = FillingLog {
        room: ROOM,
        offered: offered.clone(),
        started: Some(started),
        go: Some(wait),
    };
    SecurityLog::writer(log, "filling log", LogFormat::Json)
        .install()
        .unwrap();

    let secret = Secret::new([7; 32], SecretSource::Env);
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    claims.insert("exp".into(), u32::MAX.into());
    let token = jwtguard::mint(&secret, &claims);
    let server = Server::bind(&Config {
        listen: "127.0.0.1:0".into(),
        secret: Some(secret),
        ..Config::default()
    })
    .unwrap();
    let addr = server.addr();
    let stopper = server.stopper();
    let running = std::thread::spawn(move || server.run());
    // The serving thread is held in its start-up write; the requests queue up meanwhile.
    startup_write.recv().unwrap();
    let mut clients: Vec<TcpStream> = (0..REQUESTS)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                stream,
                "GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            stream
        })
        .collect();
    // Ready when every request is in its connection's receive queue: the serving loop,
    // once it runs, finds them all ready in one turn.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_side_queues(addr.port()) != (REQUESTS, REQUESTS) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            server_side_queues(addr.port())
        );
        std::thread::yield_now();
    }
    go.send(()).unwrap();

    let mut statuses: Vec<String> = clients
        .iter_mut()
        .map(|stream| {
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response.lines().next().unwrap().to_owned()
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 503 Service Unavailable",
            "HTTP/1.1 503 Service Unavailable",
            "HTTP/1.1 503 Service Unavailable",
        ]
    );
    stopper.stop(Cause::Signal("test"));
    running.join().unwrap().unwrap();
    // The five events were offered in one write; then the shutdown event, refused.
    assert_eq!(offered.lock().unwrap()[..2], [REQUESTS, 3]);
}
