//! The proxy's reading of an upstream's answer (src/serve/exchange.rs): arbitrary bytes
//! read whole and cut into reads at arbitrary points (the first byte says how many of the
//! next bytes are read lengths) give the client the same head and data, end the same way
//! (the same failure, or the same verdict on reusing the connection), and never panic
//! (`jwtguard::fuzzing::upstream_answer`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (pieces, input) = rest.split_at(usize::from(n % 16).min(rest.len()));
    jwtguard::fuzzing::upstream_answer(input, pieces);
});
