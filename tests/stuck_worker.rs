//! The supervisor whatever its workers do (issue 16): with the sealed log's lock held by
//! another process (as a worker stuck under it holds it), a worker stopped, or the log a
//! pipe nobody reads, SIGTERM stops the whole process tree within 2 s; the supervisor goes
//! on restarting workers while its own events wait for the log; a worker stuck holding
//! the lock is replaced.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{SECRET, Server, TempDir, ended, run, status_of, token, wait_for, workers};

/// What the issue promises: SIGTERM ends the supervisor and every worker within this.
const STOP_BUDGET: Duration = Duration::from_secs(2);

/// A supervised, sealed jwtguard serving `/api/` with a `--config` file, and its stderr.
struct Sealed {
    server: Server,
    config: PathBuf,
    key: PathBuf,
    stderr: Receiver<String>,
}

fn sealed() -> Sealed {
    let dir = TempDir::new();
    let key = dir.path("seal.key");
    let out = run(&["seal-init", key.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{out:?}");
    let config = dir.path("jwtguard.conf");
    std::fs::write(&config, "protect /api/\n").unwrap();
    let log = dir.path("security.log");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
        "--seal-key",
        key.to_str().unwrap(),
    ];
    let mut server = Server::spawn(dir, &args, &[("JWTGUARD_SECRET", SECRET)], Stdio::piped());
    let stderr = server.stderr_lines();
    let first = first_worker(&server);
    assert!(!ended(first));
    Sealed {
        server,
        config,
        key,
        stderr,
    }
}

/// Waits for the supervisor's one worker to serve; its pid.
fn first_worker(server: &Server) -> u32 {
    wait_for("the first worker", || {
        workers(server.pid()).len() == 1 && status(server.addr, "/healthz", 5).is_ok()
    });
    workers(server.pid())[0]
}

/// Takes the sealed log's lock (`KEYFILE.state`), as a worker stuck under it holds it;
/// released when the file is dropped.
fn hold_lock(key: &Path) -> File {
    let mut path = key.as_os_str().to_owned();
    path.push(".state");
    let state = File::open(PathBuf::from(path)).unwrap();
    state.lock().unwrap();
    state
}

/// `GET path` with a valid token, waiting `secs` at most for the answer: its status.
fn status(addr: SocketAddr, path: &str, secs: u64) -> Result<u16, String> {
    let auth = format!("Authorization: Bearer {}\r\n", token(&["--sub", "kim"]));
    status_of(addr, path, &auth, secs)
}

/// A protected request that will not be answered while the log does not take its event,
/// on a thread of its own.
fn request_in_background(addr: SocketAddr) -> std::thread::JoinHandle<Result<u16, String>> {
    std::thread::spawn(move || status(addr, "/api/x", 5))
}

/// Waits, 20 s at most, for a line of `stderr` that contains `text`.
fn wait_line(stderr: &Receiver<String>, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match stderr.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {text:?} on stderr: {e}"),
        }
    }
}

fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGTERM to the supervisor: it exits 0, and it and `pids` have ended, within the budget.
fn assert_stops_within_budget(server: &mut Server, pids: &[u32], state: &str) {
    let start = Instant::now();
    let exit = server.terminate();
    let took = start.elapsed();
    eprintln!("{state}: SIGTERM to exit {took:?}");
    assert!(exit.success(), "{state}: {exit}");
    assert!(took < STOP_BUDGET, "{state}: {took:?}");
    let left: Vec<_> = pids.iter().filter(|p| !ended(**p)).collect();
    assert!(left.is_empty(), "{state}: still running: {left:?}");
}

#[test]
fn sigterm_stops_the_whole_tree_within_2_s_whatever_the_workers_do() {
    // A worker waits for the lock in a request, and the supervisor has an event to write
    // (a reload that did not validate).
    let mut s = sealed();
    let worker = workers(s.server.pid())[0];
    let lock = hold_lock(&s.key);
    let request = request_in_background(s.server.addr);
    std::fs::write(&s.config, "protect /api/\nleeway 9000\n").unwrap();
    kill(s.server.pid(), "HUP");
    // The new worker refused the configuration: the supervisor is recording that.
    wait_line(&s.stderr, "Try 'jwtguard --help'");
    assert_stops_within_budget(&mut s.server, &[worker], "a request and an event wait");
    assert!(request.join().unwrap().is_err(), "never answered");
    drop(lock);

    // A new worker waits for the lock at start-up: it never gets to accept.
    let mut s = sealed();
    let first = workers(s.server.pid())[0];
    let lock = hold_lock(&s.key);
    kill(first, "KILL");
    let mut all = Vec::new();
    wait_for("a new worker", || {
        all = workers(s.server.pid());
        all.iter().any(|w| *w != first)
    });
    assert_stops_within_budget(&mut s.server, &all, "a worker starts");
    drop(lock);

    // A worker is stopped (SIGSTOP): it cannot take SIGTERM.
    let mut s = sealed();
    let worker = workers(s.server.pid())[0];
    kill(worker, "STOP");
    assert_stops_within_budget(&mut s.server, &[worker], "a worker is stopped");
}

#[test]
fn with_the_lock_held_elsewhere_the_supervisor_restarts_workers_and_its_events_wait() {
    let mut s = sealed();
    let first = workers(s.server.pid())[0];
    let lock = hold_lock(&s.key);
    std::fs::write(&s.config, "protect /api/\nleeway 9000\n").unwrap();
    kill(s.server.pid(), "HUP");
    // The supervisor says that its event waits, and goes on.
    let said = wait_line(&s.stderr, "has held the sealed log's lock");
    assert!(said.contains("seal.key.state"), "{said}");
    std::fs::write(&s.config, "protect /api/\n").unwrap();
    kill(first, "KILL");
    wait_for("a new worker", || {
        workers(s.server.pid()).iter().any(|w| *w != first)
    });
    let restarted = workers(s.server.pid())[0];
    // Once the lock is free, the new worker serves and the events are in the log, in order.
    drop(lock);
    wait_for("the new worker serving", || {
        status(s.server.addr, "/api/x", 5) == Ok(200)
    });
    let supervision = |server: &Server| -> Vec<serde_json::Value> {
        server
            .log_json()
            .into_iter()
            .filter(|e| ["reload", "restart"].contains(&e["event.action"].as_str().unwrap_or("")))
            .collect()
    };
    wait_for("the supervisor's events", || {
        supervision(&s.server).len() == 2
    });
    let events = supervision(&s.server);
    assert_eq!(events[0]["event.action"], "reload");
    assert_eq!(events[0]["event.outcome"], "failure");
    assert_eq!(events[1]["event.action"], "restart");
    assert_eq!(events[1]["jwtguard.worker.previous_pid"], first);
    assert_eq!(events[1]["jwtguard.worker.how"], "signal SIGKILL");
    assert_eq!(events[1]["process.pid"], s.server.pid());
    assert_eq!(workers(s.server.pid()), [restarted]);
    wait_line(&s.stderr, "is writable again");
    assert_stops_within_budget(&mut s.server, &[restarted], "after the lock is free");
}

/// A FIFO at `path`, with its read end open (non-blocking: nothing is read until the test
/// reads) and its buffer at its smallest, one page, so that a few lines fill it.
fn fifo(path: &Path) -> File {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::unix::fs::OpenOptionsExt as _;
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .unwrap();
    fcntl(&reader, FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    reader
}

/// Sends protected requests until one is not answered: the log's pipe (at `path`) is too
/// full for the worker's next write, which waits. Then fills what room is left (blank
/// lines), so that any write waits. Returns that worker.
fn fill_the_pipe(server: &Server, path: &Path) -> u32 {
    use std::os::unix::fs::OpenOptionsExt as _;
    let worker = workers(server.pid())[0];
    let mut waits = false;
    for _ in 0..200 {
        if status(server.addr, "/api/x", 1).is_err() {
            waits = true;
            break;
        }
    }
    assert!(
        waits,
        "every request was answered: the log's pipe never filled"
    );
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .unwrap();
    for _ in 0..=4096 {
        if writer.write(b"\n").is_err() {
            return worker;
        }
    }
    panic!("the pipe takes more than a page");
}

/// Reads a FIFO on a thread of its own, until dropped.
struct Drain {
    read: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drain {
    fn start(mut reader: File) -> Drain {
        let read = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, done) = (read.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::SeqCst) {
                match reader.read(&mut buf) {
                    Ok(n) if n > 0 => out.lock().unwrap().extend_from_slice(&buf[..n]),
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Drain {
            read,
            stop,
            thread: Some(thread),
        }
    }

    /// The events read so far (a line that is not JSON is skipped).
    fn events(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8_lossy(&self.read.lock().unwrap()).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.take().unwrap().join();
    }
}

#[test]
fn with_the_log_a_pipe_nobody_reads_the_supervisor_still_stops_within_2_s() {
    let dir = TempDir::new();
    let log = dir.path("security.log");
    let reader = fifo(&log);
    let args = ["--log-file", log.to_str().unwrap()];
    let mut server = Server::spawn(dir, &args, &[("JWTGUARD_SECRET", SECRET)], Stdio::null());
    first_worker(&server);
    let stuck = fill_the_pipe(&server, &log);
    // Its loop stalls, and the supervisor starts a replacement (and writes its event, to
    // the pipe nobody reads).
    wait_for("the replacement", || {
        workers(server.pid()).iter().any(|w| *w != stuck)
    });
    let all = workers(server.pid());
    assert_stops_within_budget(&mut server, &all, "the log does not take writes");
    drop(reader);
}

#[test]
fn a_worker_stuck_holding_the_seal_lock_is_replaced() {
    let dir = TempDir::new();
    let key = dir.path("seal.key");
    assert!(
        run(&["seal-init", key.to_str().unwrap()], &[])
            .status
            .success()
    );
    let log = dir.path("security.log");
    let reader = fifo(&log);
    let args = [
        "--log-file",
        log.to_str().unwrap(),
        "--seal-key",
        key.to_str().unwrap(),
    ];
    let mut server = Server::spawn(dir, &args, &[("JWTGUARD_SECRET", SECRET)], Stdio::null());
    first_worker(&server);
    // It waits in a write to the log's full pipe, holding the lock: its replacement cannot
    // start (each process takes the lock to write its first seal line).
    let stuck = fill_the_pipe(&server, &log);
    let stalled = Instant::now();
    wait_for("the stuck worker killed", || ended(stuck));
    eprintln!(
        "the stuck worker ended {:?} after its loop stalled",
        stalled.elapsed()
    );
    // Now the pipe is read again: the replacement serves, and says what it replaced.
    let drain = Drain::start(reader);
    wait_for("the replacement serving", || {
        status(server.addr, "/api/x", 5) == Ok(200)
    });
    let replace = || {
        drain
            .events()
            .into_iter()
            .find(|e| e["event.action"] == "replace")
    };
    wait_for("the replace event", || replace().is_some());
    let replace = replace().unwrap();
    assert_eq!(replace["jwtguard.worker.previous_pid"], stuck, "{replace}");
    assert_eq!(replace["event.outcome"], "success", "{replace}");
    let cause = replace["event.reason"].as_str().unwrap();
    assert!(cause == "loop_stalled", "{replace}");
    let all = workers(server.pid());
    assert_stops_within_budget(&mut server, &all, "after the replacement");
}
