//! Telemetry: the Prometheus metrics (one [`Metrics`] owning its registry, injected, never
//! global) and the tracing setup.
//!
//! Labels are bounded enums only: decision, reason, source, route name, upstream name, status
//! class, result. Never a token, an agent's free text, a resource id or a path.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use std::sync::atomic::Ordering;

use crate::policy::Reason;

/// Decision latency buckets, seconds: 1 µs … 50 ms.
const DECISION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2,
];
/// Request latency buckets, seconds: 100 µs … 30 s.
const REQUEST_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];
/// fsync / commit latency buckets, seconds: 50 µs … 1 s.
const COMMIT_BUCKETS: &[f64] = &[
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0,
];

/// Every metric actgate exports.
pub struct Metrics {
    registry: Registry,
    /// `actgate_decisions_total{decision, reason, source}`.
    pub decisions: IntCounterVec,
    /// `actgate_decision_duration_seconds{source}`: token check + policy evaluation.
    pub decision_seconds: HistogramVec,
    /// `actgate_proxy_request_duration_seconds{route, status_class}`.
    pub proxy_seconds: HistogramVec,
    /// `actgate_upstream_responses_total{upstream, outcome}`.
    pub upstream: IntCounterVec,
    /// `actgate_token_rejections_total{reason}`.
    pub token_rejections: IntCounterVec,
    /// `actgate_snapshot_version`.
    pub snapshot_version: IntGauge,
    /// `actgate_snapshot_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `actgate_in_flight_requests{listener}`.
    pub in_flight: IntGaugeVec,
    /// Its `proxy` series, resolved once (the data plane moves it twice per request).
    pub proxy_in_flight: IntGauge,
    /// `actgate_audit_commit_duration_seconds`: one group commit (write + fsync).
    pub audit_commit_seconds: Histogram,
    /// `actgate_api_requests_total{method, status_class}`.
    pub api_requests: IntCounterVec,
    /// `actgate_build_info{version}`, always 1.
    pub build_info: IntGaugeVec,
    /// `actgate_connections_rejected_total{listener}`: over `limits.maxConnections`.
    pub connections_rejected: IntCounterVec,
    /// `actgate_connections_open{listener}`: connections holding a slot now.
    pub connections_open: IntGaugeVec,
    /// `actgate_store_up`: 1 while the store answers (always 1 with the embedded one).
    pub store_up: IntGauge,
    /// `actgate_store_staleness_seconds`: since the snapshot was last confirmed current.
    pub store_staleness: Gauge,
    /// `actgate_store_syncs_total{result}`: snapshot rebuilds from the shared store's
    /// changes (`changed`) and failed contacts (`error`).
    pub store_syncs: IntCounterVec,
    /// `actgate_audit_shipped_total`: audit records copied to the shared store.
    pub audit_shipped: IntCounter,
    /// `actgate_token_cache_lookups_total{result}`: hit or miss.
    pub token_cache_lookups: IntCounterVec,
    /// `actgate_token_cache_evictions_total`.
    pub token_cache_evictions: IntCounter,
    /// `actgate_token_cache_entries`.
    pub token_cache_entries: IntGauge,
    /// `actgate_audit_records_written_total`.
    pub audit_written: IntCounter,
    /// `actgate_audit_failures_total`: events that could not be recorded (their requests
    /// were denied).
    pub audit_failures: IntCounter,
    /// `actgate_audit_queue_depth`.
    pub audit_queue_depth: IntGauge,
    /// `actgate_audit_index_failures_total`: index writes that failed (the log has the
    /// records; the index catches up at the next start).
    pub audit_index_failures: IntCounter,
    /// `actgate_audit_torn_repairs_total`: torn last records cut off at start.
    pub audit_torn_repairs: IntCounter,
    /// `actgate_audit_refusals_aggregated_total`: unauthenticated refusals counted into a
    /// summary record instead of recorded one by one (over `audit.refusalRate`, or a full
    /// queue).
    pub audit_refusals_aggregated: IntCounter,
    /// `actgate_tls_reloads_total{listener, result}`: certificate reloads.
    pub tls_reloads: IntCounterVec,
    /// `actgate_mcp_requests_total{endpoint, method, tool, decision}`: MCP messages; `tool`
    /// is a configured tool's name, `other` or `-` (bounded by the config).
    pub mcp_requests: IntCounterVec,
    /// `actgate_agent_decisions_total{agent, decision}`, only with `metrics.perAgentLabels`.
    agent_decisions: Option<AgentLabels>,
}

/// Per-agent decision counts with a cap on distinct agents.
struct AgentLabels {
    counter: IntCounterVec,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    max: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics with per-agent decision counts for at most `max_agents` agents (the rest are
    /// `other`).
    pub fn with_agent_labels(max_agents: usize) -> Metrics {
        let mut m = Metrics::new();
        let counter = IntCounterVec::new(
            Opts::new(
                "actgate_agent_decisions_total",
                "Decisions per agent (first metrics.maxAgentLabels agents; the rest are `other`).",
            ),
            &["agent", "decision"],
        )
        .expect("metric definition");
        m.registry
            .register(Box::new(counter.clone()))
            .expect("unique metric");
        m.agent_decisions = Some(AgentLabels {
            counter,
            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
            max: max_agents,
        });
        m
    }

    /// Registers zeros for the MCP endpoints' common series, so dashboards show them before
    /// the first message.
    pub fn preregister_mcp<'a>(&self, endpoints: impl Iterator<Item = &'a str>) {
        for ep in endpoints {
            for method in ["tools/call", "tools/list"] {
                for decision in ["allowed", "denied"] {
                    let tool = if method == "tools/call" { "other" } else { "-" };
                    self.mcp_requests
                        .with_label_values(&[ep, method, tool, decision]);
                }
            }
        }
    }

    /// Counts a decision for an agent, when per-agent labels are on.
    pub fn agent_decision(&self, agent: &str, decision: &str) {
        let Some(labels) = &self.agent_decisions else {
            return;
        };
        let known = {
            let Ok(mut seen) = labels.seen.lock() else {
                return;
            };
            seen.contains(agent) || (seen.len() < labels.max && seen.insert(agent.to_string()))
        };
        let label = if known { agent } else { "other" };
        labels.counter.with_label_values(&[label, decision]).inc();
    }
}

impl Metrics {
    /// Creates every metric in a fresh registry and pre-registers the known label values, so
    /// dashboards see zeros instead of gaps.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let decisions = counter(
            "actgate_decisions_total",
            "Decisions made, by outcome, reason code and where (proxy or enforce).",
            &["decision", "reason", "source"],
        );
        let decision_seconds = histogram(
            "actgate_decision_duration_seconds",
            "Time to decide: token check and policy evaluation.",
            &["source"],
            DECISION_BUCKETS,
        );
        let proxy_seconds = histogram(
            "actgate_proxy_request_duration_seconds",
            "Proxied request latency, from request head to response head.",
            &["route", "status_class"],
            REQUEST_BUCKETS,
        );
        let upstream = counter(
            "actgate_upstream_responses_total",
            "Upstream outcomes: 2xx..5xx, error (connect/IO) or timeout.",
            &["upstream", "outcome"],
        );
        let token_rejections = counter(
            "actgate_token_rejections_total",
            "Tokens refused, by reason.",
            &["reason"],
        );
        let snapshot_version = IntGauge::new(
            "actgate_snapshot_version",
            "Version of the policy snapshot in use.",
        )
        .expect("metric definition");
        registry
            .register(Box::new(snapshot_version.clone()))
            .expect("unique metric");
        let reloads = counter(
            "actgate_snapshot_reloads_total",
            "Snapshot rebuilds (API writes, config reloads), by result.",
            &["result"],
        );
        let in_flight = IntGaugeVec::new(
            Opts::new("actgate_in_flight_requests", "Requests being served."),
            &["listener"],
        )
        .expect("metric definition");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");
        let audit_commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "actgate_audit_commit_duration_seconds",
                "One audit group commit: append, fsync and index.",
            )
            .buckets(COMMIT_BUCKETS.to_vec()),
        )
        .expect("metric definition");
        registry
            .register(Box::new(audit_commit_seconds.clone()))
            .expect("unique metric");
        let api_requests = counter(
            "actgate_api_requests_total",
            "Control-plane API requests, by method and status class.",
            &["method", "status_class"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new("actgate_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("metric definition");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let connections_rejected = counter(
            "actgate_connections_rejected_total",
            "Connections refused because the listener was at limits.maxConnections.",
            &["listener"],
        );

        let connections_open = IntGaugeVec::new(
            Opts::new(
                "actgate_connections_open",
                "Open client connections, by listener (at most limits.maxConnections).",
            ),
            &["listener"],
        )
        .expect("metric definition");
        registry
            .register(Box::new(connections_open.clone()))
            .expect("unique metric");

        let token_cache_lookups = counter(
            "actgate_token_cache_lookups_total",
            "Verified-token cache lookups, by result (hit or miss).",
            &["result"],
        );
        let plain_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let store_up = gauge(
            "actgate_store_up",
            "1 while the store answers (always 1 with the embedded SQLite store).",
        );
        store_up.set(1);
        let store_staleness = Gauge::new(
            "actgate_store_staleness_seconds",
            "Seconds since the snapshot was last confirmed current with the shared store (0 with the embedded store); past store.maxStaleness every decision is refused.",
        )
        .expect("metric definition");
        registry
            .register(Box::new(store_staleness.clone()))
            .expect("unique metric");
        let store_syncs = counter(
            "actgate_store_syncs_total",
            "Shared store: snapshot rebuilds after a change (changed) and failed contacts (error).",
            &["result"],
        );
        for result in ["changed", "error"] {
            store_syncs.with_label_values(&[result]);
        }
        let audit_shipped = plain_counter(
            "actgate_audit_shipped_total",
            "Audit records copied to the shared store (store.postgres).",
        );
        let token_cache_evictions = plain_counter(
            "actgate_token_cache_evictions_total",
            "Verified tokens evicted from the cache (capacity or expiry).",
        );
        let token_cache_entries = gauge(
            "actgate_token_cache_entries",
            "Verified tokens currently cached.",
        );
        let audit_written = plain_counter(
            "actgate_audit_records_written_total",
            "Audit records committed.",
        );
        let audit_failures = plain_counter(
            "actgate_audit_failures_total",
            "Audit records that could not be recorded; their requests were denied.",
        );
        let audit_queue_depth = gauge(
            "actgate_audit_queue_depth",
            "Audit records waiting for the writer.",
        );
        let audit_index_failures = plain_counter(
            "actgate_audit_index_failures_total",
            "Audit index writes that failed; the log has the records and the index catches up at the next start.",
        );
        let audit_refusals_aggregated = plain_counter(
            "actgate_audit_refusals_aggregated_total",
            "Unauthenticated refusals counted into a per-second summary audit record instead of one record each.",
        );
        let audit_torn_repairs = plain_counter(
            "actgate_audit_torn_repairs_total",
            "Torn last audit records (from a crash mid-write) cut off at start.",
        );
        let tls_reloads = counter(
            "actgate_tls_reloads_total",
            "TLS certificate reloads of a listener, by result.",
            &["listener", "result"],
        );
        let mcp_requests = counter(
            "actgate_mcp_requests_total",
            "MCP messages by endpoint, JSON-RPC method, configured tool (or other) and decision.",
            &["endpoint", "method", "tool", "decision"],
        );
        for result in ["hit", "miss"] {
            token_cache_lookups.with_label_values(&[result]);
        }

        for reason in Reason::ALL {
            let decision = if reason == Reason::Allowed {
                "allowed"
            } else {
                "denied"
            };
            for source in ["proxy", "enforce", "mcp"] {
                decisions.with_label_values(&[decision, reason.as_str(), source]);
            }
            if reason.is_token_problem() {
                token_rejections.with_label_values(&[reason.as_str()]);
            }
        }
        // Refusals before a decision count as denials too, with their own reasons.
        for reason in crate::audit::REFUSAL_REASONS {
            for source in ["proxy", "mcp"] {
                decisions.with_label_values(&["denied", reason, source]);
            }
        }
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        for listener in ["proxy", "api"] {
            in_flight.with_label_values(&[listener]);
            connections_rejected.with_label_values(&[listener]);
            connections_open.with_label_values(&[listener]);
        }

        let proxy_in_flight = in_flight.with_label_values(&["proxy"]);
        Metrics {
            registry,
            proxy_in_flight,
            decisions,
            decision_seconds,
            proxy_seconds,
            upstream,
            token_rejections,
            snapshot_version,
            reloads,
            in_flight,
            audit_commit_seconds,
            api_requests,
            build_info,
            connections_rejected,
            connections_open,
            store_up,
            store_staleness,
            store_syncs,
            audit_shipped,
            token_cache_lookups,
            token_cache_evictions,
            token_cache_entries,
            audit_written,
            audit_failures,
            audit_queue_depth,
            audit_index_failures,
            audit_torn_repairs,
            audit_refusals_aggregated,
            tls_reloads,
            mcp_requests,
            agent_decisions: None,
        }
    }

    /// Copies the counters other parts keep as atomics (token cache, audit writer) into
    /// their metrics; called before each scrape.
    pub fn sync_from(&self, gw: &crate::gateway::Gateway) {
        let advance = |c: &IntCounter, now: u64| {
            let seen = c.get();
            if now > seen {
                c.inc_by(now - seen);
            }
        };
        let cache = &gw.tokens.cache.stats;
        advance(
            &self.token_cache_lookups.with_label_values(&["hit"]),
            cache.hits.load(Ordering::Relaxed),
        );
        advance(
            &self.token_cache_lookups.with_label_values(&["miss"]),
            cache.misses.load(Ordering::Relaxed),
        );
        advance(
            &self.token_cache_evictions,
            cache.evictions.load(Ordering::Relaxed),
        );
        self.token_cache_entries.set(gw.tokens.cache.len() as i64);
        let audit = &gw.audit.stats;
        advance(&self.audit_written, audit.written.load(Ordering::Relaxed));
        advance(&self.audit_failures, audit.failures.load(Ordering::Relaxed));
        advance(
            &self.audit_refusals_aggregated,
            audit.aggregated.load(Ordering::Relaxed),
        );
        self.audit_queue_depth.set(gw.audit.queue_depth() as i64);
        self.store_up.set(i64::from(gw.health.is_up()));
        self.store_staleness
            .set(gw.health.staleness().as_secs_f64());
    }

    /// The registry, for collectors registered elsewhere.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber, writing to stderr. The level comes from
/// `ACTGATE_LOG` (e.g. `info`, `actgate=debug`), default `info`. An `ACTGATE_LOG` that does not
/// parse is an error naming it (a typo must not silently mean "info").
pub fn init_tracing(format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("ACTGATE_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).map_err(|e| {
            format!(
                "ACTGATE_LOG={v:?} is not a log filter ({e}); write a level (error, warn, info, debug, trace) or target=level pairs, e.g. info,actgate=debug"
            )
        })?,
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    Ok(())
}
