//! The supervisor's events, written by a thread of their own, so that the supervisor never
//! waits for the security log: a sealed log's lock that a stuck worker holds, a pipe nobody
//! reads. An event that the log does not take waits in a queue and is tried again, in
//! order; the sink says on stderr that the log is failing and when it works again. An
//! event's `@timestamp` is when it was written (its `event.duration`, when it has one, was
//! measured when it happened).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// How long the supervisor's process waits for a sealed log's lock at each write (its
/// events, its seal lines): a worker may hold it for good.
pub(crate) const LOCK_WAIT: Duration = Duration::from_millis(250);
/// Events waiting at most: past it, a new event is dropped (and stderr says so).
const QUEUE: usize = 64;
/// The pause before an event the log did not take is tried again.
const RETRY: Duration = Duration::from_millis(250);
/// How long the supervisor, stopping, waits for the events still queued.
const FLUSH: Duration = Duration::from_millis(200);

/// Writes one event; true when it is in the log.
type Job = Box<dyn Fn() -> bool + Send>;

pub(crate) struct Recorder {
    queue: SyncSender<Job>,
    /// Events queued or being written.
    waiting: Arc<AtomicUsize>,
}

impl Recorder {
    pub(crate) fn start() -> Result<Recorder, String> {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let waiting = Arc::new(AtomicUsize::new(0));
        let count = waiting.clone();
        std::thread::Builder::new()
            .name("jwtguard-events".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for job in jobs {
                    while !job() {
                        std::thread::sleep(RETRY);
                    }
                    count.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .map_err(|e| format!("cannot start the events thread: {e}"))?;
        Ok(Recorder { queue, waiting })
    }

    /// Queues `write` (a `record_supervision` call): it runs on the events thread until the
    /// log takes it. Never waits.
    pub(crate) fn record(&self, write: impl Fn() -> bool + Send + 'static) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(Box::new(write))
        {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let _ = writeln!(
                std::io::stderr(),
                "jwtguard: a supervisor event was dropped: {QUEUE} wait for the security log already"
            );
        }
    }

    /// Gives the queued events [`FLUSH`] to reach the log; says on stderr how many did not.
    pub(crate) fn finish(&self) {
        let deadline = Instant::now() + FLUSH;
        while self.waiting.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let lost = self.waiting.load(Ordering::SeqCst);
        if lost > 0 {
            let _ = writeln!(
                std::io::stderr(),
                "jwtguard: {lost} supervisor event(s) not written: the security log did not take them"
            );
        }
    }
}
