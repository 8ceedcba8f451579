//! The data plane: the enforcing reverse proxy on `listen.proxy`.
//!
//! A request goes through named stages, each of which may refuse it; nothing reaches the
//! upstream unless every stage passed (or the route is in `monitor` mode and only the decision
//! said no):
//!
//! 1. **target** — one canonical reading of the path and query ([`canonical`]); absolute-form
//!    targets must agree with `Host`;
//! 2. **route** — method + decoded path → route ([`route`]); no route, 404;
//! 3. **extract** — the token (exactly one), the row count, the JSON recipients, and no
//!    method override in the query or a POST body ([`extract`]);
//! 4. **decide** — the same [`Gateway::authorize`] as `/v1/enforce`;
//! 5. **audit** — the decision record, committed first in `strict` mode; if it cannot be
//!    recorded the request is refused (503, fail closed);
//! 6. **forward** — headers rewritten ([`forward`]), the evaluated path forwarded byte for
//!    byte, bodies streamed both ways, 502/504 on upstream failure; an outcome record follows.
//!
//! [`Proxy::handle`] wraps the stages and cannot fail; a [`RequestLog`] emits metrics and the
//! access log line exactly once, on drop, so early returns and cancelled requests are counted.

pub mod canonical;
pub mod error;
pub mod extract;
pub mod forward;
pub mod route;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::audit::{AuditEvent, EventKind, Source, now_stamp};
use crate::config::Limits;
use crate::gateway::{Gateway, Outcome};
use crate::ids::sequential_id;
use crate::listener;
use crate::policy::Reason;
use crate::policy::{Facts, Query};
use crate::snapshot::Snapshot;
use crate::telemetry::status_class;
use crate::tls::{ClientIdentity, ServerTls};
use crate::token::Claims;
use error::ProxyError;
use extract::{OverrideBody, TokenHeader};
use forward::Vouch;
use route::{Mode, RowSource};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request and response bodies as the proxy handles them.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The proxy: routes, limits and upstreams come from the gateway's snapshot, decisions from
/// the gateway.
pub struct Proxy {
    gw: Arc<Gateway>,
    buffering: Semaphore,
}

impl Proxy {
    /// A proxy over `gw`.
    pub fn new(gw: Arc<Gateway>) -> Arc<Proxy> {
        let buffering = Semaphore::new(gw.config().limits.max_buffered_bodies);
        Arc::new(Proxy { gw, buffering })
    }

    /// Serves `listener` (with TLS when given) until `stop` turns true, then drains in-flight
    /// requests for at most `limits.drainTimeout`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<ServerTls>>,
        stop: watch::Receiver<bool>,
    ) {
        let opts = listener::Options {
            name: "proxy",
            limits: self.gw.config().limits.clone(),
            tls,
            rejected: self
                .gw
                .metrics
                .connections_rejected
                .with_label_values(&["proxy"]),
        };
        let proxy = Arc::clone(&self);
        listener::serve(
            listener,
            opts,
            move |peer, identity| {
                let proxy = Arc::clone(&proxy);
                service_fn(move |req| {
                    let proxy = Arc::clone(&proxy);
                    let identity = identity.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer, identity).await) }
                })
            },
            stop,
        )
        .await;
    }

    /// Handles one request; never fails. Every request leaves one audit event: the decision
    /// record of the stages, or — for a refusal before any decision — a refusal record made
    /// here (and for a request cancelled before either, one made when its log is dropped).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        identity: Option<Arc<ClientIdentity>>,
    ) -> Response<ProxyBody> {
        let request_id = sequential_id("req_");
        let presented = PresentedToken::capture(req.headers());
        let mut log = RequestLog::new(&self.gw, &request_id, req.method().clone());
        let span = tracing::info_span!("request", request_id = %request_id);
        match self
            .stages(req, peer, identity.as_deref(), &request_id, &mut log)
            .instrument(span)
            .await
        {
            Ok(resp) => {
                log.status = resp.status();
                resp
            }
            Err(e) => {
                log.status = e.status();
                log.reason = e.reason();
                if !log.audited {
                    self.audit_refusal(&e, &presented, &mut log).await;
                }
                e.into_response(&request_id)
            }
        }
    }

    /// The audit record of a refusal made before any decision: its reason, the route when one
    /// matched, and the agent and tenant when the request carried a token whose signature
    /// verifies (never an unverified claim). Counted as a denied decision.
    async fn audit_refusal(
        &self,
        e: &ProxyError,
        presented: &PresentedToken,
        log: &mut RequestLog<'_>,
    ) {
        log.audited = true;
        let claims = match &log.claims {
            Some(c) => Some(Arc::clone(c)),
            None => match presented.token() {
                Some(t) => self.gw.authenticate(Some(t)).await.ok(),
                None => None,
            },
        };
        let message = presented.scrub(&e.message());
        let event = log.refusal_event(e.reason(), message, claims.as_deref());
        self.gw.audit.record_refusal(event, claims.is_some()).await;
    }

    async fn stages(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        identity: Option<&ClientIdentity>,
        request_id: &str,
        log: &mut RequestLog<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let started = log.started;
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let snapshot = self.gw.snapshot();
        let limits = &snapshot.config.limits;

        // 1. target
        check_authority(&parts.uri, &parts.headers, parts.version)?;
        let raw_path = parts.uri.path();
        let path = canonical::canonical_path(raw_path)
            .map_err(|e| ProxyError::bad_request(e.to_string()))?;
        let query_str = parts.uri.query();
        if let Some(q) = query_str {
            canonical::check_query(q).map_err(|e| ProxyError::bad_request(e.to_string()))?;
        }

        // 2. route
        let m = snapshot
            .routes
            .find(&parts.method, &path)
            .ok_or(ProxyError::NoRoute)?;
        let route = m.route;
        log.route = Some(route.name.clone());
        if let Some(v) = m
            .values
            .iter()
            .find(|v| v.contains(['*', '?', '[', ']', '{', '}']))
        {
            return Err(ProxyError::bad_request(format!(
                "path parameter {v:?} contains a wildcard character; an upstream could read it as a pattern"
            )));
        }
        let resource = route.resource.render(&m.values);

        // 3. extract
        let token = extract::token(&parts.headers)?;
        if let Some((t, from)) = token {
            extract::token_elsewhere(&parts.headers, query_str, t, from)?;
        }
        let token_kind: Option<TokenHeader> = token.map(|t| t.1);
        let rows = match &route.rows {
            Some(RowSource::Query(name)) => extract::rows(query_str, name)?,
            Some(RowSource::Fixed(n)) => Some(*n),
            None => None,
        };
        extract::forbidden_query_keys(query_str, &route.recipient_fields)?;
        if matches!(method, Method::GET | Method::HEAD) && !hyper::body::Body::is_end_stream(&body)
        {
            return Err(ProxyError::bad_request(
                "a GET or HEAD request carries no body here; some servers would read one",
            ));
        }
        let declared_len = content_length(&parts.headers)?;
        if declared_len.is_some_and(|n| n > limits.max_body_bytes as u64) {
            return Err(ProxyError::TooLarge(limits.max_body_bytes));
        }

        // 4. decide: the token first, so a request without a valid one is refused before its
        // body is read.
        let claims = self.gw.authenticate(token.map(|t| t.0)).await;
        log.claims = claims.as_ref().ok().map(Arc::clone);
        let claims = match claims {
            Ok(c) => sender_check(&snapshot, route.sender_constrained, identity, &c).map(|()| c),
            Err(r) => Err(r),
        };
        let early = claims.is_err() && route.mode == Mode::Enforce;
        // A POST body a framework could read `_method` from is read and checked, like one
        // with recipients; any other body streams through.
        let override_body = if method == Method::POST && !hyper::body::Body::is_end_stream(&body) {
            extract::override_body(&parts.headers)?
        } else {
            None
        };
        let (body, recipients): (ProxyBody, Option<Vec<String>>) =
            if early || (route.recipients.is_empty() && override_body.is_none()) {
                (Limited::new(body, limits.max_body_bytes).boxed(), None)
            } else {
                if !route.recipients.is_empty() && !is_json(&parts.headers) {
                    return Err(ProxyError::UnsupportedMediaType);
                }
                let bytes = self.buffer_body(body, limits).await?;
                let mut recipients = None;
                match override_body {
                    Some(OverrideBody::Form) => extract::method_override_form(&bytes)?,
                    Some(OverrideBody::Multipart) => extract::method_override_multipart(&bytes)?,
                    Some(OverrideBody::Json) | None => {
                        let json = crate::json::parse_strict(&bytes, limits.max_json_depth)
                            .map_err(|e| {
                                ProxyError::bad_request(format!("body is not valid JSON: {e}"))
                            })?;
                        extract::method_override_json(&json)?;
                        if !route.recipients.is_empty() {
                            recipients = Some(extract::recipients(&json, &route.recipients)?);
                        }
                    }
                }
                (
                    Full::new(bytes).map_err(|never| match never {}).boxed(),
                    recipients,
                )
            };
        let query = Query {
            action: &route.action,
            resource: &resource,
            facts: Facts {
                rows,
                recipients: recipients.as_deref(),
                method: Some(method.as_str()),
                rows_unenforceable: route.rows.is_none(),
                // A read cannot send anything; a write without declared recipients might.
                recipients_unenforceable: route.recipients.is_empty()
                    && !matches!(method, Method::GET | Method::HEAD),
            },
        };
        let outcome = self.gw.decide(
            Source::Proxy,
            claims.as_deref().map_err(|r| *r),
            None,
            &query,
        );
        log.reason = outcome.reason.as_str();
        let enforced = route.mode == Mode::Enforce || outcome.is_allowed();

        // 5. audit
        let tenant = outcome
            .tenant_id
            .clone()
            .unwrap_or_else(|| snapshot.config.tenant.clone());
        let decision_id = sequential_id("aud_");
        let event = (self.gw.audit.durability() != crate::config::Durability::Off).then(|| {
            self.event(
                &decision_id,
                &tenant,
                request_id,
                &outcome,
                route,
                &method,
                &resource,
                enforced,
                started,
            )
        });
        log.audited = true;
        if let Some(event) = event
            && let Err(e) = self.gw.audit.record(event).await
        {
            tracing::error!(request_id, error = %e, "audit unavailable: request refused (fail closed)");
            return Err(ProxyError::Unavailable(e.to_string()));
        }
        if !outcome.is_allowed() {
            if enforced {
                return Err(if outcome.reason.is_token_problem() {
                    ProxyError::Unauthorized {
                        reason: outcome.reason,
                        message: outcome.message,
                    }
                } else {
                    ProxyError::Forbidden {
                        reason: outcome.reason,
                        message: outcome.message,
                        policy_id: outcome.policy_id,
                    }
                });
            }
            tracing::warn!(request_id, route = %route.name, reason = outcome.reason.as_str(), "monitor mode: would deny, forwarding");
        }

        // 6. forward
        let target = snapshot.upstreams.get(&route.upstream).ok_or_else(|| {
            ProxyError::BadGateway(format!("upstream {} is not configured", route.upstream))
        })?;
        let mut path_and_query =
            String::with_capacity(raw_path.len() + query_str.map_or(0, |q| q.len() + 1) + 16);
        path_and_query.push_str(raw_path);
        if let Some(q) = query_str {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        // maxRows with no row count asked: ask for exactly the limit.
        if let (None, Some(RowSource::Query(name)), Some(limit)) = (
            rows,
            route.rows.as_ref(),
            outcome.constraints.as_ref().and_then(|c| c.max_rows),
        ) && outcome.is_allowed()
        {
            path_and_query.push(if query_str.is_some() { '&' } else { '?' });
            path_and_query.push_str(name);
            path_and_query.push('=');
            path_and_query.push_str(&limit.to_string());
        }
        let uri = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(
                PathAndQuery::try_from(path_and_query)
                    .map_err(|_| ProxyError::bad_request("request target"))?,
            )
            .build()
            .map_err(|_| ProxyError::bad_request("request target"))?;
        let client_host = parts.headers.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        // Identity is vouched for only when the token stage passed (monitor mode forwards
        // requests whose token did not).
        let vouched = !outcome.reason.is_token_problem();
        let vouch = Vouch {
            agent: outcome.agent_id.as_deref().filter(|_| vouched),
            tenant: outcome.tenant_id.as_deref().filter(|_| vouched),
            request_id,
            peer,
            upstream_host: &target.host,
            client_host: client_host.as_ref(),
        };
        forward::rewrite_request(&mut parts.headers, token_kind, &vouch);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);
        let result =
            tokio::time::timeout(target.timeout, target.client.request(upstream_req)).await;
        let metric = &self.gw.metrics.upstream;
        // The outcome record names its decision record and carries only what the decision did
        // not know: the upstream's status (or why there is none) and the latency. Not awaited:
        // the answer is already on its way.
        let outcome_record = |status: Option<u16>, reason: &str| {
            if self.gw.audit.durability() == crate::config::Durability::Off {
                return;
            }
            let (time, time_ms) = now_stamp();
            self.gw.audit.record_outcome(AuditEvent {
                seq: 0,
                kind: EventKind::Outcome,
                id: sequential_id("aud_"),
                decision_id: Some(decision_id.clone()),
                time,
                time_ms,
                tenant_id: tenant.clone(),
                source: Source::Proxy,
                request_id: request_id.to_string(),
                agent_id: None,
                token_id: None,
                action: String::new(),
                resource: String::new(),
                decision: String::new(),
                reason: reason.to_string(),
                policy_id: None,
                message: String::new(),
                enforced,
                route: None,
                method: None,
                upstream_status: status,
                latency_us: Some(started.elapsed().as_micros() as u64),
                snapshot_version: outcome.snapshot_version,
                count: None,
            });
        };
        let mut resp = match result {
            Err(_) => {
                metric
                    .with_label_values(&[&route.upstream, "timeout"])
                    .inc();
                let e = ProxyError::GatewayTimeout;
                outcome_record(None, e.reason());
                return Err(e);
            }
            Ok(Err(e)) => {
                let e = match find_length_limit(&e, limits.max_body_bytes) {
                    Some(too_large) => too_large,
                    None => {
                        metric.with_label_values(&[&route.upstream, "error"]).inc();
                        tracing::warn!(request_id, upstream = %route.upstream, error = %e, "upstream request failed");
                        ProxyError::BadGateway(e.to_string())
                    }
                };
                outcome_record(None, e.reason());
                return Err(e);
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        metric
            .with_label_values(&[&route.upstream, status_class(status)])
            .inc();
        forward::rewrite_response(resp.headers_mut(), request_id);
        outcome_record(Some(status), "");

        Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()))
    }

    /// Reads a body that must be inspected: at most `maxBufferedBodies` at once, each within
    /// `limits.maxBodyBytes` and `limits.bodyReadTimeout`.
    async fn buffer_body(&self, body: Incoming, limits: &Limits) -> Result<Bytes, ProxyError> {
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
                .map_err(|e| body_error(&*e, limits.max_body_bytes))
        };
        tokio::time::timeout(limits.body_read_timeout, read)
            .await
            .map_err(|_| ProxyError::RequestTimeout)?
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        id: &str,
        tenant: &str,
        request_id: &str,
        outcome: &Outcome,
        route: &route::Route,
        method: &Method,
        resource: &str,
        enforced: bool,
        started: Instant,
    ) -> AuditEvent {
        let mut event = outcome.decision_event(
            id.to_string(),
            Source::Proxy,
            tenant,
            request_id,
            (route.action.clone(), resource.to_string()),
            enforced,
        );
        event.route = Some(route.name.clone());
        event.method = Some(method.as_str().to_string());
        event.latency_us = Some(started.elapsed().as_micros() as u64);
        event
    }
}

/// A sender-constrained token (the route's or the agent's requirement) is honoured only on a
/// connection whose client certificate names the token's agent through `tls.proxy.identity`.
/// Fails closed: no TLS identity rule, no client certificate, or another identity →
/// `sender_mismatch`.
fn sender_check(
    snapshot: &Snapshot,
    route_requires: bool,
    identity: Option<&ClientIdentity>,
    claims: &Claims,
) -> Result<(), Reason> {
    let agent_requires = snapshot
        .agent(&claims.tenant, &claims.agent)
        .is_some_and(|a| a.sender_constrained);
    if !route_requires && !agent_requires {
        return Ok(());
    }
    let rule = snapshot
        .config
        .tls
        .proxy
        .as_ref()
        .and_then(|t| t.identity.as_ref());
    match (rule, identity) {
        (Some(rule), Some(id))
            if id.matches(rule.san, &rule.template, &claims.tenant, &claims.agent) =>
        {
            Ok(())
        }
        _ => Err(Reason::SenderMismatch),
    }
}

/// An absolute-form target (HTTP/1.1) must name the same authority as `Host`; HTTP/2 carries
/// `:authority`, and a `Host` beside it must agree.
fn check_authority(
    uri: &Uri,
    headers: &http::HeaderMap,
    version: Version,
) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(ProxyError::bad_request("Host appears more than once")),
        (h, None) => h,
    };
    if let Some(authority) = uri.authority() {
        match host {
            Some(h)
                if !h
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
            {
                return Err(ProxyError::bad_request(
                    "the absolute-form target and the Host header disagree",
                ));
            }
            None if version < Version::HTTP_2 => {
                return Err(ProxyError::bad_request(
                    "an absolute-form target needs a Host header",
                ));
            }
            _ => {}
        }
    } else if version == Version::HTTP_11 && host.is_none() {
        return Err(ProxyError::bad_request(
            "HTTP/1.1 requests need a Host header",
        ));
    }
    Ok(())
}

fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, ProxyError> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ProxyError::bad_request("Content-Length is not a number")),
        (Some(_), Some(_)) => Err(ProxyError::bad_request(
            "Content-Length appears more than once",
        )),
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().is_ok_and(|s| {
            let mime = s.split(';').next().unwrap_or_default().trim();
            mime.eq_ignore_ascii_case("application/json")
        }),
        _ => false,
    }
}

fn body_error(e: &(dyn std::error::Error + 'static), limit: usize) -> ProxyError {
    if e.downcast_ref::<LengthLimitError>().is_some() {
        ProxyError::TooLarge(limit)
    } else {
        ProxyError::bad_request("the request body could not be read")
    }
}

/// Whether a client error was caused by the request body crossing the limit mid-stream.
fn find_length_limit(e: &(dyn std::error::Error + 'static), limit: usize) -> Option<ProxyError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<LengthLimitError>().is_some() {
            return Some(ProxyError::TooLarge(limit));
        }
        cur = err.source();
    }
    None
}

/// The token headers of a request, kept (cheap reference-counted copies) so a refusal made
/// before the token stage can still name the agent whose token verified.
pub struct PresentedToken {
    authorization: Option<HeaderValue>,
    act_token: Option<HeaderValue>,
}

impl PresentedToken {
    /// Keeps the request's token headers.
    pub fn capture(headers: &http::HeaderMap) -> PresentedToken {
        PresentedToken {
            authorization: headers.get(http::header::AUTHORIZATION).cloned(),
            act_token: headers.get(extract::ACT_TOKEN).cloned(),
        }
    }

    /// The presented token (`Authorization: Bearer`, else `X-Act-Token`), read loosely: it is
    /// only used to name who made a refused request, and only if its signature verifies.
    pub fn token(&self) -> Option<&str> {
        let bearer = self
            .authorization
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once([' ', '\t']))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        bearer
            .or_else(|| {
                self.act_token
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
            })
            .filter(|t| !t.is_empty())
    }

    /// `message` with any copy of the presented token replaced, at most 512 bytes: a refusal
    /// record describes what was refused, never the credential.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = match self.token() {
            Some(t) if t.len() >= 8 => message.replace(t, "<token>"),
            _ => message.to_string(),
        };
        if out.len() > 512 {
            let mut cut = 509;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
        }
        out
    }
}

/// One request's metrics and access-log line, emitted exactly once, on drop; and whether it
/// has its audit event yet (a request cancelled before it had one gets a refusal record then).
pub struct RequestLog<'g> {
    gw: &'g Gateway,
    started: Instant,
    request_id: String,
    method: Method,
    route: Option<String>,
    status: StatusCode,
    reason: &'static str,
    /// The request has its audit event (a decision record, or a refusal record).
    audited: bool,
    /// The token's claims, once its signature verified.
    claims: Option<Arc<Claims>>,
}

impl<'g> RequestLog<'g> {
    fn new(gw: &'g Gateway, request_id: &str, method: Method) -> Self {
        gw.metrics.in_flight.with_label_values(&["proxy"]).inc();
        RequestLog {
            gw,
            started: Instant::now(),
            request_id: request_id.to_string(),
            method,
            route: None,
            // A request dropped before it was answered (client went away) stays 499.
            status: StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            reason: "cancelled",
            audited: false,
            claims: None,
        }
    }

    /// The refusal record of this request, counted as a denied decision.
    fn refusal_event(
        &self,
        reason: &'static str,
        message: String,
        claims: Option<&Claims>,
    ) -> AuditEvent {
        let tenant = claims.map_or_else(|| self.gw.config().tenant.clone(), |c| c.tenant.clone());
        let mut event = AuditEvent::refusal(
            sequential_id("aud_"),
            Source::Proxy,
            &tenant,
            &self.request_id,
            reason,
            message,
        );
        event.agent_id = claims.map(|c| c.agent.clone());
        event.token_id = claims.map(|c| c.jti.clone());
        event.route = self.route.clone();
        event.method = Some(self.method.as_str().to_string());
        event.latency_us = Some(self.started.elapsed().as_micros() as u64);
        event.snapshot_version = self.gw.snapshot().version;
        self.gw
            .metrics
            .decisions
            .with_label_values(&["denied", reason, Source::Proxy.as_str()])
            .inc();
        event
    }
}

impl Drop for RequestLog<'_> {
    fn drop(&mut self) {
        if !self.audited {
            // Cancelled before any audit event (the client went away mid-request): nothing
            // can be awaited here, so this record never waits for room in the queue.
            let event = self.refusal_event(
                "cancelled",
                "the client closed the connection before the request was decided".into(),
                self.claims.clone().as_deref(),
            );
            self.gw.audit.record_refusal_now(event);
        }
        let m = &self.gw.metrics;
        m.in_flight.with_label_values(&["proxy"]).dec();
        let route = self.route.as_deref().unwrap_or("-");
        let elapsed = self.started.elapsed();
        m.proxy_seconds
            .with_label_values(&[route, status_class(self.status.as_u16())])
            .observe(elapsed.as_secs_f64());
        if self.status.is_success() || self.status.is_redirection() {
            tracing::debug!(request_id = %self.request_id, method = %self.method, route, status = self.status.as_u16(), reason = self.reason, latency_us = elapsed.as_micros() as u64, "proxied");
        } else {
            tracing::info!(request_id = %self.request_id, method = %self.method, route, status = self.status.as_u16(), reason = self.reason, latency_us = elapsed.as_micros() as u64, "refused or failed");
        }
    }
}
