//! The store: agents, policies, token metadata, revocations, API keys and the audit index.
//!
//! A trait, so the embedded SQLite implementation ([`sqlite::SqliteStore`]) can be joined by
//! PostgreSQL for several replicas without touching anything else: nothing outside this module
//! may assume SQLite. The hot path never calls the store; it reads the snapshot built from it.
//! Tokens themselves are never stored — only their metadata (id, agent, expiry, revocation).

pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audit::{AuditEvent, AuditFilter};
use crate::policy::PolicyInput;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (duplicate id or name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed (disk, corruption, connection).
    #[error("store unavailable: {0}")]
    Backend(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Whether an agent may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Its tokens work.
    Active,
    /// Every token it holds is denied.
    Revoked,
}

impl AgentStatus {
    /// `active` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Revoked => "revoked",
        }
    }
}

/// A registered AI agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// `agent_…`.
    pub id: String,
    /// Owning tenant.
    #[serde(rename = "tenantId")]
    pub tenant: String,
    /// Human name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Free key/values, e.g. `openai_assistant_id`.
    pub metadata: Map<String, Value>,
    /// Active or revoked.
    pub status: AgentStatus,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// `api`, or `config` for agents as code (read-only through the API).
    pub source: crate::policy::PolicySource,
}

impl Agent {
    /// The API view of an agent defined in the config.
    pub fn from_config(a: &crate::config::ConfigAgent) -> Agent {
        let mut metadata = Map::new();
        if a.sender_constrained {
            metadata.insert("senderConstrained".into(), Value::Bool(true));
        }
        Agent {
            id: a.id.clone(),
            tenant: a.tenant.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            metadata,
            status: if a.active {
                AgentStatus::Active
            } else {
                AgentStatus::Revoked
            },
            created_at: String::new(),
            updated_at: String::new(),
            source: crate::policy::PolicySource::Config,
        }
    }
}

/// A policy created through the API, as submitted (with its id), plus bookkeeping.
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    /// Owning tenant.
    pub tenant: String,
    /// The input, `id` set. Re-validated whenever it is loaded.
    pub input: PolicyInput,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl StoredPolicy {
    /// The policy id.
    pub fn id(&self) -> &str {
        self.input.id.as_deref().unwrap_or_default()
    }
}

/// What the store keeps of an issued token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// `tok_…` (the token's `jti`).
    pub id: String,
    /// Owning tenant.
    #[serde(rename = "tenantId")]
    pub tenant: String,
    /// The agent it was issued to.
    pub agent_id: String,
    /// Its `policyIds`, if narrowed.
    pub policy_ids: Option<Vec<String>>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    /// The record of a token just issued with `claims`.
    pub fn issued(claims: &crate::token::Claims) -> TokenRecord {
        TokenRecord {
            id: claims.jti.clone(),
            tenant: claims.tenant.clone(),
            agent_id: claims.agent.clone(),
            policy_ids: claims.policy_ids.clone(),
            issued_at: claims.issued_at,
            expires_at: claims.expires_at,
            revoked_at: None,
        }
    }
}

/// An API key, by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// The tenant it acts for.
    pub tenant: String,
    /// Name, for logs.
    pub name: String,
}

/// Persistent state behind the gateway.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Adds an API key (idempotent on the hash).
    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    /// Every API key.
    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;

    /// Registers an agent; `Conflict` when the id is taken.
    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()>;
    /// One agent of a tenant.
    async fn agent(&self, tenant: &str, id: &str) -> StoreResult<Option<Agent>>;
    /// A tenant's agents, oldest first.
    async fn agents(&self, tenant: &str) -> StoreResult<Vec<Agent>>;
    /// Every agent of every tenant (for the snapshot).
    async fn all_agents(&self) -> StoreResult<Vec<Agent>>;
    /// Sets an agent's status; `None` when it does not exist in the tenant.
    async fn set_agent_status(
        &self,
        tenant: &str,
        id: &str,
        status: AgentStatus,
        at: &str,
    ) -> StoreResult<Option<Agent>>;

    /// Adds a policy; `Conflict` when its id or (tenant, name) is taken.
    async fn insert_policy(&self, policy: &StoredPolicy) -> StoreResult<()>;
    /// Replaces a policy, keeping its position; false when absent.
    async fn update_policy(&self, policy: &StoredPolicy) -> StoreResult<bool>;
    /// Deletes a policy; false when absent.
    async fn delete_policy(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    /// One policy of a tenant.
    async fn policy(&self, tenant: &str, id: &str) -> StoreResult<Option<StoredPolicy>>;
    /// A tenant's API policies, in creation order.
    async fn policies(&self, tenant: &str) -> StoreResult<Vec<StoredPolicy>>;
    /// Every API policy of every tenant, in creation order (for the snapshot).
    async fn all_policies(&self) -> StoreResult<Vec<StoredPolicy>>;

    /// Records an issued token.
    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()>;
    /// Revokes a token of a tenant; `None` when it does not exist there.
    async fn revoke_token(
        &self,
        tenant: &str,
        id: &str,
        at: i64,
    ) -> StoreResult<Option<TokenRecord>>;
    /// Ids of revoked tokens that have not expired by `now` (older ones cannot verify anyway).
    async fn revoked_token_ids(&self, now: i64) -> StoreResult<Vec<String>>;

    /// Appends audit events to the queryable index, in one transaction.
    async fn append_audit(&self, events: Vec<AuditEvent>) -> StoreResult<()>;
    /// Highest audit sequence number indexed (0 when none).
    async fn last_audit_seq(&self) -> StoreResult<u64>;
    /// Removes every indexed audit event (before a rebuild from the log).
    async fn clear_audit(&self) -> StoreResult<()>;
    /// A tenant's audit events matching `filter`, newest first.
    async fn audit(&self, tenant: &str, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;
    /// Whether the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
}
