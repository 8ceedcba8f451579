//! The gateway's shared state: config, store, token service, audit sink, metrics, and the
//! current snapshot. Built once at start by [`Gateway::open`]; injected into every listener.
//!
//! Owns how the snapshot is rebuilt after a change: one write at a time (a mutex), the new
//! snapshot compiled off the async workers, then swapped; a failed build keeps the old one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ahash::AHashMap;
use arc_swap::ArcSwap;
use subtle::ConstantTimeEq;

use crate::audit::index::AuditIndex;
use crate::audit::log::LogFile;
use crate::audit::{self, AuditSink, Source};
use crate::config::Config;
use crate::error::Problems;
use crate::policy::{Constraints, Policy, PolicySet, PolicySource, Query, Reason, validate_policy};
use crate::snapshot::{AgentState, AgentsByTenant, Snapshot};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Agent, AgentStatus, ApiKeyRecord, Store, StoreError};
use crate::telemetry::Metrics;
use crate::token::keys::{KeyError, create_dir_private, write_atomic};
use crate::token::{Claims, KeySet, Tokens, now_unix};

/// Why the gateway could not start. Each is fatal: actgate refuses to run rather than run
/// without its keys, its store or its audit log.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("data directory: {0}")]
    DataDir(String),
    /// A listener could not be bound (the message names the address and the setting).
    #[error("{0}")]
    Listen(String),
    /// The signing keys could not be loaded.
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A stored policy no longer validates.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The audit log cannot be opened or does not match its index.
    #[error("audit log: {0}")]
    Audit(String),
    /// A configured API key is too weak (short, or a placeholder).
    #[error("API keys: {0}")]
    WeakKey(String),
    /// A TLS certificate, key or CA bundle does not load.
    #[error("tls: {0}")]
    Tls(String),
}

/// Opens the audit index and brings it up to the log (a new index, a crash between the log
/// commit and the index write, an index removed to be rebuilt), logging progress on a long
/// replay. Refuses to start when the index is *ahead* of the log: the log was truncated or
/// removed, and only `actgate audit reindex` (or restoring the log) resolves that.
async fn open_index(
    data: &Path,
    audit_dir: &Path,
    log_last: u64,
) -> Result<Arc<AuditIndex>, StartError> {
    let old = data.join("audit-index.db");
    if old.exists() {
        // The SQLite index of earlier versions: its successor is rebuilt from the log.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(data.join(format!("audit-index.db{suffix}")));
        }
        tracing::info!(removed = %old.display(), "the audit index moved to audit-index/ (rebuilt from the log)");
    }
    let (data, audit_dir) = (data.to_path_buf(), audit_dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let index = AuditIndex::open(&data, &audit_dir)
            .map_err(|e| StartError::Audit(format!("audit index: {e}")))?;
        let behind = log_last.saturating_sub(index.head());
        let started = std::time::Instant::now();
        let mut last_report = started;
        let replayed = index
            .catch_up(log_last, &mut |done, _| {
                if last_report.elapsed() >= std::time::Duration::from_secs(2) {
                    last_report = std::time::Instant::now();
                    tracing::info!(done, of = behind, "rebuilding the audit index from the log");
                }
            })
            .map_err(|e| StartError::Audit(e.to_string()))?;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                seconds = started.elapsed().as_secs_f64(),
                "audit index caught up with the log"
            );
        }
        Ok(Arc::new(index))
    })
    .await
    .map_err(|e| StartError::Audit(e.to_string()))?
}

/// What the snapshot rebuild must re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Policies changed: recompile them (and re-read agents and revocations).
    Policies,
    /// Only agents or revocations changed: reuse the compiled policies.
    AgentsAndRevocations,
}

/// The gateway.
pub struct Gateway {
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// The same store, when it is the PostgreSQL several replicas share.
    pub shared: Option<PgStore>,
    /// Whether the snapshot is recent enough to decide from (always, without `shared`).
    pub health: crate::replicas::StoreHealth,
    /// Token issue and verification.
    pub tokens: Tokens,
    /// Where decisions are recorded.
    pub audit: AuditSink,
    /// What `GET /v1/audit` reads.
    pub audit_index: Arc<AuditIndex>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    snapshot: ArcSwap<Snapshot>,
    writes: tokio::sync::Mutex<()>,
    version: AtomicU64,
}

/// Background work the gateway runs; awaited on shutdown.
pub struct Background {
    /// The audit writer thread; ends when every sink is dropped and the queue is drained.
    pub audit_writer: std::thread::JoinHandle<()>,
}

impl Gateway {
    /// Opens the data directory, keys, store and audit writer, resolves API keys (generating
    /// a first one into `<dataDir>/admin.key` when none is configured) and builds the first
    /// snapshot.
    pub async fn open(config: Config) -> Result<(Arc<Gateway>, Background), StartError> {
        let data = config.data_dir.clone();
        create_dir_private(&data).map_err(|e| StartError::DataDir(e.to_string()))?;
        let keys = KeySet::load_or_create(&config.keys_dir())?;
        let (store, shared, health): (Arc<dyn Store>, _, _) = match &config.store.postgres {
            None => (
                Arc::new(SqliteStore::open(&data)?),
                None,
                crate::replicas::StoreHealth::local(),
            ),
            Some(pg) => {
                let settings = crate::store::postgres::PgSettings {
                    url: pg.url.resolve().map_err(StoreError::Backend)?,
                    max_connections: pg.max_connections,
                    ca_file: pg.ca_file.clone(),
                };
                let store = PgStore::connect(&settings, pg.migrate).await?;
                tracing::info!(database = %store.target, replica = %config.store.replica_id, "store: PostgreSQL (shared by every replica)");
                (
                    Arc::new(store.clone()) as Arc<dyn Store>,
                    Some(store),
                    crate::replicas::StoreHealth::shared(config.store.max_staleness),
                )
            }
        };
        let metrics = if config.metrics.per_agent_labels {
            Metrics::with_agent_labels(config.metrics.max_agent_labels)
        } else {
            Metrics::new()
        };
        metrics.preregister_mcp(config.mcp.endpoints().iter().map(|e| e.name.as_str()));
        let tokens = Tokens::new(
            keys,
            config.tokens.cache_capacity,
            config.tokens.clock_skew,
            config.tokens.max_concurrent_verifications,
        );
        if config.audit.durability == crate::config::Durability::Off {
            tracing::warn!("audit.durability is off: decisions are NOT recorded in the audit log");
        }
        let audit_dir = data.join("audit");
        let (log, recovery) = LogFile::open(&audit_dir, config.audit.segment_max_bytes)
            .map_err(|e| StartError::Audit(e.to_string()))?;
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                bytes = recovery.torn_bytes,
                copy = %recovery.torn_copy.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                "audit log ended in a torn record (a crash mid-write); cut it off, the records before it are intact"
            );
            metrics.audit_torn_repairs.inc();
        }
        let audit_index = open_index(&data, &audit_dir, log.last_seq).await?;
        let signer = tokens.keys().signing.as_ref().map(|k| audit::Signer {
            kid: k.kid.clone(),
            secret: k.secret_bytes().to_vec(),
        });
        let (audit, audit_writer) = audit::spawn_writer(
            &config.audit,
            log,
            Arc::clone(&audit_index),
            signer,
            audit::WriterMetrics {
                commit_seconds: metrics.audit_commit_seconds.clone(),
                index_failures: metrics.audit_index_failures.clone(),
            },
        )
        .map_err(|e| StartError::Audit(e.to_string()))?;
        let gw = Arc::new(Gateway {
            store,
            shared,
            health,
            tokens,
            audit,
            audit_index,
            metrics,
            snapshot: ArcSwap::from_pointee(Snapshot {
                config: Arc::new(config),
                ..Snapshot::default()
            }),
            writes: tokio::sync::Mutex::new(()),
            // Versions keep increasing across restarts: start from the clock (ms).
            version: AtomicU64::new(crate::audit::now_ms().max(0) as u64),
        });
        gw.ensure_first_key(&data).await?;
        gw.refresh(Refresh::Policies)
            .await
            .map_err(StartError::Snapshot)?;
        Ok((gw, Background { audit_writer }))
    }

    /// With no usable key in the config and none stored, generates an admin key into
    /// `<dataDir>/admin.key` (0600); its hash is stored, the key itself never logged.
    async fn ensure_first_key(&self, data: &Path) -> Result<(), StartError> {
        let config = self.config();
        let configured = crate::apikey::config_keys(&config).map_err(StartError::WeakKey)?;
        for (name, var) in crate::apikey::unset_variables(&config) {
            tracing::warn!(key = %name, env = %var, "API key variable is not set; key skipped");
        }
        if !configured.is_empty() || !self.store.api_keys().await?.is_empty() {
            return Ok(());
        }
        let path = data.join("admin.key");
        let key = crate::apikey::generate();
        write_atomic(&path, format!("{key}\n").as_bytes(), 0o600)?;
        let rec = ApiKeyRecord {
            id: crate::ids::new_id("key_"),
            hash: crate::apikey::hash_key(&key),
            tenant: config.tenant.to_string(),
            name: "generated-admin".into(),
            role: crate::store::Role::Admin,
            agents: None,
            created_at: crate::audit::now_stamp().0,
            source: PolicySource::Api,
        };
        self.store.put_api_key(&rec).await?;
        tracing::warn!(path = %path.display(), tenant = %config.tenant, id = %rec.id, "no API key configured: generated an admin key (read it from the file; it is not logged)");
        Ok(())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The record of an API key (tenant, role, ...), or `None`. The key is hashed first;
    /// the comparison of hashes is constant-time.
    pub fn authenticate_key(&self, key: &str) -> Option<ApiKeyRecord> {
        let hash = crate::apikey::hash_key(key);
        let snapshot = self.snapshot.load();
        let found = snapshot.api_keys.get(&hash)?;
        bool::from(found.hash.ct_eq(&hash)).then(|| found.clone())
    }

    /// Serialises control-plane writes: hold the guard across the store write and the
    /// snapshot refresh so snapshots follow writes in order.
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.snapshot.load().config)
    }

    /// An agent of a tenant, from the config (agents as code) or the store.
    pub async fn find_agent(&self, tenant: &str, id: &str) -> Result<Option<Agent>, StoreError> {
        if let Some(a) = self
            .config()
            .agents
            .iter()
            .find(|a| a.id == id && a.tenant == tenant)
        {
            return Ok(Some(Agent::from_config(a)));
        }
        self.store.agent(tenant, id).await
    }

    /// The config policies of a tenant.
    pub fn config_policies(&self, tenant: &str) -> Vec<Policy> {
        self.config()
            .policies
            .iter()
            .filter(|p| p.tenant == tenant)
            .cloned()
            .collect()
    }

    /// Rebuilds the snapshot from the config and the store and swaps it in. On error the old
    /// snapshot stays and the error says why.
    pub async fn refresh(&self, what: Refresh) -> Result<u64, String> {
        self.swap(self.build(what, None).await)
    }

    /// Applies a new config (live reload): validated already, compiled here off the hot path
    /// with new upstream clients, swapped atomically. Settings that only a restart can change
    /// (listeners, dataDir, TLS, audit, token cache) make the reload fail; the old config
    /// keeps serving either way until a new one is in.
    pub async fn reload(&self, new: Config) -> Result<u64, String> {
        let _guard = self.writes.lock().await;
        let old = self.config();
        let mut fixed = Vec::new();
        if new.listen != old.listen {
            fixed.push("listen");
        }
        if new.data_dir != old.data_dir {
            fixed.push("dataDir");
        }
        if new.tls != old.tls {
            fixed.push("tls");
        }
        if new.store != old.store {
            fixed.push("store");
        }
        if new.audit != old.audit {
            fixed.push("audit");
        }
        if new.tokens.cache_capacity != old.tokens.cache_capacity
            || new.tokens.max_concurrent_verifications != old.tokens.max_concurrent_verifications
            || new.tokens.keys_dir != old.tokens.keys_dir
        {
            fixed.push("tokens.cacheCapacity/maxConcurrentVerifications/keysDir");
        }
        if new.metrics != old.metrics {
            fixed.push("metrics");
        }
        if !fixed.is_empty() {
            self.metrics.reloads.with_label_values(&["error"]).inc();
            let e = format!("{} changed: restart actgate to apply", fixed.join(", "));
            tracing::error!(error = %e, "config reload refused; the previous config keeps serving");
            return Err(e);
        }
        let new = Arc::new(new);
        let version = self.swap(self.build(Refresh::Policies, Some(Arc::clone(&new))).await)?;
        tracing::info!(version, config = %new.origin, "config reloaded");
        Ok(version)
    }

    fn swap(&self, result: Result<Snapshot, String>) -> Result<u64, String> {
        match result {
            Ok(snapshot) => {
                let version = snapshot.version;
                self.snapshot.store(Arc::new(snapshot));
                self.metrics.snapshot_version.set(version as i64);
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                Ok(version)
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "snapshot rebuild failed; the previous snapshot keeps serving");
                Err(e)
            }
        }
    }

    async fn build(
        &self,
        what: Refresh,
        new_config: Option<Arc<Config>>,
    ) -> Result<Snapshot, String> {
        let current = self.snapshot.load_full();
        let previous = (new_config.is_none() && current.version != 0).then_some(&*current);
        let config = new_config.unwrap_or_else(|| Arc::clone(&current.config));
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        build_snapshot(config, &*self.store, previous, what, version).await
    }
}

/// Builds a snapshot from a config and the store: policies (the config's, then the stored ones,
/// each re-validated — a stored policy that no longer validates fails the whole build, since
/// skipping it could drop a deny), agents, revocations and API keys. With `previous`, its
/// upstream clients are kept, and its compiled policies too when only agents or revocations
/// changed. Used by the gateway and by `actgate check`, so both decide from the same state.
pub async fn build_snapshot(
    config: Arc<Config>,
    store: &dyn Store,
    previous: Option<&Snapshot>,
    what: Refresh,
    version: u64,
) -> Result<Snapshot, String> {
    let upstreams = match previous {
        Some(prev) => Arc::clone(&prev.upstreams),
        None => Arc::new(crate::proxy::forward::Upstreams::build(&config)?),
    };
    let agents = store.all_agents().await.map_err(|e| e.to_string())?;
    let revoked = store
        .revoked_token_ids(now_unix())
        .await
        .map_err(|e| e.to_string())?;
    let policies = match (what, previous) {
        (Refresh::AgentsAndRevocations, Some(prev)) => Arc::clone(&prev.policies),
        _ => {
            let stored = store.all_policies().await.map_err(|e| e.to_string())?;
            let mut list: Vec<Policy> = config.policies.clone();
            let mut problems = Problems::new();
            for sp in &stored {
                let at = format!("stored policy {}", sp.id());
                if let Some(p) = validate_policy(
                    &sp.input,
                    &sp.tenant,
                    sp.id(),
                    PolicySource::Api,
                    &at,
                    &mut problems,
                ) {
                    list.push(p);
                }
            }
            if !problems.is_empty() {
                return Err(problems.to_string());
            }
            let set = tokio::task::spawn_blocking(move || PolicySet::build(list))
                .await
                .map_err(|e| e.to_string())??;
            Arc::new(set)
        }
    };
    let mut by_tenant = AgentsByTenant::new();
    for a in agents
        .into_iter()
        .chain(config.agents.iter().map(Agent::from_config))
    {
        let state = AgentState {
            sender_constrained: a.metadata.get("senderConstrained")
                == Some(&serde_json::Value::Bool(true)),
            active: a.status == AgentStatus::Active,
        };
        by_tenant
            .entry(a.tenant.into_boxed_str())
            .or_default()
            .insert(a.id.into_boxed_str(), state);
    }
    let revoked = revoked.into_iter().map(String::into_boxed_str).collect();
    let mut api_keys = AHashMap::new();
    let stored_keys = store.api_keys().await.map_err(|e| e.to_string())?;
    for k in crate::apikey::config_keys(&config)?
        .into_iter()
        .chain(stored_keys)
    {
        api_keys.insert(k.hash, k);
    }
    Ok(Snapshot {
        api_keys: Arc::new(api_keys),
        version,
        routes: Arc::clone(&config.routes),
        config,
        upstreams,
        policies,
        agents: Arc::new(by_tenant),
        revoked: Arc::new(revoked),
    })
}

/// The outcome of one authorization, detached from the snapshot.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Reason code (`Allowed` when allowed).
    pub reason: Reason,
    /// Human-readable explanation.
    pub message: String,
    /// Deciding policy.
    pub policy_id: Option<Arc<str>>,
    /// The deciding policy's constraints (obligations when allowed).
    pub constraints: Option<Constraints>,
    /// The token's agent, when it verified.
    pub agent_id: Option<Arc<str>>,
    /// The token's id, when it verified.
    pub token_id: Option<Arc<str>>,
    /// The token's tenant, when it verified.
    pub tenant_id: Option<Arc<str>>,
    /// Snapshot that decided.
    pub snapshot_version: u64,
}

impl Outcome {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.reason == Reason::Allowed
    }

    /// The audit record of this decision, stamped now, with id `id`. The proxy adds its
    /// route and method; both callers add the latency.
    pub fn decision_event(
        &self,
        id: String,
        source: Source,
        tenant: Arc<str>,
        request_id: &str,
        (action, resource): (Arc<str>, String),
        enforced: bool,
    ) -> audit::AuditEvent {
        let (time, time_ms) = audit::now_stamp();
        audit::AuditEvent {
            seq: 0,
            kind: audit::EventKind::Decision,
            id,
            decision_id: None,
            time,
            time_ms,
            tenant_id: tenant,
            source,
            request_id: request_id.to_string(),
            agent_id: self.agent_id.clone(),
            token_id: self.token_id.clone(),
            action,
            resource,
            decision: if self.is_allowed() {
                "allowed"
            } else {
                "denied"
            }
            .into(),
            reason: self.reason.as_str().into(),
            policy_id: self.policy_id.clone(),
            message: self.message.clone(),
            enforced,
            route: None,
            method: None,
            upstream_status: None,
            upstream_error: None,
            latency_us: None,
            snapshot_version: self.snapshot_version,
            count: None,
            mcp_method: None,
            tool: None,
            arguments_sha256: None,
            arguments: None,
        }
    }
}

impl Gateway {
    /// Verifies a presented token (cache, else a bounded verification). `None` → missing.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Arc<Claims>, Reason> {
        match token {
            None => Err(Reason::TokenMissing),
            Some(t) => self.tokens.authenticate(t).await,
        }
    }

    /// Decides against the current snapshot and counts the decision. Used by the proxy and
    /// `/v1/enforce` alike (through [`Gateway::authorize`] or after [`Gateway::authenticate`]).
    pub fn decide(
        &self,
        source: Source,
        claims: Result<&Claims, Reason>,
        tenant: Option<&str>,
        query: &Query<'_>,
    ) -> Outcome {
        let started = Instant::now();
        let snapshot = self.snapshot();
        let decision = if self.health.fresh() {
            snapshot.decide(claims, tenant, query, now_unix(), self.tokens.skew_secs())
        } else {
            crate::policy::Decision::denied(Reason::StoreUnavailable)
        };
        let reason = decision.reason;
        self.metrics
            .decision_seconds
            .with_label_values(&[source.as_str()])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .decisions
            .with_label_values(&[decision.verdict(), reason.as_str(), source.as_str()])
            .inc();
        if reason.is_token_problem() {
            self.metrics
                .token_rejections
                .with_label_values(&[reason.as_str()])
                .inc();
        }
        let claims = claims.ok();
        if let Some(c) = claims {
            self.metrics.agent_decision(&c.agent, decision.verdict());
        }
        Outcome {
            reason,
            message: decision.message(),
            policy_id: decision.policy.map(|p| p.id.clone()),
            constraints: decision.policy.map(|p| p.constraints.clone()),
            agent_id: claims.map(|c| c.agent.clone()),
            token_id: claims.map(|c| c.jti.clone()),
            tenant_id: claims.map(|c| c.tenant.clone()),
            snapshot_version: snapshot.version,
        }
    }

    /// The token stage alone (signature verified already; time, revocation, agent, tenant
    /// checked now), for what needs only a valid token (the MCP handshake, lists,
    /// notifications). Not counted: when it is the request's decision, [`Gateway::count`]
    /// counts it.
    pub fn admit(&self, claims: Result<&Claims, Reason>) -> Outcome {
        let snapshot = self.snapshot();
        let reason = match claims {
            _ if !self.health.fresh() => Reason::StoreUnavailable,
            Err(r) => r,
            Ok(c) => match snapshot.check_token(c, None, now_unix(), self.tokens.skew_secs()) {
                Ok(()) => Reason::Allowed,
                Err(r) => r,
            },
        };
        let claims = claims.ok();
        Outcome {
            reason,
            message: if reason == Reason::Allowed {
                "allowed: this needs only a valid token".into()
            } else {
                crate::policy::Decision::denied(reason).message()
            },
            policy_id: None,
            constraints: None,
            agent_id: claims.map(|c| c.agent.clone()),
            token_id: claims.map(|c| c.jti.clone()),
            tenant_id: claims.map(|c| c.tenant.clone()),
            snapshot_version: snapshot.version,
        }
    }

    /// Counts an outcome [`Gateway::admit`] made the request's decision.
    pub fn count(&self, source: Source, outcome: &Outcome) {
        let reason = outcome.reason;
        let verdict = if outcome.is_allowed() {
            "allowed"
        } else {
            "denied"
        };
        self.metrics
            .decisions
            .with_label_values(&[verdict, reason.as_str(), source.as_str()])
            .inc();
        if reason.is_token_problem() {
            self.metrics
                .token_rejections
                .with_label_values(&[reason.as_str()])
                .inc();
        }
    }

    /// Authenticates the token and decides.
    pub async fn authorize(
        &self,
        source: Source,
        token: Option<&str>,
        tenant: Option<&str>,
        query: &Query<'_>,
    ) -> Outcome {
        let claims = self.authenticate(token).await;
        self.decide(source, claims.as_deref().map_err(|r| *r), tenant, query)
    }
}
