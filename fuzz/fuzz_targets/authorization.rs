//! The `Authorization` header parser: arbitrary bytes as 0 to 3 header values. It never
//! panics, and any token it returns is a non-empty RFC 6750 b64token within the cap,
//! taken from the only value after `Bearer`.
#![no_main]

use jwtguard_fuzz::{MAX_TOKEN_BYTES, check, header_values, split_values};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (n, text) = header_values(data);
    let values = split_values(&text, n);
    let got = jwtguard::fuzzing::bearer_token(&values);
    if let Err(problem) = check::check_bearer(&values, MAX_TOKEN_BYTES, got) {
        panic!("{values:?}: {problem}");
    }
});
