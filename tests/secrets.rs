//! Secret hygiene, end to end: the real binary with debug logging, a canary API key and real
//! tokens used every way (valid, revoked, tampered, misplaced), then every log line, audit
//! record, metric and error body is searched for them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::split;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const CANARY_KEY: &str = "act_canary_secret_9a8b7c6d5e4f3a2b1c0d";

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!("no log line containing {needle:?}; saw {:#?}", self.seen)
                });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "actgate exited with {status}");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        self.seen
    }
}

fn spawn(config: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--config",
            config.to_str().unwrap(),
        ])
        .env("ACTGATE_API_KEY", CANARY_KEY)
        .env("ACTGATE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc {
        child,
        lines: rx,
        seen: Vec::new(),
    }
}

#[tokio::test]
async fn no_token_or_api_key_ever_appears_in_logs_audit_metrics_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ proxy: \"127.0.0.1:0\", api: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\ndataDir: {}\napiKeys:\n  - {{ name: admin, fromEnv: ACTGATE_API_KEY }}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut proc = spawn(&config);
    let listening: Value = serde_json::from_str(&proc.wait_for("actgate listening")).unwrap();
    let api = format!("http://{}", listening["api"].as_str().unwrap());
    let admin = format!("http://{}", listening["admin"].as_str().unwrap());
    let client = Client::new();
    let mut bodies: Vec<String> = Vec::new();

    let post = |path: &str, key: &str, body: Value| {
        client
            .post(format!("{api}{path}"))
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
    };
    let (s, agent) = split(
        post("/v1/agents", CANARY_KEY, json!({"name": "a"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let agent = agent["id"].as_str().unwrap().to_string();
    post(
        "/v1/policies",
        CANARY_KEY,
        json!({"name": "p", "actions": ["read"], "resources": ["api://x/*"], "effect": "allow"}),
    )
    .await
    .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (s, t) = split(
            post("/v1/tokens", CANARY_KEY, json!({"agentId": agent}))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        tokens.push((
            t["token"].as_str().unwrap().to_string(),
            t["tokenId"].as_str().unwrap().to_string(),
        ));
    }
    let (token, _) = tokens[0].clone();
    let (revoked, revoked_id) = tokens[1].clone();
    client
        .delete(format!("{api}/v1/tokens/{revoked_id}"))
        .header("X-Api-Key", CANARY_KEY)
        .send()
        .await
        .unwrap();
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let attempts = vec![
        json!({"capabilityToken": token, "action": "read", "resourceId": "api://x/1"}),
        json!({"capabilityToken": token, "action": "delete", "resourceId": "api://x/1"}),
        json!({"capabilityToken": revoked, "action": "read", "resourceId": "api://x/1"}),
        json!({"capabilityToken": tampered, "action": "read", "resourceId": "api://x/1"}),
        json!({"capabilityToken": token, "action": "read"}),
        json!({"capabilityToken": token, "action": "read", "resourceId": "api://x/1", "tenantId": "elsewhere"}),
        json!({"capabilityToken": token, "action": "read", "resourceId": "api://x/1", "context": {"rows": "bad"}}),
        json!({"capabilityToken": token, "action": "read", "resourceId": "api://x/1", "unknown": token}),
    ];
    for body in attempts {
        let r = post("/v1/enforce", CANARY_KEY, body).await.unwrap();
        bodies.push(r.text().await.unwrap());
    }
    // Credentials in the wrong places.
    for key in [token.as_str(), "wrong-key", &format!("{CANARY_KEY}0")] {
        let r = post("/v1/agents", key, json!({"name": "x"})).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        bodies.push(r.text().await.unwrap());
    }
    // The index follows the log within a flush interval.
    let mut audit = String::new();
    for _ in 0..500 {
        audit = client
            .get(format!("{api}/v1/audit?limit=1000"))
            .header("X-Api-Key", CANARY_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if audit.contains("token_revoked") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        audit.contains("token_revoked"),
        "the attempts were audited: {audit}"
    );
    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logs = proc.stop();
    assert!(
        logs.iter().any(|l| l.contains("token issued")),
        "debug logs were captured"
    );

    let secrets = [CANARY_KEY, &token, &revoked, &tampered];
    // Any long piece of a token is as bad as the whole: check the signature part alone too.
    let sig_part = token.split('.').nth(2).unwrap()[100..160].to_string();
    for (what, text) in [
        ("logs", logs.join("\n")),
        ("audit", audit),
        ("metrics", metrics),
        ("error bodies", bodies.join("\n")),
    ] {
        for s in secrets.iter().copied().chain([sig_part.as_str()]) {
            assert!(!text.contains(s), "a secret appears in {what}");
        }
    }
    // And nothing on disk but the key file holds the API key.
    for entry in walk(dir.path()) {
        if entry.ends_with("admin.key") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CANARY_KEY), "API key in {}", entry.display());
        assert!(
            !text.contains(&token[10..80]),
            "token in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
