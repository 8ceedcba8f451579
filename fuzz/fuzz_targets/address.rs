//! The e-mail address parser: never panics; what it accepts is one plain local@domain with a
//! normalised host name.
#![no_main]
use actgate::policy::address::{DomainRule, parse_address};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = DomainRule::parse(s);
    if let Ok(a) = parse_address(s) {
        assert_eq!(s.matches('@').count(), 1);
        assert!(!a.local.is_empty() && !a.local.contains(['<', '>', '"', ' ', ',', '(', ')']));
        assert!(a.domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
        assert!(!a.domain.ends_with('.') && !a.domain.contains(".."));
    }
});
