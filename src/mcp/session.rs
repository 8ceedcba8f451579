//! Legacy MCP sessions (`Mcp-Session-Id`), each bound to the agent and tenant whose token
//! opened it: another token cannot use it, and an id actgate never saw opened is refused.
//!
//! Bounded: at most `maxSessions` per endpoint; one idle for `sessionIdleTimeout` is
//! forgotten (its next request answers 404 and the client opens a new one); when full,
//! idle ones are swept before a new one is refused. Session ids are kept as their SHA-256,
//! so a memory dump does not hand them out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Why a session id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Never opened through actgate, forgotten, or ended.
    Unknown,
    /// Opened by another agent (or tenant).
    Foreign,
}

struct Binding {
    tenant: Box<str>,
    agent: Box<str>,
    last_used: Instant,
}

/// The sessions of one endpoint.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Binding>>,
    max: usize,
    idle: Duration,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// A table of at most `max` sessions forgotten after `idle`.
    pub fn new(max: usize, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max,
            idle,
        }
    }

    /// Whether a new session fits (sweeping idle ones when full).
    pub fn has_room(&self) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        if map.len() < self.max {
            return true;
        }
        let idle = self.idle;
        map.retain(|_, b| b.last_used.elapsed() < idle);
        map.len() < self.max
    }

    /// Binds a session the upstream just opened to the agent whose token opened it.
    pub fn bind(&self, id: &str, tenant: &str, agent: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.insert(
                key(id),
                Binding {
                    tenant: tenant.into(),
                    agent: agent.into(),
                    last_used: Instant::now(),
                },
            );
        }
    }

    /// Checks that `id` is a live session of this agent, and marks it used.
    pub fn check(&self, id: &str, tenant: &str, agent: &str) -> Result<(), Refusal> {
        let Ok(mut map) = self.map.lock() else {
            return Err(Refusal::Unknown);
        };
        let k = key(id);
        match map.get_mut(&k) {
            None => Err(Refusal::Unknown),
            Some(b) if b.last_used.elapsed() >= self.idle => {
                map.remove(&k);
                Err(Refusal::Unknown)
            }
            Some(b) if &*b.tenant != tenant || &*b.agent != agent => Err(Refusal::Foreign),
            Some(b) => {
                b.last_used = Instant::now();
                Ok(())
            }
        }
    }

    /// Forgets a session (after it was ended with DELETE).
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&key(id));
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_serves_only_the_agent_that_opened_it() {
        let s = Sessions::new(2, Duration::from_secs(60));
        s.bind("abc", "t", "agent_a");
        assert_eq!(s.check("abc", "t", "agent_a"), Ok(()));
        assert_eq!(s.check("abc", "t", "agent_b"), Err(Refusal::Foreign));
        assert_eq!(s.check("abc", "u", "agent_a"), Err(Refusal::Foreign));
        assert_eq!(s.check("nope", "t", "agent_a"), Err(Refusal::Unknown));
        s.remove("abc");
        assert_eq!(s.check("abc", "t", "agent_a"), Err(Refusal::Unknown));
    }

    #[test]
    fn the_table_is_bounded_and_idle_sessions_make_room() {
        let s = Sessions::new(2, Duration::from_millis(30));
        s.bind("a", "t", "x");
        s.bind("b", "t", "x");
        assert!(!s.has_room());
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.has_room(), "idle ones were swept");
        assert_eq!(s.check("a", "t", "x"), Err(Refusal::Unknown));
    }
}
