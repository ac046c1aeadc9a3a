//! A process's sealing: its copy of the current epoch's key, the buffers of a batch, and
//! a batch's lines sealed under the shared chain's lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::chain::{Chain, FileState, state_path};
use super::key_file::KeyFile;
use super::recover::Out;
use super::{EPOCH_SECONDS, Key, LineMac, MAX_CATCH_UP, Tag, line_hash, max_epoch};
use crate::LogFormat;
use crate::event::{Event, LogTampered, SealEvent, SealReason};
use crate::record::sealed;

/// A process's sealing: its copy of the current epoch's key, and the buffers of a batch.
/// Owned by the sink, used under its lock.
pub(crate) struct Sealer {
    pub(super) key_path: PathBuf,
    /// `KEYFILE.state`: the chain, and the lock every writer takes.
    pub(super) state: File,
    pub(super) format: LogFormat,
    pub(super) epoch: u64,
    pub(super) key: Key,
    pub(super) mac: LineMac,
    pub(super) id: String,
    /// When the key was made (seconds since the Unix epoch): bounds its epochs.
    pub(super) created: u64,
    /// An epoch change to make with the next write, until one is written (start-up).
    pub(super) pending: Option<SealReason>,
    /// Lines found after the chain that do not verify, to record with the next write
    /// (once: until a write holds the event).
    pub(super) tampered: Option<LogTampered>,
    /// The file ends in the middle of a line nobody of the chain wrote: the next batch
    /// starts with a newline, so that its first line stays whole.
    pub(super) newline_first: bool,
    pub(super) out: Vec<u8>,
    pub(super) lines: Vec<Out>,
    /// The state as this process last wrote it (`text`), parsed: while the state file
    /// still holds those bytes, nobody else wrote, and this is the chain.
    pub(super) text: String,
    pub(super) last: Option<Chain>,
    /// The state file's length as last read.
    pub(super) state_len: usize,
    /// How long a write waits for the lock before it fails; `None`: as long as it takes.
    pub(super) lock_wait: Option<std::time::Duration>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_path", &self.key_path)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// What a sealed write did.
pub(crate) struct Sealed {
    /// Bytes of the input whose lines are in the log, whole.
    pub input_written: usize,
    /// Whether anything was written.
    pub wrote: bool,
    /// The write's error, if it failed (some lines may be in all the same).
    pub error: Option<io::Error>,
}

/// The destination, as the sealer sees it: given by the sink, under the sink's lock.
pub(crate) trait Dest {
    /// The file to write to now, looked up again by its path when `relookup`; `None` for
    /// a stream (stderr, a pipe, a device).
    fn file(&mut self, relookup: bool) -> io::Result<Option<FileState>>;
    /// Writes all of `bytes` in one `write(2)` (more if the destination takes less);
    /// returns the bytes of whole lines in the log, and the error if it failed.
    fn write(&mut self, bytes: &[u8]) -> (usize, Option<io::Error>);
    /// Opens the file written to for reading, if it is still (dev, ino) at its path.
    fn reopen_for_reading(&mut self, dev: u64, ino: u64) -> Option<File>;
    /// Cuts the file written to at `len`.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sealer {
    /// Opens the key file at `key_path` and the chain state beside it (created, mode
    /// 0600, when missing). The first write changes the epoch (start-up).
    pub(crate) fn open(key_path: &Path, format: LogFormat) -> io::Result<Sealer> {
        let key_file = KeyFile::read(key_path)?;
        let state = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(state_path(key_path))?;
        Ok(Sealer {
            key_path: key_path.to_owned(),
            state,
            format,
            epoch: key_file.epoch,
            mac: key_file.key.line_mac(),
            key: key_file.key,
            id: key_file.id,
            created: key_file.created,
            pending: Some(SealReason::Startup),
            tampered: None,
            newline_first: false,
            out: Vec::new(),
            lines: Vec::new(),
            text: String::new(),
            last: None,
            state_len: 0,
            lock_wait: None,
        })
    }

    /// Seals `input` (whole lines) and writes it to `dest`, with a seal line first when
    /// the epoch changes (`force`, a pending start-up, or 15 minutes passed) or the file
    /// is not the one the chain is in. With no input and nothing to seal, writes nothing.
    pub(crate) fn write(
        &mut self,
        dest: &mut dyn Dest,
        input: &[u8],
        force: Option<SealReason>,
    ) -> Sealed {
        if let Err(error) = self.lock() {
            return Sealed {
                input_written: 0,
                wrote: false,
                error: Some(error),
            };
        }
        let result = self.write_locked(dest, input, force);
        let _ = self.state.unlock();
        match result {
            Ok(sealed) => sealed,
            Err(error) => Sealed {
                input_written: 0,
                wrote: false,
                error: Some(error),
            },
        }
    }

    /// Makes a write wait at most `wait` for the lock (`None`: as long as it takes).
    pub(crate) fn set_lock_wait(&mut self, wait: Option<std::time::Duration>) {
        self.lock_wait = wait;
    }

    /// Takes the chain's lock, within the lock wait if one is set: past it, the error
    /// says which file another process holds.
    pub(super) fn lock(&self) -> io::Result<()> {
        let Some(wait) = self.lock_wait else {
            return self.state.lock();
        };
        let deadline = std::time::Instant::now() + wait;
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match self.state.try_lock() {
                Ok(()) => return Ok(()),
                Err(std::fs::TryLockError::Error(error)) => return Err(error),
                Err(std::fs::TryLockError::WouldBlock) => {}
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "another process has held the sealed log's lock ({}) for over {} ms",
                        state_path(&self.key_path).display(),
                        wait.as_millis()
                    ),
                ));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
        }
    }

    pub(super) fn write_locked(
        &mut self,
        dest: &mut dyn Dest,
        input: &[u8],
        force: Option<SealReason>,
    ) -> io::Result<Sealed> {
        let mut chain = self.read_chain()?;
        let recorded_epoch = chain.epoch;
        // The key of the chain's epoch first: the lines after the state are checked with it.
        self.catch_up(&mut chain)?;
        let mut file = dest.file(false)?;
        if file.is_some_and(|f| chain.log.0 != 0 && (f.dev, f.ino) != (chain.log.0, chain.log.1)) {
            // Another process moved the chain to another file (or this one was rotated
            // and the chain is still in it): look the path up before going on.
            file = dest.file(true)?;
        }
        if let Some(f) = &mut file {
            let same = (f.dev, f.ino) == (chain.log.0, chain.log.1);
            let unknown = chain.log == (0, 0, 0) && chain.sequence == 0;
            if (same && f.len > chain.log.2) || (unknown && f.len > 0) {
                f.len = self.recover(dest, &mut chain, *f, same, recorded_epoch)?;
            }
        }
        let now = now_secs();
        let mut change = force
            .or(self.pending)
            .or((now >= chain.began.saturating_add(EPOCH_SECONDS)).then_some(SealReason::Epoch));
        if change.is_some() && chain.epoch >= max_epoch(self.created, now) {
            // As many epochs as the key's age allows: a start or shutdown seals no change
            // (the chain's next 15-minute mark will), so that no line of the chain claims an
            // epoch verify-log must take for a forgery.
            change = None;
            self.pending = None;
        }
        let new_file = file
            .is_some_and(|f| (f.dev, f.ino) != (chain.log.0, chain.log.1) || f.len < chain.log.2);
        if input.is_empty() && change.is_none() && !new_file && self.tampered.is_none() {
            return Ok(Sealed {
                input_written: 0,
                wrote: false,
                error: None,
            });
        }
        let next = self.seal(input, &chain, change, new_file);
        let out = std::mem::take(&mut self.out);
        let (whole, error) = dest.write(&out);
        self.out = out;

        let written = self.lines.iter().take_while(|l| l.out_end <= whole).count();
        if new_file && written >= 1 {
            chain.file_first = chain.sequence + 1;
        }
        if whole > 0 {
            self.newline_first = false;
        }
        // The event of lines that do not verify comes after the seal lines.
        if written > usize::from(new_file) + usize::from(next.is_some()) {
            self.tampered = None;
        }
        if let Some(next) = next {
            // The seal line that begins the next epoch is in the log: the key moves on.
            if written > usize::from(new_file) {
                self.advance(next, &mut chain, now);
                self.pending = None;
            } else {
                self.pending = change;
            }
        }
        if let Some(last) = written.checked_sub(1).map(|i| &self.lines[i]) {
            chain.sequence += written as u64;
            chain.hash = last.hash;
        }
        if let Some(f) = file {
            chain.log = (f.dev, f.ino, f.len + whole as u64);
        } else {
            chain.log = (0, 0, 0);
        }
        self.write_chain(&chain)?;
        Ok(Sealed {
            input_written: written
                .checked_sub(1)
                .map_or(0, |i| self.lines[i].input_end),
            wrote: whole > 0,
            error,
        })
    }

    /// The chain in the state file; a fresh one when it is empty, unreadable or another
    /// key's.
    pub(super) fn read_chain(&mut self) -> io::Result<Chain> {
        let mut buf = [0u8; 512];
        let n = self.state.read_at(&mut buf, 0)?;
        self.state_len = n;
        if let Some(last) = &self.last
            && buf[..n] == *self.text.as_bytes()
        {
            return Ok(last.clone());
        }
        let chain = std::str::from_utf8(&buf[..n]).ok().and_then(Chain::parse);
        Ok(match chain {
            Some(chain) if chain.key_id == self.id => chain,
            _ => Chain::fresh(&self.id, self.epoch),
        })
    }

    pub(super) fn write_chain(&mut self, chain: &Chain) -> io::Result<()> {
        self.last = None;
        chain.text(&mut self.text);
        self.state.write_all_at(self.text.as_bytes(), 0)?;
        if self.state_len > self.text.len() {
            self.state.set_len(self.text.len() as u64)?;
        }
        self.last = Some(chain.clone());
        Ok(())
    }

    /// Brings this process's key to the chain's epoch: another process may have moved it
    /// on (then the key file has the key), or the chain's state may be behind the key file
    /// after a crash. The state and the key file are this host's own (a writer of the log
    /// alone reaches neither), and the keys derived here are at most [`MAX_CATCH_UP`].
    pub(super) fn catch_up(&mut self, chain: &mut Chain) -> io::Result<()> {
        if chain.epoch == self.epoch {
            return Ok(());
        }
        let key_file = KeyFile::read(&self.key_path)?;
        if key_file.id != self.id {
            return Err(io::Error::other(
                "the sealing key file now holds another key",
            ));
        }
        let (epoch, key) = (key_file.epoch, key_file.key);
        if epoch > chain.epoch {
            // The key file moved on but the chain did not record it (a writer died between
            // the two): the earlier key is gone, so the chain goes on in the key's epoch.
            chain.epoch = epoch;
        }
        if chain.epoch - epoch > MAX_CATCH_UP {
            return Err(io::Error::other(format!(
                "the sealing chain's state is at epoch {}, {} epochs ahead of the key file",
                chain.epoch,
                chain.epoch - epoch
            )));
        }
        self.take_key(epoch, key, chain.epoch)
    }

    /// Makes `key`, of `epoch`, this process's key at `to` (a few epochs on at most), and
    /// moves the key file on if it is behind.
    pub(super) fn take_key(&mut self, mut epoch: u64, mut key: Key, to: u64) -> io::Result<()> {
        while epoch < to {
            key = key.next();
            epoch += 1;
        }
        if KeyFile::read(&self.key_path).is_ok_and(|f| f.epoch < epoch) {
            KeyFile {
                epoch,
                key: Key(key.0),
                id: self.id.clone(),
                created: self.created,
            }
            .replace(&self.key_path)?;
        }
        self.epoch = epoch;
        crate::metrics::seal_epoch(epoch);
        self.mac = key.line_mac();
        self.key = key;
        Ok(())
    }

    /// After the seal line that begins the next epoch is in the log: the next key
    /// replaces this one, in memory and in the key file.
    pub(super) fn advance(&mut self, next: Key, chain: &mut Chain, now: u64) {
        self.key = next;
        self.mac = self.key.line_mac();
        self.epoch += 1;
        crate::metrics::seal_epoch(self.epoch);
        chain.epoch = self.epoch;
        chain.began = now;
        let key_file = KeyFile {
            epoch: self.epoch,
            key: Key(self.key.0),
            id: self.id.clone(),
            created: self.created,
        };
        if let Err(err) = key_file.replace(&self.key_path) {
            // The next writer tries again (the chain is ahead of the key file).
            let _ = writeln!(
                io::stderr(),
                "jwtguard: cannot rewrite the sealing key file {}: {err}; the last epoch's key is still in it",
                self.key_path.display()
            );
        }
    }

    /// Builds the batch in `self.out`: the seal lines (a new file; an epoch change), then
    /// every line of `input`, sealed. Returns the next epoch's key when it changes.
    pub(super) fn seal(
        &mut self,
        input: &[u8],
        chain: &Chain,
        change: Option<SealReason>,
        new_file: bool,
    ) -> Option<Key> {
        self.out.clear();
        self.lines.clear();
        if self.newline_first {
            self.out.push(b'\n');
        }
        let mut sequence = chain.sequence;
        let mut hash = chain.hash;
        let now = SystemTime::now();
        let mut line = String::new();
        let mut seal_line =
            |sealer: &mut Sealer, event: &Event, hash: &mut Tag, sequence: &mut u64| {
                line.clear();
                event.encode(sealer.format, now, &mut line);
                *sequence += 1;
                push(
                    &mut sealer.out,
                    &mut sealer.lines,
                    line.as_bytes(),
                    &mut sealer.mac,
                    hash,
                    *sequence,
                    0,
                );
            };
        let key_id = self.id.clone();
        if new_file {
            let previous = hash;
            let event = Event::Seal(SealEvent {
                reason: SealReason::File,
                epoch: chain.epoch,
                previous: &previous,
                previous_file: chain.file_first,
                key_id: &key_id,
            });
            seal_line(self, &event, &mut hash, &mut sequence);
        }
        let next = change.map(|reason| {
            let previous = hash;
            let event = Event::Seal(SealEvent {
                reason,
                epoch: chain.epoch + 1,
                previous: &previous,
                previous_file: 0,
                key_id: &key_id,
            });
            seal_line(self, &event, &mut hash, &mut sequence);
            self.key.next()
        });
        let mut next_mac = next.as_ref().map(Key::line_mac);
        let mac = next_mac.as_mut().unwrap_or(&mut self.mac);
        if let Some(tampered) = self.tampered {
            // With the lines of the batch (after the seal lines): a dead writer's batch
            // has no more than one line sealed with a key the next writer may not have.
            line.clear();
            Event::LogTampered(tampered).encode(self.format, now, &mut line);
            sequence += 1;
            push(
                &mut self.out,
                &mut self.lines,
                line.as_bytes(),
                mac,
                &mut hash,
                sequence,
                0,
            );
        }
        let mut start = 0;
        while start < input.len() {
            let (line, end) = match memchr::memchr(b'\n', &input[start..]) {
                Some(i) => (&input[start..start + i], start + i + 1),
                None => (&input[start..], input.len()),
            };
            sequence += 1;
            push(
                &mut self.out,
                &mut self.lines,
                line,
                mac,
                &mut hash,
                sequence,
                end,
            );
            start = end;
        }
        next
    }
}

/// Appends `line` (without its newline), sealed, to the batch `out`, and where it ends
/// to `lines`.
pub(super) fn push(
    out: &mut Vec<u8>,
    lines: &mut Vec<Out>,
    line: &[u8],
    mac: &mut LineMac,
    hash: &mut Tag,
    sequence: u64,
    input_end: usize,
) {
    let (covered, json) = sealed::sealed_part(line);
    *hash = line_hash(mac, hash, sequence, covered);
    out.extend_from_slice(covered);
    sealed::push_seal(out, json, sequence, hash);
    out.push(b'\n');
    let input_end = if input_end == 0 {
        lines.last().map_or(0, |l| l.input_end)
    } else {
        input_end
    };
    lines.push(Out {
        input_end,
        out_end: out.len(),
        hash: *hash,
    });
}
