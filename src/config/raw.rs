//! Raw config types: exactly what the YAML says, before validation.
//!
//! Every struct rejects unknown keys. Fields that are required are still `Option` here, so the
//! validation pass can report every missing one at once instead of stopping at the first.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written like `30s`, `5m`, `1h`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as `30s`, `5m` or `1h`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "invalid duration `{s}` ({e}); write it like `30s`, `5m` or `1h`"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// Listener addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawListen {
    pub proxy: Option<String>,
    pub api: Option<String>,
    pub admin: Option<String>,
    pub workers: Option<u64>,
}

/// One API key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawApiKey {
    pub name: Option<String>,
    pub from_env: Option<String>,
    pub sha256: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    pub agents: Option<Vec<String>>,
}

/// `api:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawApi {
    pub policy_writes: Option<bool>,
}

/// `tokens:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTokens {
    pub default_ttl: Option<Dur>,
    pub max_ttl: Option<Dur>,
    pub clock_skew: Option<Dur>,
    pub cache_capacity: Option<u64>,
    pub max_concurrent_verifications: Option<u64>,
    pub keys_dir: Option<String>,
}

/// `audit:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAudit {
    pub durability: Option<String>,
    pub on_full: Option<String>,
    pub queue_capacity: Option<u64>,
    pub segment_max_bytes: Option<u64>,
    pub flush_interval: Option<Dur>,
    pub checkpoint_every: Option<u64>,
    pub refusal_rate: Option<u64>,
    pub mcp_arguments: Option<bool>,
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLimits {
    pub max_body_bytes: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_headers: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_json_depth: Option<u64>,
    pub max_buffered_bodies: Option<u64>,
    pub header_read_timeout: Option<Dur>,
    pub body_read_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub drain_timeout: Option<Dur>,
}

/// One agent of `agents:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAgent {
    pub id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tenant: Option<String>,
    pub status: Option<String>,
    pub sender_constrained: Option<bool>,
}

/// `metrics:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMetrics {
    pub per_agent_labels: Option<bool>,
    pub max_agent_labels: Option<u64>,
}

/// One upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawUpstream {
    pub url: Option<String>,
    pub command: Option<Vec<String>>,
    pub env: Option<std::collections::BTreeMap<String, String>>,
    pub timeout: Option<Dur>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub server_name: Option<String>,
}

/// `tls:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTls {
    pub proxy: Option<RawTlsListener>,
    pub api: Option<RawTlsListener>,
}

/// `tls.proxy` / `tls.api`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTlsListener {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub identity: Option<RawIdentity>,
}

/// `tls.proxy.identity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIdentity {
    pub san: Option<String>,
    pub template: Option<String>,
}

/// `reload:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawReload {
    pub watch: Option<bool>,
    pub interval: Option<Dur>,
}

/// `rows:` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRows {
    pub query: Option<String>,
    pub fixed: Option<u64>,
}

/// `recipients:` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRecipients {
    pub json: Vec<String>,
}

/// One route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRoute {
    pub name: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub upstream: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub rows: Option<RawRows>,
    pub recipients: Option<RawRecipients>,
    pub mode: Option<String>,
    pub sender_constrained: Option<bool>,
}

/// One entry of `mcp:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMcp {
    pub name: Option<String>,
    pub path: Option<String>,
    pub upstream: Option<String>,
    pub tools: Option<std::collections::BTreeMap<String, RawTool>>,
    pub mode: Option<String>,
    pub allow_methods: Option<Vec<String>>,
    pub sse_idle_timeout: Option<Dur>,
    pub max_sessions: Option<u64>,
    pub max_sessions_per_agent: Option<u64>,
    pub session_idle_timeout: Option<Dur>,
}

/// One tool of an `mcp` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTool {
    pub action: Option<String>,
    pub resource: Option<String>,
    pub rows: Option<RawToolRows>,
    pub recipients: Option<RawToolRecipients>,
}

/// `rows:` of a tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawToolRows {
    pub argument: Option<String>,
    pub fixed: Option<u64>,
}

/// `recipients:` of a tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawToolRecipients {
    pub arguments: Vec<String>,
}

/// The names of the top-level sections, in documentation order.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "store",
    "dataDir",
    "tenant",
    "apiKeys",
    "api",
    "agents",
    "tokens",
    "audit",
    "limits",
    "metrics",
    "tls",
    "reload",
    "upstreams",
    "routes",
    "mcp",
    "policies",
];

/// The `store` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStore {
    pub postgres: Option<RawPostgres>,
    pub max_staleness: Option<Dur>,
    pub poll_interval: Option<Dur>,
    pub replica_id: Option<String>,
}

/// `store.postgres`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPostgres {
    pub url: Option<String>,
    pub from_env: Option<String>,
    pub max_connections: Option<u64>,
    pub ca_file: Option<String>,
    pub migrate: Option<bool>,
}
