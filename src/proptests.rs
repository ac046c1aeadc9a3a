//! Property tests of the input parsers and the log encoders, on the crate's own items: the
//! `Authorization` parser returns only b64tokens within the cap, the verifier never panics
//! and accepts only what it signed (and gives a genuine token the verdict RFC 7519 and the
//! policy call for), and every event is one line of printable ASCII that reads back.
//!
//! The oracles are fuzz/src/check.rs, shared with the fuzz targets in fuzz/ (which run
//! the same checks for minutes rather than cases: tests/fuzz.sh).

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::decide::bearer::bearer_token;
use crate::event::{
    Action, Event, Fingerprint, MAX_FIELD_BYTES, RequestEvent, RequestId, ServiceEvent,
};
use crate::token::{Ask, Policy, Verifier};
use crate::{LogFormat, Reason};

#[path = "../fuzz/src/check.rs"]
mod check;

use check::Want;

/// The cap on the message, in bytes.
const MESSAGE_CAP: usize = 4096;

const SECRET: &[u8] = b"proptest-secret-0123456789abcdef0123456789";

/// One verifier for all cases, as the server has: its remembered header is exercised too.
static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    use crate::keys::{Alg, Material, VerifyingKey};
    Verifier::new(
        &[VerifyingKey::new(
            None,
            Alg::Hs256,
            Material::Oct(SECRET.to_vec()),
        )],
        Policy {
            leeway: 30,
            require_exp: true,
            issuer: None,
            audience: None,
        },
        None,
    )
});

/// Strings made of what escaping, capping and parsing must get right: printable ASCII,
/// quotes and backslashes, escape look-alikes, control characters, DEL, any Unicode
/// scalar value, and runs long enough to cross the 256-byte cap, sometimes mid-character.
fn awkward() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[ -~]{0,12}",
        2 => "[\\x00-\\x1f\\x7f]{1,3}",
        2 => prop::sample::select(vec![
            "\"", "\\", "\\u{41}", "\\u0041", "=", " ", "\r\n", "\" message=\"", "\",\"x\":\"",
            "Bearer ", "\u{85}", "\u{2028}", "\u{202e}", "\u{feff}", "\u{fffd}", "\u{10ffff}",
        ])
        .prop_map(str::to_owned),
        2 => any::<char>().prop_map(String::from),
        1 => "[a-z\u{e9}\u{1f600}]{100,300}",
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// Any time the log may be stamped with, before 1970 too.
fn time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        4 => (0u64..=u64::MAX / 1000).prop_map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        1 => (0u64..1 << 40).prop_map(|ms| UNIX_EPOCH - Duration::from_millis(ms)),
    ]
}

fn format() -> impl Strategy<Value = LogFormat> {
    prop_oneof![Just(LogFormat::Json), Just(LogFormat::Text)]
}

/// The fields jwtguard writes itself at the start of every event stamped `now`.
fn head(now: SystemTime) -> Vec<(&'static str, Want<'static>)> {
    vec![("@timestamp", Want::Time(now)), ("log.level", Want::Own)]
}

/// `event.kind` and the categorisation fields, as [`crate::event`] writes them.
const ECS: [(&str, Want); 4] = [
    ("ecs.version", Want::Own),
    ("event.kind", Want::Own),
    ("event.category", Want::Own),
    ("event.type", Want::Own),
];

fn encode(event: &Event, format: LogFormat, now: SystemTime) -> String {
    let mut line = String::new();
    event.encode(format, now, &mut line);
    line
}

proptest! {
    /// A request event, allowed or refused, with any values from the request: one line of
    /// printable ASCII with exactly its fields, its values reading back capped.
    #[test]
    fn request_events_are_one_line_that_reads_back(
        method in awkward(),
        path in awkward(),
        user in prop::option::of(awkward()),
        user_agent in prop::option::of(awkward()),
        outcome in prop::option::of(prop::sample::select(Reason::ALL.to_vec())),
        source_ip in prop::option::of(any::<[u8; 16]>().prop_map(IpAddr::from)),
        token in prop::option::of("[ -~]{0,40}"),
        id in (any::<u32>(), any::<u64>()),
        now in time(),
        format in format(),
    ) {
        let (reason, reason_text, message) = match outcome {
            None => ("ok", "the token verified", "allowed: the token verified".to_owned()),
            Some(r) => (r.code(), r.text(), format!("refused: {}", r.text())),
        };
        let event = Event::Request(RequestEvent {
            success: outcome.is_none(),
            reason,
            reason_text,
            action: Action::Authorize,
            source_ip: source_ip.map(|ip| ip.to_canonical()),
            client_ip: None,
            status: Some(outcome.map_or(200, Reason::status)),
            request_id: Some(RequestId::new(id.0, id.1)),
            fingerprint: token.as_deref().map(Fingerprint::of),
            method: &method,
            path: &path,
            user: user.as_deref(),
            user_agent: user_agent.as_deref(),
            kid: None,
            alg: None,
        });
        let mut want = head(now);
        want.extend([
            ("event.action", Want::Own),
            ("event.outcome", Want::Own),
            ("event.reason", Want::Own),
        ]);
        if source_ip.is_some() {
            want.push(("source.ip", Want::Own));
        }
        want.extend([("http.response.status_code", Want::Own), ("http.request.id", Want::Own)]);
        want.extend(ECS);
        if token.is_some() {
            want.push(("jwtguard.token.fingerprint", Want::Own));
        }
        want.push(("http.request.method", Want::Quoted(&method, MAX_FIELD_BYTES)));
        want.push(("url.path", Want::Quoted(&path, MAX_FIELD_BYTES)));
        if let Some(user) = &user {
            want.push(("user.id", Want::Quoted(user, MAX_FIELD_BYTES)));
        }
        if let Some(agent) = &user_agent {
            want.push(("user_agent.original", Want::Quoted(agent, MAX_FIELD_BYTES)));
        }
        want.push(("message", Want::Quoted(&message, MESSAGE_CAP)));
        let line = encode(&event, format, now);
        check::check_line(&line, format, &want).map_err(TestCaseError::fail)?;
    }

    /// Another logger's record (a library's warning, tiny_http's errors), any logger name
    /// and message: one line, the message capped at 4 KiB.
    #[test]
    fn other_records_are_one_line_that_reads_back(
        level in prop::sample::select(vec![
            log::Level::Error, log::Level::Warn, log::Level::Info, log::Level::Debug,
            log::Level::Trace,
        ]),
        logger in awkward(),
        message in prop_oneof![3 => awkward(), 1 => "[\\x00-\u{ff}]{4000,4200}"],
        now in time(),
        format in format(),
    ) {
        let event = Event::Record { level, logger: &logger, message: &message };
        let mut want = head(now);
        want.extend(ECS);
        want.push(("log.logger", Want::Quoted(&logger, MAX_FIELD_BYTES)));
        want.push(("message", Want::Quoted(&message, MESSAGE_CAP)));
        let line = encode(&event, format, now);
        check::check_line(&line, format, &want).map_err(TestCaseError::fail)?;
    }

    /// The start-up event carries the configuration's values (paths, addresses), which an
    /// operator typed: escaped and capped like a request's.
    #[test]
    fn startup_events_are_one_line_that_reads_back(
        url in awkward(),
        listen in awkward(),
        protect in awkward(),
        format in format(),
    ) {
        let config = [("listen", listen.clone()), ("protect", protect.clone())];
        let event = Event::Service(ServiceEvent::Startup { url: &url, config: &config });
        let message = format!("jwtguard {} listening on {url}", env!("CARGO_PKG_VERSION"));
        let now = SystemTime::now();
        let mut want = head(now);
        want.extend([("event.action", Want::Own), ("event.outcome", Want::Own)]);
        want.extend(ECS);
        want.extend([
            ("service.version", Want::Own),
            ("process.pid", Want::Own),
            ("process.parent.pid", Want::Own),
        ]);
        want.push(("url.full", Want::Quoted(&url, MAX_FIELD_BYTES)));
        want.push(("jwtguard.config.listen", Want::Quoted(&listen, MAX_FIELD_BYTES)));
        want.push(("jwtguard.config.protect", Want::Quoted(&protect, MAX_FIELD_BYTES)));
        want.push(("message", Want::Quoted(&message, MESSAGE_CAP)));
        let line = encode(&event, format, now);
        check::check_line(&line, format, &want).map_err(TestCaseError::fail)?;
    }

    /// Any `Authorization` header values, any cap: no panic, and a token only when there
    /// is one value, `Bearer` and a non-empty b64token within the cap.
    #[test]
    fn bearer_parser_returns_only_b64tokens_within_the_cap(
        values in prop_oneof![
            3 => prop_oneof![3 => bearer_like(), 1 => awkward()].prop_map(|v| vec![v]),
            1 => prop::collection::vec(prop_oneof![bearer_like(), awkward()], 0..4),
        ],
        cap in prop_oneof![Just(8192usize), 0usize..48],
    ) {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let got = bearer_token(values.iter().copied(), cap);
        check::check_bearer(&values, cap, got).map_err(TestCaseError::fail)?;
    }

    /// And the other way: a well-formed bearer header within the cap gives its token.
    #[test]
    fn bearer_parser_finds_every_well_formed_token(
        (before, scheme, gap, token, after) in (
            "[ \t]{0,3}", "[Bb][Ee][Aa][Rr][Ee][Rr]", " {1,3}",
            "[A-Za-z0-9._~+/-]{1,60}={0,2}", "[ \t]{0,3}",
        ),
        spare in 0usize..4,
    ) {
        prop_assert!(check::is_b64token(&token));
        let value = format!("{before}{scheme}{gap}{token}{after}");
        prop_assert_eq!(bearer_token([value.as_str()], token.len() + spare), Ok(token.as_str()));
        if token.len() > 1 {
            prop_assert_eq!(
                bearer_token([value.as_str()], token.len() - 1),
                Err(Reason::InvalidRequest)
            );
        }
    }

    /// Any string, three base64url-looking parts, a token signed with another secret, or
    /// one of ours with a character changed: no panic, the oracle's verdict, and never a
    /// user for a token the verifier did not sign.
    #[test]
    fn verifier_accepts_only_what_it_signed(
        token in prop_oneof![
            awkward(),
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,50}",
            claims().prop_map(|c| signed(&json!({"alg": "HS256"}), &c, b"another secret")),
            (claims(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(c, at, ch)| {
                let token = signed(&json!({"alg": "HS256", "typ": "JWT"}), &c, SECRET);
                let at = at.index(token.len());
                format!("{}{ch}{}", &token[..at], &token[at + 1..])
            }),
        ],
        now in clock(),
    ) {
        let got = verify(&token, now);
        if !check::is_genuine(SECRET, &token) {
            prop_assert!(matches!(got, Err((_, None))), "{:?} gave {:?}", token, got);
        }
        prop_assert_eq!(got, check::expected_verdict(SECRET, &token, now), "{}", token);
    }

    /// Tokens signed with the secret, with any mix of the claims it checks: the verdict the
    /// policy calls for (a user only when sub or user_id names one, exp not past, nbf
    /// reached, no audience), and the user named in every refusal it can name.
    #[test]
    fn genuine_tokens_get_the_policys_verdict(
        header in prop_oneof![
            8 => prop::sample::select(vec![
                json!({"alg": "HS256"}),
                json!({"typ": "JWT", "alg": "HS256"}),
                json!({"alg": "HS256", "crit": null}),
            ]),
            1 => prop::sample::select(vec![
                json!({"alg": "HS256", "crit": ["exp"]}),
                json!({"alg": "none"}),
                json!({"alg": "HS512"}),
                json!({"typ": "JWT"}),
                json!({"alg": 256}),
            ]),
        ],
        claims in claims(),
        now in clock(),
    ) {
        let token = signed(&header, &claims, SECRET);
        let got = verify(&token, now);
        if let (Ok(user), Some(now)) = (&got, now) {
            let exp = claims.get("exp").and_then(Value::as_f64);
            prop_assert!(!user.is_empty() && exp.is_some_and(|exp| exp >= now - 30.0));
        }
        prop_assert_eq!(got, check::expected_verdict(SECRET, &token, now), "{}", claims);
    }
}

/// A value that looks like a bearer header: blanks, `Bearer` in any case (or another
/// scheme, or none), blanks, a b64token with sometimes one character that is not allowed
/// (or an `=` inside), `=` padding, blanks.
fn bearer_like() -> impl Strategy<Value = String> {
    (
        "[ \t]{0,2}",
        prop_oneof![4 => "[Bb][Ee][Aa][Rr][Ee][Rr]", 1 => "Basic|Bearer[ -~]|"],
        prop_oneof![4 => " {1,3}", 1 => "[ \t]{0,3}"],
        "[A-Za-z0-9._~+/-]{0,30}",
        prop::option::of((
            any::<prop::sample::Index>(),
            prop_oneof![
                3 => prop::sample::select(vec![',', ' ', '\t', '=', '"', ';', '\0', '\u{e9}']),
                1 => any::<char>(),
            ],
        )),
        "={0,2}",
        "[ \t]{0,2}",
    )
        .prop_map(|(lead, scheme, gap, mut token, odd, pad, trail)| {
            if let Some((at, c)) = odd {
                let at = at.index(token.len() + 1);
                token.insert(at, c);
            }
            format!("{lead}{scheme}{gap}{token}{pad}{trail}")
        })
}

/// The shared verifier's verdict, as `jwtguard::fuzzing::verify` gives it.
fn verify(token: &str, now: Option<f64>) -> check::Verdict {
    let ask = Ask {
        scopes: &[],
        claims: false,
    };
    VERIFIER
        .verify(token, now, ask)
        .map(|verified| verified.user)
        .map_err(|d| (d.reason, d.user))
}

/// The clock: mostly around [`NOW`], sometimes before 1970.
fn clock() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        8 => Just(Some(NOW)),
        2 => (0.0..4e9f64).prop_map(Some),
        1 => Just(None),
    ]
}

const NOW: f64 = 1_700_000_000.25;

/// A compact HS256 JWS of these header and claims, signed with `secret`.
fn signed(header: &Value, claims: &Value, secret: &[u8]) -> String {
    check::sign(
        secret,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}

/// A claims set: each claim the verifier reads mostly of its type (times near the
/// boundaries of the leeway), sometimes absent, null or of another type; and an unknown
/// claim.
fn claims() -> impl Strategy<Value = Value> {
    let time = prop_oneof![
        4 => (-100.0..100.0f64).prop_map(|d| json!(NOW + d)),
        2 => (-100i64..100).prop_map(|d| json!(1_700_000_000 + d)),
        1 => prop::sample::select(vec![NOW - 30.0, NOW + 30.0]).prop_map(|t| json!(t)),
        1 => any::<i64>().prop_map(|n| json!(n)),
    ];
    let name = prop_oneof![
        4 => awkward().prop_map(Value::from),
        1 => Just(json!("")),
        2 => any::<i64>().prop_map(Value::from),
    ];
    let audience = prop_oneof![
        Just(json!("jwtguard")),
        Just(json!(["a", "b"])),
        Just(json!([]))
    ];
    let issuer = Just(json!("https://issuer.example"));
    let wrong = || {
        prop::sample::select(vec![
            json!(null),
            json!("tomorrow"),
            json!(7),
            json!(u64::MAX),
            json!(1.5),
            json!(["a", 1]),
            json!({"sub": "a"}),
        ])
    };
    // Absent, right, or wrong (null included), with these weights.
    let claim = |value: BoxedStrategy<Value>, absent: u32, right: u32, wrong_: u32| {
        prop_oneof![
            absent => Just(None),
            right => value.prop_map(Some),
            wrong_ => wrong().prop_map(Some),
        ]
    };
    (
        claim(time.clone().boxed(), 1, 12, 1),
        claim(time.boxed(), 6, 6, 1),
        claim(name.clone().boxed(), 3, 10, 1),
        claim(name.boxed(), 6, 4, 1),
        claim(audience.boxed(), 12, 2, 1),
        claim(issuer.boxed(), 10, 2, 1),
        prop::option::of(awkward()),
    )
        .prop_map(|(exp, nbf, sub, user_id, aud, iss, extra)| {
            let mut claims = serde_json::Map::new();
            for (key, value) in [
                ("exp", exp),
                ("nbf", nbf),
                ("sub", sub),
                ("user_id", user_id),
                ("aud", aud),
                ("iss", iss),
                ("extra", extra.map(Value::from)),
            ] {
                if let Some(value) = value {
                    claims.insert(key.into(), value);
                }
            }
            Value::Object(claims)
        })
}
