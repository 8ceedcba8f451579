//! Test harness: a real actgate on 127.0.0.1 with ephemeral ports, a temporary data
//! directory, known API keys (two tenants), and a real HTTP client.
#![allow(dead_code)]

#[path = "policies.rs"]
pub mod policies;
#[path = "process.rs"]
pub mod process;
#[path = "upstream.rs"]
pub mod upstream;

use std::path::{Path, PathBuf};

use actgate::config::Config;
use actgate::server::{Running, start};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The API key of tenant `default-tenant` in every test. A canary: it must never appear in a
/// log line, audit record, metric or error body.
pub const KEY: &str = "act_canary_key_5f1d9e8c7b6a5f4e3d2c1b0a";
/// The API key of tenant `other`.
pub const OTHER_KEY: &str = "act_other_tenant_key_0123456789abcdef";

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The config every test starts from; `extra` is appended (routes, policies, upstreams).
pub fn config_yaml(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"
listen: {{ proxy: "127.0.0.1:0", api: "127.0.0.1:0", admin: "127.0.0.1:0" }}
dataDir: {data}
tenant: default-tenant
apiKeys:
  - {{ name: test, sha256: {k1} }}
  - {{ name: other, sha256: {k2}, tenant: other }}
tokens: {{ defaultTtl: 1h, maxTtl: 24h, clockSkew: 5s, cacheCapacity: 1000 }}
{extra}
"#,
        data = data_dir.display(),
        k1 = sha256_hex(KEY),
        k2 = sha256_hex(OTHER_KEY),
    )
}

/// A running gateway and a client for it.
pub struct TestGateway {
    pub running: Option<Running>,
    /// `http://127.0.0.1:port` of the proxy.
    pub proxy: String,
    pub dir: tempfile::TempDir,
    pub api: String,
    pub admin: String,
    pub client: Client,
}

impl TestGateway {
    pub async fn start(extra: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> TestGateway {
        let yaml = config_yaml(&dir.path().join("data"), extra);
        let config =
            Config::parse(&yaml, "test").unwrap_or_else(|p| panic!("test config invalid:\n{p}"));
        let running = start(config).await.expect("gateway starts");
        TestGateway {
            proxy: format!("http://{}", running.proxy),
            api: format!("http://{}", running.api),
            admin: format!("http://{}", running.admin),
            running: Some(running),
            dir,
            client: Client::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Shuts down and returns the temporary directory (to restart on it).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.api))
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        split(r).await
    }

    pub async fn raw_post(
        &self,
        path: &str,
        key: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.api))
            .header("X-Api-Key", key)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        split(r).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.api))
            .header("X-Api-Key", key)
            .send()
            .await
            .unwrap();
        split(r).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .delete(format!("{}{path}", self.api))
            .header("X-Api-Key", key)
            .send()
            .await
            .unwrap();
        split(r).await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .put(format!("{}{path}", self.api))
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        split(r).await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics_at(self.admin.trim_start_matches("http://")).await
    }

    /// Registers an agent in the default tenant and returns its id.
    pub async fn agent(&self) -> String {
        let (s, body) = self
            .post(
                "/v1/agents",
                KEY,
                json!({"name": "OpenAI Customer Support Assistant"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Issues a token for `agent` and returns (token, tokenId).
    pub async fn token(&self, agent: &str) -> (String, String) {
        let (s, body) = self
            .post(
                "/v1/tokens",
                KEY,
                json!({"agentId": agent, "expiresIn": 3600}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        (
            body["token"].as_str().unwrap().to_string(),
            body["tokenId"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a policy in the default tenant and returns its id.
    pub async fn policy(&self, body: Value) -> String {
        let (s, out) = self.post("/v1/policies", KEY, body).await;
        assert_eq!(s, StatusCode::CREATED, "{out}");
        out["id"].as_str().unwrap().to_string()
    }

    /// The tenant's audit events once at least `n` are indexed (batched durability commits
    /// within a flush interval), newest first.
    pub async fn audit_events(&self, n: usize) -> Vec<Value> {
        for _ in 0..500 {
            let (_, body) = self.get("/v1/audit?limit=1000", KEY).await;
            let events = body["events"].as_array().cloned().unwrap_or_default();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} audit events after 5 s");
    }

    /// `POST /v1/enforce` as the ACT guide's helper sends it.
    pub async fn enforce(
        &self,
        token: &str,
        action: &str,
        resource: &str,
        context: Value,
    ) -> Value {
        let (s, body) = self
            .post(
                "/v1/enforce",
                KEY,
                json!({
                    "requestId": "3f2b8a9e-1c4d-4e5f-8a7b-6c5d4e3f2a1b",
                    "capabilityToken": token,
                    "action": action,
                    "resourceId": resource,
                    "tenantId": "default-tenant",
                    "context": context,
                }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body
    }
}

pub async fn split(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Sends raw bytes to `addr` and returns everything it answers until it closes the connection
/// (or 5 s pass). For requests no HTTP client library would send.
pub async fn raw(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw answer (0 when there is none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Registers an agent and issues it a token through the API at `api` (for gateways started
/// as a process or with a custom config). Returns (agent id, token).
pub async fn agent_and_token(api: &str) -> (String, String) {
    let client = Client::new();
    let agent: Value = client
        .post(format!("{api}/v1/agents"))
        .header("X-Api-Key", KEY)
        .header("content-type", "application/json")
        .body(r#"{"name": "test agent"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = agent["id"].as_str().expect("agent created").to_string();
    let tok: Value = client
        .post(format!("{api}/v1/tokens"))
        .header("X-Api-Key", KEY)
        .header("content-type", "application/json")
        .body(json!({ "agentId": agent }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        agent,
        tok["token"].as_str().expect("token issued").to_string(),
    )
}

/// The `/metrics` text served on an admin address (`host:port`).
pub async fn metrics_at(admin: &str) -> String {
    let r = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}
