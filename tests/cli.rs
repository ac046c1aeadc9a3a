//! The command line as a new user meets it: each mistake gets its own diagnosis and exit
//! code 2, and `help` is a command.

mod support;

use support::{SECRET, run};

/// Runs `jwtguard ARGS` with `env`; returns (exit code, stderr).
fn fails(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = run(args, env);
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn listen_mistakes_are_usage_errors_with_the_right_diagnosis() {
    let cases = [
        ("8080", "needs a host: 127.0.0.1:8080"),
        (":8080", "needs a host: 127.0.0.1:8080"),
        ("http://127.0.0.1:8080", "without a scheme"),
        ("127.0.0.1:99999", "port 99999 is not in 0..=65535"),
        ("127.0.0.1", "needs a port"),
        ("::1:8080", "[::1]:8080"),
    ];
    for (listen, want) in cases {
        // With and without a secret: the address is the problem either way.
        for env in [&[][..], &[("JWTGUARD_SECRET", SECRET)]] {
            let (code, stderr) = fails(&["--listen", listen], env);
            assert_eq!(code, Some(2), "--listen {listen}: {stderr}");
            assert!(stderr.contains(want), "--listen {listen}: {stderr}");
            assert!(stderr.contains("invalid --listen"), "{stderr}");
        }
    }
}

#[test]
fn secret_variables_set_wrong_are_refused() {
    let (code, stderr) = fails(
        &["--listen", "127.0.0.1:0"],
        &[("JWTGUARD_SECRET_FILE", "")],
    );
    assert_eq!(
        code,
        Some(2),
        "an empty JWTGUARD_SECRET_FILE is no demo: {stderr}"
    );
    assert!(
        stderr.contains("invalid JWTGUARD_SECRET_FILE: set but empty"),
        "{stderr}"
    );
    let (code, stderr) = fails(&["--listen", "127.0.0.1:0"], &[("JWTGUARD_SECRET", "")]);
    assert_eq!(code, Some(2), "{stderr}");
    let with_newline = format!("{SECRET}\n");
    for args in [&["--listen", "127.0.0.1:0"][..], &["token", "--sub", "a"]] {
        let (code, stderr) = fails(args, &[("JWTGUARD_SECRET", &with_newline)]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("ends with a newline"), "{stderr}");
    }
}

#[test]
fn help_is_a_command_too() {
    for args in [&["help"][..], &["--help"], &["-h"]] {
        let out = run(args, &[]);
        assert!(out.status.success(), "{args:?}");
        let usage = String::from_utf8(out.stdout).unwrap();
        assert!(usage.starts_with("Usage: jwtguard"), "{args:?}: {usage}");
    }
}
