//! With a `log` logger that is not jwtguard's, security events still reach it (as their
//! JSON line), but nothing confirms them to the guard: it fails closed, 503.

mod support;

use std::sync::Mutex;

use jwtguard::{Config, Decision, Guard, Request, Secret, SecretSource};

struct Capture(Mutex<Vec<(String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = (record.target().to_owned(), record.args().to_string());
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn another_logger_gets_the_events_and_the_guard_serves_nothing() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let secret = Secret::new([3; 32], SecretSource::Env);
    let guard = Guard::new(&Config {
        secret: Some(secret.clone()),
        ..Config::default()
    })
    .unwrap();
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    claims.insert("exp".into(), u32::MAX.into());
    let bearer = format!("Bearer {}", jwtguard::mint(&secret, &claims));
    let headers = [("Authorization", bearer.as_str())];
    let decision = guard.check(&Request::new("GET", "/api/x", &headers));
    assert!(
        matches!(&decision, Decision::Refused(r) if r.status() == 503 && r.reason().is_none()),
        "{decision:?}"
    );
    let seen = CAPTURE.0.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, jwtguard::TARGET);
    let event = support::event(&seen[0].1);
    assert_eq!(event["event.action"], "authorize");
    assert_eq!(event["user.id"], "alice");
}
