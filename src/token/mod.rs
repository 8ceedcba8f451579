//! Capability tokens: PASETO v4.public (Ed25519) through `pasetors`, whose signatures are
//! checked with ed25519-dalek ([`signature`]: faster on a cache miss).
//!
//! Owns issuing, signature verification, the key set and the verified-token cache. Does not
//! decide anything: time, revocation, agent and tenant checks are part of the decision
//! ([`crate::snapshot::Snapshot::decide`]) so they run on every request, cached or not.
//!
//! Wire format: `v4.public.<payload+sig>.<footer>`; the payload is JSON
//! `{"jti","sub","tid","iat","nbf","exp","pol"?}` with RFC 3339 times (PASETO's registered
//! claims), the footer is `{"kid":"k…"}`. The kid is looked up only in actgate's own key set;
//! an unknown kid, another version or purpose, a malformed or oversized token, or a bad
//! signature are all `token_invalid`.

pub mod cache;
pub mod keys;
mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::policy::Reason;
pub use cache::TokenCache;
pub use keys::{KeySet, TrustedKey};

/// Longest token accepted, in bytes. Ours are ~300; anything far larger is not ours.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Verified claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Token id (`tok_…`): what logs and audit records carry instead of the token.
    pub jti: Arc<str>,
    /// Agent id.
    pub agent: Arc<str>,
    /// Tenant id.
    pub tenant: Arc<str>,
    /// Issued at, Unix seconds.
    pub issued_at: i64,
    /// Not before, Unix seconds.
    pub not_before: i64,
    /// Expires at, Unix seconds.
    pub expires_at: i64,
    /// Policies the token is narrowed to.
    pub policy_ids: Option<Vec<String>>,
    /// The id of the key that signed it.
    pub kid: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireClaims {
    jti: String,
    sub: String,
    tid: String,
    iat: String,
    nbf: String,
    exp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pol: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Footer {
    kid: String,
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(secs: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
        .to_string()
}

fn parse_time(s: &str) -> Option<i64> {
    humantime::parse_rfc3339(s)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// Refusals that cost nothing: oversized, or not a v4.public token at all.
fn precheck(token: &str) -> Result<(), Reason> {
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(PublicToken::HEADER) {
        return Err(Reason::TokenInvalid);
    }
    Ok(())
}

/// Public keys other replicas published in the shared store (verify-only), and the key ids
/// retired there (which verify nothing, wherever the key came from).
#[derive(Default)]
pub struct Published {
    keys: ahash::AHashMap<String, TrustedKey>,
    retired: ahash::AHashSet<String>,
}

impl Published {
    /// From the store's rows (kid, base64 public key, retired); a row whose key does not
    /// match its kid is skipped (and named in the returned list).
    pub fn from_rows(rows: &[(String, String, bool)]) -> (Published, Vec<String>) {
        use base64::Engine;
        let mut p = Published::default();
        let mut bad = Vec::new();
        for (kid, public, retired) in rows {
            if *retired {
                p.retired.insert(kid.clone());
                continue;
            }
            let key = base64::engine::general_purpose::STANDARD
                .decode(public)
                .ok()
                .and_then(|b| pasetors::keys::AsymmetricPublicKey::<V4>::from(&b).ok())
                .filter(|k| keys::key_id(k) == *kid);
            match key {
                Some(k) => {
                    p.keys.insert(kid.clone(), TrustedKey::new(k));
                }
                None => bad.push(kid.clone()),
            }
        }
        (p, bad)
    }

    /// Number of published keys (retired ones excluded).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is published.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key that verifies tokens of `kid`: the local set's or a published one, unless the
/// shared store retired it.
fn verifying_key<'a>(
    keys: &'a KeySet,
    published: &'a Published,
    kid: &str,
) -> Option<&'a TrustedKey> {
    if published.retired.contains(kid) {
        return None;
    }
    keys.verifying_key(kid).or_else(|| published.keys.get(kid))
}

/// Verifies `token` against `keys` (and keys published in the shared store) and reads its
/// claims.
fn verify(keys: &KeySet, published: &Published, token: &str) -> Result<Claims, Reason> {
    precheck(token)?;
    let untrusted = UntrustedToken::<pasetors::Public, V4>::try_from(token)
        .map_err(|_| Reason::TokenInvalid)?;
    let footer: Footer =
        serde_json::from_slice(untrusted.untrusted_footer()).map_err(|_| Reason::TokenInvalid)?;
    let point = verifying_key(keys, published, &footer.kid)
        .and_then(TrustedKey::point)
        .ok_or(Reason::TokenInvalid)?;
    let payload = signature::verify(point, &untrusted, b"").ok_or(Reason::TokenInvalid)?;
    let wire: WireClaims = serde_json::from_str(payload).map_err(|_| Reason::TokenInvalid)?;
    let time = |s: &str| parse_time(s).ok_or(Reason::TokenInvalid);
    Ok(Claims {
        kid: footer.kid,
        issued_at: time(&wire.iat)?,
        not_before: time(&wire.nbf)?,
        expires_at: time(&wire.exp)?,
        jti: wire.jti.into(),
        agent: wire.sub.into(),
        tenant: wire.tid.into(),
        policy_ids: wire.pol,
    })
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The key set is verify-only.
    #[error("this gateway has no signing key")]
    NoSigningKey,
    /// pasetors refused.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The window over which a thread's verification time is budgeted.
pub const VERIFY_WINDOW: Duration = Duration::from_millis(10);
/// The time a thread may spend per window on verifications that fail.
pub const VERIFY_SHARE: Duration = Duration::from_micros(2500);

thread_local! {
    /// This thread's current window's start and the time spent in it on failed verifications.
    static VERIFY_SPENT: std::cell::Cell<(Option<std::time::Instant>, Duration)> =
        const { std::cell::Cell::new((None, Duration::ZERO)) };
}

/// Waits until this thread's verification budget has room (see [`Tokens::authenticate`]).
async fn verify_budget_wait() {
    loop {
        let now = std::time::Instant::now();
        let (window, spent) = VERIFY_SPENT.with(|s| s.get());
        let start = match window {
            Some(w) if now.duration_since(w) < VERIFY_WINDOW => w,
            _ => {
                VERIFY_SPENT.with(|s| s.set((Some(now), Duration::ZERO)));
                return;
            }
        };
        if spent < VERIFY_SHARE {
            return;
        }
        tokio::time::sleep_until((start + VERIFY_WINDOW).into()).await;
    }
}

/// Signs and verifies tokens, with a bounded cache in front of verification.
pub struct Tokens {
    keys: ArcSwap<KeySet>,
    published: ArcSwap<Published>,
    /// Bumped after every key set change; a cached token verified before it is checked
    /// against the new key set once more (its key may have been retired).
    generation: AtomicU64,
    /// Verified tokens.
    pub cache: TokenCache,
    skew_secs: i64,
    verifications: Semaphore,
}

impl Tokens {
    /// A token service over `keys`.
    pub fn new(
        keys: KeySet,
        cache_capacity: usize,
        clock_skew: Duration,
        max_concurrent: usize,
    ) -> Tokens {
        Tokens {
            keys: ArcSwap::from_pointee(keys),
            published: ArcSwap::from_pointee(Published::default()),
            generation: AtomicU64::new(0),
            cache: TokenCache::new(cache_capacity),
            skew_secs: clock_skew.as_secs() as i64,
            verifications: Semaphore::new(max_concurrent.max(1)),
        }
    }

    /// Replaces the key set (after `actgate keys rotate` or `retire`). Cached tokens are
    /// dropped; one cached by a verification racing this change is re-checked on its next
    /// use (see [`Tokens::authenticate`]).
    pub fn set_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
    }

    /// Replaces the keys published in the shared store. A key newly retired there, or
    /// withdrawn, empties the cache, as a local retirement does.
    pub fn set_published(&self, published: Published) {
        // A key newly retired there, or one no longer published at all, verifies nothing from
        // now on: cached tokens it signed are checked again.
        let withdrawn = {
            let old = self.published.load();
            published.retired.iter().any(|k| !old.retired.contains(k))
                || old.keys.keys().any(|k| !published.keys.contains_key(k))
        };
        self.published.store(Arc::new(published));
        if withdrawn {
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.cache.clear();
        }
    }

    /// Whether the key `kid` still verifies tokens.
    fn trusted(&self, kid: &str) -> bool {
        verifying_key(&self.keys.load(), &self.published.load(), kid).is_some()
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Clock skew tolerated on `nbf`/`exp`, in seconds.
    pub fn skew_secs(&self) -> i64 {
        self.skew_secs
    }

    /// Issues a token for `agent` of `tenant`, valid from `now` for `ttl`.
    pub fn issue(
        &self,
        agent: &str,
        tenant: &str,
        ttl: Duration,
        policy_ids: Option<Vec<String>>,
        now: i64,
    ) -> Result<(String, Claims), IssueError> {
        let keys = self.keys.load();
        let key = keys.signing.as_ref().ok_or(IssueError::NoSigningKey)?;
        let claims = Claims {
            kid: key.kid.clone(),
            jti: crate::ids::new_id("tok_").into(),
            agent: agent.into(),
            tenant: tenant.into(),
            issued_at: now,
            not_before: now,
            expires_at: now + ttl.as_secs() as i64,
            policy_ids,
        };
        let wire = WireClaims {
            jti: claims.jti.to_string(),
            sub: claims.agent.to_string(),
            tid: claims.tenant.to_string(),
            iat: rfc3339(claims.issued_at),
            nbf: rfc3339(claims.not_before),
            exp: rfc3339(claims.expires_at),
            pol: claims.policy_ids.clone(),
        };
        let payload = serde_json::to_vec(&wire).map_err(|e| IssueError::Sign(e.to_string()))?;
        let footer = serde_json::to_vec(&Footer {
            kid: key.kid.clone(),
        })
        .map_err(|e| IssueError::Sign(e.to_string()))?;
        let token = PublicToken::sign(&key.secret, &payload, Some(&footer), None)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verifies a token's signature and reads its claims, without the cache. Time and
    /// revocation are not checked here.
    pub fn verify_uncached(&self, token: &str) -> Result<Claims, Reason> {
        verify(&self.keys.load(), &self.published.load(), token)
    }

    /// The claims of a token: from the cache, else verified and cached.
    ///
    /// A verification (~40 µs) runs inline on the calling thread — handing it to another
    /// thread cost two context switches, more than the verification itself on a busy core —
    /// within two bounds that keep a flood of distinct forged tokens from starving requests
    /// with cached tokens: at most `maxConcurrentVerifications` run at once across threads,
    /// and a thread spends at most a quarter of its time on verifications that *fail*
    /// ([`VERIFY_SHARE`] of every [`VERIFY_WINDOW`]); past that, requests that need a
    /// verification wait (without blocking the thread) for the next window, while cached
    /// tokens keep being served. Verifications that succeed are not throttled: distinct valid
    /// tokens come from an issuer, not from a stranger.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Claims>, Reason> {
        let now = now_unix();
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((claims, cached_at)) = self.cache.get(token, now, self.skew_secs) {
            if cached_at == generation || self.trusted(&claims.kid) {
                return Ok(claims);
            }
            return Err(Reason::TokenInvalid);
        }
        // Cheap refusals need no thread.
        precheck(token)?;
        verify_budget_wait().await;
        let _permit = self
            .verifications
            .acquire()
            .await
            .map_err(|_| Reason::InternalError)?;
        let started = std::time::Instant::now();
        let verified = verify(&self.keys.load(), &self.published.load(), token);
        if verified.is_err() {
            VERIFY_SPENT.with(|s| {
                let (window, spent) = s.get();
                s.set((window, spent + started.elapsed()));
            });
        }
        let claims = Arc::new(verified?);
        // An expired token is not worth a slot; the decision will say it expired.
        if claims.expires_at + self.skew_secs >= now {
            self.cache
                .insert(token, Arc::clone(&claims), generation, now);
        }
        Ok(claims)
    }

    /// Synchronous form of [`Tokens::authenticate`] without the concurrency bound, for
    /// benchmarks and CLI tools.
    pub fn authenticate_blocking(&self, token: &str) -> Result<Arc<Claims>, Reason> {
        let now = now_unix();
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((claims, cached_at)) = self.cache.get(token, now, self.skew_secs) {
            if cached_at == generation || self.trusted(&claims.kid) {
                return Ok(claims);
            }
            return Err(Reason::TokenInvalid);
        }
        let claims = Arc::new(self.verify_uncached(token)?);
        if claims.expires_at + self.skew_secs >= now {
            self.cache
                .insert(token, Arc::clone(&claims), generation, now);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn tokens() -> Tokens {
        Tokens::new(KeySet::ephemeral(), 100, Duration::from_secs(30), 4)
    }

    /// Forged tokens may take at most a quarter of a thread's time; valid ones are not held
    /// back. (Wall-clock bounds, generous for a noisy machine: the throttled run must take at
    /// least twice the time its failed verifications did, the valid run must not.)
    #[tokio::test(flavor = "current_thread")]
    async fn failed_verifications_are_throttled_and_valid_ones_are_not() {
        let t = Tokens::new(KeySet::ephemeral(), 0, Duration::from_secs(30), 1);
        let now = now_unix();
        let valid: Vec<String> = (0..300)
            .map(|i| {
                t.issue(
                    &format!("agent_{i}"),
                    "t",
                    Duration::from_secs(60),
                    None,
                    now,
                )
                .unwrap()
                .0
            })
            .collect();
        // Real key id, broken signature: a full verification that fails.
        let forged: Vec<String> = valid
            .iter()
            .map(|v| {
                let mut b = v.clone().into_bytes();
                let i = 40;
                b[i] = if b[i] == b'A' { b'B' } else { b'A' };
                String::from_utf8(b).unwrap()
            })
            .collect();
        let started = std::time::Instant::now();
        for v in &valid {
            t.authenticate(v).await.unwrap();
        }
        let valid_time = started.elapsed();
        let started = std::time::Instant::now();
        for f in &forged {
            assert!(t.authenticate(f).await.is_err());
        }
        let forged_time = started.elapsed();
        // Each forged verification costs about what a valid one does (same signature check).
        assert!(
            forged_time >= valid_time * 2,
            "forged {forged_time:?} vs valid {valid_time:?}: failed verifications were not throttled"
        );
        assert!(
            valid_time < forged_time,
            "valid {valid_time:?} vs forged {forged_time:?}"
        );
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let t = tokens();
        let (token, claims) = t
            .issue(
                "agent_1",
                "t",
                Duration::from_secs(60),
                Some(vec!["pol_a".into()]),
                1000,
            )
            .unwrap();
        assert!(token.starts_with("v4.public."));
        let back = t.verify_uncached(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.expires_at, 1060);
    }

    #[test]
    fn tampered_foreign_and_malformed_tokens_are_invalid() {
        let t = tokens();
        let (token, _) = t
            .issue("agent_1", "t", Duration::from_secs(60), None, 1000)
            .unwrap();
        // Flip one character of the payload.
        let mut bytes = token.clone().into_bytes();
        bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(t.verify_uncached(&tampered), Err(Reason::TokenInvalid));
        // Signed by another gateway's key.
        let other = tokens();
        let (foreign, _) = other
            .issue("agent_1", "t", Duration::from_secs(60), None, 1000)
            .unwrap();
        assert_eq!(t.verify_uncached(&foreign), Err(Reason::TokenInvalid));
        // Same payload and signature, footer pointing at our kid: the signature covers the
        // footer, so this fails too.
        let parts: Vec<&str> = foreign.split('.').collect();
        let our_kid = t.keys().signing.as_ref().unwrap().kid.clone();
        let footer = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{{\"kid\":\"{our_kid}\"}}"));
        let relabelled = format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], footer);
        assert_eq!(t.verify_uncached(&relabelled), Err(Reason::TokenInvalid));
        for bad in [
            "",
            "garbage",
            "v4.local.abc",
            "v3.public.abc",
            "v4.public.",
            "v4.public.!!!",
            &format!("v4.public.{}", "A".repeat(MAX_TOKEN_LEN)),
        ] {
            assert_eq!(
                t.verify_uncached(bad),
                Err(Reason::TokenInvalid),
                "{bad:.40}"
            );
        }
    }

    /// A verifier that caches by signature (Cerbos 0.51 does, for JWTs) accepts any claims
    /// under a signature it has seen. Ours is keyed by the whole token: once the real token is
    /// cached, the same token with another agent's claims and the real signature is refused,
    /// and takes no cache slot.
    #[test]
    fn claims_changed_under_a_cached_signature_are_refused() {
        let t = tokens();
        let now = now_unix();
        let (token, _) = t
            .issue("agent_1", "t", Duration::from_secs(600), None, now)
            .unwrap();
        assert_eq!(&*t.authenticate_blocking(&token).unwrap().agent, "agent_1");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let message = b64.decode(parts[2]).unwrap();
        let (payload, signature) = message.split_at(message.len() - 64);
        let claims = std::str::from_utf8(payload).unwrap();
        assert!(claims.contains("\"sub\":\"agent_1\""), "{claims}");
        let mut swapped = claims
            .replace("\"sub\":\"agent_1\"", "\"sub\":\"agent_2\"")
            .into_bytes();
        swapped.extend_from_slice(signature);
        let forged = format!(
            "{}.{}.{}.{}",
            parts[0],
            parts[1],
            b64.encode(&swapped),
            parts[3]
        );
        assert_eq!(t.authenticate_blocking(&forged), Err(Reason::TokenInvalid));
        assert_eq!(t.cache.len(), 1, "the forged token took a cache slot");
        assert_eq!(&*t.authenticate_blocking(&token).unwrap().agent, "agent_1");
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let t = Tokens::new(KeySet::load_or_create(&dir).unwrap(), 10, Duration::ZERO, 1);
        let (old, _) = t
            .issue("a", "t", Duration::from_secs(60), None, now_unix())
            .unwrap();
        KeySet::rotate(&dir).unwrap();
        t.set_keys(KeySet::load(&dir).unwrap());
        let (new, _) = t
            .issue("a", "t", Duration::from_secs(60), None, now_unix())
            .unwrap();
        assert!(t.verify_uncached(&old).is_ok());
        assert!(t.verify_uncached(&new).is_ok());
        assert_ne!(
            old.rsplit('.').next(),
            new.rsplit('.').next(),
            "different kid footers"
        );
    }

    #[test]
    fn the_cache_serves_repeat_tokens() {
        let t = tokens();
        let (token, _) = t
            .issue("a", "t", Duration::from_secs(600), None, now_unix())
            .unwrap();
        t.authenticate_blocking(&token).unwrap();
        t.authenticate_blocking(&token).unwrap();
        assert_eq!(
            t.cache
                .stats
                .hits
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(t.cache.len(), 1);
    }
}
