//! Sealing the security log: forward-secure MACs that chain every line to the one before.
//!
//! With a sealing key ([`SecurityLog::sealed`](crate::SecurityLog::sealed)), every line
//! jwtguard writes ends with `event.sequence` (1, 2, 3, ... over the whole life of the
//! key, across restarts and files) and `event.hash`: a 128-bit MAC (32 hex digits), under
//! keys derived from the current epoch's key, of the sequence number, the previous line's
//! tag and the line's bytes before the seal. Change, remove, add or move a line and the
//! chain breaks there; [`verify`] says where and how.
//!
//! # The MAC of a line
//!
//! ```text
//! tag = F(P, seq as 8 bytes big-endian || previous tag || POLYVAL(H, line) || label)[..16]
//! POLYVAL(H, line) = POLYVAL over the line zero-padded to a multiple of 16 bytes, then one length
//!                    block (the line's length in bytes, 8 bytes little-endian, 8 zeros)
//! F(P, block)      = the SHA-256 compression function, chaining value P (8 words,
//!                    big-endian), on one 64-byte block; label = "jwtguard seal 3 line tag"
//! ```
//!
//! `H` (16 bytes) and `P` (32 bytes) are HMAC-SHA256 of the epoch's key under two labels
//! of their own. Every line is MACed so, seal lines included (a seal line that ends an
//! epoch is MACed with the ending epoch's `H` and `P`, as the lines before it).
//!
//! Why this shape. POLYVAL (RFC 8452) is a polynomial hash over GF(2^128): two different
//! lines of at most `L` blocks, length block included, give the same value for at most `L`
//! of the 2^128 keys (the length block makes the encoding injective: `ab` and `ab\0` pad
//! to the same block but differ in their length block). It runs at a carry-less
//! multiplication per 16 bytes (PCLMULQDQ), where HMAC-SHA256 over the whole line took
//! 11 SHA-256 blocks for a 537-byte line. `F` (a PRF) then takes 40 bytes whatever the
//! line: one SHA-256 block. A forger who changes a line without changing its tag needs a
//! POLYVAL collision under an `H` it never sees (only PRF outputs are in the log): at
//! most `L / 2^128` a try; any other forgery is a guess of 128 bits.
//!
//! `F` is SHA-256's compression function keyed through its chaining value: the
//! assumption that this is a PRF is the one HMAC's security proof rests on (Bellare,
//! "New Proofs for NMAC and HMAC", 2006: that SHA-256's compression function, keyed
//! through its chaining value, is a PRF). Every input is one block of the same shape, so there is no length
//! to extend; HMAC would add a second block (its outer hash) to every line, and its
//! padding handling, for nothing here.
//!
//! The usual Wegman-Carter-Shoup MAC, `POLYVAL(H, ...) XOR PRF(P, seq || previous tag)`,
//! costs the same but needs `(seq, previous tag)` never to be MACed twice in an epoch with
//! different lines: two such tags give an equation in `H`, and with `H` every line of the
//! epoch can be changed without changing its tag. The chain can repeat them: a writer
//! killed in the middle of a line leaves it torn, the next writer cuts it off (the
//! recovery below) and seals its start-up line with the same sequence number, the same
//! previous tag and the same epoch key; if the torn line held its whole tag (in text, all
//! but the newline) and a copy of it was kept (a log shipper, a reader), both tags are out.
//! With POLYVAL inside the PRF, such a repeat only shows two unrelated PRF outputs.
//!
//! # Keys
//!
//! [`init`] draws a random key `K0`, which it returns as the [`VerificationKey`] (to be
//! kept off the host), and writes `K1`, derived from it, to the key file. Key `K(n+1)` is
//! HMAC-SHA256(`Kn`, a label): one-way, so the key file at epoch `n` cannot give the key
//! of any earlier epoch. An epoch ends when a process opens the log (start-up), when a
//! process writes its shutdown event, and 15 minutes after it began: a seal line
//! (`event.action=seal`) is written, sealed with the ending epoch's key, then the key file
//! is rewritten with the next key (a temporary file, `fsync`, `rename`) and the old key is
//! zeroed in memory. The lines of epoch `n` are sealed with MAC keys derived from `Kn`
//! (`H` and `P` above; never `Kn` itself, never the token secret). When the epoch moves
//! on, `Kn`, `H` and `P`, and POLYVAL's state (`H` and its powers) are zeroed.
//!
//! # Several processes, one chain
//!
//! The chain's state (epoch, sequence, last hash, the log file it is in) lives in
//! `KEYFILE.state`, beside the key file. Each batch of lines is sealed and written under
//! an exclusive `flock` of that file: read the state, seal, one `write(2)`, write the
//! state back. So any number of processes (workers being replaced, a supervisor) append
//! to one linear chain, each still with one write per batch. The state says which file
//! the chain is in: a process still writing to a file that logrotate moved away looks the
//! path up again before it writes. A new file starts with a seal line (`file`) that names
//! the previous file's last hash. Each process must open the key file itself (build its own
//! sealed [`SecurityLog`](crate::SecurityLog)): a `flock` belongs to the open file, which a
//! child forked without `exec` would share with its parent (jwtguard opens it close-on-exec).
//!
//! A writer killed between its write and its state update leaves lines the state does
//! not know: the next writer finds the file longer than the state says, takes the chain
//! from those lines, and cuts a torn last line.
//!
//! # Never acting on a line it has not verified
//!
//! Whoever can write the log but not read the key file can append anything. So the lines
//! after the state are taken only as far as they verify, each with the MAC of the epoch
//! it is in: the key held (the state's epoch, or the key file's if it is ahead), then, at
//! each verified seal line that ends an epoch, the next (one derivation each, for lines
//! only a key holder can make). One exception, for a writer killed after its epoch change
//! reached the key file and not the state: the seal line that ended the earlier epoch,
//! whose key is gone, is taken if the line after it verifies with the current key (that
//! line's MAC covers the seal line's sequence number and tag). The first line that does
//! not verify stops the chain there: it and everything after it stay in the file, one
//! tampering event (`event.reason=log_tampered`, with where the bytes begin and how
//! many there are) goes out with the next batch, and the chain goes on from the last line
//! that verified; verify-log then reports the foreign line. Neither the epoch, nor the
//! sequence number, nor the key file ever follows what such a line claims.
//!
//! Epochs are bounded by the clock: the key file and the verification key say when the key
//! was made, and a key made at `c` is at epoch `1 + (t - c) / 60 + 1024` at most at time
//! `t` (`max_epoch`: one a minute on average, plus a burst of restarts). A start or a
//! shutdown at the bound makes no epoch change (the 15-minute mark will, the bound having
//! grown by then); verify-log judges a first line claiming more at once, without deriving
//! a key; and no lock is held while more than 4 keys are derived.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit as _, Mac as _};
use polyval::Polyval;
use polyval::universal_hash::UniversalHash as _;
use sha2::Sha256;

use super::sealed;
use crate::event::{self, Event, LogTampered, SealEvent, SealReason};
use crate::{Error, LogFormat};

pub use crate::verify::{Report, verify};

/// How long an epoch lasts at most, in seconds: 15 minutes.
pub const EPOCH_SECONDS: u64 = 900;

/// Reads a UTC time as the log writes it (`2026-11-27T21:42:09.166Z`, the fraction
/// optional): milliseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Option<u64> {
    crate::time::parse_timestamp(text)
}

/// The highest epoch number accepted whatever the key's age (2^27: 3,800 years of
/// 15-minute epochs): [`verify`] derives the key of a log's first epoch from the
/// verification key one epoch at a time, and [`max_epoch`] bounds it first.
pub(crate) const MAX_EPOCH: u64 = 1 << 27;

/// Epochs a key may have begun beyond one a minute of its age ([`max_epoch`]): room for a
/// burst of restarts (each start and each shutdown begins an epoch).
const EPOCH_BURST: u64 = 1024;

/// The creation time taken for a key that does not say when it was made (a key file or a
/// verification key of a jwtguard before creation times, 64 hex digits alone):
/// 2026-11-01T00:00:00Z, before the first jwtguard that sealed.
pub(crate) const UNDATED_KEY_CREATED: u64 = 1_793_491_200;

/// The highest epoch a key made at `created` can have reached at `now` (both seconds since
/// the Unix epoch): one a minute on average since it was made, plus [`EPOCH_BURST`], plus
/// its first. A chain moves on every 15 minutes and at every start and shutdown: a writer
/// never moves it past this bound (a start or shutdown at the bound seals no epoch change;
/// the next 15-minute mark does), so a line that claims more is a forgery, and the keys
/// anyone derives to check or follow a claim are bounded by the clock.
pub(crate) fn max_epoch(created: u64, now: u64) -> u64 {
    (now.saturating_sub(created) / 60)
        .saturating_add(1 + EPOCH_BURST)
        .min(MAX_EPOCH)
}

/// How many epochs the chain's state may be ahead of the key file: a writer that could
/// not rewrite the key file after an epoch change leaves it one behind, and the next
/// writers rewrite it. The keys between are derived under the chain's lock.
const MAX_CATCH_UP: u64 = 4;

/// The tag of a line, `event.hash`: 128 bits.
pub(crate) type Tag = [u8; 16];

/// The MAC of one epoch's lines, keyed: POLYVAL under `H`, then `F` under `P` (see
/// [`line_hash`]). POLYVAL is used in place and reset after each line. Dropping it zeroes
/// `H` and its powers (polyval's `zeroize` feature) and `P`: best effort, as for [`Key`]
/// (copies made by moves and in SHA-256's working registers are not).
#[derive(Clone)]
pub(crate) struct LineMac {
    hash: Polyval,
    /// `P`, as SHA-256's chaining value.
    prf: [u32; 8],
}

impl Drop for LineMac {
    fn drop(&mut self) {
        self.prf.fill(0);
        std::hint::black_box(&mut self.prf);
    }
}

/// The last 24 bytes of the block `F` reads for a line's tag.
const TAG_LABEL: &[u8; 24] = b"jwtguard seal 3 line tag";

/// The key of one epoch, zeroed when dropped (best effort: copies the compiler made on
/// the way are not).
pub(crate) struct Key(pub(crate) [u8; 32]);

impl Key {
    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// The key of the next epoch.
    pub(crate) fn next(&self) -> Key {
        Key(self.derive(b"jwtguard seal: the next epoch's key"))
    }

    /// The MAC of this epoch's lines, keyed with `H` and `P`, both derived from this key
    /// (never the key itself) under labels of their own.
    pub(crate) fn line_mac(&self) -> LineMac {
        let mut h = self.derive(b"jwtguard seal 3: the hash key of the lines");
        let mut p = self.derive(b"jwtguard seal 3: the PRF key of the lines");
        let mut h16 = [0; 16];
        h16.copy_from_slice(&h[..16]);
        let mut prf = [0; 8];
        for (word, bytes) in prf.iter_mut().zip(p.chunks_exact(4)) {
            *word = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
        }
        let mac = LineMac {
            hash: Polyval::new(&h16.into()),
            prf,
        };
        erase(&mut h);
        erase(&mut h16);
        erase(&mut p);
        mac
    }

    /// The sealing key's name, from its first epoch's key: 16 hex digits.
    pub(crate) fn id(&self) -> String {
        let mut id = String::new();
        event::push_hex(&self.derive(b"jwtguard seal: the key's name")[..8], &mut id);
        id
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        erase(&mut self.0);
    }
}

fn erase(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// `event.hash` of a line: the first 16 bytes of `F` under `P` (SHA-256's compression
/// function, `P` its chaining value) of one block: the sequence number (8 bytes,
/// big-endian), the previous line's tag (16 bytes), the POLYVAL under `H` of the covered
/// part of the line, zero-padded to a multiple of 16 bytes, followed by a length block (its length in
/// bytes, 8 bytes little-endian, then 8 zero bytes), and [`TAG_LABEL`].
///
/// One SHA-256 block a line, whatever the line's length; the line's bytes go through
/// POLYVAL only, one carry-less multiplication per 16 bytes.
pub(crate) fn line_hash(mac: &mut LineMac, previous: &Tag, sequence: u64, covered: &[u8]) -> Tag {
    mac.hash.update_padded(covered);
    let mut length = [0; 16];
    length[..8].copy_from_slice(&(covered.len() as u64).to_le_bytes());
    mac.hash.update(&[length.into()]);
    let digest = mac.hash.finalize_reset();
    let mut block = [0; 64];
    block[..8].copy_from_slice(&sequence.to_be_bytes());
    block[8..24].copy_from_slice(previous);
    block[24..40].copy_from_slice(&digest);
    block[40..].copy_from_slice(TAG_LABEL);
    let mut state = mac.prf;
    sha2::block_api::compress256(&mut state, &[block]);
    let mut tag = [0; 16];
    for (bytes, word) in tag.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    tag
}

/// The key that [`verify`] checks a sealed log with: the first key of the chain, from
/// which every epoch's key is derived, and when it was made. Whoever holds it can seal
/// lines of any epoch: keep it off the host that writes the log.
///
/// Written and read as 64 hex digits, a `-` and the creation time in seconds since the
/// Unix epoch (`0f1e...c982-1796594092`): the time bounds the epoch a line may claim
/// (see the module docs). The 64 hex digits alone (what earlier versions printed) are read as a
/// key made on 2026-11-01, before the first jwtguard that sealed: as safe, a looser bound.
#[derive(Clone)]
pub struct VerificationKey {
    pub(crate) secret: [u8; 32],
    /// Seconds since the Unix epoch.
    pub(crate) created: u64,
}

impl VerificationKey {
    /// The first epoch's sealing key.
    pub(crate) fn first(&self) -> Key {
        Key(self.secret).next()
    }
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerificationKey([redacted])")
    }
}

impl std::fmt::Display for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hex = String::new();
        event::push_hex(&self.secret, &mut hex);
        write!(f, "{hex}-{}", self.created)
    }
}

impl std::str::FromStr for VerificationKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (hex, created) = match s.trim().split_once('-') {
            Some((hex, created)) => (hex, created.parse().ok()),
            None => (s.trim(), Some(UNDATED_KEY_CREATED)),
        };
        sealed::parse_hex(hex.as_bytes())
            .zip(created)
            .map(|(secret, created)| VerificationKey { secret, created })
            .ok_or_else(|| {
                "a verification key is 64 lower-case hex digits, a '-' and a number, as seal-init prints it".into()
            })
    }
}

impl Drop for VerificationKey {
    fn drop(&mut self) {
        erase(&mut self.secret);
    }
}

/// Creates the sealing key file at `path` (mode 0600; an existing file is never
/// overwritten) and returns the verification key, which is stored nowhere.
///
/// # Errors
///
/// [`Error::SealKey`] when the file exists or cannot be written, [`Error::Random`] when
/// the system gives no random bytes.
pub fn init(path: &Path) -> Result<VerificationKey, Error> {
    let mut seed = [0; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    let verification = VerificationKey {
        secret: seed,
        created: now_secs(),
    };
    erase(&mut seed);
    let first = verification.first();
    let key_file = KeyFile {
        epoch: 1,
        id: first.id(),
        key: first,
        created: verification.created,
    };
    let fail = |source| Error::SealKey {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    let mut text = key_file.text();
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    erase_string(&mut text);
    written.map_err(fail)?;
    sync_dir(path).map_err(fail)?;
    Ok(verification)
}

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
struct KeyFile {
    epoch: u64,
    key: Key,
    id: String,
    /// Seconds since the Unix epoch; [`UNDATED_KEY_CREATED`] for a file that does not say.
    created: u64,
}

/// The key file's first line. `key 2`: lines tagged with `F` (`seal 3` labels). A file
/// that begins `jwtguard sealing key 1` is refused: its chain's lines carry HMAC tags,
/// which this jwtguard neither makes nor checks, and going on with it would leave a log
/// that verifies under no version.
const KEY_FILE_HEAD: &str =
    "jwtguard sealing key 2 (keep it on this host, mode 0600; jwtguard rewrites it every epoch)";

/// What an earlier jwtguard's key files began with.
const OLD_KEY_FILE_HEAD: &str = "jwtguard sealing key 1 ";

impl KeyFile {
    fn text(&self) -> String {
        let mut text = format!(
            "{KEY_FILE_HEAD}\nepoch {}\nid {}\ncreated {}\nkey ",
            self.epoch, self.id, self.created
        );
        event::push_hex(&self.key.0, &mut text);
        text.push('\n');
        text
    }

    fn read(path: &Path) -> io::Result<KeyFile> {
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

    fn parse(text: &str) -> Option<KeyFile> {
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
    fn replace(&self, path: &Path) -> io::Result<()> {
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

fn erase_string(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    erase(&mut bytes);
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Where the chain stands: kept in `KEYFILE.state`, shared by every process that seals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The key's name: a state left by another key is not continued.
    key_id: String,
    epoch: u64,
    /// When the epoch began, seconds since the Unix epoch.
    began: u64,
    /// The sequence number of the last line written (0: none yet).
    sequence: u64,
    /// The tag of the last line written (zeros: none yet).
    hash: Tag,
    /// The file the last line went to (device, inode) and its length after it; zeros
    /// for a stream, or when unknown.
    log: (u64, u64, u64),
    /// The sequence number of the first line in that file.
    file_first: u64,
}

impl Chain {
    fn fresh(key_id: &str, epoch: u64) -> Chain {
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

    fn text(&self, out: &mut String) {
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

    fn parse(text: &str) -> Option<Chain> {
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

/// One line of a sealed batch: where it ends in the input and in the output.
struct Out {
    input_end: usize,
    out_end: usize,
    hash: Tag,
}

/// [`Sealer::recover`]'s walk over the lines after the chain's state.
struct Walk {
    /// The epoch of the next line, its key and MAC; `moved` once a verified seal line
    /// moved them on.
    epoch: u64,
    key: Key,
    mac: LineMac,
    moved: bool,
    /// The last line taken (sequence number, tag), and where it ends in the bytes read.
    taken: Option<(u64, Tag)>,
    taken_end: usize,
    /// With the state unknown and nothing taken yet: what the last line claims to be.
    claim: Option<(u64, Tag)>,
    /// A seal line that ended the epoch before the key held, waiting for the line after
    /// it: (sequence number, tag, when its epoch began).
    held: Option<(u64, Tag, u64)>,
    /// Whether a seal line may still be held (once, when the key file is past the state).
    gone_key: bool,
    /// When the epoch of the last verified epoch change began (seconds).
    began: Option<u64>,
    /// The sequence number of the last verified file seal line.
    file_first: Option<u64>,
}

impl Walk {
    /// Takes `line` (without its newline; it ends at `end` in the bytes read) into the
    /// chain if it verifies. Returns false for a line that does not, after the chain
    /// (the state known, or a line taken): there the chain stops.
    fn line(&mut self, line: &[u8], end: usize) -> bool {
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

/// A process's sealing: its copy of the current epoch's key, and the buffers of a batch.
/// Owned by the sink, used under its lock.
pub(crate) struct Sealer {
    key_path: PathBuf,
    /// `KEYFILE.state`: the chain, and the lock every writer takes.
    state: File,
    format: LogFormat,
    epoch: u64,
    key: Key,
    mac: LineMac,
    id: String,
    /// When the key was made (seconds since the Unix epoch): bounds its epochs.
    created: u64,
    /// An epoch change to make with the next write, until one is written (start-up).
    pending: Option<SealReason>,
    /// Lines found after the chain that do not verify, to record with the next write
    /// (once: until a write holds the event).
    tampered: Option<LogTampered>,
    /// The file ends in the middle of a line nobody of the chain wrote: the next batch
    /// starts with a newline, so that its first line stays whole.
    newline_first: bool,
    out: Vec<u8>,
    lines: Vec<Out>,
    /// The state as this process last wrote it (`text`), parsed: while the state file
    /// still holds those bytes, nobody else wrote, and this is the chain.
    text: String,
    last: Option<Chain>,
    /// The state file's length as last read.
    state_len: usize,
    /// How long a write waits for the lock before it fails; `None`: as long as it takes.
    lock_wait: Option<std::time::Duration>,
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

fn now_secs() -> u64 {
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
    fn lock(&self) -> io::Result<()> {
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

    fn write_locked(
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
    fn read_chain(&mut self) -> io::Result<Chain> {
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

    fn write_chain(&mut self, chain: &Chain) -> io::Result<()> {
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
    fn catch_up(&mut self, chain: &mut Chain) -> io::Result<()> {
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
    fn take_key(&mut self, mut epoch: u64, mut key: Key, to: u64) -> io::Result<()> {
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
    fn advance(&mut self, next: Key, chain: &mut Chain, now: u64) {
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
    fn recover(
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

    /// Builds the batch in `self.out`: the seal lines (a new file; an epoch change), then
    /// every line of `input`, sealed. Returns the next epoch's key when it changes.
    fn seal(
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
fn push(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_of_the_earlier_tags_is_refused_with_what_to_do() {
        let dir = std::env::temp_dir().join(format!("jwtguard-oldkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seal.key");
        let _ = std::fs::remove_file(&path);
        init(&path).unwrap();
        assert!(Sealer::open(&path, LogFormat::Json).is_ok());
        // The same file as an earlier jwtguard wrote it: only its first line differs.
        let text = std::fs::read_to_string(&path).unwrap();
        let old = text.replacen("jwtguard sealing key 2 ", "jwtguard sealing key 1 ", 1);
        assert_ne!(old, text);
        std::fs::write(&path, old).unwrap();
        let err = Sealer::open(&path, LogFormat::Json).unwrap_err();
        assert!(err.to_string().contains("earlier jwtguard"), "{err}");
        assert!(err.to_string().contains("seal-init"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_says_when_it_was_made_and_an_undated_one_is_taken_as_old() {
        let hex = "ab".repeat(32);
        let dated: VerificationKey = format!("{hex}-1796589567").parse().unwrap();
        assert_eq!((dated.secret, dated.created), ([0xab; 32], 1_796_589_567));
        assert_eq!(dated.to_string(), format!("{hex}-1796589567"));
        // What earlier versions printed: 64 hex digits alone.
        let undated: VerificationKey = hex.parse().unwrap();
        assert_eq!(undated.created, UNDATED_KEY_CREATED);
        for bad in [
            format!("{hex}-"),
            format!("{hex}-x"),
            format!("{hex}--1"),
            "ab".into(),
        ] {
            assert!(bad.parse::<VerificationKey>().is_err(), "{bad}");
        }
        // A key file of before creation times: the same, undated.
        let dir = std::env::temp_dir().join(format!("jwtguard-dated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seal.key");
        let _ = std::fs::remove_file(&path);
        let made = init(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(KeyFile::parse(&text).unwrap().created, made.created);
        let line = format!("created {}\n", made.created);
        assert!(text.contains(&line), "{text}");
        let undated = KeyFile::parse(&text.replace(&line, "")).unwrap();
        assert_eq!((undated.epoch, undated.created), (1, UNDATED_KEY_CREATED));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_state_text_parses_back_to_the_same_chain() {
        // A writer takes the state file's bytes, when they are the text it wrote, for the
        // chain it wrote: that holds only if the text says all of the chain.
        let chain = Chain {
            key_id: "0123456789abcdef".into(),
            epoch: 7,
            began: 1_790_000_000,
            sequence: 123_456,
            hash: [0xa5; 16],
            log: (2049, 77, 1 << 40),
            file_first: 99,
        };
        let mut text = String::new();
        chain.text(&mut text);
        assert_eq!(Chain::parse(&text), Some(chain));
    }

    #[test]
    fn the_tag_covers_the_length_the_sequence_the_previous_tag_and_the_epoch() {
        let key = VerificationKey {
            secret: [1; 32],
            created: 0,
        }
        .first();
        let mut mac = key.line_mac();
        let tag = |mac: &mut LineMac, previous: &Tag, sequence: u64, line: &[u8]| {
            line_hash(mac, previous, sequence, line)
        };
        let base = tag(&mut mac, &[0; 16], 1, b"ab");
        // Used in place and reset: the same input gives the same tag again.
        assert_eq!(tag(&mut mac, &[0; 16], 1, b"ab"), base);
        // Zero padding alone would make these two the same: the length block tells them apart.
        assert_ne!(tag(&mut mac, &[0; 16], 1, b"ab\0"), base);
        assert_ne!(
            tag(&mut mac, &[0; 16], 1, &[0; 16]),
            tag(&mut mac, &[0; 16], 1, b"")
        );
        assert_ne!(tag(&mut mac, &[0; 16], 2, b"ab"), base);
        assert_ne!(tag(&mut mac, &[1; 16], 1, b"ab"), base);
        assert_ne!(tag(&mut key.next().line_mac(), &[0; 16], 1, b"ab"), base);
        // A clone (verify-log's diagnosis) gives the same tags.
        assert_eq!(tag(&mut mac.clone(), &[0; 16], 1, b"ab"), base);
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// The median over 15 rounds of `f` run 50,000 times, in ns a call.
    fn median_ns(mut f: impl FnMut(u64)) -> f64 {
        let mut rounds: Vec<f64> = (0..15)
            .map(|_| {
                let start = std::time::Instant::now();
                for i in 0..50_000 {
                    f(i);
                }
                start.elapsed().as_nanos() as f64 / 50_000.0
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        rounds[7]
    }

    /// What one line's MAC costs (a 537-byte line, the size of a typical event), and its
    /// two parts: POLYVAL over the line, `F` (one SHA-256 block) after it. A
    /// measurement, not a check: `cargo test --release --lib -- --ignored line_hash_cost
    /// --nocapture`.
    #[test]
    #[ignore]
    fn line_hash_cost() {
        let key = VerificationKey {
            secret: [1; 32],
            created: 0,
        }
        .first();
        let mut mac = key.line_mac();
        let line = vec![b'x'; 537];
        let mut h = [0; 16];
        let all = median_ns(|i| h = line_hash(&mut mac, &h, i, &line));
        let poly = median_ns(|_| {
            mac.hash.update_padded(std::hint::black_box(&line));
            mac.hash.update(&[[0; 16].into()]);
            h.copy_from_slice(&mac.hash.finalize_reset());
        });
        let prf = median_ns(|i| {
            let mut block = [0; 64];
            block[..8].copy_from_slice(&i.to_be_bytes());
            let mut state = std::hint::black_box(mac.prf);
            sha2::block_api::compress256(&mut state, &[block]);
            h[..4].copy_from_slice(&state[0].to_be_bytes());
        });
        std::hint::black_box(h);
        println!(
            "line_hash of 537 bytes, median of 15: {all:.0} ns (POLYVAL {poly:.0} ns, F: one SHA-256 block {prf:.0} ns)"
        );
    }
}
