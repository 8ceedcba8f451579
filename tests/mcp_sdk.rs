//! The MCP gateway driven by clients and servers no one here wrote: the official MCP Python
//! SDK (`mcp` 2.x) as the agent's client — in its default mode, which probes `server/discover`
//! (2026-07-28), and pinned to the legacy `initialize` handshake (2025-11-25) — and its
//! `MCPServer` as the server behind actgate, over Streamable HTTP and over stdio.
//!
//! Each case asserts what the client saw and what the server executed (the server logs every
//! tool it runs): a refused call must leave no trace there. The Python environment is
//! `target/py-venv` (made by `scripts/test`, from `tests/requirements.txt`), or the
//! interpreter in `ACTGATE_PYTHON`. Without it the tests fail, saying how to make it, unless
//! `ACTGATE_SKIP_SDK_TESTS=1` asks to skip them (said loudly).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{KEY, TestGateway};
use serde_json::{Value, json};

/// The Python interpreter with the SDKs, or `None` when the tests are skipped on request.
pub fn python() -> Option<PathBuf> {
    if std::env::var("ACTGATE_SKIP_SDK_TESTS").as_deref() == Ok("1") {
        eprintln!("\n*** SKIPPED: the MCP SDK tests (ACTGATE_SKIP_SDK_TESTS=1) ***\n");
        return None;
    }
    let path = std::env::var("ACTGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python")
        });
    let ok = Command::new(&path)
        .args(["-c", "import mcp, mcp.server.mcpserver"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no Python with the MCP SDK at {}: run scripts/test (it creates target/py-venv from tests/requirements.txt), set ACTGATE_PYTHON, or ACTGATE_SKIP_SDK_TESTS=1 to skip",
        path.display()
    );
    Some(path)
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(python: &Path, log: &Path) -> Server {
    let mut child = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mcp/crm_server.py"))
        .arg("http")
        .env("EXECUTED_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    Server { child, port }
}

fn config(upstream: &str, log: &Path) -> String {
    let tools = r#"
    tools:
      get_customer: { action: read, resource: "api://crm/customers/{customer_id}", rows: { fixed: 1 } }
      list_customers: { action: list, resource: "api://crm/customers", rows: { argument: /limit } }
      send_email: { action: send_email, resource: "api://email/outbound", recipients: { arguments: [/to, /cc, /bcc] } }"#;
    format!(
        r#"
upstreams:
  {upstream}
  local: {{ command: ["{python}", "{server}", stdio], env: {{ EXECUTED_LOG: "{log}" }}, timeout: 20s }}
mcp:
  - name: crm
    path: /mcp/crm
    upstream: crm-mcp{tools}
  - name: crm-monitor
    path: /mcp/crm-monitor
    upstream: crm-mcp
    mode: monitor{tools}
  - name: local
    path: /mcp/local
    upstream: local{tools}
policies:
  - {{ name: read customers, actions: [read, list], resources: ["api://crm/customers", "api://crm/customers/*"], effect: allow, constraints: {{ maxRows: 100 }} }}
  - {{ name: email, actions: [send_email], resources: ["api://email/*"], effect: allow, constraints: {{ allowedDomains: ["yourcompany.com"] }} }}
  - {{ name: asking tools, actions: [call], resources: ["mcp://*/tools/greet_user", "mcp://*/tools/summarize"], effect: allow }}
  - {{ name: never delete, actions: [call], resources: ["mcp://*/tools/delete_*"], effect: deny }}
  - {{ name: resources, actions: [read], resources: ["mcp://*/resources/crm://customers/*"], effect: allow }}
  - {{ name: prompts, actions: [get], resources: ["mcp://*/prompts/greet"], effect: allow }}
"#,
        python = python()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        server = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/mcp/crm_server.py")
            .display(),
        log = log.display(),
    )
}

fn executed(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_client(python: &Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_sdk/client.py"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The full scenario through `path`, in `mode`; returns what the client saw.
async fn scenario(gw: &TestGateway, python: &Path, path: &str, mode: &str) -> Value {
    let agent = gw.agent().await;
    let (token, token_id) = gw.token(&agent).await;
    let other = gw.agent().await;
    let (other_token, _) = gw.token(&other).await;
    let url = format!("{}{path}", gw.proxy);
    let (python, api, mode) = (python.to_path_buf(), gw.api.clone(), mode.to_string());
    tokio::task::spawn_blocking(move || {
        run_client(
            &python,
            &[
                &url,
                &token,
                &mode,
                "--other-token",
                &other_token,
                "--api",
                &api,
                "--admin-key",
                KEY,
                "--token-id",
                &token_id,
            ],
        )
    })
    .await
    .unwrap()
}

fn check(out: &Value, mode: &str) {
    let text = |k: &str| out[k]["text"].as_str().unwrap_or_default().to_string();
    let want_protocol = if mode == "legacy" {
        "2025-11-25"
    } else {
        "2026-07-28"
    };
    assert_eq!(out["protocol"], want_protocol, "{out}");
    assert_eq!(
        out["tools"],
        json!([
            "get_customer",
            "greet_user",
            "list_customers",
            "send_email",
            "summarize"
        ]),
        "delete_customer is hidden: {out}"
    );
    assert_eq!(out["resources"], json!(["crm://customers/42"]));
    assert_eq!(out["prompts"], json!(["greet"]));
    assert_eq!(
        out["allowed"],
        json!({"isError": false, "text": "customer 42: Ada Lovelace"})
    );
    assert_eq!(
        text("rows_default"),
        "100 customers",
        "the limit was set: {out}"
    );
    assert_eq!(out["denied_delete"]["isError"], true);
    assert!(text("denied_delete").contains("explicit_deny"), "{out}");
    assert!(text("denied_rows").contains("maxRows 500 > 100"), "{out}");
    assert!(text("denied_bcc").contains("constraint_violated"), "{out}");
    assert_eq!(out["allowed_email"]["isError"], false);
    assert_eq!(out["wildcard"]["error"], -32602, "{out}");
    assert_eq!(out["traversal"]["error"], -32602, "{out}");
    assert_eq!(
        text("elicit"),
        "Hello, Ada!",
        "the elicitation went through: {out}"
    );
    assert_eq!(
        text("sample"),
        "LLM said: Blue",
        "the sampling went through: {out}"
    );
    assert_eq!(out["resource_allowed"], true);
    assert_eq!(out["resource_denied"]["error"], -32003, "{out}");
    assert_eq!(out["prompt_denied"]["error"], -32003, "{out}");
    assert_eq!(out["batch"], json!({"status": 400, "code": -32600}));
    if mode == "legacy" {
        assert_eq!(out["hijack"]["status"], 403, "{out}");
    }
    assert_eq!(out["revoke_status"], 200);
    assert!(
        out["after_revoke"].get("ok").is_none(),
        "a revoked token's session ends: {out}"
    );
}

fn check_executed(log: &Path) {
    let ran: Vec<(String, Value)> = executed(log)
        .into_iter()
        .map(|e| (e["tool"].as_str().unwrap().to_string(), e["args"].clone()))
        .collect();
    let names: Vec<&str> = ran.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "get_customer",
            "list_customers",
            "send_email",
            "greet_user",
            "summarize"
        ],
        "exactly the allowed calls ran: {ran:?}"
    );
    assert_eq!(ran[0].1, json!({"customer_id": "42"}));
    assert_eq!(ran[1].1, json!({"limit": 100}));
    assert_eq!(ran[2].1["bcc"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_through_actgate_over_http_in_both_protocol_revisions() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("executed.jsonl");
    let server = start_server(&py, &log);
    let upstream = format!(
        "crm-mcp: {{ url: \"http://127.0.0.1:{}/mcp\", timeout: 20s }}",
        server.port
    );
    let gw = TestGateway::start(&config(&upstream, &log)).await;
    for mode in ["auto", "legacy"] {
        let out = scenario(&gw, &py, "/mcp/crm", mode).await;
        check(&out, mode);
        check_executed(&log);
        std::fs::remove_file(&log).unwrap();
    }
    // Monitor mode: the would-be denial runs, and is audited as such.
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let url = format!("{}/mcp/crm-monitor", gw.proxy);
    let py2 = py.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_client(&py2, &[&url, &token, "auto", "--scenario", "delete-only"])
    })
    .await
    .unwrap();
    assert_eq!(out["delete"]["text"], "deleted", "{out}");
    assert_eq!(executed(&log).len(), 1);
    let events = gw.audit_events(1).await;
    let shadow = events
        .iter()
        .find(|e| e["tool"] == "delete_customer" && e["enforced"] == false);
    assert!(
        shadow.is_some_and(|e| e["reason"] == "explicit_deny"),
        "{events:#?}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_through_actgate_to_a_stdio_server_in_both_protocol_revisions() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("executed.jsonl");
    // The HTTP upstream is unused here; the stdio one is started by actgate.
    let gw = TestGateway::start(&config(
        "crm-mcp: { url: \"http://127.0.0.1:9/mcp\" }",
        &log,
    ))
    .await;
    for mode in ["auto", "legacy"] {
        let out = scenario(&gw, &py, "/mcp/local", mode).await;
        check(&out, mode);
        check_executed(&log);
        std::fs::remove_file(&log).unwrap();
    }
}

/// The official TypeScript SDK (`@modelcontextprotocol/client`, `tests/mcp_sdk/`, installed by
/// `npm ci` in scripts/test) as a second client, in both protocol revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_through_actgate_in_both_protocol_revisions() {
    let Some(py) = python() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/mcp_sdk/node_modules/@modelcontextprotocol/client")
            .exists(),
        "run `npm ci` in tests/mcp_sdk (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("executed.jsonl");
    let server = start_server(&py, &log);
    let upstream = format!(
        "crm-mcp: {{ url: \"http://127.0.0.1:{}/mcp\", timeout: 20s }}",
        server.port
    );
    let gw = TestGateway::start(&config(&upstream, &log)).await;
    for mode in ["auto", "legacy"] {
        let agent = gw.agent().await;
        let (token, _) = gw.token(&agent).await;
        let url = format!("{}/mcp/crm", gw.proxy);
        let script = root.join("tests/mcp_sdk/client.mjs");
        let out = tokio::task::spawn_blocking(move || {
            Command::new("node")
                .arg(script)
                .args([&url, &token, mode])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let want = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert_eq!(v["protocol"], want, "{v}");
        assert_eq!(
            v["tools"],
            json!([
                "get_customer",
                "greet_user",
                "list_customers",
                "send_email",
                "summarize"
            ])
        );
        assert_eq!(
            v["allowed"],
            json!({"isError": false, "text": "customer 42: Ada Lovelace"})
        );
        assert_eq!(v["denied_delete"]["isError"], true);
        assert!(
            v["denied_rows"]["text"]
                .as_str()
                .unwrap()
                .contains("maxRows 500 > 100"),
            "{v}"
        );
        assert!(v["wildcard"].get("ok").is_none(), "{v}");
        assert_eq!(v["elicit"]["text"], "Hello, Ada!", "{v}");
        assert_eq!(v["sample"]["text"], "LLM said: Blue", "{v}");
        let ran: Vec<String> = executed(&log)
            .iter()
            .map(|e| e["tool"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ran, ["get_customer", "greet_user", "summarize"], "{ran:?}");
        std::fs::remove_file(&log).unwrap();
    }
    drop(server);
}
