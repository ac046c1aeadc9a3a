//! The security event and its one-line encodings.
//!
//! An event becomes exactly one line of printable ASCII: every value taken from the
//! request or the token is escaped (quotes, backslashes, control characters and all
//! non-ASCII characters) and capped in length, so a hostile header can neither split a
//! line nor forge a field. The token itself never appears; its [`Fingerprint`] does.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The `log` target of security events.
pub const TARGET: &str = "security";

/// The longest request-derived value written to the log, in bytes before escaping.
/// A longer value is cut at a character boundary and ends with `...`.
pub const MAX_FIELD_BYTES: usize = 256;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How log lines are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with Elastic Common Schema field names.
    #[default]
    Json,
    /// The same fields as `key=value` pairs in the same fixed order; values from the
    /// request are always double-quoted.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err(()),
        }
    }
}

/// The first 8 bytes of the SHA-256 of a token, written as 16 hex digits: events of
/// one token can be correlated without the token being stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 8]);

impl Fingerprint {
    /// Fingerprints `token`.
    pub fn of(token: &str) -> Fingerprint {
        let digest = Sha256::digest(token.as_bytes());
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        Fingerprint(first)
    }
}

impl Fingerprint {
    fn push_hex(&self, out: &mut String) {
        for b in self.0 {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hex = String::with_capacity(16);
        self.push_hex(&mut hex);
        f.write_str(&hex)
    }
}

/// A request id: 8 hex digits that differ between runs, `-`, and a counter from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// Random per process.
    pub prefix: u32,
    /// Per request.
    pub n: u64,
}

impl RequestId {
    /// Appends the id as text, `0a1b2c3d-42`.
    pub fn push(&self, out: &mut String) {
        out.push_str(self.text().as_str());
    }

    /// The id as text, `0a1b2c3d-42`, without allocating.
    pub fn text(&self) -> IdText {
        let mut text = IdText {
            bytes: [0; 29],
            len: 9,
        };
        for (i, shift) in (0..8).rev().enumerate() {
            text.bytes[i] = HEX[(self.prefix >> (shift * 4)) as usize & 15];
        }
        text.bytes[8] = b'-';
        let mut digits = itoa::Buffer::new();
        let n = digits.format(self.n).as_bytes();
        text.bytes[9..9 + n.len()].copy_from_slice(n);
        text.len += n.len();
        text
    }
}

/// A [`RequestId`] as text: 8 hex digits, `-`, up to 20 decimal digits.
#[derive(Clone, Copy, Debug)]
pub struct IdText {
    bytes: [u8; 29],
    len: usize,
}

impl IdText {
    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("hex digits, '-' and digits")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// One decision on one request to a protected path.
#[derive(Clone, Debug)]
pub struct RequestEvent<'a> {
    /// `event.outcome`: `true` for `success`, `false` for `failure`.
    pub success: bool,
    /// `event.reason`: `ok` or a [`Reason`](crate::Reason) code.
    pub reason: &'static str,
    /// `source.ip`: the peer address of the connection.
    pub source_ip: Option<IpAddr>,
    /// `http.request.method`.
    pub method: &'a str,
    /// `url.path`: the path without the query string.
    pub path: &'a str,
    /// `http.response.status_code`.
    pub status: u16,
    /// `user_agent.original`.
    pub user_agent: Option<&'a str>,
    /// `http.request.id`.
    pub request_id: RequestId,
    /// `user.id`: set only once the token's signature verified.
    pub user: Option<&'a str>,
    /// `token.fingerprint`: set when the request carried a token.
    pub fingerprint: Option<Fingerprint>,
}

impl RequestEvent<'_> {
    /// The level the event is logged at: `info` for a success, `warn` for a failure.
    pub fn level(&self) -> log::Level {
        if self.success {
            log::Level::Info
        } else {
            log::Level::Warn
        }
    }

    /// Appends the event as one line, without the newline, to `out`.
    pub fn encode(&self, format: LogFormat, now: SystemTime, out: &mut String) {
        let mut line = Line::start(format, now, self.level(), out);
        line.raw("event.action", "authorize");
        line.raw(
            "event.outcome",
            if self.success { "success" } else { "failure" },
        );
        line.raw("event.reason", self.reason);
        if let Some(ip) = self.source_ip {
            line.with("source.ip", |out| push_ip(ip, out));
        }
        line.number("http.response.status_code", self.status);
        line.with("http.request.id", |out| self.request_id.push(out));
        if let Some(fingerprint) = self.fingerprint {
            line.with("token.fingerprint", |out| fingerprint.push_hex(out));
        }
        // Values from the request or the token come last, escaped and capped.
        line.text("http.request.method", self.method);
        line.text("url.path", self.path);
        if let Some(user) = self.user {
            line.text("user.id", user);
        }
        if let Some(agent) = self.user_agent {
            line.text("user_agent.original", agent);
        }
        line.finish();
    }
}

/// Appends a service event (start-up, shutdown, or any other log record) as one line.
///
/// `action` is written as `event.action` when given; `message` is escaped and capped at
/// 4 KiB.
pub fn encode_message(
    format: LogFormat,
    now: SystemTime,
    level: log::Level,
    logger: &str,
    action: Option<&str>,
    message: &str,
    out: &mut String,
) {
    let mut line = Line::start(format, now, level, out);
    if let Some(action) = action {
        line.raw("event.action", action);
    }
    line.text_capped("log.logger", logger, MAX_FIELD_BYTES);
    line.text_capped("message", message, 4096);
    line.finish();
}

/// A line under construction: the same calls give the JSON and the text encodings, so
/// both carry the same fields in the same order.
struct Line<'a> {
    format: LogFormat,
    out: &'a mut String,
}

impl<'a> Line<'a> {
    fn start(format: LogFormat, now: SystemTime, level: log::Level, out: &'a mut String) -> Self {
        let level = level_name(level);
        match format {
            LogFormat::Json => {
                out.push_str("{\"@timestamp\":\"");
                push_timestamp(now, out);
                out.push_str("\",\"log.level\":\"");
                out.push_str(level);
                out.push('"');
            }
            LogFormat::Text => {
                out.push_str("@timestamp=");
                push_timestamp(now, out);
                out.push_str(" log.level=");
                out.push_str(level);
            }
        }
        Line { format, out }
    }

    fn key(&mut self, key: &str) {
        match self.format {
            LogFormat::Json => {
                self.out.push_str(",\"");
                self.out.push_str(key);
                self.out.push_str("\":");
            }
            LogFormat::Text => {
                self.out.push(' ');
                self.out.push_str(key);
                self.out.push('=');
            }
        }
    }

    /// A value of ours (a code or a number) that needs no escaping: quoted in JSON, bare
    /// in text.
    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.quoted_if_json(|out| out.push_str(value));
    }

    /// A value of ours written by `write`, quoted in JSON, bare in text.
    fn with(&mut self, key: &str, write: impl FnOnce(&mut String)) {
        self.key(key);
        self.quoted_if_json(write);
    }

    /// A number: bare in both encodings (ECS types the status code as a number).
    fn number(&mut self, key: &str, value: u16) {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn quoted_if_json(&mut self, write: impl FnOnce(&mut String)) {
        let json = self.format == LogFormat::Json;
        if json {
            self.out.push('"');
        }
        write(self.out);
        if json {
            self.out.push('"');
        }
    }

    /// A value from outside: always quoted, escaped and capped.
    fn text(&mut self, key: &str, value: &str) {
        self.text_capped(key, value, MAX_FIELD_BYTES);
    }

    fn text_capped(&mut self, key: &str, value: &str, cap: usize) {
        self.key(key);
        self.out.push('"');
        let (value, cut) = truncate(value, cap);
        push_escaped(value, self.format, self.out);
        if cut {
            self.out.push_str("...");
        }
        self.out.push('"');
    }

    fn finish(self) {
        if self.format == LogFormat::Json {
            self.out.push('}');
        }
    }
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// `value` cut to at most `cap` bytes at a character boundary, and whether it was cut.
fn truncate(value: &str, cap: usize) -> (&str, bool) {
    if value.len() <= cap {
        return (value, false);
    }
    let mut end = cap;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    (&value[..end], true)
}

/// Escapes `value` into printable ASCII: `"` and `\` get a backslash, and every other
/// character outside `' '..='~'` becomes `\uXXXX` (JSON, UTF-16 units) or `\u{X}` (text).
fn push_escaped(value: &str, format: LogFormat, out: &mut String) {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(value);
        return;
    }
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if (' '..='~').contains(&c) && c != '"' && c != '\\' {
            continue;
        }
        out.push_str(&value[start..i]);
        start = i + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ if format == LogFormat::Json => {
                let mut units = [0; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out.push_str(&value[start..]);
}

/// Writes an IPv4 address without the formatting machinery; IPv6 through `Display`.
fn push_ip(ip: IpAddr, out: &mut String) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Writes `now` as RFC 3339 in UTC with milliseconds: `2026-11-27T02:38:46.123Z`.
///
/// The part up to the seconds is formatted once a second per thread.
pub fn push_timestamp(now: SystemTime, out: &mut String) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let (year, month, day) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            text.clear();
            let _ = write!(
                text,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                rem / 3600,
                rem / 60 % 60,
                rem % 60,
            );
            *cached = secs;
        }
        out.push_str(text);
    });
    let millis = since.subsec_millis();
    out.push('.');
    for digit in [millis / 100, millis / 10 % 10, millis % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
    out.push('Z');
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

static SINK_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many writes to a [`LogWriter`] have failed in this process so far.
///
/// The server compares it before and after it logs an event: a change means the event
/// was not written, and the request is refused with 503.
pub fn sink_failures() -> u64 {
    SINK_FAILURES.load(Ordering::Relaxed)
}

/// The sink under the logger. Give the logger one handle and keep a clone: clones share
/// one sink.
///
/// A write goes straight to the inner writer, unbuffered, so that an event is in the
/// kernel before the response is sent. While a thread holds the sink
/// ([`LogWriter::hold`]), that thread's writes are collected instead, and written together
/// in one `write(2)` when the [`Hold`] is released: [`serve`](crate::serve) holds the
/// events of the requests already waiting and releases them before it answers any of them
/// (a group commit). Other threads' writes still go straight through.
///
/// Failures are counted in [`sink_failures`] and reported on stderr when writing stops and
/// when it works again. A line cut short by a failure is ended with a newline before the
/// next write, so the lines after it stay whole.
#[derive(Clone)]
pub struct LogWriter {
    sink: Arc<Mutex<Sink>>,
}

struct Sink {
    inner: Box<dyn Write + Send>,
    name: String,
    failing: bool,
    /// The last bytes written did not end a line.
    mid_line: bool,
    /// A write failed in the middle of a line: start the next write on a new line.
    torn: bool,
    /// Held writes, per holding thread; a buffer is kept for reuse after its release.
    holds: Vec<Held>,
}

struct Held {
    thread: ThreadId,
    active: bool,
    bytes: Vec<u8>,
}

/// This thread's hold on a [`LogWriter`]: its writes are collected until
/// [`Hold::release`], or the drop of the `Hold`, writes them.
#[must_use = "the writes are held until the Hold is released or dropped"]
#[derive(Debug)]
pub struct Hold<'a> {
    writer: &'a LogWriter,
    released: bool,
}

impl LogWriter {
    /// Wraps `inner`; `name` says in failure reports what it is (`stderr`, a path).
    pub fn new(inner: impl Write + Send + 'static, name: impl Into<String>) -> Self {
        LogWriter {
            sink: Arc::new(Mutex::new(Sink {
                inner: Box::new(inner),
                name: name.into(),
                failing: false,
                mid_line: false,
                torn: false,
                holds: Vec::new(),
            })),
        }
    }

    /// Collects this thread's writes from now on, until the returned [`Hold`] is released.
    pub fn hold(&self) -> Hold<'_> {
        let thread = std::thread::current().id();
        let mut sink = self.sink();
        match sink.holds.iter_mut().find(|h| h.thread == thread) {
            Some(held) => {
                // A hold still active here was leaked (mem::forget): its bytes stay, in
                // order, and go with this one.
                held.active = true;
            }
            None => sink.holds.push(Held {
                thread,
                active: true,
                bytes: Vec::new(),
            }),
        }
        Hold {
            writer: self,
            released: false,
        }
    }

    /// Writes what this thread holds and ends its hold: [`Hold::release`] and the drop of a
    /// [`Hold`].
    fn release(&self) -> usize {
        let thread = std::thread::current().id();
        let mut sink = self.sink();
        let Some(i) = sink.holds.iter().position(|h| h.thread == thread) else {
            return 0;
        };
        sink.holds[i].active = false;
        let bytes = std::mem::take(&mut sink.holds[i].bytes);
        let written = sink.put_all(&bytes);
        sink.holds[i].bytes = bytes;
        sink.holds[i].bytes.clear();
        written
    }

    fn sink(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hold<'_> {
    /// How many bytes this thread has written since the hold began: where its last event
    /// so far ends.
    pub fn held(&self) -> usize {
        let thread = std::thread::current().id();
        let sink = self.writer.sink();
        sink.holds
            .iter()
            .find(|h| h.thread == thread)
            .map_or(0, |h| h.bytes.len())
    }

    /// Writes what this thread holds, in one `write(2)` unless the sink takes less, and
    /// ends the hold. Returns how many of the held bytes were written: all of them unless
    /// the sink failed.
    pub fn release(mut self) -> usize {
        self.released = true;
        self.writer.release()
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.writer.release();
        }
    }
}

impl Sink {
    /// This thread's active hold, if any.
    fn held(&mut self) -> Option<&mut Vec<u8>> {
        let thread = std::thread::current().id();
        self.holds
            .iter_mut()
            .find(|h| h.active && h.thread == thread)
            .map(|h| &mut h.bytes)
    }

    /// One write to the sink, first ending a line torn by an earlier failure.
    fn put(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.torn {
            let mended = self.inner.write_all(b"\n");
            self.track(mended)?;
            self.torn = false;
            self.mid_line = false;
        }
        let result = self.inner.write(bytes);
        match &result {
            Ok(n) if *n > 0 => self.mid_line = bytes[n - 1] != b'\n',
            Err(err) if err.kind() != io::ErrorKind::Interrupted => self.torn = self.mid_line,
            _ => {}
        }
        self.track(result)
    }

    /// Writes `bytes` with as few writes as the sink allows, and flushes; returns how many
    /// were written before a failure (then the flush is not attempted).
    fn put_all(&mut self, bytes: &[u8]) -> usize {
        let mut written = 0;
        while written < bytes.len() {
            match self.put(&bytes[written..]) {
                Ok(0) => {
                    self.torn = self.mid_line;
                    self.failed(&io::ErrorKind::WriteZero.into());
                    return written;
                }
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return written,
            }
        }
        if written > 0 {
            let flushed = self.inner.flush();
            if self.track(flushed).is_err() {
                return 0;
            }
        }
        written
    }

    fn track<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        match &result {
            Err(err) if err.kind() != io::ErrorKind::Interrupted => self.failed(err),
            Ok(_) if self.failing => {
                self.failing = false;
                let _ = writeln!(
                    io::stderr(),
                    "jwtguard: the security log at {} is writable again",
                    self.name
                );
            }
            _ => {}
        }
        result
    }

    fn failed(&mut self, err: &io::Error) {
        SINK_FAILURES.fetch_add(1, Ordering::Relaxed);
        if !self.failing {
            self.failing = true;
            // Not eprintln!: it panics when stderr is the sink that failed.
            let _ = writeln!(
                io::stderr(),
                "jwtguard: cannot write the security log to {}: {err}; refusing protected requests (503) until it works again",
                self.name
            );
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.sink();
        if let Some(held) = sink.held() {
            held.extend_from_slice(buf);
            return Ok(buf.len());
        }
        sink.put(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut sink = self.sink();
        if sink.held().is_some() {
            return Ok(());
        }
        let result = sink.inner.flush();
        sink.track(result)
    }
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sink = self.sink();
        f.debug_struct("LogWriter")
            .field("name", &sink.name)
            .field("failing", &sink.failing)
            .field("holds", &sink.holds.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn event<'a>(path: &'a str, agent: &'a str, user: Option<&'a str>) -> RequestEvent<'a> {
        RequestEvent {
            success: user.is_some(),
            reason: if user.is_some() {
                "ok"
            } else {
                "bad_signature"
            },
            source_ip: Some("127.0.0.1".parse().unwrap()),
            method: "GET",
            path,
            status: if user.is_some() { 200 } else { 401 },
            user_agent: Some(agent),
            request_id: RequestId {
                prefix: 0xabcd,
                n: 1,
            },
            user,
            fingerprint: Some(Fingerprint::of("a.b.c")),
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        // Known instants, checked against `date -u -d @SECS`.
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.007Z"),
            (1_798_338_726, 123, "2026-12-27T02:32:06.123Z"),
            (4_102_444_799, 999, "2099-12-31T23:59:59.999Z"),
            // The same second again: the cached part, new milliseconds.
            (4_102_444_799, 40, "2099-12-31T23:59:59.040Z"),
        ];
        for (secs, millis, want) in cases {
            let mut out = String::new();
            push_timestamp(at(secs, millis), &mut out);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn json_event_has_ecs_fields() {
        let mut out = String::new();
        event("/api/x", "curl/8", Some("alice")).encode(LogFormat::Json, at(0, 5), &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.005Z");
        assert_eq!(v["log.level"], "info");
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
        // sha256("a.b.c") starts with these 8 bytes (sha256sum).
        assert_eq!(v["token.fingerprint"], "845e30448809e2bc");
    }

    #[test]
    fn hostile_values_stay_on_one_escaped_line() {
        let nasty = [
            "/api/\r\n{\"event.outcome\":\"success\"}",
            "a\u{1b}[31mred\u{7f}",
            "quote\" backslash\\ tab\t",
            "bidi \u{202e} emoji \u{1f600}",
        ];
        for format in [LogFormat::Json, LogFormat::Text] {
            for value in nasty {
                let mut out = String::new();
                event(value, value, None).encode(format, at(0, 0), &mut out);
                assert!(
                    out.bytes().all(|b| (b' '..=b'~').contains(&b)),
                    "{format:?}: {out}"
                );
                if format == LogFormat::Json {
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                    assert_eq!(v["url.path"], value, "JSON escaping round-trips");
                    assert_eq!(v["event.outcome"], "failure");
                    assert_eq!(v.as_object().unwrap().len(), 12);
                }
            }
        }
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
    fn text_event_has_fields_in_fixed_order() {
        let mut out = String::new();
        event("/api/a b", "x\"y", None).encode(LogFormat::Text, at(0, 0), &mut out);
        assert_eq!(
            out,
            "@timestamp=1970-01-01T00:00:00.000Z log.level=warn event.action=authorize event.outcome=failure \
             event.reason=bad_signature source.ip=127.0.0.1 http.response.status_code=401 \
             http.request.id=0000abcd-1 token.fingerprint=845e30448809e2bc \
             http.request.method=\"GET\" url.path=\"/api/a b\" user_agent.original=\"x\\\"y\""
        );
    }

    #[test]
    fn long_values_are_capped_on_a_char_boundary() {
        let long = "é".repeat(MAX_FIELD_BYTES); // 2 bytes each
        let mut out = String::new();
        event(&long, "a", None).encode(LogFormat::Json, at(0, 0), &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let path = v["url.path"].as_str().unwrap();
        assert_eq!(path, format!("{}...", "é".repeat(MAX_FIELD_BYTES / 2)));
    }

    #[test]
    fn messages_are_escaped_too() {
        let mut out = String::new();
        let message = "bind failed\nfake line";
        encode_message(
            LogFormat::Json,
            at(0, 0),
            log::Level::Error,
            "jwtguard",
            Some("startup"),
            message,
            &mut out,
        );
        assert!(!out.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["message"], message);
        assert_eq!(v["event.action"], "startup");
        assert_eq!(v["log.level"], "error");
    }

    /// A sink that takes at most `limit` bytes a write, and fails once `room` bytes have
    /// been taken (until `room` is raised).
    struct Flaky {
        room: Arc<std::sync::atomic::AtomicUsize>,
        limit: usize,
        got: Arc<Mutex<Vec<u8>>>,
    }
    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.room.load(Ordering::Relaxed);
            if room == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.limit).min(room);
            self.room.store(room - n, Ordering::Relaxed);
            self.got.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Test {
        writer: LogWriter,
        room: Arc<std::sync::atomic::AtomicUsize>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Test {
        fn new(limit: usize) -> Test {
            let room = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
            let got = Arc::new(Mutex::new(Vec::new()));
            let sink = Flaky {
                room: room.clone(),
                limit,
                got: got.clone(),
            };
            Test {
                writer: LogWriter::new(sink, "test"),
                room,
                got,
            }
        }

        fn room(&self, bytes: usize) {
            self.room.store(bytes, Ordering::Relaxed);
        }

        fn got(&self) -> String {
            String::from_utf8(self.got.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn log_writer_counts_failures() {
        let mut t = Test::new(usize::MAX);
        let before = sink_failures();
        t.writer.write_all(b"line\n").unwrap();
        assert_eq!(sink_failures(), before);
        t.room(0);
        assert!(t.writer.write_all(b"line\n").is_err());
        assert!(sink_failures() > before);
        assert!(t.writer.sink().failing);
        t.room(usize::MAX);
        t.writer.write_all(b"line\n").unwrap();
        assert!(!t.writer.sink().failing);
        assert_eq!(t.got(), "line\nline\n");
    }

    #[test]
    fn held_writes_reach_the_sink_on_release_only() {
        let t = Test::new(usize::MAX);
        let mut logger_side = t.writer.clone();
        let hold = t.writer.hold();
        logger_side.write_all(b"one\n").unwrap();
        logger_side.flush().unwrap();
        assert_eq!(hold.held(), 4);
        logger_side.write_all(b"two\n").unwrap();
        assert_eq!(t.got(), "");
        assert_eq!(hold.release(), 8);
        assert_eq!(t.got(), "one\ntwo\n");
        // Released: writes go straight through again, and nothing is held twice.
        logger_side.write_all(b"three\n").unwrap();
        assert_eq!(t.got(), "one\ntwo\nthree\n");
        assert_eq!(t.writer.hold().release(), 0);
        // A hold dropped without release writes too.
        let hold = t.writer.hold();
        logger_side.write_all(b"four\n").unwrap();
        drop(hold);
        assert_eq!(t.got(), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn only_the_holding_thread_is_held() {
        let t = Test::new(usize::MAX);
        let hold = t.writer.hold();
        let mut here = t.writer.clone();
        here.write_all(b"held\n").unwrap();
        let mut other = t.writer.clone();
        std::thread::spawn(move || other.write_all(b"other\n").unwrap())
            .join()
            .unwrap();
        assert_eq!(t.got(), "other\n", "another thread's event is not held");
        assert_eq!(hold.release(), 5);
        assert_eq!(t.got(), "other\nheld\n");
    }

    #[test]
    fn release_says_how_much_of_the_held_log_was_written() {
        // A sink that takes 3 bytes a write still gets everything.
        let t = Test::new(3);
        let mut logger_side = t.writer.clone();
        let hold = t.writer.hold();
        logger_side.write_all(b"first\nsecond\n").unwrap();
        assert_eq!(hold.release(), 13);
        assert_eq!(t.got(), "first\nsecond\n");
        // A failing sink: nothing written, the failure counted.
        let before = sink_failures();
        t.room(0);
        let hold = t.writer.hold();
        logger_side.write_all(b"lost\n").unwrap();
        assert_eq!(hold.release(), 0);
        assert!(sink_failures() > before);
        // A sink that fills up part-way: the first event and part of the second.
        t.room(8);
        let hold = t.writer.hold();
        logger_side.write_all(b"third\nfourth\n").unwrap();
        assert_eq!(hold.release(), 8);
        // Back: the torn line is ended before anything else is written.
        t.room(usize::MAX);
        let hold = t.writer.hold();
        logger_side.write_all(b"fifth\n").unwrap();
        assert_eq!(hold.release(), 6);
        assert!(!t.writer.sink().failing);
        assert_eq!(t.got(), "first\nsecond\nthird\nfo\nfifth\n");
    }
}
