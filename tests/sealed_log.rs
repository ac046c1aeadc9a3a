//! The sealed log with the real binary: crash consistency under load, several processes
//! sealing into one log, and what the key files and the log show. (tests/tamper.sh
//! tampers with a real log; src/record/verify/tests.rs has the byte-by-byte and forward-security tests.)

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::{Connection, SECRET, Server, TempDir, run, token};

/// `jwtguard seal-init KEY`: the verification key it prints.
fn seal_init(key: &Path) -> String {
    let out = run(&["seal-init", key.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    stdout.trim_end().to_owned()
}

/// `jwtguard verify-log --key VK FILES`: exit code and report.
fn verify_log(vk: &str, files: &[&Path]) -> (i32, String) {
    let mut args = vec!["verify-log", "--key", vk];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = run(&args, &[]);
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// `serve --log-file LOG --seal-key KEY`, in a directory of its own.
/// A sealed jwtguard under its supervisor (both write to the log, each with its own
/// open key file).
fn sealed_server(log: &Path, key: &Path) -> Server {
    sealed_server_with(log, key, &[])
}

fn sealed_server_with(log: &Path, key: &Path, extra: &[&str]) -> Server {
    let mut args = extra.to_vec();
    args.extend([
        "--log-file",
        log.to_str().unwrap(),
        "--seal-key",
        key.to_str().unwrap(),
    ]);
    Server::spawn(
        TempDir::new(),
        &args,
        &[("JWTGUARD_SECRET", SECRET)],
        Stdio::null(),
    )
}

fn whole_lines(path: &Path) -> usize {
    std::fs::read(path)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Sends requests on a keep-alive connection until `stop` or the connection fails,
/// counting the answers that come back whole in `answered`.
fn hammer(addr: SocketAddr, token: &str, stop: &AtomicBool, answered: &AtomicU64) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if stream.write_all(request.as_bytes()).is_err() {
            break;
        }
        // Read one whole answer: the head, then Content-Length bytes.
        let whole = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    buf.drain(..end + 4 + length);
                    break true;
                }
            }
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if !whole {
            break;
        }
        answered.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_sigkill_under_load_leaves_a_log_that_verifies_to_its_last_whole_line() {
    let dir = TempDir::new();
    let (key, log) = (dir.path("seal.key"), dir.path("security.log"));
    let vk = seal_init(&key);
    let valid = token(&["--sub", "alice"]);
    // One process: the one killed is the one writing.
    let server = sealed_server_with(&log, &key, &["--no-supervisor"]);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, answered, valid, addr) =
                (stop.clone(), answered.clone(), valid.clone(), server.addr);
            std::thread::spawn(move || hammer(addr, &valid, &stop, &answered))
        })
        .collect();
    // Killed while 16 connections keep it busy (batches of events decided, not written).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while answered.load(Ordering::Relaxed) < 2000 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} answers in 20 s",
            answered.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    drop(server);

    let lines = whole_lines(&log);
    let (code, report) = verify_log(&vk, &[&log]);
    // The lines before the kill verify; the log says it ends without a shutdown, or, if
    // the kill came inside the write, that its last line is torn.
    let verified = format!("{lines} lines in 1 file, sequences 1 to {lines},");
    match code {
        0 => assert!(
            report.starts_with(&format!("intact: {verified}"))
                && report.contains("no shutdown at the end"),
            "{report}"
        ),
        1 => assert!(
            report.contains("the last line is torn")
                && report.contains(&format!("verified before it: {verified}")),
            "{report}"
        ),
        _ => panic!("exit {code}: {report}"),
    }
    assert!(lines > 2000, "{lines} lines: {report}");

    // A restart goes on with the chain (cutting a torn line, if any).
    let mut server = sealed_server_with(&log, &key, &["--no-supervisor"]);
    assert_eq!(server.get("/api/x", &[]).status, 401);
    assert!(server.terminate().success());
    let (code, report) = verify_log(&vk, &[&log]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("the log ends with a shutdown"), "{report}");
    assert!(report.contains("2 start-ups, 1 shutdown"), "{report}");
}

#[test]
fn two_server_processes_seal_into_one_log() {
    // As when a worker is replaced: both append to the same file with group commit.
    let dir = TempDir::new();
    let (key, log) = (dir.path("seal.key"), dir.path("security.log"));
    let vk = seal_init(&key);
    let valid = token(&["--sub", "alice"]);
    let mut servers = [sealed_server(&log, &key), sealed_server(&log, &key)];
    std::thread::scope(|s| {
        for server in &servers {
            for _ in 0..4 {
                let (addr, valid) = (server.addr, &valid);
                s.spawn(move || {
                    let mut connection = Connection::open(addr);
                    for _ in 0..150 {
                        let head = format!(
                            "GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}"
                        );
                        assert_eq!(connection.send(&head, false).status, 200);
                    }
                });
            }
        }
    });
    for server in &mut servers {
        assert!(server.terminate().success());
    }
    let (code, report) = verify_log(&vk, &[&log]);
    assert_eq!(code, 0, "{report}");
    // Two supervisors and their two workers: four writers, each sealing its start; the
    // workers seal their shutdown (the key file moves on then, for all).
    assert!(report.contains("4 start-ups, 2 shutdowns"), "{report}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("\"event.action\":\"authorize\"").count(), 1200);
    assert!(
        report.starts_with(&format!("intact: {} lines", whole_lines(&log))),
        "{report}"
    );
    for line in text.lines() {
        support::event(line);
    }
}

#[test]
fn the_keys_stay_out_of_the_log_and_a_bad_key_file_stops_the_start() {
    let dir = TempDir::new();
    let (key, log) = (dir.path("seal.key"), dir.path("security.log"));
    let vk = seal_init(&key);
    let mut server = sealed_server(&log, &key);
    let on_disk = std::fs::read_to_string(&key).unwrap();
    assert_eq!(server.get("/api/x", &[]).status, 401);
    assert!(server.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let key_hex = on_disk
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .unwrap();
    assert!(!text.contains(key_hex) && !text.contains(&vk) && !text.contains(SECRET));
    // The key file moved on: the key of the run is gone from it.
    let after = std::fs::read_to_string(&key).unwrap();
    assert!(!after.contains(key_hex), "{after}");

    // No key file, or not one: no start, exit 1, nothing logged.
    for bad in [dir.path("missing.key"), log.clone()] {
        let out = run(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-file",
                dir.path("other.log").to_str().unwrap(),
                "--seal-key",
                bad.to_str().unwrap(),
            ],
            &[("JWTGUARD_SECRET", SECRET)],
        );
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot use the sealing key file"),
            "{stderr}"
        );
    }
    // seal-init never overwrites.
    let out = run(&["seal-init", key.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// Appends to `log` a copy of its last seal line claiming `epoch`, with the next sequence
/// number and a tag of zeros: what someone who can write the log but not read the key can
/// forge. Returns the forged line's number in the file.
fn append_forged_seal(log: &Path, epoch: u64) -> usize {
    let text = std::fs::read_to_string(log).unwrap();
    let last: serde_json::Value = support::event(text.lines().last().unwrap());
    let sequence = last["event.sequence"].as_u64().unwrap();
    let seal = text
        .lines()
        .rfind(|l| l.contains("\"event.action\":\"seal\""))
        .unwrap();
    let fields: serde_json::Value = support::event(seal);
    let (old_epoch, old_sequence, old_hash) = (
        fields["jwtguard.seal.epoch"].as_u64().unwrap(),
        fields["event.sequence"].as_u64().unwrap(),
        fields["event.hash"].as_str().unwrap(),
    );
    let forged = seal
        .replace(
            &format!("\"jwtguard.seal.epoch\":{old_epoch},"),
            &format!("\"jwtguard.seal.epoch\":{epoch},"),
        )
        .replace(
            &format!("\"event.sequence\":{old_sequence},"),
            &format!("\"event.sequence\":{},", sequence + 1),
        )
        .replace(old_hash, &"0".repeat(32));
    assert!(forged.contains(&format!("\"jwtguard.seal.epoch\":{epoch},")));
    let mut file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    writeln!(file, "{forged}").unwrap();
    text.lines().count() + 1
}

/// The epoch the key file is at.
fn key_file_epoch(key: &Path) -> u64 {
    let text = std::fs::read_to_string(key).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("epoch "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_forged_seal_line_is_recorded_and_never_moves_the_epoch() {
    // 2^64 - 1 made the writer derive keys for ever under the chain's lock; 2^27 - 1
    // made it derive for most of a minute and then move the key file to that epoch.
    for epoch in [u64::MAX, (1 << 27) - 1] {
        // Appended while jwtguard runs (alone, and under its supervisor, which writes to
        // the log too), and while it is stopped (then found at start-up).
        for (while_running, args) in [
            (true, &["--no-supervisor"][..]),
            (true, &[][..]),
            (false, &["--no-supervisor"][..]),
        ] {
            let case = format!("epoch {epoch}, while running {while_running}, {args:?}");
            let dir = TempDir::new();
            let (key, log) = (dir.path("seal.key"), dir.path("security.log"));
            let vk = seal_init(&key);
            let valid = token(&["--sub", "alice"]);
            let mut server = sealed_server_with(&log, &key, args);
            assert_eq!(server.get_with_token("/api/x", &valid).status, 200);
            if !while_running {
                assert!(server.terminate().success());
            }
            let forged_at = append_forged_seal(&log, epoch);
            if !while_running {
                server = sealed_server_with(&log, &key, args);
            }
            // It keeps answering, promptly, and logging.
            for _ in 0..2 {
                let start = std::time::Instant::now();
                assert_eq!(server.get("/healthz", &[]).status, 200, "{case}");
                assert_eq!(server.get_with_token("/api/x", &valid).status, 200);
                assert!(start.elapsed() < Duration::from_secs(2), "{case}");
            }
            assert!(key_file_epoch(&key) < 10, "{case}: the key file moved on");
            let start = std::time::Instant::now();
            assert!(server.terminate().success(), "{case}");
            assert!(start.elapsed() < Duration::from_secs(2), "{case}");
            assert!(key_file_epoch(&key) < 10, "{case}: the key file moved on");

            // One tampering event for the one forged line, naming where the chain stopped.
            let events = support::read_json_lines(&log);
            let tampered: Vec<_> = events
                .iter()
                .filter(|e| e["event.reason"] == "log_tampered")
                .collect();
            assert_eq!(tampered.len(), 1, "{case}: {events:#?}");
            assert_eq!(tampered[0]["event.outcome"], "failure", "{case}");
            assert_eq!(
                tampered[0]["jwtguard.seal.verified"].as_u64(),
                Some(events[forged_at - 2]["event.sequence"].as_u64().unwrap()),
                "{case}"
            );
            // verify-log finds the forged line, at once.
            let start = std::time::Instant::now();
            let (code, report) = verify_log(&vk, &[&log]);
            assert!(start.elapsed() < Duration::from_secs(2), "{case}");
            assert_eq!(code, 1, "{case}: {report}");
            assert!(
                report.starts_with(&format!("TAMPERED: {} line {forged_at} ", log.display())),
                "{case}: {report}"
            );
        }
    }
}
