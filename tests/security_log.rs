//! The security log: one line per decision, the right fields, never the token, no injection.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use support::{Connection, SECRET, Server, TempDir, forge, token};

#[test]
fn one_json_line_per_decision_with_ecs_fields() {
    let server = Server::start(&[]);
    let valid = token(&["--sub", "alice"]);
    let ok = server.get(
        "/api/protected?secret=query",
        &[
            &format!("Authorization: Bearer {valid}"),
            "User-Agent: test-agent/1.0",
        ],
    );
    assert_eq!(ok.status, 200);
    let denied = server.get("/api/other", &[]);
    assert_eq!(denied.status, 401);
    assert_eq!(server.get("/healthz", &[]).status, 200);
    assert_eq!(server.get("/nothing", &[]).status, 404);

    let events = server.requests_logged();
    assert_eq!(
        events.len(),
        2,
        "only protected paths are security events: {events:?}"
    );
    let e = &events[0];
    assert_eq!(e["log.level"], "info");
    assert_eq!(e["event.outcome"], "success");
    assert_eq!(e["event.reason"], "ok");
    assert_eq!(e["source.ip"], "127.0.0.1");
    assert_eq!(e["http.request.method"], "GET");
    assert_eq!(e["url.path"], "/api/protected");
    assert_eq!(e["http.response.status_code"], 200);
    assert_eq!(e["user_agent.original"], "test-agent/1.0");
    assert_eq!(e["user.id"], "alice");
    assert_eq!(e["http.request.id"], ok.header("X-Request-Id").unwrap());
    let fingerprint = e["jwtguard.token.fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16);
    assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    let timestamp = e["@timestamp"].as_str().unwrap();
    assert!(
        timestamp.len() == 24 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{timestamp}"
    );

    let e = &events[1];
    assert_eq!(e["log.level"], "warn");
    assert_eq!(e["event.outcome"], "failure");
    assert_eq!(e["event.reason"], "missing_token");
    assert_eq!(e["http.response.status_code"], 401);
    assert!(e.get("user.id").is_none() && e.get("jwtguard.token.fingerprint").is_none());

    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(!log.contains(&valid), "the token is never logged");
    assert!(
        !log.contains(valid.split('.').nth(2).unwrap()),
        "nor its signature"
    );
    assert!(!log.contains(SECRET), "nor the secret");
    assert!(!log.contains("secret=query"), "nor the query string");
}

#[test]
fn under_concurrent_load_every_answer_follows_its_event() {
    // Connections in parallel, so that the server decides several waiting requests
    // together: each response may only leave once its event is in the log.
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 40;
    // Half of them forged, from one address: not what the limiter is for here.
    let server = Server::start(&["--max-failures", "0"]);
    let valid = token(&["--sub", "alice"]);
    let forged = forge(&valid);
    let ids: Vec<Vec<(String, u16)>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (server, valid, forged) = (&server, &valid, &forged);
                scope.spawn(move || {
                    let mut conn = Connection::open(server.addr);
                    let mut seen = Vec::new();
                    for i in 0..REQUESTS {
                        let bearer = if (c + i) % 3 == 0 { forged } else { valid };
                        let response = conn.send(
                            &format!(
                                "GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}"
                            ),
                            false,
                        );
                        let id = response.header("X-Request-Id").unwrap().to_owned();
                        let log = std::fs::read_to_string(server.log_path()).unwrap();
                        assert!(
                            log.contains(&format!("\"http.request.id\":\"{id}\"")),
                            "request {id} was answered {} before its event was written",
                            response.status
                        );
                        seen.push((id, response.status));
                    }
                    seen
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    // One event per request, each with the status its client got.
    let events = server.requests_logged();
    assert_eq!(events.len(), CLIENTS * REQUESTS);
    for (id, status) in ids.iter().flatten() {
        let matching: Vec<_> = events
            .iter()
            .filter(|e| e["http.request.id"] == id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "{id}");
        assert_eq!(matching[0]["http.response.status_code"], *status, "{id}");
    }
}

#[test]
fn forged_tokens_get_no_user_but_expired_genuine_ones_do() {
    let server = Server::start(&[]);
    let valid = token(&["--sub", "mallory"]);
    let forged = support::forge(&valid);
    let expired = token(&["--sub", "bob", "--claim", "exp=1000"]);
    server.get_with_token("/api/x", &forged);
    server.get_with_token("/api/x", &expired);
    let events = server.requests_logged();
    assert_eq!(events[0]["event.reason"], "bad_signature");
    assert!(
        events[0].get("user.id").is_none(),
        "an unverified sub is not logged as the user"
    );
    assert_eq!(events[1]["event.reason"], "expired");
    assert_eq!(events[1]["user.id"], "bob");
    assert_ne!(
        events[0]["jwtguard.token.fingerprint"],
        events[1]["jwtguard.token.fingerprint"]
    );
}

#[test]
fn hostile_input_cannot_split_or_forge_lines() {
    let server = Server::start(&["--log-format", "text"]);
    // tiny_http splits lines at CRLF only, so the hostile bytes come as control
    // characters, quotes and non-ASCII that survive its parser. jwtguard refuses control
    // characters in a header (400, bad_framing), and still logs the request, escaped.
    let agent = "User-Agent: x\" event.outcome=success user.id=\"root\u{1b}[2J\u{7f}";
    let path = "/api/%0d%0a\"injected\"";
    let response = server.raw(&format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\n{agent}\r\nAuthorization: Bearer a.b.c"
    ));
    assert_eq!(response.status, 400);
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event.action=authorize"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    assert!(
        line.bytes().all(|b| (b' '..=b'~').contains(&b)),
        "printable ASCII only: {line:?}"
    );
    let fields = parse_text_fields(line);
    let outcomes: Vec<_> = fields
        .iter()
        .filter(|(k, _)| k == "event.outcome")
        .collect();
    assert_eq!(outcomes.len(), 1, "{line}");
    assert_eq!(outcomes[0].1, "failure");
    assert!(line.contains(" event.reason=bad_framing "), "{line}");
    assert!(
        fields.iter().all(|(k, _)| k != "user.id"),
        "no forged field: {line}"
    );
    assert!(
        line.contains(
            r#"user_agent.original="x\" event.outcome=success user.id=\"root\u{1b}[2J\u{7f}""#
        ),
        "{line}"
    );
}

/// Splits a text-format line into (key, value) pairs,
/// reading a quoted value up to its closing unescaped quote, as a log parser would.
fn parse_text_fields(line: &str) -> Vec<(String, String)> {
    let mut rest = line;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut end = 0;
            let bytes = quoted.as_bytes();
            while bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            (quoted[..end].to_owned(), &quoted[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        fields.push((key.to_owned(), value));
        rest = tail.strip_prefix(' ').unwrap_or(tail);
    }
    fields
}

#[test]
fn text_format_has_fields_in_fixed_order() {
    let server = Server::start(&["--log-format", "text"]);
    server.get_with_token("/api/x", &token(&["--sub", "alice"]));
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("event.action=authorize"))
        .unwrap();
    let fields = parse_text_fields(line);
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "@timestamp",
            "log.level",
            "event.action",
            "event.outcome",
            "event.reason",
            "source.ip",
            "http.response.status_code",
            "http.request.id",
            "ecs.version",
            "event.kind",
            "event.category",
            "event.type",
            "jwtguard.token.fingerprint",
            "http.request.method",
            "url.path",
            "user.id",
            "jwtguard.token.alg",
            "message",
        ],
        "{line}"
    );
    assert_eq!(fields[1].1, "info", "{line}");
}

#[test]
fn log_file_is_private_and_appended() {
    let server = Server::start(&[]);
    server.get("/api/x", &[]);
    let mode = std::fs::metadata(server.log_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(server);

    let dir = TempDir::new();
    let log = dir.path("security.log");
    std::fs::write(&log, "earlier line\n").unwrap();
    let log_arg = log.to_str().unwrap();
    let server = Server::spawn(
        TempDir::new(),
        &["--log-file", log_arg],
        &[("JWTGUARD_SECRET", SECRET)],
        Stdio::null(),
    );
    server.get("/api/x", &[]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("earlier line\n"),
        "appended, not truncated"
    );
    assert!(text.contains("\"missing_token\""));
}

#[test]
fn a_signal_right_after_the_address_is_printed_still_shuts_down_cleanly() {
    for _ in 0..5 {
        let mut server = Server::start(&[]);
        let status = server.terminate();
        assert!(status.success(), "{status:?}");
        let actions: Vec<String> = server
            .log_json()
            .iter()
            .map(|e| e["event.action"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(actions.last().map(String::as_str), Some("shutdown"));
    }
}

#[test]
fn startup_and_shutdown_are_events_and_sigterm_or_sigint_exit_zero() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start(&[]);
        server.get("/api/x", &[]);
        let status = server.signal(signal);
        assert!(status.success(), "SIG{signal}: {status:?}");
        let events = server.log_json();
        let actions: Vec<&str> = events
            .iter()
            .map(|e| e["event.action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["startup", "authorize", "shutdown"], "SIG{signal}");
        let startup = &events[0];
        assert_eq!(startup["url.full"], format!("http://{}", server.addr));
        assert_eq!(startup["jwtguard.config.protect"], "/api/");
        assert_eq!(
            startup["jwtguard.config.secret"],
            "env:JWTGUARD_SECRET (40 bytes)"
        );
        // The worker, under jwtguard's supervisor (the process started).
        assert_eq!(startup["process.parent.pid"], server.pid());
        assert_eq!(startup["service.version"], env!("CARGO_PKG_VERSION"));
        assert!(!startup.to_string().contains(SECRET));
        let shutdown = &events[2];
        assert_eq!(
            shutdown["event.reason"],
            format!("SIG{signal}"),
            "the cause is named"
        );
        assert_eq!(shutdown["jwtguard.requests"], 1);
    }
}

#[test]
fn events_go_to_stderr_without_a_log_file() {
    let mut server = Server::spawn(
        TempDir::new(),
        &[],
        &[("JWTGUARD_SECRET", SECRET)],
        Stdio::piped(),
    );
    server.get("/api/x", &[]);
    let stderr = server.stderr_after_kill();
    let reasons: Vec<String> = stderr
        .lines()
        .map(support::event)
        .filter(|e| e["event.action"] == "authorize")
        .map(|e| e["event.reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, ["missing_token"]);
}

#[test]
fn rust_log_cannot_silence_security_events() {
    for rust_log in [
        "warn",
        "off",
        "",
        "garbage==",
        "tiny_http=debug",
        "security=off",
        // env_logger's message filter: it drops records in log(), after enabled().
        "info/zzz",
        "/zzz",
        "security=info/zzz",
        "trace/^$",
    ] {
        let dir = TempDir::new();
        let log = dir.path("security.log");
        let server = Server::spawn(
            TempDir::new(),
            &["--log-file", log.to_str().unwrap()],
            &[("JWTGUARD_SECRET", SECRET), ("RUST_LOG", rust_log)],
            Stdio::null(),
        );
        assert_eq!(
            server
                .get_with_token("/api/x", &token(&["--sub", "a"]))
                .status,
            200
        );
        server.get("/api/x", &[]);
        let reasons: Vec<_> = support::read_json_lines(&log)
            .iter()
            .filter(|e| e["event.action"] == "authorize")
            .map(|e| e["event.reason"].clone())
            .collect();
        assert_eq!(reasons, ["ok", "missing_token"], "RUST_LOG={rust_log:?}");
    }
}

#[test]
fn the_shutdown_event_counts_the_users_requests_not_health_checks() {
    // Serve mode (jwtguard's event loop) and proxy mode (its own loop).
    for extra in [&[][..], &["--upstream", "http://127.0.0.1:1"]] {
        let mut server = Server::start(extra);
        for _ in 0..5 {
            assert_eq!(server.get("/healthz", &[]).status, 200);
        }
        assert_eq!(server.get("/api/protected", &[]).status, 401);
        assert!(server.signal("TERM").success());
        let events = server.log_json();
        let shutdown = events.last().unwrap();
        assert_eq!(shutdown["event.action"], "shutdown", "{extra:?}");
        assert_eq!(shutdown["jwtguard.requests"], 1, "{extra:?}: {shutdown}");
    }
}
