//! The control plane: the ACT REST API on `listen.api` (axum).
//!
//! Owns routing, API-key authentication (keys compared by hash), strict JSON bodies (size
//! limit, duplicate keys, unknown fields refused with the field named), and the error shape
//! `{"error", "message"}`. Handlers live in [`resources`] (agents, policies, tokens) and
//! [`decisions`] (enforce, audit). Every write refreshes the snapshot before answering, so
//! the next decision sees it.

mod decisions;
mod keys;
mod resources;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::Problems;
use crate::gateway::Gateway;
use crate::store::{Permission, Role};
use crate::telemetry::status_class;

/// Largest control-plane request body.
pub const MAX_API_BODY: usize = 256 * 1024;
/// Deepest JSON nesting accepted in a control-plane body.
pub const MAX_API_JSON_DEPTH: usize = 32;

/// Who an authenticated request acts as: its API key's tenant, name and role.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Tenant id.
    pub tenant: String,
    /// The API key's name (for logs; never the key).
    pub key_name: String,
    /// The API key's id.
    pub key_id: String,
    /// What the key may do.
    pub role: Role,
    /// For an issuer: the only agents it may issue and revoke tokens for.
    pub agents: Option<Vec<String>>,
}

impl Caller {
    /// Refuses (403, naming the role needed) a call this key's role does not allow.
    pub fn require(&self, need: Permission) -> Result<(), ApiError> {
        if self.role.may(need) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key ({}) has role {}, which may not {}: that needs role {}",
                self.key_name,
                self.role.as_str(),
                need.describe(),
                need.least_role()
            )))
        }
    }

    /// Refuses (403) token calls for an agent outside an issuer key's `agents` list.
    pub fn require_agent(&self, agent: &str) -> Result<(), ApiError> {
        match &self.agents {
            Some(list) if !list.iter().any(|a| a == agent) => Err(ApiError::Forbidden(format!(
                "this API key ({}) may issue and revoke tokens only for {}; not for {agent}",
                self.key_name,
                list.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

/// Errors of the REST API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or a parameter is invalid; every problem is listed.
    #[error("{0}")]
    Invalid(Problems),
    /// A malformed request: not JSON, bad query string.
    #[error("{0}")]
    BadRequest(String),
    /// No or unknown `X-Api-Key`.
    #[error("missing or unknown X-Api-Key")]
    Unauthorized,
    /// The key's role does not allow the call; the message names the role it would need.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing with that id in the caller's tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// A name or id is taken, or the object cannot change (config policy, revoked agent).
    #[error("{0}")]
    Conflict(String),
    /// Body over the limit.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// Not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The store or another internal part failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// The shared store cannot be reached (writes fail at once; decisions continue from the
    /// snapshot for `store.maxStaleness`).
    #[error("the store cannot be reached: {0}; try again shortly")]
    StoreUnavailable(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid_request",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Internal(_) => "internal_error",
            ApiError::StoreUnavailable(_) => "store_unavailable",
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => ApiError::Conflict(m),
            crate::store::StoreError::Backend(m) => ApiError::Internal(m),
            crate::store::StoreError::Unavailable(m) => ApiError::StoreUnavailable(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "API request failed");
        }
        if let ApiError::StoreUnavailable(detail) = &self {
            tracing::warn!(error = %detail, "API request refused: the store cannot be reached");
        }
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match &self {
            ApiError::Invalid(problems) => {
                body["problems"] = problems
                    .iter()
                    .map(|p| json!({"path": p.path, "message": p.message}))
                    .collect();
            }
            ApiError::Internal(_) => {
                body["message"] = "internal error; see the gateway's log".into();
            }
            _ => {}
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "ApiKey header=\"X-Api-Key\""
                    .parse()
                    .expect("static header"),
            );
        }
        resp
    }
}

/// One problem at `path` as an `Invalid` error.
pub fn invalid(path: &str, message: impl Into<String>) -> ApiError {
    let mut p = Problems::new();
    p.push(path, message);
    ApiError::Invalid(p)
}

/// A JSON body read strictly: `Content-Type: application/json`, at most [`MAX_API_BODY`]
/// bytes, no duplicate keys, then deserialized into `T` (which rejects unknown fields); an
/// error names the field.
pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_API_BODY)
            .await
            .map_err(|_| ApiError::TooLarge(MAX_API_BODY))?;
        let value = crate::json::parse_strict(&bytes, MAX_API_JSON_DEPTH)
            .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
        serde_path_to_error::deserialize::<_, T>(value)
            .map(StrictJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                invalid(&path, e.into_inner().to_string())
            })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().is_ok_and(|s| {
            let mime = s.split(';').next().unwrap_or_default().trim();
            mime.eq_ignore_ascii_case("application/json")
        }),
        _ => false,
    }
}

async fn authenticate(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    let mut keys = req.headers().get_all("x-api-key").iter();
    let caller = match (keys.next(), keys.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|k| gw.authenticate_key(k.trim()))
            .map(|rec| Caller {
                tenant: rec.tenant,
                key_name: rec.name,
                key_id: rec.id,
                role: rec.role,
                agents: rec.agents,
            }),
        _ => None,
    };
    // API keys, agents and policies come from the snapshot: past store.maxStaleness it may
    // miss a deleted key or a revocation, so nothing is served from it (/v1/enforce answers
    // its own 503 denial).
    if !gw.health.fresh() && req.uri().path() != "/v1/enforce" {
        return ApiError::StoreUnavailable("the snapshot is older than store.maxStaleness".into())
            .into_response();
    }
    let Some(caller) = caller else {
        return ApiError::Unauthorized.into_response();
    };
    // The role is checked before anything reads the body. A call no route names needs
    // admin: the router answers it with 404 or 405 anyway, and no role learns more.
    let need = permission_for(req.method(), req.uri().path()).unwrap_or(Permission::Unlisted);
    if let Err(e) = caller.require(need) {
        return e.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// What a call needs, by method and path; `None` for what no route serves (404 or 405 from
/// the router; the caller then requires admin). One table, so every route's requirement is
/// read in one place. HEAD is GET without a body (axum serves it with the GET handler), so it
/// needs what GET needs.
fn permission_for(method: &axum::http::Method, path: &str) -> Option<Permission> {
    use axum::http::Method as M;
    let method = if method == M::HEAD { &M::GET } else { method };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let p = match (method, segments.as_slice()) {
        (&M::GET, ["v1", "agents"] | ["v1", "agents", _]) => Permission::Read,
        (&M::GET, ["v1", "policies"] | ["v1", "policies", _]) => Permission::Read,
        (&M::POST, ["v1", "agents"]) | (&M::DELETE, ["v1", "agents", _]) => Permission::WriteAgents,
        (&M::POST, ["v1", "policies"]) | (&M::PUT | &M::DELETE, ["v1", "policies", _]) => {
            Permission::WritePolicies
        }
        (&M::POST, ["v1", "tokens"]) | (&M::DELETE, ["v1", "tokens", _]) => Permission::Tokens,
        (&M::POST, ["v1", "enforce"]) => Permission::Enforce,
        (&M::GET, ["v1", "audit"]) => Permission::ReadAudit,
        (&M::POST, ["v1", "check"]) => Permission::Read,
        (_, ["v1", "apikeys"] | ["v1", "apikeys", _]) => Permission::ManageKeys,
        _ => return None,
    };
    Some(p)
}

async fn count(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    // A bounded label: any method is accepted on the wire.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let gauge = gw.metrics.in_flight.with_label_values(&["api"]);
    gauge.inc();
    let request_id = crate::ids::sequential_id("req_");
    // A debug span: at the default level it is disabled and costs nothing per request (an
    // enabled span formats and allocates its fields); lines logged inside name the request.
    let span = tracing::debug_span!("api", request_id = %request_id);
    let mut resp = tracing::Instrument::instrument(next.run(req), span).await;
    gauge.dec();

    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-act-request-id", v);
    }
    gw.metrics
        .api_requests
        .with_label_values(&[method, status_class(resp.status().as_u16())])
        .inc();
    resp
}

/// The router's bare 405 as the API's JSON error shape, naming the methods the path takes
/// (its `Allow` header kept). Outside the router: axum adds `Allow` as its routes answer.
async fn json_method_not_allowed(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let allow = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = json!({
        "error": "method_not_allowed",
        "message": format!("{method} is not allowed on {path}; it takes {allow}"),
    })
    .to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

async fn fallback() -> ApiError {
    ApiError::NotFound("route".into())
}

/// The API router.
pub fn router(gw: Arc<Gateway>) -> Router {
    let routes = Router::new()
        .route(
            "/v1/agents",
            post(resources::create_agent).get(resources::list_agents),
        )
        .route(
            "/v1/agents/{id}",
            get(resources::get_agent).delete(resources::revoke_agent),
        )
        .route(
            "/v1/policies",
            post(resources::create_policy).get(resources::list_policies),
        )
        .route(
            "/v1/policies/{id}",
            get(resources::get_policy)
                .put(resources::update_policy)
                .delete(resources::delete_policy),
        )
        .route("/v1/tokens", post(resources::issue_token))
        .route("/v1/tokens/{id}", delete(resources::revoke_token))
        .route("/v1/enforce", post(decisions::enforce))
        .route("/v1/audit", get(decisions::audit))
        .route("/v1/check", post(decisions::check))
        .route("/v1/apikeys", post(keys::create).get(keys::list))
        .route("/v1/apikeys/{id}", delete(keys::delete))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&gw),
            authenticate,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&gw), count))
        .with_state(gw);
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .fallback_service(routes)
        .layer(middleware::from_fn(json_method_not_allowed))
}

/// The OpenAPI 3.1 document of this API (`tests/openapi.rs` checks it against the routes).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /v1/openapi.json`, without an API key: it describes the API, it grants nothing.
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// An empty 200 body, for handlers that answer with nothing.
pub fn empty() -> Response {
    Response::new(Body::empty())
}
