//! The connection state machine of serve mode's event loop: arbitrary bytes cut into reads
//! at arbitrary points (the first byte says how many of the next bytes are read lengths).
//! It never panics, hands over nothing after a refused framing or a closing answer, and
//! never holds more than a head's limit and one read (`jwtguard::fuzzing::connection`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (pieces, input) = rest.split_at(usize::from(n % 16).min(rest.len()));
    jwtguard::fuzzing::connection(input, pieces);
});
