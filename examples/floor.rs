//! The benchmark floor: a bare tiny_http loop that answers every request with 200 and a
//! tiny body. `bench/run.sh` compares jwtguard against it to see what the guard costs on
//! top of the HTTP layer.
//!
//! `cargo run --release --example floor -- [--listen ADDR]` (default `127.0.0.1:0`).

use std::io::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let mut listen = String::from("127.0.0.1:0");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs ADDR")?,
            _ => return Err(format!("unexpected argument {arg:?}").into()),
        }
    }
    let server = tiny_http::Server::http(&listen)?;
    let addr = server.server_addr().to_ip().ok_or("not a TCP listener")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    // SIGINT/SIGTERM: exit at once, there is nothing to flush.
    ctrlc::set_handler(|| std::process::exit(0))?;

    let content_type = tiny_http::Header::from_bytes("Content-Type", "application/json")
        .map_err(|()| "bad header")?;
    loop {
        let request = server.recv()?;
        let response = tiny_http::Response::from_data(&b"{\"status\":\"ok\"}"[..])
            .with_header(content_type.clone());
        // A client that hung up is no concern of the floor.
        let _ = request.respond(response);
    }
}
