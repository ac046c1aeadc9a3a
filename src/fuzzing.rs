//! Entry points for the fuzz targets in `fuzz/`: the private parsers and encoders, as
//! the server calls them. Compiled only with `--cfg fuzzing`, which cargo-fuzz sets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::{Event, RequestEvent, RequestId};
use crate::token::{Ask, Policy, Verifier};
use crate::{LogFormat, Reason};

/// The secret [`verify`] checks signatures with.
pub const SECRET: &[u8] = b"fuzzing-secret-0123456789abcdef0123456789";

/// The bearer-token parser over the values of a request's `Authorization` headers, with
/// the default cap of 8192 bytes.
pub fn bearer_token<'a>(values: &[&'a str]) -> Result<&'a str, Reason> {
    crate::guard::bearer_token(values.iter().copied(), 8192)
}

/// Verifies `token` with [`SECRET`] under the default policy (30 s leeway, `exp`
/// required), at `now` seconds since the epoch (`None`: a clock before 1970). Returns the
/// user, or the reason and the user of a genuine token.
pub fn verify(token: &str, now: Option<f64>) -> Result<String, (Reason, Option<String>)> {
    thread_local! {
        static VERIFIER: Verifier = Verifier::new(
            &[crate::keys::VerifyingKey::new(
                None,
                crate::keys::Alg::Hs256,
                crate::keys::Material::Oct(SECRET.to_vec()),
            )],
            Policy {
                leeway: 30,
                require_exp: true,
                issuer: None,
                audience: None,
            },
            None,
        );
    }
    let ask = Ask {
        scopes: &[],
        claims: false,
    };
    VERIFIER.with(|v| {
        v.verify(token, now, ask)
            .map(|verified| verified.user)
            .map_err(|d| (d.reason, d.user))
    })
}

/// The line of a refused request's event with these values from the request, in
/// `format`, stamped `millis` after the epoch.
pub fn encode_request(
    method: &str,
    path: &str,
    user: Option<&str>,
    user_agent: Option<&str>,
    format: LogFormat,
    millis: u64,
) -> String {
    let event = Event::Request(RequestEvent {
        action: crate::event::Action::Authorize,
        success: false,
        reason: Reason::BadSignature.code(),
        reason_text: Reason::BadSignature.text(),
        source_ip: Some([127, 0, 0, 1].into()),
        client_ip: None,
        status: Some(401),
        request_id: Some(RequestId::new(0x0a1b_2c3d, 1)),
        fingerprint: None,
        method,
        path,
        user,
        user_agent,
        kid: None,
        alg: None,
    });
    let mut line = String::new();
    event.encode(
        format,
        UNIX_EPOCH + Duration::from_millis(millis),
        &mut line,
    );
    line
}

/// The line of another target's log record with this logger name and message.
pub fn encode_record(logger: &str, message: &str, format: LogFormat) -> String {
    let event = Event::Record {
        level: log::Level::Warn,
        logger,
        message,
    };
    let mut line = String::new();
    event.encode(format, SystemTime::now(), &mut line);
    line
}
