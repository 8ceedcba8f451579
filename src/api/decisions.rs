//! `POST /v1/enforce` (decide, audit, answer) and `GET /v1/audit` (read the trail).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query as UrlQuery, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, Caller, StrictJson};
use crate::audit::{AuditFilter, Source};
use crate::error::Problems;
use crate::gateway::Gateway;
use crate::ids::sequential_id;
use crate::policy::context::ContextFacts;
use crate::policy::{Query, Reason};

/// `POST /v1/enforce` body, as the ACT guide sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct EnforceInput {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    capability_token: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

/// Longest accepted `requestId`, action or resource id.
const MAX_FIELD: usize = 2048;

pub(super) async fn enforce(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    StrictJson(input): StrictJson<EnforceInput>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let started = Instant::now();
    let mut p = Problems::new();
    let mut required = |v: &Option<String>, field: &str, hint: &str| -> String {
        match v.as_deref() {
            Some(s)
                if !s.is_empty() && s.len() <= MAX_FIELD && !s.chars().any(char::is_control) =>
            {
                s.to_string()
            }
            Some(_) => {
                p.push(
                    field,
                    format!("must be 1–{MAX_FIELD} bytes without control characters"),
                );
                String::new()
            }
            None => {
                p.push(field, format!("required: {hint}"));
                String::new()
            }
        }
    };
    let action = required(
        &input.action,
        "action",
        "the action the agent wants, e.g. \"read\"",
    );
    let resource = required(
        &input.resource_id,
        "resourceId",
        "the resource it acts on, e.g. \"api://crm/customers/123\"",
    );
    let request_id = match input.request_id {
        Some(r) if r.is_empty() || r.len() > 128 || r.chars().any(char::is_control) => {
            p.push(
                "requestId",
                "must be 1–128 bytes without control characters",
            );
            String::new()
        }
        Some(r) => r,
        None => sequential_id("req_"),
    };
    let facts = match input.context.as_ref().map(ContextFacts::from_json) {
        None => ContextFacts::default(),
        Some(Ok(f)) => f,
        Some(Err(msg)) => {
            p.push("context", msg);
            ContextFacts::default()
        }
    };
    if !p.is_empty() {
        return Err(ApiError::Invalid(p));
    }
    let query = Query {
        action: &action,
        resource: &resource,
        facts: facts.facts(),
    };
    // The API key fixes the tenant; a body naming another one is a mismatch, not a switch.
    let mut outcome = match input.tenant_id.as_deref() {
        Some(t) if t != caller.tenant => {
            let mut o = gw
                .authorize(
                    Source::Enforce,
                    input.capability_token.as_deref(),
                    Some(&caller.tenant),
                    &query,
                )
                .await;
            if o.is_allowed() || !o.reason.is_token_problem() {
                o.reason = Reason::TenantMismatch;
                o.message = format!("tenantId {t:?} is not the tenant of this API key");
                o.policy_id = None;
                o.constraints = None;
            }
            o
        }
        _ => {
            gw.authorize(
                Source::Enforce,
                input.capability_token.as_deref(),
                Some(&caller.tenant),
                &query,
            )
            .await
        }
    };
    let audit_id = sequential_id("aud_");
    let mut event = outcome.decision_event(
        audit_id.clone(),
        Source::Enforce,
        caller.tenant.as_str().into(),
        &request_id,
        (action.into(), resource),
        true,
    );
    event.latency_us = Some(started.elapsed().as_micros() as u64);
    if let Err(e) = gw.audit.record(event).await {
        // Fail closed: an allow that cannot be audited is not an allow.
        tracing::error!(error = %e, request_id = %request_id, "audit unavailable; enforce answers denied");
        outcome.reason = Reason::InternalError;
        outcome.message = format!("{e}: denied (fail closed)");
        outcome.policy_id = None;
        outcome.constraints = None;
    }
    // The audit record is the per-decision record; this line is the debug-level access log.
    tracing::debug!(
        request_id = %request_id,
        decision = if outcome.is_allowed() { "allowed" } else { "denied" },
        reason = outcome.reason.as_str(),
        agent = outcome.agent_id.as_deref().unwrap_or("-"),
        token_id = outcome.token_id.as_deref().unwrap_or("-"),
        policy = outcome.policy_id.as_deref().unwrap_or("-"),
        "enforce"
    );
    // A decision actgate could not make (the shared store unreachable past maxStaleness) is
    // a 503 with the same body, so a client that reads only the status fails closed too.
    let status = if outcome.reason.fails_closed_always() {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        axum::http::StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "decision": if outcome.is_allowed() { "allowed" } else { "denied" },
            "reason": outcome.reason.as_str(),
            "message": outcome.message,
            "policyId": outcome.policy_id,
            "constraints": outcome.constraints.map(|c| serde_json::to_value(c).unwrap_or_default()).unwrap_or_else(|| json!({})),
            "requestId": request_id,
            "auditId": audit_id,
        })),
    ))
}

/// `POST /v1/check` body: a decision for an agent without a token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CheckInput {
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default)]
    policy_ids: Option<Vec<String>>,
}

/// `POST /v1/check`: what the gateway would decide for this agent, and why, policy by
/// policy — from the live snapshot, so `actgate check --api` sees what `/v1/enforce` sees.
/// A dry run: nothing is audited or counted as a decision.
pub(super) async fn check(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    StrictJson(input): StrictJson<CheckInput>,
) -> Result<Json<crate::snapshot::CheckReport>, ApiError> {
    let mut p = Problems::new();
    let mut field = |v: &Option<String>, name: &str| -> String {
        match v.as_deref() {
            Some(s) if !s.is_empty() && s.len() <= MAX_FIELD => s.to_string(),
            _ => {
                p.push(name, format!("required: 1–{MAX_FIELD} bytes"));
                String::new()
            }
        }
    };
    let agent = field(&input.agent_id, "agentId");
    let action = field(&input.action, "action");
    let resource = field(&input.resource_id, "resourceId");
    let facts = match input.context.as_ref().map(ContextFacts::from_json) {
        None => ContextFacts::default(),
        Some(Ok(f)) => f,
        Some(Err(msg)) => {
            p.push("context", msg);
            ContextFacts::default()
        }
    };
    if !p.is_empty() {
        return Err(ApiError::Invalid(p));
    }
    let query = Query {
        action: &action,
        resource: &resource,
        facts: facts.facts(),
    };
    let snapshot = gw.snapshot();
    Ok(Json(snapshot.check(
        &caller.tenant,
        &agent,
        input.policy_ids.as_deref(),
        &query,
    )))
}

/// Most events one `GET /v1/audit` page returns.
const MAX_AUDIT_PAGE: usize = 1000;

pub(super) async fn audit(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut p = Problems::new();
    let mut f = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "agentId" => f.agent_id = Some(value),
            "decision" => match value.as_str() {
                "allowed" | "denied" => f.decision = Some(value),
                _ => p.push("decision", "must be `allowed` or `denied`"),
            },
            "action" => f.action = Some(value),
            "resource" => f.resource = Some(value),
            "since" | "until" => match parse_time(&value) {
                Some(ms) if key == "since" => f.since_ms = Some(ms),
                Some(ms) => f.until_ms = Some(ms),
                None => p.push(
                    key.as_str(),
                    "must be an RFC 3339 time (2026-01-31T12:00:00Z) or Unix milliseconds",
                ),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_AUDIT_PAGE).contains(&n) => f.limit = n,
                _ => p.push("limit", format!("must be a number from 1 to {MAX_AUDIT_PAGE}")),
            },
            "cursor" => match value.parse::<u64>() {
                Ok(n) => f.before_seq = Some(n),
                Err(_) => p.push("cursor", "use the nextCursor of the previous page"),
            },
            other => p.push(
                other,
                "unknown parameter; known: agentId, decision, action, resource, since, until, limit, cursor",
            ),
        }
    }
    if !p.is_empty() {
        return Err(ApiError::Invalid(p));
    }
    let limit = f.limit;
    if let Some(pg) = &gw.shared {
        // Every replica's events (each with its `replica`); the cursor is the shared table's
        // row id. Records reach the table within a fraction of a second of their commit.
        let (events, last) = pg.audit(&caller.tenant, &f).await?;
        let next = (events.len() == limit)
            .then(|| last.map(|id| id.to_string()))
            .flatten();
        return Ok(Json(json!({ "events": events, "nextCursor": next })));
    }
    let index = Arc::clone(&gw.audit_index);
    let tenant = caller.tenant.clone();
    let events = tokio::task::spawn_blocking(move || index.query(&tenant, &f))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "audit query failed");
            ApiError::Internal("the audit index could not be read".into())
        })?;
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(json!({ "events": events, "nextCursor": next })))
}

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}
