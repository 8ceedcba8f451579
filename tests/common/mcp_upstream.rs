//! A small MCP server for black-box tests of the MCP gateway: Streamable HTTP on
//! 127.0.0.1:0 at `/mcp`, recording every message it received (and its headers) so a test can
//! assert that a refused call never reached it. It answers the handshake (with a session id),
//! the lists and tool calls; `sse: true` answers every request as an event stream (with a
//! progress notification before the answer), as legacy SDK servers do.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One message as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    #[allow(dead_code)]
    pub http_method: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
pub struct McpUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The tools the server lists.
pub const TOOLS: &[&str] = &[
    "get_customer",
    "list_customers",
    "send_email",
    "delete_customer",
    "export_all",
];

impl McpUpstream {
    pub async fn start(sse: bool) -> McpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = McpUpstream {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
        };
        let seen = Arc::clone(&up.seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&seen), req, sse));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        up
    }

    /// The MCP endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The tool calls the server executed: (tool, arguments).
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.seen()
            .into_iter()
            .filter(|s| s.body["method"] == "tools/call")
            .map(|s| {
                (
                    s.body["params"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    s.body["params"]["arguments"].clone(),
                )
            })
            .collect()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
    sse: bool,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let msg: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Seen {
        http_method: parts.method.to_string(),
        headers: parts.headers.clone(),
        body: msg.clone(),
    });
    if parts.method != http::Method::POST {
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from_static(b": stream\n\n")).boxed())
            .unwrap());
    }
    let id = msg.get("id").cloned();
    let method = msg["method"].as_str().unwrap_or_default().to_string();
    let Some(id) = id.filter(|_| !method.is_empty()) else {
        // Notifications and responses.
        return Ok(Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap());
    };
    let result = match method.as_str() {
        "initialize" => {
            json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "1"}})
        }
        "tools/list" => json!({
            "tools": TOOLS.iter().map(|t| json!({"name": t, "inputSchema": {"type": "object"}})).collect::<Vec<_>>(),
            "cacheScope": "public",
            "ttlMs": 0,
        }),
        "tools/call" => json!({
            "content": [{"type": "text", "text": format!("executed {}", msg["params"]["name"].as_str().unwrap_or_default())}],
            "isError": false,
        }),
        "resources/list" => json!({"resources": [
            {"uri": "crm://customers/42", "name": "c42"},
            {"uri": "crm://secrets/root", "name": "root"},
        ]}),
        "prompts/list" => json!({"prompts": [{"name": "greet"}, {"name": "leak"}]}),
        _ => json!({}),
    };
    let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
    let mut resp = Response::builder().status(200);
    if method == "initialize" {
        // A new session each time, numbered (the first is 0123456789abcdef0123456789abcdef).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sid = if n == 0 {
            "0123456789abcdef0123456789abcdef".to_string()
        } else {
            format!("{n:032x}")
        };
        resp = resp.header("mcp-session-id", sid);
    }
    let resp = if sse {
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}});
        let text = format!(
            "event: message\r\ndata: {progress}\r\n\r\nevent: message\r\ndata: {answer}\r\n\r\n"
        );
        resp.header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(text)).boxed())
    } else {
        resp.header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer.to_string())).boxed())
    };
    Ok(resp.unwrap())
}
