//! API keys: how they are made, how strong they must be, and how the config's keys resolve.
//!
//! A key is stored and compared only as its SHA-256; the key itself is shown once, when it
//! is made, and never logged. Keys read from the environment must be at least
//! [`MIN_KEY_LEN`] characters and none of the placeholders actgate has ever shipped or
//! documented ([`PLACEHOLDERS`]); a key given by hash is refused when it is the hash of a
//! placeholder. What each role may do is [`crate::store::Role::may`].

use sha2::{Digest, Sha256};

use crate::config::{Config, KeySource};
use crate::policy::PolicySource;
use crate::store::ApiKeyRecord;

/// Shortest API key accepted from the environment.
pub const MIN_KEY_LEN: usize = 32;

/// Values that are not secrets: placeholders from examples, manifests and habits. A key equal
/// to one of these (or, for `sha256:` keys, hashing to one) is refused at start.
pub const PLACEHOLDERS: &[&str] = &[
    "replace-me-with-a-random-key",
    "replace-me",
    "replaceme",
    "change-me",
    "changeme",
    "changeit",
    "secret",
    "password",
    "admin",
    "test",
    "example",
    "your-api-key",
    "your_api_key",
    "YOUR_API_KEY",
    "act_live_xxx",
    "act_xxx",
    "xxx",
];

/// How to make a good key, for error messages.
pub const HOW_TO_GENERATE: &str = "generate one with `openssl rand -hex 32`";

/// The SHA-256 of an API key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random key: `act_` and 48 hex digits (192 bits).
pub fn generate() -> String {
    let mut raw = [0u8; 24];
    crate::ids::fill(&mut raw);
    format!("act_{}", hex::encode(raw))
}

/// Why a key read from the environment is too weak to use, or `None`.
pub fn weakness(key: &str) -> Option<String> {
    if PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(key)) {
        return Some(format!(
            "it is a placeholder, not a secret; {HOW_TO_GENERATE}"
        ));
    }
    let n = key.chars().count();
    if n < MIN_KEY_LEN {
        return Some(format!(
            "it is {n} characters long; API keys need at least {MIN_KEY_LEN}: {HOW_TO_GENERATE}"
        ));
    }
    None
}

/// Whether `hash` is the SHA-256 of a placeholder.
pub fn is_placeholder_hash(hash: &[u8; 32]) -> bool {
    PLACEHOLDERS.iter().any(|p| hash_key(p) == *hash)
}

/// The config's API keys, resolved: `fromEnv` keys read now (an unset or empty variable skips
/// the key; [`unset_variables`] names them), every key checked for strength. An error names the key, the
/// variable and how to fix it: actgate refuses to start (or to reload) on a weak key.
pub fn config_keys(config: &Config) -> Result<Vec<ApiKeyRecord>, String> {
    let mut out = Vec::new();
    for (i, k) in config.api_keys.iter().enumerate() {
        let at = format!("apiKeys[{i}] ({})", k.name);
        let hash = match &k.source {
            KeySource::Sha256(h) => {
                if is_placeholder_hash(h) {
                    return Err(format!(
                        "{at}: sha256 is the hash of a placeholder, not a secret; {HOW_TO_GENERATE}"
                    ));
                }
                *h
            }
            KeySource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => {
                    if let Some(why) = weakness(&v) {
                        return Err(format!("{at}: the key in ${var} is refused: {why}"));
                    }
                    hash_key(&v)
                }
                _ => continue,
            },
        };
        out.push(ApiKeyRecord {
            id: format!("config:{}", k.name),
            hash,
            tenant: k.tenant.clone(),
            name: k.name.clone(),
            role: k.role,
            agents: k.agents.clone(),
            created_at: String::new(),
            source: PolicySource::Config,
        });
    }
    Ok(out)
}

/// The config's `fromEnv` keys whose variable is unset or empty: (key name, variable).
pub fn unset_variables(config: &Config) -> Vec<(&str, &str)> {
    config
        .api_keys
        .iter()
        .filter_map(|k| match &k.source {
            KeySource::Env(var) if std::env::var(var).is_ok_and(|v| !v.is_empty()) => None,
            KeySource::Env(var) => Some((k.name.as_str(), var.as_str())),
            KeySource::Sha256(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_and_placeholders_are_weak_generated_ones_are_not() {
        assert!(weakness("a").is_some());
        assert!(weakness("replace-me-with-a-random-key").is_some());
        assert!(weakness("CHANGEME").is_some());
        assert!(weakness(&"x".repeat(31)).is_some());
        assert!(weakness(&"x".repeat(32)).is_none());
        assert!(weakness(&generate()).is_none());
        assert!(is_placeholder_hash(&hash_key(
            "replace-me-with-a-random-key"
        )));
        assert!(!is_placeholder_hash(&hash_key(&generate())));
    }
}
