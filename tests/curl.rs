//! The README's walkthrough, with the real curl.

mod support;

use std::process::Command;

use support::{Server, token};

fn curl(url: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

#[test]
fn readme_walkthrough_with_curl() {
    let server = Server::start(&[]);
    let url = format!("http://{}/api/protected", server.addr);
    let valid = token(&["--sub", "alice"]);
    let expired = token(&["--sub", "alice", "--ttl", "0", "--claim", "exp=1"]);
    let forged = support::forge(&valid);
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    let (code, body) = curl(&url, &["-H", &bearer(&valid)]);
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "{\"status\":\"ok\",\"user\":\"alice\"}\n")
    );
    assert_eq!(curl(&url, &[]).0, "401");
    assert_eq!(curl(&url, &["-H", &bearer(&expired)]).0, "401");
    assert_eq!(curl(&url, &["-H", &bearer(&forged)]).0, "401");
    // curl's --oauth2-bearer sends the same header.
    assert_eq!(curl(&url, &["--oauth2-bearer", &valid]).0, "200");

    let reasons: Vec<_> = server
        .requests_logged()
        .iter()
        .map(|e| e["event.reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        ["ok", "missing_token", "expired", "bad_signature", "ok"]
    );
}
