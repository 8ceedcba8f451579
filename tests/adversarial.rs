//! Attack it before users do: one test per bypass class seen in the advisories of Envoy,
//! Traefik, Ory Oathkeeper, opa-envoy-plugin, nginx, Apache httpd and Spring, plus token
//! confusion, resource exhaustion and fail-closed paths. Every request test asserts what the
//! upstream received: nothing, or exactly the evaluated request.

mod common;

use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{TestGateway, raw, raw_status};
use serde_json::json;

/// The route set: a read that is allowed, an admin area that is denied, a row-limited list,
/// an update (POST, no recipients), an e-mail route with recipients.
fn extra(up: &Upstream, limits: &str) -> String {
    let header_read = if limits.contains("headerReadTimeout") {
        ""
    } else {
        "headerReadTimeout: 1s, "
    };
    format!(
        r#"
limits: {{ maxBodyBytes: 4096, maxHeaders: 40, maxHeaderBytes: 8192, {header_read}maxJsonDepth: 8{limits} }}
upstreams: {{ api: {{ url: "{up}", timeout: 5s }} }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: api, action: read, resource: "api://crm/customers/{{id}}", rows: {{ fixed: 1 }} }}
  - {{ name: list-customers, method: GET, path: /crm/customers, upstream: api, action: list, resource: "api://crm/customers", rows: {{ query: limit }} }}
  - {{ name: admin, method: GET, path: "/admin/{{page}}", upstream: api, action: read, resource: "api://admin/{{page}}" }}
  - {{ name: admin-root, method: GET, path: /admin, upstream: api, action: read, resource: "api://admin" }}
  - {{ name: update-customer, method: POST, path: "/crm/customers/{{id}}", upstream: api, action: update, resource: "api://crm/customers/{{id}}" }}
  - {{ name: send-email, method: POST, path: /email/send, upstream: api, action: send_email, resource: "api://email/outbound", recipients: {{ json: [/to, /cc, /bcc] }} }}
policies:
  - {{ name: read customers, actions: [read, list], resources: ["api://crm/customers", "api://crm/customers/*"], effect: allow, constraints: {{ maxRows: 50 }} }}
  - {{ name: update customers, actions: [update], resources: ["api://crm/customers/*"], effect: allow }}
  - {{ name: no admin, actions: ["*"], resources: ["api://admin", "api://admin/**"], effect: deny }}
  - {{ name: mail, actions: [send_email], resources: ["api://email/*"], effect: allow, constraints: {{ allowedDomains: ["@corp.example"] }} }}
"#,
        up = up.url()
    )
}

struct S {
    gw: TestGateway,
    up: Upstream,
    token: String,
}

async fn setup_with(limits: &str) -> S {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&extra(&up, limits)).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    S { gw, up, token }
}

async fn setup() -> S {
    setup_with("").await
}

impl S {
    fn addr(&self) -> String {
        self.gw.proxy.clone()
    }

    async fn get(&self, target: &str, headers: &str) -> u16 {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n{headers}Connection: close\r\n\r\n",
            self.token
        );
        raw_status(&raw(&self.addr(), req.as_bytes()).await)
    }

    /// Asserts every target is refused with 400/403/404 and that nothing reached the upstream.
    async fn refused(&self, targets: &[&str], what: &str) {
        for t in targets {
            let status = self.get(t, "").await;
            assert!(
                matches!(status, 400 | 403 | 404),
                "{what}: {t:?} answered {status}"
            );
        }
        assert!(
            self.up.requests().is_empty(),
            "{what}: forwarded {:?}",
            self.up
                .requests()
                .iter()
                .map(|r| &r.target)
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn dot_segments_raw_encoded_and_double_encoded_never_reach_admin() {
    // Envoy CVE-2019-9901, Apache CVE-2021-41773 / CVE-2021-42013, Oathkeeper path matching.
    let s = setup().await;
    s.refused(
        &[
            "/crm/customers/../../admin/x",
            "/crm/customers/%2e%2e/%2e%2e/admin/x",
            "/crm/customers/.%2e/.%2e/admin/x",
            "/crm/customers/%2e./admin",
            "/crm/customers/%%32%65%%32%65/admin",
            "/crm/customers/%252e%252e/admin",
            "/crm/customers/..%2fadmin",
            "/crm/customers/..%5cadmin",
            "/crm/customers/..\\admin",
            "/crm/customers/%c0%ae%c0%ae/admin",
            "/crm/customers/./x",
        ],
        "dot segments",
    )
    .await;
}

#[tokio::test]
async fn encoded_slashes_and_separators_are_refused() {
    // Envoy CVE-2021-29492 (%2F), opa-envoy-plugin parsed_path with %2F, Traefik encoded paths.
    let s = setup().await;
    s.refused(
        &[
            "/crm/customers/1%2f..%2f..%2fadmin",
            "/crm%2Fcustomers/1",
            "/admin%2f..%2fcrm/customers/1",
            "/crm/customers/1%5C",
            "/crm/customers/1%3Badmin",
            "/crm/customers/1%23/admin",
            "/crm/customers/1%3Fx=1",
        ],
        "encoded separators",
    )
    .await;
}

#[tokio::test]
async fn matrix_parameters_fragments_and_merged_slashes_are_refused() {
    // Spring/Tomcat `;jsessionid`, Traefik CVE-2023-47106 (fragment), nginx merge_slashes.
    let s = setup().await;
    s.refused(
        &[
            "/admin;/x",
            "/crm/customers/1;admin",
            "/crm/customers;/1",
            "//admin/x",
            "/crm//customers/1",
            "/crm/customers//1",
        ],
        "matrix parameters, fragments, empty segments",
    )
    .await;
}

#[tokio::test]
async fn a_fragment_is_dropped_before_evaluation_and_never_forwarded() {
    // Traefik CVE-2023-47106: the router read the path with the fragment, the backend without.
    // Here the HTTP parser drops a fragment before anything reads the target, so what is
    // evaluated and forwarded is the path without it — never the part after `#`.
    let s = setup().await;
    assert_eq!(s.get("/crm/customers/1#/admin", "").await, 200);
    assert_eq!(s.get("/admin#/crm/customers/1", "").await, 403);
    let targets: Vec<String> = s.up.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, vec!["/crm/customers/1"]);
}

#[tokio::test]
async fn case_trailing_slashes_and_suffixes_do_not_find_other_routes() {
    // Spring CVE-2016-5007 (trailing slash), suffix patterns (`/admin.json`), case-insensitive
    // matching. Unknown shapes are 404 and forwarded nowhere; known ones decide as themselves.
    let s = setup().await;
    for t in [
        "/ADMIN/x",
        "/Admin",
        "/admin.json",
        "/crm/CUSTOMERS/1",
        "/crm/customers/1/",
    ] {
        let status = s.get(t, "").await;
        assert_eq!(status, 404, "{t}");
    }
    for t in ["/admin", "/admin/x"] {
        assert_eq!(s.get(t, "").await, 403, "{t}");
    }
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn wildcards_and_control_characters_in_parameters_are_refused() {
    // A `*` in a path parameter that an upstream reads as "all"; CR/LF and NUL injection
    // (nginx CVE-2013-4547, Spring CVE-2022-22978 with %0a).
    let s = setup().await;
    s.refused(
        &[
            "/crm/customers/*",
            "/crm/customers/%2A",
            "/crm/customers/1%0a",
            "/crm/customers/1%0d%0aX-Act-Agent-Id:%20admin",
            "/crm/customers/1%00.json",
            "/crm/customers/%7B1%2C2%7D",
            "/crm/customers/%5B0-9%5D",
        ],
        "wildcards and control characters",
    )
    .await;
}

#[tokio::test]
async fn absolute_form_and_host_confusion_are_refused() {
    let s = setup().await;
    for req in [
        "GET http://evil.example/crm/customers/1 HTTP/1.1\r\nHost: gw\r\n",
        "GET http://gw/admin/x HTTP/1.1\r\nHost: gw\r\n",
        "GET /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nHost: evil\r\n",
        "GET * HTTP/1.1\r\nHost: gw\r\n",
        "GET /crm/customers/1 HTTP/1.1\r\n",
    ] {
        let full = format!(
            "{req}Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            s.token
        );
        let status = raw_status(&raw(&s.addr(), full.as_bytes()).await);
        assert!(matches!(status, 400 | 403), "{req:?} answered {status}");
    }
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn smuggling_framings_are_refused_or_read_once() {
    let s = setup().await;
    let t = &s.token;
    let cases = [
        // CL.TE and TE.CL with a second request hidden in the body.
        format!(
            "POST /email/send HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: gw\r\n\r\n"
        ),
        format!(
            "POST /email/send HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 4\r\n\r\n5c\r\nGET /admin/x HTTP/1.1\r\n\r\n0\r\n\r\n"
        ),
        // Obfuscated Transfer-Encoding values.
        format!(
            "POST /email/send HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nabcd"
        ),
        format!(
            "POST /email/send HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\nabcd"
        ),
        // Content-Length games.
        format!(
            "POST /email/send HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nContent-Length: +4\r\n\r\nabcd"
        ),
        format!(
            "POST /email/send HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nContent-Length: 4, 4\r\n\r\nabcd"
        ),
        format!(
            "POST /email/send HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\nabcd"
        ),
        // Obsolete line folding hiding a header.
        format!(
            "GET /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nX-Foo: a\r\n X-HTTP-Method-Override: DELETE\r\n\r\n"
        ),
    ];
    for req in &cases {
        let answer = raw(&s.addr(), req.as_bytes()).await;
        let status = raw_status(&answer);
        assert!(
            matches!(status, 0 | 400 | 403 | 413 | 415),
            "answered {status} to {req:?}"
        );
    }
    let targets: Vec<String> = s.up.requests().into_iter().map(|r| r.target).collect();
    assert!(
        targets.iter().all(|t| !t.starts_with("/admin")),
        "{targets:?}"
    );
    assert!(targets.is_empty(), "{targets:?}");
}

#[tokio::test]
async fn hop_by_hop_games_cannot_strip_or_spoof_identity() {
    // Traefik CVE-2024-45410 (Connection-named X-Forwarded-* removal), Envoy CVE-2023-27487
    // (spoofed internal headers).
    let s = setup().await;
    let status = s
        .get(
            "/crm/customers/1",
            "Connection: keep-alive, X-Act-Agent-Id, X-Forwarded-For, Authorization\r\nX-Act-Agent-Id: agent_root\r\nX_Act_Agent_Id: agent_root\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: admin.internal\r\nX-Envoy-Original-Path: /admin/x\r\nX-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nX-HTTP-Method-Override: DELETE\r\n",
        )
        .await;
    assert_eq!(status, 200);
    let reqs = s.up.requests();
    assert_eq!(reqs.len(), 1);
    let h = &reqs[0].headers;
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, "/crm/customers/1");
    assert_ne!(h["x-act-agent-id"], "agent_root");
    assert!(h["x-act-agent-id"].to_str().unwrap().starts_with("agent_"));
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    for gone in [
        "x_act_agent_id",
        "x-forwarded-host",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} forwarded");
    }
}

#[tokio::test]
async fn duplicated_and_disguised_query_parameters_are_refused() {
    let s = setup().await;
    s.refused(
        &[
            "/crm/customers?limit=10&limit=1000",
            "/crm/customers?limit=10;limit=1000",
            "/crm/customers?LIMIT=1000",
            "/crm/customers?l%69mit=1000",
            "/crm/customers?limit[]=1000",
            "/crm/customers?limit=1e3",
            "/crm/customers?limit=0x100",
            "/crm/customers?limit=-1",
            "/crm/customers?limit=1000",
            "/crm/customers/1?_method=DELETE",
            "/crm/customers/1?.method=DELETE",
        ],
        "query parameters",
    )
    .await;
    // The plain form is forwarded exactly.
    assert_eq!(s.get("/crm/customers?limit=10", "").await, 200);
    assert_eq!(s.up.requests()[0].target, "/crm/customers?limit=10");
}

#[tokio::test]
async fn method_overrides_in_post_bodies_are_refused() {
    // Spring's HiddenHttpMethodFilter and Symfony read `_method` from a form POST, Rack from
    // an untyped POST body, Laravel from JSON input: a POST the gateway allowed as an update
    // would run as a DELETE.
    let s = setup().await;
    let post = |ct: Option<&str>, body: &str| {
        let mut r =
            s.gw.client
                .post(format!("{}/crm/customers/7", s.gw.proxy))
                .bearer_auth(&s.token)
                .body(body.to_string());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let form = Some("application/x-www-form-urlencoded");
    let refused = [
        (form, "name=x&_method=DELETE"),
        (form, "name=x;_method=DELETE"),
        (form, "%5Fmethod=DELETE"),
        (form, "_METHOD=DELETE"),
        (form, "_method[]=DELETE"),
        (form, "_m%zzethod=DELETE"),
        (None, "_method=DELETE"),
        (
            Some("application/json"),
            r#"{"name": "x", "_method": "DELETE"}"#,
        ),
        (
            Some("application/json"),
            r#"{"name": "x", "\u005fmethod": "DELETE"}"#,
        ),
        (Some("application/vnd.api+json"), r#"{"_Method": "DELETE"}"#),
        (Some("application/json"), r#"{"name": "x", "name": "y"}"#),
        (
            Some("multipart/form-data; boundary=b"),
            "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        ),
        (
            Some("multipart/form-data; boundary=b"),
            "--b\r\nContent-Disposition: form-data; name*=UTF-8''%5Fmethod\r\n\r\nDELETE\r\n--b--\r\n",
        ),
        (
            Some("multipart/form-data; boundary=b"),
            "--b\r\nContent-Disposition: form-data; name=\"=?UTF-8?B?X21ldGhvZA==?=\"\r\n\r\nDELETE\r\n--b--\r\n",
        ),
        (
            Some("application/x-www-form-urlencoded; charset=utf-16le"),
            "_\0m\0e\0t\0h\0o\0d\0=\0D\0",
        ),
        // Media types cut at `,` or a space (Rack, PHP), multipart without a boundary (Rack
        // reads it as a form), `/json` anywhere in the header (Laravel), PHP's name mangling.
        (Some("application/x-www-form-urlencoded,"), "_method=DELETE"),
        (
            Some("application/x-www-form-urlencoded x"),
            "_method=DELETE",
        ),
        (Some("multipart/mixed"), "%5Fmethod=DELETE"),
        (Some("text/plain; x=/json"), r#"{"_method": "DELETE"}"#),
        (Some("application/json-patch"), r#"{"_method": "DELETE"}"#),
        (form, ".method=DELETE"),
        (form, "[method=DELETE"),
        (
            Some("multipart/form-data; boundary=b"),
            "--b\r\nContent-Disposition: form-data; name=\".method\"\r\n\r\nDELETE\r\n--b--\r\n",
        ),
    ];
    for (ct, body) in refused {
        let r = post(ct, body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{ct:?} {body}");
    }
    let r =
        s.gw.client
            .post(format!("{}/crm/customers/7", s.gw.proxy))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400, "two Content-Types");
    assert!(s.up.requests().is_empty(), "{:?}", s.up.requests());
    // Plain bodies pass, byte for byte; a body of another type is not read.
    let passed = [
        (form, "name=x&method=DELETE"),
        (
            Some("application/json"),
            r#"{"name": "x", "nested": {"_method": "DELETE"}}"#,
        ),
        (Some("application/octet-stream"), "_method=DELETE"),
    ];
    for (ct, body) in passed {
        let r = post(ct, body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{ct:?} {body}");
    }
    let got = s.up.requests();
    assert_eq!(got.len(), passed.len());
    for (req, (_, body)) in got.iter().zip(passed) {
        assert_eq!(req.method, "POST");
        assert_eq!(req.body, body.as_bytes());
    }
}

#[tokio::test]
async fn json_parser_differentials_are_refused() {
    let s = setup().await;
    let bodies = [
        r#"{"to": "a@corp.example", "to": "x@evil.example"}"#,
        r#"{"to": "a@corp.example", "TO": "x@evil.example"}"#,
        r#"{"to": "a@corp.example", "t\u006f": "x@evil.example"}"#,
        r#"{"to": "a@corp.example", "cc": ["b@corp.example"], "cC": "x@evil.example"}"#,
        "\u{feff}{\"to\": \"a@corp.example\"}",
        r#"{"to": "a@corp.example",}"#,
        r#"{"to": "a@corp.example" /* x@evil.example */}"#,
        r#"{"to": "a@corp.example", "n": NaN}"#,
        r#"{"to": "a@corp.example"}{"to": "x@evil.example"}"#,
        r#"{"to": "a@corp.example\ud800"}"#,
        r#"{"to": {"$ref": "x@evil.example"}}"#,
    ];
    for b in bodies {
        let r =
            s.gw.client
                .post(format!("{}/email/send", s.gw.proxy))
                .bearer_auth(&s.token)
                .header("content-type", "application/json")
                .body(b.to_string())
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 400, "{b}");
    }
    assert!(s.up.requests().is_empty());
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn token_confusion_is_refused() {
    let s = setup().await;
    let parts: Vec<&str> = s.token.split('.').collect();
    assert_eq!(parts.len(), 4);
    let body = unb64(parts[2]);
    let (msg, sig) = body.split_at(body.len() - 64);
    // A non-canonical signature: S + L (the group order) verifies in lax implementations.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut s_plus_l = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = sig[32 + i] as u16 + L[i] as u16 + carry;
        s_plus_l[i] = v as u8;
        carry = v >> 8;
    }
    let mut malleated = msg.to_vec();
    malleated.extend_from_slice(&sig[..32]);
    malleated.extend_from_slice(&s_plus_l);
    let footer = parts[3];
    let unknown_kid = b64(br#"{"kid":"k0000000000000000"}"#);
    let traversal_kid = b64(br#"{"kid":"../../../../etc/passwd"}"#);
    let extra_claims = {
        let mut m: serde_json::Value = serde_json::from_slice(msg).unwrap();
        m["sub"] = json!("agent_root");
        m.to_string().into_bytes()
    };
    let mut forged_claims = extra_claims.clone();
    forged_claims.extend_from_slice(sig);
    let tokens = vec![
        format!("v4.public.{}.{footer}", b64(&malleated)),
        format!("v4.public.{}.{unknown_kid}", parts[2]),
        format!("v4.public.{}.{traversal_kid}", parts[2]),
        format!("v4.public.{}", parts[2]),
        format!("v4.public.{}.{footer}", b64(&forged_claims)),
        format!("v4.local.{}.{footer}", parts[2]),
        format!("v3.public.{}.{footer}", parts[2]),
        format!("V4.PUBLIC.{}.{footer}", parts[2]),
        format!("v4.public.{}.{footer}.extra", parts[2]),
        format!("v4.public.{}=.{footer}", parts[2]),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZ2VudF9yb290In0.".to_string(),
        String::new(),
    ];
    // The token copied into another header or the query string is refused: it would be
    // forwarded, or logged by the upstream.
    let copied = [
        format!("X-Debug: {}\r\n", s.token),
        format!("Authorizaton: Bearer {}\r\n", s.token),
        format!("Cookie: session={}\r\n", s.token),
    ];
    for h in &copied {
        assert_eq!(s.get("/crm/customers/1", h).await, 400, "{h:.30}");
    }
    assert_eq!(
        s.get(&format!("/crm/customers/1?t={}", s.token), "").await,
        400
    );
    for t in &tokens {
        let status = s
            .get("/crm/customers/1", &format!("X-Act-Token: {t}\r\n"))
            .await;
        assert!(matches!(status, 400 | 401), "{t:.60} answered {status}");
    }
    assert!(s.up.requests().is_empty());
    // The untouched token still works.
    assert_eq!(s.get("/crm/customers/1", "").await, 200);
}

#[tokio::test]
async fn exhaustion_slowloris_is_cut_off_and_valid_traffic_flows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let addr = s.addr().trim_start_matches("http://").to_string();
    // Ten clients sending a header byte per 300 ms: the 1 s header-read timeout closes them.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let addr = addr.clone();
        slow.push(tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let started = Instant::now();
            for b in b"GET /crm/customers/1 HTTP/1.1\r\nHost: gw\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if c.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
            started.elapsed()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.get("/crm/customers/1", "").await,
        200,
        "valid traffic during the slowloris"
    );
    for h in slow {
        let held = h.await.unwrap();
        assert!(
            held < Duration::from_secs(6),
            "a slow client was held {held:?}"
        );
    }
}

#[tokio::test]
async fn exhaustion_idle_connections_are_bounded_and_valid_traffic_flows() {
    // A header-read timeout long enough that none of the 300 is closed before the last one
    // is open, even on a loaded machine.
    let s = setup_with(", maxConnections: 300, headerReadTimeout: 4s").await;
    let addr = s.addr().trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The kernel completes a handshake before the gateway accepts it, and several workers
    // accept at once: wait until all 300 hold a slot, or the next one could take a slot first.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = s.gw.metrics().await;
        if metrics.contains("actgate_connections_open{listener=\"proxy\"} 300") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "300 connections never all accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Over the limit: new connections are closed at once and counted.
    let answer = raw(
        &s.addr(),
        b"GET /crm/customers/1 HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 0, "refused while at the limit");
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains("actgate_connections_rejected_total{listener=\"proxy\"} 1"),
        "counted"
    );
    // Idle connections are closed by the header-read timeout; then valid traffic flows.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(s.get("/crm/customers/1", "").await, 200);
    drop(idle);
}

#[tokio::test]
async fn exhaustion_oversized_inputs_are_refused() {
    let s = setup().await;
    let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert!(matches!(
        s.get("/crm/customers/1", &many).await,
        431 | 400 | 0
    ));
    let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
    assert!(matches!(
        s.get("/crm/customers/1", &big).await,
        431 | 400 | 0
    ));
    let long_uri = format!("/crm/customers/{}", "1".repeat(20_000));
    assert!(matches!(
        s.get(&long_uri, "").await,
        414 | 431 | 400 | 404 | 0
    ));
    let r =
        s.gw.client
            .post(format!("{}/email/send", s.gw.proxy))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"to": "a@corp.example", "pad": "{}"}}"#,
                "x".repeat(10_000)
            ))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 413);
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn exhaustion_h2_rapid_reset_and_continuation_floods_leave_the_gateway_serving() {
    use tokio::io::AsyncWriteExt;
    let s = setup().await;
    let addr = s.addr().trim_start_matches("http://").to_string();
    // Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, over and over, on one connection.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
    // A minimal HPACK block: :method GET (0x82), :scheme http (0x86), :path / (0x84),
    // :authority literal without indexing "gw".
    let block: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x02, b'g', b'w'];
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        let len = block.len() as u32;
        frames.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 1, 0x4]);
        frames.extend_from_slice(&id.to_be_bytes());
        frames.extend_from_slice(block);
        frames.extend_from_slice(&[0, 0, 4, 3, 0]);
        frames.extend_from_slice(&id.to_be_bytes());
        frames.extend_from_slice(&8u32.to_be_bytes()); // CANCEL
    }
    let _ = c.write_all(&frames).await;
    drop(c);
    // CONTINUATION flood (CVE-2024-27316 class): a HEADERS without END_HEADERS, then endless
    // CONTINUATION frames.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let len = block.len() as u32;
    frames.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 1, 0x0]);
    frames.extend_from_slice(&1u32.to_be_bytes());
    frames.extend_from_slice(block);
    let filler = vec![0x40u8, 0x05, b'x', b'-', b'p', b'a', b'd', 0x7f, 0x7f];
    let mut filler_frame = vec![0, 0, filler.len() as u8, 9, 0, 0, 0, 0, 1];
    filler_frame.extend_from_slice(&filler);
    for _ in 0..20_000 {
        frames.extend_from_slice(&filler_frame);
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), c.write_all(&frames)).await;
    drop(c);
    // Still serving, and nothing reached the upstream from either flood.
    assert_eq!(s.get("/crm/customers/1", "").await, 200);
    assert_eq!(s.up.requests().len(), 1);
}

#[tokio::test]
async fn exhaustion_forged_tokens_never_take_cache_slots() {
    let s = setup().await;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let client = s.gw.client.clone();
        let url = format!("{}/crm/customers/1", s.gw.proxy);
        let token = s.token.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                // The real footer (key id) with a tampered payload: each costs a verification.
                let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
                parts[2] = format!("{}{:08}", &parts[2][..parts[2].len() - 8], w * 1000 + i);
                let forged = parts.join(".");
                let r = client.get(&url).bearer_auth(&forged).send().await.unwrap();
                assert_eq!(r.status(), 401);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains("actgate_token_cache_entries 0"),
        "forged tokens cached"
    );
    assert!(metrics.contains("actgate_token_rejections_total{reason=\"token_invalid\"} 1000"));
    assert_eq!(s.get("/crm/customers/1", "").await, 200);
    assert_eq!(s.up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_valid_traffic_is_served_during_a_forged_token_flood() {
    // Sixteen clients send distinct forged tokens (real key id, so each costs a signature
    // check) without pause; meanwhile a client with a valid, cached token must be served.
    let s = setup().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = Vec::new();
    for w in 0..16 {
        let (client, token) = (s.gw.client.clone(), s.token.clone());
        let url = format!("{}/crm/customers/1", s.gw.proxy);
        let (stop, refused) = (stop.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
                parts[2] = format!(
                    "{}{:08}",
                    &parts[2][..parts[2].len() - 8],
                    w * 1_000_000 + i
                );
                let r = client
                    .get(&url)
                    .bearer_auth(parts.join("."))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401);
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    while refused.load(std::sync::atomic::Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = refused.load(std::sync::atomic::Ordering::Relaxed);
    let valid = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..50 {
            assert_eq!(s.get("/crm/customers/1", "").await, 200);
        }
    })
    .await;
    let during = refused.load(std::sync::atomic::Ordering::Relaxed) - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in flood {
        t.await.unwrap();
    }
    assert!(valid.is_ok(), "valid traffic starved by the flood");
    assert!(
        during > 0,
        "the flood was not running while valid traffic was served"
    );
    assert_eq!(s.up.requests().len(), 50);
}

#[tokio::test]
async fn fail_closed_when_the_audit_disk_is_full_in_strict_mode() {
    // A real full disk: the data directory on a 1 MiB tmpfs, in a private mount namespace.
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("actgate.yaml");
    std::fs::write(
        &config,
        common::config_yaml(
            &data,
            &format!(
                "audit: {{ durability: strict, segmentMaxBytes: 1048576 }}\nupstreams: {{ api: {{ url: \"{}\" }} }}\nroutes:\n  - {{ name: r, method: GET, path: \"/x/{{id}}\", upstream: api, action: read, resource: \"api://x/{{id}}\" }}\npolicies:\n  - {{ name: p, actions: [read], resources: [\"api://x/*\"], effect: allow }}\n",
                up.url()
            ),
        ),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {data} && exec {bin} serve --log-format json --config {config}",
        data = data.display(),
        bin = env!("CARGO_BIN_EXE_actgate"),
        config = config.display()
    );
    let mut child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("ACTGATE_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux) runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    let listening = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no start: {seen:#?}"));
        seen.push(l.clone());
        if l.contains("actgate listening") {
            break serde_json::from_str::<serde_json::Value>(&l).unwrap();
        }
    };
    let api = format!("http://{}", listening["api"].as_str().unwrap());
    let proxy = format!("http://{}", listening["proxy"].as_str().unwrap());
    let client = reqwest::Client::new();
    let (agent, token) = common::agent_and_token(&api).await;
    // Fill the disk with requests until records no longer fit: from then on, every request
    // is refused (503) and none is forwarded.
    let mut refused = 0;
    let mut forwarded_before = 0;
    for i in 0..20_000 {
        let r = client
            .get(format!("{proxy}/x/{i}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => forwarded_before = up.requests().len(),
            503 => {
                refused += 1;
                if refused >= 20 {
                    break;
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused >= 20, "the disk never filled");
    assert_eq!(
        up.requests().len(),
        forwarded_before,
        "a request was forwarded without its record"
    );
    let metrics = common::metrics_at(listening["admin"].as_str().unwrap()).await;
    let failures: u64 = metrics
        .lines()
        .find(|l| l.starts_with("actgate_audit_failures_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(failures >= 20, "{failures}");
    // The store sits on the same full disk: a write through the API fails visibly (500,
    // counted, logged) and hands out nothing — no token, no agent.
    for (path, body) in [
        ("/v1/tokens", json!({ "agentId": agent })),
        ("/v1/agents", json!({ "name": "one more" })),
    ] {
        let r = client
            .post(format!("{api}{path}"))
            .header("X-Api-Key", common::KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 500, "{path}: {text}");
        assert!(
            !text.contains("v4.public.") && !text.contains("\"id\""),
            "{path}: {text}"
        );
    }
    let metrics = common::metrics_at(listening["admin"].as_str().unwrap()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("actgate_api_requests_total{")
                && l.contains("status_class=\"5xx\"")),
        "API failures counted"
    );
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(
        logs.iter()
            .chain(seen.iter())
            .any(|l| l.contains("audit log append failed")),
        "logged"
    );
    assert!(
        logs.iter().any(|l| l.contains("API request failed")),
        "store failure logged"
    );
}

#[test]
fn fail_closed_when_the_audit_directory_is_read_only() {
    // The audit directory on a read-only tmpfs (in a private mount namespace), keys in place:
    // in strict mode actgate cannot keep its audit log, so it refuses to start, saying why.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("actgate.yaml");
    std::fs::write(
        &config,
        common::config_yaml(&data, "audit: { durability: strict }\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_actgate");
    let rotate = std::process::Command::new(bin)
        .args(["keys", "rotate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{rotate:?}");
    let audit = data.join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    let script = format!(
        "mount -t tmpfs -o ro,size=1m tmpfs {audit} && exec {bin} serve --config {config}",
        audit = audit.display(),
        config = config.display()
    );
    let out = std::process::Command::new("timeout")
        .args([
            "20",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .env("ACTGATE_LOG", "info")
        .output()
        .expect("unshare (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "must refuse to start: {stderr}");
    assert!(
        stderr.contains("audit log:") && stderr.contains("Read-only file system"),
        "{stderr}"
    );
    assert!(!stderr.contains("actgate listening"), "{stderr}");
}

#[tokio::test]
async fn fail_closed_on_an_unreadable_signing_key_or_store() {
    let gw = TestGateway::start("").await;
    let dir = gw.stop().await;
    let keys = dir.path().join("data/keys");
    let kid = std::fs::read_to_string(keys.join("active")).unwrap();
    std::fs::write(keys.join(format!("{}.key", kid.trim())), "not a key").unwrap();
    let yaml = common::config_yaml(&dir.path().join("data"), "");
    let err = actgate::server::start(actgate::config::Config::parse(&yaml, "t").unwrap())
        .await
        .err()
        .expect("refuses to start");
    assert!(err.to_string().contains("signing keys"), "{err}");
    // A store that is not a database.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("data")).unwrap();
    std::fs::write(other.path().join("data/actgate.db"), vec![0x42u8; 8192]).unwrap();
    let yaml = common::config_yaml(&other.path().join("data"), "");
    let err = actgate::server::start(actgate::config::Config::parse(&yaml, "t").unwrap())
        .await
        .err()
        .expect("refuses to start");
    assert!(err.to_string().contains("store"), "{err}");
}
