//! `serve`'s group commit, through the library, with a log sink that fills up: a request is
//! answered with its decision only when its event reached the sink, 503 otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jwtguard::audit::LogWriter;
use jwtguard::{Config, Guard, Secret, SecretSource};

/// Takes whole lines until `lines` are in, then fails. Records the lines and, per write
/// call, how many lines it was offered.
#[derive(Clone, Default)]
struct FillingSink {
    lines: Arc<Mutex<usize>>,
    got: Arc<Mutex<Vec<u8>>>,
    offered: Arc<Mutex<Vec<usize>>>,
}

impl Write for FillingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let newlines: Vec<usize> = (0..buf.len()).filter(|&i| buf[i] == b'\n').collect();
        self.offered.lock().unwrap().push(newlines.len());
        let mut lines = self.lines.lock().unwrap();
        if *lines == 0 {
            return Err(std::io::Error::other("no space left"));
        }
        let take = newlines.len().min(*lines);
        *lines -= take;
        let end = if take == newlines.len() {
            buf.len()
        } else {
            newlines[take - 1] + 1
        };
        self.got.lock().unwrap().extend_from_slice(&buf[..end]);
        Ok(end)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes each record's message as a line through a [`LogWriter`], as the binary does.
struct Logger(Mutex<LogWriter>);

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == jwtguard::audit::TARGET
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(self.0.lock().unwrap(), "{}", record.args());
        }
    }

    fn flush(&self) {}
}

#[test]
fn requests_whose_events_did_not_reach_the_sink_get_503() {
    const REQUESTS: usize = 5;
    const ROOM: usize = 2; // lines the sink takes before it is full
    let sink = FillingSink::default();
    *sink.lines.lock().unwrap() = ROOM;
    let writer = LogWriter::new(sink.clone(), "test sink");
    log::set_boxed_logger(Box::new(Logger(Mutex::new(writer.clone())))).unwrap();
    log::set_max_level(log::LevelFilter::Info);

    let secret = Secret::new([7; 32], SecretSource::Env);
    let token = jwtguard::mint(&secret, "alice", 60, None, None, Default::default());
    let guard = Guard::new(&Config {
        secret: Some(secret),
        ..Config::default()
    })
    .unwrap();
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let addr = server.server_addr().to_ip().unwrap();

    // All requests are queued before serve starts, so that it decides them together.
    let mut clients: Vec<TcpStream> = (0..REQUESTS)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(
                stream,
                "GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || jwtguard::serve(&server, &guard, Some(&writer), &stop))
    };
    let mut answers = Vec::new();
    for client in &mut clients {
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        let status: u16 = text[9..12].parse().unwrap();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Request-Id: "))
            .unwrap()
            .to_owned();
        answers.push((status, id));
    }
    stop.store(true, Ordering::SeqCst);
    server.unblock();
    assert_eq!(serving.join().unwrap().unwrap(), REQUESTS as u64);

    let logged = String::from_utf8(sink.got.lock().unwrap().clone()).unwrap();
    assert_eq!(logged.lines().count(), ROOM, "{logged}");
    for (status, id) in &answers {
        let in_log = logged.contains(&format!("\"http.request.id\":\"{id}\""));
        match status {
            200 => assert!(in_log, "{id} answered 200 without its event"),
            503 => assert!(!in_log, "{id} answered 503 with its event written"),
            other => panic!("{id}: status {other}"),
        }
    }
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(served, ROOM);
    // The requests were decided together: one write carried all their events.
    let offered = sink.offered.lock().unwrap();
    assert_eq!(
        offered.first(),
        Some(&REQUESTS),
        "writes offered {offered:?}"
    );
}
