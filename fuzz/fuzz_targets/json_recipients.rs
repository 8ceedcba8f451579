//! Strict JSON and the recipient extractor: never panics; an accepted body has no duplicate
//! (or case-folded duplicate) keys, and every extracted recipient is a string of the body.
#![no_main]
use actgate::json::parse_strict;
use actgate::proxy::extract::recipients;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = parse_strict(data, 16) else { return };
    let pointers = vec!["/to".to_string(), "/cc".to_string(), "/bcc".to_string(), "/m/to".to_string()];
    if let Ok(list) = recipients(&v, &pointers) {
        let text = v.to_string();
        for r in list {
            // Every recipient is a string value of the body, written the same way.
            assert!(text.contains(&serde_json::to_string(&r).unwrap()), "{r:?} not in {text}");
        }
    }
});
