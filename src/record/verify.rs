//! Checking a sealed log ([`verify`]): the chain line by line, file by file, and where
//! and how it breaks.
//!
//! The fast path reads each file once, in large blocks, and per line takes the seal off
//! the end, checks the sequence number and computes one MAC (src/seal.rs, [`line_hash`]). Only when the chain breaks
//! are the files read again, to tell a changed line from an inserted one, a deleted line
//! from a moved one, and a missing file from lines cut off the end of the one before.
//!
//! Memory is bounded whatever the files hold: a line is held only up to
//! [`MAX_LINE_BYTES`], the longest jwtguard writes; a longer one is not jwtguard's, and its
//! bytes are skipped, never held ([`Lines`]).

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::sealed;
use crate::event::{MAX_LINE_BYTES, SealReason};
use crate::seal::{
    EPOCH_SECONDS, Key, LineMac, MAX_EPOCH, Tag, VerificationKey, line_hash, max_epoch,
};

/// How late a seal may be before a log that ends without a shutdown counts as cut short:
/// a running jwtguard checks every 5 seconds whether its epoch is over.
const GRACE_SECONDS: u64 = 120;

/// How much of a file is read at a time: 1 MiB.
const BLOCK_BYTES: usize = 1 << 20;

/// A line of one of the files, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    file: usize,
    line: u64,
}

/// Why the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Break {
    /// The line does not match its hash (or a seal line says what it cannot).
    Changed,
    /// The line has no seal, and the next line takes up the chain after it.
    ChangedSeal,
    /// The line does not belong: the next one carries its sequence number.
    Inserted,
    /// The line repeats a sequence number already verified.
    Copied { sequence: u64 },
    /// Lines are missing inside a file.
    Deleted { from: u64, to: u64 },
    /// The line is out of its place: `expected` is later, at `found`.
    Reordered { expected: u64, found: Pos },
    /// Lines missing between two files: a whole file.
    MissingFile { from: u64, to: u64 },
    /// Lines missing between two files: cut off the end of the first.
    CutEnd { from: u64, to: u64 },
    /// A file starts with lines already verified.
    Replayed { expected: u64 },
    /// The first sealed line is not where a chain or a file begins.
    HeadCut,
    /// The log was sealed with another key.
    WrongKey { found: String, expected: String },
    /// The first line claims an epoch its key cannot have reached by the line's time.
    EpochTooLate { epoch: u64, limit: u64 },
    /// The last line has no newline.
    Torn { bytes: usize },
    /// The line is longer than any jwtguard writes; `inserted` when the next line takes
    /// up the chain.
    TooLong { bytes: u64, inserted: bool },
    /// The log ends without a shutdown, and no seal for longer than an epoch.
    Stale { minutes: u64 },
    /// No sealed line at all.
    Empty,
}

/// What [`verify`] found: every line verified, or the first place the chain breaks.
/// `Display` writes the report `jwtguard verify-log` prints.
#[derive(Clone, Debug)]
pub struct Report {
    files: Vec<String>,
    /// Lines verified in the chain.
    lines: u64,
    sequences: Option<(u64, u64)>,
    times: Option<(String, String)>,
    epochs: Option<(u64, u64)>,
    /// Seal lines by reason: start-up, epoch, shutdown, file.
    seals: [u64; 4],
    /// The last seal line that began an epoch: where, when, and the lines after it.
    last_seal: Option<(Pos, String, SealReason)>,
    after_last_seal: u64,
    /// The first break, where, and the line's sequence number if it had one.
    problem: Option<(Pos, Option<u64>, Break)>,
}

impl Report {
    /// Whether every line verified and the log is whole: it ends with a shutdown, or its
    /// last seal is recent enough for a log still being written.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }

    /// Lines verified.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    fn at(&self, pos: Pos) -> String {
        format!("{} line {}", self.files[pos.file], pos.line)
    }

    fn ended_by_shutdown(&self) -> bool {
        self.after_last_seal == 0 && matches!(self.last_seal, Some((_, _, SealReason::Shutdown)))
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let summary = |f: &mut std::fmt::Formatter<'_>| -> std::fmt::Result {
            let files = self
                .problem
                .as_ref()
                .map_or(self.files.len(), |(pos, _, _)| pos.file + 1);
            write!(
                f,
                "{} in {}",
                count(self.lines, "line"),
                count(files as u64, "file")
            )?;
            if let Some((a, b)) = self.sequences {
                write!(f, ", sequences {a} to {b}")?;
            }
            if let Some((a, b)) = &self.times {
                write!(f, ", {a} to {b}")?;
            }
            if let Some((a, b)) = self.epochs {
                let [startup, epoch, shutdown, file] = self.seals;
                write!(
                    f,
                    "\n  epochs {a} to {b}: {}, {}, {} of 15 minutes; {} begun",
                    count(startup, "start-up"),
                    count(shutdown, "shutdown"),
                    epoch,
                    count(file, "file"),
                )?;
            }
            Ok(())
        };
        let sealed_up_to = |f: &mut std::fmt::Formatter<'_>| -> std::fmt::Result {
            match &self.last_seal {
                Some((pos, time, _)) => write!(f, "sealed up to {time} ({})", self.at(*pos)),
                None => f.write_str("no seal line"),
            }
        };
        match &self.problem {
            None => {
                f.write_str("intact: ")?;
                summary(f)?;
                if self.ended_by_shutdown() {
                    f.write_str("\n  the log ends with a shutdown, ")?;
                    sealed_up_to(f)
                } else {
                    f.write_str("\n  ")?;
                    sealed_up_to(f)?;
                    write!(
                        f,
                        "; the {} lines after it verify and are sealed at the next epoch (at most 15 minutes later); no shutdown at the end: jwtguard is running, or stopped without one",
                        self.after_last_seal
                    )
                }
            }
            Some((pos, sequence, problem)) => {
                let what = if matches!(problem, Break::Torn { .. } | Break::Stale { .. }) {
                    "INCOMPLETE"
                } else {
                    "TAMPERED"
                };
                write!(f, "{what}: {}", self.at(*pos))?;
                if let Some(sequence) = sequence {
                    write!(f, " (sequence {sequence})")?;
                }
                f.write_str(": ")?;
                match problem {
                    Break::Changed => f.write_str("changed: its hash does not match its content")?,
                    Break::ChangedSeal => f.write_str(
                        "changed: it has no valid seal (event.sequence and event.hash at its end)",
                    )?,
                    Break::Inserted => f.write_str(
                        "inserted: the line after it carries its sequence number and follows the line before it",
                    )?,
                    Break::Copied { sequence } => write!(
                        f,
                        "inserted: it repeats sequence {sequence}, a line verified before (a copy)"
                    )?,
                    Break::Deleted { from, to } => write!(
                        f,
                        "lines deleted before it: sequences {from} to {to} are missing ({})",
                        count(to - from + 1, "line")
                    )?,
                    Break::Reordered { expected, found } => write!(
                        f,
                        "reordered: it comes where sequence {expected} was due, and {expected} is at {}",
                        self.at(*found)
                    )?,
                    Break::MissingFile { from, to } => write!(
                        f,
                        "a file is missing before {}: sequences {from} to {to} ({}) are in none of the files given",
                        self.files[pos.file],
                        count(to - from + 1, "line")
                    )?,
                    Break::CutEnd { from, to } => write!(
                        f,
                        "lines deleted from the end of {}: sequences {from} to {to} ({}) are missing",
                        self.files[pos.file - 1],
                        count(to - from + 1, "line")
                    )?,
                    Break::Replayed { expected } => write!(
                        f,
                        "an old file again: the chain is at sequence {expected}, and this file starts with lines verified before (a replayed copy, or files not given oldest first)"
                    )?,
                    Break::HeadCut => f.write_str(
                        "not where a sealed log file begins (with its file seal line): lines before it were removed, or the file was not sealed from its start",
                    )?,
                    Break::WrongKey { found, expected } => write!(
                        f,
                        "sealed with another key (key {found}; this verification key is for key {expected})"
                    )?,
                    Break::EpochTooLate { epoch, limit } => write!(
                        f,
                        "it claims epoch {epoch}, beyond what the key can have reached by its time (at most {limit}: one a minute since the key was made, and 1024): a forged line"
                    )?,
                    Break::TooLong { bytes, inserted } => {
                        write!(
                            f,
                            "{bytes} bytes long, and jwtguard writes lines of at most {} bytes: not written by jwtguard",
                            MAX_LINE_BYTES - 1
                        )?;
                        f.write_str(if *inserted {
                            " (inserted: the line after it takes up the chain)"
                        } else {
                            " (a line changed or replaced)"
                        })?
                    }
                    Break::Torn { bytes } => write!(
                        f,
                        "the last line is torn ({bytes} bytes without a newline): a write cut short (jwtguard killed while writing) or a cut; the lines before it verify"
                    )?,
                    Break::Stale { minutes } => write!(
                        f,
                        "the log ends without a shutdown, and its last seal is {minutes} minutes old although jwtguard writes one every 15 minutes while it runs: lines after it may have been removed (or jwtguard was killed and not restarted)"
                    )?,
                    Break::Empty => f.write_str("no sealed line: not a sealed log")?,
                }
                f.write_str("\n  verified before it: ")?;
                summary(f)?;
                f.write_str("\n  ")?;
                sealed_up_to(f)
            }
        }
    }
}

/// `1 line`, `2 lines`.
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Where the chain stands while verifying.
struct Chain {
    epoch: u64,
    key: Key,
    mac: LineMac,
    sequence: u64,
    hash: Tag,
}

impl Chain {
    fn next_epoch(&mut self) {
        self.key = self.key.next();
        self.mac = self.key.line_mac();
        self.epoch += 1;
    }
}

/// A line that does not continue the chain, before diagnosis.
enum Fault {
    NoSeal,
    /// Longer than [`MAX_LINE_BYTES`]: this many bytes.
    TooLong(u64),
    Sequence(u64),
    Hash(u64),
    /// Found for sure.
    Known(Option<u64>, Break),
}

struct Verifier<'a> {
    key: &'a VerificationKey,
    id: String,
    chain: Option<Chain>,
    report: Report,
    /// The sequence number of the current file's first line, and of the previous one's.
    file_first: Option<u64>,
    previous_file_first: Option<u64>,
    first_time: Option<[u8; 24]>,
    last_time: [u8; 24],
    /// `now`, in seconds: no line is judged later than this.
    as_of: u64,
}

/// Verifies the sealed log in `files`, oldest first (rotated files, then the current
/// one), with `key`, as of `now` (a log that ends without a shutdown must have a seal
/// less than 15 minutes and a grace period older than `now`).
///
/// # Errors
///
/// A file cannot be read.
pub fn verify(
    key: &VerificationKey,
    files: &[impl AsRef<Path>],
    now: SystemTime,
) -> io::Result<Report> {
    let first = key.first();
    let mut v = Verifier {
        key,
        id: first.id(),
        chain: None,
        report: Report {
            files: files
                .iter()
                .map(|p| p.as_ref().display().to_string())
                .collect(),
            lines: 0,
            sequences: None,
            times: None,
            epochs: None,
            seals: [0; 4],
            last_seal: None,
            after_last_seal: 0,
            problem: None,
        },
        file_first: None,
        previous_file_first: None,
        first_time: None,
        last_time: [b' '; 24],
        as_of: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    let mut last = None;
    let mut reader = None;
    'files: for (index, path) in files.iter().enumerate() {
        let file = File::open(path.as_ref()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.as_ref().display()),
            )
        })?;
        let lines = Lines::reuse(&mut reader, file);
        v.previous_file_first = v.file_first.take().or(v.previous_file_first);
        let mut line = 0;
        while let Some(read) = lines.next()? {
            line += 1;
            let pos = Pos { file: index, line };
            last = Some(pos);
            let (fault, bytes) = match read {
                Line::Whole(bytes) => match v.line(bytes, pos) {
                    Ok(()) => continue,
                    Err(fault) => (fault, bytes),
                },
                Line::Torn(bytes) => {
                    v.report.problem = Some((pos, None, Break::Torn { bytes: bytes.len() }));
                    break 'files;
                }
                Line::TooLong(bytes) => (Fault::TooLong(bytes), &[][..]),
            };
            let (sequence, problem) = v.diagnose(fault, bytes, pos, files)?;
            v.report.problem = Some((pos, sequence, problem));
            break 'files;
        }
    }
    v.finish(last, now);
    Ok(v.report)
}

impl Verifier<'_> {
    /// Checks one line (without its newline) and moves the chain on.
    fn line(&mut self, line: &[u8], pos: Pos) -> Result<(), Fault> {
        let Some(sealed) = sealed::split_seal(line) else {
            return Err(Fault::NoSeal);
        };
        let seal = sealed::seal_fields(sealed.covered);
        let sequence = sealed.sequence;
        let chain = match &mut self.chain {
            Some(chain) => {
                if sequence != chain.sequence + 1 {
                    return Err(Fault::Sequence(sequence));
                }
                if let Some(seal) = &seal {
                    let epoch = chain.epoch + u64::from(seal.reason.changes_epoch());
                    if seal.key_id != self.id || seal.previous != chain.hash || seal.epoch != epoch
                    {
                        return Err(Fault::Known(Some(sequence), Break::Changed));
                    }
                }
                chain
            }
            None => {
                // The chain begins where a file begins: at its `file` seal line (the first
                // line of every sealed file, sequence 1 included). A start-up or epoch seal
                // further down is no beginning: the lines before it were cut.
                let Some(seal) = seal.as_ref().filter(|s| s.reason == SealReason::File) else {
                    return Err(Fault::Known(Some(sequence), Break::HeadCut));
                };
                if seal.key_id != self.id {
                    let found = seal.key_id.clone();
                    return Err(Fault::Known(
                        Some(sequence),
                        Break::WrongKey {
                            found,
                            expected: self.id.clone(),
                        },
                    ));
                }
                let epoch = seal.epoch - u64::from(seal.reason.changes_epoch() && seal.epoch > 0);
                if !(1..=MAX_EPOCH).contains(&epoch) || sequence == 0 {
                    return Err(Fault::Known(Some(sequence), Break::HeadCut));
                }
                // The key of this epoch is derived one epoch at a time: first, is the
                // epoch one the key can have reached by the line's time (or `now`)?
                let time = sealed::timestamp(line)
                    .and_then(crate::time::parse_timestamp)
                    .map_or(self.as_of, |ms| (ms / 1000).min(self.as_of));
                let limit = max_epoch(self.key.created, time);
                if epoch > limit {
                    return Err(Fault::Known(
                        Some(sequence),
                        Break::EpochTooLate { epoch, limit },
                    ));
                }
                let mut key = self.key.first();
                for _ in 1..epoch {
                    key = key.next();
                }
                self.report.sequences = Some((sequence, sequence));
                self.report.epochs = Some((epoch, epoch));
                self.file_first = Some(sequence);
                self.chain.insert(Chain {
                    epoch,
                    mac: key.line_mac(),
                    key,
                    sequence: sequence - 1,
                    hash: seal.previous,
                })
            }
        };
        let hash = line_hash(&mut chain.mac, &chain.hash, sequence, sealed.covered);
        if hash != sealed.hash {
            return Err(Fault::Hash(sequence));
        }
        chain.sequence = sequence;
        chain.hash = hash;
        let report = &mut self.report;
        report.lines += 1;
        report.after_last_seal += 1;
        if let Some((_, last)) = &mut report.sequences {
            *last = sequence;
        }
        if self.file_first.is_none() {
            self.file_first = Some(sequence);
        }
        if let Some(time) = sealed::timestamp(line) {
            self.last_time.copy_from_slice(time.as_bytes());
            self.first_time.get_or_insert(self.last_time);
        }
        if let Some(seal) = seal {
            report.seals[match seal.reason {
                SealReason::Startup => 0,
                SealReason::Epoch => 1,
                SealReason::Shutdown => 2,
                SealReason::File => 3,
            }] += 1;
            if seal.reason.changes_epoch() {
                chain.next_epoch();
                if let Some((_, last)) = &mut report.epochs {
                    *last = chain.epoch;
                }
                let time = String::from_utf8_lossy(&self.last_time).into_owned();
                report.last_seal = Some((pos, time, seal.reason));
                report.after_last_seal = 0;
            }
        }
        Ok(())
    }

    /// Tells what a fault at `pos` is, reading on where needed.
    fn diagnose(
        &mut self,
        fault: Fault,
        line: &[u8],
        pos: Pos,
        files: &[impl AsRef<Path>],
    ) -> io::Result<(Option<u64>, Break)> {
        let sequence = sealed::split_seal(line).map(|s| s.sequence);
        let Some(chain) = &self.chain else {
            return Ok(match fault {
                Fault::Known(sequence, problem) => (sequence, problem),
                Fault::TooLong(bytes) => (
                    None,
                    Break::TooLong {
                        bytes,
                        inserted: false,
                    },
                ),
                Fault::NoSeal => (None, Break::HeadCut),
                _ => (sequence, Break::Changed),
            });
        };
        let expected = chain.sequence + 1;
        // The line after this one: does it take up the chain as if this one were not there?
        let mut mac = chain.mac.clone();
        let mut takes_up = |next: &[u8], previous: &Tag, sequence: u64| {
            sealed::split_seal(next).is_some_and(|s| {
                s.sequence == sequence
                    && line_hash(&mut mac, previous, sequence, s.covered) == s.hash
            })
        };
        let next = next_line(files, pos)?;
        let file_start = pos.line == 1 && pos.file > 0;
        Ok(match fault {
            Fault::Known(sequence, problem) => (sequence, problem),
            Fault::TooLong(bytes) => {
                let inserted = next
                    .as_deref()
                    .is_some_and(|n| takes_up(n, &chain.hash, expected));
                (None, Break::TooLong { bytes, inserted })
            }
            Fault::NoSeal => {
                if next
                    .as_deref()
                    .is_some_and(|n| takes_up(n, &chain.hash, expected))
                {
                    (None, Break::Inserted)
                } else {
                    (None, Break::ChangedSeal)
                }
            }
            Fault::Hash(sequence) => {
                if next
                    .as_deref()
                    .is_some_and(|n| takes_up(n, &chain.hash, expected))
                {
                    (Some(sequence), Break::Inserted)
                } else {
                    (Some(sequence), Break::Changed)
                }
            }
            Fault::Sequence(got) if got < expected => {
                if file_start {
                    (Some(got), Break::Replayed { expected })
                } else {
                    (Some(got), Break::Copied { sequence: got })
                }
            }
            Fault::Sequence(got) => {
                let found = find_sequence(files, pos, expected)?;
                let (from, to) = (expected, got - 1);
                let problem = match found {
                    Some(found) => Break::Reordered { expected, found },
                    None if file_start => {
                        let seal =
                            sealed::split_seal(line).and_then(|s| sealed::seal_fields(s.covered));
                        let previous_file = seal
                            .filter(|s| s.reason == SealReason::File)
                            .map(|s| s.previous_file);
                        if previous_file.is_some() && previous_file == self.previous_file_first {
                            Break::CutEnd { from, to }
                        } else {
                            Break::MissingFile { from, to }
                        }
                    }
                    None => Break::Deleted { from, to },
                };
                (Some(got), problem)
            }
        })
    }

    /// The end of the log: a shutdown, or a recent seal, or it was cut short.
    fn finish(&mut self, last: Option<Pos>, now: SystemTime) {
        let report = &mut self.report;
        if let Some(first) = self.first_time {
            report.times = Some((
                String::from_utf8_lossy(&first).into_owned(),
                String::from_utf8_lossy(&self.last_time).into_owned(),
            ));
        }
        if report.problem.is_some() {
            return;
        }
        let Some(last) = last.filter(|_| self.chain.is_some()) else {
            let pos = last.unwrap_or(Pos { file: 0, line: 0 });
            report.problem = Some((pos, None, Break::Empty));
            return;
        };
        if report.ended_by_shutdown() {
            return;
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let sealed_ms = report
            .last_seal
            .as_ref()
            .and_then(|(_, time, _)| crate::time::parse_timestamp(time))
            .unwrap_or(0);
        let age = now_ms.saturating_sub(sealed_ms) / 1000;
        if age > EPOCH_SECONDS + GRACE_SECONDS {
            let at = report.last_seal.as_ref().map_or(last, |(pos, _, _)| *pos);
            report.problem = Some((at, None, Break::Stale { minutes: age / 60 }));
        }
    }
}

/// The line after `pos`, through the following files; `None` at the end, or when it is
/// longer than jwtguard writes.
fn next_line(files: &[impl AsRef<Path>], pos: Pos) -> io::Result<Option<Vec<u8>>> {
    let mut next = None;
    scan(files, pos, |_, line| {
        next = line.bytes().map(<[u8]>::to_vec);
        false
    })?;
    Ok(next)
}

/// Where the line with `sequence` is, after `pos`.
fn find_sequence(files: &[impl AsRef<Path>], pos: Pos, sequence: u64) -> io::Result<Option<Pos>> {
    let mut found = None;
    scan(files, pos, |at, line| {
        if line
            .bytes()
            .and_then(sealed::split_seal)
            .is_some_and(|s| s.sequence == sequence)
        {
            found = Some(at);
        }
        found.is_none()
    })?;
    Ok(found)
}

/// Calls `each` with the lines after `pos`, until it returns false.
fn scan(
    files: &[impl AsRef<Path>],
    pos: Pos,
    mut each: impl FnMut(Pos, Line<'_>) -> bool,
) -> io::Result<()> {
    let mut reader = None;
    for (index, path) in files.iter().enumerate().skip(pos.file) {
        let lines = Lines::reuse(&mut reader, File::open(path.as_ref())?);
        let mut line = 0;
        while let Some(read) = lines.next()? {
            line += 1;
            if index == pos.file && line <= pos.line {
                continue;
            }
            if !each(Pos { file: index, line }, read) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A line as [`Lines`] reads it, without its newline.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// A line ended by a newline, of at most [`MAX_LINE_BYTES`] with it.
    Whole(&'a [u8]),
    /// The end of the file, after the last newline: a line cut short.
    Torn(&'a [u8]),
    /// A line (ended or not) of more bytes than a whole line holds: how many.
    TooLong(u64),
}

impl<'a> Line<'a> {
    /// The bytes of a line of at most [`MAX_LINE_BYTES`].
    fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Line::Whole(bytes) | Line::Torn(bytes) => Some(bytes),
            Line::TooLong(_) => None,
        }
    }
}

/// Reads lines into one buffer of [`MAX_LINE_BYTES`], which never grows: the rest of a
/// longer line is skipped, a block at a time, so any file is read in bounded memory.
struct Lines<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
}

impl<R: Read> Lines<R> {
    /// Reads blocks of `block` bytes from `reader`.
    fn new(reader: R, block: usize) -> Self {
        Lines {
            reader: BufReader::with_capacity(block, reader),
            buf: Vec::with_capacity(MAX_LINE_BYTES),
        }
    }

    /// The lines of `reader`, read with the buffers of the one in `slot` (what it had not
    /// read of its own is dropped), or with new ones: one allocation for any number of
    /// files (a new 1 MiB block each cost 0.5 s of CPU on 100,000 empty files).
    fn reuse(slot: &mut Option<Self>, reader: R) -> &mut Self {
        let lines = match slot.take() {
            Some(mut lines) => {
                let left = lines.reader.buffer().len();
                lines.reader.consume(left);
                *lines.reader.get_mut() = reader;
                lines
            }
            None => Lines::new(reader, BLOCK_BYTES),
        };
        slot.insert(lines)
    }

    /// The next line, or `None` at the end.
    fn next(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let limit = MAX_LINE_BYTES as u64;
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            return Ok(Some(Line::Whole(&self.buf[..n - 1])));
        }
        if n < MAX_LINE_BYTES {
            return Ok(Some(Line::Torn(&self.buf)));
        }
        // Longer than jwtguard writes: the rest is skipped to its newline, a block at a
        // time, and only counted.
        let mut bytes = limit;
        loop {
            let block = match self.reader.fill_buf() {
                Ok(block) => block,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (skip, end) = match memchr::memchr(b'\n', block) {
                Some(i) => (i, i + 1),
                None if block.is_empty() => break,
                None => (block.len(), block.len()),
            };
            self.reader.consume(end);
            bytes += skip as u64;
            if skip < end {
                break;
            }
        }
        Ok(Some(Line::TooLong(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogFormat;
    use crate::event::Event;
    use crate::seal::{Sealer, VerificationKey, init};
    use crate::sink::Sink;
    use std::io::Write as _;
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the temp dir, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "jwtguard-verify-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `n` lines of events in `format`, each with its newline.
    fn batch(format: LogFormat, tag: &str, n: usize) -> String {
        let mut text = String::new();
        for i in 0..n {
            let message = format!("{tag} line {i}: \"quoted\" \u{e9}");
            Event::Record {
                level: log::Level::Warn,
                logger: "test",
                message: &message,
            }
            .encode(format, SystemTime::now(), &mut text);
            text.push('\n');
        }
        text
    }

    /// A sealed log written through a sealed sink: a start-up, batches, an epoch change,
    /// a shutdown. Returns the directory, the verification key, and the log's path.
    fn sealed_log(format: LogFormat) -> (Dir, VerificationKey, PathBuf) {
        let dir = Dir::new();
        let key = dir.0.join("key");
        let vk = init(&key).unwrap();
        let log = dir.0.join("log");
        let sink = Sink::file(&log).unwrap();
        sink.seal_with(Sealer::open(&key, format).unwrap());
        for b in 0..4 {
            let text = batch(format, &format!("batch {b}"), 3);
            assert_eq!(sink.write(text.as_bytes()), text.len());
            if b == 1 {
                sink.seal(Some(SealReason::Epoch));
            }
        }
        sink.seal(Some(SealReason::Shutdown));
        (dir, vk, log)
    }

    fn check(vk: &VerificationKey, files: &[&Path]) -> Report {
        verify(vk, files, SystemTime::now()).unwrap()
    }

    #[test]
    fn an_untouched_log_verifies_in_both_formats() {
        for format in [LogFormat::Json, LogFormat::Text] {
            let (_dir, vk, log) = sealed_log(format);
            let report = check(&vk, &[&log]);
            assert!(report.is_intact(), "{report}");
            // file, start-up, 4 batches of 3, an epoch, a shutdown.
            assert_eq!(report.lines(), 16, "{report}");
            let text = report.to_string();
            assert!(
                text.contains(
                    "epochs 1 to 4: 1 start-up, 1 shutdown, 1 of 15 minutes; 1 file begun"
                ),
                "{text}"
            );
            assert!(text.contains("the log ends with a shutdown"), "{text}");
        }
    }

    #[test]
    fn lines_longer_than_jwtguard_writes_are_skipped_in_a_fixed_buffer() {
        let max = MAX_LINE_BYTES;
        let mut input = b"short\n".to_vec();
        for (byte, len) in [(b'x', max - 1), (b'y', max), (b'z', 3 * max + 5)] {
            input.extend(std::iter::repeat_n(byte, len));
            input.push(b'\n');
        }
        input.extend_from_slice(b"after\n");
        input.extend(std::iter::repeat_n(b'w', 2 * max));
        // Blocks smaller than a line, so a long line spans many.
        let mut lines = Lines::new(&input[..], 4096);
        let mut got = Vec::new();
        while let Some(line) = lines.next().unwrap() {
            got.push(match line {
                Line::Whole(bytes) => format!("whole {} {}", bytes.len(), bytes[0] as char),
                other => format!("{other:?}"),
            });
            assert_eq!(lines.buf.capacity(), max, "the buffer grew");
        }
        let long = |n: usize| format!("TooLong({n})");
        assert_eq!(
            got,
            [
                "whole 5 s".to_owned(),
                format!("whole {} x", max - 1),
                long(max),
                long(3 * max + 5),
                "whole 5 a".to_owned(),
                long(2 * max),
            ]
        );
        let mut lines = Lines::new(&b"a\ntorn"[..], 4096);
        assert_eq!(lines.next().unwrap(), Some(Line::Whole(b"a")));
        assert_eq!(lines.next().unwrap(), Some(Line::Torn(b"torn")));
        assert_eq!(lines.next().unwrap(), None);
    }

    #[test]
    fn the_buffers_of_one_file_read_only_the_next_one() {
        let mut slot = None;
        let lines = Lines::reuse(&mut slot, &b"a\nb\n"[..]);
        assert_eq!(lines.next().unwrap(), Some(Line::Whole(b"a")));
        // Left before its end ("b" unread, in the block): the next file's lines only.
        let lines = Lines::reuse(&mut slot, &b"c\n"[..]);
        assert_eq!(lines.next().unwrap(), Some(Line::Whole(b"c")));
        assert_eq!(lines.next().unwrap(), None);
    }

    #[test]
    fn a_line_longer_than_jwtguard_writes_is_found_at_its_line() {
        for format in [LogFormat::Json, LogFormat::Text] {
            let (dir, vk, log) = sealed_log(format);
            let text = std::fs::read_to_string(&log).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            // Line 5 with its message made longer than any line jwtguard writes.
            let at = lines[4].find("batch 0").unwrap();
            let padding = "p".repeat(MAX_LINE_BYTES);
            let long = format!("{}{padding}{}", &lines[4][..at], &lines[4][at..]);
            // verify-log's report on `lines` written to `name` (joined by newlines, then
            // `last`), the directory written DIR.
            let report = |name: &str, lines: &[&str], last: &str| {
                let path = dir.0.join(name);
                std::fs::write(&path, lines.join("\n") + last).unwrap();
                let report = check(&vk, &[&path]).to_string();
                report.replace(&*dir.0.to_string_lossy(), "DIR")
            };
            let says = |report: &str, name: &str, line: usize, what: &str| {
                let head = format!(
                    "TAMPERED: DIR/{name} line {line}: {} bytes long, and jwtguard writes lines of at most {} bytes: not written by jwtguard ({what})\n  verified before it: {} in 1 file,",
                    long.len(),
                    MAX_LINE_BYTES - 1,
                    count(line as u64 - 1, "line"),
                );
                assert!(report.starts_with(&head), "{format:?}: {report}");
            };
            // Inserted before line 5: the lines before it verify, the one after takes up.
            let mut inserted = lines.clone();
            inserted.insert(4, &long);
            let got = report("inserted", &inserted, "\n");
            says(
                &got,
                "inserted",
                5,
                "inserted: the line after it takes up the chain",
            );
            // In place of line 5: the line after it does not take up.
            let mut changed = lines.clone();
            changed[4] = &long;
            let got = report("changed", &changed, "\n");
            says(&got, "changed", 5, "a line changed or replaced");
            // At the end without a newline: no write of jwtguard's cut short.
            let mut cut = lines.clone();
            cut.push(&long);
            let got = report("cut", &cut, "");
            says(&got, "cut", lines.len() + 1, "a line changed or replaced");
            // Further down, past a line out of place: counted as a line, and the line
            // after it found where it is.
            let mut moved = lines.clone();
            let sixth = moved.remove(5);
            moved.insert(6, &long);
            moved.insert(7, sixth);
            let got = report("moved", &moved, "\n");
            assert!(
                got.starts_with(
                    "TAMPERED: DIR/moved line 6 (sequence 7): reordered: it comes where sequence 6 was due, and 6 is at DIR/moved line 8\n"
                ),
                "{format:?}: {got}"
            );
        }
    }

    #[test]
    fn a_log_cut_at_a_seal_line_further_down_is_cut() {
        for format in [LogFormat::Json, LogFormat::Text] {
            let (_dir, vk, log) = sealed_log(format);
            let text = std::fs::read_to_string(&log).unwrap();
            // From the start-up seal (line 2), and from the epoch seal (line 9).
            for from in [1, 8] {
                let rest: String = text.split_inclusive('\n').skip(from).collect();
                assert!(rest.lines().next().unwrap().contains("seal"), "{rest}");
                std::fs::write(&log, rest).unwrap();
                let report = check(&vk, &[&log]);
                assert!(
                    !report.is_intact(),
                    "{format:?} from line {}: {report}",
                    from + 1
                );
                assert!(report.to_string().contains("line 1 "), "{report}");
                assert!(
                    report
                        .to_string()
                        .contains("not where a sealed log file begins")
                );
            }
        }
    }

    #[test]
    fn a_json_line_with_a_seal_in_text_form_is_tampered() {
        let (_dir, vk, log) = sealed_log(LogFormat::Json);
        let text = std::fs::read_to_string(&log).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        // Line 4's seal rewritten the text way: the covered bytes and the tag unchanged,
        // and the line no longer JSON.
        let line = &lines[3];
        let at = line.rfind(",\"event.sequence\":").unwrap();
        let (body, seal) = line.split_at(at);
        let sequence: String = seal[18..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let hash = &seal[seal.len() - 34..seal.len() - 2];
        lines[3] = format!("{body} event.sequence={sequence} event.hash={hash}");
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let report = check(&vk, &[&log]);
        assert!(!report.is_intact(), "{report}");
        assert!(report.to_string().contains("line 4"), "{report}");
    }

    #[test]
    fn each_line_ends_with_a_128_bit_tag() {
        for format in [LogFormat::Json, LogFormat::Text] {
            let (_dir, _vk, log) = sealed_log(format);
            let text = std::fs::read_to_string(&log).unwrap();
            for line in text.lines() {
                let (rest, end) = match format {
                    LogFormat::Json => (line.strip_suffix("\"}").unwrap(), "\"event.hash\":\""),
                    LogFormat::Text => (line, " event.hash="),
                };
                let (before, hex) = rest.split_at(rest.len() - 32);
                assert!(before.ends_with(end), "{line}");
                assert!(
                    hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                    "{line}"
                );
            }
            // A line with a tag of 64 hex digits (the seal before POLYVAL) has no seal.
            let line = text.lines().next().unwrap();
            let (head, tail) =
                line.split_at(line.len() - if format == LogFormat::Json { 2 } else { 0 });
            let longer = format!("{head}{}{tail}", "0".repeat(32));
            assert!(sealed::split_seal(longer.as_bytes()).is_none(), "{longer}");
        }
    }

    /// Both formats' logs, made once.
    fn logs() -> &'static [(Dir, VerificationKey, Vec<u8>); 2] {
        static LOGS: OnceLock<[(Dir, VerificationKey, Vec<u8>); 2]> = OnceLock::new();
        LOGS.get_or_init(|| {
            [LogFormat::Json, LogFormat::Text].map(|format| {
                let (dir, vk, log) = sealed_log(format);
                let bytes = std::fs::read(log).unwrap();
                (dir, vk, bytes)
            })
        })
    }

    /// Verifies `log` with `i`'s byte made `byte`.
    fn changed(log: &(Dir, VerificationKey, Vec<u8>), i: usize, byte: u8, name: &str) -> Report {
        let mut bytes = log.2.clone();
        bytes[i] = byte;
        let path = log.0.0.join(name);
        std::fs::write(&path, &bytes).unwrap();
        check(&log.1, &[&path])
    }

    #[test]
    fn every_byte_changed_is_found() {
        // Each byte of each log, changed.
        for (n, log) in logs().iter().enumerate() {
            for i in 0..log.2.len() {
                // The lowest bit, or the case bit, in turn.
                {
                    let flip = if i % 2 == 0 { 0x01 } else { 0x20 };
                    let report = changed(log, i, log.2[i] ^ flip, &format!("flip-{n}"));
                    assert!(
                        !report.is_intact(),
                        "byte {i} ^ {flip:#x} of log {n} went unnoticed: {report}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_single_byte_changed_is_found(
            n in 0..2usize,
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let log = &logs()[n];
            let i = at.index(log.2.len());
            proptest::prop_assume!(log.2[i] != byte);
            let report = changed(log, i, byte, &format!("prop-{n}"));
            proptest::prop_assert!(!report.is_intact(), "byte {} made {:#x} went unnoticed: {}", i, byte, report);
        }
    }

    #[test]
    fn the_key_file_of_a_later_epoch_cannot_seal_an_earlier_one() {
        // The key file as it stands after the log's last epoch change: every key it gives
        // (its own, the following ones) seals a forged line of an earlier epoch that does
        // not verify; the earlier epoch's own key does (the forgery itself is sound).
        let (dir, vk, log) = sealed_log(LogFormat::Text);
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Line 4 (a record of batch 0) is in epoch 2, after the start-up.
        let target = 3;
        assert!(
            lines[target].contains("batch 0 line 1"),
            "{}",
            lines[target]
        );
        let later = std::fs::read_to_string(dir.0.join("key")).unwrap();
        let field = |name: &str| later.lines().find_map(|l| l.strip_prefix(name)).unwrap();
        let later_epoch: u64 = field("epoch ").parse().unwrap();
        assert_eq!(later_epoch, 4);
        let mut key = crate::seal::Key(sealed::parse_hex(field("key ").as_bytes()).unwrap());
        let forge = |epoch2: crate::seal::Key| {
            // The line changed, then it and every line after it sealed again with `epoch2`
            // as epoch 2's key and the keys that follow from it.
            let mut key = epoch2;
            let mut mac = key.line_mac();
            let sealed = sealed::split_seal(lines[target - 1].as_bytes()).unwrap();
            let mut previous = sealed.hash;
            let mut out: Vec<String> = lines[..target].iter().map(|l| l.to_string()).collect();
            for (i, line) in lines.iter().enumerate().skip(target) {
                let sealed = sealed::split_seal(line.as_bytes()).unwrap();
                let mut covered = String::from_utf8(sealed.covered.to_vec()).unwrap();
                if i == target {
                    covered = covered.replace("batch 0 line 1", "batch 0 line X");
                }
                if let Some(seal) = sealed::seal_fields(sealed.covered) {
                    let (mut old, mut new) = (String::new(), String::new());
                    crate::event::push_hex(&seal.previous, &mut old);
                    crate::event::push_hex(&previous, &mut new);
                    covered = covered.replace(&old, &new);
                }
                let hash = line_hash(&mut mac, &previous, sealed.sequence, covered.as_bytes());
                let mut bytes = covered.into_bytes();
                sealed::push_seal(&mut bytes, false, sealed.sequence, &hash);
                out.push(String::from_utf8(bytes).unwrap());
                previous = hash;
                if sealed::seal_fields(sealed.covered).is_some_and(|s| s.reason.changes_epoch()) {
                    key = key.next();
                    mac = key.line_mac();
                }
            }
            let path = dir.0.join("forged");
            std::fs::write(&path, out.join("\n") + "\n").unwrap();
            check(&vk, &[&path])
        };
        // Epoch 2's own key, derived from the verification key, forges it: the forgery is
        // sound, only the key is missing.
        let report = forge(vk.first().next());
        assert!(report.is_intact(), "{report}");
        // Every key the later key file gives fails, at the changed line.
        for _ in 0..3 {
            let report = forge(crate::seal::Key(key.0));
            assert!(!report.is_intact(), "{report}");
            assert!(
                report.to_string().contains("line 4 (sequence 4): changed"),
                "{report}"
            );
            key = key.next();
        }
    }

    #[test]
    fn a_first_line_claiming_an_epoch_beyond_the_keys_age_is_judged_at_once() {
        // The key of a log's first epoch is derived one epoch at a time: a first line that
        // claimed epoch 2^27 (the highest a line may name) took 28 to 50 s to judge.
        let (_dir, vk, log) = sealed_log(LogFormat::Json);
        let text = std::fs::read_to_string(&log).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.contains("\"jwtguard.seal.epoch\":1,"), "{first}");
        for epoch in [1 << 27, 1_000_000, 1026] {
            let forged = first.replace(
                "\"jwtguard.seal.epoch\":1,",
                &format!("\"jwtguard.seal.epoch\":{epoch},"),
            );
            std::fs::write(&log, forged + "\n").unwrap();
            let (vk, path) = (vk.clone(), log.clone());
            let (send, receive) = std::sync::mpsc::channel();
            std::thread::spawn(move || send.send(check(&vk, &[&path]).to_string()));
            let report = receive
                .recv_timeout(std::time::Duration::from_millis(500))
                .unwrap_or_else(|_| panic!("epoch {epoch}: no report within 0.5 s"));
            assert!(
                report.starts_with(&format!(
                    "TAMPERED: {} line 1 (sequence 1): it claims epoch {epoch}, beyond",
                    log.display()
                )),
                "{report}"
            );
        }
    }

    /// A sealed sink on `log` with the key file `key`: a process.
    fn writer(log: &Path, key: &Path) -> Sink {
        let sink = Sink::file(log).unwrap();
        sink.seal_with(Sealer::open(key, LogFormat::Json).unwrap());
        sink
    }

    fn whole_lines(path: &Path) -> u64 {
        std::fs::read(path)
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
    }

    #[test]
    fn writers_of_one_log_keep_one_chain() {
        let dir = Dir::new();
        let (key, log) = (dir.0.join("key"), dir.0.join("log"));
        let vk = init(&key).unwrap();
        std::thread::scope(|s| {
            for w in 0..3 {
                let (key, log) = (&key, &log);
                s.spawn(move || {
                    let sink = writer(log, key);
                    for b in 0..100 {
                        let text = batch(LogFormat::Json, &format!("writer {w} batch {b}"), 2);
                        assert_eq!(sink.write(text.as_bytes()), text.len());
                    }
                    sink.seal(Some(SealReason::Shutdown));
                });
            }
        });
        let report = check(&vk, &[&log]);
        assert!(report.is_intact(), "{report}");
        // A file seal, 3 start-ups, 600 lines, 3 shutdowns.
        assert_eq!((report.lines(), whole_lines(&log)), (607, 607), "{report}");
    }

    #[test]
    fn a_rotated_file_goes_on_with_the_chain() {
        let dir = Dir::new();
        let (key, log, old) = (dir.0.join("key"), dir.0.join("log"), dir.0.join("log.1"));
        let vk = init(&key).unwrap();
        let sink = writer(&log, &key);
        let text = batch(LogFormat::Json, "before", 3);
        sink.write(text.as_bytes());
        std::fs::rename(&log, &old).unwrap();
        sink.write(text.as_bytes()); // into the renamed file, until the path is looked up
        sink.forget_lookup();
        let text = batch(LogFormat::Json, "after", 3);
        sink.write(text.as_bytes());
        sink.seal(Some(SealReason::Shutdown));
        let report = check(&vk, &[&old, &log]);
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.lines(), whole_lines(&old) + whole_lines(&log));
        // The new file begins with a seal line that names where the chain is: it
        // verifies alone.
        let first = std::fs::read_to_string(&log).unwrap();
        assert!(
            first.starts_with("{")
                && first
                    .lines()
                    .next()
                    .unwrap()
                    .contains("\"event.reason\":\"file\""),
            "{first}"
        );
        assert!(check(&vk, &[&log]).is_intact());
        let report = check(&vk, &[&log, &old]);
        assert!(
            report
                .to_string()
                .contains("log.1 line 1 (sequence 1): an old file again"),
            "{report}"
        );
    }

    #[test]
    fn a_writer_that_died_before_its_state_update_is_taken_up() {
        for torn in [false, true] {
            let dir = Dir::new();
            let (key, log) = (dir.0.join("key"), dir.0.join("log"));
            let state = crate::seal::state_path(&key);
            let vk = init(&key).unwrap();
            {
                let sink = writer(&log, &key);
                sink.write(batch(LogFormat::Json, "first", 2).as_bytes());
                let before = std::fs::read(&state).unwrap();
                sink.write(batch(LogFormat::Json, "second", 3).as_bytes());
                // As if the process died between its write and its state update, or in
                // the middle of its write.
                std::fs::write(&state, before).unwrap();
                if torn {
                    let len = std::fs::metadata(&log).unwrap().len();
                    std::fs::File::options()
                        .write(true)
                        .open(&log)
                        .unwrap()
                        .set_len(len - 100)
                        .unwrap();
                }
            }
            let sink = writer(&log, &key);
            sink.write(batch(LogFormat::Json, "next process", 2).as_bytes());
            sink.seal(Some(SealReason::Shutdown));
            let report = check(&vk, &[&log]);
            assert!(report.is_intact(), "torn {torn}: {report}");
            assert_eq!(report.lines(), whole_lines(&log));
            let text = std::fs::read_to_string(&log).unwrap();
            assert_eq!(
                text.matches("second line").count(),
                if torn { 2 } else { 3 }
            );
        }
    }

    #[test]
    fn a_writer_that_died_after_moving_the_key_file_on_is_taken_up() {
        // Its epoch change reached the log and the key file, not the state: the seal line
        // that ended the epoch is MACed with a key that is gone, and the line after it,
        // under the key file's key, vouches for it.
        let dir = Dir::new();
        let (key, log) = (dir.0.join("key"), dir.0.join("log"));
        let state = crate::seal::state_path(&key);
        let vk = init(&key).unwrap();
        {
            let sink = writer(&log, &key);
            sink.write(batch(LogFormat::Json, "first", 2).as_bytes());
            let before = std::fs::read(&state).unwrap();
            sink.seal(Some(SealReason::Epoch));
            sink.write(batch(LogFormat::Json, "second", 3).as_bytes());
            std::fs::write(&state, before).unwrap();
        }
        let sink = writer(&log, &key);
        sink.write(batch(LogFormat::Json, "next process", 2).as_bytes());
        sink.seal(Some(SealReason::Shutdown));
        let report = check(&vk, &[&log]);
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.lines(), whole_lines(&log));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("log_tampered"), "{text}");
    }

    #[test]
    fn lines_after_the_chain_that_do_not_verify_are_recorded_once_and_left() {
        // Appended by someone without the key: a line of the next epoch's shape, and one
        // unsealed and without its newline.
        let dir = Dir::new();
        let (key, log) = (dir.0.join("key"), dir.0.join("log"));
        let vk = init(&key).unwrap();
        let sink = writer(&log, &key);
        sink.write(batch(LogFormat::Json, "first", 2).as_bytes());
        let on_disk = std::fs::read_to_string(&key).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let last = text.lines().last().unwrap();
        let forged = last.replacen("first line 1", "first line 2", 1);
        let appended = format!("{forged}\nnot a line of the chain");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(appended.as_bytes())
            .unwrap();
        for b in 0..3 {
            sink.write(batch(LogFormat::Json, &format!("after {b}"), 1).as_bytes());
        }
        assert_eq!(std::fs::read_to_string(&key).unwrap(), on_disk);
        let text = std::fs::read_to_string(&log).unwrap();
        // Left in place, each line whole.
        assert!(text.contains(&format!("{appended}\n")), "{text}");
        let events: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("log_tampered"))
            .collect();
        assert_eq!(events.len(), 1, "{text}");
        let sequence = sealed::split_seal(last.as_bytes()).unwrap().sequence;
        let offset = text.find(&appended).unwrap();
        assert!(
            events[0].contains(&format!(
                "\"jwtguard.seal.verified\":{sequence},\"jwtguard.seal.unverified_offset\":{offset},\"jwtguard.seal.unverified_bytes\":{}",
                appended.len()
            )),
            "{}",
            events[0]
        );
        // The chain goes on from the last line that verified: verify-log stops at the
        // forged line; without the appended bytes, the log is intact.
        let report = check(&vk, &[&log]);
        assert!(
            report
                .to_string()
                .starts_with(&format!("TAMPERED: {} line 5 ", log.display())),
            "{report}"
        );
        std::fs::write(&log, text.replace(&format!("{appended}\n"), "")).unwrap();
        let report = check(&vk, &[&log]);
        assert!(report.is_intact(), "{report}");
    }

    #[test]
    fn bytes_appended_without_a_newline_are_cut_and_recorded() {
        // A torn last line is cut (a writer killed mid-line leaves one), but appended bytes
        // look the same: the cut is recorded, once, in the chain.
        let dir = Dir::new();
        let (key, log) = (dir.0.join("key"), dir.0.join("log"));
        let vk = init(&key).unwrap();
        let sink = writer(&log, &key);
        sink.write(batch(LogFormat::Json, "first", 2).as_bytes());
        let before = std::fs::read_to_string(&log).unwrap();
        let junk = "{\"message\":\"attacker was here\"";
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(junk.as_bytes())
            .unwrap();
        for b in 0..2 {
            sink.write(batch(LogFormat::Json, &format!("after {b}"), 1).as_bytes());
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("attacker was here"), "{text}");
        let events: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("torn_line_cut"))
            .collect();
        assert_eq!(events.len(), 1, "{text}");
        assert!(
            events[0].contains(&format!(
                "\"jwtguard.seal.unverified_offset\":{},\"jwtguard.seal.unverified_bytes\":{}",
                before.len(),
                junk.len()
            )),
            "{}",
            events[0]
        );
        let report = check(&vk, &[&log]);
        assert!(
            report.lines() > 0 && !report.to_string().starts_with("TAMPERED"),
            "{report}"
        );
    }

    #[test]
    fn no_epoch_change_goes_past_the_keys_age() {
        // A key made a minute ago may be at epoch 1 + 1 + 1024 at most: from 1025, the
        // start moves the chain to 1026, and the shutdown makes no change.
        let dir = Dir::new();
        let (key, log) = (dir.0.join("key"), dir.0.join("log"));
        let made = init(&key).unwrap();
        let vk = VerificationKey {
            secret: made.secret,
            created: made.created - 60,
        };
        let mut at = vk.first();
        for _ in 1..1025 {
            at = at.next();
        }
        crate::seal::write_key_file(&key, 1025, at, vk.first().id(), vk.created).unwrap();
        let sink = writer(&log, &key);
        sink.write(batch(LogFormat::Json, "line", 2).as_bytes());
        sink.seal(Some(SealReason::Shutdown));
        let on_disk = std::fs::read_to_string(&key).unwrap();
        assert!(on_disk.contains("\nepoch 1026\n"), "{on_disk}");
        let report = check(&vk, &[&log]).to_string();
        assert!(report.starts_with("intact: 4 lines"), "{report}");
        assert!(
            report.contains("epochs 1025 to 1026: 1 start-up, 0 shutdowns"),
            "{report}"
        );
    }

    #[test]
    fn an_epoch_ends_after_15_minutes_with_a_seal_line() {
        let dir = Dir::new();
        let (key, log) = (dir.0.join("key"), dir.0.join("log"));
        let vk = init(&key).unwrap();
        let sink = writer(&log, &key);
        sink.write(batch(LogFormat::Json, "first", 1).as_bytes());
        // Nothing is due yet: the check the timer makes writes nothing.
        let len = std::fs::metadata(&log).unwrap().len();
        sink.seal(None);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
        // As if the epoch began 15 minutes ago.
        let state = crate::seal::state_path(&key);
        let text = std::fs::read_to_string(&state).unwrap();
        let began = text.lines().find(|l| l.starts_with("began ")).unwrap();
        let old = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - EPOCH_SECONDS)
            .to_string();
        let aged = format!("began {}{old}", "0".repeat(20 - old.len()));
        std::fs::write(&state, text.replace(began, &aged)).unwrap();
        let on_disk = std::fs::read_to_string(&key).unwrap();
        sink.seal(None);
        let text = std::fs::read_to_string(&log).unwrap();
        let last = text.lines().last().unwrap();
        assert!(
            last.contains(
                r#""event.action":"seal","event.outcome":"success","event.reason":"epoch""#
            ),
            "{last}"
        );
        assert!(last.contains(r#""jwtguard.seal.epoch":3,"#), "{last}");
        assert_ne!(
            std::fs::read_to_string(&key).unwrap(),
            on_disk,
            "the key file moved on"
        );
        let report = check(&vk, &[&log]);
        assert!(report.to_string().contains("1 of 15 minutes"), "{report}");
    }
}
