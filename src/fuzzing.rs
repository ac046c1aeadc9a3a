//! Entry points for the fuzz targets in `fuzz/`: the private parsers and encoders, as
//! the server calls them. Compiled only with `--cfg fuzzing`, which cargo-fuzz sets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::{Event, RequestEvent, RequestId};
use crate::token::{Ask, Policy, Verifier};
use crate::{LogFormat, Reason};

/// The secret [`verify`] checks signatures with.
pub const SECRET: &[u8] = b"fuzzing-secret-0123456789abcdef0123456789";

/// The bearer-token parser over the values of a request's `Authorization` headers, with
/// the default cap of 8192 bytes.
pub fn bearer_token<'a>(values: &[&'a str]) -> Result<&'a str, Reason> {
    crate::decide::bearer::bearer_token(values.iter().copied(), 8192)
}

/// Verifies `token` with [`SECRET`] under the default policy (30 s leeway, `exp`
/// required), at `now` seconds since the epoch (`None`: a clock before 1970). Returns the
/// user, or the reason and the user of a genuine token.
pub fn verify(token: &str, now: Option<f64>) -> Result<String, (Reason, Option<String>)> {
    thread_local! {
        static VERIFIER: Verifier = Verifier::new(
            &[crate::keys::VerifyingKey::new(
                None,
                crate::keys::Alg::Hs256,
                crate::keys::Material::Oct(SECRET.to_vec()),
            )],
            Policy {
                leeway: 30,
                require_exp: true,
                issuer: None,
                audience: None,
            },
            None,
        );
    }
    let ask = Ask {
        scopes: &[],
        claims: false,
    };
    VERIFIER.with(|v| {
        v.verify(token, now, ask)
            .map(|verified| verified.user)
            .map_err(|d| (d.reason, d.user))
    })
}

/// The line of a refused request's event with these values from the request, in
/// `format`, stamped `millis` after the epoch.
pub fn encode_request(
    method: &str,
    path: &str,
    user: Option<&str>,
    user_agent: Option<&str>,
    format: LogFormat,
    millis: u64,
) -> String {
    let event = Event::Request(RequestEvent {
        action: crate::event::Action::Authorize,
        success: false,
        reason: Reason::BadSignature.code(),
        reason_text: Reason::BadSignature.text(),
        source_ip: Some([127, 0, 0, 1].into()),
        client_ip: None,
        status: Some(401),
        request_id: Some(RequestId::new(0x0a1b_2c3d, 1)),
        fingerprint: None,
        method,
        path,
        user,
        user_agent,
        kid: None,
        alg: None,
    });
    let mut line = String::new();
    event.encode(
        format,
        UNIX_EPOCH + Duration::from_millis(millis),
        &mut line,
    );
    line
}

/// The line of another target's log record with this logger name and message.
pub fn encode_record(logger: &str, message: &str, format: LogFormat) -> String {
    let event = Event::Record {
        level: log::Level::Warn,
        logger,
        message,
    };
    let mut line = String::new();
    event.encode(format, SystemTime::now(), &mut line);
    line
}

/// The longest head [`connection`] lets a connection hold (past it: 431).
pub const MAX_HEAD: usize = 1024;

/// Feeds `input` to one connection's state machine as the event loop does: in reads of
/// the lengths `pieces` gives in turn (cycled; each 1 or more), at most 4 requests a turn,
/// the held ones fed again before the next read. Panics when what must hold whatever the
/// bytes does not: no item after one that ends the connection (a refusal, a refused
/// framing, `Connection: close`), no more held than a head's limit and one read, nothing
/// held once it is closing. Returns how many items came out.
///
/// When the first piece is odd, the connection is proxy mode's, which passes a body to its
/// caller: the body's bytes are then taken as the exchange takes them (none handed over as
/// a request meanwhile), and what is left given back as the next request's.
pub fn connection(input: &[u8], pieces: &[u8]) -> usize {
    use crate::serve::conn::{Conn, Item, Phase};
    let passing = pieces.first().is_some_and(|p| p % 2 == 1);
    let mut conn = if passing {
        Conn::passing_bodies()
    } else {
        Conn::new()
    };
    let mut items = 0;
    let ended = std::cell::Cell::new(false);
    let mut on = |item: Item<'_>| {
        assert!(!ended.get(), "an item after the connection ended: {item:?}");
        items += 1;
        // Refused framing ends the connection whatever `close` says: what follows cannot
        // be trusted to be a request.
        ended.set(match item {
            Item::Refused(_) => true,
            Item::Request { head, close, .. } => {
                assert!(close || head.framing.is_ok(), "refused framing, kept alive");
                close || head.framing.is_err()
            }
        });
    };
    let mut at = 0;
    for &piece in pieces.iter().chain([&0]).cycle() {
        if at == input.len() {
            break;
        }
        let len = (usize::from(piece) + 1).min(input.len() - at);
        let mut fed = conn.feed(&input[at..at + len], MAX_HEAD, 4, &mut on);
        while fed.more {
            fed = conn.feed(&[], MAX_HEAD, 4, &mut on);
        }
        at += len;
        if conn.phase() == Phase::Passed {
            // The exchange takes the body: here, the first `piece` bytes held, and gives the
            // rest back.
            let held = conn.take_held();
            let body = usize::from(piece).min(held.len());
            // A request that closes the connection ends it after its exchange.
            if ended.get() {
                conn.close();
                continue;
            }
            conn.resume(&held[body..]);
            assert_eq!(conn.phase(), Phase::Head);
            let mut fed = conn.feed(&[], MAX_HEAD, 4, &mut on);
            while fed.more {
                fed = conn.feed(&[], MAX_HEAD, 4, &mut on);
            }
        }
        assert!(conn.held() <= MAX_HEAD + len, "held {} bytes", conn.held());
        if conn.phase() == Phase::Closing {
            assert_eq!(conn.held(), 0, "held while closing");
        }
    }
    items
}

/// Reads `input` as a chunked body whole, and again in reads of the lengths `pieces` gives
/// in turn (cycled; each 1 or more), with a 64-byte line limit. Panics when the two
/// disagree (the data, where the body ends, or why it cannot be read), or when more data
/// comes out than bytes went in. Returns the body's length once it ended.
pub fn chunked(input: &[u8], pieces: &[u8]) -> Option<usize> {
    use crate::serve::chunked::{Bad, Chunked};
    let read = |cuts: &mut dyn Iterator<Item = usize>| -> (Vec<u8>, Result<Option<usize>, Bad>) {
        let mut body = Chunked::new(64);
        let (mut data, mut at) = (Vec::new(), 0);
        while at < input.len() && !body.is_done() {
            let len = cuts
                .next()
                .unwrap_or(input.len())
                .clamp(1, input.len() - at);
            match body.feed(&input[at..at + len], &mut |d| data.extend_from_slice(d)) {
                Ok(used) => {
                    assert!(used <= len, "used {used} of {len}");
                    at += used;
                    if used < len {
                        assert!(body.is_done(), "stopped early without an end");
                    }
                }
                Err(bad) => return (data, Err(bad)),
            }
        }
        assert!(data.len() <= at, "{} bytes of data from {at}", data.len());
        (data, Ok(body.is_done().then_some(at)))
    };
    let whole = read(&mut std::iter::empty());
    let mut cuts = pieces
        .iter()
        .map(|&p| usize::from(p) + 1)
        .chain([1])
        .cycle();
    let (data, end) = read(&mut cuts);
    match (&whole.1, &end) {
        (Ok(_), Ok(_)) => assert_eq!(whole, (data, end)),
        // The data before the error depends on where the reads were cut; the error not.
        _ => assert_eq!(whole.1, end),
    }
    whole.1.ok().flatten()
}

/// Reads `input` as an upstream's answer to a GET (src/serve/exchange.rs), whole and again
/// in reads of the lengths `pieces` gives (each 1 or more, then the rest). Panics when the
/// two disagree: the head and data the client gets, how it ended (the failure, or whether
/// the upstream connection is reused), or what came after its end. Returns whether the
/// answer ended.
pub fn upstream_answer(input: &[u8], pieces: &[u8]) -> bool {
    use crate::serve::exchange::driven::{answered, decoded};
    let mut cuts = Vec::new();
    let mut at = 0;
    for &piece in pieces {
        at += usize::from(piece) + 1;
        if at >= input.len() {
            break;
        }
        cuts.push(at);
    }
    // Reused only when nothing came after the answer: with it (the exchange's verdict),
    // or later (the pool closes an idle connection that becomes readable).
    let reused = |(out, ended, after): (Vec<u8>, Result<Option<bool>, _>, usize)| {
        (out, ended.map(|e| e.map(|r| r && after == 0)), after)
    };
    let whole = reused(answered(input, &[]));
    let cut = reused(answered(input, &cuts));
    assert_eq!(whole.1, cut.1, "how it ended");
    // A failure's partial output, and what was left unread, depend on where the reads
    // were cut; the failure not.
    if whole.1.is_ok() {
        assert_eq!(whole.2, cut.2, "what came after it");
        assert_eq!(decoded(&whole.0), decoded(&cut.0), "what the client got");
    }
    matches!(whole.1, Ok(Some(_)))
}
