//! A sealed log verified, and every way of tampering with it found at its line.

use super::*;
use crate::LogFormat;
use crate::event::Event;
use crate::record::sealed;
use crate::seal::line_hash;
use crate::seal::{Sealer, VerificationKey, init};
use crate::sink::Sink;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the temp dir, removed when dropped.
pub(crate) struct Dir(pub(crate) PathBuf);

impl Dir {
    pub(crate) fn new() -> Dir {
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
pub(crate) fn batch(format: LogFormat, tag: &str, n: usize) -> String {
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
pub(crate) fn sealed_log(format: LogFormat) -> (Dir, VerificationKey, PathBuf) {
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

pub(crate) fn check(vk: &VerificationKey, files: &[&Path]) -> Report {
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
            text.contains("epochs 1 to 4: 1 start-up, 1 shutdown, 1 of 15 minutes; 1 file begun"),
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
