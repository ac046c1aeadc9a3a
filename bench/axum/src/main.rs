//! The comparison server for `bench/front.sh`: axum + tokio + jsonwebtoken doing the work
//! jwtguard does for a request to `/api/protected`: verify the HS256 bearer token, write
//! one JSON security line with one write(2), answer jwtguard's body and headers.
//!
//! `jwtguard-bench-axum LISTEN_ADDR LOG_FILE` with the secret in `JWTGUARD_SECRET`; prints
//! `listening on http://IP:PORT` once bound, as jwtguard does.
//!
//! One current-thread tokio runtime: the benchmark pins every server to one CPU, and on
//! one CPU a multi-thread runtime only adds wake-ups between its threads; jwtguard's loop
//! is single-threaded too.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// jwtguard's longest token by default (`--max-token-bytes`).
const MAX_TOKEN_BYTES: usize = 8192;
/// jwtguard's clock skew allowed on exp and nbf (`--leeway`), seconds.
const LEEWAY_SECONDS: u64 = 30;

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

struct App {
    key: DecodingKey,
    validation: Validation,
    log: File,
    /// Request ids are `PREFIX-N`, as jwtguard's.
    prefix: u32,
    next_id: AtomicU64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(log_path), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: jwtguard-bench-axum LISTEN_ADDR LOG_FILE".into());
    };
    let secret = std::env::var("JWTGUARD_SECRET").map_err(|_| "JWTGUARD_SECRET is not set")?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECONDS;
    let app = Arc::new(App {
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
        log: OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?,
        prefix: std::process::id(),
        next_id: AtomicU64::new(1),
    });
    let router = axum::Router::new().fallback(handle).with_state(app);

    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
            stdout.flush()?;
            drop(stdout);
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        })?;
    Ok(())
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    if path == "/healthz" {
        return answer(StatusCode::OK, "{\"status\":\"ok\"}\n", None, None);
    }
    if !path.starts_with("/api/") {
        return answer(
            StatusCode::NOT_FOUND,
            "{\"status\":\"not found\"}\n",
            None,
            None,
        );
    }
    let id = format!(
        "{:08x}-{}",
        app.prefix,
        app.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.len() <= MAX_TOKEN_BYTES);
    let user = token.and_then(|t| decode::<Claims>(t, &app.key, &app.validation).ok());
    let user = user.map(|data| data.claims.sub);
    let agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let line = event(
        peer,
        request.method().as_str(),
        path,
        &id,
        token,
        user.as_deref(),
        agent,
    );
    // One write(2) a line, appended; a request is answered only once its line is written.
    if (&app.log).write_all(line.as_bytes()).is_err() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"unavailable\"}\n",
            Some(&id),
            None,
        );
    }
    match user {
        Some(user) => {
            let body = serde_json::json!({ "status": "ok", "user": user }).to_string() + "\n";
            answer(StatusCode::OK, body, Some(&id), Some(&user))
        }
        None => {
            let mut response = answer(
                StatusCode::UNAUTHORIZED,
                "{\"status\":\"unauthorized\"}\n",
                Some(&id),
                None,
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jwtguard\""),
            );
            response
        }
    }
}

fn answer(
    status: StatusCode,
    body: impl Into<Body>,
    id: Option<&str>,
    user: Option<&str>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert("x-request-id", id);
    }
    // A user that is not a valid header value (control characters) is left out.
    if let Some(user) = user.and_then(|user| HeaderValue::from_str(user).ok()) {
        headers.insert("x-auth-user", user);
    }
    response
}

/// The security line: the fields of jwtguard's JSON event for the same decision, escaped
/// by serde_json, ending in a newline.
fn event(
    peer: SocketAddr,
    method: &str,
    path: &str,
    id: &str,
    token: Option<&str>,
    user: Option<&str>,
    agent: Option<&str>,
) -> String {
    let allowed = user.is_some();
    let mut line = serde_json::json!({
        "@timestamp": timestamp(),
        "log.level": if allowed { "info" } else { "warn" },
        "event.action": "authorize",
        "event.outcome": if allowed { "success" } else { "failure" },
        "event.reason": if allowed { "ok" } else if token.is_some() { "invalid_token" } else { "missing_token" },
        "source.ip": peer.ip().to_string(),
        "http.response.status_code": if allowed { 200 } else { 401 },
        "http.request.id": id,
        "ecs.version": "9.3.0",
        "event.kind": "event",
        "event.category": ["web", "authentication"],
        "event.type": ["access", if allowed { "allowed" } else { "denied" }],
        "http.request.method": method,
        "url.path": path,
        "message": if allowed { "allowed: the token verified" } else { "refused" },
    });
    let fields = line.as_object_mut().expect("a JSON object");
    if let Some(token) = token {
        let digest = Sha256::digest(token.as_bytes());
        let mut hex = String::with_capacity(16);
        for byte in &digest[..8] {
            let _ = write!(hex, "{byte:02x}");
        }
        fields.insert("jwtguard.token.fingerprint".into(), hex.into());
    }
    if let Some(user) = user {
        fields.insert("user.id".into(), user.into());
    }
    if let Some(agent) = agent {
        fields.insert("user_agent.original".into(), agent.into());
    }
    let mut out = line.to_string();
    out.push('\n');
    out
}

/// Now as `2026-12-06T20:45:58.027Z`, UTC.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_millis()
    )
}
