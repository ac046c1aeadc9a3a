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

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use hmac::{Hmac, KeyInit as _, Mac as _};
use polyval::Polyval;
use polyval::universal_hash::UniversalHash as _;
use sha2::Sha256;

use super::sealed;
use crate::Error;
use crate::event;

pub use crate::verify::{Report, verify};

mod chain;
mod key_file;
mod recover;
mod sealer;
#[cfg(test)]
mod writer_tests;

#[cfg(test)]
pub(crate) use chain::state_path;
pub(crate) use chain::{FileState, file_state};
#[cfg(test)]
pub(crate) use key_file::write_key_file;
use key_file::{KeyFile, erase_string, sync_dir};
use sealer::now_secs;
pub(crate) use sealer::{Dest, Sealer};

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

#[cfg(test)]
mod tests {
    use super::chain::Chain;
    use super::*;
    use crate::LogFormat;

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
