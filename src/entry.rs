//! The process's entry point, in place of std's (`lang_start`), and the part of std's
//! start-up that jwtguard needs, done here.
//!
//! Why: issue 17's budget of 3 MiB peak RSS for a worker. std's start-up finds the main
//! thread's stack with glibc's `pthread_getattr_np`, which reads `/proc/self/maps` through
//! stdio and `sscanf`: libc code and tables that nothing else in jwtguard runs, about
//! 200-300 KiB of a worker's resident file pages (the kernel maps whole page-cache folios
//! around each fault). Measured in docs/performance.md, "Peak RSS".
//!
//! What std's start-up does and what becomes of it here:
//! - descriptors 0, 1 and 2 opened on `/dev/null` when closed, so that no file the
//!   process opens (the security log) becomes its standard input, output or error: done
//!   here, the same way;
//! - SIGPIPE ignored, so that a write to a closed pipe or socket is an `EPIPE` error, not
//!   the process's end: done here (std still restores the default in the children it
//!   spawns, as before);
//! - a guard for the main thread's stack and a SIGSEGV handler that prints "has overflowed
//!   its stack" before aborting: left out; a stack overflow (a bug: nothing recurses on
//!   input) ends the process with SIGSEGV instead of SIGABRT, and the supervisor restarts
//!   the worker either way;
//! - the main thread named `main` in panic messages: left out (`<unnamed>`);
//! - standard output flushed on the way out: done here.
//!
//! The arguments need nothing: on glibc, std reads them from an `.init_array` function.
//! Only there: on other C libraries (musl) std takes them in its own start-up, so this
//! module is built for glibc Linux only (src/main.rs).

use std::ffi::{c_char, c_int};
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, IntoRawFd as _};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{SigHandler, Signal, signal};

/// Called by the C runtime as `main`.
// SAFETY: the one symbol named `main` in the binary: `#![no_main]` leaves std's out.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    standard_fds();
    // SAFETY: ignoring a signal installs no handler: nothing runs in signal context.
    if unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.is_err() {
        std::process::abort();
    }
    let code = crate::command();
    let _ = std::io::stdout().flush();
    c_int::from(code)
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed, as std does (the
/// lowest free descriptor is the one `open` returns), and like std's without
/// close-on-exec: the children inherit them.
fn standard_fds() {
    loop {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null");
        // std aborts too: with a standard descriptor closed, the next file opened would
        // take its place.
        let Ok(null) = null else {
            std::process::abort()
        };
        if null.as_raw_fd() > 2 {
            return; // all three were open; this one is closed again
        }
        if fcntl(&null, FcntlArg::F_SETFD(FdFlag::empty())).is_err() {
            std::process::abort();
        }
        // Kept open: it is that standard descriptor now.
        let _ = null.into_raw_fd();
    }
}
