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
//! The data plane ([`crate::dataplane`]) reads the target, then hands a request for a route to
//! [`Proxy::stages`]; it turns a refusal into an answer and an audit record, and its
//! [`RequestLog`] emits metrics and the access log line exactly once, on drop, so early returns
//! and cancelled requests are counted.

pub mod canonical;
pub mod error;
pub mod extract;
pub mod forward;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::audit::{AuditEvent, Source};
use crate::config::Limits;
use crate::dataplane::{RequestLog, sender_check};
use crate::gateway::{Gateway, Outcome};
use crate::ids::sequential_id;
use crate::policy::{Facts, Query};
use crate::snapshot::Snapshot;
use crate::telemetry::status_class;
use crate::tls::ClientIdentity;
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

    /// The stages of a request for a route, after the data plane read its target: `path` is
    /// the canonical, decoded path (the authority and the path were checked already).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn stages(
        &self,
        req: Request<Incoming>,
        path: String,
        snapshot: &Snapshot,
        peer: SocketAddr,
        identity: Option<&ClientIdentity>,
        request_id: &str,
        log: &mut RequestLog<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let started = log.started;
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let limits = &snapshot.config.limits;

        // 1. target (the rest of it: the query)
        let raw_path = parts.uri.path();
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
            Ok(c) => sender_check(snapshot, route.sender_constrained, identity, &c).map(|()| c),
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
        let (body, recipients): (ProxyBody, Option<Vec<String>>) = if early
            || (route.recipients.is_empty() && override_body.is_none())
        {
            (Limited::new(body, limits.max_body_bytes).boxed(), None)
        } else {
            if !route.recipients.is_empty() && !is_json(&parts.headers) {
                return Err(ProxyError::UnsupportedMediaType);
            }
            // A body actgate reads is read as it came: compressed, it would be read one
            // way here and another by an upstream that decompresses it.
            if parts
                .headers
                .get_all(http::header::CONTENT_ENCODING)
                .iter()
                .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
            {
                return Err(ProxyError::bad_request(
                    "a body actgate inspects (recipients, method overrides) must be sent uncompressed: no Content-Encoding",
                ));
            }
            let bytes = self.buffer_body(body, limits).await?;
            let mut recipients = None;
            match override_body {
                Some(OverrideBody::Form) => extract::method_override_form(&bytes)?,
                Some(OverrideBody::Multipart) => extract::method_override_multipart(&bytes)?,
                Some(OverrideBody::Json) | None => {
                    let json =
                        crate::json::parse_strict(&bytes, limits.max_json_depth).map_err(|e| {
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
        let enforced = route.mode == Mode::Enforce
            || outcome.is_allowed()
            || outcome.reason.fails_closed_always();

        // 5. audit
        let event = (self.gw.audit.durability() != crate::config::Durability::Off).then(|| {
            let tenant = outcome
                .tenant_id
                .clone()
                .unwrap_or_else(|| Arc::clone(&snapshot.config.tenant));
            Box::new(self.event(
                sequential_id("aud_"),
                tenant,
                request_id,
                &outcome,
                route,
                &method,
                resource,
                enforced,
                started,
            ))
        });
        log.audited = true;
        if let Some(event) = event {
            match self.gw.audit.decide(event).await {
                Ok(record) => log.record = Some(record),
                Err(e) => {
                    tracing::error!(request_id, error = %e, "audit unavailable: request refused (fail closed)");
                    return Err(ProxyError::Unavailable(e.to_string()));
                }
            }
        }
        if !outcome.is_allowed() {
            if enforced {
                return Err(if outcome.reason.fails_closed_always() {
                    ProxyError::StoreUnavailable(outcome.message)
                } else if outcome.reason.is_token_problem() {
                    ProxyError::Unauthorized {
                        reason: outcome.reason,
                        message: outcome.message,
                    }
                } else {
                    ProxyError::Forbidden {
                        reason: outcome.reason,
                        message: outcome.message,
                        policy_id: outcome.policy_id.map(|p| p.to_string()),
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
            tokio::time::timeout(target.timeout, target.client().request(upstream_req)).await;
        let metric = &self.gw.metrics.upstream;
        let mut resp = match result {
            Err(_) => {
                metric
                    .with_label_values(&[&route.upstream, "timeout"])
                    .inc();
                let e = ProxyError::GatewayTimeout;
                log.outcome(None, Some(e.reason()));
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
                log.outcome(None, Some(e.reason()));
                return Err(e);
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        metric
            .with_label_values(&[&route.upstream, status_class(status)])
            .inc();
        forward::rewrite_response(resp.headers_mut(), request_id);
        log.outcome(Some(status), None);

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
        id: String,
        tenant: Arc<str>,
        request_id: &str,
        outcome: &Outcome,
        route: &route::Route,
        method: &Method,
        resource: String,
        enforced: bool,
        started: Instant,
    ) -> AuditEvent {
        let mut event = outcome.decision_event(
            id,
            Source::Proxy,
            tenant,
            request_id,
            (route.action.clone(), resource),
            enforced,
        );
        event.route = Some(route.name.clone());
        event.method = Some(crate::audit::method_text(method));
        event.latency_us = Some(started.elapsed().as_micros() as u64);
        event
    }
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
