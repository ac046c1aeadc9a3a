//! Clock reading and the two time formats jwtguard writes: RFC 3339 in the log, the
//! HTTP date in responses. Both are formatted once a second per thread.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

thread_local! {
    /// The serving loop's clock readings for its current turn, taken once after each poll
    /// (a request's token check, its event's timestamp and its answer's `Date` read the
    /// clock four times otherwise); `None` on any other thread, which reads the clock.
    static TURN: Cell<Option<(SystemTime, Instant)>> = const { Cell::new(None) };
}

/// The wall clock: the current loop turn's reading on a serving thread, else now.
pub(crate) fn wall() -> SystemTime {
    TURN.get().map_or_else(SystemTime::now, |(wall, _)| wall)
}

/// The monotonic clock, as [`wall`].
pub(crate) fn monotonic() -> Instant {
    TURN.get().map_or_else(Instant::now, |(_, mono)| mono)
}

/// The clock readings of this thread's loop turns, while it lives: [`Turns::start`] at
/// each turn; none once it is dropped.
pub(crate) struct Turns(());

impl Turns {
    pub(crate) fn new() -> Turns {
        Turns(())
    }

    /// A turn begins: reads the clocks, and returns the monotonic reading.
    pub(crate) fn start(&self) -> Instant {
        let now = Instant::now();
        TURN.set(Some((SystemTime::now(), now)));
        now
    }
}

impl Drop for Turns {
    fn drop(&mut self) {
        TURN.set(None);
    }
}

/// Seconds since the Unix epoch, with a fraction; `None` when the clock reads before 1970
/// (then no token can be judged, and the guard refuses them all).
pub(crate) fn unix_seconds(now: SystemTime) -> Option<f64> {
    now.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

/// Appends `now` as RFC 3339 in UTC with milliseconds: `2026-11-27T02:38:46.123Z`.
/// A clock before 1970 is written as the epoch.
pub(crate) fn push_timestamp(now: SystemTime, out: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
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

/// Reads an RFC 3339 UTC time as jwtguard writes it, `2026-11-27T02:38:46.123Z` (the
/// fraction may be left out), as milliseconds since the Unix epoch.
pub(crate) fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    };
    let shape = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if shape.iter().any(|&(i, c)| b.get(i) != Some(&c)) {
        return None;
    }
    let millis = match &b[19.min(b.len())..] {
        b"Z" => 0,
        [b'.', _, _, _, b'Z'] => num(20..23)?,
        _ => return None,
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year as i64, month as u32, day as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    Some(secs * 1000 + millis)
}

/// (year, month, day) to days since 1970-01-01: the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Appends the current time as an HTTP date (RFC 9110 IMF-fixdate).
pub(crate) fn push_http_date(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = wall();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *text = httpdate::fmt_http_date(now.max(UNIX_EPOCH));
            *cached = secs;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
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
    fn timestamps_read_back() {
        for secs in [0, 951_782_400, 1_798_338_726, 4_102_444_799] {
            let mut out = String::new();
            push_timestamp(at(secs, 123), &mut out);
            assert_eq!(parse_timestamp(&out), Some(secs * 1000 + 123), "{out}");
        }
        assert_eq!(
            parse_timestamp("2026-12-27T02:32:06Z"),
            Some(1_798_338_726_000)
        );
        for bad in [
            "",
            "2026-12-27 02:32:06Z",
            "2026-13-27T02:32:06Z",
            "2026-12-27T02:32:06.1Z",
            "2026-12-27T02:32:06",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_clock_before_1970_reads_as_no_time() {
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(unix_seconds(at(5, 500)), Some(5.5));
        let mut out = String::new();
        push_timestamp(UNIX_EPOCH - Duration::from_secs(1), &mut out);
        assert_eq!(out, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn http_dates_parse_back() {
        let mut out = Vec::new();
        push_http_date(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}
