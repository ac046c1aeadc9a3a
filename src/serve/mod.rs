//! Serving: jwtguard's own HTTP/1 front end (serve, forward-auth and proxy mode), one
//! event loop per worker, no thread per connection, every limit and timeout named.
//!
//! - [`server`]: the [`Server`](server::Server) the binary runs in each worker (bind,
//!   serve, drain, stop; its start-up and shutdown events) and its
//!   [`Stopper`](server::Stopper).
//! - [`sys`]: the listening sockets (`SOMAXCONN`, `SO_REUSEPORT`) and the open-files limit.
//! - [`head`]: a request head from bytes, into the caller's arrays (httparse), and the
//!   framing rules of RFC 9112.
//! - [`conn`]: one connection's protocol state, fed bytes, with no `Read`/`Write`.
//! - [`answer`]: jwtguard's answers as bytes.
//! - [`chunked`]: a chunked body from bytes, to its exact end (the proxy's, both ways).
//! - [`request_head`], [`response`]: proxy mode's heads, up and down.
//! - [`upstream`]: upstream connections and their keep-alive pool.
//! - [`exchange`]: one request's exchange with the upstream, fed bytes, with no I/O.
//! - [`proxy`]: proxy mode in the loop: exchanges driven over their sockets.
//! - [`timers`]: one FIFO queue per kind of timeout.
//! - [`route`]: what each request (or refused head) gets, decided.
//! - [`event_loop`]: the mio loop, turn by turn: accept, read, decide, record, answer,
//!   flush.
//! - [`accept`]: connections taken, capped, and evicted to make room.
//! - [`slot`]: a connection's turn: read, answer, flush, settle its timer; its waits over.
//!
//! The supervisor that runs the workers is not here: it is the binary's (src/supervisor/,
//! compiled into the `jwtguard` binary, which sees only this crate's public API), and it
//! never reads client traffic.
//!
//! It may import [`crate::decide`] (the guard, the path, the trusted proxies, a reason),
//! [`crate::record`] (the events and the logger), `crate::config` (the settings, the
//! upstream's address), the answers' contents (`crate::reply`) and the leaves
//! `crate::error`, `crate::time` and `crate::metrics` (tests aside: the tiny_http adapter
//! `crate::http`, to compare answers). Nothing imports it but lib.rs, whose `pub use`
//! of [`Server`](server::Server) and [`Stopper`](server::Stopper) is all the binary sees
//! of it, and the fuzzers (`crate::fuzzing`: the connection, chunked and upstream-answer
//! readers). Within it, a file names its siblings (`super::`), not lib.rs's names.

pub(crate) mod accept;
pub(crate) mod answer;
pub(crate) mod chunked;
pub(crate) mod conn;
pub(crate) mod event_loop;
pub(crate) mod exchange;
pub(crate) mod head;
pub(crate) mod proxy;
pub(crate) mod request_head;
pub(crate) mod response;
pub(crate) mod route;
pub(crate) mod server;
pub(crate) mod slot;
pub(crate) mod sys;
pub(crate) mod timers;
pub(crate) mod upstream;

use std::time::Duration;

use crate::Config;

/// The limits and timeouts of the front end, from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// `--max-header-bytes` (nginx `large_client_header_buffers`): a longer head is 431.
    pub max_header_bytes: usize,
    /// `--header-timeout` (nginx `client_header_timeout`): a whole head, or 408.
    pub header_timeout: Duration,
    /// `--idle-timeout` (nginx `keepalive_timeout`): between requests.
    pub idle_timeout: Duration,
    /// `--body-timeout`: for the whole of a body thrown away, from its start (nginx
    /// `lingering_time`).
    pub body_timeout: Duration,
    /// `--send-timeout` (nginx `send_timeout`): between two writes that make progress.
    pub send_timeout: Duration,
    /// `--max-connections` (nginx `worker_connections`).
    pub max_connections: usize,
    /// `--max-connections-per-address` (nginx `limit_conn`), 0 for none.
    pub max_connections_per_address: usize,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Limits {
        Limits {
            max_header_bytes: config.max_header_bytes,
            header_timeout: Duration::from_secs(config.header_timeout),
            idle_timeout: Duration::from_secs(config.idle_timeout),
            body_timeout: Duration::from_secs(config.body_timeout),
            send_timeout: Duration::from_secs(config.send_timeout),
            max_connections: config.max_connections,
            max_connections_per_address: config.max_connections_per_address,
        }
    }
}
