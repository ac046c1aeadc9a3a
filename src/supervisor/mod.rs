//! The supervisor: a small parent process that holds the listening socket and runs the
//! server in a worker process on it ([`fds`], the same way systemd passes a socket), so
//! that the socket outlives any worker. It never reads client traffic.
//!
//! - A worker that ends abnormally (a crash, SIGKILL, its listening socket failing) is
//!   started again at once; connections wait in the socket's queue meanwhile.
//! - The watchdog replaces a worker that is alive but unhealthy: its serving loop stopped
//!   beating. The new worker starts accepting first; then the old one stops accepting and
//!   finishes what it holds (SIGUSR2, [`jwtguard::Stopper::drain`]).
//! - SIGHUP starts a new worker, which reads the configuration and keys again, and
//!   replaces the old one the same way; a new worker that does not start is an event, and
//!   the old one goes on serving.
//!   A replacement for a worker that does not serve (its loop stalled) that is not
//!   accepting within [`TAKEOVER`] has the old one killed: the old one may hold what the
//!   new one waits for (a sealed log's lock).
//! - SIGTERM and SIGINT stop the workers (SIGTERM), kill those still there after
//!   [`STOP_LIMIT`], and then the supervisor, exit 0: within 2 s, whatever the workers do.
//! - The supervisor's events are written by a thread of their own ([`recorder`]), and
//!   its process waits at most [`LOCK_WAIT`](recorder::LOCK_WAIT) for a sealed
//!   log's lock: it never waits for the log, which a stuck worker may hold.
//!
//! A worker reports on its standard output, a pipe to the supervisor: its `listening on`
//! line when it accepts, then a line per second from its serving loop (the heartbeat).
//!
//! With `--workers N`, N workers share the socket, each in a [`Slot`] with its own
//! restarts, backoff and replacements; the events name the slot. A reload replaces the
//! slots one at a time.
//!
//! The heartbeat is each worker's health check, and the only one: its loop beats each
//! turn, whatever its connections do. A `/healthz` probe on the shared socket, which an
//! earlier version made, waits behind the clients: connections that fill
//! `--max-connections` kept it out and had a sound worker replaced, and its brute-force
//! table emptied with it (tests/supervisor.rs).
//!
//! - This file: the loop (signals by signalfd, the workers' pipes by poll), stopping, and
//!   what systemd is told ([`notify`]).
//! - [`worker`]: a worker process, why it was started, how it is started and what it says.
//! - [`slot`]: a slot's restarts, its failed starts and a new worker's takeover.
//! - [`watchdog`]: replacing a stalled worker, and a reload (SIGHUP), slot by slot.
//! - [`fds`]: the socket passed as descriptor 3 (a worker and socket activation take it
//!   here too); [`recorder`]: the supervisor's events, by a thread of their own.
//!
//! It is the binary's, a sibling of the library's `src/serve/` rather than a part of it:
//! the supervisor runs workers and never serves, and compiled into the binary it can use
//! only jwtguard's public API (the events: [`jwtguard::record_supervision`]), which the
//! compiler enforces. In `src/serve/` it would need a public `jwtguard` module (a promise
//! to embedders, with signalfd and waitpid in the library) or a `#[path]` (a folder in
//! `serve/` that is not `serve`'s). `src/main.rs` and `src/cli/` import it; nothing here
//! imports them.

pub(crate) mod fds;
mod notify;
pub(crate) mod recorder;
mod slot;
mod watchdog;
mod worker;

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jwtguard::{Supervision, record_supervision};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use notify::Notify;
use recorder::Recorder;
use slot::Slot;
use worker::{Purpose, Worker};

/// A worker that does not accept within this long after its start is given up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A serving loop that has not beaten for this long is stalled.
const STALL: Duration = Duration::from_secs(3);
/// How often the watchdog looks.
const CHECK: Duration = Duration::from_secs(1);
/// No watchdog replacement within this long of the last one.
const COOLDOWN: Duration = Duration::from_secs(10);
/// A draining worker has its own 10 s of grace; past this, it is killed.
const DRAIN_LIMIT: Duration = Duration::from_secs(12);
/// How long SIGTERM waits for the workers before it kills them: the whole tree stops
/// within 2 s (a request that takes longer is cut).
const STOP_LIMIT: Duration = Duration::from_secs(1);
/// How long a replacement for a worker that does not serve may take to accept before the
/// old one is killed.
const TAKEOVER: Duration = Duration::from_secs(1);

/// What the supervisor needs to start workers.
pub(crate) struct Options {
    /// The binary, and its arguments (the supervisor's own).
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment for the workers (the demo secret).
    pub env: Vec<(String, String)>,
    pub listener: TcpListener,
    /// How many workers serve at once (`--workers`), each in a slot of its own.
    pub workers: usize,
}

/// Runs the workers until SIGTERM or SIGINT. `Err` only when a first worker cannot
/// start (its own message is on stderr).
pub(crate) fn run(options: Options) -> Result<(), String> {
    let signals = SigSet::from_iter([
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ]);
    signals.thread_block().map_err(|e| e.to_string())?;
    let signalfd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| e.to_string())?;
    let notify = Notify::from_env();
    let events = Recorder::start()?;
    let slots = (0..options.workers.max(1))
        .map(|_| Slot::default())
        .collect();
    let mut s = Supervisor {
        options,
        slots,
        old: Vec::new(),
        stopping: None,
        stop_signal: Signal::SIGTERM,
        reload_wanted: false,
        reload: None,
        firsts: 0,
        last_check: Instant::now(),
        notified_beat: Instant::now(),
        notify,
        events,
    };
    for i in 0..s.slots.len() {
        s.slots[i].pending = Some(s.spawn(Purpose::First)?);
        s.firsts += 1;
    }
    loop {
        let mut fds = vec![PollFd::new(signalfd.as_fd(), PollFlags::POLLIN)];
        let workers: Vec<&Worker> = s.workers().collect();
        fds.extend(
            workers
                .iter()
                .map(|w| PollFd::new(w.out.as_fd(), PollFlags::POLLIN)),
        );
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        drop(fds);
        while let Ok(Some(info)) = signalfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(signal @ (Signal::SIGTERM | Signal::SIGINT)) => s.stop(signal),
                Ok(Signal::SIGHUP) => s.reload_wanted = true,
                _ => {}
            }
        }
        s.read_workers();
        s.reap()?;
        if s.stopping.is_some() {
            if s.workers().next().is_none() {
                s.events.finish();
                return Ok(());
            }
            s.stop_ready();
            if s.stopping.is_some_and(|t| t.elapsed() > STOP_LIMIT) {
                s.workers().for_each(|w| w.signal(Signal::SIGKILL));
            }
            continue;
        }
        for i in 0..s.slots.len() {
            s.promote(i);
        }
        let starting = s
            .slots
            .iter()
            .any(|slot| slot.pending.is_some() || slot.retry_at.is_some());
        if s.reload_wanted && s.reload.is_none() && !starting {
            s.reload_wanted = false;
            s.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
            s.reload_from(0);
        }
        s.watch();
    }
}

struct Supervisor {
    options: Options,
    slots: Vec<Slot>,
    /// Draining, whatever their slot.
    old: Vec<Worker>,
    stopping: Option<Instant>,
    stop_signal: Signal,
    /// SIGHUP came: a reload starts once no other worker is starting.
    reload_wanted: bool,
    /// A reload under way: the slot whose new worker is starting. Slots are reloaded one
    /// at a time, so that a configuration that does not start fails once and the other
    /// slots go on serving.
    reload: Option<usize>,
    /// First workers not accepting yet: READY=1 once none is left.
    firsts: usize,
    last_check: Instant,
    notified_beat: Instant,
    notify: Option<Notify>,
    events: Recorder,
}

impl Supervisor {
    fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.slots
            .iter()
            .flat_map(|slot| slot.current.iter().chain(slot.pending.iter()))
            .chain(self.old.iter())
    }

    fn workers_mut(&mut self) -> impl Iterator<Item = &mut Worker> {
        self.slots
            .iter_mut()
            .flat_map(|slot| slot.current.iter_mut().chain(slot.pending.iter_mut()))
            .chain(self.old.iter_mut())
    }

    /// Stops the workers with `signal` (the one the supervisor got: their shutdown events
    /// name it), then the supervisor.
    fn stop(&mut self, signal: Signal) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now());
            self.stop_signal = signal;
            self.notify("STOPPING=1");
        }
        self.stop_ready();
    }

    /// The stop signal to each worker that can take it: one that is not ready yet may not
    /// have its handler (it gets it once it is; one that is not by [`STOP_LIMIT`], waiting
    /// for a sealed log's lock, say, is killed).
    fn stop_ready(&mut self) {
        let signal = self.stop_signal;
        for worker in self.workers_mut() {
            if worker.ready && !worker.stopped {
                worker.signal(signal);
                worker.stopped = true;
            }
        }
    }

    fn failed_event(&self, action: &'static str, slot: usize, how: String) {
        let previous = self.slots[slot].current.as_ref().map_or(0, Worker::pid);
        self.events.record(move || {
            record_supervision(Supervision::Failed {
                action,
                previous,
                how: &how,
                slot,
            })
        });
    }

    fn read_workers(&mut self) {
        let mut beat = false;
        for slot in &mut self.slots {
            if let Some(current) = &mut slot.current {
                beat |= current.read();
            }
            if let Some(pending) = &mut slot.pending {
                pending.read();
            }
        }
        for old in &mut self.old {
            old.read();
        }
        if beat && self.notified_beat.elapsed() >= CHECK {
            self.notified_beat = Instant::now();
            self.notify("WATCHDOG=1");
        }
    }

    fn notify(&self, state: &str) {
        if let Some(notify) = &self.notify {
            notify.send(state);
        }
    }
}

/// `CLOCK_MONOTONIC` in µs, for systemd's `RELOADING=1`.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}
