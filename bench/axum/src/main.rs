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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// jwtguard's longest token by default (`--max-token-bytes`).
const MAX_TOKEN_BYTES: usize = 8192;
/// jwtguard's clock skew allowed on exp and nbf (`--leeway`), seconds.
const LEEWAY_SECONDS: u64 = 30;

/// The body of an allowed request's answer, jwtguard's.
#[derive(Serialize)]
struct Answer<'a> {
    status: &'static str,
    user: &'a str,
}

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
    if (&app.log).write_all(&line).is_err() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"unavailable\"}\n",
            Some(&id),
            None,
        );
    }
    match user {
        Some(user) => {
            let body = serde_json::to_string(&Answer {
                status: "ok",
                user: &user,
            })
            .unwrap_or_default()
                + "\n";
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

/// The security line: the fields of jwtguard's JSON event for the same decision.
#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    #[serde(rename = "log.level")]
    level: &'static str,
    #[serde(rename = "event.action")]
    action: &'static str,
    #[serde(rename = "event.outcome")]
    outcome: &'static str,
    #[serde(rename = "event.reason")]
    reason: &'static str,
    #[serde(rename = "source.ip")]
    source_ip: IpAddr,
    #[serde(rename = "http.response.status_code")]
    status: u16,
    #[serde(rename = "http.request.id")]
    id: &'a str,
    #[serde(rename = "ecs.version")]
    ecs_version: &'static str,
    #[serde(rename = "event.kind")]
    kind: &'static str,
    #[serde(rename = "event.category")]
    category: [&'static str; 2],
    #[serde(rename = "event.type")]
    kind_type: [&'static str; 2],
    #[serde(
        rename = "jwtguard.token.fingerprint",
        skip_serializing_if = "Option::is_none"
    )]
    fingerprint: Option<String>,
    #[serde(rename = "http.request.method")]
    method: &'a str,
    #[serde(rename = "url.path")]
    path: &'a str,
    #[serde(rename = "user.id", skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(
        rename = "user_agent.original",
        skip_serializing_if = "Option::is_none"
    )]
    agent: Option<&'a str>,
    message: &'static str,
}

/// The security line for a decision, escaped by serde_json, ending in a newline.
fn event(
    peer: SocketAddr,
    method: &str,
    path: &str,
    id: &str,
    token: Option<&str>,
    user: Option<&str>,
    agent: Option<&str>,
) -> Vec<u8> {
    let allowed = user.is_some();
    let fingerprint = token.map(|token| {
        let digest = Sha256::digest(token.as_bytes());
        let mut hex = String::with_capacity(16);
        for byte in &digest[..8] {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    });
    let event = Event {
        timestamp: timestamp(),
        level: if allowed { "info" } else { "warn" },
        action: "authorize",
        outcome: if allowed { "success" } else { "failure" },
        reason: match (allowed, token.is_some()) {
            (true, _) => "ok",
            (false, true) => "invalid_token",
            (false, false) => "missing_token",
        },
        source_ip: peer.ip(),
        status: if allowed { 200 } else { 401 },
        id,
        ecs_version: "9.3.0",
        kind: "event",
        category: ["web", "authentication"],
        kind_type: ["access", if allowed { "allowed" } else { "denied" }],
        fingerprint,
        method,
        path,
        user,
        agent,
        message: if allowed {
            "allowed: the token verified"
        } else {
            "refused"
        },
    };
    let mut line = Vec::with_capacity(512);
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut line, &event);
    line.push(b'\n');
    line
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
