//! Status codes and challenges for every kind of request, against the real binary.

mod support;

use support::{Connection, Server, token};

const CHALLENGE: &str = "Bearer realm=\"jwtguard\"";
const INVALID_REQUEST: &str = "Bearer realm=\"jwtguard\", error=\"invalid_request\"";
const INVALID_TOKEN: &str = "Bearer realm=\"jwtguard\", error=\"invalid_token\"";

#[test]
fn each_request_gets_its_status_challenge_and_reason() {
    let server = Server::start(&["--max-token-bytes", "4096"]);
    let valid = token(&["--sub", "alice"]);
    let expired = token(&["--sub", "alice", "--claim", "exp=1000"]);
    let (head, payload, _) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    let forged = format!("{head}.{payload}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    // {"alg":"none"} with the same claims and no signature.
    let alg_none = format!("eyJhbGciOiJub25lIn0.{payload}.");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let huge = "a".repeat(4097);

    // (path, header lines, status, WWW-Authenticate, event.reason)
    type Case<'a> = (&'a str, Vec<String>, u16, Option<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "/api/protected",
            vec![bearer(&valid)],
            200,
            None,
            Some("ok"),
        ),
        (
            "/api/protected",
            vec![format!("authorization: bearer {valid}")],
            200,
            None,
            Some("ok"),
        ),
        (
            "/api/protected",
            vec![format!("Authorization: BEARER {valid}")],
            200,
            None,
            Some("ok"),
        ),
        ("/api", vec![bearer(&valid)], 200, None, Some("ok")),
        (
            "/api/protected?x=1",
            vec![bearer(&valid)],
            200,
            None,
            Some("ok"),
        ),
        (
            "/api/protected",
            vec![],
            401,
            Some(CHALLENGE),
            Some("missing_token"),
        ),
        (
            "/api/protected",
            vec!["Authorization: Basic YTpi".into()],
            401,
            Some(CHALLENGE),
            Some("unsupported_scheme"),
        ),
        (
            "/api/protected",
            vec![bearer(&valid), bearer(&valid)],
            400,
            Some(INVALID_REQUEST),
            Some("invalid_request"),
        ),
        (
            "/api/protected",
            vec!["Authorization: Bearer".into()],
            400,
            Some(INVALID_REQUEST),
            Some("invalid_request"),
        ),
        (
            "/api/protected",
            vec!["Authorization: Bearer a\"b".into()],
            400,
            Some(INVALID_REQUEST),
            Some("invalid_request"),
        ),
        (
            "/api/protected",
            vec![bearer(&huge)],
            400,
            Some(INVALID_REQUEST),
            Some("invalid_request"),
        ),
        (
            "/api/protected",
            vec![bearer("not-a-jwt")],
            401,
            Some(INVALID_TOKEN),
            Some("malformed_token"),
        ),
        (
            "/api/protected",
            vec![bearer(&forged)],
            401,
            Some(INVALID_TOKEN),
            Some("bad_signature"),
        ),
        (
            "/api/protected",
            vec![bearer(&expired)],
            401,
            Some(INVALID_TOKEN),
            Some("expired"),
        ),
        (
            "/api/protected",
            vec![bearer(&alg_none)],
            401,
            Some(INVALID_TOKEN),
            Some("alg_not_allowed"),
        ),
        ("/healthz", vec![], 200, None, None),
        ("/apix", vec![bearer(&valid)], 404, None, None),
        ("/", vec![], 404, None, None),
    ];
    let mut expected_events = Vec::new();
    for (path, headers, status, challenge, reason) in &cases {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let response = server.get(path, &headers);
        let what = format!("{path} {headers:?}");
        assert_eq!(response.status, *status, "{what}: {response:?}");
        assert_eq!(response.header("WWW-Authenticate"), *challenge, "{what}");
        assert_eq!(
            response.header("Content-Type"),
            Some("application/json"),
            "{what}"
        );
        // Nothing from the request or the libraries comes back in the body, and the body
        // ends with a newline (so a shell prompt after curl starts on its own line).
        assert!(
            response.body.ends_with("}\n"),
            "{what}: {:?}",
            response.body
        );
        let body = response.json();
        let fields = match (*path, *status) {
            ("/healthz", _) => 3,
            (_, 200) => 2,
            _ => 1,
        };
        assert_eq!(body.as_object().unwrap().len(), fields, "{what}");
        if let Some(reason) = reason {
            expected_events.push((*reason, response.header("X-Request-Id").unwrap().to_owned()));
        }
    }
    // One event per protected request, in order, with the reason and the request id sent back.
    let logged: Vec<(String, String)> = server
        .requests_logged()
        .iter()
        .map(|e| {
            (
                e["event.reason"].as_str().unwrap().into(),
                e["http.request.id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = expected_events
        .into_iter()
        .map(|(r, id)| (r.to_owned(), id))
        .collect();
    assert_eq!(logged, expected);
}

#[test]
fn success_body_names_the_user() {
    let server = Server::start(&[]);
    let response = server.get_with_token("/api/protected", &token(&["--sub", "alice"]));
    assert_eq!(
        response.json(),
        serde_json::json!({"status": "ok", "user": "alice"})
    );
    // The blog's claim name works too.
    let legacy = token(&["--sub", "x", "--claim", "sub=null", "--claim", "user_id=42"]);
    let response = server.get_with_token("/api/protected", &legacy);
    assert_eq!(
        response.json(),
        serde_json::json!({"status": "ok", "user": "42"})
    );
}

#[test]
fn keep_alive_head_and_http_1_0_get_well_formed_responses() {
    let server = Server::start(&[]);
    let valid = token(&["--sub", "alice"]);
    let host = format!("Host: {}", server.addr);
    let mut conn = Connection::open(server.addr);
    let get = conn.send(
        &format!("GET /api/x HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {valid}"),
        false,
    );
    assert_eq!((get.version.as_str(), get.status), ("HTTP/1.1", 200));
    assert_eq!(get.header("Content-Type"), Some("application/json"));
    assert_eq!(
        get.header("Content-Length"),
        Some(get.body.len().to_string().as_str())
    );
    let date = get.header("Date").expect("a Date header");
    let age = std::time::SystemTime::now()
        .duration_since(httpdate::parse_http_date(date).expect("an HTTP date"))
        .unwrap_or_default();
    assert!(age.as_secs() < 60, "{date}");
    // HEAD: the same head, no body; the connection stays usable.
    let head = conn.send(
        &format!("HEAD /api/x HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {valid}"),
        true,
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), get.header("Content-Length"));
    let denied = conn.send(&format!("GET /api/x HTTP/1.1\r\n{host}"), false);
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("WWW-Authenticate"), Some(CHALLENGE));
    assert_eq!(denied.json()["status"], "unauthorized");
    let health = conn.send(&format!("GET /healthz HTTP/1.1\r\n{host}"), false);
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    assert_eq!(health.header("X-Request-Id"), None, "not a security event");
    let events = server.requests_logged();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["http.request.method"], "HEAD");

    // HTTP/1.0 without keep-alive: answered in HTTP/1.0, then the connection closes.
    let mut old = Connection::open(server.addr);
    let answer = old.send("GET /nothing HTTP/1.0", false);
    assert_eq!((answer.version.as_str(), answer.status), ("HTTP/1.0", 404));
    assert!(old.is_closed());
}

#[test]
fn issuer_audience_and_prefixes_are_configurable() {
    let server = Server::start(&[
        "--issuer",
        "https://id.example",
        "--audience",
        "shop",
        "--protect",
        "/admin",
        "--protect",
        "/v2/",
    ]);
    let good = token(&[
        "--sub",
        "a",
        "--issuer",
        "https://id.example",
        "--audience",
        "shop",
    ]);
    let wrong_iss = token(&[
        "--sub",
        "a",
        "--issuer",
        "https://evil.example",
        "--audience",
        "shop",
    ]);
    let no_aud = token(&["--sub", "a", "--issuer", "https://id.example"]);
    assert_eq!(server.get_with_token("/admin/users", &good).status, 200);
    assert_eq!(server.get_with_token("/v2/x", &good).status, 200);
    assert_eq!(
        server.get_with_token("/api/protected", &good).status,
        404,
        "default replaced"
    );
    assert_eq!(server.get_with_token("/admin", &wrong_iss).status, 401);
    assert_eq!(server.get_with_token("/admin", &no_aud).status, 401);
    let reasons: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| e["event.reason"].clone())
        .collect();
    assert_eq!(reasons, ["ok", "ok", "invalid_issuer", "missing_claim"]);
}

/// Issue 16, with jwtguard as the app: a path protected or needing a scope under any
/// backend's reading of it (`;parameters` removed; case and trailing dots and spaces
/// ignored) is, and an encoded `;` is refused.
#[test]
fn each_path_variant_of_a_protected_prefix_is_protected() {
    let server = Server::start(&["--protect", "/admin", "--require", "/admin=admin"]);
    let reader = token(&["--sub", "bob", "--claim", "scope=read"]);
    let variants = [
        "/admin;x",
        "/admin;jsessionid=1/secret",
        "/ADMIN/secret",
        "/admin./secret",
        "/admin%20/secret",
        "/ADMIN;x./secret",
    ];
    for target in variants {
        assert_eq!(server.get(target, &[]).status, 401, "{target}");
        assert_eq!(
            server.get_with_token(target, &reader).status,
            403,
            "{target}"
        );
    }
    // An encoded `;`, and dot or empty segments with parameters (a name to the
    // normalised path, a dot segment or nothing to Tomcat): refused.
    let refused = [
        "/admin%3Bx/secret",
        "/x/..;/admin/secret",
        "/admin;x/.;/../secret",
    ];
    for target in refused {
        assert_eq!(
            server.get_with_token(target, &reader).status,
            400,
            "{target}"
        );
    }
    let reasons: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| e["event.reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut want = ["missing_token", "insufficient_scope"].repeat(variants.len());
    want.extend(["bad_path"; 3]);
    assert_eq!(reasons, want);
}

#[test]
fn tokens_without_exp_need_the_flag() {
    let no_exp = token(&["--sub", "a", "--claim", "exp=null"]);
    let strict = Server::start(&[]);
    assert_eq!(strict.get_with_token("/api/x", &no_exp).status, 401);
    assert_eq!(strict.requests_logged()[0]["event.reason"], "missing_claim");
    let lax = Server::start(&["--allow-missing-exp"]);
    assert_eq!(lax.get_with_token("/api/x", &no_exp).status, 200);
}

#[test]
fn not_yet_valid_tokens_are_refused_within_leeway_rules() {
    let server = Server::start(&["--leeway", "5"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later = token(&["--sub", "a", "--claim", &format!("nbf={}", now + 120)]);
    let slightly_expired = token(&["--sub", "a", "--claim", &format!("exp={}", now - 2)]);
    assert_eq!(server.get_with_token("/api/x", &later).status, 401);
    assert_eq!(
        server.get_with_token("/api/x", &slightly_expired).status,
        200
    );
    assert_eq!(server.requests_logged()[0]["event.reason"], "not_yet_valid");
}

/// Sends `head` for a body that never comes: the server goes on serving others.
fn assert_a_body_that_never_comes_stops_nothing(head: &str) {
    use std::io::Write;
    let server = Server::start(&[]);
    let mut stalled = std::net::TcpStream::connect(server.addr).unwrap();
    write!(stalled, "{head}\r\n\r\n").unwrap();
    assert_eq!(server.get("/healthz", &[]).status, 200, "{head}");
    assert_eq!(server.get("/api/x", &[]).status, 401, "{head}");
    // The stalled request reaches the serving loop on its own connection's thread, maybe
    // after the second one: its event too, within a bounded wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.requests_logged().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(server.requests_logged().len(), 2, "{head}");
    drop(stalled);
}

#[test]
fn an_announced_body_that_never_comes_does_not_stop_the_server() {
    // tiny_http reads the body of a request it hands over only up to 1 KiB, and only
    // when the client did not ask for 100 Continue; any other body it reads when the
    // request is dropped, with no timeout.
    assert_a_body_that_never_comes_stops_nothing(
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000",
    );
    assert_a_body_that_never_comes_stops_nothing(
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nExpect: 100-continue",
    );
}

#[test]
fn expect_100_continue_is_answered_before_any_body_is_asked_for() {
    // tiny_http sent `100 Continue` before the token was checked, and the client uploaded
    // its whole body for a 401. Now the answer comes first, and closes the connection.
    use std::io::{Read, Write};
    let server = Server::start(&[]);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
}

#[test]
fn a_huge_announced_body_is_answered_413_and_crashes_nothing() {
    use std::io::Write;
    let server = Server::start(&[]);
    let mut huge = std::net::TcpStream::connect(server.addr).unwrap();
    huge.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        huge,
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999\r\n\r\n"
    )
    .unwrap();
    // The client is told (after an interim 100, the price of not dropping the body's
    // reader), and the event says what it was told.
    let head = support::final_head(&huge);
    assert!(
        head.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    let events = server.requests_logged();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event.reason"], "body_too_large");
    assert_eq!(events[0]["http.response.status_code"], 413);
    // tiny_http would abort the process draining the body: the server lives on.
    drop(huge);
    assert_eq!(server.get("/healthz", &[]).status, 200);
    assert_eq!(server.get("/api/x", &[]).status, 401);
}
