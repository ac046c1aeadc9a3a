//! Where the security log goes: a file, stderr, or any writer. One owner writes it.
//!
//! A write goes straight to the destination, unbuffered, so that an event is in the kernel
//! before the response it records is sent, and a batch of events is one `write(2)`. The
//! sink says how many bytes it wrote; what it could not write is not in the log.
//!
//! A file is opened with `O_APPEND` and, before each write, looked up again by its path:
//! when it was deleted or replaced (logrotate's create mode), it is reopened, created
//! with mode 0600 if need be, so that no line goes to a file nobody will read. A write that
//! stops part-way leaves no torn line in a file (the partial line is cut off again); in a
//! pipe, the next write starts on a new line.
//!
//! A sealed sink ([`Sink::seal_with`]) hands each write to its [`Sealer`], which seals the
//! lines and writes them through the same code (see src/record/seal.rs).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::event::SealReason;
use crate::seal::{self, FileState, Sealer};

pub(crate) struct Sink {
    state: Mutex<State>,
}

struct State {
    dest: Dest,
    /// What failure reports call it: a path, or `stderr`.
    name: String,
    /// The last write failed; cleared by the next one that succeeds.
    failing: bool,
    /// A write stopped in the middle of a line that could not be removed: the next write
    /// starts with a newline.
    torn: bool,
    /// Seals every line, when the log is sealed.
    sealer: Option<Sealer>,
    /// The destination was checked for this write already (by the sealer).
    checked: bool,
    /// How long a sealed write waits for the chain's lock (`None`: as long as it takes).
    lock_wait: Option<std::time::Duration>,
}

enum Dest {
    File {
        path: PathBuf,
        /// `None` after the file could not be reopened.
        file: Option<File>,
        /// (device, inode) of `file`.
        id: (u64, u64),
        /// When the path was last looked up (seconds since the epoch).
        looked_up: u64,
    },
    Stream(Box<dyn Write + Send>),
}

/// Opens `path` for appending, creating it with mode 0600.
pub(crate) fn open_log(path: &Path) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file()
        && !meta.file_type().is_fifo()
        && !meta.file_type().is_char_device()
    {
        return Err(io::Error::other("not a file, a FIFO or a character device"));
    }
    Ok((file, (meta.dev(), meta.ino())))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sink {
    /// A file, opened now: a path that cannot be opened for appending is an error here.
    pub(crate) fn file(path: &Path) -> io::Result<Sink> {
        let (file, id) = open_log(path)?;
        Ok(Sink::new(
            Dest::File {
                path: path.to_owned(),
                file: Some(file),
                id,
                looked_up: now_secs(),
            },
            path.display().to_string(),
        ))
    }

    /// Any writer (stderr, a pipe, a test's buffer). `name` is what failure reports call it.
    pub(crate) fn stream(writer: impl Write + Send + 'static, name: impl Into<String>) -> Sink {
        Sink::new(Dest::Stream(Box::new(writer)), name.into())
    }

    fn new(dest: Dest, name: String) -> Sink {
        Sink {
            state: Mutex::new(State {
                dest,
                name,
                failing: false,
                torn: false,
                sealer: None,
                checked: false,
                lock_wait: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `bytes`, whole lines, in one `write(2)` unless the destination takes less.
    /// Returns how many were written: all of them, or fewer when the destination failed;
    /// a partial line at the end of what was written is not counted (and, in a file,
    /// removed again).
    pub(crate) fn write(&self, bytes: &[u8]) -> usize {
        if bytes.is_empty() {
            return 0;
        }
        let mut state = self.state();
        let written = if state.sealer.is_some() {
            state.write_sealed(bytes, None)
        } else {
            match state.put(bytes) {
                Ok(()) => {
                    state.recovered();
                    bytes.len()
                }
                Err((written, err)) => {
                    state.failed(&err);
                    state.cut_torn_line(&bytes[..written])
                }
            }
        };
        crate::metrics::log_lines(&bytes[..written]);
        written
    }

    /// Whether the last write failed.
    pub(crate) fn failing(&self) -> bool {
        self.state().failing
    }

    /// Seals every line written from now on with `sealer`, and writes its first seal line
    /// (start-up) now; if that write fails, it goes with the next one.
    pub(crate) fn seal_with(&self, mut sealer: Sealer) {
        let mut state = self.state();
        sealer.set_lock_wait(state.lock_wait);
        state.sealer = Some(sealer);
        state.write_sealed(b"", None);
    }

    /// Makes each sealed write wait at most `wait` for the chain's lock, which the other
    /// processes sealing into the same chain take; past it, the write fails.
    pub(crate) fn set_lock_wait(&self, wait: std::time::Duration) {
        let mut state = self.state();
        state.lock_wait = Some(wait);
        if let Some(sealer) = &mut state.sealer {
            sealer.set_lock_wait(Some(wait));
        }
    }

    /// Whether lines are sealed.
    pub(crate) fn sealed(&self) -> bool {
        self.state().sealer.is_some()
    }

    /// For a sealed sink: writes a seal line if one is due (the epoch is over, or the file
    /// changed), or, with `reason`, changes the epoch now.
    pub(crate) fn seal(&self, reason: Option<SealReason>) {
        let mut state = self.state();
        if state.sealer.is_some() {
            state.write_sealed(b"", reason);
        }
    }
}

impl State {
    /// Writes `bytes` through the sealer; returns the bytes of whole input lines written.
    fn write_sealed(&mut self, bytes: &[u8], reason: Option<SealReason>) -> usize {
        let mut sealer = self.sealer.take().expect("a sealed sink");
        let sealed = sealer.write(self, bytes, reason);
        self.sealer = Some(sealer);
        self.checked = false;
        match sealed.error {
            Some(err) => self.failed(&err),
            None if sealed.wrote => self.recovered(),
            None => {}
        }
        sealed.input_written
    }

    /// The destination to write to now: for a file, the file at its path. A file that was
    /// deleted is noticed before every write (`fstat`, cheap); one replaced by another at
    /// its path (logrotate's create mode) within a second (the path is looked up again
    /// once a second; lines written meanwhile go to the rotated file, none is lost).
    fn writer(&mut self) -> io::Result<&mut dyn Write> {
        if !std::mem::take(&mut self.checked) {
            self.current(false)?;
        }
        match &mut self.dest {
            Dest::Stream(writer) => Ok(writer.as_mut()),
            Dest::File { file, .. } => Ok(file.as_mut().expect("opened by current")),
        }
    }

    /// Makes sure a file destination is the file at its path (see [`State::writer`]); with
    /// `relookup`, looks the path up now. Returns the file's metadata (`None` for a
    /// stream).
    fn current(&mut self, relookup: bool) -> io::Result<Option<std::fs::Metadata>> {
        let Dest::File {
            path,
            file,
            id,
            looked_up,
        } = &mut self.dest
        else {
            return Ok(None);
        };
        let meta = file.as_ref().and_then(|f| f.metadata().ok());
        let deleted = meta.as_ref().is_none_or(|m| m.nlink() == 0);
        let now = now_secs();
        let replaced = !deleted
            && (relookup || now != *looked_up)
            && std::fs::metadata(&*path).ok().map(|m| (m.dev(), m.ino())) != Some(*id);
        if relookup || now != *looked_up {
            *looked_up = now;
        }
        if deleted || replaced {
            *file = None;
            let (reopened, new_id) = open_log(path)?;
            let meta = reopened.metadata()?;
            *file = Some(reopened);
            *id = new_id;
            return Ok(Some(meta));
        }
        Ok(meta)
    }

    /// Writes all of `bytes`; on failure, how many were written and why not.
    fn put(&mut self, bytes: &[u8]) -> Result<(), (usize, io::Error)> {
        let torn = self.torn;
        let writer = self.writer().map_err(|err| (0, err))?;
        if torn {
            writer.write_all(b"\n").map_err(|err| (0, err))?;
        }
        let mut written = 0;
        while written < bytes.len() {
            match writer.write(&bytes[written..]) {
                Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err((written, err)),
            }
        }
        self.torn = false;
        Ok(())
    }

    /// After a write that stopped after `written`: removes the partial line at its end
    /// from a file, or marks the stream torn. Returns the bytes of whole lines written.
    fn cut_torn_line(&mut self, written: &[u8]) -> usize {
        let whole = written
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let partial = (written.len() - whole) as u64;
        if partial > 0 {
            let cut = match &self.dest {
                Dest::File {
                    file: Some(file), ..
                } => file
                    .metadata()
                    .ok()
                    .filter(|m| m.file_type().is_file() && m.len() >= partial)
                    .is_some_and(|m| file.set_len(m.len() - partial).is_ok()),
                _ => false,
            };
            self.torn = !cut;
        }
        whole
    }

    fn failed(&mut self, err: &io::Error) {
        crate::metrics::log_failure();
        if !self.failing {
            self.failing = true;
            say(format_args!(
                "jwtguard: cannot write the security log to {}: {err}; refusing protected requests (503) until it works again",
                self.name
            ));
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            say(format_args!(
                "jwtguard: the security log at {} is writable again",
                self.name
            ));
        }
    }
}

impl seal::Dest for State {
    fn file(&mut self, relookup: bool) -> io::Result<Option<FileState>> {
        let meta = self.current(relookup)?;
        self.checked = true;
        Ok(meta.as_ref().and_then(seal::file_state))
    }

    fn write(&mut self, bytes: &[u8]) -> (usize, Option<io::Error>) {
        match self.put(bytes) {
            Ok(()) => (bytes.len(), None),
            Err((written, err)) => (self.cut_torn_line(&bytes[..written]), Some(err)),
        }
    }

    fn reopen_for_reading(&mut self, dev: u64, ino: u64) -> Option<File> {
        let Dest::File { path, .. } = &self.dest else {
            return None;
        };
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        ((meta.dev(), meta.ino()) == (dev, ino)).then_some(file)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        match &self.dest {
            Dest::File {
                file: Some(file), ..
            } => file.set_len(len),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
impl Sink {
    /// As if a second had passed since the path was looked up.
    pub(crate) fn forget_lookup(&self) {
        if let Dest::File { looked_up, .. } = &mut self.state().dest {
            *looked_up = 0;
        }
    }
}

/// Writes `line` to stderr. Not `eprintln!` in the binary: it panics when stderr is the
/// sink that failed. In unit tests `eprintln!`, which the test harness captures: a passing
/// `cargo test` does not print the failures its tests cause on purpose.
fn say(line: std::fmt::Arguments<'_>) {
    #[cfg(test)]
    eprintln!("{line}");
    #[cfg(not(test))]
    let _ = writeln!(io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stream that takes at most `limit` bytes a write and fails once `room` bytes have
    /// been taken (until `room` is raised).
    #[derive(Clone)]
    struct Flaky {
        room: Arc<AtomicUsize>,
        limit: usize,
        got: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            let room = self.room.load(Ordering::Relaxed);
            if room == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.limit).min(room);
            self.room.store(room - n, Ordering::Relaxed);
            self.got.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn flaky(limit: usize) -> (Sink, Flaky) {
        let f = Flaky {
            room: Arc::new(AtomicUsize::new(usize::MAX)),
            limit,
            got: Arc::default(),
            writes: Arc::default(),
        };
        (Sink::stream(f.clone(), "test"), f)
    }

    impl Flaky {
        fn got(&self) -> String {
            String::from_utf8(self.got.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn a_batch_is_one_write_when_the_destination_takes_it() {
        let (sink, f) = flaky(usize::MAX);
        assert_eq!(sink.write(b"one\ntwo\n"), 8);
        assert_eq!(f.writes.load(Ordering::Relaxed), 1);
        // A destination that takes 3 bytes a write still gets everything.
        let (sink, f) = flaky(3);
        assert_eq!(sink.write(b"first\nsecond\n"), 13);
        assert_eq!(f.got(), "first\nsecond\n");
    }

    #[test]
    fn failures_count_only_whole_lines_and_the_next_write_mends_a_torn_one() {
        let (sink, f) = flaky(usize::MAX);
        f.room.store(0, Ordering::Relaxed);
        assert_eq!(sink.write(b"lost\n"), 0);
        assert!(sink.failing());
        // Fills up part-way: the first line and part of the second.
        f.room.store(8, Ordering::Relaxed);
        assert_eq!(sink.write(b"third\nfourth\n"), 6);
        f.room.store(usize::MAX, Ordering::Relaxed);
        assert_eq!(sink.write(b"fifth\n"), 6);
        assert!(!sink.failing());
        assert_eq!(f.got(), "third\nfo\nfifth\n");
    }

    #[test]
    fn a_file_loses_the_torn_line_instead() {
        let dir = std::env::temp_dir().join(format!("jwtguard-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let sink = Sink::file(&path).unwrap();
        assert_eq!(sink.write(b"one\n"), 4);
        let mut state = sink.state();
        // As if a write of "two\nthr" had stopped there.
        state.writer().unwrap().write_all(b"two\nthr").unwrap();
        assert_eq!(state.cut_torn_line(b"two\nthr"), 4);
        assert!(!state.torn);
        drop(state);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sealed_write_waits_for_another_process_lock_no_longer_than_asked() {
        let dir = std::env::temp_dir().join(format!("jwtguard-lockwait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("seal.key");
        crate::seal::init(&key).unwrap();
        let sink = Sink::file(&dir.join("log")).unwrap();
        let wait = std::time::Duration::from_millis(200);
        sink.set_lock_wait(wait);
        sink.seal_with(Sealer::open(&key, crate::LogFormat::Json).unwrap());
        assert!(!sink.failing(), "the start-up seal line is written");
        // Another open file of the state: its lock is another holder's, as another
        // process's would be.
        let other = File::open(crate::seal::state_path(&key)).unwrap();
        other.lock().unwrap();
        let sink = Arc::new(sink);
        let (done, result) = std::sync::mpsc::channel();
        let writer = sink.clone();
        let start = std::time::Instant::now();
        std::thread::spawn(move || {
            let _ = done.send(writer.write(b"{\"message\":\"held\"}\n"));
        });
        // Bounded, so that a write that waits for the lock for good fails the test.
        let written = result.recv_timeout(wait * 10);
        let took = start.elapsed();
        other.unlock().unwrap();
        assert_eq!(written, Ok(0), "{took:?}");
        assert!(sink.failing());
        assert!(took >= wait, "{took:?}");
        assert_eq!(sink.write(b"{\"message\":\"free\"}\n"), 19);
        assert!(!sink.failing());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_deleted_or_replaced_file_is_reopened() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("jwtguard-reopen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let sink = Sink::file(&path).unwrap();
        assert_eq!(sink.write(b"one\n"), 4);
        std::fs::rename(&path, dir.join("log.1")).unwrap();
        std::fs::write(&path, b"").unwrap();
        // Looked up again once a second: until then, lines go on into the rotated file.
        assert_eq!(sink.write(b"one more\n"), 9);
        sink.forget_lookup();
        assert_eq!(sink.write(b"two\n"), 4);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(sink.write(b"three\n"), 6);
        assert_eq!(
            std::fs::read_to_string(dir.join("log.1")).unwrap(),
            "one\none more\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A directory where the file was: nothing written, until it is a file again.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert_eq!(sink.write(b"four\n"), 0);
        assert!(sink.failing());
        std::fs::remove_dir(&path).unwrap();
        assert_eq!(sink.write(b"five\n"), 5);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "five\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use crate::LogFormat;

    /// What sealing costs per line, in batches of 24 lines of a typical event, against the
    /// same batches unsealed (a file in the temp dir). A measurement, not a check:
    /// `cargo test --release --lib -- --ignored sealing_cost --nocapture`.
    #[test]
    #[ignore]
    fn sealing_cost() {
        let dir = std::env::temp_dir().join(format!("jwtguard-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = r#"{"@timestamp":"2026-11-27T21:42:09.166Z","log.level":"info","event.action":"authorize","event.outcome":"success","event.reason":"ok","source.ip":"127.0.0.1","http.response.status_code":200,"http.request.id":"a4827846-1","ecs.version":"9.3.0","event.kind":"event","event.category":["web","authentication"],"event.type":["access","allowed"],"jwtguard.token.fingerprint":"fd6cb7fdf2703193","http.request.method":"GET","url.path":"/api/protected","user.id":"alice","user_agent.original":"curl/7.88.1","message":"allowed: the token verified"}"#;
        let batch = format!("{line}\n").repeat(24);
        let key = dir.join("key");
        crate::seal::init(&key).unwrap();
        let plain = Sink::file(&dir.join("plain.log")).unwrap();
        let sealed = Sink::file(&dir.join("sealed.log")).unwrap();
        sealed.seal_with(Sealer::open(&key, LogFormat::Json).unwrap());
        let mut results = [Vec::new(), Vec::new()];
        for _ in 0..15 {
            for (i, sink) in [&plain, &sealed].into_iter().enumerate() {
                let start = std::time::Instant::now();
                for _ in 0..2000 {
                    assert_eq!(sink.write(batch.as_bytes()), batch.len());
                }
                results[i].push(start.elapsed().as_nanos() as f64 / (2000.0 * 24.0));
            }
            for name in ["plain.log", "sealed.log"] {
                std::fs::File::options()
                    .write(true)
                    .open(dir.join(name))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
            }
        }
        for r in &mut results {
            r.sort_by(f64::total_cmp);
        }
        println!(
            "ns per line, batches of 24 ({} bytes a line), median of 15: plain {:.0}, sealed {:.0}, sealing {:.0}",
            line.len(),
            results[0][7],
            results[1][7],
            results[1][7] - results[0][7]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
