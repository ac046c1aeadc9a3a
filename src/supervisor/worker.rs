//! A worker process: how it is started (the listening socket as descriptor 3, its
//! standard output a pipe back), why, and what it reports (its `listening on` line, then
//! its heartbeat).

use std::io::Read as _;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Supervisor, fds};

/// Why a worker was started.
pub(super) enum Purpose {
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

/// A worker process, as its supervisor sees it.
pub(super) struct Worker {
    pub(super) child: Child,
    pub(super) out: ChildStdout,
    /// What it printed before its `listening on` line.
    line: Vec<u8>,
    pub(super) ready: bool,
    pub(super) started: Instant,
    pub(super) beat: Instant,
    pub(super) purpose: Purpose,
    /// When it was asked to drain.
    pub(super) draining: Option<Instant>,
    /// Sent SIGTERM (once it could take it: when ready).
    pub(super) stopped: bool,
}

impl Worker {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
    }

    /// Reads what it wrote: its `listening on` line makes it ready; any byte after it is a
    /// heartbeat. Returns true on a new heartbeat.
    pub(super) fn read(&mut self) -> bool {
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

impl Supervisor {
    pub(super) fn spawn(&self, purpose: Purpose) -> Result<Worker, String> {
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
}
