//! Replacing a worker that is still there: the watchdog's replacement of one whose loop
//! stopped beating (and the kill of a drain that overran), and a reload's (SIGHUP), one
//! slot at a time.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::worker::Purpose;
use super::{CHECK, COOLDOWN, DRAIN_LIMIT, STALL, Supervisor};

impl Supervisor {
    /// The watchdog: kills drains that overran, and replaces an unhealthy current worker
    /// in each slot.
    pub(super) fn watch(&mut self) {
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

    /// Reloads (SIGHUP) the first slot from `from` on that has a worker serving: a new
    /// worker for it. A slot without one is starting a worker already, which reads the
    /// configuration as it is now. When no slot is left, the reload is done.
    pub(super) fn reload_from(&mut self, from: usize) {
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
}
