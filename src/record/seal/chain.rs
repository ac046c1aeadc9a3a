//! Where the chain stands (`KEYFILE.state`, shared by every process that seals), and the
//! identity of the file the log is written to.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::Tag;
use crate::event;
use crate::record::sealed;

/// Where the chain stands: kept in `KEYFILE.state`, shared by every process that seals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The key's name: a state left by another key is not continued.
    pub(super) key_id: String,
    pub(super) epoch: u64,
    /// When the epoch began, seconds since the Unix epoch.
    pub(super) began: u64,
    /// The sequence number of the last line written (0: none yet).
    pub(super) sequence: u64,
    /// The tag of the last line written (zeros: none yet).
    pub(super) hash: Tag,
    /// The file the last line went to (device, inode) and its length after it; zeros
    /// for a stream, or when unknown.
    pub(super) log: (u64, u64, u64),
    /// The sequence number of the first line in that file.
    pub(super) file_first: u64,
}

impl Chain {
    pub(super) fn fresh(key_id: &str, epoch: u64) -> Chain {
        Chain {
            key_id: key_id.to_owned(),
            epoch,
            began: 0,
            sequence: 0,
            hash: [0; 16],
            log: (0, 0, 0),
            file_first: 0,
        }
    }

    pub(super) fn text(&self, out: &mut String) {
        // Fixed width, so that each state is written over the last in place.
        let number = |out: &mut String, n: u64| {
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(n);
            out.extend(std::iter::repeat_n('0', 20 - digits.len()));
            out.push_str(digits);
        };
        out.clear();
        out.push_str("jwtguard seal state 2\nkey ");
        out.push_str(&self.key_id);
        for (name, n) in [
            ("epoch", self.epoch),
            ("began", self.began),
            ("sequence", self.sequence),
        ] {
            out.push('\n');
            out.push_str(name);
            out.push(' ');
            number(out, n);
        }
        out.push_str("\nhash ");
        event::push_hex(&self.hash, out);
        out.push_str("\nlog");
        for n in [self.log.0, self.log.1, self.log.2] {
            out.push(' ');
            number(out, n);
        }
        out.push_str("\nfile ");
        number(out, self.file_first);
        out.push('\n');
    }

    pub(super) fn parse(text: &str) -> Option<Chain> {
        let mut lines = text.lines();
        if lines.next()? != "jwtguard seal state 2" {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
        let key_id = field("key")?.to_owned();
        let epoch = field("epoch")?.parse().ok()?;
        let began = field("began")?.parse().ok()?;
        let sequence = field("sequence")?.parse().ok()?;
        let hash = sealed::parse_hex(field("hash")?.as_bytes())?;
        let mut log = field("log")?.split(' ').map(|n| n.parse::<u64>().ok());
        let log = (log.next()??, log.next()??, log.next()??);
        let file_first = field("file")?.parse().ok()?;
        Some(Chain {
            key_id,
            epoch,
            began,
            sequence,
            hash,
            log,
            file_first,
        })
    }
}

/// A file the log is written to, as it stands before a write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileState {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
}

/// The chain state's path: `KEYFILE.state`.
pub(crate) fn state_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

/// A file's identity and length, for [`Dest::file`].
pub(crate) fn file_state(meta: &std::fs::Metadata) -> Option<FileState> {
    meta.file_type().is_file().then(|| FileState {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
    })
}
