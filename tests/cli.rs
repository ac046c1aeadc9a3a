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

/// The first line of each command's help, as `help COMMAND` and `COMMAND --help` print it.
const COMMANDS: [(&str, &str); 6] = [
    ("serve", "Usage: jwtguard [serve] [OPTIONS]"),
    ("token", "Usage: jwtguard token --sub NAME"),
    ("jwks", "Usage: jwtguard jwks --from-pem"),
    ("seal-init", "Usage: jwtguard seal-init KEYFILE"),
    ("verify-log", "Usage: jwtguard verify-log --key"),
    ("report", "Usage: jwtguard report"),
];

/// `jwtguard ARGS` succeeds; its stdout.
fn stdout(args: &[&str]) -> String {
    let out = run(args, &[]);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn each_command_has_its_own_help() {
    // An option each command has, and one of another command it must not list.
    let own_and_foreign = [
        ("serve", "--max-header-bytes", "--sub NAME"),
        ("token", "--sub NAME", "--listen"),
        ("jwks", "--from-pem", "--listen"),
        ("seal-init", "KEYFILE", "--listen"),
        ("verify-log", "--as-of", "--listen"),
        ("report", "--html FILE", "--listen"),
    ];
    for ((command, first), (_, own, foreign)) in COMMANDS.iter().zip(own_and_foreign) {
        let help = stdout(&["help", command]);
        assert!(help.starts_with(first), "help {command}: {help}");
        assert!(help.contains(own), "help {command} lacks {own}: {help}");
        assert!(
            !help.contains(foreign),
            "help {command} lists {foreign}: {help}"
        );
        assert_eq!(stdout(&[command, "--help"]), help, "{command} --help");
        assert_eq!(stdout(&[command, "-h"]), help, "{command} -h");
    }
    // The overview names the commands and where their options are, not every option.
    let overview = stdout(&["--help"]);
    assert_eq!(stdout(&["help"]), overview);
    assert!(overview.contains("jwtguard help COMMAND"), "{overview}");
    assert!(!overview.contains("--max-header-bytes"), "{overview}");
    let (code, stderr) = fails(&["help", "nope"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown command \"nope\""), "{stderr}");
}

#[test]
fn an_unknown_option_suggests_the_one_meant() {
    let cases: [(&[&str], &str); 7] = [
        (&["--port", "18090"], "did you mean --listen"),
        (
            &["--secret", "s"],
            "--secret-file PATH, or the JWTGUARD_SECRET variable",
        ),
        (&["--lisen", "127.0.0.1:0"], "did you mean --listen?"),
        (
            &["--upstrem", "http://127.0.0.1:1"],
            "did you mean --upstream?",
        ),
        (
            &["token", "--listen", "127.0.0.1:0"],
            "an option of `jwtguard serve`",
        ),
        (&["verify-log", "--kye", "k"], "did you mean --key?"),
        (&["--frobnicate"], "jwtguard help serve lists them"),
    ];
    for (args, want) in cases {
        let (code, stderr) = fails(args, &[("JWTGUARD_SECRET", SECRET)]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("invalid option '--"), "{stderr}");
        assert!(stderr.contains(want), "{args:?}: want {want:?}: {stderr}");
    }
}

/// docs/cli.md shows each help as the binary prints it: the fenced block after each
/// "### `jwtguard help COMMAND`" heading (or "### `jwtguard --help`").
#[test]
fn docs_cli_md_is_the_binarys_own_help() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let mut shown = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(command) = line
            .strip_prefix("### `jwtguard ")
            .and_then(|rest| rest.strip_suffix('`'))
        else {
            continue;
        };
        let _ = lines.by_ref().find(|l| l.starts_with("```"));
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let args: Vec<&str> = command.split(' ').collect();
        let want = stdout(&args);
        assert_eq!(
            block.join("\n"),
            want.trim_end(),
            "docs/cli.md, `jwtguard {command}`: regenerate it"
        );
        shown.push(command.to_owned());
    }
    let mut expected = vec!["--help".to_owned()];
    expected.extend(COMMANDS.iter().map(|(c, _)| format!("help {c}")));
    assert_eq!(
        shown, expected,
        "docs/cli.md shows every help, in this order"
    );
}

/// `jwtguard ARGS` as a user who cannot read what root keeps to itself: `nobody`, through
/// setpriv, when the tests run as root (root reads any file); else the user running them.
/// Returns (exit code, stderr, the user's name).
fn unprivileged(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    use std::os::unix::fs::MetadataExt as _;
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let bin = env!("CARGO_BIN_EXE_jwtguard");
    let mut command = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        std::process::Command::new(bin)
    };
    let out = command
        .args(args)
        .env_remove("JWTGUARD_SECRET")
        .env_remove("JWTGUARD_SECRET_FILE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs the test as nobody");
    let user = if root {
        "nobody".to_owned()
    } else {
        std::env::var("USER").unwrap_or_default()
    };
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        user,
    )
}

#[test]
fn file_errors_say_what_to_do() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = support::TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path("secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let secret = secret.to_str().unwrap();
    let (code, stderr, user) =
        unprivileged(&["--listen", "127.0.0.1:0", "--secret-file", secret], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    for want in [secret, &format!("runs as {user}"), "chmod 0400"] {
        assert!(stderr.contains(want), "want {want:?}: {stderr}");
    }
    // A log file in a directory the user cannot write.
    let locked = dir.path("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let log = locked.join("security.log");
    let log = log.to_str().unwrap();
    let (code, stderr, user) = unprivileged(
        &["--listen", "127.0.0.1:0", "--log-file", log],
        &[("JWTGUARD_SECRET", SECRET)],
    );
    assert_eq!(code, Some(1), "{stderr}");
    for want in [log, &format!("runs as {user}"), "0600"] {
        assert!(stderr.contains(want), "want {want:?}: {stderr}");
    }
    // A secret file that is not there: how to make one.
    let missing = dir.path("missing");
    let missing = missing.to_str().unwrap();
    let (code, stderr) = fails(&["token", "--sub", "a", "--secret-file", missing], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("head -c 32 /dev/urandom | base64 >{missing}")),
        "{stderr}"
    );
}

/// The default build verifies every algorithm but does not sign with private keys (the
/// `sign` feature): `token --key-file` and `jwks --from-pem` say which feature they need.
#[cfg(not(feature = "sign"))]
#[test]
fn signing_with_a_private_key_names_the_feature_it_needs() {
    let key = support::idp_key("p256");
    let token = ["token", "--key-file", &key, "--sub", "bob"];
    let jwks = ["jwks", "--from-pem", &key];
    for args in [&token[..], &jwks[..]] {
        let (code, stderr) = fails(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("without the `sign` feature"),
            "{args:?}: {stderr}"
        );
    }
}
