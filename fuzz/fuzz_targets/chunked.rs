//! The proxy's chunked-body reader (src/serve/chunked.rs): arbitrary bytes read whole and
//! cut into reads at arbitrary points (the first byte says how many of the next bytes are
//! read lengths) give the same data, the same end, or the same error, and never panic
//! (`jwtguard::fuzzing::chunked`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (pieces, input) = rest.split_at(usize::from(n % 16).min(rest.len()));
    jwtguard::fuzzing::chunked(input, pieces);
});
