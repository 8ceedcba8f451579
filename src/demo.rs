//! `actgate demo`: the whole product in one command, for a newcomer.
//!
//! Starts actgate on its embedded config (listeners on free loopback ports, data in
//! `./demo-data`), plus two small built-in upstreams standing in for a CRM and an e-mail API;
//! registers an agent, a policy and a token through the REST API; sends allowed and denied
//! calls through the proxy; prints what happened to each and where the audit trail is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::{Config, EMBEDDED};

type DemoClient = Client<HttpConnector, Full<Bytes>>;

/// Starts a demo upstream answering JSON; counts the requests it receives.
async fn upstream(name: &'static str, hits: Arc<AtomicUsize>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = Arc::clone(&hits);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let hits = Arc::clone(&hits);
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let body = match name {
                            "crm" => {
                                json!({"service": "crm", "path": req.uri().path(), "customers": [{"id": 42, "name": "Ada"}]})
                            }
                            _ => json!({"service": "email", "sent": true}),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body.to_string())))
                                .expect("static response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts the demo MCP server (Streamable HTTP, JSON answers, at `/mcp`): a CRM with three
/// tools; counts the tool calls it executes.
async fn mcp_upstream(hits: Arc<AtomicUsize>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hits = Arc::clone(&hits);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let hits = Arc::clone(&hits);
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let method = msg["method"].as_str().unwrap_or_default();
                        let result = match method {
                            "initialize" => {
                                json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "demo-crm", "version": "1"}})
                            }
                            "tools/list" => json!({"tools": [
                                {"name": "get_customer", "description": "Read one customer", "inputSchema": {"type": "object", "properties": {"customer_id": {"type": "string"}}, "required": ["customer_id"]}},
                                {"name": "delete_customer", "description": "Delete a customer", "inputSchema": {"type": "object", "properties": {"customer_id": {"type": "string"}}, "required": ["customer_id"]}},
                                {"name": "export_all_customers", "description": "Export every customer", "inputSchema": {"type": "object"}},
                            ]}),
                            "tools/call" => {
                                hits.fetch_add(1, Ordering::SeqCst);
                                json!({"content": [{"type": "text", "text": format!("{} done", msg["params"]["name"].as_str().unwrap_or_default())}], "isError": false})
                            }
                            _ => json!({}),
                        };
                        let answer = match msg.get("id") {
                            Some(id) if !method.is_empty() => {
                                json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
                            }
                            _ => String::new(),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(if answer.is_empty() { 202 } else { 200 })
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer)))
                                .expect("static response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config: the embedded one, with the demo MCP server behind `/mcp/crm`.
fn demo_config(mcp: SocketAddr) -> Result<Config, String> {
    let text = EMBEDDED.replacen(
        "\nupstreams:\n",
        &format!("\nupstreams:\n  crm-mcp: {{ url: \"http://{mcp}/mcp\", timeout: 10s }}\n"),
        1,
    ) + r#"
mcp:
  - name: crm
    path: /mcp/crm
    upstream: crm-mcp
    tools:
      get_customer: { action: read, resource: "api://crm/customers/{customer_id}", rows: { fixed: 1 } }
      delete_customer: { action: delete, resource: "api://crm/customers/{customer_id}" }
"#;
    Config::parse(&text, "embedded").map_err(|p| p.to_string())
}

async fn call(
    client: &DemoClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

/// The file that marks a data directory as the demo's own, so a new run may empty it.
const MARKER: &str = ".actgate-demo";

/// Starts the demo on a fresh data directory (emptied first, unless `keep_data`); refuses a
/// directory the demo did not make.
fn fresh_data_dir(dir: &std::path::Path, keep_data: bool) -> Result<(), String> {
    if dir.exists() && !keep_data {
        let ours = dir.join(MARKER).exists()
            || std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !ours {
            return Err(format!(
                "{} exists and was not made by `actgate demo`; give another --data-dir",
                dir.display()
            ));
        }
        std::fs::remove_dir_all(dir).map_err(|e| format!("emptying {}: {e}", dir.display()))?;
    }
    crate::token::keys::create_dir_private(dir).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join(MARKER),
        "made by `actgate demo`; emptied at its next run\n",
    )
    .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Runs the demo; `keep_running` leaves the gateway up afterwards until Ctrl-C; `keep_data`
/// keeps what an earlier run left in the data directory.
pub async fn run(data_dir: PathBuf, keep_running: bool, keep_data: bool) -> Result<(), String> {
    fresh_data_dir(&data_dir, keep_data)?;
    let crm_hits = Arc::new(AtomicUsize::new(0));
    let email_hits = Arc::new(AtomicUsize::new(0));
    let crm = upstream("crm", Arc::clone(&crm_hits))
        .await
        .map_err(|e| e.to_string())?;
    let email = upstream("email", Arc::clone(&email_hits))
        .await
        .map_err(|e| e.to_string())?;

    let mcp_hits = Arc::new(AtomicUsize::new(0));
    let mcp = mcp_upstream(Arc::clone(&mcp_hits))
        .await
        .map_err(|e| e.to_string())?;
    let mut config = demo_config(mcp)?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("static address");
    config.listen.proxy = any;
    config.listen.api = any;
    config.listen.admin = any;
    config.data_dir = data_dir.clone();
    config.api_keys.clear();
    for (name, addr) in [("crm", crm), ("email", email)] {
        if let Some(u) = config.upstreams.get_mut(name) {
            u.target = crate::config::UpstreamTarget::Http(
                format!("http://{addr}")
                    .parse()
                    .map_err(|_| "demo upstream url")?,
            );
        }
    }
    let running = crate::server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    let api = format!("http://{}", running.api);
    let proxy = format!("http://{}", running.proxy);
    let key = std::fs::read_to_string(data_dir.join("admin.key"))
        .map_err(|e| format!("reading the generated API key: {e}"))?
        .trim()
        .to_string();
    let client: DemoClient = Client::builder(TokioExecutor::new()).build_http();
    let auth = [("x-api-key", key.as_str())];

    println!("actgate demo");
    println!(
        "  proxy {proxy}   API {api}   admin http://{}",
        running.admin
    );
    println!(
        "  demo upstreams: crm http://{crm}, email http://{email}, MCP server http://{mcp}/mcp (behind {proxy}/mcp/crm)"
    );
    println!();

    let (_, agent) = call(&client, Method::POST, &format!("{api}/v1/agents"), &auth,
        Some(json!({"name": "OpenAI Customer Support Assistant", "description": "Handles customer inquiries",
                    "metadata": {"openai_assistant_id": "asst_abc123"}}))).await?;
    let agent_id = agent["id"]
        .as_str()
        .ok_or("agent was not created")?
        .to_string();
    println!("1. registered agent       {agent_id}");
    let (_, policy) = call(&client, Method::POST, &format!("{api}/v1/policies"), &auth,
        Some(json!({"name": "Customer Support Read Policy", "actions": ["read", "list"],
                    "resources": ["api://crm/customers", "api://crm/customers/*"], "effect": "allow",
                    "constraints": {"maxRows": 100}}))).await?;
    println!(
        "2. created policy         {} (read/list customers, maxRows 100)",
        policy["id"].as_str().unwrap_or("?")
    );
    let (_, tok) = call(
        &client,
        Method::POST,
        &format!("{api}/v1/tokens"),
        &auth,
        Some(json!({"agentId": agent_id, "expiresIn": 3600})),
    )
    .await?;
    let token = tok["token"]
        .as_str()
        .ok_or("token was not issued")?
        .to_string();
    let token_id = tok["tokenId"].as_str().unwrap_or_default().to_string();
    println!(
        "3. issued token           {token_id} (expires {})",
        tok["expiresAt"].as_str().unwrap_or("?")
    );
    println!(
        "   the config also carries policies as code: never delete customers; e-mail only @yourcompany.com"
    );
    println!();

    let bearer = format!("Bearer {token}");
    let with_token = [("authorization", bearer.as_str())];
    let forged = [(
        "authorization",
        "Bearer v4.public.forged-by-a-prompt-injection",
    )];
    struct Call<'a> {
        what: &'a str,
        method: Method,
        path: &'a str,
        headers: &'a [(&'a str, &'a str)],
        body: Option<Value>,
    }
    let calls = vec![
        Call {
            what: "read customer 42",
            method: Method::GET,
            path: "/crm/customers/42",
            headers: &with_token,
            body: None,
        },
        Call {
            what: "list customers, no limit",
            method: Method::GET,
            path: "/crm/customers",
            headers: &with_token,
            body: None,
        },
        Call {
            what: "list 500 customers",
            method: Method::GET,
            path: "/crm/customers?limit=500",
            headers: &with_token,
            body: None,
        },
        Call {
            what: "delete customer 42",
            method: Method::DELETE,
            path: "/crm/customers/42",
            headers: &with_token,
            body: None,
        },
        Call {
            what: "e-mail alice@yourcompany.com",
            method: Method::POST,
            path: "/email/send",
            headers: &with_token,
            body: Some(json!({"to": "alice@yourcompany.com", "subject": "Your ticket"})),
        },
        Call {
            what: "e-mail, bcc eve@evil.com",
            method: Method::POST,
            path: "/email/send",
            headers: &with_token,
            body: Some(
                json!({"to": "alice@yourcompany.com", "bcc": ["eve@evil.com"], "subject": "Your ticket"}),
            ),
        },
        Call {
            what: "read with a forged token",
            method: Method::GET,
            path: "/crm/customers/42",
            headers: &forged,
            body: None,
        },
        Call {
            what: "path traversal ../admin",
            method: Method::GET,
            path: "/crm/customers/%2e%2e/admin",
            headers: &with_token,
            body: None,
        },
    ];
    println!(
        "{:<4}{:<36}{:<10}{:<22}{:<8}reached upstream",
        "#", "call (through the proxy)", "decision", "reason", "status"
    );
    let mut n = 0;
    let mut show = |what: &str, status: StatusCode, body: &Value, reached: bool| {
        n += 1;
        let decision = if status.is_success() {
            "allowed"
        } else {
            "denied"
        };
        let reason =
            body["reason"]
                .as_str()
                .unwrap_or(if status.is_success() { "allowed" } else { "-" });
        println!(
            "{:<4}{:<36}{:<10}{:<22}{:<8}{}",
            n,
            what,
            decision,
            reason,
            status.as_u16(),
            if reached { "yes" } else { "no" }
        );
    };
    for c in calls {
        let before = crm_hits.load(Ordering::SeqCst) + email_hits.load(Ordering::SeqCst);
        let (status, body) = call(
            &client,
            c.method,
            &format!("{proxy}{}", c.path),
            c.headers,
            c.body,
        )
        .await?;
        let after = crm_hits.load(Ordering::SeqCst) + email_hits.load(Ordering::SeqCst);
        show(c.what, status, &body, after > before);
    }
    // The same token, over MCP: the tool list is filtered, each call decided.
    let mcp_url = format!("{proxy}/mcp/crm");
    let rpc = |id: u64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let before = mcp_hits.load(Ordering::SeqCst);
    let (status, list) = call(
        &client,
        Method::POST,
        &mcp_url,
        &with_token,
        Some(rpc(1, "tools/list", json!({}))),
    )
    .await?;
    let visible: Vec<&str> = list["result"]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    show(
        "MCP tools/list",
        status,
        &json!({"reason": "allowed"}),
        true,
    );
    println!(
        "    the agent sees {} of the server's 3 tools: {}",
        visible.len(),
        visible.join(", ")
    );
    let mut denial = String::new();
    for (id, tool) in [(2, "get_customer"), (3, "delete_customer")] {
        let before = mcp_hits.load(Ordering::SeqCst);
        let (status, v) = call(
            &client,
            Method::POST,
            &mcp_url,
            &with_token,
            Some(rpc(
                id,
                "tools/call",
                json!({"name": tool, "arguments": {"customer_id": "42"}}),
            )),
        )
        .await?;
        let decision = &v["result"]["_meta"]["io.actgate/decision"];
        let (status, reason) = if v["result"]["isError"] == true {
            denial = v["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (StatusCode::FORBIDDEN, decision["reason"].clone())
        } else {
            (status, json!("allowed"))
        };
        show(
            &format!("MCP call {tool} 42"),
            status,
            &json!({"reason": reason}),
            mcp_hits.load(Ordering::SeqCst) > before,
        );
    }
    let _ = before;
    if !denial.is_empty() {
        println!("    the model is told: {denial}");
    }
    call(
        &client,
        Method::DELETE,
        &format!("{api}/v1/tokens/{token_id}"),
        &auth,
        None,
    )
    .await?;
    let before = crm_hits.load(Ordering::SeqCst);
    let (status, body) = call(
        &client,
        Method::GET,
        &format!("{proxy}/crm/customers/42"),
        &with_token,
        None,
    )
    .await?;
    show(
        "read 42 after revoking the token",
        status,
        &body,
        crm_hits.load(Ordering::SeqCst) > before,
    );

    // Every call leaves one audit event (refusals before a decision included); the batched
    // writer commits within milliseconds, the index right after.
    let calls = 12;
    let mut events = 0;
    for _ in 0..100 {
        let (_, audit) = call(
            &client,
            Method::GET,
            &format!("{api}/v1/audit?limit=1000"),
            &auth,
            None,
        )
        .await?;
        events = audit["events"].as_array().map_or(0, Vec::len);
        if events >= calls {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!();
    println!(
        "audit trail: {events} events for {calls} calls, one each (GET /v1/audit); the hash-chained log is in {}",
        data_dir.join("audit").display()
    );
    if keep_running {
        println!(
            "  read it: curl -s -H \"X-Api-Key: $(cat {}/admin.key)\" {api}/v1/audit",
            data_dir.display()
        );
        println!();
        println!(
            "actgate keeps running (Ctrl-C to stop); the API key is in {}/admin.key",
            data_dir.display()
        );
        let _ = tokio::signal::ctrl_c().await;
    } else {
        println!(
            "  read it live: actgate demo --keep-running, then GET /v1/audit with the key in {}/admin.key",
            data_dir.display()
        );
    }
    running.shutdown().await;
    Ok(())
}
