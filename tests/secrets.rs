//! Where the secret comes from, what is refused, and the demo mode.

mod support;

use std::process::Stdio;

use support::{SECRET, Server, TempDir, run};

#[test]
fn weak_secrets_are_refused_unless_allowed() {
    let out = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("JWTGUARD_SECRET", "short")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("5 bytes") && stderr.contains("at least 32"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("short"),
        "the secret is not echoed: {stderr}"
    );
    assert!(out.stdout.is_empty());

    let server = Server::spawn(
        TempDir::new(),
        &["--allow-weak-secret"],
        &[("JWTGUARD_SECRET", "short")],
        Stdio::null(),
    );
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
fn secret_files_from_flag_or_environment() {
    let dir = TempDir::new();
    let file = dir.path("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let file = file.to_str().unwrap();
    // A token signed with SECRET verifies whichever way the file is named.
    let token = support::token(&["--sub", "a"]);
    for (args, env) in [
        (vec!["--secret-file", file], vec![]),
        (vec![], vec![("JWTGUARD_SECRET_FILE", file)]),
    ] {
        let server = Server::spawn(TempDir::new(), &args, &env, Stdio::null());
        assert_eq!(
            server.get_with_token("/api/x", &token).status,
            200,
            "{args:?} {env:?}"
        );
    }
    // A file others may read works, with a warning.
    use std::os::unix::fs::PermissionsExt as _;
    let open_file = dir.path("open-secret");
    std::fs::write(&open_file, SECRET).unwrap();
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::spawn(
        TempDir::new(),
        &[
            "--secret-file",
            open_file.to_str().unwrap(),
            "--log-file",
            dir.path("log").to_str().unwrap(),
        ],
        &[],
        Stdio::null(),
    );
    assert_eq!(server.get_with_token("/api/x", &token).status, 200);
    let log = std::fs::read_to_string(dir.path("log")).unwrap();
    assert!(log.contains("readable by other users"), "{log}");
    // Both a file and the variable: ambiguous, refused as a usage error.
    let out = run(&["--secret-file", file], &[("JWTGUARD_SECRET", SECRET)]);
    assert_eq!(out.status.code(), Some(2));
    // Not a secret: refused, not read for ever.
    let out = run(&["--secret-file", "/dev/zero"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("over 64 KiB"));
    // A missing file is named in the error.
    let out = run(&["--secret-file", "/nonexistent/secret"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/secret"));
}

#[test]
fn without_a_secret_serve_prints_a_working_demo_curl() {
    let mut server = Server::spawn(TempDir::new(), &[], &[], Stdio::piped());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut server.stdout, &mut line).unwrap();
    let rest = line
        .strip_prefix("try: curl -H 'Authorization: Bearer ")
        .expect(&line);
    let (token, url) = rest.trim_end().split_once("' ").unwrap();
    assert_eq!(url, format!("http://{}/api/protected", server.addr));
    let response = server.get_with_token("/api/protected", token);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["user"], "demo");
    let stderr = server.stderr_after_kill();
    assert!(stderr.contains("die with the process"), "{stderr}");
    assert!(!stderr.contains(token), "the demo token is on stdout only");
}

#[test]
fn demo_mode_is_for_loopback_only() {
    // Refused before anything is bound.
    let out = run(&["--listen", "0.0.0.0:0"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no token printed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    // IPv6 loopback counts too, where the machine has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let server = Server::spawn(TempDir::new(), &["--listen", "[::1]:0"], &[], Stdio::null());
        assert!(server.addr.ip().is_loopback());
    }
}

#[test]
fn token_needs_a_secret_and_prints_only_the_token() {
    let out = run(&["token", "--sub", "a"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWTGUARD_SECRET"));
    let token = support::token(&["--sub", "a", "--ttl", "60", "--claim", "role=admin"]);
    assert_eq!(token.split('.').count(), 3);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--bogus"][..],
        &["frobnicate"],
        &["--log-format", "xml"],
        &["--leeway", "soon"],
        &["token"],
        &["token", "--sub", "a", "--claim", "novalue"],
        &["token", "--sub", "a", "--listen", "127.0.0.1:0"],
    ] {
        let out = run(args, &[("JWTGUARD_SECRET", SECRET)]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(&["serve", "--help"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--max-token-bytes"));
}

#[test]
fn bind_failures_name_the_address() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let out = run(&["--listen", &addr], &[("JWTGUARD_SECRET", SECRET)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}
