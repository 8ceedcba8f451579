//! Token parsing and verification: never panics, and nothing but the one token signed by the
//! key verifies (arbitrary bytes, and mutations of a real token).
#![no_main]
use std::sync::OnceLock;
use std::time::Duration;

use actgate::token::{KeySet, Tokens};
use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (Tokens, String) {
    static S: OnceLock<(Tokens, String)> = OnceLock::new();
    S.get_or_init(|| {
        let t = Tokens::new(KeySet::ephemeral(), 0, Duration::from_secs(30), 1);
        let (token, _) = t
            .issue("agent_fuzz", "t", Duration::from_secs(3600), None, 1_800_000_000)
            .expect("issue");
        (t, token)
    })
}

fuzz_target!(|data: &[u8]| {
    let (tokens, valid) = setup();
    if let Ok(s) = std::str::from_utf8(data) {
        if tokens.verify_uncached(s).is_ok() {
            assert_eq!(s, valid, "a token other than the issued one verified");
        }
    }
    // Flip bytes of the real token at fuzzer-chosen places.
    if !data.is_empty() {
        let mut t = valid.clone().into_bytes();
        for (i, b) in data.iter().enumerate().take(8) {
            let at = (*b as usize * 31 + i * 7) % t.len();
            t[at] ^= 1 << (b % 7);
        }
        if let Ok(s) = String::from_utf8(t) {
            if s != *valid {
                assert!(tokens.verify_uncached(&s).is_err(), "a mutated token verified: {s}");
            }
        }
    }
});
