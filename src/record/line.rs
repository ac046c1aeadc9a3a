//! A line under construction, and the escaping that keeps every value from the request or
//! the token printable ASCII, capped, and unable to split a line or forge a field.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use super::event::{LogFormat, MAX_FIELD_BYTES, MAX_MESSAGE_BYTES};

/// A line under construction: the same calls give the JSON and the text encodings, so
/// both carry the same fields in the same order.
pub(super) struct Line<'a> {
    format: LogFormat,
    out: &'a mut String,
}

impl<'a> Line<'a> {
    pub(super) fn start(
        format: LogFormat,
        now: SystemTime,
        level: log::Level,
        out: &'a mut String,
    ) -> Self {
        let level = level_name(level);
        match format {
            LogFormat::Json => {
                out.push_str("{\"@timestamp\":\"");
                crate::time::push_timestamp(now, out);
                out.push_str("\",\"log.level\":\"");
                out.push_str(level);
                out.push('"');
            }
            LogFormat::Text => {
                out.push_str("@timestamp=");
                crate::time::push_timestamp(now, out);
                out.push_str(" log.level=");
                out.push_str(level);
            }
        }
        Line { format, out }
    }

    /// A line's fields encoded on their own (no timestamp, no end), for [`Line::verbatim`].
    pub(super) fn fields(format: LogFormat, out: &'a mut String) -> Self {
        Line { format, out }
    }

    pub(super) fn format(&self) -> LogFormat {
        self.format
    }

    /// Fields encoded before by [`Line::fields`] in this line's format.
    pub(super) fn verbatim(&mut self, encoded: &str) {
        self.out.push_str(encoded);
    }

    pub(super) fn key(&mut self, key: &str) {
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

    /// A value of ours (a code) that needs no escaping: quoted in JSON, bare in text.
    pub(super) fn raw(&mut self, key: &str, value: &str) {
        self.with(key, |out| out.push_str(value));
    }

    /// A value of ours written by `write`, quoted in JSON, bare in text.
    pub(super) fn with(&mut self, key: &str, write: impl FnOnce(&mut String)) {
        self.key(key);
        let json = self.format == LogFormat::Json;
        if json {
            self.out.push('"');
        }
        write(self.out);
        if json {
            self.out.push('"');
        }
    }

    /// A list of our own codes: a JSON array, or comma-separated in text.
    pub(super) fn list(&mut self, key: &str, values: &[&str]) {
        self.key(key);
        match self.format {
            LogFormat::Json => {
                self.out.push('[');
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.out.push('"');
                    self.out.push_str(value);
                    self.out.push('"');
                }
                self.out.push(']');
            }
            LogFormat::Text => self.out.push_str(&values.join(",")),
        }
    }

    /// A number: bare in both encodings.
    pub(super) fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    /// A value from outside: always quoted, escaped and capped at [`MAX_FIELD_BYTES`].
    pub(super) fn text(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.push('"');
        let (value, cut) = truncate(value, MAX_FIELD_BYTES);
        push_escaped(value, self.format, self.out);
        if cut {
            self.out.push_str("...");
        }
        self.out.push('"');
    }

    /// `message`, the last field: jwtguard's own words, made of `parts` (escaped and
    /// capped at [`MAX_MESSAGE_BYTES`] all the same).
    pub(super) fn message(&mut self, parts: &[&str]) {
        self.key("message");
        self.out.push('"');
        let mut left = MAX_MESSAGE_BYTES;
        for part in parts {
            let (part, cut) = truncate(part, left);
            push_escaped(part, self.format, self.out);
            left -= part.len();
            if cut {
                self.out.push_str("...");
                break;
            }
        }
        self.out.push('"');
    }

    pub(super) fn finish(self) {
        if self.format == LogFormat::Json {
            self.out.push('}');
        }
    }
}

pub(super) fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// `value` cut to at most `cap` bytes at a character boundary, and whether it was cut.
pub(super) fn truncate(value: &str, cap: usize) -> (&str, bool) {
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
pub(super) fn push_escaped(value: &str, format: LogFormat, out: &mut String) {
    // Every byte, without an early exit: the compiler checks 16 bytes a step.
    if value.bytes().fold(true, |all, b| {
        all & ((b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    }) {
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
pub(super) fn push_ip(ip: IpAddr, out: &mut String) {
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
