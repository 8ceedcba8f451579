//! The enforcing proxy, black-box: a real actgate between a real client and a recording
//! upstream. Every refusal asserts that the upstream received nothing; every forward asserts
//! exactly what it received.

mod common;

use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{KEY, TestGateway, raw, raw_status};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn extra(up: &Upstream) -> String {
    format!(
        r#"
limits: {{ maxBodyBytes: 4096, maxJsonDepth: 8 }}
upstreams:
  crm: {{ url: "{up}", timeout: 5s }}
  slow: {{ url: "{up}", timeout: 300ms }}
  down: {{ url: "http://127.0.0.1:1", timeout: 5s }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}", rows: {{ fixed: 1 }} }}
  - {{ name: export-customers, method: GET, path: /crm/export, upstream: crm, action: list, resource: "api://crm/customers" }}
  - {{ name: bulk-email, method: POST, path: /email/bulk, upstream: crm, action: send_email, resource: "api://email/outbound" }}
  - {{ name: list-customers, method: GET, path: /crm/customers, upstream: crm, action: list, resource: "api://crm/customers", rows: {{ query: limit }} }}
  - {{ name: update-customer, method: POST, path: "/crm/customers/{{id}}", upstream: crm, action: update, resource: "api://crm/customers/{{id}}" }}
  - {{ name: delete-customer, method: DELETE, path: "/crm/customers/{{id}}", upstream: crm, action: delete, resource: "api://crm/customers/{{id}}" }}
  - {{ name: send-email, method: POST, path: /email/send, upstream: crm, action: send_email, resource: "api://email/outbound", recipients: {{ json: [/to, /cc, /bcc] }} }}
  - {{ name: query-analytics, method: GET, path: "/analytics/{{dataset}}", upstream: crm, action: query, resource: "api://analytics/{{dataset}}", rows: {{ query: limit }} }}
  - {{ name: write-analytics, method: POST, path: "/analytics/{{dataset}}", upstream: crm, action: query, resource: "api://analytics/{{dataset}}" }}
  - {{ name: shadow, method: GET, path: "/shadow/{{id}}", upstream: crm, action: read, resource: "api://shadow/{{id}}", mode: monitor }}
  - {{ name: slow, method: GET, path: /slow, upstream: slow, action: read, resource: "api://test/slow" }}
  - {{ name: slow-ok, method: GET, path: /slow/ok, upstream: crm, action: read, resource: "api://test/slow" }}
  - {{ name: down, method: GET, path: /down, upstream: down, action: read, resource: "api://test/down" }}
  - {{ name: big, method: GET, path: /big, upstream: crm, action: read, resource: "api://test/big" }}
policies:
  - {{ name: read customers, actions: [read, list], resources: ["api://crm/customers", "api://crm/customers/*"], effect: allow, constraints: {{ maxRows: 100 }} }}
  - {{ name: update customers, actions: [update], resources: ["api://crm/customers/*"], effect: allow }}
  - {{ name: never delete, actions: [delete], resources: ["api://crm/**"], effect: deny }}
  - {{ name: email, actions: [send_email], resources: ["api://email/*"], effect: allow, constraints: {{ allowedDomains: ["@yourcompany.com"] }} }}
  - {{ name: analytics, actions: [query], resources: ["api://analytics/*"], effect: allow, constraints: {{ maxRows: 1000, readOnly: true }} }}
  - {{ name: test, actions: [read], resources: ["api://test/*"], effect: allow }}
"#,
        up = up.url()
    )
}

struct Setup {
    gw: TestGateway,
    up: Upstream,
    token: String,
    token_id: String,
    agent: String,
}

async fn setup() -> Setup {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&extra(&up)).await;
    let agent = gw.agent().await;
    let (token, token_id) = gw.token(&agent).await;
    Setup {
        gw,
        up,
        token,
        token_id,
        agent,
    }
}

impl Setup {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.gw
            .client
            .get(format!("{}{path}", self.gw.proxy))
            .bearer_auth(&self.token)
    }

    fn post_json(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        self.gw
            .client
            .post(format!("{}{path}", self.gw.proxy))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    fn proxy_addr(&self) -> String {
        self.gw.proxy.clone()
    }

    /// A raw HTTP/1.1 request with this setup's token.
    fn raw_get(&self, target: &str, extra_headers: &str) -> Vec<u8> {
        format!(
            "GET {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n{extra_headers}Connection: close\r\n\r\n",
            self.token
        )
        .into_bytes()
    }
}

async fn body(r: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn an_allowed_call_reaches_the_upstream_exactly_and_vouched_for() {
    let s = setup().await;
    let (status, headers, out) = body(
        s.get("/crm/customers/42")
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["path"], "/crm/customers/42");
    assert!(
        headers["x-act-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(
        headers.get("x-upstream-private").is_none(),
        "hop-by-hop named in Connection"
    );
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("GET", "/crm/customers/42")
    );
    assert_eq!(r.headers["x-act-agent-id"], s.agent.as_str());
    assert_eq!(r.headers["x-act-tenant-id"], "default-tenant");
    assert_eq!(r.headers["x-act-request-id"], headers["x-act-request-id"]);
    assert_eq!(r.headers["accept"], "application/json");
    assert!(
        r.headers.get("authorization").is_none(),
        "the token is stripped"
    );
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn denials_answer_with_a_reason_and_forward_nothing() {
    let s = setup().await;
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            s.gw.client
                .delete(format!("{}/crm/customers/1", s.gw.proxy))
                .bearer_auth(&s.token),
            StatusCode::FORBIDDEN,
            "explicit_deny",
        ),
        (
            s.gw.client.get(format!("{}/crm/customers/1", s.gw.proxy)),
            StatusCode::UNAUTHORIZED,
            "token_missing",
        ),
        (
            s.gw.client
                .get(format!("{}/crm/customers/1", s.gw.proxy))
                .bearer_auth("v4.public.forged"),
            StatusCode::UNAUTHORIZED,
            "token_invalid",
        ),
        (s.get("/crm/accounts/1"), StatusCode::NOT_FOUND, "no_route"),
        (
            s.get("/crm/customers/1/notes"),
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (s.get("/CRM/customers/1"), StatusCode::NOT_FOUND, "no_route"),
        (
            s.gw.client
                .put(format!("{}/crm/customers/1", s.gw.proxy))
                .bearer_auth(&s.token),
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            s.get("/crm/customers?limit=500"),
            StatusCode::FORBIDDEN,
            "constraint_violated",
        ),
        (
            s.post_json("/analytics/sales", "{}"),
            StatusCode::FORBIDDEN,
            "constraint_violated",
        ),
        // maxRows on a route that cannot say how many rows it returns.
        (
            s.get("/crm/export"),
            StatusCode::FORBIDDEN,
            "constraint_violated",
        ),
        // allowedDomains on a write route that declares no recipients.
        (
            s.post_json("/email/bulk", r#"{"to": "eve@evil.com"}"#),
            StatusCode::FORBIDDEN,
            "constraint_violated",
        ),
        // Method overrides in the query.
        (
            s.get("/crm/customers/1?_method=DELETE"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (req, status, reason) in cases {
        let (got, headers, out) = body(req.send().await.unwrap()).await;
        assert_eq!(
            (got, out["reason"].as_str().unwrap_or_default()),
            (status, reason),
            "{out}"
        );
        assert!(out["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(out["requestId"].as_str().unwrap().starts_with("req_"));
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
        }
        assert!(!out.to_string().contains(&s.token), "never the token");
    }
    let (_, _, out) = body(
        s.gw.client
            .delete(format!("{}/crm/customers/1", s.gw.proxy))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out["policyId"], "pol_never-delete");
    assert!(
        s.up.requests().is_empty(),
        "nothing was forwarded: {:?}",
        s.up.requests()
    );
}

#[tokio::test]
async fn max_rows_is_set_when_absent_and_checked_when_present() {
    let s = setup().await;
    let (status, _, _) = body(s.get("/crm/customers").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = body(
        s.get("/crm/customers?limit=50&sort=name")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = body(s.get("/crm/customers?sort=name").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let targets: Vec<String> = s.up.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        vec![
            "/crm/customers?limit=100",
            "/crm/customers?limit=50&sort=name",
            "/crm/customers?sort=name&limit=100"
        ]
    );
    s.up.clear();
    for bad in [
        "limit=1&limit=2",
        "limit=-1",
        "limit=ten",
        "limit=1.5",
        "LIMIT=5&limit=5",
        "limit[]=5",
        "limit=5;limit=500",
        "l%69mit=5&limit=6",
        "LIMIT=5",
        "l%69mit=5",
        "_method=DELETE",
    ] {
        let (status, _, out) = body(
            s.get(&format!("/crm/customers?{bad}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {out}");
    }
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn recipients_are_checked_wherever_they_hide() {
    let s = setup().await;
    let ok = r#"{"to": "alice@yourcompany.com", "cc": ["bob@YourCompany.com"], "subject": "hi"}"#;
    let (status, _, out) = body(s.post_json("/email/send", ok).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].body,
        ok.as_bytes(),
        "the evaluated body is forwarded byte for byte"
    );
    s.up.clear();
    let denied = [
        r#"{"to": "alice@yourcompany.com", "cc": ["eve@evil.com"]}"#,
        r#"{"to": "alice@yourcompany.com", "bcc": ["ok@yourcompany.com", "eve@evil.com"]}"#,
        r#"{"to": "Alice <alice@yourcompany.com>"}"#,
        r#"{"to": "eve@evil.com@yourcompany.com"}"#,
        r#"{"to": "alice@yourcompany.com.evil.com"}"#,
        r#"{"to": "alice@yourcompany.com, eve@evil.com"}"#,
        r#"{"subject": "no recipients at all"}"#,
        r#"{"to": []}"#,
    ];
    for b in denied {
        let (status, _, out) = body(s.post_json("/email/send", b).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{b}: {out}");
        assert_eq!(out["reason"], "constraint_violated");
    }
    let malformed = [
        r#"{"to": "alice@yourcompany.com", "to": "eve@evil.com"}"#,
        r#"{"to": "alice@yourcompany.com", "To": "eve@evil.com"}"#,
        r#"{"to": "alice@yourcompany.com", "BCC": ["eve@evil.com"]}"#,
        r#"{"to": {"address": "eve@evil.com"}}"#,
        r#"{"to": ["alice@yourcompany.com", 7]}"#,
        r#"{"a": [[[[[[[[[[1]]]]]]]]]], "to": "alice@yourcompany.com"}"#,
        r#"{"to": "alice@yourcompany.com"} trailing"#,
        "not json",
    ];
    for b in malformed {
        let (status, _, out) = body(s.post_json("/email/send", b).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{b}: {out}");
    }
    let (status, _, _) = body(
        s.gw.client
            .post(format!("{}/email/send", s.gw.proxy))
            .bearer_auth(&s.token)
            .header("content-type", "text/plain")
            .body(ok)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!(
        r#"{{"to": "alice@yourcompany.com", "pad": "{}"}}"#,
        "x".repeat(5000)
    );
    let (status, _, _) = body(s.post_json("/email/send", &big).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(s.up.requests().is_empty(), "{:?}", s.up.requests());
}

#[tokio::test]
async fn path_tricks_are_refused_before_anything_is_forwarded() {
    let s = setup().await;
    let targets = [
        "/crm/customers/../customers/1",
        "/crm/customers/./1",
        "/crm/customers/%2e%2e/1",
        "/crm/customers/%2E/1",
        "/crm/customers%2f1",
        "/crm/customers/1%2fnotes",
        "/crm/customers/1%5c..%5cadmin",
        "/crm/customers/1;jsessionid=x",
        "/crm/customers/1%3b",
        "/crm//customers/1",
        "//crm/customers/1",
        "/crm/customers/%252e%252e",
        "/crm/customers/1%00",
        "/crm/customers/%",
        "/crm/customers/*",
        "/crm/customers/%2A",
        "/crm/customers/4%3F",
        "/crm/customers/%7B1,2%7D",
        "/crm/customers/1%23frag",
        "/crm/customers/1\\..\\admin",
        "*",
    ];
    for t in targets {
        let answer = raw(&s.proxy_addr(), &s.raw_get(t, "")).await;
        let status = raw_status(&answer);
        assert_eq!(status, 400, "{t}: {answer}");
    }
    // Absolute-form targets must agree with Host.
    let answer = raw(
        &s.proxy_addr(),
        format!(
            "GET http://other.example/crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            s.token
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(s.up.requests().is_empty(), "{:?}", s.up.requests());
    // The same request in plain form is fine, and what was evaluated is what is forwarded.
    let answer = raw(&s.proxy_addr(), &s.raw_get("/crm/customers/caf%C3%A9", "")).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(s.up.requests()[0].target, "/crm/customers/caf%C3%A9");
}

#[tokio::test]
async fn header_games_do_not_change_what_is_decided_or_vouched() {
    let s = setup().await;
    // Method override: GET is decided and forwarded as GET; the override never arrives.
    let answer = raw(
        &s.proxy_addr(),
        &s.raw_get(
            "/crm/customers/1",
            "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nX-Original-URL: /admin\r\n",
        ),
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    // Spoofed identity and forwarding headers, and a Connection header naming ours.
    let answer = raw(
        &s.proxy_addr(),
        &s.raw_get(
            "/crm/customers/2",
            "X-Act-Agent-Id: agent_admin\r\nX-Act-Tenant-Id: other\r\nX-Act-Request-Id: spoof\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nConnection: X-Act-Agent-Id, X-Act-Tenant-Id\r\n",
        ),
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, "GET");
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
    ] {
        assert!(reqs[0].headers.get(h).is_none(), "{h} forwarded");
    }
    let r = &reqs[1];
    assert_eq!(r.headers["x-act-agent-id"], s.agent.as_str());
    assert_eq!(r.headers["x-act-tenant-id"], "default-tenant");
    assert_ne!(r.headers["x-act-request-id"], "spoof");
    assert_eq!(r.headers.get_all("x-act-agent-id").iter().count(), 1);
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        r.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"gw\""
    );
    assert!(r.headers.get("x-real-ip").is_none());
    s.up.clear();
    // Two tokens, in any combination, are refused.
    for extra in [
        format!("X-Act-Token: {}\r\n", s.token),
        format!("Authorization: Bearer {}\r\n", s.token),
    ] {
        let answer = raw(&s.proxy_addr(), &s.raw_get("/crm/customers/1", &extra)).await;
        assert_eq!(raw_status(&answer), 400, "{answer}");
    }
    // X-Act-Token alone works and leaves a non-Bearer Authorization for the upstream.
    let answer = raw(
        &s.proxy_addr(),
        format!(
            "GET /crm/customers/3 HTTP/1.1\r\nHost: gw\r\nX-Act-Token: {}\r\nAuthorization: Basic dXNlcjpwYXNz\r\nConnection: close\r\n\r\n",
            s.token
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].headers.get("x-act-token").is_none());
    assert_eq!(reqs[0].headers["authorization"], "Basic dXNlcjpwYXNz");
}

#[tokio::test]
async fn request_smuggling_framings_never_reach_the_upstream_as_two_requests() {
    let s = setup().await;
    let smuggle = format!(
        "POST /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nDELETE /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n",
        t = s.token
    );
    let answer = raw(&s.proxy_addr(), smuggle.as_bytes()).await;
    let first = raw_status(&answer);
    assert!(first == 400 || first == 200 || first == 403, "{answer}");
    let reqs = s.up.requests();
    assert!(
        reqs.iter().all(|r| r.method != "DELETE"),
        "smuggled DELETE reached the upstream: {reqs:?}"
    );
    assert!(reqs.len() <= 1, "{reqs:?}");
    s.up.clear();
    // Duplicate Content-Length.
    let dup = format!(
        "POST /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nContent-Length: 2\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{{}}",
        s.token
    );
    assert_eq!(raw_status(&raw(&s.proxy_addr(), dup.as_bytes()).await), 400);
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn a_chunked_body_crossing_the_limit_mid_stream_is_never_delivered() {
    let s = setup().await;
    let chunk = "x".repeat(1000);
    let mut req = format!(
        "POST /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.token
    );
    for _ in 0..8 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    let answer = raw(&s.proxy_addr(), req.as_bytes()).await;
    let status = raw_status(&answer);
    assert!(status == 413 || status == 502, "{answer}");
    assert!(
        s.up.requests().is_empty(),
        "a truncated body was delivered as complete"
    );
    // With Content-Length over the limit, refused before reading.
    let answer = raw(
        &s.proxy_addr(),
        format!(
            "POST /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
            s.token
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    // Under the limit, streamed through intact.
    let (status, _, _) = body(
        s.post_json("/crm/customers/1", &format!("\"{}\"", "y".repeat(3000)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.up.requests()[0].body.len(), 3002);
}

#[tokio::test]
async fn revocation_through_the_api_is_refused_by_the_proxy_on_the_next_request() {
    let s = setup().await;
    assert_eq!(
        s.get("/crm/customers/1").send().await.unwrap().status(),
        StatusCode::OK
    );
    let (status, _) =
        s.gw.delete(&format!("/v1/tokens/{}", s.token_id), KEY)
            .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, out) = body(s.get("/crm/customers/1").send().await.unwrap()).await;
    assert_eq!(
        (status, out["reason"].clone()),
        (StatusCode::UNAUTHORIZED, json!("token_revoked"))
    );
    assert_eq!(s.up.requests().len(), 1);
}

#[tokio::test]
async fn upstream_failures_are_502_fast_and_504_at_the_timeout() {
    let s = setup().await;
    let started = Instant::now();
    let (status, _, out) = body(s.get("/down").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "502 took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let (status, _, out) = body(s.get("/slow").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{out}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(900),
        "504 after {took:?}"
    );
    assert_eq!(out["reason"], "upstream_timeout");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_large_response_streams_through_with_bounded_memory() {
    let s = setup().await;
    let before = peak_rss_kib();
    let mut resp = s.get("/big?mb=256").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut total = 0usize;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, 256 << 20);
    let grew = peak_rss_kib().saturating_sub(before);
    // Upstream, proxy and client share this process; buffering the body anywhere would add
    // at least 256 MiB.
    assert!(
        grew < 64 * 1024,
        "peak RSS grew by {grew} KiB while streaming 256 MiB"
    );
}

#[tokio::test]
async fn monitor_mode_forwards_would_be_denials_and_audits_them() {
    let s = setup().await;
    let (status, _, _) = body(s.get("/shadow/1").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.up.requests().len(), 1);
    let events = s.gw.audit_events(1).await;
    let e = events.iter().find(|e| e["route"] == "shadow").unwrap();
    assert_eq!(e["decision"], "denied");
    assert_eq!(e["enforced"], false);
    assert_eq!(e["reason"], "no_matching_policy");
}

#[tokio::test]
async fn every_proxied_decision_is_audited_with_route_method_status_and_latency() {
    let s = setup().await;
    s.get("/crm/customers/7").send().await.unwrap();
    s.gw.client
        .delete(format!("{}/crm/customers/7", s.gw.proxy))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    let mut events = Vec::new();
    for _ in 0..200 {
        events = s.gw.audit_events(2).await;
        if events.iter().any(|e| e["upstreamStatus"] == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let allowed = events.iter().find(|e| e["decision"] == "allowed").unwrap();
    assert_eq!(allowed["source"], "proxy");
    assert_eq!(allowed["route"], "get-customer");
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["resource"], "api://crm/customers/7");
    assert_eq!(allowed["upstreamStatus"], 200);
    assert!(allowed["latencyUs"].as_u64().is_some());
    assert!(allowed["requestId"].as_str().unwrap().starts_with("req_"));
    assert_eq!(allowed["tokenId"], s.token_id.as_str());
    let denied = events.iter().find(|e| e["decision"] == "denied").unwrap();
    assert_eq!(denied["reason"], "explicit_deny");
    assert_eq!(denied["method"], "DELETE");
    assert!(denied.get("upstreamStatus").is_none());
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_in_flight_request() {
    let s = setup().await;
    let req = s.get("/slow/ok").send();
    let pending = tokio::spawn(req);
    // Let the request reach the upstream (which holds it for 1 s), then shut down.
    for _ in 0..200 {
        if !s.up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.up.requests().len(), 1);
    let Setup { gw, .. } = s;
    let stopping = tokio::spawn(gw.stop());
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = resp.text().await.unwrap();
    stopping.await.unwrap();
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let s = setup().await;
    let stream = tokio::net::TcpStream::connect(s.proxy_addr().trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (path, want) in [("/crm/customers/5", 200), ("/crm/customers/%2e%2e", 400)] {
        let req = http::Request::get(format!("http://gw{path}"))
            .header("authorization", format!("Bearer {}", s.token))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path}");
        resp.into_body().collect().await.unwrap();
    }
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].target, "/crm/customers/5");
    assert_eq!(reqs[0].headers["x-act-agent-id"], s.agent.as_str());
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_refused_before_its_body_is_read() {
    let s = setup().await;
    // The body is announced but never sent: answering means it was not waited for.
    let started = Instant::now();
    let answer = raw(
        &s.proxy_addr(),
        b"POST /email/send HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"to\": ",
    )
    .await;
    assert_eq!(raw_status(&answer), 401, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A GET with a body is refused: some servers would read it.
    let answer = raw(
        &s.proxy_addr(),
        format!(
            "GET /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            s.token
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn monitor_mode_never_vouches_for_an_identity_the_token_stage_refused() {
    let s = setup().await;
    let (status, _, _) = body(
        s.gw.client
            .get(format!("{}/shadow/1", s.gw.proxy))
            .bearer_auth("v4.public.forged")
            .header("x-act-agent-id", "agent_spoofed")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].headers.get("x-act-agent-id").is_none());
    assert!(reqs[0].headers.get("authorization").is_none());
}
