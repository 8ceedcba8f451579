//! The store: agents, policies, token metadata, revocations, API keys and the audit index.
//!
//! A trait, so the embedded SQLite implementation ([`sqlite::SqliteStore`]) can be joined by
//! PostgreSQL for several replicas without touching anything else: nothing outside this module
//! may assume SQLite. The hot path never calls the store; it reads the snapshot built from it.
//! Tokens themselves are never stored — only their metadata (id, agent, expiry, revocation).

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::policy::PolicyInput;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (duplicate id or name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed (disk, corruption, a query the database refused).
    #[error("store unavailable: {0}")]
    Backend(String),
    /// The backend cannot be reached (the shared PostgreSQL is down or unreachable).
    #[error("store unreachable: {0}")]
    Unavailable(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store the config names: `store.postgres` (connecting, and migrating when
/// `migrate` is on), else the embedded SQLite store in `dataDir`. For the CLI commands that
/// read or write the store beside a running gateway.
pub async fn open_configured(
    config: &crate::config::Config,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    match &config.store.postgres {
        None => Ok(std::sync::Arc::new(sqlite::SqliteStore::open(
            &config.data_dir,
        )?)),
        Some(pg) => {
            let settings = postgres::PgSettings {
                url: pg.url.resolve().map_err(StoreError::Backend)?,
                max_connections: 2,
                ca_file: pg.ca_file.clone(),
            };
            Ok(std::sync::Arc::new(
                postgres::PgStore::connect(&settings, pg.migrate).await?,
            ))
        }
    }
}

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
    /// RFC 3339 (absent for agents of the config file).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// RFC 3339 (absent for agents of the config file).
    #[serde(skip_serializing_if = "String::is_empty")]
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
    /// The signing key's id (absent for tokens recorded before actgate kept it).
    pub kid: Option<String>,
}

impl TokenRecord {
    /// The record of a token just issued with `claims`.
    pub fn issued(claims: &crate::token::Claims) -> TokenRecord {
        TokenRecord {
            id: claims.jti.to_string(),
            tenant: claims.tenant.to_string(),
            agent_id: claims.agent.to_string(),
            policy_ids: claims.policy_ids.clone(),
            issued_at: claims.issued_at,
            expires_at: claims.expires_at,
            revoked_at: None,
            kid: Some(claims.kid.clone()),
        }
    }
}

/// What an API key may do. Each key has exactly one role; see [`Role::may`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, in its tenant.
    Admin,
    /// Issue and revoke tokens (optionally only for listed agents) and ask `/v1/enforce`:
    /// what the tool-runner that mints an agent's tokens needs, and nothing that widens them.
    Issuer,
    /// `/v1/enforce` only.
    Enforcer,
    /// Read the audit trail, agents and policies.
    Auditor,
}

/// A kind of API call, for role checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `GET /v1/agents…`, `GET /v1/policies…`.
    Read,
    /// `GET /v1/audit`.
    ReadAudit,
    /// Create or revoke agents.
    WriteAgents,
    /// Create, change or delete policies.
    WritePolicies,
    /// Issue or revoke tokens.
    Tokens,
    /// `POST /v1/enforce`.
    Enforce,
    /// Create, list or delete API keys.
    ManageKeys,
    /// Anything no route serves (answered 404 or 405): admin only, so no role learns more.
    Unlisted,
}

impl Permission {
    /// What the call is, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read agents and policies",
            Permission::ReadAudit => "read the audit trail",
            Permission::WriteAgents => "create or revoke agents",
            Permission::WritePolicies => "create, change or delete policies",
            Permission::Tokens => "issue or revoke tokens",
            Permission::Enforce => "ask for decisions",
            Permission::ManageKeys => "manage API keys",
            Permission::Unlisted => "make this call",
        }
    }

    /// The least role that may do it (admin may do everything).
    pub fn least_role(self) -> &'static str {
        match self {
            Permission::Read | Permission::ReadAudit => "auditor",
            Permission::WriteAgents
            | Permission::WritePolicies
            | Permission::ManageKeys
            | Permission::Unlisted => "admin",
            Permission::Tokens => "issuer",
            Permission::Enforce => "enforcer (or issuer)",
        }
    }
}

impl Role {
    /// `admin`, `issuer`, `enforcer` or `auditor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Issuer => "issuer",
            Role::Enforcer => "enforcer",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "issuer" => Some(Role::Issuer),
            "enforcer" => Some(Role::Enforcer),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    /// Whether this role may make calls of kind `p` (an issuer's agent list is checked
    /// separately, per agent).
    pub fn may(self, p: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Issuer => matches!(p, Permission::Tokens | Permission::Enforce),
            Role::Enforcer => matches!(p, Permission::Enforce),
            Role::Auditor => matches!(p, Permission::Read | Permission::ReadAudit),
        }
    }
}

/// An API key, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    /// `key_…` for keys made through the API or generated; `config:<name>` for keys of the
    /// config file.
    pub id: String,
    /// SHA-256 of the key.
    #[serde(skip)]
    pub hash: [u8; 32],
    /// The tenant it acts for.
    #[serde(rename = "tenantId")]
    pub tenant: String,
    /// Name, for logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For an `issuer`: the only agents it may issue and revoke tokens for (absent: all of
    /// its tenant's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// RFC 3339 (empty for config keys).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// `api` (made through the API, or generated at the first start) or `config`.
    pub source: crate::policy::PolicySource,
}

/// Persistent state behind the gateway.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Adds an API key; `Conflict` when its hash is taken.
    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    /// Every stored API key.
    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Deletes an API key of a tenant; `None` when it does not exist there.
    async fn delete_api_key(&self, tenant: &str, id: &str) -> StoreResult<Option<ApiKeyRecord>>;

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
    /// One token's record.
    async fn token(&self, tenant: &str, id: &str) -> StoreResult<Option<TokenRecord>>;
    /// Tokens neither expired by `now` nor revoked, counted by signing key id.
    async fn live_tokens_by_kid(&self, now: i64) -> StoreResult<Vec<(String, u64)>>;

    /// Whether the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
}
