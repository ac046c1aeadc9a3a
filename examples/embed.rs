//! The guard inside your own tiny_http loop.
//!
//! ```sh
//! export JWTGUARD_SECRET=$(head -c 32 /dev/urandom | base64)
//! cargo run --example embed
//! curl http://127.0.0.1:8081/public                       # 200, no token needed
//! curl -H "Authorization: Bearer $(cargo run -q -- token --sub alice)" \
//!      http://127.0.0.1:8081/api/orders                    # 200 with your own body
//! ```
//!
//! Security events go through the `log` facade (target `security`); this example sends
//! them to stderr with env_logger, as plain lines.

use std::io::Write as _;

use jwtguard::{Config, Guard, Secret, path_of};
use tiny_http::{Response, Server};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| writeln!(buf, "{}", record.args()))
        .init();
    let config = Config {
        secret: Secret::load(None)?,
        ..Config::default()
    };
    let guard = Guard::new(&config)?;
    let server = Server::http("127.0.0.1:8081")?;
    println!("listening on http://127.0.0.1:8081");

    for request in server.incoming_requests() {
        let path = path_of(request.url()).to_owned();
        let user = if guard.is_protected(&path) {
            let decision = guard.check(&request);
            match decision.user() {
                Some(user) => Some(user.to_owned()),
                None => {
                    // 400, 401 or 503, with the right WWW-Authenticate challenge, in one
                    // write; like jwtguard::respond, it keeps tiny_http from stalling on
                    // a body.
                    decision.answer(request);
                    continue;
                }
            }
        } else {
            None
        };
        let body = match (path.as_str(), user) {
            ("/public", _) => "anyone may read this\n".to_owned(),
            (_, Some(user)) => format!("orders of {user}\n"),
            _ => {
                jwtguard::respond(request, Response::empty(404));
                continue;
            }
        };
        jwtguard::respond(request, Response::from_string(body));
    }
    Ok(())
}
