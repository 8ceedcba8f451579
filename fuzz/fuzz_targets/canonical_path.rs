//! The path canonicaliser: never panics; whatever it accepts has no dot segment, no empty
//! segment, no backslash, no control character, and re-encodes to a path it accepts again.
#![no_main]
use actgate::proxy::canonical::{canonical_path, check_query, decode_query_component};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let _ = check_query(raw);
    let _ = decode_query_component(raw);
    if let Ok(decoded) = canonical_path(raw) {
        assert!(decoded.starts_with('/'));
        let segments: Vec<&str> = decoded[1..].split('/').collect();
        for (i, s) in segments.iter().enumerate() {
            assert!(*s != "." && *s != "..", "dot segment in {decoded:?} from {raw:?}");
            assert!(!s.is_empty() || i == segments.len() - 1, "empty segment in {decoded:?}");
        }
        assert!(!decoded.contains('\\'));
        assert!(!decoded.chars().any(|c| c.is_control()));
        assert!(!decoded.contains(';') && !decoded.contains('?') && !decoded.contains('#'));
    }
});
