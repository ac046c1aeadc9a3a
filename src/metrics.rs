//! Prometheus metrics (`--metrics HOST:PORT`): a fixed set of process-wide atomic counters,
//! moved where the facts are (the guard's decision, the loop's answers and refusals, the
//! sink's writes, the sealer's epoch), and the text exposition format 0.0.4, written by
//! hand (smaller than `prometheus-client` and its dependencies, for a dozen families).
//!
//! No label takes a value from a request: the series are the same at every scrape.
//!
//! The `/metrics` listener is a second listener of each worker's event loop (serve and
//! proxy mode alike), bound with `SO_REUSEPORT` so that a reload hands it over: a scrape's
//! connection is an ordinary slot of the loop, and rendering the text is its only cost.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::Reason;

/// Whether `--metrics` is on: the latency histograms read the clock only then.
static ON: AtomicBool = AtomicBool::new(false);

/// Decisions: allowed, public, refused by reason (`Reason as usize`), and refused with
/// 503 because the event did not reach the log.
static ALLOWED: AtomicU64 = AtomicU64::new(0);
static PUBLIC: AtomicU64 = AtomicU64::new(0);
static UNRECORDED: AtomicU64 = AtomicU64::new(0);
static REFUSED: [AtomicU64; Reason::ALL.len()] = [const { AtomicU64::new(0) }; Reason::ALL.len()];
/// Answers by status class, 1xx to 5xx.
static ANSWERS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Connections refused at accept by each limit.
static LIMITS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static HEADER_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
/// Forwarding failures by kind ([`UPSTREAM_KINDS`]).
static UPSTREAM_ERRORS: [AtomicU64; UPSTREAM_KINDS.len()] =
    [const { AtomicU64::new(0) }; UPSTREAM_KINDS.len()];
/// The kinds of forwarding failure, as their events name them (`event.reason`).
const UPSTREAM_KINDS: [&str; 5] = [
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_error",
    "body_timeout",
    "too_many_uploads",
];
static OPEN_CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static MAX_CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static LOG_LINES: AtomicU64 = AtomicU64::new(0);
static LOG_FAILURES: AtomicU64 = AtomicU64::new(0);
/// The sealing key's epoch plus one; 0 while the log is not sealed.
static SEAL_EPOCH: AtomicU64 = AtomicU64::new(0);

/// The upper bounds of the latency buckets, in nanoseconds (10 us to 1 s), and as the
/// `le` label writes them.
const BOUNDS: [u64; 11] = [
    10_000,
    30_000,
    100_000,
    300_000,
    1_000_000,
    3_000_000,
    10_000_000,
    30_000_000,
    100_000_000,
    300_000_000,
    1_000_000_000,
];
const BOUND_LABELS: [&str; BOUNDS.len()] = [
    "0.00001", "0.00003", "0.0001", "0.0003", "0.001", "0.003", "0.01", "0.03", "0.1", "0.3", "1",
];

/// A number of seconds written from whole units without floating point (whose formatting
/// code the binary then need not carry): `whole` units of `1/scale` s.
struct Seconds {
    units: u64,
    scale: u64,
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, mut frac) = (self.units / self.scale, self.units % self.scale);
        write!(f, "{whole}")?;
        if frac == 0 {
            return Ok(());
        }
        let mut digits = self.scale.ilog10() as usize;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        write!(f, ".{frac:0digits$}")
    }
}

/// A histogram of durations: a count per bucket (not cumulative: one increment each),
/// the overflow last, and the sum in nanoseconds.
struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            count += bucket.load(Relaxed);
            match BOUND_LABELS.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
                }
            }
        }
        let sum = Seconds {
            units: self.sum_nanos.load(Relaxed),
            scale: 1_000_000_000,
        };
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

static DECISION: Histogram = Histogram::new();
static REQUEST: Histogram = Histogram::new();
static UPSTREAM: Histogram = Histogram::new();

/// Turns the latency histograms on (`--metrics`).
pub(crate) fn enable() {
    ON.store(true, Relaxed);
}

/// The clock now if metrics are on: the start of a latency to observe.
pub(crate) fn start() -> Option<Instant> {
    ON.load(Relaxed).then(Instant::now)
}

/// A decision that took from `start` until now.
pub(crate) fn decided(start: Option<Instant>) {
    if let Some(start) = start {
        DECISION.observe(start.elapsed());
    }
}

/// A request answered `took` after its bytes were read.
pub(crate) fn request_took(took: Duration) {
    REQUEST.observe(took);
}

/// Proxy mode: the upstream took `took` from the request head's first byte sent to its
/// answer's head received.
pub(crate) fn upstream_took(took: Duration) {
    if on() {
        UPSTREAM.observe(took);
    }
}

/// Whether the latency histograms are on.
pub(crate) fn on() -> bool {
    ON.load(Relaxed)
}

/// A decision's outcome: `None` is a refusal whose event did not reach the log (503).
pub(crate) enum Outcome {
    Allowed,
    Public,
    Refused(Option<Reason>),
}

pub(crate) fn decision(outcome: Outcome) {
    let counter = match outcome {
        Outcome::Allowed => &ALLOWED,
        Outcome::Public => &PUBLIC,
        Outcome::Refused(Some(reason)) => &REFUSED[reason as usize],
        Outcome::Refused(None) => &UNRECORDED,
    };
    counter.fetch_add(1, Relaxed);
}

/// An answer with `status`.
pub(crate) fn answer(status: u16) {
    if let Some(class) = ANSWERS.get(usize::from(status / 100).wrapping_sub(1)) {
        class.fetch_add(1, Relaxed);
    }
}

/// A connection limit that refuses connections at accept.
#[derive(Clone, Copy)]
pub(crate) enum Limit {
    MaxConnections = 0,
    MaxConnectionsPerAddress = 1,
}

pub(crate) fn refused_at_accept(limit: Limit) {
    LIMITS[limit as usize].fetch_add(1, Relaxed);
}

/// Forwarding a request failed, for `reason` (one of [`UPSTREAM_KINDS`]; another is not
/// counted, so that no label can come from elsewhere).
pub(crate) fn upstream_error(reason: &str) {
    if let Some(i) = UPSTREAM_KINDS.iter().position(|k| *k == reason) {
        UPSTREAM_ERRORS[i].fetch_add(1, Relaxed);
    }
}

pub(crate) fn header_timeout() {
    HEADER_TIMEOUTS.fetch_add(1, Relaxed);
}

/// The connections held now, and the most that may be.
pub(crate) fn connections(open: usize, max: usize) {
    OPEN_CONNECTIONS.store(open as u64, Relaxed);
    MAX_CONNECTIONS.store(max as u64, Relaxed);
}

/// `written`, whole log lines, reached the log. Counted only with `--metrics`: the count
/// reads every byte again.
pub(crate) fn log_lines(written: &[u8]) {
    if on() {
        // A byte counter per chunk of 255 vectorises (13 ns for a 420-byte line here);
        // `filter().count()` into a usize did not (270 ns).
        let lines: u64 = written
            .chunks(255)
            .map(|c| u64::from(c.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n'))))
            .sum();
        LOG_LINES.fetch_add(lines, Relaxed);
    }
}

/// A write to the log failed.
pub(crate) fn log_failure() {
    LOG_FAILURES.fetch_add(1, Relaxed);
}

/// The sealed log is at `epoch` now.
pub(crate) fn seal_epoch(epoch: u64) {
    SEAL_EPOCH.store(epoch.saturating_add(1), Relaxed);
}

/// Writes one sample line.
fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    let _ = if labels.is_empty() {
        writeln!(out, "{name} {value}")
    } else {
        writeln!(out, "{name}{{{labels}}} {value}")
    };
}

/// Writes a family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every metric in the text exposition format 0.0.4; `cache` is the token cache's
/// counts, if there is a cache.
pub(crate) fn render(cache: Option<crate::CacheStats>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;
    let n = "jwtguard_decisions_total";
    family(o, n, "counter", "Requests decided, by outcome and reason.");
    sample(
        o,
        n,
        "outcome=\"allowed\",reason=\"ok\"",
        ALLOWED.load(Relaxed),
    );
    sample(
        o,
        n,
        "outcome=\"public\",reason=\"public\"",
        PUBLIC.load(Relaxed),
    );
    for reason in Reason::ALL {
        let labels = format!("outcome=\"refused\",reason=\"{}\"", reason.code());
        sample(o, n, &labels, REFUSED[reason as usize].load(Relaxed));
    }
    let labels = "outcome=\"refused\",reason=\"log_failed\"";
    sample(o, n, labels, UNRECORDED.load(Relaxed));
    let n = "jwtguard_responses_total";
    family(o, n, "counter", "Answers by status class.");
    for (i, class) in ANSWERS.iter().enumerate() {
        let labels = format!("code=\"{}xx\"", i + 1);
        sample(o, n, &labels, class.load(Relaxed));
    }
    let n = "jwtguard_limit_refusals_total";
    family(o, n, "counter", "Refusals by each limit.");
    let limits = [
        ("max_connections", LIMITS[0].load(Relaxed)),
        ("max_connections_per_address", LIMITS[1].load(Relaxed)),
        ("header_timeout", HEADER_TIMEOUTS.load(Relaxed)),
        (
            "max_failures",
            REFUSED[Reason::RateLimited as usize].load(Relaxed),
        ),
    ];
    for (limit, value) in limits {
        sample(o, n, &format!("limit=\"{limit}\""), value);
    }
    let n = "jwtguard_upstream_errors_total";
    family(
        o,
        n,
        "counter",
        "Forwarding failures (--upstream), by kind.",
    );
    for (kind, value) in UPSTREAM_KINDS.iter().zip(&UPSTREAM_ERRORS) {
        sample(o, n, &format!("kind=\"{kind}\""), value.load(Relaxed));
    }
    let gauges = [
        (
            "jwtguard_open_connections",
            "Connections held now.",
            &OPEN_CONNECTIONS,
        ),
        (
            "jwtguard_max_connections",
            "The --max-connections limit.",
            &MAX_CONNECTIONS,
        ),
        (
            "jwtguard_seal_epoch",
            "The sealed log's epoch plus one; 0 when the log is not sealed.",
            &SEAL_EPOCH,
        ),
    ];
    for (name, help, value) in gauges {
        family(o, name, "gauge", help);
        sample(o, name, "", value.load(Relaxed));
    }
    let counters = [
        (
            "jwtguard_log_lines_total",
            "Security log lines written.",
            &LOG_LINES,
        ),
        (
            "jwtguard_log_write_failures_total",
            "Security log writes that failed.",
            &LOG_FAILURES,
        ),
    ];
    for (name, help, value) in counters {
        family(o, name, "counter", help);
        sample(o, name, "", value.load(Relaxed));
    }
    if let Some(cache) = cache {
        let n = "jwtguard_token_cache_total";
        family(o, n, "counter", "Verified-token cache lookups, by result.");
        sample(o, n, "result=\"hit\"", cache.hits);
        sample(o, n, "result=\"miss\"", cache.misses);
    }
    DECISION.write(
        o,
        "jwtguard_decision_seconds",
        "Time to decide a request and queue its event.",
    );
    REQUEST.write(
        o,
        "jwtguard_request_seconds",
        "From a request's bytes read to its answer queued, its event written.",
    );
    UPSTREAM.write(
        o,
        "jwtguard_upstream_duration_seconds",
        "Proxy mode: from the request head sent upstream to the answer's head received.",
    );
    let n = "jwtguard_build_info";
    family(o, n, "gauge", "The version built.");
    sample(
        o,
        n,
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    process(o);
    out
}

/// USER_HZ: the unit of `/proc/self/stat`'s times, 100 on every Linux architecture.
const TICKS: u64 = 100;

/// The standard process metrics (those of Prometheus's client libraries), from `/proc`.
fn process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which may hold spaces: from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        let n = "process_cpu_seconds_total";
        family(
            out,
            n,
            "counter",
            "User and system CPU time spent in seconds.",
        );
        let cpu = Seconds {
            units: user + system,
            scale: TICKS,
        };
        sample(out, n, "", cpu);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|b| b.trim().parse::<u64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        let n = "process_start_time_seconds";
        family(
            out,
            n,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        let at = Seconds {
            units: boot * TICKS + start,
            scale: TICKS,
        };
        sample(out, n, "", at);
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    if let Some(kib) = rss_kib {
        let n = "process_resident_memory_bytes";
        family(out, n, "gauge", "Resident memory size in bytes.");
        sample(out, n, "", kib * 1024);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let n = "process_open_fds";
        family(out, n, "gauge", "Number of open file descriptors.");
        sample(out, n, "", dir.count());
    }
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        });
    if let Some(max) = max {
        let n = "process_max_fds";
        family(out, n, "gauge", "Maximum number of open file descriptors.");
        sample(out, n, "", max);
    }
}

/// A `--metrics` listener, for its event loop.
pub(crate) struct Listener {
    pub(crate) listener: TcpListener,
    /// The token cache's counts, if there is a cache.
    pub(crate) cache: Box<dyn Fn() -> Option<crate::CacheStats> + Send>,
}

/// `listener`, for the event loop to serve `GET /metrics` on ([`Front::serve_metrics`]):
/// its connections ordinary slots of the loop (limits, timeouts and backpressure apply,
/// so a slow or dripping scraper costs one slot, never the loop); no thread is started.
/// `cache` gives the token cache's counts.
///
/// [`Front::serve_metrics`]: crate::serve::event_loop::Front::serve_metrics
pub(crate) fn listener(
    listener: TcpListener,
    cache: impl Fn() -> Option<crate::CacheStats> + Send + 'static,
) -> std::io::Result<Listener> {
    enable();
    listener.set_nonblocking(true)?;
    let cache = Box::new(cache);
    Ok(Listener { listener, cache })
}

/// What a request on the metrics listener gets: `GET /metrics` the exposition, `/metrics`
/// with another method 405, anything else 404.
pub(crate) fn status_for(method: &str, path: &str) -> u16 {
    match (method, path) {
        ("GET", "/metrics") => 200,
        (_, "/metrics") => 405,
        _ => 404,
    }
}

/// Appends a metrics answer to `out`: with `status` 200 the exposition, else an empty body.
/// It always ends the connection, as scrapes do not reuse it.
pub(crate) fn push_answer(
    status: u16,
    minor: u8,
    cache: Option<crate::CacheStats>,
    out: &mut Vec<u8>,
) {
    let (line, body) = match status {
        200 => ("200 OK", render(cache)),
        405 => ("405 Method Not Allowed", String::new()),
        404 => ("404 Not Found", String::new()),
        408 => ("408 Request Timeout", String::new()),
        417 => ("417 Expectation Failed", String::new()),
        431 => ("431 Request Header Fields Too Large", String::new()),
        _ => ("400 Bad Request", String::new()),
    };
    let version = match minor {
        0 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let _ = write!(
        out,
        "{version} {line}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod cost {
    use super::*;

    /// What metrics add to a request, in ns: the counters alone (without `--metrics`),
    /// and with `--metrics` (two clock reads for the decision, the histograms, the log
    /// line counted: a typical 420-byte JSON line). A measurement, not a check:
    /// `cargo test --release --lib -- --ignored metrics_cost --nocapture`.
    #[test]
    #[ignore]
    fn metrics_cost() {
        let line = [b'x'; 420];
        let request = |took: Option<Duration>| {
            let start = start();
            decided(start);
            decision(Outcome::Allowed);
            answer(200);
            if let Some(took) = took {
                request_took(took);
            }
            log_lines(std::hint::black_box(&line));
        };
        let mut results = [Vec::new(), Vec::new()];
        for _ in 0..15 {
            for (i, metrics) in [false, true].into_iter().enumerate() {
                ON.store(metrics, Relaxed);
                let took = metrics.then(|| Duration::from_micros(40));
                let start = Instant::now();
                for _ in 0..100_000 {
                    request(std::hint::black_box(took));
                }
                results[i].push(start.elapsed().as_nanos() as f64 / 100_000.0);
            }
        }
        ON.store(false, Relaxed);
        for r in &mut results {
            r.sort_by(f64::total_cmp);
        }
        println!(
            "metrics per request: {:.1} ns without --metrics, {:.1} ns with (medians of 15)",
            results[0][7], results[1][7]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_as_decimals_without_trailing_zeros() {
        let s = |units, scale| Seconds { units, scale }.to_string();
        assert_eq!(s(0, 1_000_000_000), "0");
        assert_eq!(s(123_000, 1_000_000_000), "0.000123");
        assert_eq!(s(2_500_000_000, 1_000_000_000), "2.5");
        assert_eq!(s(3_000_000_000, 1_000_000_000), "3");
        assert_eq!(s(12_345, 100), "123.45");
        assert_eq!(s(12_340, 100), "123.4");
        assert_eq!(s(7, 100), "0.07");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_micros(200));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.write(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0003\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
