//! Config loading: arbitrary YAML never panics; it is either a config or a list of problems
//! with paths.
#![no_main]
use actgate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Err(problems) = Config::parse(s, "fuzz") {
        assert!(!problems.is_empty());
    }
});
