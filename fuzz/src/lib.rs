//! What the fuzz targets share: how each reads its input (kept readable, so that the seed
//! corpus in fuzz/corpus/ is hand-written text), and the oracles in [`check`].

use std::time::Duration;

pub use jwtguard::{LogFormat, Reason};

pub mod check;

/// The `Authorization` header cap of the default configuration, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The `authorization` target's input: the first byte is the number of header values
/// (modulo 4: the digits `0` to `3` say so), the rest is split on `\n` into that many
/// (the last takes what remains). Not UTF-8 is read lossily.
pub fn header_values(data: &[u8]) -> (usize, String) {
    match data.split_first() {
        None => (0, String::new()),
        Some((n, rest)) => (
            usize::from(n % 4),
            String::from_utf8_lossy(rest).into_owned(),
        ),
    }
}

/// Splits `text` into at most `n` values on `\n`; none when `n` is 0.
pub fn split_values(text: &str, n: usize) -> Vec<&str> {
    if n == 0 {
        Vec::new()
    } else {
        text.splitn(n, '\n').collect()
    }
}

/// The clock of the `verify` target unless its input says otherwise: a fraction of a
/// second, so that the `exp` and `nbf` boundaries fall between whole seconds.
pub const NOW: f64 = 1_700_000_000.25;

/// The header of a signed input that names none.
pub const DEFAULT_HEADER: &[u8] = br#"{"typ":"JWT","alg":"HS256"}"#;

/// One input of the `verify` target.
#[derive(Debug)]
pub enum VerifyInput {
    /// A token as it came (from a client that does not know the secret).
    Raw { token: String, now: Option<f64> },
    /// Header and claims JSON (any bytes) that the target signs with the secret.
    Signed {
        header: Vec<u8>,
        claims: Vec<u8>,
        now: Option<f64>,
    },
}

/// Reads the `verify` target's input. The first byte says what follows and when:
///
/// | byte | rest | clock |
/// |---|---|---|
/// | `r` | a token | [`NOW`] |
/// | `n` | a token | before 1970 (`None`) |
/// | `T` | 8 bytes, then a token | those 8 bytes as nanoseconds (little-endian) |
/// | `s` | header JSON, `\n`, claims JSON; or claims JSON alone (under [`DEFAULT_HEADER`]) | [`NOW`] |
/// | `c` | the same as `s` | before 1970 |
/// | `t` | 8 bytes, then the same as `s` | those 8 bytes as nanoseconds |
/// | other | odd: as `s`, even: as `r` | [`NOW`] |
pub fn verify_input(data: &[u8]) -> VerifyInput {
    let Some((&mode, mut rest)) = data.split_first() else {
        return VerifyInput::Raw {
            token: String::new(),
            now: Some(NOW),
        };
    };
    let mut now = Some(NOW);
    match mode {
        b'n' | b'c' => now = None,
        b'T' | b't' if rest.len() >= 8 => {
            let (nanos, tail) = rest.split_at(8);
            let nanos = u64::from_le_bytes(nanos.try_into().expect("8 bytes"));
            now = Some(Duration::from_nanos(nanos).as_secs_f64());
            rest = tail;
        }
        _ => {}
    }
    let signed = match mode {
        b'r' | b'n' | b'T' => false,
        b's' | b'c' | b't' => true,
        other => other % 2 == 1,
    };
    if signed {
        let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (rest[..at].to_vec(), rest[at + 1..].to_vec()),
            None => (DEFAULT_HEADER.to_vec(), rest.to_vec()),
        };
        VerifyInput::Signed {
            header,
            claims,
            now,
        }
    } else {
        VerifyInput::Raw {
            token: String::from_utf8_lossy(rest).into_owned(),
            now,
        }
    }
}

/// The fields of the `encode` target's input, split on the unit separator (0x1f).
pub const SEPARATOR: char = '\u{1f}';

/// One input of the `encode` target.
#[derive(Debug, Default)]
pub struct EncodeInput {
    /// The event's time, in milliseconds since the epoch.
    pub millis: u64,
    pub method: String,
    pub path: String,
    pub user: Option<String>,
    pub user_agent: Option<String>,
    pub logger: String,
    pub message: String,
}

/// Reads the `encode` target's input: `MILLIS␟method␟path␟user␟user-agent␟logger␟message`
/// (␟ the byte 0x1f), read lossily as UTF-8. MILLIS is decimal (0 when it is not a
/// number); a missing user or user agent is none, other missing fields are empty.
pub fn encode_input(data: &[u8]) -> EncodeInput {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(7, SEPARATOR);
    let mut next = || fields.next().map(str::to_owned);
    EncodeInput {
        millis: next().and_then(|m| m.parse().ok()).unwrap_or(0),
        method: next().unwrap_or_default(),
        path: next().unwrap_or_default(),
        user: next(),
        user_agent: next(),
        logger: next().unwrap_or_default(),
        message: next().unwrap_or_default(),
    }
}
