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
//! The security log goes to stderr, one JSON line per decision; this example's own log
//! records (none here) would go to env_logger.

use jwtguard::{Config, Decision, Guard, LogFormat, Secret, SecurityLog, http};
use tiny_http::{Response, Server};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    SecurityLog::stderr(LogFormat::Json)?.install()?;
    let config = Config {
        secret: Secret::load(None)?,
        ..Config::default()
    };
    let guard = Guard::new(&config)?;
    let server = Server::http("127.0.0.1:8081")?;
    println!("listening on http://127.0.0.1:8081");

    for request in server.incoming_requests() {
        let user = match guard.check(&http::request(&request)) {
            // 400, 401 or 503, with the right WWW-Authenticate challenge, in one write;
            // like http::respond, it keeps tiny_http from stalling on a request body.
            Decision::Refused(refused) => {
                http::answer(request, &refused);
                continue;
            }
            Decision::Allowed(allowed) => Some(allowed.user().to_owned()),
            Decision::Public => None,
        };
        let body = match (request.url(), user) {
            ("/public", _) => "anyone may read this\n".to_owned(),
            (_, Some(user)) => format!("orders of {user}\n"),
            _ => {
                http::respond(request, Response::empty(404));
                continue;
            }
        };
        http::respond(request, Response::from_string(body));
    }
    Ok(())
}
