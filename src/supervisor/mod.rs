//! The supervisor: a small parent process that holds the listening socket and runs the
//! server in a worker process on it (src/fds.rs, the same way systemd passes a socket), so
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
//! - The supervisor's events are written by a thread of their own (src/recorder.rs), and
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

pub(crate) mod fds;
mod notify;
pub(crate) mod recorder;

use std::ffi::OsString;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use jwtguard::{Supervision, record_supervision};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use notify::Notify;
use recorder::Recorder;

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

/// Why a worker was started.
enum Purpose {
    First,
    Restart {
        previous: u32,
        how: String,
        since: Instant,
    },
    Replace {
        cause: &'static str,
        /// The worker it replaces.
        previous: u32,
    },
    Reload,
}

struct Worker {
    child: Child,
    out: ChildStdout,
    /// What it printed before its `listening on` line.
    line: Vec<u8>,
    ready: bool,
    started: Instant,
    beat: Instant,
    purpose: Purpose,
    /// When it was asked to drain.
    draining: Option<Instant>,
    /// Sent SIGTERM (once it could take it: when ready).
    stopped: bool,
}

impl Worker {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
    }

    /// Reads what it wrote: its `listening on` line makes it ready; any byte after it is a
    /// heartbeat. Returns true on a new heartbeat.
    fn read(&mut self) -> bool {
        let mut buf = [0u8; 512];
        let mut beat = false;
        loop {
            match self.out.read(&mut buf) {
                Ok(0) | Err(_) => return beat,
                Ok(n) if self.ready => {
                    beat = true;
                    self.beat = Instant::now();
                    let _ = n;
                }
                Ok(n) => {
                    self.line.extend_from_slice(&buf[..n]);
                    if let Some(end) = self.line.iter().position(|b| *b == b'\n') {
                        if self.line.starts_with(b"listening on ") {
                            self.ready = true;
                            self.beat = Instant::now();
                            beat = self.line.len() > end + 1;
                        }
                        self.line.clear();
                    } else if self.line.len() > 4096 {
                        self.line.clear();
                    }
                }
            }
        }
    }
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

/// One of the `--workers` places for a worker, with its own restarts and replacements.
#[derive(Default)]
struct Slot {
    current: Option<Worker>,
    /// Started, not yet accepting.
    pending: Option<Worker>,
    last_replace: Option<Instant>,
    /// When recent workers ended abnormally: a worker that keeps failing is started again
    /// after a growing pause.
    crashes: Vec<Instant>,
    /// A restart waiting for its pause: when, and why.
    retry_at: Option<(Instant, Purpose)>,
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

    fn spawn(&self, purpose: Purpose) -> Result<Worker, String> {
        let mut command = Command::new(&self.options.exe);
        command
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .env(fds::SUPERVISOR, std::process::id().to_string())
            .env("LISTEN_FDS", "1")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            // The supervisor speaks to systemd; a worker would be refused anyway.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        fds::pass(&mut command, &self.options.listener);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let out = child.stdout.take().expect("piped");
        let _ = fcntl(&out, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        let now = Instant::now();
        Ok(Worker {
            child,
            out,
            line: Vec::new(),
            ready: false,
            started: now,
            beat: now,
            purpose,
            draining: None,
            stopped: false,
        })
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

    /// Reloads (SIGHUP) the first slot from `from` on that has a worker serving: a new
    /// worker for it. A slot without one is starting a worker already, which reads the
    /// configuration as it is now. When no slot is left, the reload is done.
    fn reload_from(&mut self, from: usize) {
        self.reload = None;
        for i in from..self.slots.len() {
            let slot = &self.slots[i];
            if slot.current.is_none() || slot.pending.is_some() || slot.retry_at.is_some() {
                continue;
            }
            match self.spawn(Purpose::Reload) {
                Ok(worker) => {
                    self.slots[i].pending = Some(worker);
                    self.reload = Some(i);
                    return;
                }
                Err(how) => {
                    self.failed_event("reload", i, how);
                    break;
                }
            }
        }
        self.notify("READY=1");
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

    /// Collects the workers that ended, and acts on each: a restart for a current one,
    /// a failure event for a new one that never accepted.
    fn reap(&mut self) -> Result<(), String> {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(status) => status,
            };
            let Some(pid) = status.pid().map(|p| p.as_raw() as u32) else {
                continue;
            };
            let how = describe(status);
            if self.stopping.is_some() {
                // Ending, as asked.
                for slot in &mut self.slots {
                    slot.current.take_if(|w| w.pid() == pid);
                    slot.pending.take_if(|w| w.pid() == pid);
                }
                self.old.retain(|w| w.pid() != pid);
                continue;
            }
            let is = |w: &Option<Worker>| w.as_ref().is_some_and(|w| w.pid() == pid);
            if let Some(i) = self.old.iter().position(|w| w.pid() == pid) {
                let mut worker = self.old.swap_remove(i);
                let _ = worker.child.try_wait();
            } else if let Some(i) = self.slots.iter().position(|s| is(&s.pending)) {
                let mut worker = self.slots[i].pending.take().expect("checked");
                let _ = worker.child.try_wait();
                self.failed_start(i, worker.purpose, &how)?;
            } else if let Some(i) = self.slots.iter().position(|s| is(&s.current)) {
                let mut worker = self.slots[i].current.take().expect("checked");
                let _ = worker.child.try_wait();
                if matches!(status, WaitStatus::Exited(_, 0)) {
                    // Stopped on purpose (a signal sent to it, or to the process group):
                    // so is the service.
                    self.stop(Signal::SIGTERM);
                    continue;
                }
                // It served: started again at once, however often it happens (a worker
                // that never starts is what waits).
                self.restart(i, worker.pid(), how, false);
            }
        }
    }

    /// The current worker of slot `i` ended abnormally: a new one at once, or after a
    /// pause when its workers keep failing (3 in 10 s).
    /// `young`: the worker ended before it accepted (a start that fails again and again
    /// waits a little longer each time).
    fn restart(&mut self, i: usize, previous: u32, how: String, young: bool) {
        let now = Instant::now();
        let slot = &mut self.slots[i];
        slot.crashes
            .retain(|t| now.duration_since(*t) < Duration::from_secs(10));
        if young {
            slot.crashes.push(now);
        }
        let purpose = Purpose::Restart {
            previous,
            how,
            since: now,
        };
        if let Some(pending) = &mut slot.pending {
            // A replacement is on its way: it takes over as soon as it accepts, as the
            // restart.
            pending.purpose = purpose;
            return;
        }
        let pause = match slot.crashes.len() {
            0..=2 => Duration::ZERO,
            n => Duration::from_millis(100 << (n - 3).min(5)),
        };
        if pause.is_zero() {
            self.start_restart(i, purpose);
        } else {
            slot.retry_at = Some((now + pause, purpose));
        }
    }

    fn start_restart(&mut self, i: usize, purpose: Purpose) {
        match self.spawn(purpose) {
            Ok(worker) => self.slots[i].pending = Some(worker),
            Err(how) => {
                self.failed_event("restart", i, how.clone());
                self.slots[i].retry_at = Some((
                    Instant::now() + Duration::from_secs(1),
                    Purpose::Restart {
                        previous: 0,
                        how,
                        since: Instant::now(),
                    },
                ));
            }
        }
    }

    fn failed_start(&mut self, i: usize, purpose: Purpose, how: &str) -> Result<(), String> {
        let current = self.slots[i].current.as_ref().map_or(0, Worker::pid);
        let serving = self.slots.iter().any(|slot| slot.current.is_some());
        let (action, previous) = match purpose {
            // Nothing serves yet: the configuration is the likely cause, and the message
            // is on stderr.
            Purpose::First if !serving => {
                return Err(format!("the worker ended at start-up ({how})"));
            }
            // Another slot's worker serves with the same configuration: this one is
            // restarted, as one that served would be.
            Purpose::First => {
                self.firsts -= 1;
                if self.firsts == 0 {
                    self.notify("READY=1");
                }
                ("restart", 0)
            }
            Purpose::Restart { .. } => ("restart", current),
            Purpose::Replace { previous, .. } => ("replace", previous),
            Purpose::Reload => ("reload", current),
        };
        let failed = how.to_owned();
        self.events.record(move || {
            record_supervision(Supervision::Failed {
                action,
                previous,
                how: &failed,
                slot: i,
            })
        });
        if self.reload == Some(i) {
            // The other slots keep the workers they have: a configuration that does not
            // start is not tried on them.
            self.reload = None;
            self.notify("READY=1");
        }
        match purpose {
            Purpose::Restart { .. } | Purpose::First => self.restart(i, 0, how.to_owned(), true),
            Purpose::Replace { .. } => self.slots[i].last_replace = Some(Instant::now()),
            Purpose::Reload => {}
        }
        let slot = &self.slots[i];
        if slot.current.is_none() && slot.pending.is_none() && slot.retry_at.is_none() {
            self.restart(i, previous, how.to_owned(), true);
        }
        Ok(())
    }

    /// A new worker in slot `i` that accepts takes over: the one it replaces drains.
    fn promote(&mut self, i: usize) {
        let slot = &self.slots[i];
        if let Some((at, _)) = &slot.retry_at
            && Instant::now() >= *at
            && slot.pending.is_none()
        {
            let (_, purpose) = self.slots[i].retry_at.take().expect("checked");
            self.start_restart(i, purpose);
        }
        let Some(pending) = &self.slots[i].pending else {
            return;
        };
        if !pending.ready {
            if pending.started.elapsed() > START_TIMEOUT {
                // Reaped as a failed start once it is gone.
                pending.signal(Signal::SIGKILL);
            }
            let not_serving = matches!(
                pending.purpose,
                Purpose::Replace {
                    cause: "loop_stalled" | "healthz_failed",
                    ..
                }
            );
            if not_serving && pending.started.elapsed() > TAKEOVER {
                self.kill_current(i);
            }
            return;
        }
        let worker = self.slots[i].pending.take().expect("checked");
        let pid = worker.pid();
        let previous = self.slots[i].current.take();
        let previous_pid = previous.as_ref().map_or(0, Worker::pid);
        if let Some(mut previous) = previous {
            previous.signal(Signal::SIGUSR2);
            previous.draining = Some(Instant::now());
            self.old.push(previous);
        }
        let events = &self.events;
        match &worker.purpose {
            Purpose::First => {
                self.firsts -= 1;
                if self.firsts == 0 {
                    self.notify("READY=1");
                }
            }
            Purpose::Restart {
                previous,
                how,
                since,
            } => {
                let (previous, how, took) = (*previous, how.clone(), since.elapsed());
                events.record(move || {
                    record_supervision(Supervision::Restarted {
                        previous,
                        how: &how,
                        worker: pid,
                        took,
                        slot: i,
                    })
                });
            }
            &Purpose::Replace { cause, previous } => {
                events.record(move || {
                    record_supervision(Supervision::Replaced {
                        previous,
                        cause,
                        worker: pid,
                        slot: i,
                    })
                });
            }
            Purpose::Reload => {
                events.record(move || {
                    record_supervision(Supervision::Reloaded {
                        previous: previous_pid,
                        worker: pid,
                        slot: i,
                    })
                });
            }
        }
        self.slots[i].current = Some(worker);
        if self.reload == Some(i) {
            // Whatever it was started as by now (a restart, if the old one died).
            self.reload_from(i + 1);
        }
    }

    /// The watchdog: kills drains that overran, and replaces an unhealthy current worker
    /// in each slot.
    fn watch(&mut self) {
        for old in &self.old {
            if old.draining.is_some_and(|t| t.elapsed() > DRAIN_LIMIT) {
                old.signal(Signal::SIGKILL);
            }
        }
        if self.last_check.elapsed() < CHECK {
            return;
        }
        self.last_check = Instant::now();
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(current) = &slot.current else {
                continue;
            };
            if slot.pending.is_some() || slot.last_replace.is_some_and(|t| t.elapsed() < COOLDOWN) {
                continue;
            }
            let cause = if current.beat.elapsed() > STALL {
                Some("loop_stalled")
            } else {
                None
            };
            let previous = current.pid();
            if let Some(cause) = cause {
                self.slots[i].last_replace = Some(Instant::now());
                match self.spawn(Purpose::Replace { cause, previous }) {
                    Ok(worker) => self.slots[i].pending = Some(worker),
                    Err(how) => self.failed_event("replace", i, how),
                }
            }
        }
    }

    /// Kills the current worker of slot `i`, which does not serve and may hold what its
    /// replacement waits for; reaped quietly, as a drained one is (its replacement's event
    /// names it).
    fn kill_current(&mut self, i: usize) {
        if let Some(mut current) = self.slots[i].current.take() {
            current.signal(Signal::SIGKILL);
            current.draining = Some(Instant::now());
            self.old.push(current);
        }
    }

    fn notify(&self, state: &str) {
        if let Some(notify) = &self.notify {
            notify.send(state);
        }
    }
}

/// `exit status N`, `signal SIGKILL`.
fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("signal {}", signal.as_str()),
        other => format!("{other:?}"),
    }
}

/// `CLOCK_MONOTONIC` in µs, for systemd's `RELOADING=1`.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}
