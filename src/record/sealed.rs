//! The seal at the end of a written line: appended when sealing, found and parsed again
//! when verifying (`event.sequence`, `event.hash` and a seal event's own fields).

use super::event::{HEX, SealReason};

/// Appends the seal to `out`, which ends with the covered part of a line
/// ([`sealed_part`]): in JSON (`json`), `,"event.sequence":N,"event.hash":"HEX"}`, the
/// last fields and the closing brace; in text, ` event.sequence=N event.hash=HEX` after
/// `message`.
pub(crate) fn push_seal(out: &mut Vec<u8>, json: bool, sequence: u64, hash: &[u8; 16]) {
    let mut n = itoa::Buffer::new();
    let (sequence_key, hash_key, end): (&[u8], &[u8], &[u8]) = if json {
        (b",\"event.sequence\":", b",\"event.hash\":\"", b"\"}")
    } else {
        (b" event.sequence=", b" event.hash=", b"")
    };
    out.extend_from_slice(sequence_key);
    out.extend_from_slice(n.format(sequence).as_bytes());
    out.extend_from_slice(hash_key);
    let mut hex = [0; 32];
    for (pair, b) in hex.chunks_exact_mut(2).zip(hash) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    out.extend_from_slice(&hex);
    out.extend_from_slice(end);
}

/// The part of `line` (without its newline) that its seal covers, and whether it is
/// JSON: all of it but, in JSON, the closing brace.
pub(crate) fn sealed_part(line: &[u8]) -> (&[u8], bool) {
    match line.strip_suffix(b"}") {
        Some(covered) => (covered, true),
        None => (line, false),
    }
}

/// A sealed line taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Sealed<'a> {
    /// What the hash covers: the line before its seal (see [`push_seal`]).
    pub covered: &'a [u8],
    /// `event.sequence`.
    pub sequence: u64,
    /// `event.hash`: 32 hex digits.
    pub hash: [u8; 16],
}

/// Takes the seal off `line` (without its newline), or `None` when it has none: the
/// seal is parsed from the end, the last fields of the line in either encoding.
pub(crate) fn split_seal(line: &[u8]) -> Option<Sealed<'_>> {
    let (body, hex, json) = if let Some(body) = line.strip_suffix(b"\"}") {
        let (body, hex) = body.split_at_checked(body.len().checked_sub(32)?)?;
        (body.strip_suffix(b",\"event.hash\":\"")?, hex, true)
    } else {
        let (body, hex) = line.split_at_checked(line.len().checked_sub(32)?)?;
        (body.strip_suffix(b" event.hash=")?, hex, false)
    };
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (body, digits) = body.split_at(body.len() - digits);
    let covered = if json {
        body.strip_suffix(b",\"event.sequence\":")?
    } else {
        body.strip_suffix(b" event.sequence=")?
    };
    // The seal's form must be the line's: the MAC covers the body, not the seal, so a JSON
    // line with a text seal (no longer JSON to a reader) would verify otherwise.
    if covered.starts_with(b"{") != json {
        return None;
    }
    Some(Sealed {
        covered,
        sequence: parse_number(digits)?,
        hash: parse_hex(hex)?,
    })
}

/// A decimal number as jwtguard writes them: digits, no sign, no leading zero.
fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `2 * N` lower-case hex digits: `N` bytes.
pub(crate) fn parse_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The `@timestamp` at the start of a line of either encoding.
pub(crate) fn timestamp(line: &[u8]) -> Option<&str> {
    let rest = line
        .strip_prefix(b"{\"@timestamp\":\"")
        .or_else(|| line.strip_prefix(b"@timestamp="))?;
    std::str::from_utf8(rest.get(..24)?).ok()
}

/// What a seal line says, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealFields {
    pub reason: SealReason,
    pub epoch: u64,
    pub previous: [u8; 16],
    pub previous_file: u64,
    pub key_id: String,
}

/// The seal fields of `covered` (a sealed line's covered part), when it is a seal line:
/// its `event.action` must be `seal`, right after the timestamp and the level. Every
/// field of a seal line is jwtguard's own, so they are simply looked up by name.
pub(crate) fn seal_fields(covered: &[u8]) -> Option<SealFields> {
    let ts = timestamp(covered)?.len();
    let (json, rest) = match covered.strip_prefix(b"{\"@timestamp\":\"") {
        Some(rest) => (
            true,
            rest.get(ts..)?
                .strip_prefix(b"\",\"log.level\":\"info\",\"event.action\":\"seal\",")?,
        ),
        None => (
            false,
            covered
                .strip_prefix(b"@timestamp=")?
                .get(ts..)?
                .strip_prefix(b" log.level=info event.action=seal ")?,
        ),
    };
    let field = |name: &str| -> Option<&[u8]> {
        let key = if json {
            format!("\"{name}\":")
        } else {
            format!(" {name}=")
        };
        let at = find(rest, key.as_bytes())? + key.len();
        let value = &rest[at..];
        let value = if json && value.first() == Some(&b'"') {
            let value = &value[1..];
            &value[..value.iter().position(|&b| b == b'"')?]
        } else {
            let end = value
                .iter()
                .position(|&b| b == b' ' || b == b',')
                .unwrap_or(value.len());
            &value[..end]
        };
        Some(value)
    };
    let reason = SealReason::from_code(field("event.reason")?)?;
    Some(SealFields {
        reason,
        epoch: parse_number(field("jwtguard.seal.epoch")?)?,
        previous: parse_hex(field("jwtguard.seal.previous")?)?,
        previous_file: match reason {
            SealReason::File => parse_number(field("jwtguard.seal.previous_file")?)?,
            _ => 0,
        },
        key_id: std::str::from_utf8(field("jwtguard.seal.key")?)
            .ok()?
            .to_owned(),
    })
}

/// Where `needle` first is in `haystack`: memmem, since comparing at every position costs
/// 1.4 s of CPU on a 100 MB log of 64 KiB seal lines padded before their fields.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}
