//! Random identifiers (`agent_…`, `pol_…`, `tok_…`) and per-process sequential ones
//! (`req_…`, `aud_…`), and secrets.
//!
//! Owns nothing else. Ids that grant or name something (tokens, agents, policies) carry 128
//! bits from the OS generator. Request and audit-record ids only need to be unique: a random
//! 64-bit prefix drawn once per process plus a 64-bit counter, so the hot path makes no
//! system call for them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A new id: `prefix` followed by 32 hex digits (128 random bits).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 32);
    id.push_str(prefix);
    push_hex(&mut id, &bytes);
    id
}

/// A unique id for this process's requests and records: `prefix` + 16 hex digits of a random
/// per-process prefix + 16 hex digits of a counter. No system call.
pub fn sequential_id(prefix: &str) -> String {
    static PROCESS: OnceLock<[u8; 8]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut b = [0u8; 8];
        fill(&mut b);
        b
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(prefix.len() + 32);
    id.push_str(prefix);
    push_hex(&mut id, process);
    push_hex(&mut id, &n.to_be_bytes());
    id
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

/// Fills `buf` from the OS random generator. Panics only if the OS has no entropy source,
/// in which case nothing secure can run.
pub fn fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random generator failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shape_and_do_not_repeat() {
        let a = new_id("tok_");
        assert_eq!(a.len(), 36);
        assert_ne!(a, new_id("tok_"));
        let r1 = sequential_id("req_");
        let r2 = sequential_id("req_");
        assert_eq!(r1.len(), 36);
        assert_ne!(r1, r2);
        assert_eq!(r1[..20], r2[..20], "same process prefix");
    }
}
