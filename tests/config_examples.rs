//! Every YAML file under `config/` is a valid config, and the binary's `config validate`
//! and `check` behave as documented on the shipped config and on broken ones.

use std::path::Path;
use std::process::Command;

mod common;

use actgate::config::Config;

#[test]
fn every_shipped_config_validates() {
    let mut seen = 0;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("config")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The examples too, but tls.yaml, whose certificate files are the user's (the TLS tests
    // generate their own).
    files.extend(
        std::fs::read_dir("config/examples")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.ends_with("tls.yaml")),
    );
    for overlay in ["sidecar", "gateway"] {
        files.push(
            Path::new("deploy/kubernetes")
                .join(overlay)
                .join("actgate.yaml"),
        );
    }
    for path in files {
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            if let Err(e) = Config::load(&path) {
                panic!("{} is invalid:\n{e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "config/ and the two Kubernetes configs");
}

#[test]
fn embedded_default_is_the_shipped_file() {
    let shipped = std::fs::read_to_string("config/actgate.yaml").unwrap();
    assert_eq!(shipped, actgate::config::EMBEDDED);
}

fn actgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_validate_prints_ok_or_every_problem_and_exits_2() {
    let (code, out, _) = actgate(&["config", "validate", "--config", "config/actgate.yaml"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("OK"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"
upstreams: { crm: { url: "http://127.0.0.1:9001" } }
routes:
  - { name: r, method: GET, path: "/crm/{id}", upstream: crm, action: read, resource: "api://crm/{cid}" }
policies:
  - { name: a, actions: [read], resources: ["x"], effect: allow }
  - { name: b, actions: [read], resources: ["x"], effect: allow, constraints: { maxRow: 1 } }
  - { name: c, actions: [read], resources: ["x"], effect: allow, constraints: { maxRow: 1 } }
"#,
    )
    .unwrap();
    let (code, _, err) = actgate(&["config", "validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("routes[0].resource: unknown placeholder {cid}; the path has {id}"),
        "{err}"
    );
    assert!(
        err.contains("policies[2].constraints.maxRow: unknown constraint; known: maxRows, allowedDomains, readOnly"),
        "{err}"
    );
    assert!(err.contains("policies[1].constraints.maxRow"), "{err}");

    let (code, _, err) = actgate(&[
        "config",
        "validate",
        "--config",
        "/nonexistent/actgate.yaml",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read /nonexistent/actgate.yaml"),
        "{err}"
    );
}

#[test]
fn check_exits_0_when_allowed_1_when_denied_2_on_bad_input() {
    // The shipped config, its data in a fresh directory, with agent_1 registered (as code):
    // `check` decides as the gateway would, and the gateway denies an unregistered agent.
    let shipped = "config/actgate.yaml";
    assert!(Path::new(shipped).exists());
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(shipped).unwrap().replace(
        "dataDir: ./data",
        &format!("dataDir: {}", dir.path().join("data").display()),
    ) + "\nagents:\n  - { id: agent_1, name: Analyst }\n";
    let path = dir.path().join("actgate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let cfg = path.to_str().unwrap();
    let (code, out, _) = actgate(&[
        "check",
        "--config",
        cfg,
        "--agent",
        "agent_unregistered",
        "--action",
        "query",
        "--resource",
        "api://analytics/sales",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("reason:   agent_revoked"), "{out}");
    assert!(
        out.contains("is not registered in tenant default-tenant")
            && out.contains("the policies alone would answer: allowed"),
        "{out}"
    );
    let (code, out, _) = actgate(&[
        "check",
        "--config",
        cfg,
        "--agent",
        "agent_1",
        "--action",
        "query",
        "--resource",
        "api://analytics/sales",
        "--context",
        r#"{"rows": 10}"#,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("decision: allowed"));
    assert!(
        out.contains("obligations: {\"maxRows\":1000,\"readOnly\":true}"),
        "{out}"
    );

    let (code, out, _) = actgate(&[
        "check",
        "--config",
        cfg,
        "--agent",
        "agent_1",
        "--action",
        "delete",
        "--resource",
        "api://crm/customers/42",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("reason:   explicit_deny"), "{out}");
    assert!(out.contains("pol_never-delete-customers"), "{out}");
    assert!(out.contains("matches: deny"), "{out}");

    let (code, out, _) = actgate(&[
        "check",
        "--config",
        cfg,
        "--agent",
        "agent_1",
        "--action",
        "query",
        "--resource",
        "api://analytics/sales",
        "--context",
        r#"{"rows": 5000}"#,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("maxRows 5000 > 1000"), "{out}");

    let (code, _, err) = actgate(&[
        "check",
        "--config",
        cfg,
        "--agent",
        "a",
        "--action",
        "read",
        "--resource",
        "x",
        "--context",
        "[1]",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--context must be a JSON object"), "{err}");
    let (code, _, _) = actgate(&["check", "--config", cfg]);
    assert_eq!(code, 2);
}

/// An example config made runnable here: ephemeral ports, a temporary data directory, the
/// tests' API key; parsed.
fn local(text: &str, data_dir: &str, tmp: &Path) -> Config {
    let text = text
        .replace(
            "{ proxy: 127.0.0.1:8080, api: 127.0.0.1:8081, admin: 127.0.0.1:9464 }",
            "{ proxy: 127.0.0.1:0, api: 127.0.0.1:0, admin: 127.0.0.1:0 }",
        )
        .replace(data_dir, &tmp.join("data").display().to_string())
        .replace(
            "{ name: admin, fromEnv: ACTGATE_API_KEY }",
            &format!(
                "{{ name: admin, sha256: {} }}",
                common::sha256_hex(common::KEY)
            ),
        );
    Config::parse(&text, "example").unwrap_or_else(|p| panic!("{p}"))
}

/// The book shows `config/examples/*.yaml` verbatim, and each example decides as it says:
/// a request that must be allowed and one that must be denied per route, against a real
/// upstream (the file's addresses swapped for the test's).
#[tokio::test]
async fn the_proxy_example_is_the_book_s_and_decides_as_documented() {
    let file = std::fs::read_to_string("config/examples/proxy.yaml").unwrap();
    let page = std::fs::read_to_string("docs/src/proxy.md").unwrap();
    let shown = page
        .split("<!-- config/examples/proxy.yaml -->\n```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```\n").next())
        .expect("docs/src/proxy.md shows the example");
    assert_eq!(
        shown, file,
        "docs/src/proxy.md shows config/examples/proxy.yaml as it is"
    );

    let up = common::upstream::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = file
        .replace("http://127.0.0.1:9001", &up.url())
        .replace("http://127.0.0.1:9003", &up.url());
    let config = local(&text, "./data-proxy-example", dir.path());
    assert!(actgate::config::lint::warnings(&config, &[]).is_empty());
    let running = actgate::server::start(config).await.unwrap();
    let (api, proxy) = (
        format!("http://{}", running.api),
        format!("http://{}", running.proxy),
    );
    let (_, token) = common::agent_and_token(&api).await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{proxy}{path}"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get("/crm/customers/42").await.unwrap().status(), 200);
    assert_eq!(get("/crm/customers").await.unwrap().status(), 200);
    assert_eq!(get("/crm/customers?limit=50").await.unwrap().status(), 200);
    let r = get("/crm/customers?limit=500").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["reason"],
        "constraint_violated"
    );
    let mail = |to: &str| {
        http.post(format!("{proxy}/email/send"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(serde_json::json!({"to": to, "subject": "hi"}).to_string())
            .send()
    };
    assert_eq!(mail("bob@yourcompany.com").await.unwrap().status(), 200);
    let r = mail("eve@evil.com").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["reason"],
        "constraint_violated"
    );
    running.shutdown().await;
}

/// Every YAML block of the book is an example file, whole (`<!-- config/examples/X.yaml -->`)
/// or in part (`<!-- from config/examples/X.yaml -->`: each of its lines is a line of the
/// file), so no config snippet exists only on the page.
#[test]
fn every_yaml_block_in_the_book_is_an_example_file() {
    let mut blocks = 0;
    for entry in std::fs::read_dir("docs/src").unwrap() {
        let path = entry.unwrap().path();
        let page = std::fs::read_to_string(&path).unwrap();
        let mut previous = "";
        let mut lines = page.lines();
        while let Some(line) = lines.next() {
            if line == "```yaml" {
                blocks += 1;
                let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
                let (whole, name) = if let Some(n) = previous
                    .strip_prefix("<!-- from ")
                    .and_then(|r| r.strip_suffix(" -->"))
                {
                    (false, n)
                } else if let Some(n) = previous
                    .strip_prefix("<!-- ")
                    .and_then(|r| r.strip_suffix(" -->"))
                {
                    (true, n)
                } else {
                    panic!(
                        "{}: a yaml block without its example file (<!-- config/examples/X.yaml --> before it)",
                        path.display()
                    );
                };
                let file = std::fs::read_to_string(name)
                    .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
                if whole {
                    assert_eq!(block.join("\n") + "\n", file, "{}: {name}", path.display());
                } else {
                    let file_lines: Vec<&str> = file.lines().collect();
                    for l in block {
                        assert!(
                            file_lines.contains(&l),
                            "{}: this line is not in {name}: {l}",
                            path.display()
                        );
                    }
                }
            }
            if !line.trim().is_empty() {
                previous = line;
            }
        }
    }
    assert!(blocks >= 6, "the book's yaml blocks: {blocks}");
}

/// Agents as code: a token for the active agent works, one for the revoked agent is denied.
#[tokio::test]
async fn the_agents_example_decides_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("config/examples/agents.yaml").unwrap();
    let config = local(&text, "./data-agents-example", dir.path());
    assert!(actgate::config::lint::warnings(&config, &[]).is_empty());
    let running = actgate::server::start(config).await.unwrap();
    let api = format!("http://{}", running.api);
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{api}{path}"))
            .header("X-Api-Key", common::KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let r = post(
        "/v1/tokens",
        serde_json::json!({"agentId": "agent_support"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"].clone();
    let d: serde_json::Value = post(
        "/v1/enforce",
        serde_json::json!({"capabilityToken": token, "action": "read", "resourceId": "api://crm/customers/1"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(d["decision"], "allowed", "{d}");
    // The revoked agent gets no token at all.
    let r = post(
        "/v1/tokens",
        serde_json::json!({"agentId": "agent_retired"}),
    )
    .await
    .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    running.shutdown().await;
}

/// The TLS example validates once its certificate files exist (generated here).
#[test]
fn the_tls_example_validates_with_real_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["crm.internal".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let mut text = std::fs::read_to_string("config/examples/tls.yaml").unwrap();
    for (path, pem) in [
        ("/etc/actgate/tls/tls.crt", leaf.pem()),
        ("/etc/actgate/tls/tls.key", leaf_key.serialize_pem()),
        ("/etc/actgate/tls/ca.crt", ca_cert.pem()),
        ("/etc/actgate/crm-ca.crt", ca_cert.pem()),
        ("/etc/actgate/crm-client.crt", leaf.pem()),
        ("/etc/actgate/crm-client.key", leaf_key.serialize_pem()),
    ] {
        let file = dir
            .path()
            .join(path.trim_start_matches('/').replace('/', "_"));
        std::fs::write(&file, pem).unwrap();
        text = text.replace(path, &file.display().to_string());
    }
    let config = Config::parse(&text, "tls example").unwrap_or_else(|p| panic!("{p}"));
    assert!(config.tls.proxy.is_some() && config.tls.api.is_some());
}
