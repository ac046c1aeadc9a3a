//! The security log: a [`log::Log`] that owns the `security` target.
//!
//! The guard records each event through the `log` facade, target `security`. When the
//! installed logger is jwtguard's [`SecurityLog`], it writes the event's line to its sink
//! and tells the guard, on the same thread, whether the line reached the sink: only then
//! is the request served. With no logger, another logger, or a `log` level that drops the
//! record, the guard hears nothing and answers 503: the guard fails closed.
//!
//! Records of every other target go to the logger given to [`SecurityLog::others`]
//! (the binary's env_logger), so `RUST_LOG` filters those and never a security event.
//!
//! The server writes the events of the requests already waiting in one `write(2)`: while a
//! [`Batch`] is open on a thread, that thread's events are collected, and each request
//! learns where its line ends; [`Batch::commit`] writes them and says how far the write
//! got.

use std::cell::{Cell, RefCell};
use std::io;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{LevelFilter, Log, Metadata, Record};

use crate::event::{Event, SealReason, ServiceEvent};
use crate::seal::Sealer;
use crate::sink::Sink;
use crate::{Error, LogFormat};

/// The `log` target of security events.
pub const TARGET: &str = "security";

/// How often a sealed log checks whether its epoch is over.
const SEAL_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// The security log: the [`log::Log`] that writes security events, one line each.
///
/// Build it for stderr, a file or any writer, optionally pass it the logger for other
/// targets, and [`install`](SecurityLog::install) it once, before the first request.
///
/// ```
/// use jwtguard::{LogFormat, SecurityLog};
/// let log = SecurityLog::writer(std::io::sink(), "nowhere", LogFormat::Json);
/// assert!(!log.failing());
/// ```
pub struct SecurityLog {
    sink: Sink,
    format: LogFormat,
    others: Option<(Box<dyn Log>, LevelFilter)>,
}

impl std::fmt::Debug for SecurityLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityLog")
            .field("format", &self.format)
            .field("failing", &self.failing())
            .finish_non_exhaustive()
    }
}

static INSTALLED: OnceLock<&'static SecurityLog> = OnceLock::new();
static TEXT: AtomicBool = AtomicBool::new(false);

/// The format of the installed security log; JSON when none is installed.
pub(crate) fn format() -> LogFormat {
    if TEXT.load(Ordering::Relaxed) {
        LogFormat::Text
    } else {
        LogFormat::Json
    }
}

/// The installed security log, if it is jwtguard's.
pub(crate) fn installed() -> Option<&'static SecurityLog> {
    INSTALLED.get().copied()
}

impl SecurityLog {
    /// Writes to the process's standard error, through a copy of file descriptor 2 (so
    /// that a closed stderr shows as a failing log instead of a silent one).
    pub fn stderr(format: LogFormat) -> Result<SecurityLog, Error> {
        use std::os::fd::AsFd as _;
        let fd = io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::LogFile {
                path: "stderr".into(),
                source,
            })?;
        Ok(SecurityLog::with_sink(
            Sink::stream(std::fs::File::from(fd), "stderr"),
            format,
        ))
    }

    /// Appends to the file at `path`, created with mode 0600 when it does not exist. The
    /// file is looked up again before each write, so a rotated or deleted file is replaced
    /// by a new one at the same path.
    pub fn file(path: impl AsRef<Path>, format: LogFormat) -> Result<SecurityLog, Error> {
        let path = path.as_ref();
        let sink = Sink::file(path).map_err(|source| Error::LogFile {
            path: path.to_owned(),
            source,
        })?;
        Ok(SecurityLog::with_sink(sink, format))
    }

    /// Writes to `writer`, unbuffered; `name` is what failure reports on stderr call it.
    pub fn writer(
        writer: impl io::Write + Send + 'static,
        name: &str,
        format: LogFormat,
    ) -> SecurityLog {
        SecurityLog::with_sink(Sink::stream(writer, name), format)
    }

    fn with_sink(sink: Sink, format: LogFormat) -> SecurityLog {
        SecurityLog {
            sink,
            format,
            others: None,
        }
    }

    /// Seals every line with the sealing key in `key_file` (made by
    /// [`seal::init`](crate::seal::init), or `jwtguard seal-init`): each line gets
    /// `event.sequence` and `event.hash`, chained to the line before, and the key moves on
    /// at start-up (now: a seal line is written), at shutdown and every 15 minutes. Any
    /// number of processes may seal into the same log with the same key file: they keep
    /// one chain. See [`seal`](crate::seal).
    ///
    /// # Errors
    ///
    /// [`Error::SealKey`] when the key file cannot be read or is not one, or its state
    /// file (`KEYFILE.state`) cannot be opened.
    pub fn sealed(self, key_file: impl AsRef<Path>) -> Result<SecurityLog, Error> {
        let path = key_file.as_ref();
        let sealer = Sealer::open(path, self.format).map_err(|source| Error::SealKey {
            path: path.to_owned(),
            source,
        })?;
        self.sink.seal_with(sealer);
        Ok(self)
    }

    /// For a sealed log: a write waits at most `wait` for the chain's lock, which every
    /// process sealing into the same chain takes for each of its writes; past it, the
    /// write fails (its lines are not in the log, and [`failing`](SecurityLog::failing)
    /// says so until a write succeeds). Call it before [`sealed`](SecurityLog::sealed)
    /// for the start-up seal line to wait no longer either. jwtguard's supervisor waits
    /// 250 ms, so that a worker stuck under the lock cannot hold it up. Defaults to
    /// waiting as long as it takes: a server writes a request's event before it answers.
    pub fn lock_timeout(self, wait: std::time::Duration) -> SecurityLog {
        self.sink.set_lock_wait(wait);
        self
    }

    /// Sends the records of every target but `security` to `logger`, which enables up to
    /// `level`. Without it, those records are dropped.
    pub fn others(mut self, logger: Box<dyn Log>, level: LevelFilter) -> SecurityLog {
        self.others = Some((logger, level));
        self
    }

    /// Whether the last write to the log failed (a full disk, a closed pipe): protected
    /// requests get 503 until a write succeeds again.
    pub fn failing(&self) -> bool {
        self.sink.failing()
    }

    /// A writer into the same destination, for the other logger's lines: each
    /// `write` call becomes one write to the destination.
    pub fn other_records(&self) -> OtherRecords {
        OtherRecords(())
    }

    /// Installs this as the process's `log` logger, with the maximum level at least
    /// `info` (security events are `info` and `warn`).
    ///
    /// # Errors
    ///
    /// [`Error::Logger`] when a logger is installed already.
    pub fn install(self) -> Result<(), Error> {
        let level = self
            .others
            .as_ref()
            .map_or(LevelFilter::Info, |(_, level)| {
                (*level).max(LevelFilter::Info)
            });
        TEXT.store(self.format == LogFormat::Text, Ordering::Relaxed);
        let leaked: &'static SecurityLog = Box::leak(Box::new(self));
        log::set_logger(leaked).map_err(|_| Error::Logger)?;
        let _ = INSTALLED.set(leaked);
        log::set_max_level(level);
        if leaked.sink.sealed() {
            // Epochs end on time even when nothing is logged.
            std::thread::Builder::new()
                .name("jwtguard-seal".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(SEAL_TICK);
                        leaked.sink.seal(None);
                    }
                })
                .map_err(|_| Error::Logger)?;
        }
        Ok(())
    }

    /// Writes or holds the line of the event [`record`] encoded on this thread.
    fn confirm(&self) -> Recorded {
        LOCAL.with_borrow(|local| match (&local.pending, local.open) {
            (Some(line), true) => Recorded::Held(line.end),
            (Some(line), false) => {
                let bytes = local.line[line.clone()].as_bytes();
                if self.sink.write(bytes) == bytes.len() {
                    Recorded::Written
                } else {
                    Recorded::Lost
                }
            }
            (None, _) => Recorded::Lost,
        })
    }

    /// Anyone else's record under the security target: a message, never a line of its
    /// own making. Held in this thread's batch, if one is open.
    fn message(&self, record: &Record) {
        let message = record.args().to_string();
        let line = encode_line(&Event::Record {
            level: record.level(),
            logger: TARGET,
            message: &message,
        });
        let held = LOCAL.with_borrow_mut(|local| local.open.then(|| local.batch.push_str(&line)));
        if held.is_none() {
            self.sink.write(line.as_bytes());
        }
    }
}

impl Log for SecurityLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target() == TARGET
            || self
                .others
                .as_ref()
                .is_some_and(|(logger, _)| logger.enabled(metadata))
    }

    fn log(&self, record: &Record) {
        if record.target() == TARGET {
            if SLOT.get() == Slot::Waiting {
                SLOT.set(Slot::Done(self.confirm()));
            } else {
                self.message(record);
            }
        } else if let Some((logger, _)) = &self.others {
            logger.log(record);
        }
    }

    fn flush(&self) {
        if let Some((logger, _)) = &self.others {
            logger.flush();
        }
    }
}

/// Lines of the other logger into the security log's destination: see
/// [`SecurityLog::other_records`]. Writes nothing until a security log is installed.
#[derive(Debug)]
pub struct OtherRecords(());

impl io::Write for OtherRecords {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match installed() {
            Some(log) if log.sink.write(buf) == buf.len() => Ok(buf.len()),
            Some(_) => Err(io::Error::other("the security log is failing")),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `record` (of a target other than `security`) as one line of the security log's
/// format, for the other logger's formatter: `log.logger` is its target, `message` its
/// text, both escaped.
pub fn write_record(out: &mut dyn io::Write, record: &Record) -> io::Result<()> {
    let message = record.args().to_string();
    let line = encode_line(&Event::Record {
        level: record.level(),
        logger: record.target(),
        message: &message,
    });
    out.write_all(line.as_bytes())
}

/// `event` as a line of the installed format, with its newline.
fn encode_line(event: &Event) -> String {
    let mut line = String::new();
    event.encode(format(), crate::time::wall(), &mut line);
    line.push('\n');
    line
}

/// Where a recorded event stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// In the sink.
    Written,
    /// In this thread's open batch; its line ends at this many bytes into it.
    Held(usize),
    /// Not written: no jwtguard logger took it, or the sink failed.
    Lost,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Idle,
    /// [`record`] is waiting to hear from the logger.
    Waiting,
    Done(Recorded),
}

/// This thread's lines: the open batch, and the last event's line when no batch is open.
struct Local {
    open: bool,
    batch: String,
    line: String,
    /// Where the line of the event being recorded is: in `batch` when open, else `line`.
    pending: Option<Range<usize>>,
}

thread_local! {
    static SLOT: Cell<Slot> = const { Cell::new(Slot::Idle) };
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { open: false, batch: String::new(), line: String::new(), pending: None })
    };
}

/// Records what jwtguard's supervisor did (src/supervisor/, in the binary) as one
/// security event; false when it did not reach the log.
pub fn record_supervision(event: crate::Supervision) -> bool {
    record(&Event::Supervision(event)) == Recorded::Written
}

/// Records `event` through the `log` facade and returns what the logger did with it.
///
/// The line is encoded once, here, into this thread's batch (or line buffer); jwtguard's
/// logger confirms it, and any other logger gets the same line as its message.
pub(crate) fn record(event: &Event) -> Recorded {
    let format = format();
    LOCAL.with_borrow_mut(|local| {
        let buf = if local.open {
            &mut local.batch
        } else {
            local.line.clear();
            &mut local.line
        };
        let start = buf.len();
        event.encode(format, crate::time::wall(), buf);
        buf.push('\n');
        local.pending = Some(start..buf.len());
    });
    SLOT.set(Slot::Waiting);
    log::log!(target: TARGET, event.level(), "{}", PendingLine);
    let recorded = match SLOT.replace(Slot::Idle) {
        Slot::Done(recorded) => recorded,
        _ => Recorded::Lost,
    };
    LOCAL.with_borrow_mut(|local| {
        let line = local.pending.take().expect("set above");
        if recorded == Recorded::Lost && local.open {
            // Not confirmed: the line must not reach the log with the batch.
            local.batch.truncate(line.start);
        }
    });
    if let Event::Service(ServiceEvent::Shutdown { .. }) = event
        && let Some(log) = installed()
    {
        // A stopped process leaves the next epoch's key behind: its last lines are sealed.
        log.sink.seal(Some(SealReason::Shutdown));
    }
    recorded
}

/// The line [`record`] is recording, as the message for a logger that is not jwtguard's.
struct PendingLine;

impl std::fmt::Display for PendingLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        LOCAL.with_borrow(|local| {
            let buf = if local.open {
                &local.batch
            } else {
                &local.line
            };
            match &local.pending {
                Some(line) => f.write_str(buf[line.clone()].trim_end_matches('\n')),
                None => Ok(()),
            }
        })
    }
}

/// This thread's events are held from now until [`Batch::commit`] writes them in one
/// write. Dropped without a commit, the held events are discarded. Not `Send`: a batch
/// belongs to the thread that opened it.
pub(crate) struct Batch {
    _thread: PhantomData<*const ()>,
}

impl Batch {
    pub(crate) fn open() -> Batch {
        LOCAL.with_borrow_mut(|local| {
            local.open = true;
            local.batch.clear();
        });
        Batch {
            _thread: PhantomData,
        }
    }

    /// Writes the held lines to the installed security log in one write and ends the
    /// batch. Returns how many bytes of them are in the log.
    pub(crate) fn commit(self) -> usize {
        match installed() {
            Some(log) => self.commit_to(&log.sink),
            None => 0,
        }
    }

    fn commit_to(self, sink: &Sink) -> usize {
        LOCAL.with_borrow_mut(|local| {
            local.open = false;
            sink.write(local.batch.as_bytes())
        })
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        LOCAL.with_borrow_mut(|local| {
            local.open = false;
            local.batch.clear();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn event() -> Event<'static> {
        Event::Record {
            level: log::Level::Info,
            logger: "test",
            message: "hello",
        }
    }

    /// What `record` does, against a log that is not installed (tests run in parallel).
    fn record_to(log: &SecurityLog, event: &Event) -> Recorded {
        LOCAL.with_borrow_mut(|local| {
            let buf = if local.open {
                &mut local.batch
            } else {
                local.line.clear();
                &mut local.line
            };
            let start = buf.len();
            event.encode(format(), crate::time::wall(), buf);
            buf.push('\n');
            local.pending = Some(start..buf.len());
        });
        SLOT.set(Slot::Waiting);
        log.log(
            &Record::builder()
                .target(TARGET)
                .level(event.level())
                .args(format_args!("{PendingLine}"))
                .build(),
        );
        LOCAL.with_borrow_mut(|local| local.pending = None);
        match SLOT.replace(Slot::Idle) {
            Slot::Done(recorded) => recorded,
            _ => Recorded::Lost,
        }
    }

    #[test]
    fn without_a_jwtguard_logger_nothing_is_recorded_nor_held() {
        // No logger is installed in unit tests.
        assert_eq!(record(&event()), Recorded::Lost);
        let batch = Batch::open();
        assert_eq!(record(&event()), Recorded::Lost);
        assert!(
            LOCAL.with_borrow(|local| local.batch.is_empty()),
            "an unconfirmed line stays out of the batch"
        );
        drop(batch);
    }

    #[test]
    fn events_are_written_at_once_or_held_in_a_batch() {
        let out = Shared::default();
        let log = SecurityLog::writer(out.clone(), "test", LogFormat::Json);
        assert_eq!(record_to(&log, &event()), Recorded::Written);
        let first = out.0.lock().unwrap().len();
        let batch = Batch::open();
        let Recorded::Held(one) = record_to(&log, &event()) else {
            panic!("not held")
        };
        let Recorded::Held(two) = record_to(&log, &event()) else {
            panic!("not held")
        };
        assert_eq!((one * 2, out.0.lock().unwrap().len()), (two, first));
        assert_eq!(batch.commit_to(&log.sink), two);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        // A batch dropped without a commit writes nothing, and the next write is direct.
        let batch = Batch::open();
        assert!(matches!(record_to(&log, &event()), Recorded::Held(_)));
        drop(batch);
        assert_eq!(record_to(&log, &event()), Recorded::Written);
        assert_eq!(out.0.lock().unwrap().len(), first * 4);
    }

    #[test]
    fn other_records_under_the_security_target_cannot_forge_a_line() {
        let out = Shared::default();
        let log = SecurityLog::writer(out.clone(), "test", LogFormat::Json);
        let forged = "{\"event.action\":\"authorize\",\"event.outcome\":\"success\"}";
        log.log(
            &Record::builder()
                .target(TARGET)
                .level(log::Level::Info)
                .args(format_args!("{forged}"))
                .build(),
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["message"], forged);
        assert_eq!(v["log.logger"], TARGET);
        assert_eq!(v.get("event.action"), None);
    }
}
