//! The audit trail: one event per decision, from the proxy and `/v1/enforce` alike.
//!
//! Owns the event type, the bounded queue, the single writer and the tamper-evident log
//! ([`log`]). A request hands its event to [`AuditSink::record`]; the writer group-commits
//! batches to the log with fsync, then feeds the store's query index; in `strict` durability
//! `record` returns only once the batch holding the event is on disk. A full queue applies backpressure, or denies when `audit.onFull: deny`;
//! nothing is dropped silently, and every failure is counted. Events never carry a token or an
//! API key: the token id (`jti`) identifies the credential.

pub mod log;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::{AuditSettings, Durability, OnFull};
pub use writer::{Signer, WriterMetrics, spawn_writer};

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /v1/enforce`.
    Enforce,
    /// The data-plane proxy.
    Proxy,
}

impl Source {
    /// `enforce` or `proxy` (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Enforce => "enforce",
            Source::Proxy => "proxy",
        }
    }
}

/// What an audit record records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A decision (recorded before anything is forwarded).
    #[default]
    Decision,
    /// What became of a forwarded request: upstream status and latency. Refers to its
    /// decision by `decisionId`.
    Outcome,
}

/// One audited decision, or the outcome of a forwarded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Position in the log, assigned by the writer (0 until then).
    #[serde(default)]
    pub seq: u64,
    /// Decision or outcome.
    #[serde(default)]
    pub kind: EventKind,
    /// `aud_…`.
    pub id: String,
    /// For an outcome: the id of its decision record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// The same instant, Unix milliseconds.
    pub time_ms: i64,
    /// Tenant whose decision this was.
    pub tenant_id: String,
    /// Proxy or enforce.
    pub source: Source,
    /// The caller's or actgate's request id.
    pub request_id: String,
    /// The token's agent, when a token verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The token's id (`jti`), when a token verified. Never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Action asked for (empty in an outcome record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// Resource asked for (empty in an outcome record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// `allowed` or `denied` (empty in an outcome record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    /// Reason code (empty in an outcome record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Deciding policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Human-readable explanation (empty in an outcome record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// False when a denial was not enforced (route in `monitor` mode).
    pub enforced: bool,
    /// Proxy route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// HTTP method (proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Upstream status (proxy, when forwarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Time from request to decision or response, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Version of the policy snapshot that decided.
    pub snapshot_version: u64,
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this agent.
    pub agent_id: Option<String>,
    /// `allowed` or `denied`.
    pub decision: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this resource (exact).
    pub resource: Option<String>,
    /// From this time (Unix ms, inclusive).
    pub since_ms: Option<i64>,
    /// Until this time (Unix ms, exclusive).
    pub until_ms: Option<i64>,
    /// Only events with `seq` below this (the cursor).
    pub before_seq: Option<u64>,
    /// Most events returned.
    pub limit: usize,
}

/// Why an event could not be recorded. Each fails the request closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The queue is full and `audit.onFull` is `deny`.
    #[error("audit queue full")]
    QueueFull,
    /// The writer stopped or its commit failed.
    #[error("audit log unavailable")]
    Unavailable,
}

/// Counters the metrics layer reads.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events committed.
    pub written: AtomicU64,
    /// Events that could not be recorded (queue full in deny mode, writer failure).
    pub failures: AtomicU64,
    /// Events waiting in the queue.
    pub queued: AtomicU64,
    /// Commits (group commits) done.
    pub commits: AtomicU64,
    /// Total commit time, microseconds.
    pub commit_us: AtomicU64,
}

pub(crate) struct Job {
    event: AuditEvent,
    done: Option<oneshot::Sender<Result<u64, AuditError>>>,
}

/// The handle requests record events through. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Job>,
    durability: Durability,
    on_full: OnFull,
    /// Counters.
    pub stats: Arc<AuditStats>,
}

impl AuditSink {
    /// Records an event. In strict mode, returns once it is committed; in batched mode, once
    /// it is queued. Errors mean the event is not recorded and the caller must deny.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let (done, wait) = match self.durability {
            Durability::Strict => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Durability::Batched => (None, None),
            Durability::Off => return Ok(()),
        };
        let job = Job { event, done };
        let sent = match self.on_full {
            OnFull::Block => self.tx.send(job).await.map_err(|_| AuditError::Unavailable),
            OnFull::Deny => self.tx.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => AuditError::Unavailable,
            }),
        };
        if let Err(e) = sent {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if let Some(wait) = wait {
            match wait.await {
                Ok(Ok(_seq)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(AuditError::Unavailable),
            }
        } else {
            Ok(())
        }
    }

    /// Records the outcome of a forwarded request: never awaited to disk, always queued —
    /// at once when there is room, else by a task that waits for room (backpressure: the
    /// request was already forwarded, so refusing it is no longer possible). Lost only when
    /// the writer has stopped, and then counted and logged.
    pub fn record_outcome(&self, event: AuditEvent) {
        if self.durability == Durability::Off {
            return;
        }
        let job = Job { event, done: None };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(job)) => {
                let sink = self.clone();
                tokio::spawn(async move {
                    if sink.tx.send(job).await.is_ok() {
                        sink.stats.queued.fetch_add(1, Ordering::Relaxed);
                    } else {
                        sink.stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("outcome audit record lost: the audit writer stopped");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("outcome audit record lost: the audit writer stopped");
            }
        }
    }

    /// Durability mode.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Events waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether the writer is still running.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}

fn channel(settings: &AuditSettings) -> (AuditSink, mpsc::Receiver<Job>) {
    let (tx, rx) = mpsc::channel(settings.queue_capacity);
    (
        AuditSink {
            tx,
            durability: settings.durability,
            on_full: settings.on_full,
            stats: Arc::new(AuditStats::default()),
        },
        rx,
    )
}

/// Current time as (RFC 3339 with milliseconds, Unix ms).
pub fn now_stamp() -> (String, i64) {
    let now = std::time::SystemTime::now();
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    (humantime::format_rfc3339_millis(now).to_string(), ms)
}
