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
use std::io::{self, Write as _};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{LevelFilter, Log, Metadata, Record};

use crate::event::Event;
use crate::sink::Sink;
use crate::{Error, LogFormat};

/// The `log` target of security events.
pub const TARGET: &str = "security";

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
        Ok(())
    }

    /// Writes a line (with its newline) now, or holds it in this thread's open batch.
    fn put(&self, record: &Record) -> Recorded {
        let ours = SLOT.get() == Slot::Waiting;
        let level = record.level();
        let line = |out: &mut Vec<u8>| {
            if ours {
                // The guard's own event: its Display is the encoded line.
                let _ = writeln!(out, "{}", record.args());
            } else {
                // Anyone else's record under the security target: a message, never a line
                // of its own making.
                let message = record.args().to_string();
                let event = Event::Record {
                    level,
                    logger: TARGET,
                    message: &message,
                };
                let _ = writeln!(out, "{event}");
            }
        };
        let held = BATCH.with_borrow_mut(|batch| {
            batch.open.then(|| {
                line(&mut batch.lines);
                Recorded::Held(batch.lines.len())
            })
        });
        if let Some(held) = held {
            return held;
        }
        LINE.with_borrow_mut(|buf| {
            buf.clear();
            line(buf);
            if self.sink.write(buf) == buf.len() {
                Recorded::Written
            } else {
                Recorded::Lost
            }
        })
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
            let recorded = self.put(record);
            if SLOT.get() == Slot::Waiting {
                SLOT.set(Slot::Done(recorded));
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
    let event = Event::Record {
        level: record.level(),
        logger: record.target(),
        message: &message,
    };
    writeln!(out, "{event}")
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

struct Open {
    open: bool,
    lines: Vec<u8>,
}

thread_local! {
    static SLOT: Cell<Slot> = const { Cell::new(Slot::Idle) };
    static BATCH: RefCell<Open> = const { RefCell::new(Open { open: false, lines: Vec::new() }) };
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Records `event` through the `log` facade and returns what the logger did with it.
pub(crate) fn record(event: &Event) -> Recorded {
    SLOT.set(Slot::Waiting);
    log::log!(target: TARGET, event.level(), "{event}");
    match SLOT.replace(Slot::Idle) {
        Slot::Done(recorded) => recorded,
        _ => Recorded::Lost,
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
        BATCH.with_borrow_mut(|batch| {
            batch.open = true;
            batch.lines.clear();
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
        BATCH.with_borrow_mut(|batch| {
            batch.open = false;
            sink.write(&batch.lines)
        })
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        BATCH.with_borrow_mut(|batch| {
            batch.open = false;
            batch.lines.clear();
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
        SLOT.set(Slot::Waiting);
        log.log(
            &Record::builder()
                .target(TARGET)
                .level(event.level())
                .args(format_args!("{event}"))
                .build(),
        );
        match SLOT.replace(Slot::Idle) {
            Slot::Done(recorded) => recorded,
            _ => Recorded::Lost,
        }
    }

    #[test]
    fn without_a_jwtguard_logger_nothing_is_recorded() {
        // No logger is installed in unit tests.
        assert_eq!(record(&event()), Recorded::Lost);
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
