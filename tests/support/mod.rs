//! Starts the real binary on a free loopback port and talks HTTP/1.1 to it.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_jwtguard");
const TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jwtguard-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `jwtguard` command with a clean environment: no secret unless the test sets one.
pub fn jwtguard() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("JWTGUARD_SECRET")
        .env_remove("JWTGUARD_SECRET_FILE")
        .env_remove("RUST_LOG");
    command
}

/// `jwtguard token ARGS` with [`SECRET`]; panics unless it succeeds.
pub fn token(args: &[&str]) -> String {
    let out = jwtguard()
        .arg("token")
        .args(args)
        .env("JWTGUARD_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "token prints one line: {stdout:?}"
    );
    stdout.trim_end().to_owned()
}

/// `token` with the first character of its signature changed: well-formed, wrong signature.
pub fn forge(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 1;
    let first = if token.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    format!("{}{first}{}", &token[..at], &token[at + 1..])
}

/// Runs `jwtguard ARGS` to completion (for commands that must fail fast).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = jwtguard()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("jwtguard {args:?} did not exit within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A running `jwtguard serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Lines printed on stdout after `listening on`, read so far.
    pub stdout: BufReader<std::process::ChildStdout>,
    pub dir: TempDir,
}

impl Server {
    /// Starts `jwtguard serve --listen 127.0.0.1:0 --log-file DIR/security.log ARGS` with
    /// [`SECRET`] in the environment.
    pub fn start(args: &[&str]) -> Server {
        let dir = TempDir::new();
        let log = dir.path("security.log");
        let mut all = vec!["--log-file", log.to_str().unwrap()];
        all.extend_from_slice(args);
        Server::spawn(dir, &all, &[("JWTGUARD_SECRET", SECRET)], Stdio::null())
    }

    /// Starts `jwtguard serve --listen 127.0.0.1:0 ARGS` with exactly `env`, stderr as given.
    pub fn spawn(dir: TempDir, args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Server {
        Server::spawn_with(Command::new(BIN), dir, args, env, stderr)
    }

    /// [`Server::spawn`] through `command` (the binary, or a shell that execs it).
    pub fn spawn_with(
        mut command: Command,
        dir: TempDir,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Server {
        let mut child = command
            .env_remove("JWTGUARD_SECRET")
            .env_remove("JWTGUARD_SECRET_FILE")
            .env_remove("RUST_LOG")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let addr = match first.trim_end().strip_prefix("listening on http://") {
            Some(addr) => addr.parse().unwrap(),
            None => {
                let _ = child.kill();
                panic!("unexpected first line {first:?}");
            }
        };
        Server {
            child,
            addr,
            stdout,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `head` (request line and headers, CRLF-separated, without the final blank
    /// line) plus `Connection: close`, and reads the whole response.
    pub fn raw(&self, head: &str) -> Response {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(stream, "{head}\r\nConnection: close\r\n\r\n").unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        Response::parse(&String::from_utf8(bytes).unwrap())
    }

    /// `GET path` with the given extra header lines (`Name: value`).
    pub fn get(&self, path: &str, headers: &[&str]) -> Response {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}", self.addr);
        for header in headers {
            head.push_str("\r\n");
            head.push_str(header);
        }
        self.raw(&head)
    }

    /// `GET path` with `Authorization: Bearer TOKEN`.
    pub fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.get(path, &[&format!("Authorization: Bearer {token}")])
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path("security.log")
    }

    /// The security log, one parsed JSON object per line (panics on a line that is not).
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        read_json_lines(&self.log_path())
    }

    /// The `authorize` events only.
    pub fn requests_logged(&self) -> Vec<serde_json::Value> {
        self.log_json()
            .into_iter()
            .filter(|e| e["event.action"] == "authorize")
            .collect()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    /// Sends SIG`name` (`TERM`, `INT`) and waits (bounded) for the exit.
    pub fn signal(&mut self, name: &str) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its stderr (started with `Stdio::piped()`), line by line, as it comes: read by a
    /// thread of its own, so that the server never waits for the test.
    pub fn stderr_lines(&mut self) -> std::sync::mpsc::Receiver<String> {
        let stderr = self.child.stderr.take().expect("stderr piped");
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        received
    }

    /// Whatever the server wrote to stderr, if it was started with `Stdio::piped()`
    /// for it; kills the server first.
    pub fn stderr_after_kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut text).unwrap();
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON log at `path`, each line checked by [`event`].
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(event).collect()
}

/// One JSON log line, parsed, after checking it against ECS 9.3: every field is one ECS
/// defines, with the ECS type (below), or is under `jwtguard.`; `message` is on every
/// event, and `event.kind`, `event.category`, `event.type` and `event.outcome` hold values
/// from ECS's allowed lists. Panics on a line that is not.
pub fn event(line: &str) -> serde_json::Value {
    use serde_json::Value;
    let event: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    let fields = event
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    let keywords = |v: &Value, allowed: &[&str]| {
        let all = |values: &Vec<Value>| {
            !values.is_empty()
                && values
                    .iter()
                    .all(|v| v.as_str().is_some_and(|s| allowed.contains(&s)))
        };
        v.as_array().is_some_and(all)
    };
    for (name, value) in fields {
        let ok = match name.as_str() {
            // date: RFC 3339 in UTC, milliseconds.
            "@timestamp" => value
                .as_str()
                .is_some_and(|t| t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T'),
            // keyword, text and wildcard fields.
            "message"
            | "ecs.version"
            | "log.level"
            | "log.logger"
            | "event.action"
            | "event.reason"
            | "event.hash"
            | "http.request.id"
            | "http.request.method"
            | "url.path"
            | "url.full"
            | "user.id"
            | "user_agent.original"
            | "file.path"
            | "error.message"
            | "service.version" => value.is_string(),
            "source.ip" | "client.ip" => value
                .as_str()
                .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
            // long.
            "http.response.status_code"
            | "process.pid"
            | "process.parent.pid"
            | "event.sequence"
            | "event.duration" => value.is_u64(),
            "event.kind" => value.as_str().is_some_and(|k| {
                [
                    "alert",
                    "asset",
                    "enrichment",
                    "event",
                    "metric",
                    "state",
                    "pipeline_error",
                    "signal",
                ]
                .contains(&k)
            }),
            "event.outcome" => value
                .as_str()
                .is_some_and(|o| ["failure", "success", "unknown"].contains(&o)),
            "event.category" => keywords(
                value,
                &[
                    "api",
                    "authentication",
                    "configuration",
                    "database",
                    "driver",
                    "email",
                    "file",
                    "host",
                    "iam",
                    "intrusion_detection",
                    "library",
                    "malware",
                    "network",
                    "package",
                    "process",
                    "registry",
                    "session",
                    "threat",
                    "vulnerability",
                    "web",
                ],
            ),
            "event.type" => keywords(
                value,
                &[
                    "access",
                    "admin",
                    "allowed",
                    "change",
                    "connection",
                    "creation",
                    "deletion",
                    "denied",
                    "end",
                    "error",
                    "group",
                    "indicator",
                    "info",
                    "installation",
                    "protocol",
                    "start",
                    "user",
                ],
            ),
            other => other.starts_with("jwtguard."),
        };
        assert!(
            ok,
            "{name}: {value} is not ECS 9.3 (or under jwtguard.): {line}"
        );
    }
    for required in ["@timestamp", "message", "ecs.version", "log.level"] {
        assert!(fields.contains_key(required), "no {required}: {line}");
    }
    event
}

/// A keep-alive HTTP/1.1 connection: one request at a time, each response read to the end
/// of its `Content-Length` body.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Connection {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `head` (request line and headers, CRLF-separated, without the final blank
    /// line) and reads the response; `head_only` for the answer to a HEAD request.
    pub fn send(&mut self, head: &str, head_only: bool) -> Response {
        write!(self.reader.get_mut(), "{head}\r\n\r\n").unwrap();
        let mut text = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            text.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut response = Response::parse(&text);
        let length: usize = response.header("Content-Length").unwrap().parse().unwrap();
        if !head_only {
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).unwrap();
            response.body = String::from_utf8(body).unwrap();
        }
        response
    }

    /// Whether the server has closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

/// Reads `stream` past interim (1xx) responses and returns the final response's status
/// line and headers, up to the blank line (the connection may stay open).
pub fn final_head(stream: &TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "connection closed: {head}"
            );
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        if !head.starts_with("HTTP/1.1 1") {
            return head;
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    /// `HTTP/1.1`
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    fn parse(text: &str) -> Response {
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
        let mut lines = head.split("\r\n");
        let mut status_line = lines.next().unwrap().split(' ');
        let version = status_line.next().unwrap().to_owned();
        let status = status_line.next().unwrap().parse().unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Response {
            version,
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// The value of the one header called `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "several {name} headers");
        value
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// The processes the process `pid` started (a supervisor's workers), zombies included.
pub fn workers(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return all;
    };
    for task in tasks.filter_map(Result::ok) {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        all.extend(
            children
                .split_whitespace()
                .map(|c| c.parse::<u32>().unwrap()),
        );
    }
    all
}

/// Whether the process `pid` has ended (gone, or a zombie nobody reaped yet).
pub fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Waits, 20 s at most, until `done`.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `Host` header values a request must be refused for (400, `invalid_request`, never
/// forwarded), by name: each a value list, one `Host:` line per value.
pub const BAD_HOSTS: &[(&str, &[&str])] = &[
    ("a tab and a second header", &["x\tX-Auth-User: root"]),
    ("a space", &["a b"]),
    ("a comma", &["a,b"]),
    ("a slash", &["a/b"]),
    ("none in HTTP/1.1", &[]),
    ("two", &["x", "x"]),
    ("two different", &["x", "y"]),
    ("empty", &[""]),
    ("a port over 65535", &["x:65536"]),
    ("a port with a letter", &["x:8o"]),
    ("an empty port", &["x:"]),
    ("two ports", &["x:1:2"]),
    ("a percent escape", &["a%2Fb"]),
    ("userinfo", &["root@x"]),
    ("an empty label", &["a..b"]),
    ("a number that is not a dotted quad", &["2130706433"]),
    ("IPv6 without brackets", &["::1"]),
    ("an IPv6 zone", &["[fe80::1%25lo]"]),
];

/// `Host` values a request is served with, and forwarded as sent.
pub const GOOD_HOSTS: &[&str] = &[
    "example.com",
    "example.com:8080",
    "127.0.0.1:1",
    "[::1]:8080",
    "xn--bcher-kva.example",
];

/// `request_line` with one `Host:` line per value of `hosts`, then `headers`, CRLF-separated,
/// without the blank line.
pub fn with_hosts(request_line: &str, hosts: &[&str], headers: &[String]) -> String {
    let mut head = request_line.to_owned();
    for line in hosts
        .iter()
        .map(|h| format!("Host: {h}"))
        .chain(headers.iter().cloned())
    {
        head.push_str("\r\n");
        head.push_str(&line);
    }
    head
}

/// `GET path` on a new connection with `headers` (each ending in CRLF), waiting `secs` at
/// most to connect and for the answer: its status, or what went wrong.
pub fn status_of(addr: SocketAddr, path: &str, headers: &str, secs: u64) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(secs))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(secs)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {answer:?}"))
}

/// The path of a private key of tests/data/idp (test keys, never used elsewhere).
pub fn idp_key(name: &str) -> String {
    format!("{}/tests/data/idp/{name}.pem", env!("CARGO_MANIFEST_DIR"))
}

/// `jwtguard ARGS`'s stdout, trimmed; panics unless it succeeds.
pub fn output(args: &[&str]) -> String {
    let out = run(args, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A loopback port bound without listening, held while the socket lives (so that no test
/// beside takes it): nothing answers on it. Returns the socket and its `http://` URL.
pub fn closed_port() -> (std::os::fd::OwnedFd, String) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd as _;
    let socket = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    nix::sys::socket::bind(socket.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    let bound: SockaddrIn = nix::sys::socket::getsockname(socket.as_raw_fd()).unwrap();
    (socket, format!("http://127.0.0.1:{}", bound.port()))
}

/// A loopback connection to `addr` whose receive buffer is `bytes` from its first segment:
/// a client that reads slowly, as the kernel sees one. Shrinking the buffer after
/// `connect` is not the same: the window already offered is larger, the server's segments
/// past the buffer are dropped, and with them the acknowledgements (window updates
/// included) they carry, so the client's own sending stalls for the server's
/// retransmission backoff (seconds), which no server can help.
pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
    use std::os::fd::AsRawFd as _;
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    socket::setsockopt(&fd, socket::sockopt::RcvBuf, &bytes).unwrap();
    match addr {
        SocketAddr::V4(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    }
    .unwrap();
    TcpStream::from(fd)
}
