//! The HS256 verifier: arbitrary strings as tokens, and tokens signed with the fuzzing
//! secret over arbitrary header and claims bytes, so that inputs get past the signature.
//! It never panics, its verdict is the oracle's (src/check.rs), and it accepts (or names a
//! user for) only tokens signed with its secret.
#![no_main]

use jwtguard::fuzzing::{SECRET, verify};
use jwtguard_fuzz::{VerifyInput, check, verify_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (token, now) = match verify_input(data) {
        VerifyInput::Raw { token, now } => (token, now),
        VerifyInput::Signed {
            header,
            claims,
            now,
        } => (check::sign(SECRET, &header, &claims), now),
    };
    let got = verify(&token, now);
    let named = matches!(&got, Ok(_) | Err((_, Some(_))));
    assert!(
        !named || check::is_genuine(SECRET, &token),
        "{token:?} at {now:?}: {got:?} for a token not signed with the secret"
    );
    let want = check::expected_verdict(SECRET, &token, now);
    assert_eq!(got, want, "{token:?} at {now:?}");
});
