//! `jwtguard report` on logs the real server wrote under known requests (JSON and text,
//! sealed or not, a rotation gzip-compressed), its figures read back from the text and
//! from the HTML page, which Python's html.parser checks (tests/report_html.py); and on a
//! malicious log, which breaks neither.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{Server, TempDir, forge, run, token};

/// `GET /api/x` as `client` (through the trusted proxy 127.0.0.1) with `auth`, if any.
fn from(server: &Server, client: &str, auth: Option<&str>, agent: &str) -> u16 {
    let xff = format!("X-Forwarded-For: {client}");
    let ua = format!("User-Agent: {agent}");
    let bearer = auth.map(|t| format!("Authorization: Bearer {t}"));
    let mut headers = vec![xff.as_str(), ua.as_str()];
    headers.extend(bearer.as_deref());
    server.get("/api/x", &headers).status
}

/// `jwtguard report ARGS`: its stdout; panics unless it exits 0.
fn report(args: &[&str]) -> String {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    let out = run(&all, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `text` has a line of exactly these words.
fn has_row(text: &str, words: &[&str]) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == words)
}

/// Checks `page` with tests/report_html.py against `expected` (caption: rows).
fn check_html(page: &Path, expected: serde_json::Value, dir: &TempDir) {
    let expected_path = dir.path("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/report_html.py"))
        .args([page, &expected_path])
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 (Debian's python3) runs tests/report_html.py");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(page).unwrap()
    );
}

const EVIL_USER: &str = "<img src=x onerror=alert(1)>";

#[test]
fn the_report_adds_up_what_the_server_logged() {
    let dir = TempDir::new();
    // A: JSON, not sealed, the limiter at 2, clients named by a trusted proxy.
    let mut a = Server::start(&[
        "--no-supervisor",
        "--max-failures",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    let alice = token(&["--sub", "alice"]);
    let evil = token(&["--sub", EVIL_USER]);
    let ua = "<script>alert(1)</script>";
    for _ in 0..3 {
        assert_eq!(from(&a, "192.0.2.1", Some(&alice), ua), 200);
    }
    let bob = token(&["--sub", "bob"]);
    for _ in 0..2 {
        assert_eq!(from(&a, "192.0.2.2", Some(&bob), ua), 200);
    }
    assert_eq!(from(&a, "192.0.2.3", Some(&evil), ua), 200);
    for _ in 0..2 {
        assert_eq!(from(&a, "203.0.113.9", Some(&forge(&alice)), ua), 401);
    }
    // Refused twice, recorded once (the window's first).
    for _ in 0..2 {
        assert_eq!(from(&a, "203.0.113.9", Some(&alice), ua), 429);
    }
    for _ in 0..2 {
        assert_eq!(from(&a, "198.51.100.4", None, ua), 401);
    }
    assert_eq!(a.get("/healthz", &[]).status, 200);
    assert!(a.terminate().success());

    // B: text, sealed.
    let key = dir.path("seal.key");
    assert!(
        run(&["seal-init", key.to_str().unwrap()], &[])
            .status
            .success()
    );
    let mut b = Server::start(&[
        "--no-supervisor",
        "--log-format",
        "text",
        "--seal-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(
        b.get_with_token("/api/x", &token(&["--sub", "carol"]))
            .status,
        200
    );
    assert_eq!(b.get_with_token("/api/x", "x.y.z").status, 401);
    assert!(b.terminate().success());

    // A rotated: its first half gzip-compressed, as logrotate's `compress` leaves it.
    let a_text = std::fs::read_to_string(a.log_path()).unwrap();
    let lines: Vec<&str> = a_text.lines().collect();
    let (old, new) = lines.split_at(lines.len() / 2);
    let rotated = dir.path("security.log.1");
    std::fs::write(&rotated, old.join("\n") + "\n").unwrap();
    assert!(
        Command::new("gzip")
            .arg(&rotated)
            .status()
            .unwrap()
            .success()
    );
    let current = dir.path("security.log");
    std::fs::write(&current, new.join("\n") + "\n").unwrap();
    let b_log = b.log_path();
    let page = dir.path("report.html");
    let files = [
        dir.path("security.log.1.gz"),
        current.clone(),
        b_log.clone(),
    ];
    let mut args = vec!["--html", page.to_str().unwrap()];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let text = report(&args);

    // A: 6 allowed, 5 refused (2 bad_signature, 1 rate_limited, 2 missing_token);
    // B: 1 allowed, 1 refused (malformed_token).
    for row in [
        &[
            "Requests", "13:", "allowed", "7", "(53.8%),", "refused", "6", "(46.2%)",
        ][..],
        &["bad_signature", "2"],
        &["missing_token", "2"],
        &["rate_limited", "1"],
        &["malformed_token", "1"],
        &[
            "203.0.113.9",
            "3",
            "bad_signature",
            "2,",
            "rate_limited",
            "1",
        ],
        &["198.51.100.4", "2", "missing_token", "2"],
        &["127.0.0.1", "1", "malformed_token", "1"],
        &["alice", "3"],
        &["bob", "2"],
        &["<img", "src=x", "onerror=alert(1)>", "1"],
        &["carol", "1"],
        &["startup", "success", "2"],
        &["shutdown", "success", "SIGTERM", "2"],
    ] {
        assert!(has_row(&text, row), "no row {row:?} in:\n{text}");
    }
    // The rate-limited table, and B's seal lines (a start and a stop each begin an epoch).
    let limited = text.split("Rate-limited clients").nth(1).unwrap();
    assert!(
        has_row(limited.lines().nth(1).unwrap(), &["203.0.113.9", "1"]),
        "{text}"
    );
    let seals = text.split("Seal events").nth(1).unwrap();
    assert!(
        has_row(seals, &["startup", "1"]) && has_row(seals, &["shutdown", "1"]),
        "{text}"
    );
    assert!(text.contains("Timeline per 1 min"), "{text}");
    assert!(text.starts_with("jwtguard report: 3 files,"), "{text}");

    check_html(
        &page,
        serde_json::json!({
            "Requests": [["requests", "13"], ["allowed", "7"], ["refused", "6"]],
            "Refusals by reason": [["bad_signature", "2"], ["missing_token", "2"],
                ["rate_limited", "1"], ["malformed_token", "1"]],
            "Top refused clients": [["203.0.113.9", "3", "bad_signature 2, rate_limited 1"],
                ["198.51.100.4", "2", "missing_token 2"]],
            "Top users": [["alice", "3"], ["bob", "2"], [EVIL_USER, "1"], ["carol", "1"]],
            "Rate-limited clients": [["203.0.113.9", "1"]],
            "Seal events": [["startup", "1"], ["shutdown", "1"]],
            "forbidden": [EVIL_USER],
        }),
        &dir,
    );

    // --since: B's lines only (from its first line on).
    let b_text = std::fs::read_to_string(&b_log).unwrap();
    let since = &b_text["@timestamp=".len().."@timestamp=".len() + 24];
    let mut args = vec!["--since", since];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let only_b = report(&args);
    assert!(
        has_row(
            &only_b,
            &[
                "Requests", "2:", "allowed", "1", "(50.0%),", "refused", "1", "(50.0%)"
            ]
        ),
        "{only_b}"
    );
    // --until B's first line: A's only.
    let mut args = vec!["--until", since];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let only_a = report(&args);
    assert!(only_a.contains("Requests 11: allowed 6"), "{only_a}");
}

#[test]
fn a_malicious_log_breaks_neither_the_report_nor_the_page() {
    let dir = TempDir::new();
    let log = dir.path("evil.log");
    let script = "<script>alert(2)</script>";
    let mut bytes = Vec::new();
    // Forged lines in jwtguard's form with markup in every field the report shows.
    bytes.extend_from_slice(
        format!(
            "{{\"@timestamp\":\"2026-12-06T21:00:00.000Z\",\"log.level\":\"warn\",\"event.action\":\"authorize\",\"event.outcome\":\"failure\",\"event.reason\":\"</td></table><script>x\",\"source.ip\":\"{script}\",\"message\":\"m\"}}\n"
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(
        b"@timestamp=2026-12-06T21:00:01.000Z log.level=info event.action=authorize event.outcome=success user.id=\"<b>\\\"bold\\\"</b> & co\" message=\"m\"\n",
    );
    // Garbage: binary, a torn line, a line of 100 KB, a forged far-off timestamp, none.
    bytes.extend_from_slice(
        b"\x00\xff\xfe{\"@timestamp\n{\"@timestamp\":\"2026-12-06T21:00:02.000Z\",\"event.act",
    );
    bytes.push(b'\n');
    bytes.extend(std::iter::repeat_n(b'{', 100_000));
    bytes.push(b'\n');
    bytes.extend_from_slice(b"{\"@timestamp\":\"9999-12-31T23:59:59.999Z\",\"event.action\":\"authorize\",\"event.outcome\":\"success\",\"user.id\":\"far\"}\n");
    bytes.extend_from_slice(b"@timestamp=2026-12-06T21:00:03.000Z event.action=authorize event.outcome=success user.id=\"\\\"unterminated");
    std::fs::write(&log, &bytes).unwrap();
    let page = dir.path("evil.html");
    let text = report(&["--html", page.to_str().unwrap(), log.to_str().unwrap()]);
    assert!(text.contains("6 lines (4 not jwtguard's"), "{text}");
    assert!(text.contains("Requests 3: allowed 2"), "{text}");
    check_html(
        &page,
        serde_json::json!({
            "Top refused clients": [[script, "1"]],
            "Refusals by reason": [["</td></table><script>x", "1"]],
            "Top users": [["<b>\\\"bold\\\"</b> & co", "1"], ["far", "1"]],
            "forbidden": [script, "</td></table><script>x"],
        }),
        &dir,
    );
}
