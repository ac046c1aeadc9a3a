//! The sealing key file: the current epoch, its key, the key's name and when it was
//! made; replaced whole (write, sync, rename, sync the directory) as the key moves on.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::{Key, MAX_EPOCH, UNDATED_KEY_CREATED, erase};
use crate::event;
use crate::record::sealed;

/// Writes a key file at `epoch` with `key` (tests: a key file of a later epoch).
#[cfg(test)]
pub(crate) fn write_key_file(
    path: &Path,
    epoch: u64,
    key: Key,
    id: String,
    created: u64,
) -> io::Result<()> {
    KeyFile {
        epoch,
        key,
        id,
        created,
    }
    .replace(path)
}

/// The key file: the current epoch and its key, the key's name, and when it was made.
pub(super) struct KeyFile {
    pub(super) epoch: u64,
    pub(super) key: Key,
    pub(super) id: String,
    /// Seconds since the Unix epoch; [`UNDATED_KEY_CREATED`] for a file that does not say.
    pub(super) created: u64,
}

/// The key file's first line. `key 2`: lines tagged with `F` (`seal 3` labels). A file
/// that begins `jwtguard sealing key 1` is refused: its chain's lines carry HMAC tags,
/// which this jwtguard neither makes nor checks, and going on with it would leave a log
/// that verifies under no version.
pub(super) const KEY_FILE_HEAD: &str =
    "jwtguard sealing key 2 (keep it on this host, mode 0600; jwtguard rewrites it every epoch)";

/// What an earlier jwtguard's key files began with.
pub(super) const OLD_KEY_FILE_HEAD: &str = "jwtguard sealing key 1 ";

impl KeyFile {
    pub(super) fn text(&self) -> String {
        let mut text = format!(
            "{KEY_FILE_HEAD}\nepoch {}\nid {}\ncreated {}\nkey ",
            self.epoch, self.id, self.created
        );
        event::push_hex(&self.key.0, &mut text);
        text.push('\n');
        text
    }

    pub(super) fn read(path: &Path) -> io::Result<KeyFile> {
        let mut text = String::new();
        File::open(path)?.take(4096).read_to_string(&mut text)?;
        let parsed = KeyFile::parse(&text);
        let old = text.starts_with(OLD_KEY_FILE_HEAD);
        erase_string(&mut text);
        parsed.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                if old {
                    "a sealing key file of an earlier jwtguard, whose line tags this one does not make: create a new key with seal-init, and start a new log file"
                } else {
                    "not a jwtguard sealing key file"
                },
            )
        })
    }

    pub(super) fn parse(text: &str) -> Option<KeyFile> {
        let mut lines = text.lines();
        if lines.next()? != KEY_FILE_HEAD {
            return None;
        }
        let epoch = lines.next()?.strip_prefix("epoch ")?.parse().ok()?;
        let id = lines.next()?.strip_prefix("id ")?.to_owned();
        let mut line = lines.next()?;
        // Key files written before creation times have none.
        let created = match line.strip_prefix("created ") {
            Some(created) => {
                line = lines.next()?;
                created.parse().ok()?
            }
            None => UNDATED_KEY_CREATED,
        };
        let key = Key(sealed::parse_hex(line.strip_prefix("key ")?.as_bytes())?);
        (id.len() == 16 && (1..=MAX_EPOCH).contains(&epoch)).then_some(KeyFile {
            epoch,
            key,
            id,
            created,
        })
    }

    /// Replaces the file at `path` atomically: a temporary file beside it, `fsync`,
    /// `rename`, `fsync` of the directory.
    pub(super) fn replace(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("seal")
        ));
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut text = self.text();
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        erase_string(&mut text);
        written?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    }
}

pub(super) fn erase_string(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    erase(&mut bytes);
}

pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
