//! The method-override checks of POST bodies: never panic; a form body they accept has no
//! field whose name, as a WHATWG form parser decodes it (`url`'s `form_urlencoded`, with `;`
//! as a separator too), reads as `_method`; a multipart body they accept does not contain
//! `_method` in any letter case.
#![no_main]
use actgate::proxy::extract::{method_override_form, method_override_multipart};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if method_override_form(data).is_ok() {
        for piece in data.split(|&b| b == b';') {
            for (name, _) in form_urlencoded::parse(piece) {
                let base = name.split('[').next().unwrap_or_default().trim().to_lowercase();
                assert_ne!(base, "_method", "accepted {:?}", String::from_utf8_lossy(data));
            }
        }
    }
    if method_override_multipart(data).is_ok() {
        assert!(
            !data.to_ascii_lowercase().windows(7).any(|w| w == b"_method"),
            "accepted {:?}",
            String::from_utf8_lossy(data)
        );
    }
});
