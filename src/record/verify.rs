//! Checking a sealed log ([`verify`]): the chain line by line, file by file, and where
//! and how it breaks.
//!
//! The fast path reads each file once, in large blocks, and per line takes the seal off
//! the end, checks the sequence number and computes one MAC (src/record/seal.rs, [`line_hash`]). Only when the chain breaks
//! are the files read again, to tell a changed line from an inserted one, a deleted line
//! from a moved one, and a missing file from lines cut off the end of the one before.
//!
//! Memory is bounded whatever the files hold: a line is held only up to
//! [`MAX_LINE_BYTES`], the longest jwtguard writes; a longer one is not jwtguard's, and its
//! bytes are skipped, never held ([`Lines`]).

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{MAX_LINE_BYTES, SealReason};
use crate::seal::{Key, LineMac, Tag, VerificationKey};

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

mod check;
mod lines;

use lines::{Line, Lines};
#[cfg(test)]
pub(crate) mod tests;
