//! The oracles: what jwtguard's parsers and encoders must give, written from the README,
//! RFC 6750 and RFC 7519 rather than from the code under test.
//!
//! Shared by the fuzz targets (through this crate) and by the unit tests in
//! src/proptests.rs (through `#[path]`), which is why it names the crate under test only
//! as `super::{LogFormat, Reason}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::{LogFormat, Reason};

/// What [`crate`]'s verifier returns: the user, or the reason and the user of a genuine
/// token.
pub type Verdict = Result<String, (Reason, Option<String>)>;

const BASE64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The leeway of the default policy, in seconds.
const LEEWAY: f64 = 30.0;

// ----- Authorization ---------------------------------------------------------------------

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c))
}

/// What a token returned from the `Authorization` header values `values` must satisfy,
/// with a cap of `cap` bytes: a non-empty b64token within the cap, from the only value,
/// after a case-insensitive `Bearer` and spaces.
pub fn check_bearer(values: &[&str], cap: usize, got: Result<&str, Reason>) -> Result<(), String> {
    match (values, got) {
        ([], Err(Reason::MissingToken)) => Ok(()),
        ([], other) => Err(format!("no header gave {other:?}")),
        ([_, _, ..], Err(Reason::InvalidRequest)) => Ok(()),
        ([_, _, ..], other) => Err(format!("several headers gave {other:?}")),
        ([_], Err(Reason::InvalidRequest | Reason::UnsupportedScheme)) => Ok(()),
        ([_], Err(other)) => Err(format!("one header gave {other:?}")),
        ([value], Ok(token)) => {
            if token.is_empty() || token.len() > cap || !is_b64token(token) {
                return Err(format!(
                    "{token:?} is not a b64token of at most {cap} bytes"
                ));
            }
            let value = value.trim_matches([' ', '\t']);
            let scheme = value
                .strip_suffix(token)
                .map(|s| s.trim_end_matches(' '))
                .ok_or_else(|| format!("{token:?} does not end {value:?}"))?;
            if !scheme.eq_ignore_ascii_case("bearer") || scheme.len() + token.len() == value.len() {
                return Err(format!("{value:?} gave {token:?}"));
            }
            Ok(())
        }
    }
}

// ----- Tokens ----------------------------------------------------------------------------

/// The base64url signature of `message` under `secret` (HMAC-SHA256).
pub fn signature(secret: &[u8], message: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(message.as_bytes());
    BASE64URL.encode(mac.finalize().into_bytes())
}

/// A compact HS256 JWS of these header and claims bytes, whatever they hold.
pub fn sign(secret: &[u8], header: &[u8], claims: &[u8]) -> String {
    let message = format!("{}.{}", BASE64URL.encode(header), BASE64URL.encode(claims));
    let signature = signature(secret, &message);
    format!("{message}.{signature}")
}

/// Whether `token` is three parts whose third is the signature of the first two under
/// `secret`: a token its holder signed.
pub fn is_genuine(secret: &[u8], token: &str) -> bool {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(sig), None) => {
            sig == signature(secret, &format!("{header}.{payload}"))
        }
        _ => false,
    }
}

/// The algorithms jwtguard verifies (with keys pinned to each).
const VERIFIED: [&str; 8] = [
    "HS256", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
];

/// What the verifier keyed with `secret` under the default policy (30 s leeway, `exp`
/// required, no issuer or audience) must answer for `token` at `now`.
pub fn expected_verdict(secret: &[u8], token: &str, now: Option<f64>) -> Verdict {
    let malformed = Err((Reason::MalformedToken, None));
    let Some(now) = now else {
        return Err((Reason::ClockError, None));
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, sig] = parts[..] else {
        return malformed;
    };
    let Ok(header) = BASE64URL.decode(header) else {
        return malformed;
    };
    // RFC 7515 §4.1: `alg` a string; `crit` names extensions, and jwtguard has none.
    let Some(fields) = json_object(&header, &["alg", "kid"], &["crit"]) else {
        return malformed;
    };
    // `kid`: a string (any, with one key that has none) or null.
    if !matches!(
        field(&fields, "kid"),
        Ok(None | Some(Value::String(_) | Value::Null))
    ) {
        return malformed;
    }
    // A header that does not parse (a field repeated, alg missing or not a string) is
    // malformed; then the algorithm is checked, and only then `crit`.
    match (field(&fields, "alg"), field(&fields, "crit")) {
        (Ok(Some(Value::String(alg))), Ok(_)) if !VERIFIED.contains(&alg.as_str()) => {
            return Err((Reason::AlgNotAllowed, None));
        }
        // An algorithm jwtguard verifies, but not with the HS256 secret: each key is
        // pinned to its own (after `crit`, which refuses any header).
        (Ok(Some(Value::String(alg))), Ok(None | Some(Value::Null))) if alg != "HS256" => {
            return Err((Reason::AlgorithmMismatch, None));
        }
        (Ok(Some(Value::String(_))), Ok(None | Some(Value::Null))) => {}
        _ => return malformed,
    }
    // The signature: 32 bytes as canonical unpadded base64url.
    if sig.len() > 64 {
        return Err((Reason::BadSignature, None));
    }
    if BASE64URL.decode(sig).is_err() {
        return malformed;
    }
    if !is_genuine(secret, token) {
        return Err((Reason::BadSignature, None));
    }
    let Ok(payload) = BASE64URL.decode(payload) else {
        return malformed;
    };
    let known = [
        "exp", "nbf", "iss", "aud", "sub", "user_id", "scope", "scp", "roles",
    ];
    let Some(claims) = json_object(&payload, &known, &[]) else {
        return malformed;
    };
    let mut values = [None; 9];
    for (slot, name) in values.iter_mut().zip(known) {
        match field(&claims, name) {
            Ok(value) => *slot = value.filter(|v| !v.is_null()),
            Err(()) => return malformed,
        }
    }
    let [exp, nbf, iss, aud, sub, user_id, scope, scp, roles] = values;
    // Scopes: a space-separated string or an array of strings (none are asked for here).
    for scopes in [scope, scp, roles].into_iter().flatten() {
        let ok = match scopes {
            Value::String(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return malformed;
        }
    }
    // NumericDate is a JSON number; iss and sub are strings; aud one string or an array of
    // them; user_id (the blog's) a string or a 64-bit integer.
    let number = |v: Option<&Value>| v.map(|v| v.as_f64().ok_or(()));
    let (Ok(exp), Ok(nbf)) = (number(exp).transpose(), number(nbf).transpose()) else {
        return malformed;
    };
    if iss.is_some_and(|v| !v.is_string()) || sub.is_some_and(|v| !v.is_string()) {
        return malformed;
    }
    if let Some(aud) = aud {
        let ok = match aud {
            Value::String(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return malformed;
        }
    }
    let user_id = match user_id {
        None => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(id) => match id.as_i64() {
            Some(n) => Some(n.to_string()),
            None => return malformed,
        },
    };
    // `sub` wins over `user_id`; an empty one names nobody.
    let user = match sub {
        Some(sub) => sub.as_str().map(str::to_owned),
        None => user_id,
    }
    .filter(|u| !u.is_empty());
    let refuse = |reason| Err((reason, user.clone()));
    match exp {
        None => return refuse(Reason::MissingClaim),
        Some(exp) if exp < now - LEEWAY => return refuse(Reason::Expired),
        Some(_) => {}
    }
    if nbf.is_some_and(|nbf| nbf > now + LEEWAY) {
        return refuse(Reason::NotYetValid);
    }
    if aud.is_some() {
        // No audience configured: a token meant for some audience is not for us.
        return refuse(Reason::InvalidAudience);
    }
    match user.clone() {
        Some(user) => Ok(user),
        None => refuse(Reason::MissingClaim),
    }
}

/// One member of a JSON object: `Some(value)` for a field read as a value, `None` for
/// one only skipped.
type Member = (String, Option<Value>);

/// The members of the JSON object in `bytes`, in order and with repeats, or `None` when
/// it is no object. Members named in `read` are read as values; those in `present` only
/// as null (`Value::Null`) or not (`Value::Bool(true)`); the others are skipped, as a
/// serde struct skips fields it does not know (without looking inside strings).
fn json_object(bytes: &[u8], read: &[&str], present: &[&str]) -> Option<Vec<Member>> {
    struct Members<'k>(&'k [&'k str], &'k [&'k str]);
    impl<'de> Visitor<'de> for Members<'_> {
        type Value = Vec<Member>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Member>, A::Error> {
            let mut members = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = if self.0.contains(&key.as_str()) {
                    Some(map.next_value::<Value>()?)
                } else if self.1.contains(&key.as_str()) {
                    let some = map.next_value::<Option<IgnoredAny>>()?.is_some();
                    Some(if some { Value::Bool(true) } else { Value::Null })
                } else {
                    map.next_value::<IgnoredAny>()?;
                    None
                };
                members.push((key, value));
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let members = (&mut de).deserialize_map(Members(read, present)).ok()?;
    de.end().ok()?;
    Some(members)
}

/// The value of the member `name` (`None` when absent), or `Err` when it is repeated.
fn field<'m>(members: &'m [Member], name: &str) -> Result<Option<&'m Value>, ()> {
    let mut found = members.iter().filter(|(key, _)| key == name);
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some((_, value)), None) => Ok(value.as_ref()),
        (Some(_), Some(_)) => Err(()),
    }
}

// ----- Log lines -------------------------------------------------------------------------

/// `value` as a log line must carry it: whole when it has at most `cap` bytes, else its
/// longest prefix of whole characters within `cap` bytes, then `...`.
pub fn capped(value: &str, cap: usize) -> String {
    if value.len() <= cap {
        return value.to_owned();
    }
    let mut out = String::new();
    for c in value.chars() {
        if out.len() + c.len_utf8() > cap {
            break;
        }
        out.push(c);
    }
    out + "..."
}

/// What a field of a log line must hold.
#[derive(Clone, Copy, Debug)]
pub enum Want<'a> {
    /// One of jwtguard's own values (a code, a number): only its place is checked.
    Own,
    /// The time the event was stamped with (see [`check_timestamp`]).
    Time(SystemTime),
    /// A value from outside (or the message): always quoted, escaped, and `capped(value,
    /// cap)` once unescaped.
    Quoted(&'a str, usize),
}

/// Checks that `line` is one line of printable ASCII that carries exactly the fields
/// `want`, in that order, in `format`: JSON that serde_json reads back, or text whose
/// quoted values unescape back and which ends with the quoted `message`.
pub fn check_line(line: &str, format: LogFormat, want: &[(&str, Want)]) -> Result<(), String> {
    if let Some(b) = line.bytes().find(|b| !(b' '..=b'~').contains(b)) {
        return Err(format!("byte {b:#04x} in {line:?}"));
    }
    let got: Vec<(String, Value)> = match format {
        LogFormat::Json => json_object(
            line.as_bytes(),
            &want.iter().map(|w| w.0).collect::<Vec<_>>(),
            &[],
        )
        .ok_or_else(|| format!("not a JSON object: {line}"))?
        .into_iter()
        .map(|(key, value)| (key, value.unwrap_or_default()))
        .collect(),
        LogFormat::Text => text_fields(line)?,
    };
    let keys: Vec<&str> = got.iter().map(|(key, _)| key.as_str()).collect();
    let wanted: Vec<&str> = want.iter().map(|(key, _)| *key).collect();
    if keys != wanted {
        return Err(format!("fields {keys:?}, not {wanted:?}: {line}"));
    }
    for ((key, value), (_, want)) in got.iter().zip(want) {
        match want {
            Want::Quoted(raw, cap) => {
                let expected = capped(raw, *cap);
                if value.as_str() != Some(expected.as_str()) {
                    return Err(format!("{key} is {value}, not {expected:?}: {line}"));
                }
            }
            // In text, our own values are bare (a JSON string here only if quoted).
            Want::Own | Want::Time(_) if format == LogFormat::Text && value.is_string() => {
                return Err(format!("{key} is quoted: {line}"));
            }
            Want::Own => {}
            Want::Time(time) => {
                let text = match format {
                    LogFormat::Json => value.as_str(),
                    LogFormat::Text => bare_value(line, key),
                };
                let text = text.ok_or_else(|| format!("{key} is {value}: {line}"))?;
                check_timestamp(text, *time).map_err(|e| format!("{e}: {line}"))?;
            }
        }
    }
    Ok(())
}

/// The bare value of `key` in the text line `line`.
fn bare_value<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split(' ')
        .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
}

/// The earliest time httpdate cannot write: year 10000.
const YEAR_10000: u64 = 253_402_300_800;

/// Checks an event's `@timestamp`, `text`, against the time it was stamped with, `time`:
/// RFC 3339 in UTC with milliseconds, the epoch for a clock before 1970, the calendar
/// compared with httpdate's up to year 9999 (past it, only the shape).
pub fn check_timestamp(text: &str, time: SystemTime) -> Result<(), String> {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let wrong = || Err(format!("@timestamp {text:?} for {since:?} after the epoch"));
    let Some(date_time) = text.strip_suffix(&format!(".{:03}Z", since.subsec_millis())) else {
        return wrong();
    };
    if secs >= YEAR_10000 {
        let shape = date_time.split_once('-').is_some_and(|(year, rest)| {
            year.len() > 4 && year.bytes().all(|b| b.is_ascii_digit()) && rest.len() == 14
        });
        return if shape { Ok(()) } else { wrong() };
    }
    // "Thu, 01 Jan 1970 00:00:00 GMT"
    let http = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    let parts: Vec<&str> = http.split(' ').collect();
    let [_, day, month, year, clock, "GMT"] = parts[..] else {
        return Err(format!("httpdate wrote {http:?}"));
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == month).expect("a month") + 1;
    if date_time != format!("{year}-{month:02}-{day}T{clock}") {
        return wrong();
    }
    Ok(())
}

/// The `key=value` fields of a text line, separated by one space: quoted values
/// unescaped (as `Value::String`), bare ones as `Value::Null`.
fn text_fields(line: &str) -> Result<Vec<(String, Value)>, String> {
    let bytes = line.as_bytes();
    let mut fields = Vec::new();
    let mut i = 0;
    let bad = |what: &str, at: usize| Err(format!("{what} at byte {at}: {line}"));
    loop {
        let start = i;
        let key_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@');
        while bytes.get(i).is_some_and(|&b| key_byte(b)) {
            i += 1;
        }
        if i == start || bytes.get(i) != Some(&b'=') {
            return bad("no key", start);
        }
        let key = line[start..i].to_owned();
        i += 1;
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut value = String::new();
            loop {
                match bytes.get(i) {
                    None => return bad("no closing quote", i),
                    Some(b'"') => break,
                    Some(b'\\') => match bytes.get(i + 1) {
                        Some(&c @ (b'"' | b'\\')) => {
                            value.push(char::from(c));
                            i += 2;
                        }
                        Some(b'u') if bytes.get(i + 2) == Some(&b'{') => {
                            let Some(len) = line[i + 3..].find('}') else {
                                return bad("unclosed \\u{", i);
                            };
                            let hex = &line[i + 3..i + 3 + len];
                            let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                            // Only what must be escaped is, in lower-case hex without zeros
                            // in front: one way to write each value.
                            match c {
                                Some(c)
                                    if !(' '..='~').contains(&c)
                                        && format!("{:x}", c as u32) == hex =>
                                {
                                    value.push(c);
                                }
                                _ => return bad("a bad \\u{}", i),
                            }
                            i += 3 + len + 1;
                        }
                        _ => return bad("a bad escape", i),
                    },
                    Some(&c) => {
                        value.push(char::from(c));
                        i += 1;
                    }
                }
            }
            i += 1;
            Value::String(value)
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b' ' {
                if matches!(bytes[i], b'"' | b'\\' | b'=') {
                    return bad("a quote, backslash or = in a bare value", i);
                }
                i += 1;
            }
            if i == start {
                return bad("an empty bare value", i);
            }
            Value::Null
        };
        fields.push((key, value));
        match bytes.get(i) {
            None => break,
            Some(b' ') => i += 1,
            Some(_) => return bad("no space after a value", i),
        }
    }
    if !matches!(fields.last(), Some((key, Value::String(_))) if key == "message") {
        return Err(format!("does not end with message=\"...\": {line}"));
    }
    Ok(fields)
}
