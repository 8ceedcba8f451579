//! The data plane on `listen.proxy`: one listener, one reading of the target, one request
//! log and one audit rule for the two gateways behind it — routes ([`crate::proxy`]) and MCP
//! endpoints ([`crate::mcp`]).
//!
//! [`DataPlane::handle`] cannot fail: it reads the target (the authority agrees with `Host`,
//! the path is canonical), hands the request to the MCP endpoint serving that path or to the
//! route stages, and turns a refusal into its answer. Every request leaves one audit event:
//! the decision record the stages make, or — for a refusal before any decision — a refusal
//! record made here, naming the agent when the token's signature verifies; a request
//! cancelled before either gets one when its [`RequestLog`] is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::audit::{AuditEvent, DecisionRecord, Source};
use crate::gateway::Gateway;
use crate::ids::sequential_id;
use crate::listener;
use crate::mcp::Mcp;
use crate::mcp::error::McpError;
use crate::policy::Reason;
use crate::proxy::error::ProxyError;
use crate::proxy::{Proxy, ProxyBody, canonical, extract};
use crate::snapshot::Snapshot;
use crate::telemetry::status_class;
use crate::tls::{ClientIdentity, ServerTls};
use crate::token::Claims;

thread_local! {
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The proxy worker the calling thread is (`None` off the data plane's threads).
pub fn worker_index() -> Option<usize> {
    WORKER.get()
}

/// A refusal of either gateway.
#[derive(Debug)]
pub enum Refused {
    /// By the route stages (or the shared target stage).
    Proxy(ProxyError),
    /// By the MCP gateway.
    Mcp(McpError),
}

impl Refused {
    fn status(&self) -> StatusCode {
        match self {
            Refused::Proxy(e) => e.status(),
            Refused::Mcp(e) => e.status,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Refused::Proxy(e) => e.reason(),
            Refused::Mcp(e) => e.reason,
        }
    }

    fn message(&self) -> String {
        match self {
            Refused::Proxy(e) => e.message(),
            Refused::Mcp(e) => e.message.clone(),
        }
    }

    fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        match self {
            Refused::Proxy(e) => e.into_response(request_id),
            Refused::Mcp(e) => e.into_response(request_id),
        }
    }
}

/// The data plane: the proxy's routes and the MCP endpoints on one listener.
pub struct DataPlane {
    gw: Arc<Gateway>,
    proxy: Arc<Proxy>,
    mcp: Arc<Mcp>,
}

impl DataPlane {
    /// A data plane over `gw`.
    pub fn new(gw: Arc<Gateway>) -> Arc<DataPlane> {
        Arc::new(DataPlane {
            proxy: Proxy::new(Arc::clone(&gw)),
            mcp: Mcp::new(Arc::clone(&gw)),
            gw,
        })
    }

    /// The MCP gateway (its stdio servers are stopped on shutdown).
    pub fn mcp(&self) -> &Arc<Mcp> {
        &self.mcp
    }

    /// Serves `listener` (with TLS when given) on `workers` threads until `stop` turns true,
    /// then drains in-flight requests for at most `limits.drainTimeout`. Each worker runs its
    /// own single-threaded runtime and accepts from the one listening socket (the kernel hands
    /// each connection to one of them); a connection, its requests and its upstream
    /// connections then stay on that thread — no hand-off, no cross-thread wake-up. The
    /// workers share the connection limit. The returned future ends when every worker has
    /// stopped and dropped its connections.
    ///
    /// One socket shared, rather than one `SO_REUSEPORT` socket per worker: any process of the
    /// same user could join a reuseport group and be handed a share of the connections (with
    /// their tokens); a shared socket cannot be joined.
    pub fn spawn_workers(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        workers: usize,
        tls: Option<Arc<ServerTls>>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let limits = self.gw.config().limits.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let rejected = self
            .gw
            .metrics
            .connections_rejected
            .with_label_values(&["proxy"]);
        let open = self
            .gw
            .metrics
            .connections_open
            .with_label_values(&["proxy"]);
        listener.set_nonblocking(true)?;
        let mut stopped = Vec::with_capacity(workers);
        for i in 0..workers.max(1) {
            let listener = listener.try_clone()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let opts = listener::Options {
                name: "proxy",
                limits: limits.clone(),
                tls: tls.clone(),
                rejected: rejected.clone(),
                slots: Arc::clone(&slots),
                open: open.clone(),
            };
            let plane = Arc::clone(self);
            let stop = stop.clone();
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("actgate-proxy-{i}"))
                .spawn(move || {
                    WORKER.set(Some(i));
                    runtime.block_on(async {
                        match TcpListener::from_std(listener) {
                            Ok(l) => Arc::clone(&plane).serve(l, opts, stop).await,
                            Err(e) => {
                                tracing::error!(worker = i, error = %e, "proxy worker cannot use the listener")
                            }
                        }
                    });
                    // Connections still open after the drain are dropped with the runtime
                    // (their requests get their records), before the gateway may stop.
                    drop(runtime);
                    drop(plane);
                    let _ = done.send(());
                })?;
            stopped.push(wait);
        }
        Ok(async move {
            for w in stopped {
                let _ = w.await;
            }
        })
    }

    async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        opts: listener::Options,
        stop: watch::Receiver<bool>,
    ) {
        let plane = Arc::clone(&self);
        listener::serve(
            listener,
            opts,
            move |peer, identity| {
                let plane = Arc::clone(&plane);
                service_fn(move |req| {
                    let plane = Arc::clone(&plane);
                    let identity = identity.clone();
                    async move { Ok::<_, Infallible>(plane.handle(req, peer, identity).await) }
                })
            },
            stop,
        )
        .await;
    }

    /// Handles one request; never fails (see the module documentation).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        identity: Option<Arc<ClientIdentity>>,
    ) -> Response<ProxyBody> {
        let request_id = sequential_id("req_");
        let presented = PresentedToken::capture(req.headers());
        let mut log = RequestLog::new(&self.gw, &request_id, req.method().clone());
        // Debug: disabled at the default level, so free per request (see the API's span).
        let span = tracing::debug_span!("request", request_id = %request_id);
        match self
            .dispatch(req, peer, identity.as_deref(), &request_id, &mut log)
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
                    // Boxed: kept out of the size of every request's future.
                    Box::pin(self.audit_refusal(&e, &presented, &mut log)).await;
                }
                e.into_response(&request_id)
            }
        }
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        identity: Option<&ClientIdentity>,
        request_id: &str,
        log: &mut RequestLog<'_>,
    ) -> Result<Response<ProxyBody>, Refused> {
        let snapshot = self.gw.snapshot();
        check_authority(req.uri(), req.headers(), req.version()).map_err(Refused::Proxy)?;
        let path = canonical::canonical_path(req.uri().path())
            .map_err(|e| Refused::Proxy(ProxyError::bad_request(e.to_string())))?;
        if let Some(ep) = snapshot.config.mcp.find(&path) {
            log.source = Source::Mcp;
            log.route = Some(Arc::clone(&ep.log_route));
            // Boxed: the MCP path's future is large, and a route request's future should not
            // carry its size (hyper moves each request's future into place).
            return Box::pin(
                self.mcp
                    .handle(req, ep, &snapshot, peer, identity, request_id, log),
            )
            .await
            .map_err(Refused::Mcp);
        }
        if let Some(ep) = snapshot.config.mcp.find_metadata(&path) {
            log.source = Source::Mcp;
            log.route = Some(Arc::clone(&ep.log_route));
            return self.mcp.metadata(&req, ep, log).map_err(Refused::Mcp);
        }
        self.proxy
            .stages(req, path, &snapshot, peer, identity, request_id, log)
            .await
            .map_err(Refused::Proxy)
    }

    /// The audit record of a refusal made before any decision: its reason, the route when one
    /// matched, and the agent and tenant when the request carried a token whose signature
    /// verifies (never an unverified claim). Counted as a denied decision.
    async fn audit_refusal(
        &self,
        e: &Refused,
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
        // Named by a verified signature, but recorded one by one (never aggregated) only for
        // a token that is valid now: an expired or revoked one costs its holder nothing, so
        // its floods go through the refusal budget like anyone's.
        let valid = claims
            .as_deref()
            .is_some_and(|c| self.gw.admit(Ok(c)).is_allowed());
        self.gw.audit.record_refusal(event, valid).await;
    }
}

/// A sender-constrained token (the route's or the agent's requirement) is honoured only on a
/// connection whose client certificate names the token's agent through `tls.proxy.identity`.
/// Fails closed: no TLS identity rule, no client certificate, or another identity →
/// `sender_mismatch`.
pub fn sender_check(
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
pub fn check_authority(
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
    pub(crate) started: Instant,
    request_id: String,
    method: Method,
    /// The route's name (or `mcp:<endpoint>`), once known.
    pub(crate) route: Option<Arc<str>>,
    status: StatusCode,
    pub(crate) reason: &'static str,
    /// The request has its audit event (a decision record, or a refusal record).
    pub(crate) audited: bool,
    /// The token's claims, once its signature verified.
    pub(crate) claims: Option<Arc<Claims>>,
    /// Which gateway of the data plane served it.
    pub(crate) source: Source,
    /// The decision's record, until the outcome is known (dropped with the request
    /// otherwise, which records the decision as it is).
    pub(crate) record: Option<DecisionRecord>,
}

impl<'g> RequestLog<'g> {
    fn new(gw: &'g Gateway, request_id: &str, method: Method) -> Self {
        gw.metrics.proxy_in_flight.inc();
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
            source: Source::Proxy,
            record: None,
        }
    }

    /// What became of the forwarded request (the upstream's status, or the reason code of
    /// its failure), recorded with its decision.
    pub(crate) fn outcome(&mut self, status: Option<u16>, error: Option<&'static str>) {
        if let Some(record) = self.record.take() {
            record.finish(status, error, self.started.elapsed().as_micros() as u64);
        }
    }

    /// The refusal record of this request, counted as a denied decision.
    pub(crate) fn refusal_event(
        &self,
        reason: &'static str,
        message: String,
        claims: Option<&Claims>,
    ) -> AuditEvent {
        let tenant = claims.map_or_else(
            || Arc::clone(&self.gw.config().tenant),
            |c| Arc::clone(&c.tenant),
        );
        let mut event = AuditEvent::refusal(
            sequential_id("aud_"),
            self.source,
            tenant,
            &self.request_id,
            reason,
            message,
        );
        event.agent_id = claims.map(|c| c.agent.clone());
        event.token_id = claims.map(|c| c.jti.clone());
        event.route = self.route.clone();
        event.method = Some(crate::audit::method_text(&self.method));
        event.latency_us = Some(self.started.elapsed().as_micros() as u64);
        event.snapshot_version = self.gw.snapshot().version;
        self.gw
            .metrics
            .decisions
            .with_label_values(&["denied", reason, self.source.as_str()])
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
        m.proxy_in_flight.dec();
        let route = self.route.as_deref().unwrap_or("-");
        let elapsed = self.started.elapsed();
        m.proxy_seconds
            .with_label_values(&[route, status_class(self.status.as_u16())])
            .observe(elapsed.as_secs_f64());
        // The access log: every request is in the audit log; a line per request only at
        // debug, except answers that mean actgate or an upstream failed.
        if self.status.is_server_error() {
            tracing::warn!(request_id = %self.request_id, method = %self.method, route, status = self.status.as_u16(), reason = self.reason, latency_us = elapsed.as_micros() as u64, "failed");
        } else {
            tracing::debug!(request_id = %self.request_id, method = %self.method, route, status = self.status.as_u16(), reason = self.reason, latency_us = elapsed.as_micros() as u64, "answered");
        }
    }
}
