//! When the security log cannot be written, protected requests are not served.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{SECRET, Server, TempDir, token};

#[test]
fn unwritable_log_means_503_and_a_report_on_stderr() {
    let mut server = Server::spawn(
        TempDir::new(),
        &["--log-file", "/dev/full"],
        &[("JWTGUARD_SECRET", SECRET)],
        Stdio::piped(),
    );
    let response = server.get_with_token("/api/x", &token(&["--sub", "a"]));
    assert_eq!(response.status, 503);
    assert_eq!(response.header("Retry-After"), Some("5"));
    assert!(response.header("WWW-Authenticate").is_none());
    assert_eq!(
        server.get("/api/x", &[]).status,
        503,
        "refusals need their event too"
    );
    // The server keeps running, and its health check says the log is failing.
    let health = server.get("/healthz", &[]);
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["log"], "failing");
    let stderr = server.stderr_after_kill();
    assert!(
        stderr.contains("cannot write the security log to /dev/full"),
        "{stderr}"
    );
}

#[test]
fn serving_resumes_when_the_log_is_writable_again() {
    let dir = TempDir::new();
    let fifo = dir.path("security.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The server's open blocks until a reader exists: open ours on a thread first.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || BufReader::new(std::fs::File::open(fifo).unwrap()))
    };
    let server = Server::spawn(
        TempDir::new(),
        &["--log-file", fifo.to_str().unwrap()],
        &[("JWTGUARD_SECRET", SECRET)],
        Stdio::null(),
    );
    let mut reader = reader.join().unwrap();
    let valid = token(&["--sub", "a"]);
    assert_eq!(server.get_with_token("/api/x", &valid).status, 200);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap(); // startup
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"authorize\""), "{line}");

    drop(reader); // no reader: writes fail with EPIPE
    assert_eq!(server.get_with_token("/api/x", &valid).status, 503);

    let mut reader = BufReader::new(std::fs::File::open(&fifo).unwrap());
    let response = server.get_with_token("/api/x", &valid);
    assert_eq!(response.status, 200);
    line.clear();
    reader.read_line(&mut line).unwrap();
    let event = support::event(&line);
    assert_eq!(
        event["http.request.id"],
        response.header("X-Request-Id").unwrap()
    );
}
