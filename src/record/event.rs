//! The security log's schema: every event jwtguard records. Its two one-line encodings
//! (JSON and text) are in src/record/encode.rs, on the builder in src/record/line.rs, and
//! the seal fields in src/record/sealed.rs: these four files are the only place that
//! names a log field.
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

use std::cell::RefCell;
use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::Error;

/// How security events are encoded.
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
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err(Error::Config {
                setting: "--log-format",
                problem: format!("{s:?} is not json or text"),
            }),
        }
    }
}

/// The ECS version the events conform to.
pub(crate) const ECS_VERSION: &str = "9.3.0";

/// The longest value from the request or the token written to the log, in bytes before
/// escaping. A longer value is cut at a character boundary and ends with `...`.
pub(crate) const MAX_FIELD_BYTES: usize = 256;

/// The longest `message`, in bytes before escaping.
pub(super) const MAX_MESSAGE_BYTES: usize = 4096;

/// The longest line jwtguard writes, its seal and newline included. An event's fields are
/// fixed: besides jwtguard's own short values, a `message` of at most
/// [`MAX_MESSAGE_BYTES`] and at most 20 values from outside (the start-up event's address
/// and settings, 16 today) of at most [`MAX_FIELD_BYTES`], each byte at most 6 once escaped
/// (`\u007f`): under 58 KiB (test `the_longest_events_fit_in_a_line`). `verify-log` holds
/// no more of a line than this, and reports a longer one as not written by jwtguard.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

pub(super) const HEX: &[u8; 16] = b"0123456789abcdef";

/// The first 8 bytes of the SHA-256 of a token, written as 16 hex digits: the events of
/// one token can be correlated without the token being stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 8]);

impl Fingerprint {
    pub(crate) fn of(token: &str) -> Fingerprint {
        thread_local! {
            /// The last token this thread fingerprinted, and its fingerprint: a client
            /// sends one token with many requests, so its SHA-256 (three to five blocks for
            /// a common token) is computed once, not for each.
            static LAST: RefCell<(Vec<u8>, Option<Fingerprint>)> =
                const { RefCell::new((Vec::new(), None)) };
        }
        LAST.with_borrow_mut(|(last, fingerprint)| match fingerprint {
            Some(fingerprint) if same_bytes(last, token.as_bytes()) => *fingerprint,
            _ => {
                let new = Fingerprint::of_digest(&Sha256::digest(token.as_bytes()).into());
                last.clear();
                last.extend_from_slice(token.as_bytes());
                *fingerprint = Some(new);
                new
            }
        })
    }

    /// The fingerprint of the token whose SHA-256 is `digest`.
    pub(crate) fn of_digest(digest: &[u8; 32]) -> Fingerprint {
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        Fingerprint(first)
    }

    pub(super) fn push_hex(&self, out: &mut String) {
        push_hex(&self.0, out);
    }
}

/// Whether `a` and `b` are the same bytes, in a time that depends on their lengths only
/// (no early exit): the token cached by [`Fingerprint::of`] may be another client's, and
/// how long a comparison took must not say how much of it a request's token shares.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
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
    pub(super) fn code(self) -> &'static str {
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
    /// The watchdog found `previous` unhealthy (`cause`, a code: `loop_stalled`); `worker`
    /// serves, and
    /// `previous` finishes what it holds.
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
    /// A seal line of a sealed log (src/record/seal.rs): an epoch begins, or a new file.
    Seal(SealEvent<'a>),
    /// Lines in a sealed log that do not verify with the sealing key (src/record/seal.rs).
    LogTampered(LogTampered),
    /// An address refused by the brute-force limiter: once per window (src/decide/limiter.rs).
    RateLimited(RateLimited<'a>),
    /// A JWK Set file read again (src/decide/key_file.rs).
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

    pub(super) fn from_code(code: &[u8]) -> Option<SealReason> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(fingerprint: Fingerprint) -> String {
        let mut out = String::new();
        fingerprint.push_hex(&mut out);
        out
    }

    #[test]
    fn each_token_gets_its_own_fingerprint_however_tokens_come() {
        // The first 8 bytes of `printf TOKEN | sha256sum`. The same token twice, another,
        // a prefix of the last: each is its own, whatever came before.
        for (token, expected) in [
            ("abc", "ba7816bf8f01cfea"),
            ("abc", "ba7816bf8f01cfea"),
            ("a.b.c", "845e30448809e2bc"),
            ("abc", "ba7816bf8f01cfea"),
            ("ab", "fb8e20fc2e4c3f24"),
            ("a.b.c", "845e30448809e2bc"),
        ] {
            assert_eq!(hex(Fingerprint::of(token)), expected, "{token}");
        }
    }
}
