//! The MCP gateway's cost, in one run:
//!
//! 1. added latency of a `tools/call` through actgate against the same call sent straight to
//!    the server — with a trivial Rust MCP server (what actgate adds) and with the official
//!    Python SDK's `MCPServer` (what a user sees; skipped when `target/py-venv` is missing):
//!    sequential calls over one keep-alive connection, rounds alternating, p50/p99;
//! 2. decisions per second of the MCP path (allowed `tools/call`, 32 keep-alive connections,
//!    3 s), next to a proxied GET route in the same gateway.
//!
//! ```text
//! cargo bench --bench mcp
//! ```

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A trivial MCP server: every tools/call answers a fixed result.
async fn rust_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let msg: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let answer = serde_json::json!({"jsonrpc": "2.0", "id": msg["id"], "result": {
                        "content": [{"type": "text", "text": "customer 42: Ada"}], "isError": false}});
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(answer.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn call_body(tool: &str, id: u64) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": tool, "arguments": {"customer_id": "42"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string()
}

async fn post(client: &HttpClient, url: &str, token: Option<&str>, tool: &str, id: u64) -> u16 {
    let mut req = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(
            req.body(Full::new(Bytes::from(call_body(tool, id))))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

fn nodelay() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sequential latency of `paths` (label, url, token, tool), `n` calls each in rounds of 500.
async fn latency(client: &HttpClient, paths: &[(&str, String, Option<String>, &str)], n: usize) {
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(n); paths.len()];
    for round in 0..n / 500 {
        for (i, (_, url, token, tool)) in paths.iter().enumerate() {
            for k in 0..500 {
                let started = Instant::now();
                post(
                    client,
                    url,
                    token.as_deref(),
                    tool,
                    (round * 500 + k) as u64,
                )
                .await;
                samples[i].push(started.elapsed().as_nanos() as u64);
            }
        }
    }
    let direct_p50 = {
        let mut s = samples[0].clone();
        s.sort_unstable();
        percentile(&s, 0.5)
    };
    println!(
        "| {:<44} | {:>8} | {:>8} | {:>12} |",
        "path", "p50 µs", "p99 µs", "added p50 µs"
    );
    println!("|{:-<46}|{:->10}|{:->10}|{:->14}|", "", "", "", "");
    for (i, (label, ..)) in paths.iter().enumerate() {
        let mut s = samples[i].clone();
        s.sort_unstable();
        let (p50, p99) = (percentile(&s, 0.5), percentile(&s, 0.99));
        let added = if i == 0 {
            "–".to_string()
        } else {
            format!("{:.1}", (p50 as f64 - direct_p50 as f64) / 1000.0)
        };
        println!(
            "| {:<44} | {:>8.1} | {:>8.1} | {:>12} |",
            label,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            added
        );
    }
}

/// Requests per second with `conns` keep-alive connections for `secs`.
async fn throughput(url: String, token: String, mcp: bool, conns: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (url, token, done) = (url.clone(), token.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(nodelay());
            let mut id = (c as u64) << 32;
            while Instant::now() < stop {
                id += 1;
                if mcp {
                    post(&client, &url, Some(&token), "get_customer", id).await;
                } else {
                    let req = Request::get(&url)
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let r = client.request(req).await.unwrap();
                    let _ = r.into_body().collect().await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let rust = rust_server().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/py-venv/bin/python");
    let mut py_server = None;
    let mut py_port = 0u16;
    if python.exists() {
        let mut child = std::process::Command::new(&python)
            .arg(root.join("examples/mcp/crm_server.py"))
            .arg("http")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        py_port = line.trim().parse().unwrap();
        py_server = Some(child);
    }
    let dir = tempfile::tempdir().unwrap();
    let key = "bench-key-0123456789-0123456789-0123";
    let tools = r#"{ get_customer: { action: read, resource: "api://crm/customers/{customer_id}", rows: { fixed: 1 } } }"#;
    let yaml = format!(
        r#"
listen: {{ proxy: "127.0.0.1:0", api: "127.0.0.1:0", admin: "127.0.0.1:0" }}
dataDir: {data}
apiKeys: [{{ name: bench, sha256: {hash} }}]
agents: [{{ id: agent_bench, name: Bench }}]
upstreams:
  rust-mcp: {{ url: "http://{rust}/mcp", timeout: 5s }}
  py-mcp: {{ url: "http://127.0.0.1:{py_port}/mcp", timeout: 5s }}
  crm: {{ url: "http://{rust}", timeout: 5s }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}" }}
mcp:
  - {{ name: rust, path: /mcp/rust, upstream: rust-mcp, tools: {tools} }}
  - {{ name: py, path: /mcp/py, upstream: py-mcp, tools: {tools} }}
policies:
  - {{ name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow, constraints: {{ maxRows: 10 }} }}
audit: {{ durability: batched }}
"#,
        data = dir.path().display(),
        hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes())),
    );
    let config = actgate::config::Config::parse(&yaml, "bench").unwrap();
    let running = actgate::server::start(config).await.unwrap();
    let (token, _) = running
        .gateway
        .tokens
        .issue(
            "agent_bench",
            "default-tenant",
            Duration::from_secs(3600),
            None,
            actgate::token::now_unix(),
        )
        .unwrap();
    let proxy = format!("http://{}", running.proxy);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(nodelay());

    println!(
        "## MCP tools/call latency, trivial Rust MCP server (20,000 sequential calls per path)\n"
    );
    latency(
        &client,
        &[
            (
                "direct to the server",
                format!("http://{rust}/mcp"),
                None,
                "get_customer",
            ),
            (
                "through actgate, allowed",
                format!("{proxy}/mcp/rust"),
                Some(token.clone()),
                "get_customer",
            ),
            (
                "through actgate, denied (answered by actgate)",
                format!("{proxy}/mcp/rust"),
                Some(token.clone()),
                "delete_customer",
            ),
        ],
        20_000,
    )
    .await;
    if py_server.is_some() {
        println!(
            "\n## MCP tools/call latency, the Python SDK's MCPServer (2,000 sequential calls per path)\n"
        );
        latency(
            &client,
            &[
                (
                    "direct to MCPServer",
                    format!("http://127.0.0.1:{py_port}/mcp"),
                    None,
                    "get_customer",
                ),
                (
                    "through actgate, allowed",
                    format!("{proxy}/mcp/py"),
                    Some(token.clone()),
                    "get_customer",
                ),
            ],
            2_000,
        )
        .await;
    } else {
        println!(
            "\n(no target/py-venv: the MCPServer comparison is skipped; scripts/test makes it)"
        );
    }
    println!(
        "\n## Throughput, 32 keep-alive connections, 3 s each, same gateway (audit batched)\n"
    );
    let mcp = throughput(format!("{proxy}/mcp/rust"), token.clone(), true, 32, 3).await;
    let route = throughput(
        format!("{proxy}/crm/customers/42"),
        token.clone(),
        false,
        32,
        3,
    )
    .await;
    println!("| path | requests/s |\n|---|---:|");
    println!("| MCP tools/call (decided, audited, forwarded) | {mcp:.0} |");
    println!("| proxied GET route (decided, audited, forwarded) | {route:.0} |");
    println!("| MCP / route | {:.2}× |", mcp / route);
    running.shutdown().await;
    if let Some(mut c) = py_server {
        let _ = c.kill();
        let _ = c.wait();
    }
}
