//! Route matching and resource building: never panics; a matched resource is the template
//! with the placeholder values, and a one-segment placeholder never carries a `/`.
#![no_main]
use std::sync::OnceLock;

use actgate::config::Config;
use actgate::proxy::canonical::canonical_path;
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(actgate::config::EMBEDDED, "embedded").expect("embedded config"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let (method, path) = raw.split_once(' ').unwrap_or(("GET", raw));
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else { return };
    let Ok(path) = canonical_path(path) else { return };
    if let Some(m) = config().routes.find(&method, &path) {
        let resource = m.route.resource.render(&m.values);
        for (name, v) in m.route.params.iter().zip(&m.values) {
            assert!(!v.contains('/'), "{name} = {v:?}");
            assert!(resource.contains(v));
        }
    }
});
