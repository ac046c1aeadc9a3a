//! Writes a sealed security log of LINES events through the library's own path
//! (`SecurityLog::file(..).sealed(..)` and `Guard::check`), for bench/verify.sh:
//!
//! ```sh
//! jwtguard seal-init KEYFILE
//! cargo run --release --example sealed_log -- LOGFILE KEYFILE LINES [json|text]
//! ```
//!
//! The requests take turns: a valid token, a forged one, none. Prints the lines and the
//! time taken.

use jwtguard::{Config, Guard, LogFormat, Request, Secret, SecretSource, SecurityLog};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [log, key, lines, rest @ ..] = args.as_slice() else {
        return Err("usage: sealed_log LOGFILE KEYFILE LINES [json|text]".into());
    };
    let lines: u64 = lines.parse()?;
    let format: LogFormat = rest.first().map_or("json", String::as_str).parse()?;
    SecurityLog::file(log, format)?.sealed(key)?.install()?;
    let secret = Secret::new([7u8; 32], SecretSource::Env);
    let guard = Guard::new(&Config {
        secret: Some(secret.clone()),
        ..Config::default()
    })?;
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    claims.insert("exp".into(), u32::MAX.into());
    let valid = format!("Bearer {}", jwtguard::mint(&secret, &claims));
    let forged = format!(
        "Bearer {}",
        jwtguard::mint(&Secret::new([8u8; 32], SecretSource::Env), &claims)
    );
    let peer = "127.0.0.1".parse()?;
    let start = std::time::Instant::now();
    for n in 0..lines {
        let mut headers = vec![("Host", "127.0.0.1:8080"), ("User-Agent", "curl/8.5.0")];
        match n % 3 {
            0 => headers.push(("Authorization", valid.as_str())),
            1 => headers.push(("Authorization", forged.as_str())),
            _ => {}
        }
        let request = Request::new("GET", "/api/orders", headers.as_slice()).with_peer(peer);
        let _ = guard.check(&request);
    }
    println!("{lines} events in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}
