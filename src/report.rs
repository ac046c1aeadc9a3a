//! `jwtguard report`: the security log summed up on one screen, and as one HTML page.
//!
//! Each line is taken apart field by field in the encoding it is in (JSON or text), never
//! searched for a field name: in both encodings a `"` inside a value is always escaped, so
//! a value from a request cannot pass for a field. Memory does not grow with the log: a
//! line is read into a buffer of at most [`MAX_LINE`] bytes (the rest of a longer one is
//! skipped), and every table is bounded ([`Top`]); the timeline's buckets widen rather than
//! multiply. What the report shows from the log is shown escaped: the text report prints
//! printable ASCII only, the HTML page escapes it again (src/report/html.rs).

mod fields;
mod html;
mod tally;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fields::Fields;
use tally::{Reasons, Timeline, Top};

/// The longest line read whole; jwtguard writes none longer (64 KiB, src/record/event.rs).
const MAX_LINE: usize = 64 * 1024;

/// Rows of each table on the screen and the page.
const ROWS: usize = 10;

/// Keys each bounded table keeps; past that its counts are approximate.
const TOP_CAPACITY: usize = 1024;

/// Distinct `event.reason` codes told apart; jwtguard has fewer than 40.
const MAX_REASONS: usize = 64;

/// The timeline's rows on the screen at most (the HTML page draws them all).
const SCREEN_ROWS: usize = 24;

/// The timeline's buckets at most; past that they double in width.
const MAX_BUCKETS: usize = 2048;

/// What to read and what to write.
pub struct Options {
    pub files: Vec<PathBuf>,
    pub html: Option<PathBuf>,
    /// Milliseconds since the epoch: lines before are left out.
    pub since: Option<u64>,
    /// Milliseconds since the epoch: lines at or after are left out.
    pub until: Option<u64>,
}

/// Reads the files, prints the summary on `out`, and writes the HTML page if asked.
pub fn run(options: &Options, out: &mut dyn Write) -> io::Result<()> {
    let mut summary = Summary::new(options.since, options.until);
    let mut buf = Vec::with_capacity(MAX_LINE);
    for path in &options.files {
        let in_file = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(in_file)?;
        // A compressed rotation through the gzip that logrotate compressed it with (its
        // default `compresscmd`): 9 KiB of code here, against 50 KiB for flate2 and
        // miniz_oxide in the binary (README, Performance).
        let (reader, gzip): (Box<dyn Read>, _) = if is_gzip(path) {
            let mut child = Command::new("gzip")
                .arg("-dc")
                .stdin(file)
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| in_file(io::Error::new(e.kind(), format!("gzip -dc: {e}"))))?;
            (Box::new(child.stdout.take().expect("piped")), Some(child))
        } else {
            (Box::new(file), None)
        };
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        summary.files += 1;
        while let Some(line) = next_line(&mut reader, &mut buf).map_err(in_file)? {
            match line {
                Some(line) => summary.line(line),
                None => summary.unreadable += 1,
            }
        }
        if let Some(mut child) = gzip {
            let status = child.wait().map_err(in_file)?;
            if !status.success() {
                return Err(in_file(io::Error::other(format!("gzip -dc: {status}"))));
            }
        }
    }
    summary.text(out)?;
    if let Some(path) = &options.html {
        let mut page = Vec::new();
        html::page(&summary, &mut page)?;
        std::fs::write(path, page)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// A rotation compressed by logrotate (`security.log.2.gz`).
fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The next line without its newline: `Some(None)` for one longer than [`MAX_LINE`]
/// (skipped to its end), `None` at the end of the input.
fn next_line<'b>(
    reader: &mut impl BufRead,
    buf: &'b mut Vec<u8>,
) -> io::Result<Option<Option<&'b [u8]>>> {
    buf.clear();
    let n = reader.take(MAX_LINE as u64).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(Some(buf)));
    }
    if n < MAX_LINE {
        // The last line, without a newline (a torn write, or a file still being written).
        return Ok(Some(Some(buf)));
    }
    loop {
        let block = reader.fill_buf()?;
        if block.is_empty() {
            break;
        }
        match memchr::memchr(b'\n', block) {
            Some(i) => {
                reader.consume(i + 1);
                break;
            }
            None => {
                let all = block.len();
                reader.consume(all);
            }
        }
    }
    Ok(Some(None))
}

/// Everything the report counts.
pub(crate) struct Summary {
    since: Option<u64>,
    until: Option<u64>,
    files: u64,
    lines: u64,
    /// Lines not in jwtguard's form (foreign, torn, or too long).
    unreadable: u64,
    /// Lines left out by `--since`/`--until`.
    outside: u64,
    first: Option<u64>,
    last: Option<u64>,
    allowed: u64,
    refused: u64,
    /// Reason codes, as first seen; beyond [`MAX_REASONS`] they count as `other`.
    reasons: Vec<Box<[u8]>>,
    /// Refusals per reason, by index into `reasons`.
    refusals: Vec<u64>,
    clients: Top,
    users: Top,
    limited: Top,
    upstream: Top,
    /// Supervisor and service events: `action outcome reason`.
    process: Top,
    /// Seal lines by reason, and `log_tampered`.
    seal: Top,
    timeline: Timeline,
}

impl Summary {
    fn new(since: Option<u64>, until: Option<u64>) -> Summary {
        Summary {
            since,
            until,
            files: 0,
            lines: 0,
            unreadable: 0,
            outside: 0,
            first: None,
            last: None,
            allowed: 0,
            refused: 0,
            reasons: Vec::new(),
            refusals: Vec::new(),
            clients: Top::new(),
            users: Top::new(),
            limited: Top::new(),
            upstream: Top::new(),
            process: Top::new(),
            seal: Top::new(),
            timeline: Timeline {
                width: 60,
                buckets: Default::default(),
            },
        }
    }

    fn reason_index(&mut self, reason: &[u8]) -> u8 {
        if let Some(i) = self.reasons.iter().position(|r| **r == *reason) {
            return i as u8;
        }
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(reason.into());
            self.refusals.push(0);
            return (self.reasons.len() - 1) as u8;
        }
        // `other`: the last slot stands for every reason beyond.
        (MAX_REASONS - 1) as u8
    }

    fn line(&mut self, line: &[u8]) {
        self.lines += 1;
        let Some(f) = Fields::of(line) else {
            self.unreadable += 1;
            return;
        };
        let Some(ms) = std::str::from_utf8(f.timestamp)
            .ok()
            .and_then(jwtguard::seal::parse_time)
        else {
            self.unreadable += 1;
            return;
        };
        if self.since.is_some_and(|s| ms < s) || self.until.is_some_and(|u| ms >= u) {
            self.outside += 1;
            return;
        }
        self.first = Some(self.first.map_or(ms, |t| t.min(ms)));
        self.last = Some(self.last.map_or(ms, |t| t.max(ms)));
        let address = if f.client.is_empty() {
            f.source
        } else {
            f.client
        };
        match f.action {
            b"authorize" | b"rate_limit" => {
                let allowed = f.outcome == b"success";
                self.timeline.add(ms / 1000, allowed);
                if allowed {
                    self.allowed += 1;
                    if !f.user.is_empty() {
                        self.users.count(f.user);
                    }
                    return;
                }
                self.refused += 1;
                let reason = self.reason_index(f.reason);
                self.refusals[usize::from(reason)] += 1;
                self.clients.count(address).add(reason);
                if f.action == b"rate_limit" {
                    self.limited.count(address);
                }
            }
            b"forward" => {
                self.upstream.count(f.reason);
            }
            b"seal" => {
                self.seal.count(f.reason);
            }
            b"startup" | b"shutdown" | b"restart" | b"replace" | b"reload" => {
                let mut key = f.action.to_vec();
                for part in [f.outcome, f.reason, f.how] {
                    if !part.is_empty() {
                        key.push(b' ');
                        key.extend_from_slice(part);
                    }
                }
                self.process.count(&key);
            }
            // Other records, undelivered answers: counted as lines only.
            _ => {}
        }
    }

    /// The reason codes with their refusals, most first.
    fn refusals_by_reason(&self) -> Vec<(&[u8], u64)> {
        let mut all: Vec<(&[u8], u64)> = self
            .reasons
            .iter()
            .zip(&self.refusals)
            .map(|(r, n)| (&**r, *n))
            .collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all
    }

    /// The reasons of an address, as `reason N, reason N, other N`.
    fn reasons_of(&self, reasons: &Reasons) -> String {
        let mut parts: Vec<String> = reasons
            .counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", shown(&self.reasons[usize::from(*r)])))
            .collect();
        if reasons.other > 0 {
            parts.push(format!("other {}", reasons.other));
        }
        parts.join(", ")
    }

    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut s = String::new();
        use std::fmt::Write as _;
        let _ = writeln!(
            s,
            "jwtguard report: {} files, {} lines ({} not jwtguard's, {} outside --since/--until)",
            self.files,
            thousands(self.lines),
            thousands(self.unreadable),
            thousands(self.outside)
        );
        match (self.first, self.last) {
            (Some(first), Some(last)) => {
                let _ = writeln!(
                    s,
                    "From {} to {} ({})",
                    time(first / 1000),
                    time(last / 1000),
                    duration((last - first) / 1000)
                );
            }
            _ => s.push_str("No events.\n"),
        }
        let total = self.allowed + self.refused;
        let _ = writeln!(
            s,
            "Requests {}: allowed {} ({}), refused {} ({})",
            thousands(total),
            thousands(self.allowed),
            percent(self.allowed, total),
            thousands(self.refused),
            percent(self.refused, total)
        );
        let mut section = |title: &str, rows: Vec<(String, String)>, note: bool| {
            if rows.is_empty() {
                return;
            }
            let _ = writeln!(
                s,
                "\n{title}{}",
                if note { " (approximate counts)" } else { "" }
            );
            for (name, value) in rows {
                let _ = writeln!(s, "  {name:<40} {value}");
            }
        };
        section(
            "Refusals by reason",
            self.refusals_by_reason()
                .into_iter()
                .take(ROWS)
                .map(|(r, n)| (shown(r), thousands(n)))
                .collect(),
            false,
        );
        section(
            "Top refused clients: refusals, reasons",
            self.clients
                .top(ROWS)
                .into_iter()
                .map(|(a, n, r)| (shown(a), format!("{n:>8}  {}", self.reasons_of(r))))
                .collect(),
            self.clients.approximate(),
        );
        let plain = |top: &Top| -> Vec<(String, String)> {
            top.top(ROWS)
                .into_iter()
                .map(|(k, n, _)| (shown(k), n))
                .collect()
        };
        section(
            "Top users: allowed requests",
            plain(&self.users),
            self.users.approximate(),
        );
        section(
            "Rate-limited clients: windows",
            plain(&self.limited),
            self.limited.approximate(),
        );
        section("Upstream errors", plain(&self.upstream), false);
        section("Process events", plain(&self.process), false);
        section("Seal events", plain(&self.seal), false);
        let (rows, width) = self.timeline.rows();
        if !rows.is_empty() {
            let _ = writeln!(
                s,
                "\nTimeline per {}: # allowed, x refused",
                duration(width)
            );
            let max = rows.iter().map(|r| r.1 + r.2).max().unwrap_or(0).max(1);
            // One screen: the last rows when there are more than fit.
            let skip = rows.len().saturating_sub(SCREEN_ROWS);
            if skip > 0 {
                let _ = writeln!(s, "  ({skip} earlier rows on the HTML page)");
            }
            for &(start, a, r) in &rows[skip..] {
                let bar = |n: u64| ((n * 50).div_ceil(max)) as usize;
                let _ = writeln!(
                    s,
                    "  {} {:>9} {:>8} |{}{}",
                    time(start),
                    thousands(a),
                    thousands(r),
                    "#".repeat(bar(a)),
                    "x".repeat(bar(r))
                );
            }
        }
        out.write_all(s.as_bytes())
    }
}

/// A value from the log for a terminal: printable ASCII as it is (jwtguard escapes
/// everything else), any other byte of a forged line as `?`, at most 64 bytes.
fn shown(value: &[u8]) -> String {
    let mut s: String = value
        .iter()
        .take(64)
        .map(|&b| {
            if (b' '..=b'~').contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    if value.len() > 64 {
        s.push_str("...");
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `part` of `total` as `53.8%`, rounded to the nearest tenth (in integers: no float
/// formatting code in the binary for one figure).
fn percent(part: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    let tenths = (u128::from(part) * 2000 + u128::from(total)) / (2 * u128::from(total));
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// `3 h 20 min`, `45 s`, `2 d 3 h`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        s => match (s / 86_400, s % 86_400 / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
    }
}

/// Seconds since the epoch as `2026-12-06T21:00:00Z`.
fn time(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_field_inside_a_value_is_not_taken() {
        let json = br#"{"@timestamp":"2026-12-06T21:00:00.000Z","event.action":"authorize","event.outcome":"failure","source.ip":"127.0.0.1","user_agent.original":"x\",\"client.ip\":\"6.6.6.6","message":"m"}"#;
        let f = Fields::of(json).unwrap();
        assert_eq!(f.source, b"127.0.0.1");
        assert_eq!(f.client, b"");
        let text = br#"@timestamp=2026-12-06T21:00:00.000Z event.action=authorize source.ip=127.0.0.1 user_agent.original="x\" client.ip=6.6.6.6 \"" message="m""#;
        let f = Fields::of(text).unwrap();
        assert_eq!((f.source, f.client), (&b"127.0.0.1"[..], &b""[..]));
        for torn in [
            &json[..json.len() - 1],
            &text[..text.len() - 1],
            b"{",
            b"@x",
        ] {
            assert!(
                Fields::of(torn).is_none(),
                "{}",
                String::from_utf8_lossy(torn)
            );
        }
    }

    #[test]
    fn tables_stay_bounded_and_keep_the_heavy_hitters() {
        let mut top: Top = Top::new();
        for n in 0..100_000u32 {
            top.count(&n.to_be_bytes());
            top.count(b"attacker");
        }
        assert!(top.map.len() <= 2 * TOP_CAPACITY);
        assert!(top.approximate());
        let first = &top.top(1)[0];
        assert_eq!(first.0, b"attacker");
        assert_eq!(first.1, "100,000", "a heavy hitter is counted exactly");
    }

    #[test]
    fn times_and_numbers_read_as_written() {
        assert_eq!(time(1_798_338_726), "2026-12-27T02:32:06Z");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(duration(3600 * 8 + 60), "8 h 1 min");
        assert_eq!(percent(7, 13), "53.8%");
        assert_eq!(percent(6, 13), "46.2%");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(2, 3), "66.7%");
        assert_eq!(percent(5, 5), "100.0%");
    }

    #[test]
    fn the_timeline_widens_instead_of_growing() {
        let mut t = Timeline {
            width: 60,
            buckets: Default::default(),
        };
        t.add(0, true);
        t.add(u64::from(u32::MAX) * 1000, false);
        for m in 0..10_000 {
            t.add(m * 60, true);
        }
        assert!(t.buckets.len() <= MAX_BUCKETS);
        assert!(t.rows().0.len() <= MAX_BUCKETS + 1);
    }
}
