//! One line at a time: the chain moved on, or where and how it broke, told apart by
//! reading the files again.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::lines::{find_sequence, next_line};
use super::{Break, Chain, Fault, GRACE_SECONDS, Pos, Verifier};
use crate::event::SealReason;
use crate::record::sealed;
use crate::seal::{EPOCH_SECONDS, MAX_EPOCH, Tag, line_hash, max_epoch};

impl Verifier<'_> {
    /// Checks one line (without its newline) and moves the chain on.
    pub(super) fn line(&mut self, line: &[u8], pos: Pos) -> Result<(), Fault> {
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
    pub(super) fn diagnose(
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
    pub(super) fn finish(&mut self, last: Option<Pos>, now: SystemTime) {
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
