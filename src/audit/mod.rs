//! The audit trail: one event per decision, from the proxy and `/v1/enforce` alike.
//!
//! Owns the event type, the bounded queue, the single writer and the tamper-evident log
//! ([`log`]). A request hands its event to [`AuditSink::record`]; the writer group-commits
//! batches to the log with fsync, then feeds the store's query index; in `strict` durability
//! `record` returns only once the batch holding the event is on disk. A full queue applies backpressure, or denies when `audit.onFull: deny`;
//! nothing is dropped silently, and every failure is counted. Events never carry a token or an
//! API key: the token id (`jti`) identifies the credential.

pub mod index;
mod line;
pub mod log;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::{AuditSettings, Durability, OnFull};
pub use writer::{Signer, WriterMetrics, spawn_writer};

/// A field whose value is usually one of a few fixed words (`allowed`, a reason code, an
/// HTTP method): borrowed from the binary then, so building a record does not allocate for
/// it (each allocation is freed by the writer's thread, a cross-thread free per field).
pub type Text = std::borrow::Cow<'static, str>;

/// `m` as [`Text`]: the standard methods borrowed, an extension method copied.
pub fn method_text(m: &http::Method) -> Text {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    let name = m.as_str();
    match STANDARD.iter().find(|s| **s == name) {
        Some(s) => Text::Borrowed(s),
        None => Text::Owned(name.to_owned()),
    }
}

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /v1/enforce`.
    Enforce,
    /// The data-plane proxy.
    Proxy,
    /// The MCP gateway.
    Mcp,
}

impl Source {
    /// `enforce`, `proxy` or `mcp` (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Enforce => "enforce",
            Source::Proxy => "proxy",
            Source::Mcp => "mcp",
        }
    }
}

/// Reason codes of refusals made before a decision (the request never reached the policy
/// stage): what [`AuditSink::record_refusal`] aggregates when it must.
pub const REFUSAL_REASONS: &[&str] = &[
    "invalid_request",
    "no_route",
    "body_too_large",
    "unsupported_media_type",
    "request_timeout",
    "cancelled",
    "method_not_allowed",
    "session_unknown",
    "session_mismatch",
    "too_many_sessions",
    "other",
];

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
    /// Identical unauthenticated refusals counted together (`count`) instead of one record
    /// each, when they came faster than `audit.refusalRate` or found the queue full.
    Summary,
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
    pub tenant_id: Arc<str>,
    /// Proxy or enforce.
    pub source: Source,
    /// The caller's or actgate's request id.
    pub request_id: String,
    /// The token's agent, when a token verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Arc<str>>,
    /// The token's id (`jti`), when a token verified. Never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<Arc<str>>,
    /// Action asked for (empty in an outcome record).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub action: Arc<str>,
    /// Resource asked for (empty in an outcome record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// `allowed` or `denied` (empty in an outcome record).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub decision: Text,
    /// Reason code (empty in an outcome record).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub reason: Text,
    /// Deciding policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<Arc<str>>,
    /// Human-readable explanation (empty in an outcome record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// False when a denial was not enforced (route in `monitor` mode).
    pub enforced: bool,
    /// Proxy route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    /// HTTP method (proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Text>,
    /// Upstream status (proxy, when forwarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Why a forwarded request got no upstream answer (`upstream_timeout`, `upstream_error`,
    /// `body_too_large`), in a decision record that carries its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<String>,
    /// Time from request to decision or response, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Version of the policy snapshot that decided.
    pub snapshot_version: u64,
    /// For a summary: how many refusals it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// MCP: the JSON-RPC method (`tools/call`, …; `GET`/`DELETE` for the stream and session
    /// requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    /// MCP: the tool called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// MCP: hex SHA-256 of the call's arguments as canonical JSON (keys sorted, no
    /// whitespace): what was asked, comparable across records, without the personal data
    /// arguments may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    /// MCP: the arguments themselves, only with `audit.mcpArguments: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

impl AuditEvent {
    /// A refusal made before any decision (malformed request, no route, body too large,
    /// ...): `denied` with the refusal's reason code, stamped now.
    pub fn refusal(
        id: String,
        source: Source,
        tenant: impl Into<Arc<str>>,
        request_id: &str,
        reason: &'static str,
        message: String,
    ) -> AuditEvent {
        let (time, time_ms) = now_stamp();
        AuditEvent {
            seq: 0,
            kind: EventKind::Decision,
            id,
            decision_id: None,
            time,
            time_ms,
            tenant_id: tenant.into(),
            source,
            request_id: request_id.to_string(),
            agent_id: None,
            token_id: None,
            action: "".into(),
            resource: String::new(),
            decision: "denied".into(),
            reason: reason.into(),
            policy_id: None,
            message,
            enforced: true,
            route: None,
            method: None,
            upstream_status: None,
            upstream_error: None,
            latency_us: None,
            snapshot_version: 0,
            count: None,
            mcp_method: None,
            tool: None,
            arguments_sha256: None,
            arguments: None,
        }
    }
}

/// Refusals counted instead of recorded one by one, by reason ([`REFUSAL_REASONS`]), and the
/// per-second budget of unauthenticated refusals recorded individually.
#[derive(Debug)]
pub struct RefusalAggregates {
    counts: Vec<AtomicU64>,
    second: std::sync::atomic::AtomicI64,
    used: AtomicU64,
    rate: u64,
}

impl RefusalAggregates {
    fn new(rate: u64) -> RefusalAggregates {
        RefusalAggregates {
            counts: REFUSAL_REASONS.iter().map(|_| AtomicU64::new(0)).collect(),
            second: std::sync::atomic::AtomicI64::new(0),
            used: AtomicU64::new(0),
            rate,
        }
    }

    /// Whether one more individual record fits this second's budget.
    fn admit(&self) -> bool {
        let now = now_ms() / 1000;
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < self.rate
    }

    fn count(&self, reason: &str) {
        let i = REFUSAL_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REFUSAL_REASONS.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts gathered so far: (reason, count) for each reason with some.
    pub fn take(&self) -> Vec<(&'static str, u64)> {
        REFUSAL_REASONS
            .iter()
            .zip(&self.counts)
            .filter_map(|(r, c)| {
                let n = c.swap(0, Ordering::Relaxed);
                (n > 0).then_some((*r, n))
            })
            .collect()
    }
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
    /// Unauthenticated refusals counted into summaries instead of recorded one by one.
    pub aggregated: AtomicU64,
}

pub(crate) struct Job {
    // Boxed: a queue slot is a pointer, not the event's ~560 bytes copied in and out.
    event: Box<AuditEvent>,
    done: Option<oneshot::Sender<Result<u64, AuditError>>>,
}

/// A decision's audit record, travelling with its request until the outcome is known.
///
/// - `batched`: the record waits in a queue slot reserved when the decision was made (so it
///   cannot be refused for room later), and is queued once, at the end, with the outcome
///   folded in: one record per request. A request dropped before its outcome (the client went
///   away) queues it as it is.
/// - `strict`: the decision record was committed before anything was forwarded; the outcome
///   follows as a record of its own, naming its decision.
/// - `off`: nothing.
#[must_use = "a decision record is queued when finished or dropped"]
pub struct DecisionRecord {
    held: Held,
}

enum Held {
    Nothing,
    Slot {
        permit: mpsc::OwnedPermit<Job>,
        event: Box<AuditEvent>,
    },
    Committed {
        sink: AuditSink,
        decision: Box<Decided>,
    },
}

struct Decided {
    id: String,
    tenant_id: Arc<str>,
    source: Source,
    request_id: String,
    enforced: bool,
    snapshot_version: u64,
}

impl DecisionRecord {
    /// No record (audit off).
    pub fn none() -> DecisionRecord {
        DecisionRecord {
            held: Held::Nothing,
        }
    }

    /// Records what became of the forwarded request: the upstream's status, or why there is
    /// none (`error`, a reason code), and the latency from the request's start.
    pub fn finish(mut self, status: Option<u16>, error: Option<&'static str>, latency_us: u64) {
        match std::mem::replace(&mut self.held, Held::Nothing) {
            Held::Nothing => {}
            Held::Slot { permit, mut event } => {
                event.upstream_status = status;
                event.upstream_error = error.map(str::to_string);
                event.latency_us = Some(latency_us);
                permit.send(Job { event, done: None });
            }
            Held::Committed { sink, decision } => {
                let (time, time_ms) = now_stamp();
                sink.record_outcome(AuditEvent {
                    seq: 0,
                    kind: EventKind::Outcome,
                    id: crate::ids::sequential_id("aud_"),
                    decision_id: Some(decision.id),
                    time,
                    time_ms,
                    tenant_id: decision.tenant_id,
                    source: decision.source,
                    request_id: decision.request_id,
                    agent_id: None,
                    token_id: None,
                    action: "".into(),
                    resource: String::new(),
                    decision: "".into(),
                    reason: error.unwrap_or_default().into(),
                    policy_id: None,
                    message: String::new(),
                    enforced: decision.enforced,
                    route: None,
                    method: None,
                    upstream_status: status,
                    upstream_error: None,
                    latency_us: Some(latency_us),
                    snapshot_version: decision.snapshot_version,
                    count: None,
                    mcp_method: None,
                    tool: None,
                    arguments_sha256: None,
                    arguments: None,
                });
            }
        }
    }
}

impl Drop for DecisionRecord {
    fn drop(&mut self) {
        // Not finished: not forwarded (a denial), or the request was dropped mid-way. The
        // decision is the whole record.
        if let Held::Slot { permit, event } = std::mem::replace(&mut self.held, Held::Nothing) {
            permit.send(Job { event, done: None });
        }
    }
}

/// The handle requests record events through. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Job>,
    durability: Durability,
    on_full: OnFull,
    refusals: Arc<RefusalAggregates>,
    /// Counters.
    pub stats: Arc<AuditStats>,
}

impl AuditSink {
    /// Records an event. In strict mode, returns once it is committed; in batched mode, once
    /// it is queued. Errors mean the event is not recorded and the caller must deny.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        if self.durability == Durability::Off {
            return Ok(());
        }
        self.record_boxed(Box::new(event)).await
    }

    async fn record_boxed(&self, event: Box<AuditEvent>) -> Result<(), AuditError> {
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

    /// Records a decision of a request that may be forwarded ([`DecisionRecord`]): in
    /// `strict`, returns once it is committed; in `batched`, once a queue slot is reserved
    /// for it (waiting for room, or refused at once with `audit.onFull: deny`). Errors mean
    /// the decision cannot be recorded and the caller must deny.
    pub async fn decide(&self, event: Box<AuditEvent>) -> Result<DecisionRecord, AuditError> {
        // The event is boxed and the strict path's future too: this future lives inside every
        // request's, and a request's future is moved whole into place by hyper.
        match self.durability {
            Durability::Off => Ok(DecisionRecord::none()),
            Durability::Strict => Box::pin(self.decide_strict(event)).await,
            Durability::Batched => {
                let tx = self.tx.clone();
                let permit = match self.on_full {
                    OnFull::Block => tx
                        .reserve_owned()
                        .await
                        .map_err(|_| AuditError::Unavailable),
                    OnFull::Deny => tx.try_reserve_owned().map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => AuditError::QueueFull,
                        mpsc::error::TrySendError::Closed(_) => AuditError::Unavailable,
                    }),
                };
                let permit = permit.inspect_err(|_| {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                })?;
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(DecisionRecord {
                    held: Held::Slot { permit, event },
                })
            }
        }
    }

    async fn decide_strict(&self, event: Box<AuditEvent>) -> Result<DecisionRecord, AuditError> {
        // What the outcome record repeats of its decision.
        let decision = Box::new(Decided {
            id: event.id.clone(),
            tenant_id: event.tenant_id.clone(),
            source: event.source,
            request_id: event.request_id.clone(),
            enforced: event.enforced,
            snapshot_version: event.snapshot_version,
        });
        self.record_boxed(event).await?;
        Ok(DecisionRecord {
            held: Held::Committed {
                sink: self.clone(),
                decision,
            },
        })
    }

    /// Records the outcome of a forwarded request: never awaited to disk, always queued —
    /// at once when there is room, else by a task that waits for room (backpressure: the
    /// request was already forwarded, so refusing it is no longer possible). Lost only when
    /// the writer has stopped, and then counted and logged.
    pub fn record_outcome(&self, event: AuditEvent) {
        if self.durability == Durability::Off {
            return;
        }
        let job = Job {
            event: Box::new(event),
            done: None,
        };
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

    /// Records a refusal made before any decision; never waits for the disk (nothing was
    /// forwarded, so there is nothing to hold back). With a verified token (`authenticated`)
    /// the record is always written, waiting for room in the queue if it must. Without one
    /// — a flood of malformed requests costs an attacker nothing — it is written one by one
    /// while there is room and within `audit.refusalRate` per second; beyond that it is
    /// counted, and the counts are written as one summary record per reason every second
    /// ([`AuditSink::flush_summaries`]). Nothing is dropped without being counted.
    pub async fn record_refusal(&self, event: AuditEvent, authenticated: bool) {
        if self.durability == Durability::Off {
            return;
        }
        if !authenticated {
            self.record_refusal_now(event);
            return;
        }
        let reason = event.reason.clone();
        let job = Job {
            event: Box::new(event),
            done: None,
        };
        if self.tx.send(job).await.is_ok() {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(reason = %reason, "refusal audit record lost: the audit writer stopped");
        }
    }

    /// [`AuditSink::record_refusal`] for an unauthenticated refusal, without waiting (usable
    /// where nothing can be awaited, e.g. when a cancelled request is dropped).
    pub fn record_refusal_now(&self, event: AuditEvent) {
        if self.durability == Durability::Off {
            return;
        }
        if self.refusals.admit() {
            let reason = event.reason.clone();
            match self.tx.try_send(Job {
                event: Box::new(event),
                done: None,
            }) {
                Ok(()) => {
                    self.stats.queued.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.refusals.count(&reason);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        } else {
            self.refusals.count(&event.reason);
        }
        self.stats.aggregated.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes one summary record per reason for the refusals counted since the last call
    /// (run every second, and at shutdown).
    pub async fn flush_summaries(&self, tenant: &str) {
        for (reason, n) in self.refusals.take() {
            let mut event = AuditEvent::refusal(
                crate::ids::sequential_id("aud_"),
                Source::Proxy,
                tenant,
                "-",
                reason,
                format!(
                    "{n} unauthenticated refusals ({reason}) beyond audit.refusalRate or a full queue, counted into this record"
                ),
            );
            event.kind = EventKind::Summary;
            event.count = Some(n);
            let job = Job {
                event: Box::new(event),
                done: None,
            };
            if self.tx.send(job).await.is_ok() {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.failures.fetch_add(n, Ordering::Relaxed);
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
            refusals: Arc::new(RefusalAggregates::new(settings.refusal_rate)),
            stats: Arc::new(AuditStats::default()),
        },
        rx,
    )
}

/// Current time as (RFC 3339 with milliseconds, Unix ms): the `time` and `timeMs` of an event.
///
/// Every audited request takes one, so the calendar arithmetic is done once per second per
/// thread: the text up to the seconds is kept and only the milliseconds are written.
pub fn now_stamp() -> (String, i64) {
    thread_local! {
        static SECOND: std::cell::Cell<Option<(u64, [u8; 20])>> = const { std::cell::Cell::new(None) };
    }
    // A clock outside 1970–9999 (what RFC 3339's four-digit years can write) is held to those
    // bounds: the stamp stays well-formed instead of the formatter panicking.
    let d = since_epoch().min(LAST_STAMP);
    (
        SECOND.with(|cache| stamp_millis(d, cache)),
        d.as_millis() as i64,
    )
}

/// The last instant an RFC 3339 stamp can hold: `9999-12-31T23:59:59.999Z`.
const LAST_STAMP: std::time::Duration = std::time::Duration::new(253_402_300_799, 999_000_000);

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    since_epoch().as_millis() as i64
}

/// The time since the Unix epoch; zero for a clock set before it.
fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `since_epoch` (at most [`LAST_STAMP`]) as humantime's RFC 3339 with milliseconds
/// (`2026-12-03T08:10:44.160Z`), reusing `cache`'s `YYYY-MM-DDTHH:MM:SS.` when it holds the
/// same second.
fn stamp_millis(
    since_epoch: std::time::Duration,
    cache: &std::cell::Cell<Option<(u64, [u8; 20])>>,
) -> String {
    let since_epoch = since_epoch.min(LAST_STAMP);
    let secs = since_epoch.as_secs();
    let ms = since_epoch.subsec_millis();
    let prefix = match cache.get() {
        Some((s, prefix)) if s == secs => prefix,
        _ => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let text = humantime::format_rfc3339_seconds(at).to_string();
            // `YYYY-MM-DDTHH:MM:SSZ`, 20 bytes for every year up to 9999; were it ever
            // otherwise, the stamp is written from the text, uncached.
            let Ok(mut prefix) = <[u8; 20]>::try_from(text.as_bytes()) else {
                return format!("{}.{ms:03}Z", text.trim_end_matches('Z'));
            };
            prefix[19] = b'.';
            cache.set(Some((secs, prefix)));
            prefix
        }
    };
    let mut out = [0u8; 24];
    out[..20].copy_from_slice(&prefix);
    out[20] = b'0' + (ms / 100) as u8;
    out[21] = b'0' + (ms / 10 % 10) as u8;
    out[22] = b'0' + (ms % 10) as u8;
    out[23] = b'Z';
    // ASCII throughout (humantime's digits and punctuation, then ours), so always UTF-8; the
    // fallback is never taken. (Collecting chars one by one cost ~500 instructions more.)
    std::str::from_utf8(&out)
        .unwrap_or("1970-01-01T00:00:00.000Z")
        .to_owned()
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn a_standard_method_is_borrowed_an_extension_copied() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
        ] {
            let t = method_text(&http::Method::from_bytes(m.as_bytes()).unwrap());
            assert!(matches!(t, Text::Borrowed(s) if s == m), "{m}");
        }
        let t = method_text(&http::Method::from_bytes(b"PROPFIND").unwrap());
        assert!(matches!(t, Text::Owned(ref s) if s == "PROPFIND"));
    }
}

#[cfg(test)]
mod stamp_tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    proptest! {
        /// What humantime writes, whether the second is cached or not.
        #[test]
        fn the_stamp_is_humantimes(secs in 0u64..253_402_300_800, ms in 0u32..1000, ms2 in 0u32..1000, later in 0u64..3) {
            let cache = std::cell::Cell::new(None);
            for d in [
                Duration::new(secs, ms * 1_000_000 + 999_999),
                Duration::new(secs, ms2 * 1_000_000),
                Duration::new(secs + later, ms * 1_000_000),
            ] {
                prop_assert_eq!(
                    stamp_millis(d, &cache),
                    humantime::format_rfc3339_millis(UNIX_EPOCH + d).to_string()
                );
            }
        }
    }

    #[test]
    fn the_stamp_is_held_to_what_rfc_3339_can_write() {
        let cache = std::cell::Cell::new(None);
        assert_eq!(
            stamp_millis(Duration::ZERO, &cache),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(stamp_millis(LAST_STAMP, &cache), "9999-12-31T23:59:59.999Z");
        // Past year 9999 (humantime would fail to format it): held to the last stamp.
        for d in [
            LAST_STAMP + Duration::from_millis(1),
            Duration::from_secs(u64::MAX / 2),
        ] {
            assert_eq!(stamp_millis(d, &cache), "9999-12-31T23:59:59.999Z");
        }
    }

    #[test]
    fn now_stamp_agrees_with_itself() {
        let (time, ms) = now_stamp();
        let parsed = humantime::parse_rfc3339(&time).unwrap();
        let parsed_ms = parsed.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(parsed_ms, ms);
        assert!((now_ms() - ms).abs() < 60_000);
    }
}
