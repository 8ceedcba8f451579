//! Forwarding: the header rewrite (what the upstream must not see, what actgate vouches for)
//! and the pooled upstream client.
//!
//! Order matters and is fixed: hop-by-hop headers and every header named in `Connection` go
//! first, then the token, method overrides, client-sent forwarding headers and every client
//! `X-Act-*`; only then does actgate set its own `X-Act-*`, `X-Forwarded-For`, `Forwarded` and
//! `Host`, so a client can neither strip nor spoof them.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, FORWARDED, HOST};
use std::collections::HashMap;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ProxyBody;
use super::extract::TokenHeader;
use crate::config::{Config, Upstream, UpstreamTarget};

/// Set on the upstream request: the token's agent.
pub const AGENT_ID: HeaderName = HeaderName::from_static("x-act-agent-id");
/// Set on the upstream request: the token's tenant.
pub const TENANT_ID: HeaderName = HeaderName::from_static("x-act-tenant-id");
/// Set on the upstream request and the response: actgate's request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-act-request-id");
/// Set on the upstream request: the client's address.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the de-facto ones).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Headers that ask a server to use another method or path than the request line's. Never
/// honoured, never forwarded.
const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-override-url",
];

/// Client-sent forwarding headers: not trusted, replaced.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
];

/// Removes hop-by-hop headers and the headers a `Connection` header names: one pass over the
/// names present (a handful in a response) rather than a lookup per name on the list.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed = connection_named(headers);
    doomed.extend(
        headers
            .keys()
            .filter(|k| HOP_BY_HOP.contains(&k.as_str()))
            .cloned(),
    );
    for name in doomed {
        headers.remove(name);
    }
}

/// The header names a `Connection` header lists (each must go with the hop).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// What the upstream is told about the request.
pub struct Vouch<'a> {
    /// The verified token's agent, if any.
    pub agent: Option<&'a str>,
    /// The verified token's tenant, if any.
    pub tenant: Option<&'a str>,
    /// actgate's request id.
    pub request_id: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
    /// The upstream's `host[:port]`.
    pub upstream_host: &'a HeaderValue,
    /// The Host the client asked for, for `Forwarded: host=`.
    pub client_host: Option<&'a HeaderValue>,
}

/// Rewrites request headers for the upstream (see the module documentation for the order).
pub fn rewrite_request(headers: &mut HeaderMap, token: Option<TokenHeader>, vouch: &Vouch<'_>) {
    // One pass over the request's own headers decides what goes (cheaper than looking up
    // every name on the lists): names a `Connection` header lists, hop-by-hop headers, names
    // with `_` (CGI-style servers read `X_Act_Agent_Id` as `X-Act-Agent-Id`), the token,
    // method and path overrides, client forwarding headers, every client `X-Act-*`, and
    // `Content-Length` (framing is the body's: hyper sets it from what it forwards).
    let connection_named = connection_named(headers);
    let strip_authorization = token == Some(TokenHeader::Bearer);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let n = k.as_str();
            HOP_BY_HOP.contains(&n)
                || OVERRIDES.contains(&n)
                || FORWARDING.contains(&n)
                || n.contains('_')
                || n.starts_with("x-act-")
                || n == "content-length"
                || (strip_authorization && n == "authorization")
                || connection_named.contains(k)
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }

    headers.insert(HOST, vouch.upstream_host.clone());
    if let Some(agent) = vouch.agent.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(AGENT_ID, agent);
    }
    if let Some(tenant) = vouch.tenant.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(TENANT_ID, tenant);
    }
    if let Ok(v) = HeaderValue::from_str(vouch.request_id) {
        headers.insert(REQUEST_ID, v);
    }
    // The client's address, formatted without `fmt` (most of this function's cost when it
    // went through `Display`).
    let ip = vouch.peer.ip();
    let mut addr = String::with_capacity(48);
    match ip {
        std::net::IpAddr::V4(v4) => push_ipv4(&mut addr, v4),
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(addr, "{v6}");
        }
    }
    let mut forwarded = String::with_capacity(96);
    forwarded.push_str("for=");
    if ip.is_ipv6() {
        forwarded.push_str("\"[");
        forwarded.push_str(&addr);
        forwarded.push_str("]\"");
    } else {
        forwarded.push_str(&addr);
    }
    forwarded.push_str(";proto=http");
    if let Some(host) = vouch.client_host.and_then(|h| h.to_str().ok())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
    }
    if let Ok(v) = HeaderValue::try_from(addr) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::try_from(forwarded) {
        headers.insert(FORWARDED, v);
    }
}

/// Appends the dotted-decimal form of `ip`.
fn push_ipv4(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Rewrites response headers for the client: hop-by-hop out, request id in.
pub fn rewrite_response(headers: &mut HeaderMap, request_id: &str) {
    strip_hop_by_hop(headers);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
}

/// A pooled upstream client (http, or https through rustls).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Builds an upstream's client: keep-alive pool with an idle timeout (on a timer), no Nagle
/// delay; for https, rustls with the upstream's CA bundle (else the Mozilla roots), client
/// certificate and SNI name.
pub fn client(
    upstream: &Upstream,
    url: &http::Uri,
    idle_timeout: Duration,
    max_header_bytes: usize,
) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.enforce_http(false);
    let tls = crate::tls::client_config(
        upstream.ca_file.as_deref(),
        upstream
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
    )?;
    let builder = HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = if url.scheme_str() == Some("https") {
        builder.https_only()
    } else {
        builder.https_or_http()
    };
    let builder = match &upstream.server_name {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| format!("serverName {name:?} is not a DNS name or IP address"))?,
            ))
        }
        None => builder,
    };
    let connector = builder.enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http1_max_buf_size(max_header_bytes.max(8192) + 64 * 1024)
        .retry_canceled_requests(false)
        .set_host(false)
        .build(connector))
}

/// An upstream, resolved for forwarding.
pub struct Target {
    /// http or https.
    pub scheme: Scheme,
    /// host:port.
    pub authority: Authority,
    /// The URL's path (an MCP endpoint, e.g. `/mcp`); empty for route upstreams.
    pub base_path: String,
    /// The `Host` header the upstream gets.
    pub host: HeaderValue,
    /// Time allowed for the response head.
    pub timeout: Duration,
    /// Its pooled clients: one per proxy worker, and one for every other thread.
    clients: Vec<UpstreamClient>,
}

impl Target {
    /// The client of the calling thread: a proxy worker's own (its pooled connections live
    /// on that worker's runtime, so a request never waits on another thread), else the
    /// shared one.
    pub fn client(&self) -> &UpstreamClient {
        let last = self.clients.len() - 1;
        &self.clients[crate::dataplane::worker_index().map_or(last, |i| i.min(last))]
    }
}

/// Every upstream of a config, with its client.
#[derive(Default)]
pub struct Upstreams {
    targets: HashMap<String, Target>,
}

impl Upstreams {
    /// Builds a client per upstream; fails when a CA bundle or client certificate does not
    /// load.
    pub fn build(config: &Config) -> Result<Upstreams, String> {
        let mut targets = HashMap::new();
        for u in config.upstreams.values() {
            // Stdio upstreams are processes, run by the MCP gateway.
            let UpstreamTarget::Http(url) = &u.target else {
                continue;
            };
            let authority = url
                .authority()
                .cloned()
                .ok_or_else(|| format!("upstream {}: no host", u.name))?;
            let target = Target {
                scheme: url.scheme().cloned().unwrap_or(Scheme::HTTP),
                host: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
                authority,
                base_path: url.path().trim_end_matches('/').to_string(),
                timeout: u.timeout,
                clients: (0..=config.listen.workers)
                    .map(|_| {
                        client(
                            u,
                            url,
                            config.limits.idle_timeout,
                            config.limits.max_header_bytes,
                        )
                        .map_err(|e| format!("upstream {}: {e}", u.name))
                    })
                    .collect::<Result<_, _>>()?,
            };
            targets.insert(u.name.clone(), target);
        }
        Ok(Upstreams { targets })
    }

    /// The upstream named `name`.
    pub fn get(&self, name: &str) -> Option<&Target> {
        self.targets.get(name)
    }
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.targets.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::extract::ACT_TOKEN;
    use super::*;
    use http::header::AUTHORIZATION;

    #[test]
    fn clients_cannot_strip_or_spoof_what_actgate_sets() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-act-agent-id, x-keep-me"),
            ("x-keep-me", "1"),
            ("x-act-agent-id", "agent_spoofed"),
            ("x-act-tenant-id", "other"),
            ("x-act-whatever", "x"),
            ("x_act_agent_id", "agent_underscored"),
            ("x_forwarded_for", "10.0.0.9"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("authorization", "Bearer tok"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("te", "trailers"),
            ("accept", "application/json"),
            ("host", "attacker.example"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let upstream = HeaderValue::from_static("127.0.0.1:9001");
        let client_host = HeaderValue::from_static("gw.local");
        rewrite_request(
            &mut h,
            Some(TokenHeader::Bearer),
            &Vouch {
                agent: Some("agent_real"),
                tenant: Some("t"),
                request_id: "req_1",
                peer: "192.0.2.7:5555".parse().unwrap(),
                upstream_host: &upstream,
                client_host: Some(&client_host),
            },
        );
        assert_eq!(h["x-act-agent-id"], "agent_real");
        assert_eq!(h["x-act-tenant-id"], "t");
        assert_eq!(h["x-act-request-id"], "req_1");
        assert!(h.get("x-act-whatever").is_none());
        assert!(h.get("x_act_agent_id").is_none());
        assert!(h.get("x_forwarded_for").is_none());
        assert!(h.get("x-keep-me").is_none(), "named in Connection");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["forwarded"], "for=192.0.2.7;proto=http;host=\"gw.local\"");
        assert_eq!(h["host"], "127.0.0.1:9001");
        for gone in [
            "authorization",
            "x-http-method-override",
            "x-original-url",
            "transfer-encoding",
            "content-length",
            "te",
            "connection",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h["accept"], "application/json");
    }

    #[test]
    fn a_non_bearer_authorization_passes_when_the_token_came_in_x_act_token() {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        h.insert(ACT_TOKEN, HeaderValue::from_static("tok"));
        let upstream = HeaderValue::from_static("u");
        rewrite_request(
            &mut h,
            Some(TokenHeader::ActToken),
            &Vouch {
                agent: None,
                tenant: None,
                request_id: "r",
                peer: "[::1]:1".parse().unwrap(),
                upstream_host: &upstream,
                client_host: None,
            },
        );
        assert_eq!(h[AUTHORIZATION], "Basic dXNlcjpwYXNz");
        assert!(h.get(ACT_TOKEN).is_none());
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn ipv4_addresses_read_as_display_writes_them() {
        for ip in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [9, 10, 99, 100],
            [255, 255, 255, 255],
            [192, 0, 2, 7],
            [10, 200, 5, 50],
        ] {
            let ip = std::net::Ipv4Addr::from(ip);
            let mut s = String::new();
            push_ipv4(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }
}
