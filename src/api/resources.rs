//! Agents, policies and tokens: create, read, change, revoke. Every write takes the gateway's
//! write lock, writes the store, refreshes the snapshot, then answers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ApiError, Caller, StrictJson, invalid};
use crate::audit::now_stamp;
use crate::error::Problems;
use crate::gateway::{Gateway, Refresh};
use crate::ids::new_id;
use crate::policy::model::is_identifier;
use crate::policy::{Policy, PolicyInput, PolicySource, validate_policy};
use crate::store::{Agent, AgentStatus, StoredPolicy, TokenRecord};
use crate::token::{now_unix, rfc3339};

/// Most metadata entries on an agent.
const MAX_METADATA_KEYS: usize = 64;
/// Largest serialized metadata, bytes.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// `POST /v1/agents` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct AgentInput {
    /// Optional fixed id (`agent_…`); generated when absent.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

pub(super) async fn create_agent(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    StrictJson(input): StrictJson<AgentInput>,
) -> Result<Response, ApiError> {
    let mut p = Problems::new();
    let name = match input.name.as_deref().map(str::trim) {
        None => {
            p.push(
                "name",
                "required: name the agent, e.g. \"Customer Support Assistant\"",
            );
            String::new()
        }
        Some("") => {
            p.push("name", "must not be empty");
            String::new()
        }
        Some(n) if n.len() > 200 => {
            p.push("name", "longer than 200 bytes");
            String::new()
        }
        Some(n) => n.to_string(),
    };
    if input.description.as_ref().is_some_and(|d| d.len() > 4096) {
        p.push("description", "longer than 4096 bytes");
    }
    let metadata = input.metadata.unwrap_or_default();
    if metadata.len() > MAX_METADATA_KEYS {
        p.push("metadata", format!("more than {MAX_METADATA_KEYS} keys"));
    }
    if Value::Object(metadata.clone()).to_string().len() > MAX_METADATA_BYTES {
        p.push(
            "metadata",
            format!("larger than {MAX_METADATA_BYTES} bytes"),
        );
    }
    if let Some(id) = &input.id
        && !is_identifier(id, "agent_")
    {
        p.push(
            "id",
            "must be `agent_` followed by letters, digits, `_` or `-`",
        );
    }
    if !p.is_empty() {
        return Err(ApiError::Invalid(p));
    }
    if let Some(id) = &input.id
        && gw
            .config()
            .agents
            .iter()
            .any(|a| a.id == *id && a.tenant == caller.tenant)
    {
        return Err(ApiError::Conflict(format!("agent id {id} is taken")));
    }
    let (now, _) = now_stamp();
    let agent = Agent {
        source: crate::policy::PolicySource::Api,
        id: input.id.unwrap_or_else(|| new_id("agent_")),
        tenant: caller.tenant,
        name,
        description: input.description,
        metadata,
        status: AgentStatus::Active,
        created_at: now.clone(),
        updated_at: now,
    };
    let _guard = gw.write_lock().await;
    gw.store.insert_agent(&agent).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => {
            ApiError::Conflict(format!("agent id {} is taken", agent.id))
        }
        other => other.into(),
    })?;
    refresh(&gw, Refresh::AgentsAndRevocations).await?;
    tracing::info!(agent = %agent.id, tenant = %agent.tenant, "agent registered");
    Ok((StatusCode::CREATED, Json(agent)).into_response())
}

/// `api.policyWrites: false` makes policies config-only.
fn policy_writes_allowed(gw: &Gateway) -> Result<(), ApiError> {
    if gw.config().api.policy_writes {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "policies are managed in the config file ({}) only (api.policyWrites: false)",
            gw.config().origin
        )))
    }
}

async fn refresh(gw: &Gateway, what: Refresh) -> Result<(), ApiError> {
    gw.refresh(what)
        .await
        .map(|_| ())
        .map_err(ApiError::Internal)
}

pub(super) async fn list_agents(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let mut agents: Vec<Agent> = gw
        .config()
        .agents
        .iter()
        .filter(|a| a.tenant == caller.tenant)
        .map(Agent::from_config)
        .collect();
    agents.extend(gw.store.agents(&caller.tenant).await?);
    Ok(Json(json!({ "agents": agents })))
}

pub(super) async fn get_agent(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    gw.find_agent(&caller.tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("agent {id}")))
}

pub(super) async fn revoke_agent(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    if gw
        .config()
        .agents
        .iter()
        .any(|a| a.id == id && a.tenant == caller.tenant)
    {
        return Err(ApiError::Conflict(format!(
            "agent {id} is defined in the config file ({}); set `status: revoked` there",
            gw.config().origin
        )));
    }
    let (now, _) = now_stamp();
    let _guard = gw.write_lock().await;
    let agent = gw
        .store
        .set_agent_status(&caller.tenant, &id, AgentStatus::Revoked, &now)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent {id}")))?;
    refresh(&gw, Refresh::AgentsAndRevocations).await?;
    tracing::info!(agent = %id, tenant = %caller.tenant, "agent revoked; its tokens are denied from now on");
    Ok(Json(agent))
}

/// A policy as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PolicyView {
    #[serde(flatten)]
    policy: Policy,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

fn validate_api_policy(input: &PolicyInput, tenant: &str, id: &str) -> Result<Policy, ApiError> {
    let mut p = Problems::new();
    validate_policy(input, tenant, id, PolicySource::Api, "", &mut p).ok_or(ApiError::Invalid(p))
}

fn check_config_clash(gw: &Gateway, tenant: &str, id: &str, name: &str) -> Result<(), ApiError> {
    for cp in gw.config_policies(tenant) {
        if *cp.id == *id {
            return Err(ApiError::Conflict(format!(
                "policy {id} is defined in the config file ({}); edit it there",
                gw.config().origin
            )));
        }
        if cp.name == name {
            return Err(ApiError::Conflict(format!(
                "a config-file policy is already named {name:?}: {} ({}); choose another name",
                cp.id,
                gw.config().origin
            )));
        }
    }
    Ok(())
}

pub(super) async fn create_policy(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    StrictJson(mut input): StrictJson<PolicyInput>,
) -> Result<Response, ApiError> {
    policy_writes_allowed(&gw)?;
    let id = input.id.clone().unwrap_or_else(|| new_id("pol_"));
    let policy = validate_api_policy(&input, &caller.tenant, &id)?;
    check_config_clash(&gw, &caller.tenant, &id, &policy.name)?;
    input.id = Some(id.clone());
    input.name = Some(policy.name.clone());
    let (now, _) = now_stamp();
    let stored = StoredPolicy {
        tenant: caller.tenant.clone(),
        input,
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    let _guard = gw.write_lock().await;
    if let Err(e) = gw.store.insert_policy(&stored).await {
        return Err(match e {
            crate::store::StoreError::Conflict(_) => {
                // Name the policy that holds the id or the name, not the one refused.
                let existing = gw
                    .store
                    .policies(&caller.tenant)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .find(|p| p.id() == id || p.input.name.as_deref() == Some(&policy.name));
                ApiError::Conflict(match existing {
                    Some(p) if p.id() == id => format!("policy {id} already exists"),
                    Some(p) => format!(
                        "a policy named {:?} already exists: {}; choose another name or change that one (PUT /v1/policies/{})",
                        policy.name,
                        p.id(),
                        p.id()
                    ),
                    None => format!(
                        "a policy with id {id} or name {:?} already exists",
                        policy.name
                    ),
                })
            }
            other => other.into(),
        });
    }
    refresh(&gw, Refresh::Policies).await?;
    tracing::info!(policy = %id, tenant = %caller.tenant, "policy created");
    let view = PolicyView {
        policy,
        created_at: Some(now.clone()),
        updated_at: Some(now),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn view_stored(sp: StoredPolicy) -> Result<PolicyView, ApiError> {
    let policy = validate_api_policy(&sp.input, &sp.tenant, sp.id()).map_err(|_| {
        ApiError::Internal(format!("stored policy {} no longer validates", sp.id()))
    })?;
    Ok(PolicyView {
        policy,
        created_at: Some(sp.created_at),
        updated_at: Some(sp.updated_at),
    })
}

pub(super) async fn list_policies(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let mut out: Vec<PolicyView> = gw
        .config_policies(&caller.tenant)
        .into_iter()
        .map(|p| PolicyView {
            policy: p,
            created_at: None,
            updated_at: None,
        })
        .collect();
    for sp in gw.store.policies(&caller.tenant).await? {
        out.push(view_stored(sp)?);
    }
    Ok(Json(json!({ "policies": out })))
}

pub(super) async fn get_policy(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    if let Some(p) = gw
        .config_policies(&caller.tenant)
        .into_iter()
        .find(|p| *p.id == *id)
    {
        return Ok(Json(PolicyView {
            policy: p.clone(),
            created_at: None,
            updated_at: None,
        }));
    }
    let sp = gw
        .store
        .policy(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("policy {id}")))?;
    Ok(Json(view_stored(sp)?))
}

pub(super) async fn update_policy(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    StrictJson(mut input): StrictJson<PolicyInput>,
) -> Result<Json<PolicyView>, ApiError> {
    policy_writes_allowed(&gw)?;
    if let Some(given) = &input.id
        && *given != id
    {
        return Err(invalid(
            "id",
            format!("the body's id {given} differs from the URL's {id}; ids cannot change"),
        ));
    }
    let policy = validate_api_policy(&input, &caller.tenant, &id)?;
    check_config_clash(&gw, &caller.tenant, &id, &policy.name)?;
    let _guard = gw.write_lock().await;
    let existing = gw
        .store
        .policy(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("policy {id}")))?;
    input.id = Some(id.clone());
    input.name = Some(policy.name.clone());
    let (now, _) = now_stamp();
    let stored = StoredPolicy {
        tenant: caller.tenant.clone(),
        input,
        created_at: existing.created_at.clone(),
        updated_at: now.clone(),
    };
    gw.store.update_policy(&stored).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => {
            ApiError::Conflict(format!("another policy is named {:?}", policy.name))
        }
        other => other.into(),
    })?;
    refresh(&gw, Refresh::Policies).await?;
    tracing::info!(policy = %id, tenant = %caller.tenant, "policy updated");
    Ok(Json(PolicyView {
        policy,
        created_at: Some(existing.created_at),
        updated_at: Some(now),
    }))
}

pub(super) async fn delete_policy(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    policy_writes_allowed(&gw)?;
    if gw
        .config_policies(&caller.tenant)
        .iter()
        .any(|p| *p.id == *id)
    {
        return Err(ApiError::Conflict(format!(
            "policy {id} is defined in the config file ({}); remove it there",
            gw.config().origin
        )));
    }
    let _guard = gw.write_lock().await;
    let existing = gw
        .store
        .policy(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("policy {id}")))?;
    gw.store.delete_policy(&caller.tenant, &id).await?;
    refresh(&gw, Refresh::Policies).await?;
    tracing::info!(policy = %id, tenant = %caller.tenant, "policy deleted");
    Ok(Json(view_stored(existing)?))
}

/// `POST /v1/tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TokenInput {
    #[serde(default)]
    agent_id: Option<String>,
    /// Seconds.
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    policy_ids: Option<Vec<String>>,
}

pub(super) async fn issue_token(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    StrictJson(input): StrictJson<TokenInput>,
) -> Result<Response, ApiError> {
    let max = gw.config().tokens.max_ttl.as_secs();
    let mut p = Problems::new();
    let ttl = input
        .expires_in
        .unwrap_or(gw.config().tokens.default_ttl.as_secs());
    if ttl == 0 {
        p.push("expiresIn", "must be at least 1 (seconds)");
    } else if ttl > max {
        p.push(
            "expiresIn",
            format!("{ttl} s is longer than tokens.maxTtl ({max} s); ask for at most {max}"),
        );
    }
    let agent_id = match input.agent_id.as_deref() {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => {
            p.push("agentId", "required: the id returned by POST /v1/agents");
            String::new()
        }
    };
    if let Some(ids) = &input.policy_ids {
        let snapshot = gw.snapshot();
        for (i, id) in ids.iter().enumerate() {
            let known = snapshot
                .policies
                .policies()
                .iter()
                .any(|pol| *pol.id == **id && pol.tenant == caller.tenant);
            if !known {
                p.push(
                    format!("policyIds[{i}]"),
                    format!("no policy {id} in this tenant"),
                );
            }
        }
        if ids.len() > 100 {
            p.push("policyIds", "at most 100 policy ids");
        }
    }
    if !p.is_empty() {
        return Err(ApiError::Invalid(p));
    }
    caller.require_agent(&agent_id)?;
    let agent = gw
        .find_agent(&caller.tenant, &agent_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent {agent_id}")))?;
    if agent.status != AgentStatus::Active {
        return Err(ApiError::Conflict(format!(
            "agent {agent_id} is revoked; it gets no tokens"
        )));
    }
    let now = now_unix();
    let (token, claims) = gw
        .tokens
        .issue(
            &agent_id,
            &caller.tenant,
            Duration::from_secs(ttl),
            input.policy_ids,
            now,
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    gw.store.insert_token(&TokenRecord::issued(&claims)).await?;
    tracing::info!(token_id = %claims.jti, agent = %agent_id, tenant = %caller.tenant, ttl, "token issued");
    let mut body = json!({
        "token": token,
        "tokenId": claims.jti,
        "agentId": claims.agent,
        "tenantId": claims.tenant,
        "expiresAt": rfc3339(claims.expires_at),
        "expiresIn": ttl,
    });
    if let Some(ids) = claims.policy_ids {
        body["policyIds"] = json!(ids);
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) async fn revoke_token(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if caller.agents.is_some() {
        let rec = gw
            .store
            .token(&caller.tenant, &id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("token {id}")))?;
        caller.require_agent(&rec.agent_id)?;
    }
    let _guard = gw.write_lock().await;
    let rec = gw
        .store
        .revoke_token(&caller.tenant, &id, now_unix())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("token {id}")))?;
    refresh(&gw, Refresh::AgentsAndRevocations).await?;
    tracing::info!(token_id = %id, tenant = %caller.tenant, "token revoked");
    Ok(Json(json!({
        "tokenId": rec.id,
        "agentId": rec.agent_id,
        "tenantId": rec.tenant,
        "expiresAt": rfc3339(rec.expires_at),
        "revokedAt": rec.revoked_at.map(rfc3339),
        "status": "revoked",
    })))
}
