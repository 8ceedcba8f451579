//! Legacy MCP sessions (`Mcp-Session-Id`), each bound to the agent and tenant whose token
//! opened it: another token cannot use it, and an id actgate never saw opened is refused.
//!
//! Bounded: at most `maxSessions` per endpoint and `maxSessionsPerAgent` per agent, counted
//! from the moment an `initialize` is let through (a reserved slot), so concurrent handshakes
//! cannot overshoot; one idle for `sessionIdleTimeout` is forgotten (its next request answers
//! 404 and the client opens a new one); when full, idle ones are swept before a new one is
//! refused. Session ids are kept as their SHA-256, so a memory dump does not hand them out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Why a new session is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The endpoint holds its maximum.
    Endpoint(usize),
    /// The agent holds its maximum.
    Agent(usize),
}

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
    per_agent: usize,
    idle: Duration,
}

/// A slot taken for a session being opened; released on drop unless [`Sessions::bind`] used it.
pub struct Reservation<'s> {
    sessions: &'s Sessions,
    key: [u8; 32],
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.sessions.map.lock() {
            map.remove(&self.key);
        }
    }
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// A table of at most `max` sessions, `per_agent` of any one agent, each forgotten after
    /// `idle`.
    pub fn new(max: usize, per_agent: usize, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max,
            per_agent,
            idle,
        }
    }

    /// Takes a slot for a session `agent` is opening (sweeping idle sessions when full).
    pub fn reserve(&self, tenant: &str, agent: &str) -> Result<Reservation<'_>, Full> {
        let Ok(mut map) = self.map.lock() else {
            return Err(Full::Endpoint(self.max));
        };
        let count = |map: &HashMap<[u8; 32], Binding>| {
            map.values()
                .filter(|b| &*b.agent == agent && &*b.tenant == tenant)
                .count()
        };
        if map.len() >= self.max || count(&map) >= self.per_agent {
            let idle = self.idle;
            map.retain(|_, b| b.last_used.elapsed() < idle);
        }
        if map.len() >= self.max {
            return Err(Full::Endpoint(self.max));
        }
        if count(&map) >= self.per_agent {
            return Err(Full::Agent(self.per_agent));
        }
        let mut slot = [0u8; 32];
        crate::ids::fill(&mut slot);
        map.insert(
            slot,
            Binding {
                tenant: tenant.into(),
                agent: agent.into(),
                last_used: Instant::now(),
            },
        );
        Ok(Reservation {
            sessions: self,
            key: slot,
        })
    }

    /// Binds a session the upstream just opened to the agent whose token opened it, in the
    /// slot reserved for it.
    pub fn bind(&self, slot: Reservation<'_>, id: &str) {
        if let Ok(mut map) = self.map.lock()
            && let Some(mut b) = map.remove(&slot.key)
        {
            b.last_used = Instant::now();
            map.insert(key(id), b);
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

    fn open(s: &Sessions, id: &str, tenant: &str, agent: &str) {
        let slot = s.reserve(tenant, agent).unwrap();
        s.bind(slot, id);
    }

    #[test]
    fn a_session_serves_only_the_agent_that_opened_it() {
        let s = Sessions::new(2, 2, Duration::from_secs(60));
        open(&s, "abc", "t", "agent_a");
        assert_eq!(s.check("abc", "t", "agent_a"), Ok(()));
        assert_eq!(s.check("abc", "t", "agent_b"), Err(Refusal::Foreign));
        assert_eq!(s.check("abc", "u", "agent_a"), Err(Refusal::Foreign));
        assert_eq!(s.check("nope", "t", "agent_a"), Err(Refusal::Unknown));
        s.remove("abc");
        assert_eq!(s.check("abc", "t", "agent_a"), Err(Refusal::Unknown));
    }

    #[test]
    fn the_table_is_bounded_per_endpoint_and_per_agent_and_idle_sessions_make_room() {
        let s = Sessions::new(3, 2, Duration::from_millis(30));
        open(&s, "a", "t", "x");
        let pending = s.reserve("t", "x").unwrap();
        assert_eq!(
            s.reserve("t", "x").err(),
            Some(Full::Agent(2)),
            "a pending handshake counts"
        );
        open(&s, "c", "t", "y");
        assert_eq!(s.reserve("t", "z").err(), Some(Full::Endpoint(3)));
        drop(pending);
        assert!(
            s.reserve("t", "z").is_ok(),
            "an abandoned reservation frees its slot"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.reserve("t", "x").is_ok(), "idle ones were swept");
        assert_eq!(s.check("a", "t", "x"), Err(Refusal::Unknown));
    }
}
