//! The shared store: PostgreSQL, for several replicas (`store.postgres`).
//!
//! Every write runs in a transaction that also bumps the change counter (`actgate_meta`,
//! key `version`) and sends `NOTIFY actgate_changes`; each replica LISTENs on a connection of
//! its own and polls the counter every `store.pollInterval` (covering lost notifications and
//! reconnects), and rebuilds its snapshot when it moved ([`PgStore::watch`]). Schema changes
//! are numbered migrations recorded in `actgate_schema`; a database from a newer actgate is
//! refused. The URL's password is a secret: it is never logged and never in an error
//! message (errors name the host, port and database only).
//!
//! Signing keys' public halves are published in `signing_keys`, so every replica verifies
//! every replica's tokens; each replica's audit index rows (with the chain's hashes and the
//! replica's id) go to `audit`, so `GET /v1/audit` on any replica reads every replica's events
//! and `actgate audit verify --from-store` checks every chain from the database alone.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::{
    Agent, AgentStatus, ApiKeyRecord, Role, Store, StoreError, StoreResult, StoredPolicy,
    TokenRecord,
};

/// Migrations, applied in order in one transaction each; `actgate_schema.version` is the
/// number applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema (SQLite's schema 3, plus what several replicas share).
    r#"
    CREATE TABLE actgate_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO actgate_meta (key, value) VALUES ('version', 1);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash BYTEA NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        agents TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE agents (
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
    CREATE INDEX agents_tenant ON agents (tenant, created_at);
    CREATE TABLE policies (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (tenant, id),
        UNIQUE (tenant, name)
    );
    CREATE TABLE tokens (
        id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        policy_ids TEXT,
        issued_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT,
        kid TEXT,
        PRIMARY KEY (tenant, id)
    );
    CREATE INDEX tokens_revoked ON tokens (expires_at) WHERE revoked_at IS NOT NULL;
    CREATE INDEX tokens_live ON tokens (expires_at) WHERE revoked_at IS NULL;
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        retired BOOLEAN NOT NULL DEFAULT FALSE,
        published_by TEXT NOT NULL,
        published_at BIGINT NOT NULL
    );
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        replica TEXT NOT NULL,
        seq BIGINT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        tenant TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        agent_id TEXT,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        decision TEXT NOT NULL,
        decision_id TEXT,
        line TEXT NOT NULL,
        UNIQUE (replica, seq)
    );
    CREATE INDEX audit_tenant ON audit (tenant, id);
    CREATE INDEX audit_agent ON audit (tenant, agent_id, id);
    CREATE INDEX audit_resource ON audit (tenant, resource, id);
    CREATE INDEX audit_time ON audit (tenant, time_ms);
    CREATE INDEX audit_decision ON audit (decision_id) WHERE decision_id IS NOT NULL;
    "#,
    // 2: the signed checkpoints of each chain, so the chains verify from the database alone
    // against keys kept elsewhere (a tail cut off, a chain rewritten whole).
    r#"
    CREATE TABLE audit_checkpoints (
        replica TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        time TEXT NOT NULL,
        kid TEXT NOT NULL,
        sig TEXT NOT NULL,
        PRIMARY KEY (replica, seq)
    );
    "#,
];

/// The notification channel of changes.
pub const CHANNEL: &str = "actgate_changes";

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/db?sslmode=...` (a secret).
    pub url: String,
    /// Most pooled connections.
    pub max_connections: usize,
    /// CA bundle for TLS to the database (else the system's Mozilla roots).
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `url` without its password (for logs and errors).
pub fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => describe(&c),
        Err(_) => "<an unparsable postgres URL>".into(),
    }
}

fn describe(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        c.get_user().unwrap_or("?"),
        c.get_dbname().unwrap_or("?")
    )
}

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: Tls,
    /// host:port/db, for messages (no password).
    pub target: String,
}

#[derive(Clone)]
enum Tls {
    Off,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Commits `tx`; with `changed`, also bumps the change counter and notifies the replicas
/// (the notification is delivered at commit, only if it commits).
async fn commit(tx: deadpool_postgres::Transaction<'_>, changed: bool) -> StoreResult<()> {
    if changed {
        tx.batch_execute(&format!(
            "UPDATE actgate_meta SET value = value + 1 WHERE key = 'version'; NOTIFY {CHANNEL}"
        ))
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}

/// A backend error, without anything secret: tokio-postgres errors carry no password, but
/// the message is kept to the server's text and the SQL state.
fn backend(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
        return StoreError::Unavailable(format!("PostgreSQL: {}", first_line(&e.to_string())));
    }
    // The server going away, restarting, full, or read-only after a failover: unreachable for
    // now (503), not broken (500).
    if let Some(code) = e.code() {
        let c = code.code();
        if c.starts_with("08")
            || matches!(c, "57P01" | "57P02" | "57P03" | "53300" | "25006" | "57014")
        {
            return StoreError::Unavailable(format!("PostgreSQL: {}", first_line(&e.to_string())));
        }
    }
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(
            e.as_db_error()
                .map_or_else(|| "already exists".into(), |d| d.message().to_string()),
        ),
        _ => StoreError::Backend(format!("PostgreSQL: {}", first_line(&e.to_string()))),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => backend(e),
        other => StoreError::Unavailable(format!("PostgreSQL pool: {other}")),
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored JSON: {e}"))
}

impl PgStore {
    /// Connects (the pool connects lazily; this checks one connection) and, with `migrate`,
    /// applies pending migrations; refuses a database whose schema is newer than this actgate.
    pub async fn connect(settings: &PgSettings, migrate: bool) -> StoreResult<PgStore> {
        let config: tokio_postgres::Config = settings.url.parse().map_err(|_| {
            StoreError::Backend(
                "store.postgres.url is not a PostgreSQL URL (postgres://user:password@host:port/db)".into(),
            )
        })?;
        let mut config = config;
        // A dead connection (a partition, not a refusal) is noticed, and a connect does not
        // hang: the watcher's freshness depends on answers arriving.
        config
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10))
            // No statement hangs an API write or the watcher for long.
            .options("-c statement_timeout=10000")
            .application_name("actgate");
        let target = describe(&config);
        // TLS unless the URL says sslmode=disable. `prefer` (the driver's default when the URL
        // names no mode) would fall back to plaintext when a man in the middle answers "no
        // TLS": it is taken as `require`, and rustls verifies the server's certificate and
        // name, so there is no downgrade.
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable
            && settings.ca_file.is_some()
        {
            tracing::warn!(database = %target, "store.postgres.caFile is set but the URL says sslmode=disable: the connection is plaintext and the CA is not used");
        }
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => Tls::Off,
            _ => {
                let client = crate::tls::client_config(settings.ca_file.as_deref(), None)
                    .map_err(|e| StoreError::Backend(format!("store.postgres TLS: {e}")))?;
                Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(client))
            }
        };
        let mgr_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match &tls {
            Tls::Off => Manager::from_config(config.clone(), NoTls, mgr_config),
            Tls::Rustls(t) => Manager::from_config(config.clone(), t.clone(), mgr_config),
        };
        let pool = Pool::builder(mgr)
            .max_size(settings.max_connections.max(1))
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL pool: {e}")))?;
        let store = PgStore {
            pool,
            config,
            tls,
            target,
        };
        store.check_schema(migrate).await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies pending migrations (with `migrate`), else checks the schema is current.
    /// Returns the schema version. Migrations hold an advisory lock: replicas starting at once
    /// apply each one once.
    pub async fn check_schema(&self, migrate: bool) -> StoreResult<usize> {
        let mut c = self.client().await?;
        if !migrate {
            // Read only: a replica (or `audit verify --from-store` under a read-only role)
            // checks the version and changes nothing.
            let row = c
                .query_opt(
                    "SELECT version FROM actgate_schema WHERE to_regclass('actgate_schema') IS NOT NULL",
                    &[],
                )
                .await;
            let version = match row {
                Ok(Some(r)) => r.get::<_, i32>(0) as usize,
                Ok(None) => 0,
                // No table yet (undefined_table): version 0.
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
                Err(e) => return Err(backend(e)),
            };
            if version > MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "database schema version {version} is newer than this actgate knows ({}); upgrade actgate",
                    MIGRATIONS.len()
                )));
            }
            if version < MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "database schema version {version}, this actgate needs {}: run `actgate migrate` (or set store.postgres.migrate: true)",
                    MIGRATIONS.len()
                )));
            }
            return Ok(version);
        }
        let tx = c.transaction().await.map_err(backend)?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7310542); CREATE TABLE IF NOT EXISTS actgate_schema (version INTEGER NOT NULL); \
             INSERT INTO actgate_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM actgate_schema)",
        )
        .await
        .map_err(backend)?;
        let version: i32 = tx
            .query_one("SELECT version FROM actgate_schema", &[])
            .await
            .map_err(backend)?
            .get(0);
        let version = version as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "database schema version {version} is newer than this actgate knows ({}); upgrade actgate",
                MIGRATIONS.len()
            )));
        }
        if version < MIGRATIONS.len() && !migrate {
            return Err(StoreError::Backend(format!(
                "database schema version {version}, this actgate needs {}: run `actgate migrate` (or set store.postgres.migrate: true)",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.batch_execute(sql).await.map_err(backend)?;
            tx.execute(
                "UPDATE actgate_schema SET version = $1",
                &[&((i + 1) as i32)],
            )
            .await
            .map_err(backend)?;
            tracing::info!(version = i + 1, database = %self.target, "store migration applied");
        }
        tx.commit().await.map_err(backend)?;
        Ok(MIGRATIONS.len())
    }

    /// The change counter.
    pub async fn change_version(&self) -> StoreResult<i64> {
        let c = self.client().await?;
        c.query_one("SELECT value FROM actgate_meta WHERE key = 'version'", &[])
            .await
            .map(|r| r.get(0))
            .map_err(backend)
    }

    /// Listens for change notifications on a connection of its own, calling `notified` for
    /// each, until the connection fails (returned as an error: the caller reconnects).
    pub async fn listen(&self, notified: &(dyn Fn() + Send + Sync)) -> StoreResult<()> {
        match &self.tls {
            Tls::Off => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(backend)?;
                listen_on(client, conn, notified).await
            }
            Tls::Rustls(t) => {
                let (client, conn) = self.config.connect(t.clone()).await.map_err(backend)?;
                listen_on(client, conn, notified).await
            }
        }
    }

    /// Publishes public signing keys (kid, base64 public key) and marks the given kids
    /// retired, as seen by replica `by`.
    pub async fn publish_keys(
        &self,
        keys: &[(String, String)],
        retired: &[String],
        by: &str,
    ) -> StoreResult<()> {
        let keys = keys.to_vec();
        let retired = retired.to_vec();
        let by = by.to_string();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let mut changed = false;
        let now = crate::audit::now_ms();
        for (kid, public) in &keys {
            let n = tx
                        .execute(
                            "INSERT INTO signing_keys (kid, public_key, published_by, published_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING",
                            &[kid, public, &by, &now],
                        )
                        .await
                        .map_err(backend)?;
            changed |= n > 0;
        }
        for kid in &retired {
            let n = tx
                .execute(
                    "UPDATE signing_keys SET retired = TRUE WHERE kid = $1 AND NOT retired",
                    &[kid],
                )
                .await
                .map_err(backend)?;
            changed |= n > 0;
        }
        commit(tx, changed).await?;
        Ok(())
    }

    /// Published public keys: (kid, base64 public key, retired).
    pub async fn published_keys(&self) -> StoreResult<Vec<(String, String, bool)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT kid, public_key, retired FROM signing_keys ORDER BY kid",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Writes audit index rows of replica `replica` (its seq, chain hashes and line); rows
    /// already there (same replica and seq) are skipped, so a resend after a failure is safe.
    pub async fn append_audit(&self, replica: &str, rows: &[AuditRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement per batch (arrays unnested server-side): a replica serving thousands of
        // requests a second ships thousands of rows a second.
        let col = |f: &dyn Fn(&AuditRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
        let opt = |f: &dyn Fn(&AuditRow) -> Option<String>| {
            rows.iter().map(f).collect::<Vec<Option<String>>>()
        };
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq as i64).collect();
        let times: Vec<i64> = rows.iter().map(|r| r.time_ms).collect();
        let (prev, hash, tenant, kind) = (
            col(&|r| r.prev_hash.clone()),
            col(&|r| r.hash.clone()),
            col(&|r| r.tenant.clone()),
            col(&|r| r.kind.clone()),
        );
        let (action, resource, decision, line) = (
            col(&|r| r.action.clone()),
            col(&|r| r.resource.clone()),
            col(&|r| r.decision.clone()),
            col(&|r| r.line.clone()),
        );
        let (agent, decision_id) = (
            opt(&|r| r.agent_id.clone()),
            opt(&|r| r.decision_id.clone()),
        );
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit (replica, seq, prev_hash, hash, tenant, time_ms, kind, agent_id, action, resource, decision, decision_id, line) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[]) \
             ON CONFLICT (replica, seq) DO NOTHING",
            &[
                &replica,
                &seqs,
                &prev,
                &hash,
                &tenant,
                &times,
                &kind,
                &agent,
                &action,
                &resource,
                &decision,
                &decision_id,
                &line,
            ],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// Copies signed checkpoints of chain `replica` (those already there are kept).
    pub async fn append_checkpoints(
        &self,
        replica: &str,
        checkpoints: &[crate::audit::log::Checkpoint],
    ) -> StoreResult<()> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        let seqs: Vec<i64> = checkpoints.iter().map(|c| c.seq as i64).collect();
        let col = |f: &dyn Fn(&crate::audit::log::Checkpoint) -> String| {
            checkpoints.iter().map(f).collect::<Vec<String>>()
        };
        let (hash, time, kid, sig) = (
            col(&|c| c.hash.clone()),
            col(&|c| c.time.clone()),
            col(&|c| c.kid.clone()),
            col(&|c| c.sig.clone()),
        );
        c.execute(
            "INSERT INTO audit_checkpoints (replica, seq, hash, time, kid, sig) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) \
             ON CONFLICT (replica, seq) DO NOTHING",
            &[&replica, &seqs, &hash, &time, &kid, &sig],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// Every chain's checkpoints: (chain, checkpoint), by chain and seq.
    pub async fn audit_checkpoints(
        &self,
    ) -> StoreResult<Vec<(String, crate::audit::log::Checkpoint)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT replica, seq, hash, time, kid, sig FROM audit_checkpoints ORDER BY replica, seq",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    crate::audit::log::Checkpoint {
                        seq: r.get::<_, i64>(1) as u64,
                        hash: r.get(2),
                        time: r.get(3),
                        kid: r.get(4),
                        sig: r.get(5),
                    },
                )
            })
            .collect())
    }

    /// The last row of chain `replica` in the database: its seq (0: none) and hash.
    pub async fn audit_head(&self, replica: &str) -> StoreResult<(u64, Option<String>)> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT seq, hash FROM audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1",
                &[&replica],
            )
            .await
            .map_err(backend)?;
        Ok(row.map_or((0, None), |r| (r.get::<_, i64>(0) as u64, Some(r.get(1)))))
    }

    /// A tenant's events matching `f`, newest first, from every replica, each with its
    /// `replica` (and its replica's `seq`); the cursor (`f.before_seq`) is the database's row
    /// id, and the last row's id is returned beside the page for the next one.
    pub async fn audit(
        &self,
        tenant: &str,
        f: &crate::audit::AuditFilter,
    ) -> StoreResult<(Vec<serde_json::Value>, Option<i64>)> {
        let c = self.client().await?;
        let mut sql = String::from(
            "SELECT a.id, a.replica, a.line, o.line FROM audit a \
             LEFT JOIN LATERAL (SELECT line FROM audit o WHERE o.decision_id = a.line::json->>'id' AND o.kind = 'outcome' AND o.replica = a.replica LIMIT 1) o ON TRUE \
             WHERE a.tenant = $1 AND a.kind <> 'outcome'",
        );
        let mut args: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
            vec![Box::new(tenant.to_string())];
        let mut add = |clause: &str, v: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(a) = &f.agent_id {
            add(" AND a.agent_id = ?", Box::new(a.clone()));
        }
        if let Some(d) = &f.decision {
            add(" AND a.decision = ?", Box::new(d.clone()));
        }
        if let Some(a) = &f.action {
            add(" AND a.action = ?", Box::new(a.clone()));
        }
        if let Some(r) = &f.resource {
            add(" AND a.resource = ?", Box::new(r.clone()));
        }
        if let Some(s) = f.since_ms {
            add(" AND a.time_ms >= ?", Box::new(s));
        }
        if let Some(u) = f.until_ms {
            add(" AND a.time_ms < ?", Box::new(u));
        }
        if let Some(b) = f.before_seq {
            add(" AND a.id < ?", Box::new(b as i64));
        }
        add(" ORDER BY a.id DESC LIMIT ?", Box::new(f.limit as i64));
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|b| b.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = c.query(&sql, &params).await.map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in &rows {
            let id: i64 = r.get(0);
            let replica: String = r.get(1);
            let line: String = r.get(2);
            let outcome: Option<String> = r.get(3);
            let rec: crate::audit::log::Record = serde_json::from_str(&line).map_err(json_err)?;
            let mut event = rec.event;
            if let Some(o) = outcome {
                let o: crate::audit::log::Record = serde_json::from_str(&o).map_err(json_err)?;
                event.upstream_status = o.event.upstream_status;
                event.latency_us = o.event.latency_us;
            }
            let mut value = serde_json::to_value(&event).map_err(json_err)?;
            if let Some(o) = value.as_object_mut() {
                o.insert("replica".into(), serde_json::Value::String(replica));
            }
            out.push(value);
            last = Some(id);
        }
        Ok((out, last))
    }

    /// Every replica's chain, in order: (replica, seq, prev_hash, hash, line), for
    /// `actgate audit verify --from-store`; `f` is called per row.
    pub async fn audit_chains(
        &self,
        f: &mut (dyn FnMut(&str, &AuditRow) + Send),
    ) -> StoreResult<u64> {
        let c = self.client().await?;
        let mut after: (String, i64) = (String::new(), 0);
        let mut n = 0u64;
        loop {
            let rows = c
                .query(
                    "SELECT replica, seq, prev_hash, hash, tenant, time_ms, kind, agent_id, action, resource, decision, decision_id, line \
                     FROM audit WHERE (replica, seq) > ($1, $2) ORDER BY replica, seq LIMIT 10000",
                    &[&after.0, &after.1],
                )
                .await
                .map_err(backend)?;
            if rows.is_empty() {
                return Ok(n);
            }
            for r in &rows {
                let replica: String = r.get(0);
                let seq: i64 = r.get(1);
                let row = AuditRow {
                    seq: seq as u64,
                    prev_hash: r.get(2),
                    hash: r.get(3),
                    tenant: r.get(4),
                    time_ms: r.get(5),
                    kind: r.get(6),
                    agent_id: r.get(7),
                    action: r.get(8),
                    resource: r.get(9),
                    decision: r.get(10),
                    decision_id: r.get(11),
                    line: r.get(12),
                };
                f(&replica, &row);
                n += 1;
                after = (replica, seq);
            }
        }
    }
}

/// One audit index row for the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The replica's seq.
    pub seq: u64,
    /// Hex SHA-256 of the previous line.
    pub prev_hash: String,
    /// Hex SHA-256 of this line.
    pub hash: String,
    /// Tenant.
    pub tenant: String,
    /// Unix ms.
    pub time_ms: i64,
    /// decision, outcome or summary.
    pub kind: String,
    /// Agent, when known.
    pub agent_id: Option<String>,
    /// Action.
    pub action: String,
    /// Resource.
    pub resource: String,
    /// allowed / denied / empty.
    pub decision: String,
    /// An outcome's decision.
    pub decision_id: Option<String>,
    /// The log line, byte for byte.
    pub line: String,
}

impl AuditRow {
    /// The row of a log record whose line (without its newline) is `line`.
    pub fn from_record(rec: crate::audit::log::Record, line: &[u8]) -> AuditRow {
        let e = rec.event;
        AuditRow {
            seq: e.seq,
            prev_hash: rec.prev_hash,
            hash: hex::encode(crate::audit::log::line_hash(line)),
            tenant: e.tenant_id.to_string(),
            time_ms: e.time_ms,
            kind: match e.kind {
                crate::audit::EventKind::Decision => "decision",
                crate::audit::EventKind::Outcome => "outcome",
                crate::audit::EventKind::Summary => "summary",
            }
            .into(),
            agent_id: e.agent_id.as_deref().map(str::to_owned),
            action: e.action.to_string(),
            resource: e.resource,
            decision: e.decision.into_owned(),
            decision_id: e.decision_id,
            line: String::from_utf8_lossy(line).into_owned(),
        }
    }
}

async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    notified: &(dyn Fn() + Send + Sync),
) -> StoreResult<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The LISTEN is sent while the connection is driven below.
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        let message = std::future::poll_fn(|cx| {
            if !listening && let std::task::Poll::Ready(r) = listen.as_mut().poll(cx) {
                listening = true;
                if let Err(e) = r {
                    return std::task::Poll::Ready(Some(Err(e)));
                }
                // Listening from now on: whatever changed while not, the caller reads now.
                notified();
            }
            conn.poll_message(cx)
        })
        .await;
        match message {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => notified(),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(backend(e)),
            None => {
                return Err(StoreError::Unavailable(
                    "PostgreSQL closed the notification connection".into(),
                ));
            }
        }
    }
}

fn agent_of(r: &Row) -> StoreResult<Agent> {
    let metadata: String = r.get(4);
    let status: String = r.get(5);
    Ok(Agent {
        id: r.get(0),
        tenant: r.get(1),
        name: r.get(2),
        description: r.get(3),
        metadata: serde_json::from_str(&metadata).map_err(json_err)?,
        status: if status == "active" {
            AgentStatus::Active
        } else {
            AgentStatus::Revoked
        },
        created_at: r.get(6),
        updated_at: r.get(7),
        source: crate::policy::PolicySource::Api,
    })
}

const AGENT_COLS: &str = "id, tenant, name, description, metadata, status, created_at, updated_at";
const TOKEN_COLS: &str = "id, tenant, agent_id, policy_ids, issued_at, expires_at, revoked_at, kid";
const KEY_COLS: &str = "id, hash, tenant, name, role, agents, created_at";

fn policy_of(r: &Row) -> StoreResult<StoredPolicy> {
    let body: String = r.get(1);
    Ok(StoredPolicy {
        tenant: r.get(0),
        input: serde_json::from_str(&body).map_err(json_err)?,
        created_at: r.get(2),
        updated_at: r.get(3),
    })
}

fn token_of(r: &Row) -> TokenRecord {
    let pol: Option<String> = r.get(3);
    TokenRecord {
        id: r.get(0),
        tenant: r.get(1),
        agent_id: r.get(2),
        policy_ids: pol.and_then(|p| serde_json::from_str(&p).ok()),
        issued_at: r.get(4),
        expires_at: r.get(5),
        revoked_at: r.get(6),
        kid: r.get(7),
    }
}

fn key_of(r: &Row) -> StoreResult<ApiKeyRecord> {
    let id: String = r.get(0);
    let hash: Vec<u8> = r.get(1);
    let role: String = r.get(4);
    let agents: Option<String> = r.get(5);
    Ok(ApiKeyRecord {
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Backend("api key hash is not 32 bytes".into()))?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Backend(format!("api key {id}: role {role:?}")))?,
        agents: agents
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(json_err)?,
        tenant: r.get(2),
        name: r.get(3),
        created_at: r.get(6),
        source: crate::policy::PolicySource::Api,
        id,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let agents = key
            .agents
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json_err)?;
        tx.execute(
            &format!("INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            &[
                &key.id,
                &&key.hash[..],
                &key.tenant,
                &key.name,
                &key.role.as_str(),
                &agents,
                &key.created_at,
            ],
        )
        .await
        .map_err(backend)?;
        commit(tx, true).await?;
        Ok(())
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"),
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(key_of).collect()
    }

    async fn delete_api_key(&self, tenant: &str, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let row = tx
            .query_opt(
                &format!("DELETE FROM api_keys WHERE tenant = $1 AND id = $2 RETURNING {KEY_COLS}"),
                &[&tenant, &id],
            )
            .await
            .map_err(backend)?;
        let key = row.as_ref().map(key_of).transpose()?;
        let changed = key.is_some();
        commit(tx, changed).await?;
        Ok(key)
    }

    async fn insert_agent(&self, agent: &Agent) -> StoreResult<()> {
        let a = agent.clone();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute(
            &format!("INSERT INTO agents ({AGENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                &a.id,
                &a.tenant,
                &a.name,
                &a.description,
                &serde_json::Value::Object(a.metadata.clone()).to_string(),
                &a.status.as_str(),
                &a.created_at,
                &a.updated_at,
            ],
        )
        .await
        .map_err(backend)?;
        commit(tx, true).await?;
        Ok(())
    }

    async fn agent(&self, tenant: &str, id: &str) -> StoreResult<Option<Agent>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE tenant = $1 AND id = $2"),
                &[&tenant, &id],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(agent_of).transpose()
    }

    async fn agents(&self, tenant: &str) -> StoreResult<Vec<Agent>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {AGENT_COLS} FROM agents WHERE tenant = $1 ORDER BY created_at, id"
                ),
                &[&tenant],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(agent_of).collect()
    }

    async fn all_agents(&self) -> StoreResult<Vec<Agent>> {
        let c = self.client().await?;
        let rows = c
            .query(&format!("SELECT {AGENT_COLS} FROM agents"), &[])
            .await
            .map_err(backend)?;
        rows.iter().map(agent_of).collect()
    }

    async fn set_agent_status(
        &self,
        tenant: &str,
        id: &str,
        status: AgentStatus,
        at: &str,
    ) -> StoreResult<Option<Agent>> {
        let (tenant, id, at) = (tenant.to_string(), id.to_string(), at.to_string());
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let row = tx
                    .query_opt(
                        &format!(
                            "UPDATE agents SET status = $1, updated_at = $2 WHERE tenant = $3 AND id = $4 RETURNING {AGENT_COLS}"
                        ),
                        &[&status.as_str(), &at, &tenant, &id],
                    )
                    .await
                    .map_err(backend)?;
        let agent = row.as_ref().map(agent_of).transpose()?;
        let changed = agent.is_some();
        commit(tx, changed).await?;
        Ok(agent)
    }

    async fn insert_policy(&self, p: &StoredPolicy) -> StoreResult<()> {
        let p = p.clone();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let body = serde_json::to_string(&p.input).map_err(json_err)?;
        tx.execute(
                    "INSERT INTO policies (id, tenant, name, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&p.id(), &p.tenant, &p.input.name, &body, &p.created_at, &p.updated_at],
                )
                .await
                .map_err(backend)?;
        commit(tx, true).await?;
        Ok(())
    }

    async fn update_policy(&self, p: &StoredPolicy) -> StoreResult<bool> {
        let p = p.clone();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let body = serde_json::to_string(&p.input).map_err(json_err)?;
        let n = tx
                    .execute(
                        "UPDATE policies SET name = $1, body = $2, updated_at = $3 WHERE tenant = $4 AND id = $5",
                        &[&p.input.name, &body, &p.updated_at, &p.tenant, &p.id()],
                    )
                    .await
                    .map_err(backend)?;
        commit(tx, n > 0).await?;
        Ok(n > 0)
    }

    async fn delete_policy(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let n = tx
            .execute(
                "DELETE FROM policies WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(backend)?;
        commit(tx, n > 0).await?;
        Ok(n > 0)
    }

    async fn policy(&self, tenant: &str, id: &str) -> StoreResult<Option<StoredPolicy>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT tenant, body, created_at, updated_at FROM policies WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(policy_of).transpose()
    }

    async fn policies(&self, tenant: &str) -> StoreResult<Vec<StoredPolicy>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT tenant, body, created_at, updated_at FROM policies WHERE tenant = $1 ORDER BY seq",
                &[&tenant],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(policy_of).collect()
    }

    async fn all_policies(&self) -> StoreResult<Vec<StoredPolicy>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT tenant, body, created_at, updated_at FROM policies ORDER BY seq",
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(policy_of).collect()
    }

    async fn insert_token(&self, t: &TokenRecord) -> StoreResult<()> {
        let t = t.clone();
        // Issuing a token changes nothing a replica decides from: no notification.
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let pol = t
            .policy_ids
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json_err)?;
        tx.execute(
            &format!("INSERT INTO tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                &t.id,
                &t.tenant,
                &t.agent_id,
                &pol,
                &t.issued_at,
                &t.expires_at,
                &t.revoked_at,
                &t.kid,
            ],
        )
        .await
        .map_err(backend)?;
        commit(tx, false).await?;
        Ok(())
    }

    async fn revoke_token(
        &self,
        tenant: &str,
        id: &str,
        at: i64,
    ) -> StoreResult<Option<TokenRecord>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let before = tx
            .query_opt(
                "SELECT revoked_at FROM tokens WHERE tenant = $1 AND id = $2 FOR UPDATE",
                &[&tenant, &id],
            )
            .await
            .map_err(backend)?;
        let Some(before) = before else {
            return Ok(None);
        };
        let was: Option<i64> = before.get(0);
        let row = tx
                    .query_one(
                        &format!(
                            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant = $2 AND id = $3 RETURNING {TOKEN_COLS}"
                        ),
                        &[&at, &tenant, &id],
                    )
                    .await
                    .map_err(backend)?;
        commit(tx, was.is_none()).await?;
        Ok(Some(token_of(&row)))
    }

    async fn revoked_token_ids(&self, now: i64) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        // Keep a day of margin past expiry so clock skew never resurrects a revoked token.
        let rows = c
            .query(
                "SELECT id FROM tokens WHERE revoked_at IS NOT NULL AND expires_at >= $1",
                &[&(now - 86_400)],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn token(&self, tenant: &str, id: &str) -> StoreResult<Option<TokenRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE tenant = $1 AND id = $2"),
                &[&tenant, &id],
            )
            .await
            .map_err(backend)?;
        Ok(row.as_ref().map(token_of))
    }

    async fn live_tokens_by_kid(&self, now: i64) -> StoreResult<Vec<(String, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT kid, COUNT(*) FROM tokens WHERE revoked_at IS NULL AND expires_at >= $1 AND kid IS NOT NULL GROUP BY kid",
                &[&now],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await.map_err(backend)?;
        Ok(())
    }
}
