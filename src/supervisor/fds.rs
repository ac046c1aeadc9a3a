//! The listening socket passed from one process to another, the way systemd's socket
//! activation does it (`sd_listen_fds(3)`): descriptor 3, `LISTEN_FDS=1`. jwtguard's
//! supervisor passes it to its worker the same way, naming itself in
//! `JWTGUARD_SUPERVISOR` (its pid) where systemd names the receiver in `LISTEN_PID`.
//!
//! The `unsafe` blocks of the binary are here: looking at and taking ownership of an
//! inherited descriptor, and putting one at descriptor 3 in a child between `fork` and
//! `exec`.

use std::net::TcpListener;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, IntoRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::socket::{getsockopt, sockopt};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST: RawFd = 3;

/// The environment variable that names the supervisor a worker was started by.
pub(crate) const SUPERVISOR: &str = "JWTGUARD_SUPERVISOR";

/// Who passed this process its listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum From {
    /// systemd (or another socket activator): `LISTEN_PID` is this process.
    Activator,
    /// jwtguard's supervisor, this process's parent.
    Supervisor,
}

/// The listening socket this process was given, and by whom; `Ok(None)` when it was given
/// none. An `Err` says why what it was given cannot be served: several sockets, or one
/// that is not a listening TCP socket.
pub(crate) fn inherited() -> Result<Option<(TcpListener, From)>, String> {
    let var = |name| std::env::var(name).ok();
    let parent = nix::unistd::getppid().as_raw().to_string();
    let from = if var(SUPERVISOR).is_some_and(|pid| pid == parent) {
        From::Supervisor
    } else if var("LISTEN_PID").is_some_and(|pid| pid == std::process::id().to_string()) {
        From::Activator
    } else {
        return Ok(None);
    };
    match var("LISTEN_FDS").as_deref() {
        Some("1") => {}
        Some(n) => return Err(format!("LISTEN_FDS={n}: jwtguard serves one socket")),
        None => return Ok(None),
    }
    // SAFETY: only looked at: whether descriptor 3 is open at all.
    let open = fcntl(unsafe { BorrowedFd::borrow_raw(FIRST) }, FcntlArg::F_GETFD).is_ok();
    if !open {
        return Err("LISTEN_FDS=1, but descriptor 3 is not open".into());
    }
    // SAFETY: the protocol hands this process descriptor 3, open (checked above), for it
    // to own; nothing else in the process has taken it (this runs before any file is
    // opened).
    let fd = unsafe { OwnedFd::from_raw_fd(FIRST) };
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let stream =
        getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == nix::sys::socket::SockType::Stream);
    if !(listening && stream) {
        return Err("descriptor 3 is not a listening TCP socket".into());
    }
    // Our own children (none but a supervisor's workers) must not inherit it by accident.
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| e.to_string())?;
    Ok(Some((TcpListener::from(fd), from)))
}

/// Has `command`'s child get `listener` as descriptor 3, and start with no signal blocked
/// (the supervisor blocks the ones it reads from a signalfd).
pub(crate) fn pass(command: &mut Command, listener: &TcpListener) {
    let fd = listener.as_raw_fd();
    let child = move || {
        // SAFETY: `fd` is open in the forked child (the parent holds it for as long as it
        // spawns workers); dup2 and fcntl are async-signal-safe system calls, and the
        // descriptor at 3 is the child's to keep across exec, so it is never closed here.
        let listener = unsafe { BorrowedFd::borrow_raw(fd) };
        if fd == FIRST {
            fcntl(listener, FcntlArg::F_SETFD(FdFlag::empty()))?;
        } else {
            // dup2 leaves the copy without FD_CLOEXEC, as exec needs it.
            let _ = unsafe { nix::unistd::dup2_raw(listener, FIRST) }?.into_raw_fd();
        }
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe system calls and allocates nothing.
    unsafe {
        command.pre_exec(child);
    }
}
