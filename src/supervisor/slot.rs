//! A slot's life: its worker ends and is restarted (after a growing pause when it keeps
//! failing), a new one that does not start is an event, and one that accepts takes over.

use std::time::{Duration, Instant};

use jwtguard::{Supervision, record_supervision};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::worker::{Purpose, Worker};
use super::{START_TIMEOUT, Supervisor, TAKEOVER};

/// One of the `--workers` places for a worker, with its own restarts and replacements.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) current: Option<Worker>,
    /// Started, not yet accepting.
    pub(super) pending: Option<Worker>,
    pub(super) last_replace: Option<Instant>,
    /// When recent workers ended abnormally: a worker that keeps failing is started again
    /// after a growing pause.
    pub(super) crashes: Vec<Instant>,
    /// A restart waiting for its pause: when, and why.
    pub(super) retry_at: Option<(Instant, Purpose)>,
}

impl Supervisor {
    /// Collects the workers that ended, and acts on each: a restart for a current one,
    /// a failure event for a new one that never accepted.
    pub(super) fn reap(&mut self) -> Result<(), String> {
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
    pub(super) fn restart(&mut self, i: usize, previous: u32, how: String, young: bool) {
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

    pub(super) fn start_restart(&mut self, i: usize, purpose: Purpose) {
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

    pub(super) fn failed_start(
        &mut self,
        i: usize,
        purpose: Purpose,
        how: &str,
    ) -> Result<(), String> {
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
    pub(super) fn promote(&mut self, i: usize) {
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

    /// Kills the current worker of slot `i`, which does not serve and may hold what its
    /// replacement waits for; reaped quietly, as a drained one is (its replacement's event
    /// names it).
    pub(super) fn kill_current(&mut self, i: usize) {
        if let Some(mut current) = self.slots[i].current.take() {
            current.signal(Signal::SIGKILL);
            current.draining = Some(Instant::now());
            self.old.push(current);
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
