//! The log encoders: arbitrary request values (method, path, user, user agent) and another
//! logger's records (logger, message), in both formats. Each event is exactly one line of
//! printable ASCII with exactly its fields, in order; the values read back (JSON through
//! serde_json, text unescaped), capped at 256 bytes (the message at 4096) plus `...`; the
//! request's `@timestamp` is its time in RFC 3339 (checked against httpdate's calendar).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use jwtguard::fuzzing::{encode_record, encode_request};
use jwtguard::{LogFormat, Reason};
use jwtguard_fuzz::check::{self, Want};
use jwtguard_fuzz::encode_input;
use libfuzzer_sys::fuzz_target;

/// The cap on a value from outside, and on the message.
const CAP: usize = 256;
const MESSAGE_CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let input = encode_input(data);
    let message = format!("refused: {}", Reason::BadSignature);
    let stamped = UNIX_EPOCH + Duration::from_millis(input.millis);
    let mut request = vec![
        ("@timestamp", Want::Time(stamped)),
        ("log.level", Want::Own),
        ("event.action", Want::Own),
        ("event.outcome", Want::Own),
        ("event.reason", Want::Own),
        ("source.ip", Want::Own),
        ("http.response.status_code", Want::Own),
        ("http.request.id", Want::Own),
        ("ecs.version", Want::Own),
        ("event.kind", Want::Own),
        ("event.category", Want::Own),
        ("event.type", Want::Own),
        ("http.request.method", Want::Quoted(&input.method, CAP)),
        ("url.path", Want::Quoted(&input.path, CAP)),
    ];
    if let Some(user) = &input.user {
        request.push(("user.id", Want::Quoted(user, CAP)));
    }
    if let Some(agent) = &input.user_agent {
        request.push(("user_agent.original", Want::Quoted(agent, CAP)));
    }
    request.push(("message", Want::Quoted(&message, MESSAGE_CAP)));
    let record = [
        ("@timestamp", Want::Own),
        ("log.level", Want::Own),
        ("ecs.version", Want::Own),
        ("event.kind", Want::Own),
        ("event.category", Want::Own),
        ("event.type", Want::Own),
        ("log.logger", Want::Quoted(&input.logger, CAP)),
        ("message", Want::Quoted(&input.message, MESSAGE_CAP)),
    ];
    for format in [LogFormat::Json, LogFormat::Text] {
        let line = encode_request(
            &input.method,
            &input.path,
            input.user.as_deref(),
            input.user_agent.as_deref(),
            format,
            input.millis,
        );
        if let Err(problem) = check::check_line(&line, format, &request) {
            panic!("request event, {format:?}, {input:?}: {problem}");
        }
        let line = encode_record(&input.logger, &input.message, format);
        if let Err(problem) = check::check_line(&line, format, &record) {
            panic!("record, {format:?}, {input:?}: {problem}");
        }
    }
});
