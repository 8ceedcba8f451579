//! Metrics a dashboard can trust: the live `/metrics` passes `promtool check metrics`, the
//! alert rules pass `promtool check rules`, every metric the shipped dashboard and rules use
//! is exported by a running actgate, and no label carries a token, agent id, resource or path.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use common::upstream::Upstream;
use common::{KEY, TestGateway};
use serde_json::json;

fn promtool() -> String {
    let path = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let found = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool not found: install Debian's `prometheus` package (scripts/test does) or set PROMTOOL"
    );
    path
}

/// Every `actgate_…` metric name an expression mentions, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("actgate_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base;
            }
        }
        out.insert(name.to_string());
        i = end;
    }
    out
}

async fn traffic() -> (TestGateway, Upstream, String, String) {
    let up = Upstream::start().await;
    let extra = format!(
        r#"
upstreams:
  crm: {{ url: "{0}", timeout: 5s }}
  crm-mcp: {{ url: "{0}/mcp", timeout: 5s }}
  down: {{ url: "http://127.0.0.1:1", timeout: 5s }}
mcp:
  - {{ name: crm, path: /mcp/crm, upstream: crm-mcp, tools: {{ get_customer: {{ action: read, resource: "api://crm/customers/{{customer_id}}" }} }} }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}" }}
  - {{ name: down, method: GET, path: /down, upstream: down, action: read, resource: "api://crm/customers/down" }}
  - {{ name: get-account, method: GET, path: "/crm/accounts/{{id}}", upstream: crm, action: read, resource: "api://crm/accounts/{{id}}" }}
policies:
  - {{ name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow }}
"#,
        up.url()
    );
    let gw = TestGateway::start(&extra).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    for path in ["/crm/customers/1", "/crm/customers/1", "/down"] {
        gw.client
            .get(format!("{}{path}", gw.proxy))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    gw.client
        .get(format!("{}/crm/accounts/1", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    gw.client
        .get(format!("{}/crm/customers/2", gw.proxy))
        .bearer_auth("v4.public.forged")
        .send()
        .await
        .unwrap();
    gw.enforce(&token, "read", "api://crm/customers/9", json!({}))
        .await;
    // An MCP tool call (denied: no policy allows `call` on it), answered by actgate.
    gw.client
        .post(format!("{}/mcp/crm", gw.proxy))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"export_all"}}"#)
        .send()
        .await
        .unwrap();
    gw.audit_events(3).await;
    (gw, up, token, agent)
}

#[tokio::test]
async fn live_metrics_pass_promtool_and_cover_the_dashboard_and_alerts() {
    let promtool = promtool();
    let (gw, _up, token, agent) = traffic().await;
    let metrics = gw.metrics().await;

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(&promtool)
        .args(["check", "rules", "deploy/prometheus/alerts.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let exported: BTreeSet<String> = metrics
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/actgate.json").unwrap())
            .unwrap();
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        // Rows have no queries of their own.
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let rules = std::fs::read_to_string("deploy/prometheus/alerts.yaml").unwrap();
    for (what, text) in [("dashboard", exprs), ("alert rules", rules)] {
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{what} uses {used:?}");
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} uses metrics actgate does not export: {missing:?}"
        );
    }

    // What the traffic did is visible.
    for needle in [
        r#"actgate_decisions_total{decision="allowed",reason="allowed",source="proxy"} 3"#,
        r#"actgate_decisions_total{decision="denied",reason="no_matching_policy",source="proxy"} 1"#,
        r#"actgate_decisions_total{decision="denied",reason="token_invalid",source="proxy"} 1"#,
        r#"actgate_decisions_total{decision="allowed",reason="allowed",source="enforce"} 1"#,
        r#"actgate_token_rejections_total{reason="token_invalid"} 1"#,
        r#"actgate_upstream_responses_total{outcome="2xx",upstream="crm"} 2"#,
        r#"actgate_upstream_responses_total{outcome="error",upstream="down"} 1"#,
        r#"actgate_build_info{version=""#,
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // Bounded labels: nothing request-specific.
    for secret in [
        token.as_str(),
        agent.as_str(),
        "api://crm",
        "/crm/customers",
        KEY,
    ] {
        assert!(!metrics.contains(secret), "{secret} appears in /metrics");
    }
}

#[tokio::test]
async fn per_agent_labels_are_opt_in_and_capped() {
    let gw = TestGateway::start("metrics: { perAgentLabels: true, maxAgentLabels: 2 }\n").await;
    let mut agents = Vec::new();
    for _ in 0..4 {
        let a = gw.agent().await;
        let (t, _) = gw.token(&a).await;
        gw.enforce(&t, "read", "api://x/1", json!({})).await;
        agents.push(a);
    }
    let metrics = gw.metrics().await;
    let labelled: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("actgate_agent_decisions_total{"))
        .collect();
    assert_eq!(labelled.len(), 3, "two agents and `other`: {labelled:?}");
    assert!(
        labelled
            .iter()
            .any(|l| l.contains(r#"agent="other""#) && l.ends_with(" 2"))
    );
    assert!(labelled.iter().any(|l| l.contains(&agents[0])));
    // Off by default.
    let plain = TestGateway::start("").await;
    let metrics = plain.metrics().await;
    assert!(!metrics.contains("actgate_agent_decisions_total{"));
}
