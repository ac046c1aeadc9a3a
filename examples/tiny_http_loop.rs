//! The design card's shape: a plain single-threaded tiny_http `recv` loop that guards
//! `/api/protected` with the library, each security event written through the `log`
//! facade to stderr.
//!
//! ```sh
//! export JWTGUARD_SECRET=$(head -c 32 /dev/urandom | base64)
//! cargo run --example tiny_http_loop -- 127.0.0.1:8081
//! curl -H "Authorization: Bearer $(cargo run -q -- token --sub alice)" \
//!      http://127.0.0.1:8081/api/protected                 # 200 {"status":"ok","user":"alice"}
//! curl http://127.0.0.1:8081/api/protected                 # 401, and a warn event on stderr
//! ```
//!
//! Prints `listening on http://IP:PORT` on stdout once bound (port 0 picks a free one).
//! `tests/tiny_http_example.sh` runs it against curl.

use std::io::Write as _;

use jwtguard::{Config, Decision, Guard, LogFormat, Secret, SecurityLog, http};
use tiny_http::{Header, Response, Server};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listen = std::env::args()
        .nth(1)
        .ok_or("usage: tiny_http_loop LISTEN_ADDR (e.g. 127.0.0.1:8081)")?;
    // The security log owns the `security` target of the `log` facade: the guard records
    // each decision there, and answers 503 (fails closed) if the line was not written.
    SecurityLog::stderr(LogFormat::Json)?.install()?;
    // No secret, no server: an ephemeral one would make every real token fail.
    let secret = Secret::load(None)?.ok_or("set JWTGUARD_SECRET to the tokens' secret")?;
    let guard = Guard::new(&Config {
        secret: Some(secret),
        ..Config::default() // protects /api/
    })?;
    let server = Server::http(&listen)?;
    let addr = server.server_addr().to_ip().ok_or("not a TCP listener")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);

    let json = Header::from_bytes("Content-Type", "application/json").map_err(|()| "header")?;
    loop {
        let request = server.recv()?;
        let user = match guard.check(&http::request(&request)) {
            // 400, 401 or 503 with its challenge, in one write.
            Decision::Refused(refused) => {
                http::answer(request, &refused);
                continue;
            }
            Decision::Allowed(allowed) => allowed.user().to_owned(),
            // Outside /api/: nothing here.
            Decision::Public => {
                http::respond(request, Response::empty(404));
                continue;
            }
        };
        if request.url() != "/api/protected" {
            http::respond(request, Response::empty(404));
            continue;
        }
        // serde_json escapes the user, who comes from the token.
        let body = serde_json::json!({ "status": "ok", "user": user }).to_string();
        http::respond(
            request,
            Response::from_string(body).with_header(json.clone()),
        );
    }
}
