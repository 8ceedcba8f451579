//! Security operations: signing keys retired on a running gateway, token lifetimes held to
//! `tokens.maxTtl`, API keys with roles, weak keys refused, every refusal audited, no panic on
//! extreme numbers, `audit verify` agreeing with `serve`, and `check` agreeing with
//! `/v1/enforce`. One test per item of the security-operations issue; the operational ones
//! run the real binary.

mod common;

use std::time::{Duration, Instant};

use common::process::{Proc, actgate};
use common::upstream::Upstream;
use common::{KEY, OTHER_KEY, TestGateway, config_yaml, raw, raw_status, sha256_hex};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn routes(up: &Upstream) -> String {
    format!(
        r#"
limits: {{ maxBodyBytes: 2048 }}
upstreams:
  crm: {{ url: "{up}", timeout: 5s }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}", rows: {{ fixed: 1 }} }}
  - {{ name: send-email, method: POST, path: /email/send, upstream: crm, action: send_email, resource: "api://email/outbound", recipients: {{ json: [/to] }} }}
policies:
  - {{ name: read customers, actions: [read], resources: ["api://crm/customers/*"], effect: allow }}
  - {{ name: email, actions: [send_email], resources: ["api://email/*"], effect: allow, constraints: {{ allowedDomains: ["yourcompany.com"] }} }}
"#,
        up = up.url()
    )
}

async fn json_post(url: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("X-Api-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    common::split(r).await
}

async fn enforce_at(api: &str, token: &str) -> Value {
    let (s, body) = json_post(
        &format!("{api}/v1/enforce"),
        KEY,
        json!({"capabilityToken": token, "action": "read", "resourceId": "api://crm/customers/1"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

// 1. Keys -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_retired_key_stops_verifying_on_a_running_gateway_within_seconds() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actgate.yaml");
    std::fs::write(&config, config_yaml(&dir.path().join("data"), &routes(&up))).unwrap();
    let cfg = config.to_str().unwrap();
    let gw = Proc::spawn(&config, &[]);
    let (_, old_token) = common::agent_and_token(&gw.api).await;
    assert_eq!(enforce_at(&gw.api, &old_token).await["decision"], "allowed");

    let (code, out, _) = actgate(&["keys", "list", "--config", cfg]);
    assert_eq!(code, 0);
    let old_kid = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(out.lines().nth(1).unwrap().contains("active"), "{out}");

    // Rotate: the old key verifies on, the new one signs.
    let (code, out, err) = actgate(&["keys", "rotate", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let new_kid = out.split_whitespace().nth(3).unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    let (code, out, _) = actgate(&["keys", "list", "--config", cfg]);
    assert_eq!(code, 0);
    let line = |kid: &str| {
        out.lines()
            .find(|l| l.starts_with(kid))
            .unwrap_or_else(|| panic!("{kid} not in\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line(&old_kid)[1], "verify-only", "{out}");
    assert_eq!(
        line(&old_kid)[3],
        "1",
        "one token still valid under it: {out}"
    );
    assert_eq!(line(&new_kid)[1], "active", "{out}");

    // The active key cannot be retired; an unknown one is named.
    let (code, _, err) = actgate(&["keys", "retire", "--config", cfg, &new_kid]);
    assert_eq!(code, 1);
    assert!(
        err.contains("active signing key") && err.contains("keys rotate` first"),
        "{err}"
    );
    let (code, _, err) = actgate(&["keys", "retire", "--config", cfg, "knope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no key knope"), "{err}");

    // Wait for the running gateway to sign with the new key, then retire the old one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_token = loop {
        let (_, t) = common::agent_and_token(&gw.api).await;
        if t.ends_with(&footer(&new_kid)) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never signed with {new_kid}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (code, _, err) = actgate(&["keys", "retire", "--config", cfg, &old_kid]);
    assert_eq!(code, 0, "{err}");
    let retired_at = Instant::now();
    loop {
        let d = enforce_at(&gw.api, &old_token).await;
        if d["reason"] == "token_invalid" {
            break;
        }
        assert!(
            retired_at.elapsed() < Duration::from_secs(10),
            "the old token still verifies 10 s after its key was retired: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Through the proxy too (the token cache was emptied), while the new key's tokens work.
    assert_eq!(
        proxy_status(&gw.proxy, &old_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(enforce_at(&gw.api, &new_token).await["decision"], "allowed");
    let (code, out, _) = actgate(&["keys", "list", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("retired") && out.contains("refused"), "{out}");
    let keys_dir = dir.path().join("data/keys");
    assert!(
        !keys_dir.join(format!("{old_kid}.key")).exists(),
        "secret half deleted"
    );
    assert!(
        keys_dir.join(format!("{old_kid}.pub")).exists(),
        "public half kept"
    );
    gw.stop();
}

/// Points `mounted/..data` at a new `..<version>` directory holding `signing-keys`, as the
/// kubelet updates a mounted Secret (`signing-keys -> ..data/signing-keys`, `..data` swapped
/// atomically, the old directory removed).
fn mount_secret(mounted: &std::path::Path, export: &std::path::Path, version: u32) {
    use std::os::unix::fs::symlink;
    let dir = mounted.join(format!("..v{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(export, dir.join("signing-keys")).unwrap();
    let tmp = mounted.join("..data_tmp");
    symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, mounted.join("..data")).unwrap();
    let link = mounted.join("signing-keys");
    if link.symlink_metadata().is_err() {
        symlink("..data/signing-keys", &link).unwrap();
    }
    if version > 1 {
        std::fs::remove_dir_all(mounted.join(format!("..v{}", version - 1))).unwrap();
    }
}

#[tokio::test]
async fn an_exported_key_set_mounted_as_a_secret_signs_read_only_and_follows_a_new_export() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The operator's key directory, where keys are made, rotated and retired.
    let source = dir.path().join("source.yaml");
    std::fs::write(&source, config_yaml(&dir.path().join("source"), "")).unwrap();
    let src = source.to_str().unwrap();
    let (code, out, err) = actgate(&["keys", "rotate", "--config", src]);
    assert_eq!(code, 0, "{err}");
    let first_kid = out.split_whitespace().nth(3).unwrap().to_string();
    let export = dir.path().join("signing-keys");
    let export_keys = || {
        actgate(&[
            "keys",
            "export",
            "--config",
            src,
            "--out",
            export.to_str().unwrap(),
        ])
    };
    let (code, out, err) = export_keys();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(1 key from") && out.contains("keep it out of git"),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The gateway's key directory is the mounted Secret: the export and nothing else.
    let mounted = dir.path().join("mounted");
    mount_secret(&mounted, &export, 1);
    let config = dir.path().join("actgate.yaml");
    let yaml = config_yaml(&dir.path().join("data"), &routes(&up)).replace(
        "cacheCapacity: 1000 }",
        &format!("cacheCapacity: 1000, keysDir: {} }}", mounted.display()),
    );
    std::fs::write(&config, yaml).unwrap();
    let cfg = config.to_str().unwrap();
    let gw = Proc::spawn(&config, &[]);
    let (_, old_token) = common::agent_and_token(&gw.api).await;
    assert!(
        old_token.ends_with(&footer(&first_kid)),
        "signed with the exported key"
    );
    assert_eq!(enforce_at(&gw.api, &old_token).await["decision"], "allowed");
    let (code, out, _) = actgate(&["keys", "list", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(
        out.lines().nth(1).unwrap().starts_with(&first_kid) && out.contains("active"),
        "{out}"
    );
    // Read-only where it is mounted: the way to change it is said.
    for args in [
        vec!["keys", "rotate"],
        vec!["keys", "retire", first_kid.as_str()],
    ] {
        let (code, _, err) = actgate(&[&args[..], &["--config", cfg]].concat());
        assert_eq!(code, 1);
        assert!(
            err.contains("read-only") && err.contains("actgate keys export"),
            "{err}"
        );
    }
    assert!(!mounted.join("active").exists());

    // Rotate and retire at the source, export again, update the Secret: the running gateway
    // signs with the new key and refuses the retired key's tokens within seconds.
    let (code, out, err) = actgate(&["keys", "rotate", "--config", src]);
    assert_eq!(code, 0, "{err}");
    let new_kid = out.split_whitespace().nth(3).unwrap().to_string();
    let (code, _, err) = actgate(&["keys", "retire", "--config", src, &first_kid]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = export_keys();
    assert_eq!(code, 0, "{err}");
    mount_secret(&mounted, &export, 2);
    let changed = Instant::now();
    loop {
        let refused = enforce_at(&gw.api, &old_token).await["reason"] == "token_invalid";
        let (_, t) = common::agent_and_token(&gw.api).await;
        if refused && t.ends_with(&footer(&new_kid)) {
            assert_eq!(enforce_at(&gw.api, &t).await["decision"], "allowed");
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "10 s after the Secret changed: old token refused {refused}, new key signing {}",
            t.ends_with(&footer(&new_kid))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        proxy_status(&gw.proxy, &old_token).await,
        StatusCode::UNAUTHORIZED
    );
    gw.stop();
}

/// The status of a proxied GET of a customer with `token`.
async fn proxy_status(proxy: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{proxy}/crm/customers/1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// The base64url footer of a token signed by `kid`.
fn footer(kid: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"kid\":\"{kid}\"}}"))
}

#[tokio::test]
async fn a_token_living_longer_than_max_ttl_is_refused_whatever_key_signed_it() {
    // The test config's tokens.maxTtl is 24h (and clockSkew 5s).
    let gw = TestGateway::start("").await;
    let agent = gw.agent().await;
    gw.policy(json!({"name": "p", "actions": ["read"], "resources": ["api://crm/customers/*"], "effect": "allow"}))
        .await;
    // Someone holding the signing key mints a 25-hour token (as a leaked key would allow).
    let keys = actgate::token::KeySet::load(&gw.data_dir().join("keys")).unwrap();
    let tokens = actgate::token::Tokens::new(keys, 0, Duration::ZERO, 1);
    let now = actgate::token::now_unix();
    let (long, _) = tokens
        .issue(
            &agent,
            "default-tenant",
            Duration::from_secs(25 * 3600),
            None,
            now,
        )
        .unwrap();
    let (ok, _) = tokens
        .issue(
            &agent,
            "default-tenant",
            Duration::from_secs(23 * 3600),
            None,
            now,
        )
        .unwrap();
    assert_eq!(
        gw.enforce(&long, "read", "api://crm/customers/1", json!({}))
            .await["reason"],
        "token_invalid"
    );
    assert_eq!(
        gw.enforce(&ok, "read", "api://crm/customers/1", json!({}))
            .await["decision"],
        "allowed"
    );
}

// 2. Scoped API keys ---------------------------------------------------------------------------

async fn new_key(gw: &TestGateway, body: Value) -> (String, String) {
    let (s, out) = gw.post("/v1/apikeys", KEY, body).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let key = out["key"].as_str().unwrap().to_string();
    assert!(key.len() >= 32);
    (out["id"].as_str().unwrap().to_string(), key)
}

#[tokio::test]
async fn each_role_may_do_its_job_and_is_refused_the_rest_naming_the_role_needed() {
    let gw = TestGateway::start("").await;
    let agent = gw.agent().await;
    let other_agent = gw.agent().await;
    let (_, issuer) = new_key(
        &gw,
        json!({"name": "tool-runner", "role": "issuer", "agents": [agent]}),
    )
    .await;
    let (_, enforcer) = new_key(&gw, json!({"name": "app", "role": "enforcer"})).await;
    let (_, auditor) = new_key(&gw, json!({"name": "siem", "role": "auditor"})).await;
    let widen =
        json!({"name": "everything", "actions": ["*"], "resources": ["**"], "effect": "allow"});

    // The issuer mints and revokes its agent's tokens, asks for decisions, and nothing more.
    let (s, body) = gw.post("/v1/policies", &issuer, widen.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("role issuer") && msg.contains("needs role admin"),
        "{msg}"
    );
    let (s, body) = gw
        .post("/v1/tokens", &issuer, json!({"agentId": agent}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let token_id = body["tokenId"].as_str().unwrap().to_string();
    let (s, body) = gw
        .post("/v1/tokens", &issuer, json!({"agentId": other_agent}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().unwrap().contains(&agent), "{body}");
    let (s, _) = gw.post("/v1/agents", &issuer, json!({"name": "x"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = gw.get("/v1/audit", &issuer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let enforce = json!({"capabilityToken": token, "action": "read", "resourceId": "api://x"});
    let (s, body) = gw.post("/v1/enforce", &issuer, enforce.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = gw.delete(&format!("/v1/tokens/{token_id}"), &issuer).await;
    assert_eq!(s, StatusCode::OK);

    // The enforcer asks for decisions only.
    let (s, _) = gw.post("/v1/enforce", &enforcer, enforce.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = gw
        .post("/v1/tokens", &enforcer, json!({"agentId": agent}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs role issuer"),
        "{body}"
    );
    let (s, _) = gw.get("/v1/policies", &enforcer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The auditor reads.
    for path in ["/v1/audit", "/v1/agents", "/v1/policies"] {
        let (s, _) = gw.get(path, &auditor).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (s, _) = gw.post("/v1/enforce", &auditor, enforce).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = gw.post("/v1/policies", &auditor, widen.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // HEAD is GET without a body: it needs what GET needs.
    let r = gw
        .client
        .head(format!("{}/v1/audit", gw.api))
        .header("X-Api-Key", &enforcer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A path no route serves needs admin: no role learns more from 404 vs 405.
    let (s, _) = gw.get("/v1/nothing-here", &auditor).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = gw.get("/v1/nothing-here", KEY).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Only an admin manages keys; a role refusal comes before the body is read.
    let (s, _) = gw.get("/v1/apikeys", &auditor).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = gw
        .raw_post("/v1/policies", &issuer, "application/json", "{not json")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Keys of another tenant's admin see nothing of this tenant's keys.
    let (s, body) = gw.get("/v1/apikeys", OTHER_KEY).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!body.to_string().contains("tool-runner"), "{body}");
}

#[tokio::test]
async fn keys_are_listed_without_secrets_and_a_deleted_key_is_refused_at_once() {
    let gw = TestGateway::start("").await;
    let (id, key) = new_key(&gw, json!({"name": "temp", "role": "auditor"})).await;
    let (s, body) = gw.get("/v1/apikeys", KEY).await;
    assert_eq!(s, StatusCode::OK);
    let text = body.to_string();
    assert!(!text.contains(&key), "a listed key shows no secret");
    assert!(!text.contains("hash"), "{text}");
    let listed: Vec<&Value> = body["apiKeys"].as_array().unwrap().iter().collect();
    assert!(
        listed
            .iter()
            .any(|k| k["id"] == id && k["role"] == "auditor" && k["source"] == "api")
    );
    assert!(
        listed
            .iter()
            .any(|k| k["id"] == "config:test" && k["source"] == "config")
    );
    let (s, _) = gw.get("/v1/agents", &key).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = gw.delete(&format!("/v1/apikeys/{id}"), KEY).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = gw.get("/v1/agents", &key).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "deleted keys are refused from the next request"
    );
    // A config key is changed in the config; bad input names the field.
    let (s, body) = gw.delete("/v1/apikeys/config:test", KEY).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = gw
        .post("/v1/apikeys", KEY, json!({"name": "x", "role": "root"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["problems"][0]["path"], "role", "{body}");
    let (s, body) = gw
        .post(
            "/v1/apikeys",
            KEY,
            json!({"name": "x", "role": "auditor", "agents": ["agent_a"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["problems"][0]["path"], "agents", "{body}");
}

#[tokio::test]
async fn the_generated_admin_key_is_revocable_but_never_the_last_admin() {
    // No key configured: the first start generates one into dataDir/admin.key.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let yaml = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", api: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\ndataDir: {}\n",
        data.display()
    );
    let running = actgate::server::start(actgate::config::Config::parse(&yaml, "t").unwrap())
        .await
        .unwrap();
    let api = format!("http://{}", running.api);
    let generated = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let client = reqwest::Client::new();
    let list = |key: String| {
        let client = client.clone();
        let api = api.clone();
        async move {
            let r = client
                .get(format!("{api}/v1/apikeys"))
                .header("X-Api-Key", key)
                .send()
                .await
                .unwrap();
            common::split(r).await
        }
    };
    let (s, body) = list(generated.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let keys = body["apiKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["role"], "admin");
    let generated_id = keys[0]["id"].as_str().unwrap().to_string();
    let delete = |key: String, id: String| {
        let client = client.clone();
        let api = api.clone();
        async move {
            let r = client
                .delete(format!("{api}/v1/apikeys/{id}"))
                .header("X-Api-Key", key)
                .send()
                .await
                .unwrap();
            common::split(r).await
        }
    };
    let (s, body) = delete(generated.clone(), generated_id.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("last admin key"),
        "{body}"
    );
    let (s, body) = json_post(
        &format!("{api}/v1/apikeys"),
        &generated,
        json!({"name": "ops", "role": "admin"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let ops = body["key"].as_str().unwrap().to_string();
    let (s, body) = delete(ops.clone(), generated_id).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = list(generated).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        !data.join("admin.key").exists(),
        "the revoked key's file is removed"
    );
    let (s, _) = list(ops).await;
    assert_eq!(s, StatusCode::OK);
    running.shutdown().await;
}

#[tokio::test]
async fn config_roles_and_policy_writes_off() {
    let issuer = "act_issuer_key_0123456789abcdef0123456789";
    let gw = TestGateway::start(
        "api: { policyWrites: false }\nagents:\n  - { id: agent_runner, name: Runner }\n",
    )
    .await;
    // policyWrites: false — even the admin edits policies in the config file only.
    let (s, body) = gw
        .post(
            "/v1/policies",
            KEY,
            json!({"name": "p", "actions": ["read"], "resources": ["x"], "effect": "allow"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("policyWrites"),
        "{body}"
    );
    drop(gw);
    // A config key with a role and an agent list.
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(
        &dir.path().join("data"),
        "agents:\n  - { id: agent_runner, name: Runner }\n  - { id: agent_other, name: Other }\n",
    )
    .replace(
        "apiKeys:\n",
        &format!(
            "apiKeys:\n  - {{ name: runner, sha256: {}, role: issuer, agents: [agent_runner] }}\n",
            sha256_hex(issuer)
        ),
    );
    let running = actgate::server::start(actgate::config::Config::parse(&yaml, "t").unwrap())
        .await
        .unwrap();
    let api = format!("http://{}", running.api);
    let (s, _) = json_post(
        &format!("{api}/v1/tokens"),
        issuer,
        json!({"agentId": "agent_runner"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = json_post(
        &format!("{api}/v1/tokens"),
        issuer,
        json!({"agentId": "agent_other"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = json_post(
        &format!("{api}/v1/policies"),
        issuer,
        json!({"name": "p", "actions": ["*"], "resources": ["**"], "effect": "allow"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    running.shutdown().await;
    // Bad roles are config errors with their path.
    let bad = actgate::config::Config::parse(
        "apiKeys:\n  - { name: a, fromEnv: X, role: root }\n  - { name: b, fromEnv: Y, role: admin, agents: [agent_a] }\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("apiKeys[0].role: `root` is not a role"),
        "{bad}"
    );
    assert!(
        bad.contains("apiKeys[1].agents: only an issuer key"),
        "{bad}"
    );
}

// 3. No weak secrets ---------------------------------------------------------------------------

#[test]
fn weak_and_placeholder_keys_are_refused_at_start_with_how_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actgate.yaml");
    let base = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", api: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\ndataDir: {}\n",
        dir.path().join("data").display()
    );
    std::fs::write(
        &config,
        format!("{base}apiKeys:\n  - {{ name: admin, fromEnv: ACTGATE_API_KEY }}\n"),
    )
    .unwrap();
    for weak in [
        "a",
        "replace-me-with-a-random-key",
        "0123456789abcdef0123456789abcde",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_actgate"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("ACTGATE_API_KEY", weak)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{weak}: {err}");
        assert!(
            err.contains("apiKeys[0] (admin)") && err.contains("$ACTGATE_API_KEY"),
            "{err}"
        );
        assert!(err.contains("openssl rand -hex 32"), "{err}");
    }
    // The hash of a placeholder is no better.
    std::fs::write(
        &config,
        format!(
            "{base}apiKeys:\n  - {{ name: h, sha256: {} }}\n",
            sha256_hex("replace-me-with-a-random-key")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("hash of a placeholder"), "{err}");
}

#[test]
fn the_shipped_secret_carries_no_usable_key() {
    for entry in walk("deploy") {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(
            !text.contains("replace-me-with-a-random-key"),
            "{} ships a placeholder key",
            entry.display()
        );
    }
}

fn walk(dir: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

// 4. Every request audited ---------------------------------------------------------------------

#[tokio::test]
async fn refusals_before_a_decision_are_audited_with_the_verified_agent_and_counted() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&routes(&up)).await;
    let agent = gw.agent().await;
    let (token, token_id) = gw.token(&agent).await;
    let proxy = gw.proxy.trim_start_matches("http://").to_string();
    let c = &gw.client;
    let before = gw.audit_events(0).await.len();

    // Path traversal with a valid token: 400, and the audit names the agent.
    let a = raw(&proxy, format!("GET /crm/customers/../admin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert_eq!(raw_status(&a), 400, "{a}");
    // No route, with a valid token.
    let r = c
        .get(format!("{}/hr/salaries", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Token in the query too.
    let r = c
        .get(format!("{}/crm/customers/1?t={token}", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // _method in the query.
    let r = c
        .get(format!("{}/crm/customers/1?_method=DELETE", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Two token headers.
    let r = c
        .get(format!("{}/crm/customers/1", gw.proxy))
        .bearer_auth(&token)
        .header("X-Act-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // 415 and 413.
    let r = c
        .post(format!("{}/email/send", gw.proxy))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("to=a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = c
        .post(format!("{}/email/send", gw.proxy))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("x".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Without any token, and with a forged one: audited, no agent named.
    let r = c.get(format!("{}/nowhere", gw.proxy)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(format!("{}/nowhere", gw.proxy))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(up.requests().is_empty(), "nothing reached the upstream");

    let events = gw.audit_events(before + 9).await;
    let fresh = &events[..events.len() - before];
    let with =
        |reason: &str| -> Vec<&Value> { fresh.iter().filter(|e| e["reason"] == reason).collect() };
    assert_eq!(with("invalid_request").len(), 4, "{fresh:#?}");
    assert_eq!(with("no_route").len(), 3, "{fresh:#?}");
    assert_eq!(with("unsupported_media_type").len(), 1);
    assert_eq!(with("body_too_large").len(), 1);
    for e in fresh {
        assert_eq!(e["decision"], "denied");
        assert_eq!(e["source"], "proxy");
        assert!(
            !e.to_string().contains(&token),
            "no token in an audit event: {e}"
        );
    }
    let traversal = with("invalid_request")
        .into_iter()
        .find(|e| e["message"].as_str().unwrap().contains(".."))
        .expect("the traversal");
    assert_eq!(traversal["agentId"], agent.as_str());
    assert_eq!(traversal["tokenId"], token_id.as_str());
    let routed = with("body_too_large")[0];
    assert_eq!(routed["route"], "send-email");
    assert_eq!(routed["agentId"], agent.as_str());
    let anonymous = with("no_route")
        .into_iter()
        .filter(|e| e["agentId"].is_null())
        .count();
    assert_eq!(anonymous, 2, "no token and a forged one name no agent");

    let m = gw.metrics().await;
    for (reason, n) in [
        ("invalid_request", 4),
        ("no_route", 3),
        ("body_too_large", 1),
        ("unsupported_media_type", 1),
    ] {
        let line = format!(
            "actgate_decisions_total{{decision=\"denied\",reason=\"{reason}\",source=\"proxy\"}} {n}"
        );
        assert!(m.contains(&line), "missing {line}");
    }
}

#[tokio::test]
async fn a_flood_of_unauthenticated_refusals_is_counted_into_summaries_without_stalling() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&format!("audit: {{ refusalRate: 50 }}\n{}", routes(&up))).await;
    let proxy = gw.proxy.trim_start_matches("http://").to_string();
    let n = 2000;
    let started = Instant::now();
    // Keep-alive, pipelined: 2000 requests for no route, no token.
    let mut req = Vec::new();
    for _ in 0..n - 1 {
        req.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    req.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = raw(&proxy, &req).await;
    assert_eq!(
        answer.matches("HTTP/1.1 404").count(),
        n,
        "every request answered"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not stalled by the audit"
    );
    // Individual records up to the rate, the rest counted in summaries: all accounted for.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = gw.get("/v1/audit?limit=1000&decision=denied", KEY).await;
        let events = body["events"].as_array().unwrap().clone();
        let single = events.iter().filter(|e| e["kind"] != "summary").count() as u64;
        let summed: u64 = events
            .iter()
            .filter(|e| e["kind"] == "summary")
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        if single + summed == n as u64 {
            assert!(single <= 200, "the rate held: {single} individual records");
            assert!(
                events
                    .iter()
                    .any(|e| e["kind"] == "summary" && e["reason"] == "no_route")
            );
            break;
        }
        assert!(Instant::now() < deadline, "{single} + {summed} != {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = gw.metrics().await;
    assert!(m.contains(&format!(
        "actgate_decisions_total{{decision=\"denied\",reason=\"no_route\",source=\"proxy\"}} {n}"
    )));
    assert!(
        !m.contains("actgate_audit_refusals_aggregated_total 0\n"),
        "aggregation counted"
    );
}

#[tokio::test]
async fn a_revoked_tokens_flood_of_refusals_goes_through_the_refusal_budget() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&format!("audit: {{ refusalRate: 20 }}\n{}", routes(&up))).await;
    let agent = gw.agent().await;
    let (token, token_id) = gw.token(&agent).await;
    let (s, _) = gw.delete(&format!("/v1/tokens/{token_id}"), KEY).await;
    assert_eq!(s, StatusCode::OK);
    let proxy = gw.proxy.trim_start_matches("http://").to_string();
    let n = 500;
    let mut req = Vec::new();
    for i in 0..n {
        let close = if i == n - 1 {
            "Connection: close\r\n"
        } else {
            ""
        };
        req.extend_from_slice(
            format!(
                "GET /nowhere HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{close}\r\n"
            )
            .as_bytes(),
        );
    }
    let answer = raw(&proxy, &req).await;
    assert_eq!(answer.matches("HTTP/1.1 404").count(), n);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = gw.get("/v1/audit?limit=1000&decision=denied", KEY).await;
        let events = body["events"].as_array().unwrap().clone();
        let single = events.iter().filter(|e| e["kind"] != "summary").count();
        let summed: u64 = events
            .iter()
            .filter(|e| e["kind"] == "summary")
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        if single as u64 + summed == n as u64 {
            assert!(
                summed > 0 && single < n,
                "a revoked token is not a pass to one record each"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{single} + {summed} != {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_inspected_body_must_come_uncompressed() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&routes(&up)).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let r = gw
        .client
        .post(format!("{}/email/send", gw.proxy))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("content-encoding", "deflate")
        .body(r#"{"to": "a@yourcompany.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(up.requests().is_empty());
}

// 5. No panics on input ------------------------------------------------------------------------

#[test]
fn extreme_numbers_in_every_config_field_are_clear_errors() {
    let huge = "18446744073709551615";
    let cases: &[(&str, &str)] = &[
        ("tokens: { maxTtl: 99999999999h }", "tokens.maxTtl"),
        ("tokens: { defaultTtl: 99999999999h }", "tokens.defaultTtl"),
        ("tokens: { clockSkew: 99999999999h }", "tokens.clockSkew"),
        ("tokens: { cacheCapacity: HUGE }", "tokens.cacheCapacity"),
        (
            "tokens: { maxConcurrentVerifications: HUGE }",
            "tokens.maxConcurrentVerifications",
        ),
        ("tokens: { maxTtl: -1s }", "tokens.maxTtl"),
        ("audit: { queueCapacity: HUGE }", "audit.queueCapacity"),
        ("audit: { segmentMaxBytes: HUGE }", "audit.segmentMaxBytes"),
        (
            "audit: { flushInterval: 99999999999h }",
            "audit.flushInterval",
        ),
        ("audit: { checkpointEvery: HUGE }", "audit.checkpointEvery"),
        ("audit: { refusalRate: HUGE }", "audit.refusalRate"),
        ("limits: { maxBodyBytes: HUGE }", "limits.maxBodyBytes"),
        ("limits: { maxHeaderBytes: HUGE }", "limits.maxHeaderBytes"),
        ("limits: { maxHeaders: HUGE }", "limits.maxHeaders"),
        ("limits: { maxConnections: HUGE }", "limits.maxConnections"),
        ("limits: { maxJsonDepth: HUGE }", "limits.maxJsonDepth"),
        (
            "limits: { maxBufferedBodies: HUGE }",
            "limits.maxBufferedBodies",
        ),
        (
            "limits: { headerReadTimeout: 99999999999h }",
            "limits.headerReadTimeout",
        ),
        (
            "limits: { bodyReadTimeout: 99999999999h }",
            "limits.bodyReadTimeout",
        ),
        (
            "limits: { idleTimeout: 99999999999h }",
            "limits.idleTimeout",
        ),
        (
            "limits: { drainTimeout: 99999999999h }",
            "limits.drainTimeout",
        ),
        ("limits: { maxBodyBytes: -5 }", "limits.maxBodyBytes"),
        ("limits: { maxBodyBytes: 1e400 }", "limits.maxBodyBytes"),
        (
            "metrics: { maxAgentLabels: HUGE }",
            "metrics.maxAgentLabels",
        ),
        ("reload: { interval: 99999999999h }", "reload.interval"),
        (
            "upstreams: { u: { url: \"http://127.0.0.1:1\", timeout: 99999999999h } }",
            "upstreams.u.timeout",
        ),
        ("listen: { proxy: \"127.0.0.1:99999\" }", "listen.proxy"),
        (
            "upstreams: { u: { url: \"http://127.0.0.1:1\" } }\nroutes: [ { name: r, method: GET, path: /x, upstream: u, action: read, resource: x, rows: { fixed: HUGE } } ]",
            "routes[0].rows.fixed",
        ),
        (
            "policies: [ { name: p, actions: [read], resources: [x], effect: allow, constraints: { maxRows: HUGE } } ]",
            "policies[0].constraints.maxRows",
        ),
        (
            "policies: [ { name: p, actions: [read], resources: [x], effect: allow, constraints: { maxRows: 1e300 } } ]",
            "policies[0].constraints.maxRows",
        ),
    ];
    for (yaml, path) in cases {
        let yaml = yaml.replace("HUGE", huge);
        let problems = std::panic::catch_unwind(|| actgate::config::Config::parse(&yaml, "t"))
            .unwrap_or_else(|_| panic!("panicked on {yaml}"))
            .err()
            .unwrap_or_else(|| panic!("{yaml} validated"));
        assert!(
            problems.iter().any(|p| p.path.starts_with(path)),
            "{yaml}: no problem at {path}: {problems}"
        );
    }
    // Through the binary: exit 2, never a panic (101).
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, "tokens: { maxTtl: 99999999999h }\n").unwrap();
    let (code, _, err) = actgate(&["config", "validate", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tokens.maxTtl: must be between 1s and 30d"),
        "{err}"
    );
    let (code, _, err) = actgate(&[
        "token",
        "issue",
        "--config",
        f.to_str().unwrap(),
        "--agent",
        "agent_x",
    ]);
    assert_eq!(code, 2, "{err}");
    std::fs::write(&f, format!("dataDir: {}\n", dir.path().join("d").display())).unwrap();
    let (code, _, err) = actgate(&[
        "token",
        "issue",
        "--config",
        f.to_str().unwrap(),
        "--agent",
        "agent_x",
        "--ttl",
        "99999999999h",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--ttl must be between 1s and tokens.maxTtl"),
        "{err}"
    );
}

#[tokio::test]
async fn extreme_numbers_in_every_api_field_are_400_not_a_dropped_connection() {
    let gw = TestGateway::start("").await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let huge = "18446744073709551615";
    let bodies: &[(&str, String)] = &[
        ("/v1/tokens", format!(r#"{{"agentId":"{agent}","expiresIn":{huge}}}"#)),
        ("/v1/tokens", format!(r#"{{"agentId":"{agent}","expiresIn":1e300}}"#)),
        ("/v1/tokens", format!(r#"{{"agentId":"{agent}","expiresIn":-1}}"#)),
        ("/v1/tokens", format!(r#"{{"agentId":"{agent}","expiresIn":99999999999}}"#)),
        ("/v1/enforce", format!(r#"{{"capabilityToken":"{token}","action":"read","resourceId":"x","context":{{"rows":{huge}}}}}"#)),
        ("/v1/enforce", format!(r#"{{"capabilityToken":"{token}","action":"read","resourceId":"x","context":{{"limit":1e999}}}}"#)),
        ("/v1/policies", format!(r#"{{"name":"p","actions":["read"],"resources":["x"],"effect":"allow","constraints":{{"maxRows":{huge}}}}}"#)),
        ("/v1/policies", r#"{"name":"p","actions":["read"],"resources":["x"],"effect":"allow","constraints":{"maxRows":-3}}"#.to_string()),
        ("/v1/check", format!(r#"{{"agentId":"{agent}","action":"read","resourceId":"x","context":{{"rows":{huge}}}}}"#)),
    ];
    for (path, body) in bodies {
        let (s, out) = gw
            .raw_post(path, KEY, "application/json", body.clone())
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {out}");
        assert!(out["message"].is_string(), "{out}");
    }
    for query in [
        format!("limit={huge}"),
        format!("cursor={huge}9"),
        "limit=-1".into(),
        format!("since={huge}9"),
        "until=99999999999999999999999".into(),
    ] {
        let (s, out) = gw.get(&format!("/v1/audit?{query}"), KEY).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {out}");
    }
    // Still serving: no worker died.
    let (s, _) = gw.get("/v1/agents", KEY).await;
    assert_eq!(s, StatusCode::OK);
}

// 6. Verify agrees with serve ------------------------------------------------------------------

#[tokio::test]
async fn a_log_missing_its_last_record_fails_verify_as_it_fails_serve() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&routes(&up)).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    for _ in 0..5 {
        gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
            .await;
    }
    gw.audit_events(5).await;
    let dir = gw.stop().await;
    let data = dir.path().join("data");
    let config = dir.path().join("actgate.yaml");
    std::fs::write(&config, config_yaml(&data, "")).unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = actgate(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    // Delete the last record (and the shutdown checkpoint that covers it).
    let segs = actgate::audit::log::segments(&data.join("audit")).unwrap();
    let last = segs.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(last, lines.join("\n") + "\n").unwrap();
    std::fs::remove_file(data.join("audit/checkpoints.jsonl")).unwrap();
    let (code, out, _) = actgate(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("TAMPERED:") && out.contains("missing from the log"),
        "{out}"
    );
    // serve refuses the same log.
    let refused = actgate::server::start(actgate::config::Config::load(&config).unwrap()).await;
    let Err(e) = refused else {
        panic!("serve started on a truncated log")
    };
    assert!(
        e.to_string().contains("the log was truncated or removed"),
        "{e}"
    );
}

// 7. check sees what the gateway sees -----------------------------------------------------------

// Multi-threaded: the `actgate check --api` process calls this process's gateway while the
// test thread waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_agrees_with_enforce_for_an_api_made_policy_locally_and_through_the_api() {
    let gw = TestGateway::start("").await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let pol = gw
        .policy(json!({"name": "api made", "actions": ["read"], "resources": ["api://crm/customers/*"], "effect": "allow", "constraints": {"maxRows": 10}}))
        .await;
    let enforced = gw
        .enforce(&token, "read", "api://crm/customers/9", json!({}))
        .await;
    assert_eq!(enforced["decision"], "allowed");
    assert_eq!(enforced["policyId"], pol.as_str());

    // Locally, from the config and the store in dataDir (the gateway keeps running).
    let config = gw.dir.path().join("actgate.yaml");
    std::fs::write(&config, config_yaml(&gw.data_dir(), "")).unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "check",
            "--agent",
            &agent,
            "--action",
            "read",
            "--resource",
            "api://crm/customers/9",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let local: Vec<String> = args(&["--config", config.to_str().unwrap()]);
    let (code, out, err) = actgate(&local.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("policy:   {pol} (api made)")),
        "{out}"
    );
    assert!(out.contains("api     matches: allow"), "{out}");

    // Through a running gateway's API.
    let remote: Vec<String> = args(&["--api", &gw.api]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(&remote)
        .env("ACTGATE_API_KEY", KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("policy:   {pol} (api made)")),
        "{text}"
    );
    assert!(text.contains("obligations: {\"maxRows\":10}"), "{text}");

    // A deny made through the API flips both.
    let deny = gw
        .policy(json!({"name": "api deny", "actions": ["read"], "resources": ["api://crm/customers/9"], "effect": "deny"}))
        .await;
    let enforced = gw
        .enforce(&token, "read", "api://crm/customers/9", json!({}))
        .await;
    assert_eq!(enforced["policyId"], deny.as_str());
    let (code, out, _) = actgate(&local.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("reason:   explicit_deny") && out.contains(&deny),
        "{out}"
    );
    // Without a key, --api says how to give one.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(&remote)
        .env_remove("ACTGATE_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ACTGATE_API_KEY"));
}
