//! The MCP gateway: every message an agent sends an MCP server over Streamable HTTP — POST
//! (one JSON-RPC message), GET (the server's event stream) and DELETE (end a session) on an
//! endpoint's path — passes the same token, decision, audit and forwarding stages as a
//! proxied request. DESIGN.md §5 is the contract.
//!
//! A POST goes through named stages, each of which may refuse it:
//!
//! 1. **token** — exactly one, verified (401 with `WWW-Authenticate: Bearer` and the
//!    endpoint's protected-resource metadata otherwise), before the body is read;
//! 2. **message** — one strict JSON-RPC message ([`jsonrpc`]), within `limits.maxBodyBytes`;
//! 3. **routing headers** — `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` agree with
//!    the body (each at most once), so a server routing on headers runs what was decided;
//! 4. **session** — a legacy `Mcp-Session-Id` is bound to the agent that opened it
//!    ([`session`]);
//! 5. **decide** — [`plan`]: `tools/call`, `resources/read` and `prompts/get` by policy with
//!    the facts their arguments carry; the handshake, discovery, lists, `ping`, notifications
//!    and responses by the token alone; anything else is not forwarded;
//! 6. **audit** — the decision record (committed first in `strict`), with the method, the tool
//!    and the SHA-256 of the arguments;
//! 7. **answer or forward** — a denied call is answered here, as a tool result with
//!    `isError: true` the model can act on; an allowed one is forwarded (token stripped,
//!    `X-Act-*` set) to the upstream's HTTP endpoint or stdio process, its answer streamed
//!    back — list answers filtered ([`filter`], JSON or SSE via [`sse`]).

pub mod endpoint;
pub mod error;
pub mod filter;
pub mod jsonrpc;
pub mod plan;
pub mod session;
pub mod sse;
pub mod stdio;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::audit::{AuditEvent, Source};
use crate::dataplane::{RequestLog, sender_check};
use crate::gateway::{Gateway, Outcome};
use crate::ids::sequential_id;
use crate::policy::reach::Reach;
use crate::policy::{Facts, Principal, Query, Reason};
use crate::proxy::error::ProxyError;
use crate::proxy::forward::{self, Vouch};
use crate::proxy::route::Mode;
use crate::proxy::{BoxError, ProxyBody, extract};
use crate::snapshot::Snapshot;
use crate::telemetry::status_class;
use crate::tls::ClientIdentity;
use crate::token::Claims;
use endpoint::McpEndpoint;
use error::McpError;
use jsonrpc::{Kind, Message, code};
use plan::{Call, ListKind, Plan};
use session::Sessions;

/// Largest list answer (JSON, or one SSE event) actgate reads to filter.
const MAX_LIST_BYTES: usize = 8 << 20;

/// Protocol revisions of the initialize handshake; any other `MCP-Protocol-Version` is the
/// stateless revision (2026-07-28 and later), where every request names its method in
/// `Mcp-Method`.
const HANDSHAKE_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The MCP gateway.
pub struct Mcp {
    gw: Arc<Gateway>,
    sessions: DashMap<String, Arc<Sessions>>,
    reach: Arc<Reach>,
    buffering: Semaphore,
    stdio: stdio::Pool,
}

/// What a forwarded message is, for its answer.
struct Forwarded<'a> {
    ep: &'a McpEndpoint,
    snapshot: &'a Snapshot,
    rpc_method: Option<String>,
    id: Value,
    list: Option<ListKind>,
    claims: Option<Arc<Claims>>,
    outcome: Outcome,
}

impl Mcp {
    /// An MCP gateway over `gw`.
    pub fn new(gw: Arc<Gateway>) -> Arc<Mcp> {
        let buffering = Semaphore::new(gw.config().limits.max_buffered_bodies);
        Arc::new(Mcp {
            gw,
            sessions: DashMap::new(),
            reach: Arc::new(Reach::default()),
            buffering,
            stdio: stdio::Pool::new(tokio::runtime::Handle::current()),
        })
    }

    /// Stops every stdio server (at shutdown).
    pub async fn shutdown(&self) {
        self.stdio.shutdown().await;
    }

    fn sessions(&self, ep: &McpEndpoint) -> Arc<Sessions> {
        Arc::clone(&self.sessions.entry(ep.name.clone()).or_insert_with(|| {
            Arc::new(Sessions::new(
                ep.max_sessions,
                ep.max_sessions_per_agent,
                ep.session_idle_timeout,
            ))
        }))
    }

    /// `GET /.well-known/oauth-protected-resource<path>`: the endpoint's OAuth 2.0 Protected
    /// Resource Metadata (RFC 9728), where the MCP authorization spec sends a client that got
    /// 401. actgate's tokens come from its REST API (`POST /v1/tokens`); the metadata says
    /// where the resource is and how to present a token.
    pub fn metadata(
        &self,
        req: &Request<Incoming>,
        ep: &McpEndpoint,
        log: &mut RequestLog<'_>,
    ) -> Result<Response<ProxyBody>, McpError> {
        if req.method() != Method::GET {
            return Err(McpError::http_method_not_allowed());
        }
        let tls = self.gw.config().tls.proxy.is_some();
        let body = json!({
            "resource": format!("{}{}", origin(req.headers(), req.uri(), tls), ep.path),
            "bearer_methods_supported": ["header"],
            "resource_name": format!("{} (MCP, through actgate)", ep.name),
            "resource_documentation": "https://github.com/actgate/actgate#mcp",
        });
        let mut event = log.refusal_event(
            "metadata",
            "protected-resource metadata served".into(),
            None,
        );
        event.decision = "allowed".into();
        self.gw.audit.record_refusal_now(event);
        log.audited = true;
        let mut resp = json_response(StatusCode::OK, &body);
        resp.headers_mut().insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Ok(resp)
    }

    /// Serves one request for endpoint `ep`.
    #[allow(clippy::too_many_arguments)]
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        ep: &McpEndpoint,
        snapshot: &Snapshot,
        peer: SocketAddr,
        identity: Option<&ClientIdentity>,
        request_id: &str,
        log: &mut RequestLog<'_>,
    ) -> Result<Response<ProxyBody>, McpError> {
        let tls = snapshot.config.tls.proxy.is_some();
        let method = req.method().clone();
        if !matches!(method, Method::POST | Method::GET | Method::DELETE) {
            return Err(McpError::http_method_not_allowed());
        }
        let (parts, body) = req.into_parts();
        if parts.uri.query().is_some() {
            return Err(McpError::from_proxy(ProxyError::bad_request(
                "an MCP endpoint takes no query string",
            )));
        }

        // 1. token, before anything is read.
        let token = extract::token(&parts.headers).map_err(McpError::from_proxy)?;
        if let Some((t, from)) = token {
            extract::token_elsewhere(&parts.headers, None, t, from)
                .map_err(McpError::from_proxy)?;
        }
        let token_kind = token.map(|t| t.1);
        let claims = self.gw.authenticate(token.map(|t| t.0)).await;
        log.claims = claims.as_ref().ok().map(Arc::clone);
        let claims = match claims {
            Ok(c) => sender_check(snapshot, false, identity, &c).map(|()| c),
            Err(r) => Err(r),
        };
        let admitted = self.gw.admit(claims.as_deref().map_err(|r| *r));
        if !admitted.is_allowed() && ep.mode == Mode::Enforce {
            // The token stage decided: record it, answer 401.
            self.gw.count(Source::Mcp, &admitted);
            let event = self.event(
                ep,
                &admitted,
                request_id,
                log,
                ("", &endpoint_resource(ep)),
                true,
                &method,
            );
            self.record(event, log).await?;
            return Err(McpError::unauthorized(
                admitted.reason.as_str(),
                admitted.message.clone(),
                &format!(
                    "{}/.well-known/oauth-protected-resource{}",
                    origin(&parts.headers, &parts.uri, tls),
                    ep.path
                ),
            ));
        }
        let claims = claims.ok();

        // 2.–4. for POST; GET and DELETE carry no message.
        let session_id = single_header(&parts.headers, "mcp-session-id")?;
        let sessions = self.sessions(ep);
        let session_check = |sid: &str| -> Result<(), McpError> {
            match &claims {
                Some(c) => sessions
                    .check(sid, &c.tenant, &c.agent)
                    .map_err(|r| match r {
                        session::Refusal::Unknown => McpError::session_unknown(),
                        session::Refusal::Foreign => McpError::session_foreign(),
                    }),
                // Monitor mode with no valid token: no session is anyone's to use.
                None => Err(McpError::session_foreign()),
            }
        };
        if method != Method::POST {
            if let Some(sid) = &session_id {
                session_check(sid)?;
            }
            self.gw.count(Source::Mcp, &admitted);
            let event = self.event(
                ep,
                &admitted,
                request_id,
                log,
                (method.as_str(), &endpoint_resource(ep)),
                true,
                &method,
            );
            self.record(event, log).await?;
            let fwd = Forwarded {
                ep,
                snapshot,
                rpc_method: None,
                id: Value::Null,
                list: None,
                claims,
                outcome: admitted,
            };
            let resp = self
                .forward(&fwd, parts, token_kind, Bytes::new(), peer, request_id, log)
                .await?;
            if method == Method::DELETE
                && resp.status().is_success()
                && let Some(sid) = &session_id
            {
                sessions.remove(sid);
            }
            return Ok(resp);
        }
        if !is_json(&parts.headers) {
            return Err(McpError::from_proxy(ProxyError::UnsupportedMediaType).with_id(Value::Null));
        }
        // actgate decides on the bytes as they came: a compressed body would be read one way
        // here and another by a server that decompresses it.
        if parts
            .headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Err(McpError::unsupported_encoding());
        }
        let limits = &snapshot.config.limits;
        let bytes = self.read_body(body, &parts.headers, limits).await?;
        let mut msg =
            jsonrpc::read(&bytes, limits.max_json_depth.max(16)).map_err(McpError::malformed)?;
        check_routing_headers(&parts.headers, &msg)?;
        if let Some(sid) = &session_id {
            session_check(sid).map_err(|e| e.with_id(msg.id()))?;
        }

        // 5. decide
        let plan = plan::plan(ep, &msg).map_err(McpError::malformed)?;
        let rpc_method = msg.method().map(str::to_string);
        // A handshake takes its session's slot before anything is forwarded: bounded per
        // endpoint and per agent, concurrent handshakes included.
        let slot = match (rpc_method.as_deref(), &claims) {
            (Some("initialize"), Some(c)) => Some(
                sessions
                    .reserve(&c.tenant, &c.agent)
                    .map_err(|full| McpError::too_many_sessions(full).with_id(msg.id()))?,
            ),
            _ => None,
        };
        let (outcome, call, list) = match plan {
            Plan::NotAllowed => {
                return Err(McpError::method_not_allowed(
                    rpc_method.as_deref().unwrap_or("?"),
                    msg.id(),
                ));
            }
            Plan::TokenOnly { list } => {
                self.gw.count(Source::Mcp, &admitted);
                (admitted, None, list)
            }
            Plan::Decide(call) => {
                let query = Query {
                    action: &call.action,
                    resource: &call.resource,
                    facts: Facts {
                        rows: call.rows,
                        recipients: call.recipients.as_deref(),
                        method: None,
                        rows_unenforceable: call.rows_unenforceable,
                        recipients_unenforceable: call.recipients_unenforceable,
                    },
                };
                let outcome = self.gw.decide(
                    Source::Mcp,
                    claims.as_deref().ok_or(admitted.reason),
                    None,
                    &query,
                );
                (outcome, Some(call), None)
            }
        };
        log.reason = outcome.reason.as_str();
        let enforced = ep.mode == Mode::Enforce
            || outcome.is_allowed()
            || outcome.reason.fails_closed_always();
        self.count(
            ep,
            rpc_method.as_deref(),
            call.as_ref(),
            outcome.is_allowed(),
        );

        // 6. audit
        let (action, resource) = match &call {
            Some(c) => (c.action.clone(), c.resource.clone()),
            None => (
                rpc_method.clone().unwrap_or_else(|| "response".into()),
                endpoint_resource(ep),
            ),
        };
        let mut event = self.event(
            ep,
            &outcome,
            request_id,
            log,
            (&action, &resource),
            enforced,
            &method,
        );
        event.mcp_method = Some(rpc_method.clone().unwrap_or_else(|| "response".into()));
        if let Some(c) = &call {
            event.tool = c.tool.clone();
            event.arguments_sha256 = c.arguments_sha256.clone();
            if snapshot.config.audit.mcp_arguments {
                event.arguments = msg
                    .params()
                    .get("arguments")
                    .cloned()
                    .or_else(|| Some(Value::Object(Default::default())));
            }
        }
        self.record(event, log).await?;

        // 7. answer or forward
        if !outcome.is_allowed() {
            if enforced {
                return Ok(denied_answer(
                    &msg,
                    ep,
                    &outcome,
                    call.as_ref(),
                    &parts.headers,
                    request_id,
                ));
            }
            tracing::warn!(request_id, endpoint = %ep.name, reason = outcome.reason.as_str(), "monitor mode: would deny, forwarding");
        }
        if outcome.is_allowed()
            && let Some(c) = &call
            && c.rows.is_none()
            && let (Some(ptr), Some(limit)) = (
                c.rows_pointer.as_deref(),
                outcome.constraints.as_ref().and_then(|k| k.max_rows),
            )
        {
            // maxRows and no row count asked: ask for exactly the limit.
            plan::set_rows(&mut msg, ptr, limit);
        }
        let body = if call
            .as_ref()
            .is_some_and(|c| c.rows.is_none() && c.rows_pointer.is_some())
        {
            Bytes::from(serde_json::to_vec(&msg.value).unwrap_or_default())
        } else {
            bytes
        };
        let fwd = Forwarded {
            ep,
            snapshot,
            rpc_method: rpc_method.clone(),
            id: msg.id(),
            list,
            claims: claims.clone(),
            outcome,
        };
        let resp = self
            .forward(&fwd, parts, token_kind, body, peer, request_id, log)
            .await?;
        if let Some(slot) = slot
            && resp.status().is_success()
            && let Some(sid) = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
        {
            sessions.bind(slot, sid);
        }
        Ok(resp)
    }

    async fn read_body(
        &self,
        body: Incoming,
        headers: &HeaderMap,
        limits: &crate::config::Limits,
    ) -> Result<Bytes, McpError> {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if headers.get_all(CONTENT_LENGTH).iter().count() > 1 {
            return Err(McpError::from_proxy(ProxyError::bad_request(
                "Content-Length appears more than once",
            )));
        }
        if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
            return Err(McpError::from_proxy(ProxyError::TooLarge(
                limits.max_body_bytes,
            )));
        }
        let read = async {
            let _slot = self
                .buffering
                .acquire()
                .await
                .map_err(|_| ProxyError::bad_request("shutting down"))?;
            Limited::new(body, limits.max_body_bytes)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        ProxyError::TooLarge(limits.max_body_bytes)
                    } else {
                        ProxyError::bad_request("the request body could not be read")
                    }
                })
        };
        tokio::time::timeout(limits.body_read_timeout, read)
            .await
            .map_err(|_| McpError::from_proxy(ProxyError::RequestTimeout))?
            .map_err(McpError::from_proxy)
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        ep: &McpEndpoint,
        outcome: &Outcome,
        request_id: &str,
        log: &RequestLog<'_>,
        (action, resource): (&str, &str),
        enforced: bool,
        method: &Method,
    ) -> AuditEvent {
        let tenant = outcome
            .tenant_id
            .clone()
            .unwrap_or_else(|| Arc::clone(&self.gw.config().tenant));
        let mut event = outcome.decision_event(
            sequential_id("aud_"),
            Source::Mcp,
            tenant,
            request_id,
            (action.into(), resource.to_string()),
            enforced,
        );
        event.route = Some(ep.name.as_str().into());
        event.method = Some(crate::audit::method_text(method));
        event.mcp_method = (*method != Method::POST).then(|| method.as_str().to_string());
        event.latency_us = Some(log.started.elapsed().as_micros() as u64);
        event
    }

    /// Records a decision (committed first in `strict`); if it cannot be recorded, nothing is
    /// forwarded (fail closed).
    async fn record(&self, event: AuditEvent, log: &mut RequestLog<'_>) -> Result<(), McpError> {
        log.audited = true;
        if self.gw.audit.durability() == crate::config::Durability::Off {
            return Ok(());
        }
        let record = self.gw.audit.decide(Box::new(event)).await.map_err(|e| {
            tracing::error!(error = %e, "audit unavailable: MCP request refused (fail closed)");
            McpError::from_proxy(ProxyError::Unavailable(e.to_string()))
        })?;
        log.record = Some(record);
        Ok(())
    }

    fn count(&self, ep: &McpEndpoint, method: Option<&str>, call: Option<&Call>, allowed: bool) {
        let method = match method {
            Some(
                m @ ("initialize"
                | "ping"
                | "server/discover"
                | "tools/list"
                | "tools/call"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read"
                | "prompts/list"
                | "prompts/get"),
            ) => m,
            Some(m) if m.starts_with("notifications/") => "notification",
            Some(_) => "other",
            None => "response",
        };
        // Only configured tools get their own label: the set is bounded by the config.
        let tool = match call.and_then(|c| c.tool.as_deref()) {
            Some(t) if ep.tools.contains_key(t) => t,
            Some(_) => "other",
            None => "-",
        };
        self.gw
            .metrics
            .mcp_requests
            .with_label_values(&[
                ep.name.as_str(),
                method,
                tool,
                if allowed { "allowed" } else { "denied" },
            ])
            .inc();
    }

    /// Sends the message to the upstream (HTTP or stdio) and streams the answer back,
    /// filtering list answers and bounding idle event streams; records the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        fwd: &Forwarded<'_>,
        mut parts: Parts,
        token_kind: Option<extract::TokenHeader>,
        body: Bytes,
        peer: SocketAddr,
        request_id: &str,
        log: &mut RequestLog<'_>,
    ) -> Result<Response<ProxyBody>, McpError> {
        let ep = fwd.ep;
        let upstream = fwd
            .snapshot
            .config
            .upstreams
            .get(&ep.upstream)
            .ok_or_else(|| {
                McpError::from_proxy(ProxyError::BadGateway(format!(
                    "upstream {} is not configured",
                    ep.upstream
                )))
            })?;
        let vouched = !fwd.outcome.reason.is_token_problem();
        let result = match &upstream.target {
            crate::config::UpstreamTarget::Stdio(command) => {
                let agent_headers = (
                    fwd.outcome.agent_id.as_deref().filter(|_| vouched),
                    fwd.outcome.tenant_id.as_deref().filter(|_| vouched),
                );
                self.stdio
                    .send(
                        ep,
                        command,
                        &parts.method,
                        &parts.headers,
                        body,
                        agent_headers,
                        upstream.timeout,
                    )
                    .await
            }
            crate::config::UpstreamTarget::Http(_) => {
                // Answers come back uncompressed (lists are read and filtered), and a GET or
                // DELETE, which carries no message, carries no routing header either.
                parts.headers.remove(http::header::ACCEPT_ENCODING);
                if fwd.rpc_method.is_none() {
                    parts.headers.remove("mcp-method");
                    parts.headers.remove("mcp-name");
                }
                let target = fwd.snapshot.upstreams.get(&ep.upstream).ok_or_else(|| {
                    McpError::from_proxy(ProxyError::BadGateway(format!(
                        "upstream {} has no client",
                        ep.upstream
                    )))
                })?;
                let client_host = parts.headers.get(HOST).cloned();
                let vouch = Vouch {
                    agent: fwd.outcome.agent_id.as_deref().filter(|_| vouched),
                    tenant: fwd.outcome.tenant_id.as_deref().filter(|_| vouched),
                    request_id,
                    peer,
                    upstream_host: &target.host,
                    client_host: client_host.as_ref(),
                };
                forward::rewrite_request(&mut parts.headers, token_kind, &vouch);
                let path = if target.base_path.is_empty() {
                    "/"
                } else {
                    &target.base_path
                };
                parts.uri = Uri::builder()
                    .scheme(target.scheme.clone())
                    .authority(target.authority.clone())
                    .path_and_query(path)
                    .build()
                    .map_err(|_| {
                        McpError::from_proxy(ProxyError::bad_request("upstream target"))
                    })?;
                parts.version = Version::HTTP_11;
                let req = Request::from_parts(
                    parts,
                    Full::new(body).map_err(|never| match never {}).boxed(),
                );
                match tokio::time::timeout(target.timeout, target.client().request(req)).await {
                    Err(_) => Err(ProxyError::GatewayTimeout),
                    Ok(Err(e)) => {
                        tracing::warn!(request_id, upstream = %ep.upstream, error = %e, "MCP upstream request failed");
                        Err(ProxyError::BadGateway(e.to_string()))
                    }
                    Ok(Ok(r)) => Ok(r.map(|b| b.map_err(box_error).boxed())),
                }
            }
        };
        let metric = &self.gw.metrics.upstream;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                let outcome = if matches!(e, ProxyError::GatewayTimeout) {
                    "timeout"
                } else {
                    "error"
                };
                metric.with_label_values(&[&ep.upstream, outcome]).inc();
                log.outcome(None, Some(e.reason()));
                return Err(McpError::from_proxy(e).with_id(fwd.id.clone()));
            }
        };
        let status = resp.status().as_u16();
        metric
            .with_label_values(&[&ep.upstream, status_class(status)])
            .inc();
        forward::rewrite_response(resp.headers_mut(), request_id);
        log.outcome(Some(status), None);
        let sse = content_type_is(resp.headers(), "text/event-stream");
        if let (Some(kind), Some(claims)) = (fwd.list, &fwd.claims)
            && resp.status().is_success()
        {
            return self.filtered(resp, kind, fwd, claims, sse).await;
        }
        if sse {
            let (parts, body) = resp.into_parts();
            return Ok(Response::from_parts(
                parts,
                sse::Idle::new(body, ep.sse_idle_timeout).boxed(),
            ));
        }
        Ok(resp)
    }

    /// A list answer, filtered for the token's principal: a JSON body read (bounded) and
    /// rewritten, or an event stream rewritten event by event.
    async fn filtered(
        &self,
        resp: Response<ProxyBody>,
        kind: ListKind,
        fwd: &Forwarded<'_>,
        claims: &Arc<Claims>,
        sse: bool,
    ) -> Result<Response<ProxyBody>, McpError> {
        let (mut parts, body) = resp.into_parts();
        parts
            .headers
            .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        parts.headers.remove(CONTENT_LENGTH);
        let snapshot = self.gw.snapshot();
        let ep = fwd.ep.clone();
        let id = fwd.id.clone();
        let claims = Arc::clone(claims);
        let reach = Arc::clone(&self.reach);
        let rewrite = move |data: &str| -> Option<String> {
            let mut value: Value = serde_json::from_str(data).ok()?;
            if value.get("id") != Some(&id) || value.get("result").is_none() {
                return None;
            }
            let viewer = filter::Viewer {
                snapshot: &snapshot,
                who: Principal {
                    tenant: &claims.tenant,
                    agent: &claims.agent,
                    policy_ids: claims.policy_ids.as_deref(),
                },
                ep: &ep,
                reach: &reach,
            };
            filter::filter_response(kind, &mut value, &viewer);
            serde_json::to_string(&value).ok()
        };
        if sse {
            let body = sse::Rewrite::new(body, MAX_LIST_BYTES, rewrite);
            let body = sse::Idle::new(body.boxed(), fwd.ep.sse_idle_timeout);
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        // A list read whole counts among the bodies buffered at once (limits.maxBufferedBodies).
        let _slot =
            self.buffering.acquire().await.map_err(|_| {
                McpError::from_proxy(ProxyError::BadGateway("shutting down".into()))
            })?;
        let bytes = collect_bounded(body, MAX_LIST_BYTES).await.map_err(|e| {
            McpError::from_proxy(ProxyError::BadGateway(format!(
                "reading the list answer: {e}"
            )))
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            McpError::from_proxy(ProxyError::BadGateway(
                "the list answer is not UTF-8".into(),
            ))
        })?;
        let out = rewrite(text).map(Bytes::from).unwrap_or(bytes);
        Ok(Response::from_parts(
            parts,
            Full::new(out).map_err(|never| match never {}).boxed(),
        ))
    }
}

/// The answer to a denied message: for `tools/call`, a tool result with `isError: true`
/// whose text the model can act on (the reason, the policy, the offending value, what would
/// be allowed) and the decision in `_meta`; for anything else, a JSON-RPC error with the same.
fn denied_answer(
    msg: &Message,
    ep: &McpEndpoint,
    outcome: &Outcome,
    call: Option<&Call>,
    headers: &HeaderMap,
    request_id: &str,
) -> Response<ProxyBody> {
    let decision = json!({
        "decision": "denied",
        "reason": outcome.reason.as_str(),
        "message": outcome.message,
        "policyId": outcome.policy_id,
        "requestId": request_id,
    });
    let id = msg.id();
    if outcome.reason.fails_closed_always() {
        // Not a policy's answer the model should act on: actgate cannot decide right now.
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &jsonrpc::error_response(&id, code::DENIED, &outcome.message, Some(decision)),
        );
    }
    // Only a tool call has a result that can say "error" to the model; anything else
    // (resources/read, prompts/get) is a JSON-RPC error carrying the same decision.
    let Some(call) = call.filter(|c| c.tool.is_some()) else {
        return json_response(
            StatusCode::OK,
            &jsonrpc::error_response(&id, code::DENIED, &outcome.message, Some(decision)),
        );
    };
    let what = format!(
        "The call to tool {} was denied by actgate",
        call.tool.as_deref().unwrap_or_default()
    );
    let mut text = format!("{what} ({}): {}.", outcome.reason.as_str(), outcome.message);
    if let Some(p) = &outcome.policy_id {
        text.push_str(&format!(" Policy: {p}."));
    }
    text.push_str(&format!(
        " It was checked as action `{}` on `{}`.",
        call.action, call.resource
    ));
    match outcome.reason {
        Reason::ConstraintViolated => text.push_str(
            " Change the arguments to stay within the constraint, or ask for fewer rows or other recipients.",
        ),
        Reason::ExplicitDeny => text.push_str(" This is forbidden by policy; do not retry it."),
        _ => text.push_str(" No policy allows it; do not retry it with other wording."),
    }
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "_meta": {"io.actgate/decision": decision},
    });
    if is_modern(headers) {
        result["resultType"] = "complete".into();
    }
    let _ = ep;
    json_response(StatusCode::OK, &jsonrpc::result_response(&id, result))
}

fn box_error(e: hyper::Error) -> BoxError {
    Box::new(e)
}

/// Reads a whole body of at most `max` bytes. (Written out rather than `Limited::collect`,
/// whose boxed-error bound trips the compiler's `Send` check of this module's futures.)
async fn collect_bounded(mut body: ProxyBody, max: usize) -> Result<Bytes, String> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(format!("larger than {max} bytes"));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `mcp://<endpoint>`: the resource of messages that are not decided by policy.
fn endpoint_resource(ep: &McpEndpoint) -> String {
    format!("mcp://{}", ep.name)
}

fn is_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().is_ok_and(|s| {
            s.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        }),
        _ => false,
    }
}

fn content_type_is(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| {
            s.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case(mime)
        })
}

/// A header that may appear at most once (its value as text).
fn single_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, McpError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            McpError::header_mismatch(format!("{name} is not visible ASCII"), Value::Null)
        }),
        (Some(_), Some(_)) => Err(McpError::header_mismatch(
            format!("{name} appears more than once"),
            Value::Null,
        )),
    }
}

/// Whether the request speaks the stateless revision (a protocol version header that is not
/// one of the handshake revisions).
fn is_modern(headers: &HeaderMap) -> bool {
    headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !HANDSHAKE_VERSIONS.contains(&v))
}

/// Decodes a routing header value: plain ASCII, or `=?base64?…?=` for anything else.
fn decode_header_value(v: &str) -> Option<String> {
    use base64::Engine;
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_string()),
    }
}

/// The routing headers must agree with the body: `Mcp-Method` with `method` (and it is
/// required in the stateless revision), `Mcp-Name` with the tool, prompt or resource named
/// (and absent otherwise); each at most once.
fn check_routing_headers(headers: &HeaderMap, msg: &Message) -> Result<(), McpError> {
    let id = msg.id();
    let with_id = |e: McpError| e.with_id(id.clone());
    let version = single_header(headers, "mcp-protocol-version").map_err(with_id)?;
    let method_h = single_header(headers, "mcp-method").map_err(with_id)?;
    let name_h = single_header(headers, "mcp-name").map_err(with_id)?;
    let method = msg.method();
    let modern = version
        .as_deref()
        .is_some_and(|v| !HANDSHAKE_VERSIONS.contains(&v));
    match (&method_h, method) {
        (Some(h), Some(m)) if h != m => {
            return Err(McpError::header_mismatch(
                format!("Mcp-Method {h:?} does not match the body's method {m:?}"),
                id,
            ));
        }
        (Some(h), None) => {
            return Err(McpError::header_mismatch(
                format!("Mcp-Method {h:?} on a response, which has no method"),
                id,
            ));
        }
        (None, Some(m)) if modern && matches!(msg.kind, Kind::Request { .. }) => {
            return Err(McpError::header_mismatch(
                format!(
                    "protocol {} requires the Mcp-Method header ({m})",
                    version.as_deref().unwrap_or_default()
                ),
                id,
            ));
        }
        _ => {}
    }
    let named = match method {
        Some("tools/call" | "prompts/get") => msg.params().get("name").and_then(Value::as_str),
        Some("resources/read") => msg.params().get("uri").and_then(Value::as_str),
        _ => None,
    };
    match (&name_h, named) {
        (Some(h), Some(n)) if decode_header_value(h).as_deref() != Some(n) => {
            return Err(McpError::header_mismatch(
                format!("Mcp-Name does not match the body's {n:?}"),
                id,
            ));
        }
        (Some(_), None) => {
            return Err(McpError::header_mismatch(
                "Mcp-Name on a message that names no tool, prompt or resource",
                id,
            ));
        }
        (None, Some(n)) if modern => {
            return Err(McpError::header_mismatch(
                format!(
                    "protocol {} requires the Mcp-Name header ({n})",
                    version.as_deref().unwrap_or_default()
                ),
                id,
            ));
        }
        _ => {}
    }
    Ok(())
}

/// `scheme://host` of the request as the client addressed it (for the metadata URL).
fn origin(headers: &HeaderMap, uri: &Uri, tls: bool) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}
