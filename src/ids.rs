//! Random identifiers (`agent_…`, `pol_…`, `tok_…`, `req_…`) and secrets.
//!
//! 128 bits from the OS generator, hex-encoded. Owns nothing else.

/// A new id: `prefix` followed by 32 hex digits (128 random bits).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 32);
    id.push_str(prefix);
    id.push_str(&hex::encode(bytes));
    id
}

/// Fills `buf` from the OS random generator. Panics only if the OS has no entropy source,
/// in which case nothing secure can run.
pub fn fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random generator failed");
}
