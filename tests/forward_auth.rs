//! `jwtguard --forward-auth /auth`: the subrequest endpoint nginx's `auth_request` and
//! Caddy's `forward_auth` call. What a trusted proxy may tell it, what an anonymous client
//! may not, and that it only ever answers 200, 401 or 403 (nginx turns anything else
//! into a 500).

mod support;

use support::{Server, token};

/// jwtguard with `--forward-auth /auth --public /static/ --require /admin/=admin`, trusting
/// `trusted` as proxies.
fn start(trusted: &str) -> Server {
    Server::start(&[
        "--forward-auth",
        "/auth",
        "--public",
        "/static/",
        "--require",
        "/admin/=admin",
        "--claim-header",
        "team=X-Auth-Team",
        "--trusted-proxy",
        trusted,
    ])
}

fn auth(server: &Server, headers: &[&str]) -> support::Response {
    server.get("/auth", headers)
}

#[test]
fn a_trusted_proxy_names_the_original_request_and_gets_the_identity() {
    let server = start("127.0.0.0/8");
    let alice = token(&["--sub", "alice", "--claim", "team=blue"]);
    let bearer = format!("Authorization: Bearer {alice}");

    // nginx's headers.
    let answer = auth(
        &server,
        &[
            "X-Original-Method: POST",
            "X-Original-URI: /orders/7?full=1",
            "X-Forwarded-For: 203.0.113.9",
            &bearer,
        ],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("X-Auth-User"), Some("alice"));
    assert_eq!(answer.header("X-Auth-Team"), Some("blue"));
    // Caddy's and Traefik's.
    let answer = auth(
        &server,
        &[
            "X-Forwarded-Method: GET",
            "X-Forwarded-Uri: /orders/8",
            &bearer,
        ],
    );
    assert_eq!(answer.status, 200, "{answer:?}");

    let events = server.requests_logged();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["http.request.method"], "POST");
    assert_eq!(events[0]["url.path"], "/orders/7");
    assert_eq!(events[0]["client.ip"], "203.0.113.9");
    assert_eq!(events[0]["source.ip"], "127.0.0.1");
    assert_eq!(events[0]["user.id"], "alice");
    assert_eq!(events[1]["url.path"], "/orders/8");
}

#[test]
fn public_paths_pass_with_empty_identity_headers_and_everything_else_needs_a_token() {
    let server = start("127.0.0.1/32");
    // A public path: allowed, and the identity headers are there but empty, so that an
    // `auth_request_set $user $upstream_http_x_auth_user` never keeps a forged value.
    let answer = auth(&server, &["X-Original-URI: /static/app.css"]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("X-Auth-User"), Some(""));
    // The public prefix is matched on the normalised path: no climbing out of it.
    let answer = auth(&server, &["X-Original-URI: /static/%2e%2e/admin/users"]);
    assert_eq!(answer.status, 401, "{answer:?}");
    // Everything that is not public needs a token (there is no --protect in this mode).
    for uri in ["/", "/anything", "/admin/users", "/auth"] {
        let answer = auth(&server, &[&format!("X-Original-URI: {uri}")]);
        assert_eq!(answer.status, 401, "{uri}: {answer:?}");
        assert!(
            answer
                .header("WWW-Authenticate")
                .is_some_and(|c| c.starts_with("Bearer")),
            "{answer:?}"
        );
    }
}

#[test]
fn scopes_give_403_with_the_scope_named_and_bad_input_gives_401_never_400() {
    let server = start("127.0.0.1/32");
    let user = token(&["--sub", "bob", "--claim", "scope=read"]);
    let admin = token(&["--sub", "root", "--claim", "scope=read admin"]);
    let on = |uri: &str, token: &str| {
        auth(
            &server,
            &[
                &format!("X-Original-URI: {uri}"),
                &format!("Authorization: Bearer {token}"),
            ],
        )
    };
    let answer = on("/admin/users", &user);
    assert_eq!(answer.status, 403, "{answer:?}");
    let challenge = answer.header("WWW-Authenticate").unwrap_or_default();
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains(r#"scope="admin""#),
        "{challenge}"
    );
    assert_eq!(on("/admin/users", &admin).status, 200);
    assert_eq!(on("/reports", &user).status, 200);

    // What would be a 400 on a protected path of jwtguard's own is a 401 here: nginx
    // would turn a 400 into a 500.
    for headers in [
        vec!["X-Original-URI: /reports", "Authorization: Basic YTpi"],
        vec!["X-Original-URI: /reports", "Authorization: Bearer a b c"],
        vec!["X-Original-URI: /a/../../etc/passwd"],
        vec!["X-Original-URI: /a%2fb"],
        vec![
            "X-Original-URI: /reports",
            "Authorization: Bearer x",
            "Authorization: Bearer y",
        ],
        vec!["X-Original-Method: GET\u{1}", "X-Original-URI: /reports"],
    ] {
        let answer = auth(&server, &headers);
        assert_eq!(answer.status, 401, "{headers:?}: {answer:?}");
    }
    // Framing that tiny_http would misread closes the connection, still with a 401.
    let answer = server.raw(
        "GET /auth HTTP/1.1\r\nHost: x\r\nX-Original-URI: /reports\r\nTransfer-Encoding: gzip, chunked",
    );
    assert_eq!(answer.status, 401, "{answer:?}");
}

/// Issue 16 through a proxy's subrequest: the original URI is judged under every reading a
/// backend gives it, and what would be a 400 is a 401.
#[test]
fn each_path_variant_of_the_original_uri_is_judged() {
    let server = start("127.0.0.1/32");
    let user = token(&["--sub", "bob", "--claim", "scope=read"]);
    let bearer = format!("Authorization: Bearer {user}");
    for (uri, with_token, status) in [
        ("/admin;x/users", true, 403),
        ("/x/..;/admin/users", true, 401),
        ("/admin;x/.;/../users", true, 401),
        ("/ADMIN/users", true, 403),
        ("/admin./users", true, 403),
        ("/admin%3Bx/users", true, 401),
        ("/static/..;/admin/users", false, 401),
        ("/static/app.js;v=2", false, 200),
    ] {
        let original = format!("X-Original-URI: {uri}");
        let headers = match with_token {
            true => vec![original.as_str(), bearer.as_str()],
            false => vec![original.as_str()],
        };
        assert_eq!(auth(&server, &headers).status, status, "{uri}");
    }
}

#[test]
fn an_untrusted_peer_cannot_name_the_original_request_or_the_client() {
    // Only 10.0.0.0/8 is trusted; the test client is 127.0.0.1.
    let server = start("10.0.0.0/8");
    // It says the request was for a public path: ignored, the subrequest's own path
    // (/auth, not public) decides.
    let answer = auth(
        &server,
        &[
            "X-Original-URI: /static/x",
            "X-Forwarded-Uri: /static/x",
            "X-Forwarded-For: 198.51.100.1",
        ],
    );
    assert_eq!(answer.status, 401, "{answer:?}");
    let events = server.requests_logged();
    assert_eq!(events[0]["url.path"], "/auth");
    // client.ip is only there when a trusted proxy named a client other than the peer.
    assert_eq!(events[0]["source.ip"], "127.0.0.1");
    assert!(events[0].get("client.ip").is_none(), "{:?}", events[0]);
    // A valid token is still checked, and scopes cannot be dodged by naming another path.
    let user = token(&["--sub", "eve", "--claim", "scope=read"]);
    let answer = auth(
        &server,
        &[
            "X-Original-URI: /admin/users",
            &format!("Authorization: Bearer {user}"),
        ],
    );
    assert_eq!(answer.status, 200, "decided on /auth: {answer:?}");
    assert_eq!(answer.header("X-Auth-User"), Some("eve"));
}

#[test]
fn forward_auth_without_a_trusted_proxy_warns_at_start_up() {
    let dir = support::TempDir::new();
    let log = dir.path("security.log");
    let mut server = Server::spawn(
        dir,
        &[
            "--forward-auth",
            "/auth",
            "--log-file",
            log.to_str().unwrap(),
        ],
        &[("JWTGUARD_SECRET", support::SECRET)],
        std::process::Stdio::piped(),
    );
    // The warnings are written before the first request is served.
    assert_eq!(server.get("/healthz", &[]).status, 200);
    let stderr = server.stderr_after_kill();
    let log = std::fs::read_to_string(&log).unwrap();
    let warning = log.lines().find(|l| l.contains("--trusted-proxy"));
    assert!(
        warning.is_some_and(|w| w.contains("warn")),
        "{log} {stderr}"
    );
}

#[test]
fn a_client_cannot_add_its_own_original_uri_beside_the_proxys() {
    // Caddy and Traefik set X-Forwarded-Method/-Uri and pass a client's own X-Original-*
    // on; nginx the other way round. Two different answers to "which request is this?"
    // (or one header twice) are refused, whichever pair the proxy sets.
    let server = start("127.0.0.1/32");
    for headers in [
        vec!["X-Forwarded-Uri: /admin/users", "X-Original-URI: /static/x"],
        vec!["X-Original-URI: /admin/users", "X-Forwarded-Uri: /static/x"],
        vec![
            "X-Forwarded-Uri: /admin/users",
            "X-Forwarded-Uri: /static/x",
        ],
        vec!["X-Original-URI: /static/x", "X-Original-URI: /admin/users"],
        vec![
            "X-Forwarded-Uri: /static/x",
            "X-Forwarded-Method: GET",
            "X-Original-Method: POST",
        ],
    ] {
        let answer = auth(&server, &headers);
        assert_eq!(answer.status, 401, "{headers:?}: {answer:?}");
        assert!(
            answer
                .header("WWW-Authenticate")
                .is_some_and(|c| c.contains("invalid_request")),
            "{headers:?}: {answer:?}"
        );
    }
    // Both pairs, saying the same: fine.
    let answer = auth(
        &server,
        &["X-Forwarded-Uri: /static/x", "X-Original-URI: /static/x"],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let reasons: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| e["event.reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        ["invalid_request"; 5],
        "{:#?}",
        server.requests_logged()
    );
}

#[test]
fn a_subrequest_with_a_bad_host_is_refused_even_for_a_public_path() {
    let server = start("127.0.0.1/32");
    let lines = ["X-Original-URI: /static/x".to_owned()];
    for (name, hosts) in support::BAD_HOSTS {
        let answer = server.raw(&support::with_hosts("GET /auth HTTP/1.1", hosts, &lines));
        // 401, never 400: nginx would turn that into a 500.
        assert_eq!(answer.status, 401, "{name}: {answer:?}");
    }
    let answer = server.raw(&support::with_hosts(
        "GET /auth HTTP/1.1",
        &["jwtguard:9000"],
        &lines,
    ));
    assert_eq!(answer.status, 200, "{answer:?}");
    let reasons: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| e["event.reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, vec!["invalid_request"; support::BAD_HOSTS.len()]);
}
