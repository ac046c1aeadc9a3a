//! Several writers of one sealed log, rotations and writers killed part-way: one chain
//! that verifies.

use super::*;
use crate::LogFormat;
use crate::event::SealReason;
use crate::record::verify::tests::{Dir, batch, check};
use crate::seal::{Sealer, VerificationKey, init};
use crate::sink::Sink;
use std::time::{SystemTime, UNIX_EPOCH};

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
        last.contains(r#""event.action":"seal","event.outcome":"success","event.reason":"epoch""#),
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
