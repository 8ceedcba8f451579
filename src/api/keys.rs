//! `/v1/apikeys`: create, list and delete API keys (role `admin` only, within its tenant).
//!
//! A key is shown once, in the answer that creates it; the store keeps its SHA-256. A deleted
//! key is refused from the next request (the snapshot holding the keys is rebuilt before the
//! answer). Config keys are listed but changed only in the config file, and the last admin
//! key of a tenant cannot be deleted (that would lock the tenant out of its own API).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Caller, StrictJson, invalid};
use crate::error::Problems;
use crate::gateway::{Gateway, Refresh};
use crate::policy::PolicySource;
use crate::policy::model::is_identifier;
use crate::store::{ApiKeyRecord, Role};

/// `POST /v1/apikeys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct KeyInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    agents: Option<Vec<String>>,
}

/// The keys of `tenant` in force: the config's and the stored ones.
fn tenant_keys(gw: &Gateway, tenant: &str) -> Vec<ApiKeyRecord> {
    let mut keys: Vec<ApiKeyRecord> = gw
        .snapshot()
        .api_keys
        .values()
        .filter(|k| k.tenant == tenant)
        .cloned()
        .collect();
    keys.sort_by(|a, b| {
        (a.source != PolicySource::Config, &a.created_at, &a.id).cmp(&(
            b.source != PolicySource::Config,
            &b.created_at,
            &b.id,
        ))
    });
    keys
}

pub(super) async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    StrictJson(input): StrictJson<KeyInput>,
) -> Result<Response, ApiError> {
    let mut p = Problems::new();
    let name = match input.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() && n.len() <= 100 && !n.chars().any(char::is_control) => {
            n.to_string()
        }
        Some(_) => {
            p.push(
                "name",
                "must be 1–100 characters without control characters",
            );
            String::new()
        }
        None => {
            p.push(
                "name",
                "required: name the key, e.g. \"support-tool-runner\"",
            );
            String::new()
        }
    };
    let role = match input.role.as_deref() {
        Some(r) => Role::parse(r).unwrap_or_else(|| {
            p.push(
                "role",
                format!("`{r}` is not a role; use admin, issuer, enforcer or auditor"),
            );
            Role::Auditor
        }),
        None => {
            p.push(
                "role",
                "required: admin, issuer (issue/revoke tokens, enforce), enforcer (enforce) or auditor (read)",
            );
            Role::Auditor
        }
    };
    if let Some(agents) = &input.agents {
        if role != Role::Issuer {
            p.push(
                "agents",
                "only an issuer key is limited to agents; remove `agents` or use role issuer",
            );
        }
        if agents.is_empty() || agents.len() > 1000 {
            p.push("agents", "list 1 to 1000 agent ids, or leave `agents` out");
        }
        for (i, a) in agents.iter().enumerate() {
            if !is_identifier(a, "agent_") {
                p.push(
                    format!("agents[{i}]"),
                    "must be an agent id: `agent_` followed by letters, digits, `_` or `-`",
                );
            }
        }
    }
    if !p.is_empty() {
        return Err(ApiError::Invalid(p));
    }
    let key = crate::apikey::generate();
    let record = ApiKeyRecord {
        id: crate::ids::new_id("key_"),
        hash: crate::apikey::hash_key(&key),
        tenant: caller.tenant.clone(),
        name,
        role,
        agents: input.agents,
        created_at: crate::audit::now_stamp().0,
        source: PolicySource::Api,
    };
    let _guard = gw.write_lock().await;
    gw.store.put_api_key(&record).await?;
    refresh(&gw).await?;
    tracing::info!(key_id = %record.id, name = %record.name, role = record.role.as_str(), tenant = %record.tenant, by = %caller.key_name, "API key created");
    let mut body = serde_json::to_value(&record).unwrap_or_default();
    body["key"] = Value::String(key);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(json!({ "apiKeys": tenant_keys(&gw, &caller.tenant) }))
}

pub(super) async fn delete(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let _guard = gw.write_lock().await;
    let keys = tenant_keys(&gw, &caller.tenant);
    let Some(target) = keys.iter().find(|k| k.id == id) else {
        return Err(ApiError::NotFound(format!("API key {id}")));
    };
    if target.source == PolicySource::Config {
        return Err(ApiError::Conflict(format!(
            "API key {id} ({}) is defined in the config file ({}); remove it there",
            target.name,
            gw.config().origin
        )));
    }
    let admins = keys.iter().filter(|k| k.role == Role::Admin).count();
    if target.role == Role::Admin && admins == 1 {
        return Err(ApiError::Conflict(format!(
            "API key {id} ({}) is the last admin key of tenant {}; create another admin key first (POST /v1/apikeys with role admin), then delete this one",
            target.name, caller.tenant
        )));
    }
    let removed = gw
        .store
        .delete_api_key(&caller.tenant, &id)
        .await?
        .ok_or_else(|| invalid("id", format!("API key {id} vanished; try again")))?;
    refresh(&gw).await?;
    forget_generated_key_file(&gw, &removed);
    tracing::info!(key_id = %removed.id, name = %removed.name, tenant = %removed.tenant, by = %caller.key_name, "API key deleted; refused from now on");
    let mut body = serde_json::to_value(&removed).unwrap_or_default();
    body["status"] = "deleted".into();
    Ok(Json(body))
}

async fn refresh(gw: &Gateway) -> Result<(), ApiError> {
    gw.refresh(Refresh::AgentsAndRevocations)
        .await
        .map(|_| ())
        .map_err(ApiError::Internal)
}

/// The first start writes the generated admin key to `<dataDir>/admin.key`; once that key is
/// deleted, the file holds nothing anyone may use and goes too.
fn forget_generated_key_file(gw: &Gateway, removed: &ApiKeyRecord) {
    let path = gw.config().data_dir.join("admin.key");
    let same = std::fs::read_to_string(&path)
        .is_ok_and(|k| crate::apikey::hash_key(k.trim()) == removed.hash);
    if same && let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "deleted key's file could not be removed");
    }
}
