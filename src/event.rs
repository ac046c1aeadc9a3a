//! The security log's schema: every event jwtguard records, and its two one-line
//! encodings (JSON and text). This is the only place that names a log field.
//!
//! An event becomes exactly one line of printable ASCII: every value taken from the
//! request, the token or the configuration is escaped (quotes, backslashes, control
//! characters and all non-ASCII characters) and capped in length, so a hostile header can
//! neither split a line nor forge a field. The token itself never appears; its
//! [`Fingerprint`] does. Field names follow the Elastic Common Schema; fields ECS does not
//! define are under `jwtguard.`.
//!
//! In the text encoding the fields come in a fixed order: jwtguard's own values first
//! (bare), then those from the request or the token (always quoted), then `message` (always
//! quoted, always last, jwtguard's own words). So a line that does not end with the closing
//! quote of `message` was torn.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::LogFormat;

/// The ECS version the events conform to.
pub(crate) const ECS_VERSION: &str = "9.3.0";

/// The longest value from the request or the token written to the log, in bytes before
/// escaping. A longer value is cut at a character boundary and ends with `...`.
pub(crate) const MAX_FIELD_BYTES: usize = 256;

/// The longest `message`, in bytes before escaping.
const MAX_MESSAGE_BYTES: usize = 4096;

/// The longest line jwtguard writes, its seal and newline included. An event's fields are
/// fixed: besides jwtguard's own short values, a `message` of at most
/// [`MAX_MESSAGE_BYTES`] and at most 20 values from outside (the start-up event's address
/// and settings, 16 today) of at most [`MAX_FIELD_BYTES`], each byte at most 6 once escaped
/// (`\u007f`): under 58 KiB (test `the_longest_events_fit_in_a_line`). `verify-log` holds
/// no more of a line than this, and reports a longer one as not written by jwtguard.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The first 8 bytes of the SHA-256 of a token, written as 16 hex digits: the events of
/// one token can be correlated without the token being stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 8]);

impl Fingerprint {
    pub(crate) fn of(token: &str) -> Fingerprint {
        let digest = Sha256::digest(token.as_bytes());
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        Fingerprint(first)
    }

    fn push_hex(&self, out: &mut String) {
        push_hex(&self.0, out);
    }
}

/// Appends `bytes` as lower-case hex digits.
pub(crate) fn push_hex(bytes: &[u8], out: &mut String) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// A request id: 8 hex digits that differ between processes, `-`, and a counter from 1.
/// Sent back as `X-Request-Id` and logged as `http.request.id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    prefix: u32,
    n: u64,
}

impl RequestId {
    pub(crate) fn new(prefix: u32, n: u64) -> RequestId {
        RequestId { prefix, n }
    }

    /// The id as text, `0a1b2c3d-42`, without allocating.
    pub(crate) fn text(&self) -> IdText {
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

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// A [`RequestId`] as text: 8 hex digits, `-`, up to 20 decimal digits.
#[derive(Clone, Copy)]
pub(crate) struct IdText {
    bytes: [u8; 29],
    len: usize,
}

impl IdText {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("hex digits, '-' and digits")
    }
}

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// The guard's decision (`authorize`).
    Authorize,
    /// Forwarding to the upstream failed (`forward`).
    Forward,
}

/// One decision on one request to a guarded path, or its forwarding's failure.
#[derive(Clone, Debug)]
pub(crate) struct RequestEvent<'a> {
    /// `event.action`.
    pub action: Action,
    /// `event.outcome`: `true` for `success`, `false` for `failure`.
    pub success: bool,
    /// `event.reason`: `ok` or a [`Reason`](crate::Reason) code.
    pub reason: &'static str,
    /// Said in `message`: what the reason means.
    pub reason_text: &'static str,
    /// `source.ip`: the peer of the connection.
    pub source_ip: Option<IpAddr>,
    /// `client.ip`: the client behind a trusted proxy, as the proxy says.
    pub client_ip: Option<IpAddr>,
    /// `http.response.status_code`: the status answered; none when the request goes on
    /// to the upstream (whose answer is the application's).
    pub status: Option<u16>,
    /// `http.request.id`: every decision has one; a public request forwarded has none.
    pub request_id: Option<RequestId>,
    /// `jwtguard.token.fingerprint`: when the request carried a token.
    pub fingerprint: Option<Fingerprint>,
    /// `http.request.method`.
    pub method: &'a str,
    /// `url.path`: the path, without the query.
    pub path: &'a str,
    /// `user.id`: only once the token's signature verified.
    pub user: Option<&'a str>,
    /// `user_agent.original`.
    pub user_agent: Option<&'a str>,
    /// `jwtguard.token.kid`: the key's `kid` once one was picked, else the token's.
    pub kid: Option<&'a str>,
    /// `jwtguard.token.alg`: the key's algorithm, else the token's `alg` as written.
    pub alg: Option<&'a str>,
}

/// A JWK Set file read again because it changed (`--jwks FILE`), or fetched from
/// `--jwks-url` (a new set, or a failure unlike the last): loaded, or refused and the last
/// good set kept.
#[derive(Clone, Debug)]
pub(crate) struct KeySetEvent<'a> {
    /// `event.outcome`.
    pub loaded: bool,
    /// `event.reason`: `changed`, or why the set was refused (`invalid_jwks`,
    /// `key_too_weak`, `unreadable`, `fetch_failed`).
    pub reason: &'static str,
    /// `file.path`: the file, or the URL (which holds no credentials: refused at start).
    pub path: &'a str,
    /// `jwtguard.jwks.keys`: the keys loaded.
    pub keys: usize,
    /// `error.message`: what is wrong with the file (names a kid from it: escaped).
    pub problem: Option<&'a str>,
}

/// What ended a server, or made it begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The process received this signal (`SIGTERM`, `SIGINT`).
    Signal(&'static str),
    /// The HTTP layer stopped accepting connections (out of file descriptors, say).
    AcceptFailed,
    /// It handed over to another process serving the same socket, and finished.
    Drained,
}

impl Cause {
    fn code(self) -> &'static str {
        match self {
            Cause::Signal(name) => name,
            Cause::AcceptFailed => "accept_failed",
            Cause::Drained => "drained",
        }
    }
}

/// A service event: jwtguard starting or stopping.
#[derive(Clone, Debug)]
pub(crate) enum ServiceEvent<'a> {
    /// The server is listening.
    Startup {
        /// `url.full` of the listening address, `http://IP:PORT`.
        url: &'a str,
        /// `jwtguard.config.*`: the settings, by name; never the secret.
        config: &'a [(&'static str, String)],
    },
    /// The server stopped.
    Shutdown {
        /// `event.reason`.
        cause: Cause,
        /// `jwtguard.requests`: how many requests it answered (not counting `/healthz`).
        answered: u64,
    },
}

/// What jwtguard's supervisor (the parent process that holds the listening socket and
/// runs the server in a worker process) did: one event each, written by the supervisor
/// (docs/operations.md, How it runs).
#[derive(Clone, Copy, Debug)]
pub enum Supervision<'a> {
    /// The worker `previous` ended abnormally (`how`: `exit status 101`, `signal SIGKILL`);
    /// `worker` serves, `took` after the end was seen.
    Restarted {
        /// The worker's slot (`--workers`: 0 to N-1).
        slot: usize,
        /// The worker that ended.
        previous: u32,
        /// How it ended.
        how: &'a str,
        /// The worker that serves now.
        worker: u32,
        /// From the end seen to the new worker accepting.
        took: std::time::Duration,
    },
    /// The watchdog found `previous` unhealthy (`cause`, a code: `loop_stalled`,
    /// `healthz_failed`); `worker` serves, and `previous` finishes what it holds.
    Replaced {
        /// The worker's slot (`--workers`: 0 to N-1).
        slot: usize,
        /// The worker replaced.
        previous: u32,
        /// Why.
        cause: &'a str,
        /// The worker that serves now.
        worker: u32,
    },
    /// SIGHUP: `worker` serves with the configuration and keys read again, and `previous`
    /// finishes what it holds.
    Reloaded {
        /// The worker's slot (`--workers`: 0 to N-1).
        slot: usize,
        /// The worker replaced.
        previous: u32,
        /// The worker that serves now.
        worker: u32,
    },
    /// A new worker for `action` (`restart`, `replace`, `reload`) did not start (`how`); for
    /// a reload or a replacement, `previous` keeps serving.
    Failed {
        /// The worker's slot (`--workers`: 0 to N-1).
        slot: usize,
        /// `restart`, `replace` or `reload`.
        action: &'static str,
        /// The worker that was to be replaced (0 for none).
        previous: u32,
        /// How the new one failed: `exit status 2` (a configuration that does not
        /// validate), `not ready within 10 s`, ...
        how: &'a str,
    },
}

/// Anything written to the security log.
#[derive(Clone, Debug)]
pub(crate) enum Event<'a> {
    Request(RequestEvent<'a>),
    Service(ServiceEvent<'a>),
    Supervision(Supervision<'a>),
    /// An answer that could not be delivered because the client does not read: the
    /// connection is no longer served.
    Undelivered {
        /// `http.request.id` of the answer, if it had one.
        request_id: Option<RequestId>,
        /// `source.ip`.
        source_ip: Option<IpAddr>,
    },
    /// A connection the HTTP layer ended on its own (src/serve/): a head it could not read,
    /// too large or too slow, or connections closed at accept over a cap.
    Connection {
        /// `event.reason`: a stable code.
        reason: &'static str,
        /// The message.
        text: &'static str,
        /// `http.response.status_code`, when it answered.
        status: Option<u16>,
        /// `source.ip`, when it is one connection's.
        source_ip: Option<IpAddr>,
        /// How many connections it stands for (refusals at accept are counted and written
        /// once a second at most): `jwtguard.connections`.
        count: u64,
    },
    /// A record of another `log` target (a warning at start-up, tiny_http's errors).
    Record {
        level: log::Level,
        logger: &'a str,
        message: &'a str,
    },
    /// A seal line of a sealed log (src/seal.rs): an epoch begins, or a new file.
    Seal(SealEvent<'a>),
    /// Lines in a sealed log that do not verify with the sealing key (src/seal.rs).
    LogTampered(LogTampered),
    /// An address refused by the brute-force limiter: once per window (src/limiter.rs).
    RateLimited(RateLimited<'a>),
    /// A JWK Set file read again (src/key_file.rs).
    KeySet(KeySetEvent<'a>),
}

/// The first request of an address refused by the brute-force limiter in a window; the
/// others of the window are answered alike, unrecorded.
#[derive(Clone, Debug)]
pub(crate) struct RateLimited<'a> {
    /// `source.ip`: the peer of the connection.
    pub source_ip: Option<IpAddr>,
    /// `client.ip`: the client behind a trusted proxy, as the proxy says.
    pub client_ip: Option<IpAddr>,
    /// `http.response.status_code`: 429 (401 to a forward-auth subrequest).
    pub status: u16,
    /// `http.request.id`.
    pub request_id: RequestId,
    /// `jwtguard.limiter.failures`: the failed authentications counted in the window.
    pub failures: u32,
    /// `jwtguard.limiter.retry_after`: seconds until the window ends (`Retry-After`).
    pub retry_after: u32,
    /// `http.request.method`.
    pub method: &'a str,
    /// `url.path`.
    pub path: &'a str,
    /// `user_agent.original`.
    pub user_agent: Option<&'a str>,
}

/// Lines found after the chain in a sealed log that do not verify with the keys the writer
/// holds: left in place, not taken into the chain. Only numbers: nothing of those lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogTampered {
    /// `jwtguard.seal.verified`: the sequence number of the last line that verified (0:
    /// none), which the chain goes on from.
    pub verified: u64,
    /// `jwtguard.seal.unverified_offset`: where the lines that do not verify begin in the
    /// file, in bytes.
    pub offset: u64,
    /// `jwtguard.seal.unverified_bytes`: how many bytes follow from there.
    pub bytes: u64,
    /// The bytes were a last line without its newline, and were cut: a writer killed while
    /// writing leaves one, and so can someone who appends (`event.reason=torn_line_cut`,
    /// a warning: the log verifies, and this line says what went).
    pub cut: bool,
}

/// Why a seal line was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SealReason {
    /// A process opened the sealed log: the epoch changes (`startup`).
    Startup,
    /// The epoch lasted its 15 minutes (`epoch`).
    Epoch,
    /// A process wrote its shutdown event: the epoch changes (`shutdown`).
    Shutdown,
    /// The chain goes on in another file (after a rotation): the epoch stays (`file`).
    File,
}

impl SealReason {
    pub(crate) fn code(self) -> &'static str {
        match self {
            SealReason::Startup => "startup",
            SealReason::Epoch => "epoch",
            SealReason::Shutdown => "shutdown",
            SealReason::File => "file",
        }
    }

    fn from_code(code: &[u8]) -> Option<SealReason> {
        Some(match code {
            b"startup" => SealReason::Startup,
            b"epoch" => SealReason::Epoch,
            b"shutdown" => SealReason::Shutdown,
            b"file" => SealReason::File,
            _ => return None,
        })
    }

    /// Whether the line begins a new epoch (and is sealed with the last epoch's key).
    pub(crate) fn changes_epoch(self) -> bool {
        self != SealReason::File
    }
}

/// A seal line: every field is jwtguard's own.
#[derive(Clone, Debug)]
pub(crate) struct SealEvent<'a> {
    pub reason: SealReason,
    /// `jwtguard.seal.epoch`: the epoch of the lines that follow.
    pub epoch: u64,
    /// `jwtguard.seal.previous`: the hash of the line before (in the previous file, for
    /// `file`); all zeros for the first line of a chain.
    pub previous: &'a [u8; 16],
    /// `jwtguard.seal.previous_file`, for `file` only: the sequence number of the first
    /// line of the file the chain was in before (0 when none).
    pub previous_file: u64,
    /// `jwtguard.seal.key`: which sealing key (16 hex digits, not secret).
    pub key_id: &'a str,
}

impl Event<'_> {
    /// The level it is logged at: `info` for a success, `warn` for a refusal, `error`
    /// when the server stops on a failure.
    pub(crate) fn level(&self) -> log::Level {
        match self {
            Event::Request(e) if e.success => log::Level::Info,
            Event::Request(_)
            | Event::Undelivered { .. }
            | Event::Connection { .. }
            | Event::RateLimited(_) => log::Level::Warn,
            Event::KeySet(e) if e.loaded => log::Level::Info,
            Event::KeySet(_) => log::Level::Warn,
            Event::Service(ServiceEvent::Shutdown {
                cause: Cause::AcceptFailed,
                ..
            }) => log::Level::Error,
            Event::Service(_)
            | Event::Seal(_)
            | Event::Supervision(Supervision::Reloaded { .. }) => log::Level::Info,
            Event::LogTampered(LogTampered { cut: true, .. }) => log::Level::Warn,
            Event::Supervision(Supervision::Failed { .. }) | Event::LogTampered(_) => {
                log::Level::Error
            }
            Event::Supervision(_) => log::Level::Warn,
            Event::Record { level, .. } => *level,
        }
    }

    /// Appends the event as one line, without the newline.
    pub(crate) fn encode(&self, format: LogFormat, now: SystemTime, out: &mut String) {
        let mut line = Line::start(format, now, self.level(), out);
        match self {
            Event::Request(e) => e.encode(&mut line),
            Event::Service(e) => e.encode(&mut line),
            Event::Supervision(e) => e.encode(&mut line),
            Event::Undelivered {
                request_id,
                source_ip,
            } => {
                line.raw("event.action", "answer");
                line.raw("event.outcome", "failure");
                line.raw("event.reason", "client_not_reading");
                if let Some(ip) = source_ip {
                    line.with("source.ip", |out| push_ip(*ip, out));
                }
                if let Some(id) = request_id {
                    line.with("http.request.id", |out| out.push_str(id.text().as_str()));
                }
                ecs(&mut line, &["web", "network"], &["connection", "error"]);
            }
            Event::Connection {
                reason,
                status,
                source_ip,
                count,
                ..
            } => {
                line.raw("event.action", "connection");
                line.raw("event.outcome", "failure");
                line.raw("event.reason", reason);
                if let Some(ip) = source_ip {
                    line.with("source.ip", |out| push_ip(*ip, out));
                }
                if let Some(status) = status {
                    line.number("http.response.status_code", u64::from(*status));
                }
                line.number("jwtguard.connections", *count);
                ecs(&mut line, &["web", "network"], &["connection", "error"]);
            }
            Event::Record { level, logger, .. } => {
                ecs(
                    &mut line,
                    &["process"],
                    &[if *level == log::Level::Error {
                        "error"
                    } else {
                        "info"
                    }],
                );
                line.text("log.logger", logger);
            }
            Event::Seal(e) => e.encode(&mut line),
            Event::RateLimited(e) => {
                // The prefix fail2ban's filter matches: action, outcome, reason, addresses.
                line.raw("event.action", "rate_limit");
                line.raw("event.outcome", "failure");
                line.raw("event.reason", "rate_limited");
                if let Some(ip) = e.source_ip {
                    line.with("source.ip", |out| push_ip(ip, out));
                }
                if let Some(ip) = e.client_ip {
                    line.with("client.ip", |out| push_ip(ip, out));
                }
                line.number("http.response.status_code", u64::from(e.status));
                line.with("http.request.id", |out| {
                    out.push_str(e.request_id.text().as_str())
                });
                ecs(
                    &mut line,
                    &["web", "authentication", "intrusion_detection"],
                    &["access", "denied"],
                );
                line.number("jwtguard.limiter.failures", u64::from(e.failures));
                line.number("jwtguard.limiter.retry_after", u64::from(e.retry_after));
                line.text("http.request.method", e.method);
                line.text("url.path", e.path);
                if let Some(agent) = e.user_agent {
                    line.text("user_agent.original", agent);
                }
            }
            Event::KeySet(e) => e.encode(&mut line),
            Event::LogTampered(e) => {
                line.raw("event.action", "seal");
                line.raw("event.outcome", "failure");
                line.raw(
                    "event.reason",
                    if e.cut {
                        "torn_line_cut"
                    } else {
                        "log_tampered"
                    },
                );
                ecs(&mut line, &["file"], &["change"]);
                line.number("jwtguard.seal.verified", e.verified);
                line.number("jwtguard.seal.unverified_offset", e.offset);
                line.number("jwtguard.seal.unverified_bytes", e.bytes);
            }
        }
        match self {
            Event::Request(e) => {
                // A forwarding that failed was allowed first: its message must not say refused.
                let verb = match (&e.action, e.success) {
                    (Action::Forward, _) => "forwarding failed",
                    (_, true) => "allowed",
                    (_, false) => "refused",
                };
                line.message(&[verb, ": ", e.reason_text]);
            }
            Event::Service(ServiceEvent::Startup { url, .. }) => {
                line.message(&[
                    "jwtguard ",
                    env!("CARGO_PKG_VERSION"),
                    " listening on ",
                    url,
                ]);
            }
            Event::Service(ServiceEvent::Shutdown { cause, answered }) => {
                let mut n = itoa::Buffer::new();
                let why = match cause {
                    Cause::Signal(name) => name,
                    Cause::AcceptFailed => "a failure to accept connections",
                    Cause::Drained => "a new worker taking over",
                };
                line.message(&[
                    "stopped by ",
                    why,
                    " after ",
                    n.format(*answered),
                    " requests",
                ]);
            }
            Event::Supervision(e) => {
                let mut a = itoa::Buffer::new();
                let mut b = itoa::Buffer::new();
                let mut ms = itoa::Buffer::new();
                match e {
                    Supervision::Restarted {
                        previous,
                        how,
                        worker,
                        took,
                        ..
                    } => line.message(&[
                        "worker ",
                        a.format(*previous),
                        " ended (",
                        how,
                        "); worker ",
                        b.format(*worker),
                        " serves, ",
                        ms.format(took.as_millis()),
                        " ms later",
                    ]),
                    Supervision::Replaced {
                        previous,
                        cause,
                        worker,
                        ..
                    } => line.message(&[
                        "worker ",
                        a.format(*previous),
                        " replaced (",
                        cause,
                        ") by worker ",
                        b.format(*worker),
                        "; it finishes what it holds",
                    ]),
                    Supervision::Reloaded {
                        previous, worker, ..
                    } => line.message(&[
                        "reloaded: worker ",
                        b.format(*worker),
                        " serves with the configuration read again; worker ",
                        a.format(*previous),
                        " finishes what it holds",
                    ]),
                    Supervision::Failed { action, how, .. } => line.message(&[
                        "a new worker for the ",
                        action,
                        " did not start (",
                        how,
                        ")",
                        if *action == "restart" {
                            "; trying again"
                        } else {
                            "; the worker serving goes on"
                        },
                    ]),
                }
            }
            Event::KeySet(e) if e.loaded => {
                line.message(&["JWK Set file read again: its keys are in use"])
            }
            Event::KeySet(_) => {
                line.message(&["JWK Set file refused: the last good set stays in use"])
            }
            Event::Undelivered { .. } => line.message(&[
                "the client does not read its answers: its connection is no longer served",
            ]),
            Event::Connection { text, .. } => line.message(&[text]),
            Event::Record { message, .. } => line.message(&[message]),
            Event::LogTampered(e) if e.cut => {
                let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
                line.message(&[
                    "the sealed log ended in ",
                    a.format(e.bytes),
                    " bytes without a newline after sequence ",
                    b.format(e.verified),
                    ": cut (a jwtguard killed while writing leaves such a line; so can someone who appends)",
                ]);
            }
            Event::RateLimited(e) => {
                let (mut n, mut s) = (itoa::Buffer::new(), itoa::Buffer::new());
                line.message(&[
                    "rate limited: ",
                    n.format(e.failures),
                    " failed authentications from this address; refused for ",
                    s.format(e.retry_after),
                    " s (this window's other refusals are not recorded)",
                ]);
            }
            Event::LogTampered(e) => {
                let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
                line.message(&[
                    "the sealed log holds ",
                    a.format(e.bytes),
                    " bytes after sequence ",
                    b.format(e.verified),
                    " that do not verify with the sealing key (written by someone without it, or by a writer killed as it moved the key on): left in place, not taken into the chain, which goes on from that sequence",
                ]);
            }
            Event::Seal(e) => {
                let mut n = itoa::Buffer::new();
                let epoch = n.format(e.epoch);
                line.message(&match e.reason {
                    SealReason::Startup => [
                        "sealed: jwtguard started; epoch ",
                        epoch,
                        " begins, the key of the last one is erased",
                    ],
                    SealReason::Epoch => [
                        "sealed: 15 minutes passed; epoch ",
                        epoch,
                        " begins, the key of the last one is erased",
                    ],
                    SealReason::Shutdown => [
                        "sealed: jwtguard stopped; epoch ",
                        epoch,
                        " begins, the key of the last one is erased",
                    ],
                    SealReason::File => [
                        "sealed: the chain goes on in this log file, in epoch ",
                        epoch,
                        "",
                    ],
                });
            }
        }
        line.finish();
    }
}

/// `ecs.version`, `event.kind` and the categorisation arrays.
fn ecs(line: &mut Line, category: &[&str], kind: &[&str]) {
    line.raw("ecs.version", ECS_VERSION);
    line.raw("event.kind", "event");
    line.list("event.category", category);
    line.list("event.type", kind);
}

impl RequestEvent<'_> {
    fn encode(&self, line: &mut Line) {
        line.raw(
            "event.action",
            match self.action {
                Action::Authorize => "authorize",
                Action::Forward => "forward",
            },
        );
        line.raw(
            "event.outcome",
            if self.success { "success" } else { "failure" },
        );
        line.raw("event.reason", self.reason);
        if let Some(ip) = self.source_ip {
            line.with("source.ip", |out| push_ip(ip, out));
        }
        if let Some(ip) = self.client_ip {
            line.with("client.ip", |out| push_ip(ip, out));
        }
        if let Some(status) = self.status {
            line.number("http.response.status_code", u64::from(status));
        }
        if let Some(id) = self.request_id {
            line.with("http.request.id", |out| out.push_str(id.text().as_str()));
        }
        match self.action {
            Action::Authorize => ecs(
                line,
                &["web", "authentication"],
                &["access", if self.success { "allowed" } else { "denied" }],
            ),
            Action::Forward => ecs(line, &["web", "network"], &["connection", "error"]),
        }
        if let Some(fingerprint) = self.fingerprint {
            line.with("jwtguard.token.fingerprint", |out| {
                fingerprint.push_hex(out)
            });
        }
        // Values from the request or the token come last, quoted, escaped and capped.
        line.text("http.request.method", self.method);
        line.text("url.path", self.path);
        if let Some(user) = self.user {
            line.text("user.id", user);
        }
        if let Some(agent) = self.user_agent {
            line.text("user_agent.original", agent);
        }
        if let Some(kid) = self.kid {
            line.text("jwtguard.token.kid", kid);
        }
        if let Some(alg) = self.alg {
            line.text("jwtguard.token.alg", alg);
        }
    }
}

impl KeySetEvent<'_> {
    fn encode(&self, line: &mut Line) {
        line.raw("event.action", "jwks_load");
        line.raw(
            "event.outcome",
            if self.loaded { "success" } else { "failure" },
        );
        line.raw("event.reason", self.reason);
        ecs(line, &["configuration"], &["change"]);
        if self.loaded {
            line.number("jwtguard.jwks.keys", self.keys as u64);
        }
        line.text("file.path", self.path);
        if let Some(problem) = self.problem {
            line.text("error.message", problem);
        }
    }
}

impl Supervision<'_> {
    fn encode(&self, line: &mut Line) {
        let (action, success, reason, kind) = match self {
            Supervision::Restarted { .. } => ("restart", true, "worker_exited", "start"),
            Supervision::Replaced { cause, .. } => ("replace", true, *cause, "change"),
            Supervision::Reloaded { .. } => ("reload", true, "SIGHUP", "change"),
            Supervision::Failed { action, .. } => (*action, false, "worker_failed", "error"),
        };
        line.raw("event.action", action);
        line.raw("event.outcome", if success { "success" } else { "failure" });
        line.raw("event.reason", reason);
        ecs(line, &["process"], &[kind]);
        line.number("process.pid", u64::from(std::process::id()));
        let (previous, worker) = match self {
            Supervision::Restarted {
                previous, worker, ..
            }
            | Supervision::Replaced {
                previous, worker, ..
            }
            | Supervision::Reloaded {
                previous, worker, ..
            } => (*previous, Some(*worker)),
            Supervision::Failed { previous, .. } => (*previous, None),
        };
        if let Some(worker) = worker {
            line.number("jwtguard.worker.pid", u64::from(worker));
        }
        if previous != 0 {
            line.number("jwtguard.worker.previous_pid", u64::from(previous));
        }
        let (Supervision::Restarted { slot, .. }
        | Supervision::Replaced { slot, .. }
        | Supervision::Reloaded { slot, .. }
        | Supervision::Failed { slot, .. }) = self;
        line.number("jwtguard.worker.slot", *slot as u64);
        if let Supervision::Restarted { took, .. } = self {
            line.number(
                "event.duration",
                u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            );
        }
        if let Supervision::Restarted { how, .. } | Supervision::Failed { how, .. } = self {
            line.text("jwtguard.worker.how", how);
        }
    }
}

impl ServiceEvent<'_> {
    fn encode(&self, line: &mut Line) {
        match self {
            ServiceEvent::Startup { url, config } => {
                line.raw("event.action", "startup");
                line.raw("event.outcome", "success");
                ecs(line, &["process"], &["start"]);
                line.raw("service.version", env!("CARGO_PKG_VERSION"));
                line.number("process.pid", u64::from(std::process::id()));
                // Under jwtguard's supervisor, the supervisor.
                line.number(
                    "process.parent.pid",
                    u64::from(std::os::unix::process::parent_id()),
                );
                line.text("url.full", url);
                let mut key = String::new();
                for (name, value) in config.iter() {
                    key.clear();
                    key.push_str("jwtguard.config.");
                    key.push_str(name);
                    line.text(&key, value);
                }
            }
            ServiceEvent::Shutdown { cause, answered } => {
                line.raw("event.action", "shutdown");
                line.raw(
                    "event.outcome",
                    if *cause == Cause::AcceptFailed {
                        "failure"
                    } else {
                        "success"
                    },
                );
                line.raw("event.reason", cause.code());
                ecs(line, &["process"], &["end"]);
                line.number("process.pid", u64::from(std::process::id()));
                line.number("jwtguard.requests", *answered);
            }
        }
    }
}

impl SealEvent<'_> {
    fn encode(&self, line: &mut Line) {
        line.raw("event.action", "seal");
        line.raw("event.outcome", "success");
        line.raw("event.reason", self.reason.code());
        let kind = if self.reason.changes_epoch() {
            "change"
        } else {
            "info"
        };
        ecs(line, &["process"], &[kind]);
        line.number("jwtguard.seal.epoch", self.epoch);
        line.with("jwtguard.seal.previous", |out| push_hex(self.previous, out));
        if self.reason == SealReason::File {
            line.number("jwtguard.seal.previous_file", self.previous_file);
        }
        line.raw("jwtguard.seal.key", self.key_id);
    }
}

/// Appends the seal to `out`, which ends with the covered part of a line
/// ([`sealed_part`]): in JSON (`json`), `,"event.sequence":N,"event.hash":"HEX"}`, the
/// last fields and the closing brace; in text, ` event.sequence=N event.hash=HEX` after
/// `message`.
pub(crate) fn push_seal(out: &mut Vec<u8>, json: bool, sequence: u64, hash: &[u8; 16]) {
    let mut n = itoa::Buffer::new();
    let (sequence_key, hash_key, end): (&[u8], &[u8], &[u8]) = if json {
        (b",\"event.sequence\":", b",\"event.hash\":\"", b"\"}")
    } else {
        (b" event.sequence=", b" event.hash=", b"")
    };
    out.extend_from_slice(sequence_key);
    out.extend_from_slice(n.format(sequence).as_bytes());
    out.extend_from_slice(hash_key);
    let mut hex = [0; 32];
    for (pair, b) in hex.chunks_exact_mut(2).zip(hash) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    out.extend_from_slice(&hex);
    out.extend_from_slice(end);
}

/// The part of `line` (without its newline) that its seal covers, and whether it is
/// JSON: all of it but, in JSON, the closing brace.
pub(crate) fn sealed_part(line: &[u8]) -> (&[u8], bool) {
    match line.strip_suffix(b"}") {
        Some(covered) => (covered, true),
        None => (line, false),
    }
}

/// A sealed line taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Sealed<'a> {
    /// What the hash covers: the line before its seal (see [`push_seal`]).
    pub covered: &'a [u8],
    /// `event.sequence`.
    pub sequence: u64,
    /// `event.hash`: 32 hex digits.
    pub hash: [u8; 16],
}

/// Takes the seal off `line` (without its newline), or `None` when it has none: the
/// seal is parsed from the end, the last fields of the line in either encoding.
pub(crate) fn split_seal(line: &[u8]) -> Option<Sealed<'_>> {
    let (body, hex, json) = if let Some(body) = line.strip_suffix(b"\"}") {
        let (body, hex) = body.split_at_checked(body.len().checked_sub(32)?)?;
        (body.strip_suffix(b",\"event.hash\":\"")?, hex, true)
    } else {
        let (body, hex) = line.split_at_checked(line.len().checked_sub(32)?)?;
        (body.strip_suffix(b" event.hash=")?, hex, false)
    };
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (body, digits) = body.split_at(body.len() - digits);
    let covered = if json {
        body.strip_suffix(b",\"event.sequence\":")?
    } else {
        body.strip_suffix(b" event.sequence=")?
    };
    // The seal's form must be the line's: the MAC covers the body, not the seal, so a JSON
    // line with a text seal (no longer JSON to a reader) would verify otherwise.
    if covered.starts_with(b"{") != json {
        return None;
    }
    Some(Sealed {
        covered,
        sequence: parse_number(digits)?,
        hash: parse_hex(hex)?,
    })
}

/// A decimal number as jwtguard writes them: digits, no sign, no leading zero.
fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `2 * N` lower-case hex digits: `N` bytes.
pub(crate) fn parse_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The `@timestamp` at the start of a line of either encoding.
pub(crate) fn timestamp(line: &[u8]) -> Option<&str> {
    let rest = line
        .strip_prefix(b"{\"@timestamp\":\"")
        .or_else(|| line.strip_prefix(b"@timestamp="))?;
    std::str::from_utf8(rest.get(..24)?).ok()
}

/// What a seal line says, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealFields {
    pub reason: SealReason,
    pub epoch: u64,
    pub previous: [u8; 16],
    pub previous_file: u64,
    pub key_id: String,
}

/// The seal fields of `covered` (a sealed line's covered part), when it is a seal line:
/// its `event.action` must be `seal`, right after the timestamp and the level. Every
/// field of a seal line is jwtguard's own, so they are simply looked up by name.
pub(crate) fn seal_fields(covered: &[u8]) -> Option<SealFields> {
    let ts = timestamp(covered)?.len();
    let (json, rest) = match covered.strip_prefix(b"{\"@timestamp\":\"") {
        Some(rest) => (
            true,
            rest.get(ts..)?
                .strip_prefix(b"\",\"log.level\":\"info\",\"event.action\":\"seal\",")?,
        ),
        None => (
            false,
            covered
                .strip_prefix(b"@timestamp=")?
                .get(ts..)?
                .strip_prefix(b" log.level=info event.action=seal ")?,
        ),
    };
    let field = |name: &str| -> Option<&[u8]> {
        let key = if json {
            format!("\"{name}\":")
        } else {
            format!(" {name}=")
        };
        let at = find(rest, key.as_bytes())? + key.len();
        let value = &rest[at..];
        let value = if json && value.first() == Some(&b'"') {
            let value = &value[1..];
            &value[..value.iter().position(|&b| b == b'"')?]
        } else {
            let end = value
                .iter()
                .position(|&b| b == b' ' || b == b',')
                .unwrap_or(value.len());
            &value[..end]
        };
        Some(value)
    };
    let reason = SealReason::from_code(field("event.reason")?)?;
    Some(SealFields {
        reason,
        epoch: parse_number(field("jwtguard.seal.epoch")?)?,
        previous: parse_hex(field("jwtguard.seal.previous")?)?,
        previous_file: match reason {
            SealReason::File => parse_number(field("jwtguard.seal.previous_file")?)?,
            _ => 0,
        },
        key_id: std::str::from_utf8(field("jwtguard.seal.key")?)
            .ok()?
            .to_owned(),
    })
}

/// Where `needle` first is in `haystack`: memmem, since comparing at every position costs
/// 1.4 s of CPU on a 100 MB log of 64 KiB seal lines padded before their fields.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
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

    /// A value of ours (a code) that needs no escaping: quoted in JSON, bare in text.
    fn raw(&mut self, key: &str, value: &str) {
        self.with(key, |out| out.push_str(value));
    }

    /// A value of ours written by `write`, quoted in JSON, bare in text.
    fn with(&mut self, key: &str, write: impl FnOnce(&mut String)) {
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
    fn list(&mut self, key: &str, values: &[&str]) {
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
    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    /// A value from outside: always quoted, escaped and capped at [`MAX_FIELD_BYTES`].
    fn text(&mut self, key: &str, value: &str) {
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
    fn message(&mut self, parts: &[&str]) {
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
