//! Several replicas on one PostgreSQL store (DESIGN §6, `store.postgres`).
//!
//! - [`StoreHealth`]: how long ago this replica last confirmed its snapshot matches the
//!   store. Every decision checks it: past `store.maxStaleness` the snapshot may miss a
//!   revocation, so decisions fail closed (503, `store_unavailable`) until the store is back.
//! - [`watch_store`]: LISTENs for the change notifications every write sends and polls the
//!   change counter every `store.pollInterval` (lost notifications, reconnects); when it moved,
//!   re-reads the keys other replicas published and rebuilds the snapshot. It also publishes
//!   this replica's public keys (and retirements), so a token signed anywhere verifies
//!   everywhere.
//! - [`ship_audit`]: copies this replica's audit records (line, seq, chain hashes) into the
//!   store's `audit` table, so `GET /v1/audit` on any replica reads every replica's events and
//!   `actgate audit verify --from-store` checks every chain from the database alone. The local
//!   hash-chained log stays the record; the table is a copy that can be checked against it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::audit::log::{LogCursor, line_hash};
use crate::gateway::{Gateway, Refresh};
use crate::store::StoreError;
use crate::store::postgres::{AuditRow, PgStore};

/// Whether this replica's snapshot is recent enough to decide from.
pub struct StoreHealth {
    /// A shared store is in use (with the embedded SQLite the snapshot is always current).
    shared: bool,
    base: Instant,
    /// Milliseconds after `base` of the last confirmed sync.
    last_ok_ms: AtomicU64,
    max_staleness_ms: u64,
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl StoreHealth {
    /// For the embedded store: always fresh.
    pub fn local() -> StoreHealth {
        StoreHealth::new(false, Duration::ZERO)
    }

    /// For a shared store, fresh as of now.
    pub fn shared(max_staleness: Duration) -> StoreHealth {
        StoreHealth::new(true, max_staleness)
    }

    fn new(shared: bool, max_staleness: Duration) -> StoreHealth {
        StoreHealth {
            shared,
            base: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            max_staleness_ms: max_staleness.as_millis() as u64,
            up: AtomicBool::new(true),
            last_error: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Whether decisions may be made from the snapshot (one atomic load and a clock read;
    /// nothing at all without a shared store).
    #[inline]
    pub fn fresh(&self) -> bool {
        !self.shared
            || self
                .now_ms()
                .saturating_sub(self.last_ok_ms.load(Ordering::Relaxed))
                <= self.max_staleness_ms
    }

    /// How long since the snapshot was last confirmed current (zero without a shared store).
    pub fn staleness(&self) -> Duration {
        if !self.shared {
            return Duration::ZERO;
        }
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ok_ms.load(Ordering::Relaxed)),
        )
    }

    /// Whether a shared store is in use.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether the last contact with the store succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The store could not be reached. True when it was up before.
    pub fn failed(&self, error: String) -> bool {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.up.swap(false, Ordering::Relaxed)
    }

    /// Why the store is down, when it is.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The store answered and the snapshot is current as of `at` (when the sync that
    /// confirmed it began). True when it was down before.
    pub fn ok_at(&self, at: Instant) -> bool {
        let ms = at.saturating_duration_since(self.base).as_millis() as u64;
        self.last_ok_ms.fetch_max(ms, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        !self.up.swap(true, Ordering::Relaxed)
    }

    /// Why this replica is not ready, when the store makes it so (for `/readyz`): the store
    /// cannot be reached or synced, or the snapshot is past maxStaleness.
    pub fn not_ready(&self) -> Option<String> {
        if !self.shared {
            return None;
        }
        if self.is_up() {
            return (!self.fresh()).then(|| {
                format!(
                    "store: the snapshot is {:.1}s old, past store.maxStaleness: every decision is refused (503 store_unavailable)",
                    self.staleness().as_secs_f64()
                )
            });
        }
        let error = self.last_error().unwrap_or_default();
        Some(if self.fresh() {
            format!(
                "store: cannot be synced for {:.1}s ({error}); deciding from the last snapshot until store.maxStaleness ({}s)",
                self.staleness().as_secs_f64(),
                self.max_staleness_ms / 1000
            )
        } else {
            format!(
                "store: cannot be synced for {:.1}s ({error}), past store.maxStaleness: every decision is refused (503 store_unavailable)",
                self.staleness().as_secs_f64()
            )
        })
    }
}

/// Longest a sync may take before the store counts as unreachable.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait between two attempts to re-open the notification connection.
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps this replica's snapshot and published keys in step with the shared store until
/// `stop`; marks the store up or down as it goes (logged on each change).
pub async fn watch_store(gw: Arc<Gateway>, pg: PgStore, mut stop: watch::Receiver<bool>) {
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(pg.clone(), Arc::clone(&wake)));
    let poll = gw.config().store.poll_interval;
    let mut seen: Option<i64> = None;
    let mut published: PublishedKeys = None;
    loop {
        let started = Instant::now();
        let result = tokio::time::timeout(SYNC_TIMEOUT, async {
            publish_keys(&gw, &pg, &mut published).await?;
            sync(&gw, &pg, &mut seen).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {SYNC_TIMEOUT:?}"
            )))
        });
        match result {
            Ok(changed) => {
                if gw.health.ok_at(started) {
                    tracing::warn!(database = %pg.target, "store reachable again; decisions resume from a fresh snapshot");
                }
                if changed {
                    gw.metrics.store_syncs.with_label_values(&["changed"]).inc();
                }
            }
            Err(e) => {
                gw.metrics.store_syncs.with_label_values(&["error"]).inc();
                let e = e.to_string();
                if gw.health.failed(e.clone()) {
                    tracing::error!(database = %pg.target, error = %e, max_staleness = ?gw.config().store.max_staleness, "store unreachable: deciding from the last snapshot until store.maxStaleness, then refusing every decision (503 store_unavailable)");
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    listener.abort();
}

/// Re-reads published keys and rebuilds the snapshot when the store's change counter moved.
/// Returns whether it did.
async fn sync(gw: &Gateway, pg: &PgStore, seen: &mut Option<i64>) -> Result<bool, StoreError> {
    let version = pg.change_version().await?;
    if *seen == Some(version) {
        return Ok(false);
    }
    let rows = pg.published_keys().await?;
    let (published, bad) = crate::token::Published::from_rows(&rows);
    for kid in bad {
        tracing::error!(kid = %kid, "a key published in the store does not match its id; it verifies nothing");
    }
    gw.tokens.set_published(published);
    let _guard = gw.write_lock().await;
    gw.refresh(Refresh::Policies)
        .await
        .map_err(StoreError::Unavailable)?;
    *seen = Some(version);
    Ok(true)
}

/// What this replica last published: its key set's address and key ids.
pub(crate) type PublishedKeys = Option<(usize, std::collections::BTreeSet<String>)>;

/// Publishes this replica's public keys, and the ones it retired, when its key set changed
/// since the last time. A key that left the key set (retired, or deleted) is marked retired
/// in the store, so no other replica keeps trusting it. When the key directory cannot be
/// listed, nothing is marked published and the next poll tries again.
async fn publish_keys(
    gw: &Gateway,
    pg: &PgStore,
    published: &mut PublishedKeys,
) -> Result<(), StoreError> {
    let keys = gw.tokens.keys();
    let id = Arc::as_ptr(&keys) as usize;
    let kids: std::collections::BTreeSet<String> = keys.kids().map(String::from).collect();
    if published
        .as_ref()
        .is_some_and(|(p, k)| *p == id && *k == kids)
    {
        return Ok(());
    }
    let dir = gw.config().keys_dir();
    let listed = tokio::task::spawn_blocking(move || crate::token::KeySet::list(&dir))
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let mut retired: Vec<String> = match listed {
        Ok(list) => list
            .into_iter()
            .filter(|k| k.state == crate::token::keys::KeyState::Retired)
            .map(|k| k.kid)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the key directory; signing keys not published yet (retrying)");
            return Ok(());
        }
    };
    if let Some((_, before)) = published.as_ref() {
        retired.extend(before.difference(&kids).cloned());
    }
    let replica = gw.config().store.replica_id.clone();
    pg.publish_keys(&keys.publics(), &retired, &replica).await?;
    *published = Some((id, kids));
    Ok(())
}

/// Holds a LISTEN connection open, waking the watcher on each notification and after each
/// (re)connect; reconnects with a backoff when it drops.
async fn listen(pg: PgStore, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let notify = || wake.notify_one();
        if let Err(e) = pg.listen(&notify).await {
            tracing::debug!(error = %e, "store notification connection closed; reconnecting");
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
    }
}

/// How often new audit records are copied to the store.
const SHIP_INTERVAL: Duration = Duration::from_millis(200);
/// Most records per insert.
const SHIP_BATCH: usize = 1000;

/// This replica's chain in the store: `<replicaId>/<first 8 hex digits of its first record's
/// hash>`, so a replica whose log starts over (a new volume) is a new chain, never mixed
/// into its old one. `None` while the log is empty.
fn chain_name(dir: &std::path::Path, replica: &str) -> std::io::Result<Option<String>> {
    let mut cursor = LogCursor::after(dir, 0)?;
    Ok(cursor
        .read(1)?
        .first()
        .map(|(_, line)| format!("{replica}/{}", &hex::encode(line_hash(line))[..8])))
}

/// Copies this replica's audit records to the store until `stop` (then once more, so the
/// last ones are there), resuming after the last one the store holds.
pub async fn ship_audit(gw: Arc<Gateway>, pg: PgStore, mut stop: watch::Receiver<bool>) {
    let config = gw.config();
    let dir = config.data_dir.join("audit");
    let replica = config.store.replica_id.clone();
    let mut chain: Option<String> = None;
    let mut cursor: Option<(LogCursor, String)> = None;
    let mut checkpoints = 0usize;
    let mut last_error: Option<String> = None;
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(SHIP_INTERVAL) => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => stopping = true,
            }
        }
        let shipped = ship_once(
            &pg,
            &dir,
            &replica,
            &mut chain,
            &mut cursor,
            &mut checkpoints,
        )
        .await;
        match shipped {
            Ok(n) => {
                gw.metrics.audit_shipped.inc_by(n);
                if last_error.take().is_some() {
                    tracing::info!("audit records reach the store again");
                }
            }
            Err(e) => {
                // Start over from what the store holds next time.
                cursor = None;
                if last_error.as_deref() != Some(&e) {
                    tracing::warn!(error = %e, "audit records not copied to the store yet (they are safe in the local log; retrying)");
                    last_error = Some(e);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Copies what is new; returns how many records.
async fn ship_once(
    pg: &PgStore,
    dir: &std::path::Path,
    replica: &str,
    chain: &mut Option<String>,
    cursor: &mut Option<(LogCursor, String)>,
    checkpoints: &mut usize,
) -> Result<u64, String> {
    if chain.is_none() {
        let (d, r) = (dir.to_path_buf(), replica.to_string());
        *chain = tokio::task::spawn_blocking(move || chain_name(&d, &r))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading the audit log: {e}"))?;
    }
    let Some(chain) = chain.as_deref() else {
        return Ok(0);
    };
    if cursor.is_none() {
        let (head, stored_hash) = pg.audit_head(chain).await.map_err(|e| e.to_string())?;
        let d = dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            // The local record the store's copy ends with, to check they are one chain.
            let local = if head > 0 {
                LogCursor::after(&d, head - 1)?
                    .read(1)?
                    .first()
                    .map(|(_, line)| hex::encode(line_hash(line)))
            } else {
                None
            };
            Ok((LogCursor::after(&d, head)?, local))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the audit log: {e}"))?;
        let (c, local) = opened;
        if head > 0 && local != stored_hash {
            return Err(format!(
                "the store's copy of audit chain {chain} ends at seq {head}, which this log {} (a restored or rewritten volume?); nothing more is copied until an operator looks: the local log is intact",
                if local.is_none() {
                    "does not reach"
                } else {
                    "holds with another hash"
                }
            ));
        }
        let last = stored_hash.unwrap_or_else(|| hex::encode(crate::audit::log::GENESIS));
        *cursor = Some((c, last));
    }
    let mut total = 0u64;
    loop {
        let Some((mut c, last)) = cursor.take() else {
            return Ok(total);
        };
        let (c, batch) = tokio::task::spawn_blocking(move || {
            let batch = c.read(SHIP_BATCH);
            (c, batch)
        })
        .await
        .map_err(|e| e.to_string())?;
        let batch = batch.map_err(|e| format!("reading the audit log: {e}"))?;
        if batch.is_empty() {
            *cursor = Some((c, last));
            ship_checkpoints(pg, dir, chain, checkpoints).await?;
            return Ok(total);
        }
        let rows: Vec<AuditRow> = batch
            .into_iter()
            .map(|(rec, line)| AuditRow::from_record(rec, &line))
            .collect();
        // Each batch continues what the store holds.
        if rows[0].prev_hash != last {
            return Err(format!(
                "audit chain {chain}: seq {} does not follow the copied seq {} (prevHash differs); nothing more is copied until an operator looks: the local log is intact",
                rows[0].seq,
                rows[0].seq - 1
            ));
        }
        pg.append_audit(chain, &rows)
            .await
            .map_err(|e| e.to_string())?;
        total += rows.len() as u64;
        let last = rows.last().map(|r| r.hash.clone()).unwrap_or(last);
        *cursor = Some((c, last));
    }
}

/// Copies what the log holds and the store does not yet, once (at shutdown, after the audit
/// writer has written its last records). Returns how many records.
pub async fn ship_remaining(config: &crate::config::Config, pg: &PgStore) -> Result<u64, String> {
    let dir = config.data_dir.join("audit");
    ship_once(
        pg,
        &dir,
        &config.store.replica_id,
        &mut None,
        &mut None,
        &mut 0,
    )
    .await
}

/// Copies the checkpoints the log's writer signed since the last call (`done` lines of
/// `checkpoints.jsonl` are already there).
async fn ship_checkpoints(
    pg: &PgStore,
    dir: &std::path::Path,
    chain: &str,
    done: &mut usize,
) -> Result<(), String> {
    let path = dir.join(crate::audit::log::CHECKPOINTS);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    // Complete lines only: the last one may be being written.
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    if lines.len() <= *done {
        return Ok(());
    }
    let new: Vec<crate::audit::log::Checkpoint> = lines[*done..]
        .iter()
        .map(|l| serde_json::from_str(l.trim_end()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a checkpoint: {e}", path.display()))?;
    pg.append_checkpoints(chain, &new)
        .await
        .map_err(|e| e.to_string())?;
    *done = lines.len();
    Ok(())
}
