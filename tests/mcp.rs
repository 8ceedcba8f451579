//! The MCP gateway, black-box, with a recording MCP server behind it: decisions per tool call,
//! denied calls answered as tool errors and never executed, list filtering (JSON and SSE),
//! sessions bound to their agent, routing headers, malformed messages, audit and metrics.
//! Every refusal asserts what the server executed: nothing. (The official SDKs drive it in
//! `tests/mcp_sdk.rs`.)

mod common;

#[path = "common/mcp_upstream.rs"]
mod mcp_upstream;

use common::{KEY, TestGateway};
use mcp_upstream::McpUpstream;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

fn config(up: &McpUpstream, extra: &str) -> String {
    format!(
        r#"
upstreams:
  crm-mcp: {{ url: "{url}", timeout: 5s }}
mcp:
  - name: crm
    path: /mcp/crm
    upstream: crm-mcp
    allowMethods: [completion/complete]
    tools:
      get_customer: {{ action: read, resource: "api://crm/customers/{{customer_id}}", rows: {{ fixed: 1 }} }}
      list_customers: {{ action: list, resource: "api://crm/customers", rows: {{ argument: /limit }} }}
      send_email: {{ action: send_email, resource: "api://email/outbound", recipients: {{ arguments: [/to, /cc, /bcc] }} }}
{extra}
policies:
  - {{ name: read customers, actions: [read, list], resources: ["api://crm/customers", "api://crm/customers/*"], effect: allow, constraints: {{ maxRows: 100 }} }}
  - {{ name: email, actions: [send_email], resources: ["api://email/*"], effect: allow, constraints: {{ allowedDomains: ["yourcompany.com"] }} }}
  - {{ name: never delete, actions: [call], resources: ["mcp://crm/tools/delete_*"], effect: deny }}
  - {{ name: resources, actions: [read], resources: ["mcp://crm/resources/crm://customers/*"], effect: allow }}
  - {{ name: prompts, actions: [get], resources: ["mcp://crm/prompts/greet"], effect: allow }}
"#,
        url = up.url()
    )
}

struct Setup {
    gw: TestGateway,
    up: McpUpstream,
    token: String,
    token_id: String,
    agent: String,
}

async fn setup_with(sse: bool, extra: &str) -> Setup {
    let up = McpUpstream::start(sse).await;
    let gw = TestGateway::start(&config(&up, extra)).await;
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

async fn setup() -> Setup {
    setup_with(false, "").await
}

impl Setup {
    async fn send(
        &self,
        token: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, HeaderMap) {
        let mut req = self
            .gw
            .client
            .post(format!("{}/mcp/crm", self.gw.proxy))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let value = if headers
            .get("content-type")
            .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"))
        {
            // The last event carrying an id is the answer.
            text.split("\r\n\r\n")
                .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter(|v| v.get("id").is_some())
                .last()
                .unwrap_or(Value::Null)
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value, headers)
    }

    async fn rpc(&self, method: &str, params: Value) -> (StatusCode, Value, HeaderMap) {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        self.send(Some(&self.token), &body.to_string(), &[]).await
    }

    async fn call(&self, tool: &str, args: Value) -> (StatusCode, Value) {
        let (s, v, _) = self
            .rpc("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        (s, v)
    }
}

fn denied_text(v: &Value) -> String {
    assert_eq!(v["result"]["isError"], true, "{v}");
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn allowed_calls_reach_the_server_with_actgates_identity_and_without_the_token() {
    let s = setup().await;
    let (status, v) = s.call("get_customer", json!({"customer_id": "42"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "executed get_customer");
    assert_eq!(v["id"], 7);
    let seen = s.up.seen();
    let last = seen.last().unwrap();
    assert!(
        last.headers.get("authorization").is_none(),
        "token stripped"
    );
    assert_eq!(last.headers["x-act-agent-id"], s.agent.as_str());
    assert_eq!(last.headers["x-act-tenant-id"], "default-tenant");
    assert!(!format!("{:?}", last.headers).contains(&s.token));
}

#[tokio::test]
async fn denied_calls_are_answered_by_actgate_as_tool_errors_and_never_executed() {
    let s = setup().await;
    // An explicit deny.
    let (status, v) = s
        .call("delete_customer", json!({"customer_id": "42"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = denied_text(&v);
    assert!(
        text.contains("delete_customer") && text.contains("explicit_deny"),
        "{text}"
    );
    assert!(
        text.contains("pol_never-delete"),
        "names the policy: {text}"
    );
    assert_eq!(
        v["result"]["_meta"]["io.actgate/decision"]["reason"],
        "explicit_deny"
    );
    // No policy at all.
    let (_, v) = s.call("export_all", json!({})).await;
    assert!(denied_text(&v).contains("no_matching_policy"));
    // maxRows: over the limit is denied, naming the values.
    let (_, v) = s.call("list_customers", json!({"limit": 500})).await;
    let text = denied_text(&v);
    assert!(
        text.contains("constraint_violated") && text.contains("maxRows 500 > 100"),
        "{text}"
    );
    // allowedDomains over every recipient argument, bcc included.
    let (_, v) = s
        .call(
            "send_email",
            json!({"to": "a@yourcompany.com", "bcc": ["eve@evil.com"]}),
        )
        .await;
    assert!(denied_text(&v).contains("constraint_violated"));
    let (_, v) = s
        .call("send_email", json!({"subject": "no recipient"}))
        .await;
    assert!(denied_text(&v).contains("constraint_violated"));
    assert!(
        s.up.calls().is_empty(),
        "nothing executed: {:?}",
        s.up.calls()
    );
    // The allowed ones pass, and a missing row count is set to the limit.
    let (_, v) = s.call("list_customers", json!({})).await;
    assert_eq!(v["result"]["isError"], false, "{v}");
    let (_, v) = s
        .call("send_email", json!({"to": "a@yourcompany.com"}))
        .await;
    assert_eq!(v["result"]["isError"], false, "{v}");
    let calls = s.up.calls();
    assert_eq!(
        calls[0],
        ("list_customers".to_string(), json!({"limit": 100}))
    );
    assert_eq!(calls.len(), 2);
}

#[tokio::test]
async fn arguments_filling_a_resource_are_data_never_patterns() {
    let s = setup().await;
    for bad in [
        "*", "4?", "[0-9]*", "{1,2}", "42/notes", "..", "a\u{0}b", "",
    ] {
        let (status, v) = s.call("get_customer", json!({"customer_id": bad})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
        assert_eq!(v["error"]["code"], -32602, "{v}");
    }
    let (status, _) = s
        .call("get_customer", json!({"customer_id": {"$ne": 1}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.call("get_customer", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(s.up.seen().is_empty(), "nothing forwarded");
}

#[tokio::test]
async fn malformed_and_ambiguous_messages_are_refused_before_anything_is_forwarded() {
    let s = setup().await;
    let t = Some(s.token.as_str());
    let cases: &[(&str, i64)] = &[
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"export_all"}}"#,
            -32700,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_customer","Name":"delete_customer"}}"#,
            -32700,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"TOOLS/CALL","params":{"name":"delete_customer"}}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"delete_customer"}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":99999999999999999999999,"method":"tools/list"}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"delete_customer"}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"d\u00e9l\u0065te/x"}}"#,
            -32602,
        ),
        (r#"not json"#, -32700),
    ];
    for (body, code) in cases {
        let (status, v, _) = s.send(t, body, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["code"], *code, "{body}: {v}");
    }
    // Routing headers must agree with the body.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_customer","arguments":{"customer_id":"1"}}}"#;
    for headers in [
        vec![("mcp-method", "tools/list")],
        vec![
            ("mcp-method", "tools/call"),
            ("mcp-name", "delete_customer"),
        ],
        vec![("mcp-protocol-version", "2026-07-28")],
        vec![
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
        ],
    ] {
        let (status, v, _) = s.send(t, body, &headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}: {v}");
        assert_eq!(v["error"]["code"], -32020, "{v}");
    }
    let (status, v, _) = s
        .send(
            t,
            body,
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?Z2V0X2N1c3RvbWVy?="),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "base64 Mcp-Name decoded: {v}");
    assert_eq!(s.up.calls().len(), 1);
    // Not JSON at all.
    let r =
        s.gw.client
            .post(format!("{}/mcp/crm", s.gw.proxy))
            .bearer_auth(&s.token)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(s.up.calls().len(), 1, "only the one agreeing call ran");
}

#[tokio::test]
async fn token_problems_are_401_with_the_protected_resource_metadata() {
    let s = setup().await;
    for token in [
        None,
        Some("v4.public.forged"),
        Some(&*format!("{}x", s.token)),
    ] {
        let (status, v, h) = s
            .send(
                token,
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
        let challenge = h["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        let url = challenge
            .split("resource_metadata=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        assert!(
            url.ends_with("/.well-known/oauth-protected-resource/mcp/crm"),
            "{url}"
        );
        let path = url.split_once("//").unwrap().1.split_once('/').unwrap().1;
        let meta: Value =
            s.gw.client
                .get(format!("{}/{path}", s.gw.proxy))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert!(
            meta["resource"].as_str().unwrap().ends_with("/mcp/crm"),
            "{meta}"
        );
        assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    }
    assert!(s.up.seen().is_empty());
}

#[tokio::test]
async fn lists_show_only_what_the_token_could_use_in_json_and_sse_answers() {
    for sse in [false, true] {
        let s = setup_with(sse, "").await;
        let (status, v, h) = s.rpc("tools/list", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["get_customer", "list_customers", "send_email"],
            "sse={sse}"
        );
        assert_eq!(v["result"]["cacheScope"], "private");
        assert_eq!(h["cache-control"], "private, no-store");
        let (_, v, _) = s.rpc("resources/list", json!({})).await;
        let uris: Vec<&str> = v["result"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["uri"].as_str().unwrap())
            .collect();
        assert_eq!(uris, ["crm://customers/42"]);
        let (_, v, _) = s.rpc("prompts/list", json!({})).await;
        assert_eq!(v["result"]["prompts"], json!([{"name": "greet"}]));
        // A token narrowed to one policy sees less.
        let (st, body) =
            s.gw.post(
                "/v1/tokens",
                KEY,
                json!({"agentId": s.agent, "policyIds": ["pol_email"]}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{body}");
        let narrow = body["token"].as_str().unwrap();
        let req = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
        let (_, v, _) = s.send(Some(narrow), &req.to_string(), &[]).await;
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["send_email"], "sse={sse}");
    }
}

#[tokio::test]
async fn resources_and_prompts_are_decided_like_tools() {
    let s = setup().await;
    let (_, v, _) = s
        .rpc("resources/read", json!({"uri": "crm://customers/42"}))
        .await;
    assert!(v.get("result").is_some(), "{v}");
    let (_, v, _) = s
        .rpc("resources/read", json!({"uri": "crm://secrets/root"}))
        .await;
    assert_eq!(v["error"]["code"], -32003, "{v}");
    let (_, v, _) = s.rpc("prompts/get", json!({"name": "leak"})).await;
    assert_eq!(v["error"]["code"], -32003, "{v}");
    let (status, _, _) = s
        .rpc("resources/read", json!({"uri": "crm://customers/*"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let forwarded: Vec<String> =
        s.up.seen()
            .iter()
            .map(|m| m.body["params"]["uri"].to_string())
            .collect();
    assert_eq!(forwarded, ["\"crm://customers/42\""]);
}

#[tokio::test]
async fn only_known_methods_pass_and_others_are_refused_unforwarded() {
    let s = setup().await;
    let (status, v, _) = s.rpc("sampling/createMessage", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["error"]["code"], -32601, "{v}");
    let (_, v, _) = s.rpc("tasks/run", json!({})).await;
    assert_eq!(v["error"]["code"], -32601);
    assert!(s.up.seen().is_empty());
    // allowMethods lets one through with a valid token.
    let (_, v, _) = s.rpc("completion/complete", json!({})).await;
    assert!(v.get("result").is_some(), "{v}");
    // Notifications and ping need only a token.
    let (status, _, _) = s
        .send(
            Some(&s.token),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, v, _) = s.rpc("ping", json!({})).await;
    assert!(v.get("result").is_some());
}

#[tokio::test]
async fn a_session_serves_only_its_agent_and_ends_with_a_revoked_token() {
    let s = setup().await;
    let (status, _, h) = s
        .rpc("initialize", json!({"protocolVersion": "2025-11-25"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let sid = h["mcp-session-id"].to_str().unwrap().to_string();
    let with = |sid: &str| vec![("mcp-session-id", sid.to_string())];
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let hdr = with(&sid);
    let hdrs: Vec<(&str, &str)> = hdr.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = s.send(Some(&s.token), list, &hdrs).await;
    assert_eq!(status, StatusCode::OK);
    // Another agent's token on this session.
    let other = s.gw.agent().await;
    let (other_token, _) = s.gw.token(&other).await;
    s.up.clear();
    let (status, v, _) = s.send(Some(&other_token), list, &hdrs).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another agent")
    );
    // A session actgate never saw opened.
    let (status, _, _) = s
        .send(Some(&s.token), list, &[("mcp-session-id", "feedface")])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        s.up.seen().is_empty(),
        "a hijacked or unknown session forwards nothing"
    );
    // Revoking the token ends its access at the next message.
    let (st, _) =
        s.gw.delete(&format!("/v1/tokens/{}", s.token_id), KEY)
            .await;
    assert_eq!(st, StatusCode::OK);
    let (status, _, _) = s.send(Some(&s.token), list, &hdrs).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(s.up.seen().is_empty());
}

#[tokio::test]
async fn sessions_are_bounded_per_agent_and_compressed_messages_refused() {
    let s = setup_with(false, "").await;
    let s = Setup {
        gw: TestGateway::start(
            &config(&s.up, "")
                .replace("allowMethods:", "maxSessionsPerAgent: 2\n    allowMethods:"),
        )
        .await,
        ..s
    };
    let agent = s.gw.agent().await;
    let (token, _) = s.gw.token(&agent).await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#;
    for _ in 0..2 {
        let (status, _, _) = s.send(Some(&token), init, &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    s.up.clear();
    let (status, v, _) = s.send(Some(&token), init, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maxSessionsPerAgent")
    );
    assert!(
        s.up.seen().is_empty(),
        "refused before anything is forwarded"
    );
    let other = s.gw.agent().await;
    let (other_token, _) = s.gw.token(&other).await;
    let (status, _, _) = s.send(Some(&other_token), init, &[]).await;
    assert_eq!(status, StatusCode::OK, "another agent has its own quota");
    // A compressed message is refused: actgate decides on the bytes as they came.
    let (status, v, _) = s
        .send(
            Some(&token),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    // A GET carries no routing header upstream, and no Accept-Encoding goes anywhere.
    s.up.clear();
    let r =
        s.gw.client
            .get(format!("{}/mcp/crm", s.gw.proxy))
            .bearer_auth(&token)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "delete_customer")
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = s.up.seen();
    assert!(
        seen[0].headers.get("mcp-method").is_none() && seen[0].headers.get("mcp-name").is_none()
    );
    assert!(seen[0].headers.get("accept-encoding").is_none());
}

#[tokio::test]
async fn every_message_is_audited_with_method_tool_and_argument_hash_not_the_arguments() {
    let s = setup().await;
    s.call(
        "get_customer",
        json!({"customer_id": "42", "note": "PERSONAL-DATA"}),
    )
    .await;
    s.call("delete_customer", json!({"customer_id": "42"}))
        .await;
    s.rpc("tools/list", json!({})).await;
    s.send(
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        &[],
    )
    .await;
    s.send(Some(&s.token), "[]", &[]).await;
    let events = s.gw.audit_events(5).await;
    let mcp: Vec<&Value> = events.iter().filter(|e| e["source"] == "mcp").collect();
    assert_eq!(mcp.len(), 5, "{events:#?}");
    let call = mcp.iter().find(|e| e["tool"] == "get_customer").unwrap();
    assert_eq!(call["mcpMethod"], "tools/call");
    assert_eq!(call["decision"], "allowed");
    assert_eq!(call["action"], "read");
    assert_eq!(call["resource"], "api://crm/customers/42");
    assert_eq!(call["agentId"], s.agent.as_str());
    assert_eq!(call["route"], "crm");
    assert_eq!(call["argumentsSha256"].as_str().unwrap().len(), 64);
    assert_eq!(call["upstreamStatus"], 200);
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains("PERSONAL-DATA"),
        "argument values are not stored by default"
    );
    assert!(!all.contains(&s.token));
    let denied = mcp.iter().find(|e| e["tool"] == "delete_customer").unwrap();
    assert_eq!(denied["reason"], "explicit_deny");
    assert!(mcp.iter().any(|e| e["reason"] == "token_missing"));
    assert!(mcp.iter().any(|e| e["reason"] == "invalid_request"));
    let m = s.gw.metrics().await;
    assert!(m.contains(r#"actgate_mcp_requests_total{decision="allowed",endpoint="crm",method="tools/call",tool="get_customer"} 1"#), "{m}");
    assert!(m.contains(r#"actgate_mcp_requests_total{decision="denied",endpoint="crm",method="tools/call",tool="other"} 1"#));
    assert!(m.contains(
        r#"actgate_decisions_total{decision="denied",reason="explicit_deny",source="mcp"} 1"#
    ));
}

#[tokio::test]
async fn with_mcp_arguments_on_the_audit_keeps_the_arguments() {
    let s = setup_with(false, "audit: { mcpArguments: true }").await;
    s.call("get_customer", json!({"customer_id": "42", "note": "kept"}))
        .await;
    let events = s.gw.audit_events(1).await;
    assert_eq!(
        events[0]["arguments"],
        json!({"customer_id": "42", "note": "kept"})
    );
}

#[tokio::test]
async fn monitor_mode_forwards_would_be_denials_and_audits_them() {
    let up = McpUpstream::start(false).await;
    let gw = TestGateway::start(
        &config(&up, "").replace("allowMethods:", "mode: monitor\n    allowMethods:"),
    )
    .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "delete_customer", "arguments": {}}});
    let r = gw
        .client
        .post(format!("{}/mcp/crm", gw.proxy))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(up.calls().len(), 1, "forwarded in monitor mode");
    // Without a valid token, no session is anyone's to use, even in monitor mode.
    let r = gw
        .client
        .post(format!("{}/mcp/crm", gw.proxy))
        .header("content-type", "application/json")
        .header("mcp-session-id", "0123456789abcdef0123456789abcdef")
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let events = gw.audit_events(1).await;
    let shadow = events
        .iter()
        .find(|e| e["tool"] == "delete_customer")
        .unwrap();
    assert_eq!(shadow["reason"], "explicit_deny");
    assert_eq!(shadow["enforced"], false);
}

#[tokio::test]
async fn a_stdio_server_is_served_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.py");
    std::fs::write(&script, STDIO_SERVER).unwrap();
    let log = dir.path().join("executed.log");
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  local: {{ command: [python3, "{script}"], env: {{ EXECUTED_LOG: "{log}" }} }}
mcp:
  - {{ name: local, path: /mcp/local, upstream: local }}
policies:
  - {{ name: hello, actions: [call], resources: ["mcp://local/tools/hello"], effect: allow }}
"#,
        script = script.display(),
        log = log.display()
    ))
    .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let post = |body: Value, sid: Option<String>| {
        let mut req = gw
            .client
            .post(format!("{}/mcp/local", gw.proxy))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = sid {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let r = post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}), None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let init: Value = r.json().await.unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "stdio-test");
    let r = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        Some(sid.clone()),
    )
    .await
    .unwrap();
    let list: Value = r.json().await.unwrap();
    assert_eq!(
        list["result"]["tools"],
        json!([{"name": "hello", "inputSchema": {"type": "object"}}])
    );
    let r = post(json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "hello", "arguments": {}}}), Some(sid.clone())).await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "a", "the client's id comes back");
    assert_eq!(v["result"]["content"][0]["text"], "hello from stdio");
    let r = post(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "wipe", "arguments": {}}}), Some(sid.clone())).await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["isError"], true);
    let executed = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        executed.lines().collect::<Vec<_>>(),
        ["hello"],
        "wipe never ran"
    );
    // The session ends with DELETE.
    let r = gw
        .client
        .delete(format!("{}/mcp/local", gw.proxy))
        .bearer_auth(&token)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post(
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
        Some(sid),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The stateless revision goes to a shared child.
    let r = gw
        .client
        .post(format!("{}/mcp/local", gw.proxy))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "hello")
        .body(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "hello", "arguments": {}, "_meta": {}}}).to_string())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "hello from stdio", "{v}");
}

/// A minimal MCP server over stdio (JSON lines), with no SDK: what any stdio server does.
const STDIO_SERVER: &str = r#"
import json, os, sys
log = os.environ["EXECUTED_LOG"]
assert "ACTGATE_API_KEY" not in os.environ
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    m = msg["method"]
    if m == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "stdio-test", "version": "1"}}
    elif m == "tools/list":
        result = {"tools": [{"name": "hello", "inputSchema": {"type": "object"}}]}
    elif m == "tools/call":
        name = msg["params"]["name"]
        with open(log, "a") as f:
            f.write(name + "\n")
        result = {"content": [{"type": "text", "text": name + " from stdio"}], "isError": False}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;
