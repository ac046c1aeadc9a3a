//! What std's start-up did for the process and src/entry.rs does now (the binary has its
//! own entry point: std's cost a worker about 300 KiB of peak RSS): descriptors 0 to 2
//! closed at start are opened on `/dev/null`, so that no file the process opens (the
//! security log) takes their place; SIGPIPE is ignored, so that a write to a closed
//! socket or pipe is an error, not the end of the process. Both in the supervisor and in
//! its worker.

mod support;

use std::process::{Command, Stdio};

use support::{SECRET, Server, TempDir, workers};

/// The supervisor started by `sh` with `closed` (a redirection such as `0<&- 2>&-`).
fn started_with(closed: &str) -> Server {
    let dir = TempDir::new();
    let log = dir.path("security.log");
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("exec {closed} \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_jwtguard"));
    Server::spawn_with(
        command,
        dir,
        &["--log-file", log.to_str().unwrap()],
        &[("JWTGUARD_SECRET", SECRET)],
        Stdio::null(),
    )
}

fn fd_target(pid: u32, fd: u32) -> String {
    let path = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    path.to_string_lossy().into_owned()
}

/// The supervisor and its worker (once it is up).
fn processes(server: &Server) -> [u32; 2] {
    let mut worker = Vec::new();
    support::wait_for("a worker", || {
        worker = workers(server.pid());
        !worker.is_empty()
    });
    [server.pid(), worker[0]]
}

#[test]
fn closed_standard_descriptors_are_opened_on_dev_null() {
    let server = started_with("0<&- 2>&-");
    assert_eq!(server.get("/healthz", &[]).status, 200);
    for pid in processes(&server) {
        for fd in [0, 2] {
            assert_eq!(
                fd_target(pid, fd),
                "/dev/null",
                "process {pid}, descriptor {fd}"
            );
        }
    }
}

#[test]
fn sigpipe_is_ignored() {
    let server = Server::start(&[]);
    assert_eq!(server.get("/healthz", &[]).status, 200);
    for pid in processes(&server) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .unwrap();
        let mask = u64::from_str_radix(ignored.trim(), 16).unwrap();
        assert_ne!(
            mask & 1 << (13 - 1),
            0,
            "process {pid}: SIGPIPE (13) not in {ignored}"
        );
    }
}
