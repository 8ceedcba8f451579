//! The verified-token cache: token string → its verified claims.
//!
//! Keyed by the whole token (the map compares the full string on a hit, so no collision can
//! map one token to another's claims). Bounded: at capacity, expired entries go first, then
//! arbitrary ones, a hundredth of the capacity at a time, so the cost of eviction is amortised
//! and memory never exceeds `capacity` entries, whatever the flood. Only tokens whose
//! signature verified are ever inserted; forged tokens never take a slot. Revocation is not
//! cached here: it is checked on every decision against the snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::Claims;

/// Counters the metrics layer reads.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups that had to verify.
    pub misses: AtomicU64,
    /// Entries removed to make room or because they expired.
    pub evictions: AtomicU64,
}

/// A bounded map of verified tokens.
pub struct TokenCache {
    /// token → (claims, the key set generation it was verified under).
    map: DashMap<Box<str>, (Arc<Claims>, u64), ahash::RandomState>,
    capacity: usize,
    /// Hit, miss and eviction counts.
    pub stats: CacheStats,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables caching.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            map: DashMap::with_capacity_and_hasher(
                capacity.min(1 << 16),
                ahash::RandomState::new(),
            ),
            capacity,
            stats: CacheStats::default(),
        }
    }

    /// The claims of `token` and the key set generation they were verified under, if it is
    /// cached and not past `exp` + `skew_secs` at `now`.
    #[inline]
    pub fn get(&self, token: &str, now: i64, skew_secs: i64) -> Option<(Arc<Claims>, u64)> {
        let found = self.map.get(token).map(|e| (Arc::clone(&e.0), e.1));
        match found {
            Some((claims, generation)) if claims.expires_at + skew_secs >= now => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some((claims, generation))
            }
            Some(_) => {
                self.map.remove(token);
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Remembers a token verified under key set `generation`.
    pub fn insert(&self, token: &str, claims: Arc<Claims>, generation: u64, now: i64) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            self.make_room(now);
        }
        self.map.insert(token.into(), (claims, generation));
    }

    /// Forgets every token (after a key set change).
    pub fn clear(&self) {
        let n = self.map.len() as u64;
        self.map.clear();
        self.stats.evictions.fetch_add(n, Ordering::Relaxed);
    }

    fn make_room(&self, now: i64) {
        let target = (self.capacity / 100).max(1);
        let mut victims: Vec<Box<str>> = Vec::with_capacity(target);
        // Expired entries first, from a bounded scan; then whatever comes first.
        for e in self.map.iter().take(target * 8) {
            if e.value().0.expires_at < now {
                victims.push(e.key().clone());
                if victims.len() >= target {
                    break;
                }
            }
        }
        if victims.len() < target {
            for e in self.map.iter().take(target - victims.len()) {
                victims.push(e.key().clone());
            }
        }
        for key in victims {
            if self.map.remove(&key).is_some() {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Most entries held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims {
            jti: "tok_x".into(),
            agent: "agent_x".into(),
            tenant: "t".into(),
            issued_at: 0,
            not_before: 0,
            expires_at: exp,
            policy_ids: None,
            kid: "k1".into(),
        })
    }

    #[test]
    fn stays_bounded_under_a_flood_of_distinct_tokens() {
        let cache = TokenCache::new(1000);
        for i in 0..100_000 {
            cache.insert(&format!("v4.public.token-{i}"), claims(10_000), 0, 0);
            assert!(cache.len() <= 1000);
        }
        assert!(cache.stats.evictions.load(Ordering::Relaxed) >= 99_000);
    }

    #[test]
    fn expired_entries_are_not_served() {
        let cache = TokenCache::new(10);
        cache.insert("a", claims(100), 0, 0);
        assert!(cache.get("a", 100, 0).is_some());
        assert!(cache.get("a", 129, 30).is_some());
        assert!(cache.get("a", 131, 30).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let cache = TokenCache::new(0);
        cache.insert("a", claims(100), 0, 0);
        assert!(cache.get("a", 0, 0).is_none());
    }
}
