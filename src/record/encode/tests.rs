//! Both encodings of every kind of event, field by field.

use super::*;
use crate::record::event::*;
use crate::record::sealed::*;
use std::time::{Duration, UNIX_EPOCH};

fn at(secs: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
}

fn request<'a>(path: &'a str, agent: &'a str, user: Option<&'a str>) -> Event<'a> {
    Event::Request(RequestEvent {
        action: Action::Authorize,
        success: user.is_some(),
        reason: if user.is_some() {
            "ok"
        } else {
            "bad_signature"
        },
        reason_text: if user.is_some() {
            "the token verified"
        } else {
            "token signature does not verify"
        },
        source_ip: Some("127.0.0.1".parse().unwrap()),
        client_ip: None,
        status: Some(if user.is_some() { 200 } else { 401 }),
        request_id: Some(RequestId::new(0xabcd, 1)),
        fingerprint: Some(Fingerprint::of("a.b.c")),
        method: "GET",
        path,
        user,
        user_agent: Some(agent),
        kid: None,
        alg: None,
    })
}

fn json(event: &Event) -> serde_json::Value {
    let mut out = String::new();
    event.encode(LogFormat::Json, at(0, 5), &mut out);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn json_request_event_has_ecs_fields() {
    let v = json(&request("/api/x", "curl/8", Some("alice")));
    assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.005Z");
    assert_eq!(v["log.level"], "info");
    assert_eq!(v["ecs.version"], ECS_VERSION);
    assert_eq!(v["event.kind"], "event");
    assert_eq!(
        v["event.category"],
        serde_json::json!(["web", "authentication"])
    );
    assert_eq!(v["event.type"], serde_json::json!(["access", "allowed"]));
    assert_eq!(v["event.action"], "authorize");
    assert_eq!(v["event.outcome"], "success");
    assert_eq!(v["event.reason"], "ok");
    assert_eq!(v["source.ip"], "127.0.0.1");
    assert_eq!(v["http.request.method"], "GET");
    assert_eq!(v["url.path"], "/api/x");
    assert_eq!(v["http.response.status_code"], 200);
    assert_eq!(v["user_agent.original"], "curl/8");
    assert_eq!(v["http.request.id"], "0000abcd-1");
    assert_eq!(v["user.id"], "alice");
    assert_eq!(v["message"], "allowed: the token verified");
    // sha256("a.b.c") starts with these 8 bytes (sha256sum).
    assert_eq!(v["jwtguard.token.fingerprint"], "845e30448809e2bc");
}

#[test]
fn hostile_values_stay_on_one_escaped_line() {
    let nasty = [
        "/api/\r\n{\"event.outcome\":\"success\"}",
        "a\u{1b}[31mred\u{7f}",
        "quote\" backslash\\ tab\t",
        "bidi \u{202e} emoji \u{1f600} nul \u{0}",
    ];
    for format in [LogFormat::Json, LogFormat::Text] {
        for value in nasty {
            let mut out = String::new();
            request(value, value, None).encode(format, at(0, 0), &mut out);
            assert!(
                out.bytes().all(|b| (b' '..=b'~').contains(&b)),
                "{format:?}: {out}"
            );
            if format == LogFormat::Json {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["url.path"], value, "JSON escaping round-trips");
                assert_eq!(v["event.outcome"], "failure");
            } else {
                assert!(out.ends_with(" message=\"refused: token signature does not verify\""));
            }
        }
    }
}

#[test]
fn text_event_has_fields_in_fixed_order() {
    let mut out = String::new();
    request("/api/a b", "x\"y", None).encode(LogFormat::Text, at(0, 0), &mut out);
    assert_eq!(
        out,
        "@timestamp=1970-01-01T00:00:00.000Z log.level=warn event.action=authorize event.outcome=failure \
         event.reason=bad_signature source.ip=127.0.0.1 http.response.status_code=401 \
         http.request.id=0000abcd-1 ecs.version=9.3.0 event.kind=event \
         event.category=web,authentication event.type=access,denied \
         jwtguard.token.fingerprint=845e30448809e2bc \
         http.request.method=\"GET\" url.path=\"/api/a b\" user_agent.original=\"x\\\"y\" \
         message=\"refused: token signature does not verify\""
    );
}

#[test]
fn ip_addresses_of_both_families() {
    for ip in [
        "0.0.0.0",
        "192.168.10.255",
        "::1",
        "2001:db8::8a2e:370:7334",
    ] {
        let mut out = String::new();
        push_ip(ip.parse().unwrap(), &mut out);
        assert_eq!(out, ip);
    }
}

#[test]
fn long_values_are_capped_on_a_char_boundary() {
    let long = "é".repeat(MAX_FIELD_BYTES); // 2 bytes each
    let v = json(&request(&long, "a", None));
    let path = v["url.path"].as_str().unwrap();
    assert_eq!(path, format!("{}...", "é".repeat(MAX_FIELD_BYTES / 2)));
}

#[test]
fn service_events_carry_their_fields_separately() {
    let config = [
        ("listen", "127.0.0.1:0".to_owned()),
        ("protect", "/api/\n".to_owned()),
    ];
    let v = json(&Event::Service(ServiceEvent::Startup {
        url: "http://127.0.0.1:1",
        config: &config,
    }));
    assert_eq!(v["event.action"], "startup");
    assert_eq!(v["event.type"], serde_json::json!(["start"]));
    assert_eq!(v["process.pid"], std::process::id());
    assert_eq!(v["service.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["jwtguard.config.listen"], "127.0.0.1:0");
    assert_eq!(v["jwtguard.config.protect"], "/api/\n");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("listening on http://127.0.0.1:1")
    );

    let v = json(&Event::Service(ServiceEvent::Shutdown {
        cause: Cause::Signal("SIGTERM"),
        answered: 3,
    }));
    assert_eq!(v["event.reason"], "SIGTERM");
    assert_eq!(v["jwtguard.requests"], 3);
    assert_eq!(v["message"], "stopped by SIGTERM after 3 requests");
    let v = json(&Event::Service(ServiceEvent::Shutdown {
        cause: Cause::AcceptFailed,
        answered: 0,
    }));
    assert_eq!(
        (v["log.level"].as_str(), v["event.outcome"].as_str()),
        (Some("error"), Some("failure"))
    );
}

#[test]
fn the_longest_events_fit_in_a_line() {
    // Every value from outside at its cap, in the character that escapes longest, 20
    // settings (more than a configuration has), and the longest seal.
    let worst = "\u{7f}".repeat(MAX_MESSAGE_BYTES + 1);
    let value = &worst[..MAX_FIELD_BYTES + 1];
    let config: Vec<_> = (0..20)
        .map(|_| ("strip_authorization", value.to_owned()))
        .collect();
    let ip = Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
    let events = [
        Event::Record {
            level: log::Level::Error,
            logger: value,
            message: &worst,
        },
        Event::Service(ServiceEvent::Startup {
            url: &worst,
            config: &config,
        }),
        Event::Request(RequestEvent {
            source_ip: ip,
            client_ip: ip,
            request_id: Some(RequestId::new(u32::MAX, u64::MAX)),
            method: value,
            path: value,
            user: Some(value),
            user_agent: Some(value),
            kid: None,
            alg: None,
            ..match request("/", "a", Some("u")) {
                Event::Request(e) => e,
                _ => unreachable!(),
            }
        }),
        Event::Supervision(Supervision::Failed {
            action: "restart",
            previous: u32::MAX,
            how: &worst,
            slot: usize::MAX,
        }),
    ];
    for format in [LogFormat::Json, LogFormat::Text] {
        for (i, event) in events.iter().enumerate() {
            let mut line = String::new();
            event.encode(format, at(253_402_300_799, 999), &mut line);
            let mut line = line.into_bytes();
            let (covered, json) = sealed_part(&line);
            let covered = covered.len();
            line.truncate(covered);
            push_seal(&mut line, json, u64::MAX, &[0xff; 16]);
            line.push(b'\n');
            assert!(
                line.len() <= MAX_LINE_BYTES,
                "{format:?} {i}: {}",
                line.len()
            );
        }
    }
}

#[test]
fn other_records_are_escaped_too() {
    let v = json(&Event::Record {
        level: log::Level::Warn,
        logger: "tiny_http",
        message: "bind failed\nfake line",
    });
    assert_eq!(v["message"], "bind failed\nfake line");
    assert_eq!(v["log.logger"], "tiny_http");
    assert_eq!(v["log.level"], "warn");
}
