//! The embedded store: SQLite in `<dataDir>/actgate.db` (WAL, `synchronous=FULL`).
//!
//! One connection behind a mutex; every call runs on the blocking pool so the async workers
//! never wait on disk. Schema changes are numbered migrations recorded in `user_version`;
//! a database from a newer actgate is refused rather than guessed at.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Agent, AgentStatus, ApiKeyRecord, Role, Store, StoreError, StoreResult, StoredPolicy,
    TokenRecord,
};

/// Migrations, applied in order; `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE api_keys (
        hash BLOB PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL
    );
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX agents_tenant ON agents(tenant, created_at);
    CREATE TABLE policies (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (tenant, name)
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        policy_ids TEXT,
        issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE INDEX tokens_revoked ON tokens(expires_at) WHERE revoked_at IS NOT NULL;
    "#,
    // 2: agent and policy ids are unique within a tenant, not across tenants (a global key
    // told one tenant, by a 409, which ids another tenant uses).
    r#"
    CREATE TABLE agents_v2 (
        id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    INSERT INTO agents_v2 (id, tenant, name, description, metadata, status, created_at, updated_at)
        SELECT id, tenant, name, description, metadata, status, created_at, updated_at FROM agents;
    DROP TABLE agents;
    ALTER TABLE agents_v2 RENAME TO agents;
    CREATE INDEX agents_tenant ON agents(tenant, created_at);
    CREATE TABLE policies_v2 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (tenant, id),
        UNIQUE (tenant, name)
    );
    INSERT INTO policies_v2 (seq, id, tenant, name, body, created_at, updated_at)
        SELECT seq, id, tenant, name, body, created_at, updated_at FROM policies;
    -- Keep the AUTOINCREMENT counter: seqs of deleted policies are never reused.
    DELETE FROM sqlite_sequence WHERE name = 'policies_v2';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'policies_v2', seq FROM sqlite_sequence WHERE name = 'policies';
    DROP TABLE policies;
    ALTER TABLE policies_v2 RENAME TO policies;
    "#,
    // 3: API keys get an id, a role (keys made before roles existed were all-powerful, so
    // they become admin) and an optional agent list; tokens record their signing key.
    r#"
    CREATE TABLE api_keys_v2 (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        agents TEXT,
        created_at TEXT NOT NULL
    );
    INSERT INTO api_keys_v2 (id, hash, tenant, name, role, agents, created_at)
        SELECT 'key_' || lower(hex(randomblob(12))), hash, tenant, name, 'admin', NULL, '' FROM api_keys;
    DROP TABLE api_keys;
    ALTER TABLE api_keys_v2 RENAME TO api_keys;
    ALTER TABLE tokens ADD COLUMN kid TEXT;
    CREATE INDEX tokens_live ON tokens(expires_at) WHERE revoked_at IS NULL;
    "#,
];

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return StoreError::Conflict(msg.clone().unwrap_or_else(|| "already exists".into()));
    }
    backend(e)
}

impl SqliteStore {
    /// Opens (creating if needed) `<dir>/actgate.db` and applies pending migrations.
    pub fn open(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let conn = Connection::open(dir.join("actgate.db")).map_err(backend)?;
        Self::init(conn)
    }

    /// An in-memory store, for tests and tools.
    pub fn in_memory() -> StoreResult<SqliteStore> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(conn: Connection) -> StoreResult<SqliteStore> {
        let conn = migrate(conn, "FULL", MIGRATIONS)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        locked(Arc::clone(&self.conn), f).await
    }
}

/// Runs `f` on the blocking pool with the lock held, so async workers never wait on disk.
async fn locked<S: Send + 'static, T: Send + 'static>(
    state: Arc<Mutex<S>>,
    f: impl FnOnce(&mut S) -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(move || {
        let mut guard = state
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        f(&mut guard)
    })
    .await
    .map_err(backend)?
}

/// Opens a database in WAL mode with the given `synchronous` level and applies its pending
/// migrations; a database from a newer actgate is refused.
fn migrate(
    mut conn: Connection,
    synchronous: &str,
    migrations: &[&str],
) -> StoreResult<Connection> {
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(backend)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend)?;
    let version = usize::try_from(version).map_err(backend)?;
    if version > migrations.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this actgate knows ({}); upgrade actgate",
            migrations.len()
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(conn)
}

fn agent_row(r: &Row<'_>) -> rusqlite::Result<Agent> {
    let metadata: String = r.get(4)?;
    let status: String = r.get(5)?;
    Ok(Agent {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        status: if status == "active" {
            AgentStatus::Active
        } else {
            AgentStatus::Revoked
        },
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        source: crate::policy::PolicySource::Api,
    })
}

const AGENT_COLS: &str = "id, tenant, name, description, metadata, status, created_at, updated_at";

fn policy_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_policy(row: (String, String, String, String)) -> StoreResult<StoredPolicy> {
    let (tenant, body, created_at, updated_at) = row;
    Ok(StoredPolicy {
        tenant,
        input: serde_json::from_str(&body).map_err(|e| backend(format!("stored policy: {e}")))?,
        created_at,
        updated_at,
    })
}

const TOKEN_COLS: &str = "id, tenant, agent_id, policy_ids, issued_at, expires_at, revoked_at, kid";

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let pol: Option<String> = r.get(3)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        agent_id: r.get(2)?,
        policy_ids: pol.and_then(|p| serde_json::from_str(&p).ok()),
        issued_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        kid: r.get(7)?,
    })
}

const KEY_COLS: &str = "id, hash, tenant, name, role, agents, created_at";

/// An `api_keys` row: id, hash, tenant, name, role, agents (JSON), created_at.
type KeyRow = (
    String,
    Vec<u8>,
    String,
    String,
    String,
    Option<String>,
    String,
);

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn to_key(row: KeyRow) -> StoreResult<ApiKeyRecord> {
    let (id, hash, tenant, name, role, agents, created_at) = row;
    Ok(ApiKeyRecord {
        hash: hash
            .try_into()
            .map_err(|_| backend("api key hash is not 32 bytes"))?,
        role: Role::parse(&role).ok_or_else(|| backend(format!("api key {id}: role {role:?}")))?,
        agents: agents
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|e| backend(format!("api key {id}: agents: {e}")))?,
        id,
        tenant,
        name,
        created_at,
        source: crate::policy::PolicySource::Api,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.with(move |c| {
            let agents = key
                .agents
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(backend)?;
            c.execute(
                &format!("INSERT INTO api_keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    key.id,
                    &key.hash[..],
                    key.tenant,
                    key.name,
                    key.role.as_str(),
                    agents,
                    key.created_at
                ],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = self
            .with(|c| {
                let mut st = c
                    .prepare(&format!(
                        "SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"
                    ))
                    .map_err(backend)?;
                let rows = st.query_map([], key_row).map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(backend)
            })
            .await?;
        rows.into_iter().map(to_key).collect()
    }

    async fn delete_api_key(&self, tenant: &str, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let row = self
            .with(move |c| {
                let tx = c.transaction().map_err(backend)?;
                let row = tx
                    .query_row(
                        &format!("SELECT {KEY_COLS} FROM api_keys WHERE tenant = ?1 AND id = ?2"),
                        params![tenant, id],
                        key_row,
                    )
                    .optional()
                    .map_err(backend)?;
                if row.is_some() {
                    tx.execute(
                        "DELETE FROM api_keys WHERE tenant = ?1 AND id = ?2",
                        params![tenant, id],
                    )
                    .map_err(backend)?;
                }
                tx.commit().map_err(backend)?;
                Ok(row)
            })
            .await?;
        row.map(to_key).transpose()
    }

    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()> {
        let a = agent.clone();
        self.with(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO agents ({AGENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    a.id,
                    a.tenant,
                    a.name,
                    a.description,
                    serde_json::Value::Object(a.metadata).to_string(),
                    a.status.as_str(),
                    a.created_at,
                    a.updated_at
                ],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn agent(&self, tenant: &str, id: &str) -> StoreResult<Option<Agent>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                agent_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn agents(&self, tenant: &str) -> StoreResult<Vec<Agent>> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {AGENT_COLS} FROM agents WHERE tenant = ?1 ORDER BY created_at, id"
                ))
                .map_err(backend)?;
            let rows = st.query_map(params![tenant], agent_row).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn all_agents(&self) -> StoreResult<Vec<Agent>> {
        self.with(|c| {
            let mut st = c
                .prepare(&format!("SELECT {AGENT_COLS} FROM agents"))
                .map_err(backend)?;
            let rows = st.query_map([], agent_row).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn set_agent_status(
        &self,
        tenant: &str,
        id: &str,
        status: AgentStatus,
        at: &str,
    ) -> StoreResult<Option<Agent>> {
        let (tenant, id, at) = (tenant.to_string(), id.to_string(), at.to_string());
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE agents SET status = ?1, updated_at = ?2 WHERE tenant = ?3 AND id = ?4",
                    params![status.as_str(), at, tenant, id],
                )
                .map_err(backend)?;
            if n == 0 {
                return Ok(None);
            }
            c.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                agent_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn insert_policy(&self, p: &StoredPolicy) -> StoreResult<()> {
        let p = p.clone();
        self.with(move |c| {
            let body = serde_json::to_string(&p.input).map_err(backend)?;
            c.execute(
                "INSERT INTO policies (id, tenant, name, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.id(), p.tenant, p.input.name, body, p.created_at, p.updated_at],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn update_policy(&self, p: &StoredPolicy) -> StoreResult<bool> {
        let p = p.clone();
        self.with(move |c| {
            let body = serde_json::to_string(&p.input).map_err(backend)?;
            let n = c
                .execute(
                    "UPDATE policies SET name = ?1, body = ?2, updated_at = ?3 WHERE tenant = ?4 AND id = ?5",
                    params![p.input.name, body, p.updated_at, p.tenant, p.id()],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_policy(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with(move |c| {
            let n = c
                .execute(
                    "DELETE FROM policies WHERE tenant = ?1 AND id = ?2",
                    params![tenant, id],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn policy(&self, tenant: &str, id: &str) -> StoreResult<Option<StoredPolicy>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let row = self
            .with(move |c| {
                c.query_row(
                    "SELECT tenant, body, created_at, updated_at FROM policies WHERE tenant = ?1 AND id = ?2",
                    params![tenant, id],
                    policy_row,
                )
                .optional()
                .map_err(backend)
            })
            .await?;
        row.map(to_policy).transpose()
    }

    async fn policies(&self, tenant: &str) -> StoreResult<Vec<StoredPolicy>> {
        let tenant = tenant.to_string();
        let rows = self
            .with(move |c| {
                let mut st = c
                    .prepare("SELECT tenant, body, created_at, updated_at FROM policies WHERE tenant = ?1 ORDER BY seq")
                    .map_err(backend)?;
                let rows = st.query_map(params![tenant], policy_row).map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(backend)
            })
            .await?;
        rows.into_iter().map(to_policy).collect()
    }

    async fn all_policies(&self) -> StoreResult<Vec<StoredPolicy>> {
        let rows = self
            .with(|c| {
                let mut st = c
                    .prepare(
                        "SELECT tenant, body, created_at, updated_at FROM policies ORDER BY seq",
                    )
                    .map_err(backend)?;
                let rows = st.query_map([], policy_row).map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(backend)
            })
            .await?;
        rows.into_iter().map(to_policy).collect()
    }

    async fn insert_token(&self, t: &TokenRecord) -> StoreResult<()> {
        let t = t.clone();
        self.with(move |c| {
            let pol = t
                .policy_ids
                .as_ref()
                .map(|p| serde_json::to_string(p).unwrap_or_default());
            c.execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    t.id,
                    t.tenant,
                    t.agent_id,
                    pol,
                    t.issued_at,
                    t.expires_at,
                    t.revoked_at,
                    t.kid
                ],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(
        &self,
        tenant: &str,
        id: &str,
        at: i64,
    ) -> StoreResult<Option<TokenRecord>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?1) WHERE tenant = ?2 AND id = ?3",
                params![at, tenant, id],
            )
            .map_err(backend)?;
            c.query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                token_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn token(&self, tenant: &str, id: &str) -> StoreResult<Option<TokenRecord>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                token_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn live_tokens_by_kid(&self, now: i64) -> StoreResult<Vec<(String, u64)>> {
        self.with(move |c| {
            let mut st = c
                .prepare(
                    "SELECT kid, COUNT(*) FROM tokens WHERE revoked_at IS NULL AND expires_at >= ?1 AND kid IS NOT NULL GROUP BY kid",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![now], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn revoked_token_ids(&self, now: i64) -> StoreResult<Vec<String>> {
        self.with(move |c| {
            // Keep a day of margin past expiry so clock skew never resurrects a revoked token.
            let mut st = c
                .prepare("SELECT id FROM tokens WHERE revoked_at IS NOT NULL AND expires_at >= ?1")
                .map_err(backend)?;
            let rows = st
                .query_map(params![now - 86_400], |r| r.get(0))
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_2_keeps_rows_and_scopes_ids_to_a_tenant() {
        // A database at schema 1, with an agent and a policy.
        let conn = migrate(
            Connection::open_in_memory().unwrap(),
            "FULL",
            &MIGRATIONS[..1],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO agents VALUES ('agent_a', 't1', 'A', NULL, '{}', 'active', 'c', 'u');
             INSERT INTO policies (id, tenant, name, body, created_at, updated_at)
                 VALUES ('pol_a', 't1', 'P', '{}', 'c', 'u');
             INSERT INTO policies (id, tenant, name, body, created_at, updated_at)
                 VALUES ('pol_gone', 't1', 'G', '{}', 'c', 'u');
             DELETE FROM policies WHERE id = 'pol_gone';",
        )
        .unwrap();
        let conn = migrate(conn, "FULL", MIGRATIONS).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let name: String = conn
            .query_row(
                "SELECT name FROM agents WHERE tenant = 't1' AND id = 'agent_a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(name, "A");
        // The same ids in another tenant are other rows; twice in one tenant is a conflict.
        conn.execute_batch(
            "INSERT INTO agents VALUES ('agent_a', 't2', 'B', NULL, '{}', 'active', 'c', 'u');
             INSERT INTO policies (id, tenant, name, body, created_at, updated_at)
                 VALUES ('pol_a', 't2', 'P', '{}', 'c', 'u');",
        )
        .unwrap();
        assert!(
            conn.execute_batch(
                "INSERT INTO agents VALUES ('agent_a', 't1', 'C', NULL, '{}', 'active', 'c', 'u')"
            )
            .is_err()
        );
        assert!(
            conn.execute_batch(
                "INSERT INTO policies (id, tenant, name, body, created_at, updated_at)
                     VALUES ('pol_a', 't1', 'Q', '{}', 'c', 'u')"
            )
            .is_err()
        );
        // Policy order (seq) survives, and the deleted policy's seq (2) is not reused.
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM policies ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(seqs, vec![1, 3]);
    }
}
