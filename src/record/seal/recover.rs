//! Taking up the lines after the chain's state: a writer killed between its write and its
//! update of the state leaves lines the next writer must walk and vouch for.

use std::io;
use std::os::unix::fs::FileExt as _;

use super::chain::{Chain, FileState};
use super::sealer::{Dest, Sealer};
use super::{Key, LineMac, Tag, line_hash};
use crate::event::{LogTampered, SealReason};
use crate::record::sealed;

/// One line of a sealed batch: where it ends in the input and in the output.
pub(super) struct Out {
    pub(super) input_end: usize,
    pub(super) out_end: usize,
    pub(super) hash: Tag,
}

/// [`Sealer::recover`]'s walk over the lines after the chain's state.
pub(super) struct Walk {
    /// The epoch of the next line, its key and MAC; `moved` once a verified seal line
    /// moved them on.
    pub(super) epoch: u64,
    pub(super) key: Key,
    pub(super) mac: LineMac,
    pub(super) moved: bool,
    /// The last line taken (sequence number, tag), and where it ends in the bytes read.
    pub(super) taken: Option<(u64, Tag)>,
    pub(super) taken_end: usize,
    /// With the state unknown and nothing taken yet: what the last line claims to be.
    pub(super) claim: Option<(u64, Tag)>,
    /// A seal line that ended the epoch before the key held, waiting for the line after
    /// it: (sequence number, tag, when its epoch began).
    pub(super) held: Option<(u64, Tag, u64)>,
    /// Whether a seal line may still be held (once, when the key file is past the state).
    pub(super) gone_key: bool,
    /// When the epoch of the last verified epoch change began (seconds).
    pub(super) began: Option<u64>,
    /// The sequence number of the last verified file seal line.
    pub(super) file_first: Option<u64>,
}

impl Walk {
    /// Takes `line` (without its newline; it ends at `end` in the bytes read) into the
    /// chain if it verifies. Returns false for a line that does not, after the chain
    /// (the state known, or a line taken): there the chain stops.
    pub(super) fn line(&mut self, line: &[u8], end: usize) -> bool {
        let sealed = sealed::split_seal(line);
        let seal = sealed.as_ref().and_then(|s| sealed::seal_fields(s.covered));
        let began = || {
            sealed::timestamp(line)
                .and_then(crate::time::parse_timestamp)
                .map_or(0, |ms| ms / 1000)
        };
        let base = self
            .held
            .map(|(sequence, hash, _)| (sequence, hash))
            .or(self.taken)
            .or(self.claim);
        let follows = |s: &sealed::Sealed| {
            base.is_some_and(|(sequence, _)| sequence.checked_add(1) == Some(s.sequence))
        };
        let verified = match (&sealed, base) {
            (Some(s), Some((_, hash))) => {
                follows(s)
                    && line_hash(&mut self.mac, &hash, s.sequence, s.covered) == s.hash
                    // Only a writer with this key MACs a line; its epoch change is the next.
                    && seal.as_ref().is_none_or(|f| {
                        !f.reason.changes_epoch() || f.epoch == self.epoch + 1
                    })
            }
            _ => false,
        };
        if let (true, Some(s)) = (verified, &sealed) {
            if let Some((_, _, began)) = self.held.take() {
                self.began = Some(began);
            }
            if let Some(seal) = &seal {
                if seal.reason.changes_epoch() {
                    self.key = self.key.next();
                    self.mac = self.key.line_mac();
                    self.epoch += 1;
                    self.moved = true;
                    self.began = Some(began());
                }
                if seal.reason == SealReason::File {
                    self.file_first = Some(s.sequence);
                }
            }
            self.taken = Some((s.sequence, s.hash));
            self.taken_end = end;
            return true;
        }
        if self.held.is_some() {
            return false;
        }
        if let (true, Some(s), Some(seal), Some((_, hash))) = (self.gone_key, &sealed, &seal, base)
            && seal.reason.changes_epoch()
            && seal.epoch == self.epoch
            && seal.previous == hash
            && follows(s)
        {
            self.gone_key = false;
            self.held = Some((s.sequence, s.hash, began()));
            return true;
        }
        if self.taken.is_some() {
            return false;
        }
        // The state unknown: a line of an earlier epoch (or of another key), before the
        // chain this key can verify.
        self.claim = sealed.map(|s| (s.sequence, s.hash));
        true
    }
}

impl Sealer {
    /// Takes up the lines after the chain's state: a writer killed between its write and
    /// its state update left them (or, when the state is unknown, the end of the file
    /// holds the chain). Only lines that verify with this process's key (and the keys of
    /// the epochs they begin) are taken; the first line after them that does not is
    /// recorded ([`LogTampered`], once) and left in place with all that follows, and the
    /// chain goes on from the last line that verified. A torn last line after verified
    /// lines is cut (the dead writer's). Returns the file's length now.
    ///
    /// `recorded_epoch` is the epoch the state held: when the key file had moved past it
    /// (the dead writer's epoch change reached the key file, not the state), the seal line
    /// that ended that epoch is MACed with a key no longer here; it is taken only if the
    /// line after it verifies with the current key, and so vouches for its sequence number
    /// and tag.
    pub(super) fn recover(
        &mut self,
        dest: &mut dyn Dest,
        chain: &mut Chain,
        file: FileState,
        same: bool,
        recorded_epoch: u64,
    ) -> io::Result<u64> {
        const WINDOW: u64 = 4 << 20;
        let Some(reader) = dest.reopen_for_reading(file.dev, file.ino) else {
            return Ok(file.len);
        };
        let from = if same {
            chain.log.2
        } else {
            file.len.saturating_sub(WINDOW)
        };
        let to = file.len.min(from + WINDOW);
        let mut bytes = vec![0; (to - from) as usize];
        reader.read_exact_at(&mut bytes, from)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut walk = Walk {
            epoch: self.epoch,
            key: Key(self.key.0),
            mac: self.mac.clone(),
            moved: false,
            taken: same.then_some((chain.sequence, chain.hash)),
            taken_end: 0,
            claim: None,
            held: None,
            gone_key: same && recorded_epoch < self.epoch,
            began: None,
            file_first: None,
        };
        let mut start = 0;
        if !same && from > 0 {
            // Probably the end of a line.
            start = bytes[..whole]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        }
        let mut foreign = false;
        while start < whole {
            let end = start + memchr::memchr(b'\n', &bytes[start..whole]).expect("a newline");
            if !walk.line(&bytes[start..end], end + 1) {
                foreign = true;
                break;
            }
            start = end + 1;
        }
        // A seal line held for the line after it, and none came.
        foreign |= walk.held.is_some();
        if let Some((sequence, hash)) = walk.taken {
            chain.sequence = sequence;
            chain.hash = hash;
        }
        if let Some(first) = walk.file_first {
            chain.file_first = first;
        }
        if let Some(began) = walk.began {
            chain.began = began;
        }
        if walk.moved {
            // Verified epoch changes: the dead writer's key file update, done for it.
            chain.epoch = walk.epoch;
            self.take_key(walk.epoch, Key(walk.key.0), walk.epoch)?;
        }
        let taken_end = from + walk.taken_end as u64;
        let len = if foreign || (same && to < file.len) {
            // Lines that do not verify: left in place for whoever investigates, and
            // recorded. A line of them without its newline is not cut: the next batch
            // begins with one.
            self.tampered = Some(LogTampered {
                verified: walk.taken.map_or(0, |(sequence, _)| sequence),
                offset: taken_end,
                bytes: file.len - taken_end,
                cut: false,
            });
            let mut last = [0];
            self.newline_first =
                reader.read_exact_at(&mut last, file.len - 1).is_ok() && last[0] != b'\n';
            file.len
        } else if same && whole < bytes.len() {
            // A torn line the dead writer left: not part of the chain. Cut, and said so
            // (appended bytes without a newline would go without a trace otherwise).
            let len = from + whole as u64;
            dest.truncate(len)?;
            self.tampered = Some(LogTampered {
                verified: chain.sequence,
                offset: len,
                bytes: file.len - len,
                cut: true,
            });
            len
        } else {
            file.len
        };
        if walk.taken.is_some() {
            chain.log = (file.dev, file.ino, len);
        }
        Ok(len)
    }
}
