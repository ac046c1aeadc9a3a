//! An event's fields, in their fixed order, on a [`Line`]: one call per field gives both
//! the JSON and the text encoding.

use std::sync::OnceLock;
use std::time::SystemTime;

use super::event::{
    Action, Cause, ECS_VERSION, Event, KeySetEvent, LogFormat, LogTampered, RequestEvent,
    SealEvent, SealReason, ServiceEvent, Supervision, push_hex,
};
use super::line::{Line, push_ip};

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

/// [`ecs`] of an authorization, allowed or denied: encoded once for each format and
/// copied into each request's line (its six fields were a fifth of a line's encoding).
fn authorize_ecs(line: &mut Line, allowed: bool) {
    static ENCODED: [[OnceLock<String>; 2]; 2] = [const { [const { OnceLock::new() }; 2] }; 2];
    let format = line.format();
    let slot = &ENCODED[usize::from(format == LogFormat::Text)][usize::from(allowed)];
    let encoded = slot.get_or_init(|| {
        let mut out = String::new();
        let kind = if allowed { "allowed" } else { "denied" };
        ecs(
            &mut Line::fields(format, &mut out),
            &["web", "authentication"],
            &["access", kind],
        );
        out
    });
    line.verbatim(encoded);
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
            Action::Authorize => authorize_ecs(line, self.success),
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

#[cfg(test)]
mod tests;
