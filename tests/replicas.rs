//! Several replicas on one real PostgreSQL (DESIGN §6): three `actgate serve` processes, each
//! with its own data directory, audit log and signing keys, sharing a throwaway PostgreSQL
//! cluster. Changes made on one hold on the others within a second; every replica's audit
//! events are read on any; the chains verify from the database alone; an outage fails closed
//! after store.maxStaleness and everything resumes when the database is back.

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::Proc;
use common::upstream::Upstream;
use common::{KEY, config_yaml};
use postgres::Pg;
use reqwest::StatusCode;
use serde_json::{Value, json};

const URL_VAR: &str = "ACTGATE_TEST_PG_URL";

fn replica_config(dir: &Path, name: &str, up: &Upstream, staleness: &str) -> std::path::PathBuf {
    let extra = format!(
        r#"
store:
  postgres: {{ fromEnv: {URL_VAR}, maxConnections: 4 }}
  maxStaleness: {staleness}
  pollInterval: 200ms
  replicaId: {name}
audit: {{ segmentMaxBytes: 4096, checkpointEvery: 20 }}   # rotations and checkpoints while the records are copied
upstreams:
  crm: {{ url: "{up}", timeout: 5s }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}", rows: {{ fixed: 1 }} }}
policies:
  - {{ name: read customers, actions: [read], resources: ["api://crm/customers/*"], effect: allow }}
"#,
        up = up.url()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        config_yaml(&dir.join(format!("{name}-data")), &extra),
    )
    .unwrap();
    path
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .header("X-Api-Key", KEY)
        .timeout(Duration::from_secs(15));
    if let Some(b) = body {
        r = r
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().await.expect("request answered");
    common::split(r).await
}

async fn post(api: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call(reqwest::Method::POST, &format!("{api}{path}"), Some(body)).await
}

async fn enforce(api: &str, token: &str) -> (StatusCode, Value) {
    post(
        api,
        "/v1/enforce",
        json!({"capabilityToken": token, "action": "read", "resourceId": "api://crm/customers/1"}),
    )
    .await
}

/// Waits until `api` gives `reason` for `token`; returns how long it took. Panics after 5 s.
async fn until_reason(api: &str, token: &str, reason: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (_, body) = enforce(api, token).await;
        if body["reason"] == reason {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{api} still answers {body} instead of {reason} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn agent_policy_token(api: &str) -> (String, String, String) {
    let (s, agent) = post(api, "/v1/agents", json!({"name": "support bot"})).await;
    assert_eq!(s, StatusCode::CREATED, "{agent}");
    let agent = agent["id"].as_str().unwrap().to_string();
    let (s, tok) = post(api, "/v1/tokens", json!({"agentId": agent})).await;
    assert_eq!(s, StatusCode::CREATED, "{tok}");
    (
        agent,
        tok["token"].as_str().unwrap().to_string(),
        tok["tokenId"].as_str().unwrap().to_string(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test]
async fn three_replicas_share_one_truth() {
    let Some(pg) = Pg::start() else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [(URL_VAR, pg.url.as_str())];
    let configs: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| replica_config(dir.path(), n, &up, "30s"))
        .collect();
    let a = Proc::spawn(&configs[0], &env);
    let mut b = Proc::spawn(&configs[1], &env);
    let c = Proc::spawn(&configs[2], &env);

    // An agent and a token made on A (signed by A's key, which B and C do not hold: they
    // verify it with the key A published in the store).
    let (agent, token, _) = agent_policy_token(&a.api).await;
    for api in [&b.api, &c.api] {
        until_reason(api, &token, "allowed").await;
    }

    // A deny policy made on B holds on A and C within a second.
    let (s, deny) = post(
        &b.api,
        "/v1/policies",
        json!({"name": "no customer 1", "actions": ["read"], "resources": ["api://crm/customers/1"], "effect": "deny"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{deny}");
    for api in [&a.api, &c.api] {
        let took = until_reason(api, &token, "explicit_deny").await;
        assert!(
            took < Duration::from_secs(1),
            "deny reached {api} in {took:?}"
        );
    }
    let (s, _) = call(
        reqwest::Method::DELETE,
        &format!("{}/v1/policies/{}", b.api, deny["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    until_reason(&a.api, &token, "allowed").await;

    // A token issued on A, revoked on B: A and C refuse it within a second, measured over 20
    // tokens (p50 and p99 printed for BENCHMARKS.md).
    let mut took = Vec::new();
    for _ in 0..20 {
        let (s, t) = post(&a.api, "/v1/tokens", json!({"agentId": agent})).await;
        assert_eq!(s, StatusCode::CREATED);
        let (t, id) = (
            t["token"].as_str().unwrap().to_string(),
            t["tokenId"].as_str().unwrap().to_string(),
        );
        until_reason(&a.api, &t, "allowed").await;
        until_reason(&c.api, &t, "allowed").await;
        let (s, _) = call(
            reqwest::Method::DELETE,
            &format!("{}/v1/tokens/{id}", b.api),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (ta, tc) = tokio::join!(
            until_reason(&a.api, &t, "token_revoked"),
            until_reason(&c.api, &t, "token_revoked")
        );
        took.push(ta.max(tc));
    }
    took.sort();
    let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
    eprintln!("revocation propagation over 20 tokens, 3 replicas: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_secs(1), "revocation p99 {p99:?}");

    // The agent revoked on C: refused on A and B.
    let (s, _) = call(
        reqwest::Method::DELETE,
        &format!("{}/v1/agents/{agent}", c.api),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for api in [&a.api, &b.api] {
        let took = until_reason(api, &token, "agent_revoked").await;
        assert!(took < Duration::from_secs(1));
    }

    // Proxy traffic on B and C shows up in GET /v1/audit on A, each event naming its replica.
    let (_, t2, _) = agent_policy_token(&c.api).await;
    for p in [&b.proxy, &c.proxy] {
        let r = reqwest::Client::new()
            .get(format!("{p}/crm/customers/7"))
            .bearer_auth(&t2)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let started = Instant::now();
    let events = loop {
        let (s, body) = call(
            reqwest::Method::GET,
            &format!(
                "{}/v1/audit?resource=api://crm/customers/7&limit=100",
                a.api
            ),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let events = body["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= 2 {
            break events;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let replicas: Vec<&str> = events
        .iter()
        .map(|e| e["replica"].as_str().unwrap())
        .collect();
    assert!(
        replicas.iter().any(|r| r.starts_with("r2/")),
        "{replicas:?}"
    );
    assert!(
        replicas.iter().any(|r| r.starts_with("r3/")),
        "{replicas:?}"
    );
    assert!(
        events.iter().all(|e| e["upstreamStatus"] == 200),
        "{events:?}"
    );
    // Paging across replicas with the cursor.
    let (_, page) = call(
        reqwest::Method::GET,
        &format!("{}/v1/audit?limit=1", a.api),
        None,
    )
    .await;
    let cursor = page["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, next) = call(
        reqwest::Method::GET,
        &format!("{}/v1/audit?limit=1&cursor={cursor}", a.api),
        None,
    )
    .await;
    assert_ne!(page["events"][0], next["events"][0]);

    // B restarts: its state comes from the store; its log's shipping resumes without
    // duplicates.
    let lines = b.stop();
    assert!(lines.iter().all(|l| !l.contains(KEY)));
    b = Proc::spawn(&configs[1], &env);
    until_reason(&b.api, &token, "agent_revoked").await;
    let (s, _) = enforce(&b.api, &t2).await;
    assert_eq!(s, StatusCode::OK);

    // Every replica's chain verifies from the database alone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cfg = configs[0].to_str().unwrap();
    // Every replica's public keys, from outside the database, for the checkpoints.
    let all_keys = dir.path().join("all-keys");
    std::fs::create_dir(&all_keys).unwrap();
    for n in ["r1", "r2", "r3"] {
        for entry in std::fs::read_dir(dir.path().join(format!("{n}-data/keys"))).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pub") {
                std::fs::copy(&path, all_keys.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let keys_arg = all_keys.to_str().unwrap().to_string();
    let verify = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_actgate"))
            .args([
                "audit",
                "verify",
                "--from-store",
                "--config",
                cfg,
                "--keys-dir",
                &keys_arg,
            ])
            .env(URL_VAR, &pg.url)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    for r in ["r1/", "r2/", "r3/"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("OK: {r}"))),
            "{out}"
        );
    }
    assert!(!out.contains("warning"), "every checkpoint checked: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("OK: r1/") && !l.contains(" 0 signed checkpoints")),
        "checkpoints were copied and matched: {out}"
    );
    // Edited behind actgate's back: named.
    let db = pg.client().await;
    db.execute(
        "UPDATE audit SET line = line || ' ' WHERE id = (SELECT MIN(id) FROM audit WHERE replica LIKE 'r2/%')",
        &[],
    )
    .await
    .unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TAMPERED: r2/") && l.contains("the line was changed")),
        "{out}"
    );

    // A column edited behind actgate's back (a denial shown as allowed): named too.
    let n = db
        .execute(
            "UPDATE audit SET decision = 'allowed' WHERE id = (SELECT MAX(id) FROM audit WHERE replica LIKE 'r3/%' AND decision = 'denied')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TAMPERED: r3/") && l.contains("columns")),
        "{out}"
    );

    // Records cut off a chain's end, below its last signed checkpoint: named.
    let cut = db
        .execute(
            "DELETE FROM audit WHERE replica LIKE 'r1/%' AND seq > (SELECT MAX(seq) FROM audit_checkpoints WHERE replica LIKE 'r1/%') - 3",
            &[],
        )
        .await
        .unwrap();
    assert!(cut >= 3);
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TAMPERED: r1/") && l.contains("records were removed")),
        "{out}"
    );

    // The database password never reaches a log line.
    for p in [a, b, c] {
        for line in p.stop() {
            assert!(!line.contains(postgres::PASSWORD), "{line}");
        }
    }
}

#[tokio::test]
async fn an_outage_fails_closed_after_max_staleness_and_recovers() {
    let Some(pg) = Pg::start() else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [(URL_VAR, pg.url.as_str())];
    let config = replica_config(dir.path(), "solo", &up, "2s");
    let gw = Proc::spawn(&config, &env);
    let (_, token, _) = agent_policy_token(&gw.api).await;
    assert_eq!(enforce(&gw.api, &token).await.1["decision"], "allowed");
    let get = |token: String| {
        let proxy = gw.proxy.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{proxy}/crm/customers/1"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(get(token.clone()).await.status(), StatusCode::OK);

    pg.pause();
    let down = Instant::now();
    // Writes fail at once, with 503 and a reason.
    let (s, body) = post(&gw.api, "/v1/agents", json!({"name": "x"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "store_unavailable");
    assert!(!body.to_string().contains(postgres::PASSWORD), "{body}");
    assert!(down.elapsed() < Duration::from_secs(5));
    // Decisions continue from the snapshot within maxStaleness; readiness says why not.
    let (s, body) = enforce(&gw.api, &token).await;
    assert_eq!(
        (s, body["decision"].as_str()),
        (StatusCode::OK, Some("allowed"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = reqwest::get(format!("{}/readyz", gw.admin)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let why = ready.text().await.unwrap();
    assert!(why.contains("store: cannot be synced"), "{why}");

    // Past maxStaleness: every decision refused, 503 store_unavailable, proxy and API alike.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (s, body) = enforce(&gw.api, &token).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["decision"], "denied");
    assert_eq!(body["reason"], "store_unavailable");
    let r = get(token.clone()).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "store_unavailable");
    let metrics = common::metrics_at(gw.admin.trim_start_matches("http://")).await;
    assert!(metrics.contains("actgate_store_up 0"), "{metrics}");
    assert!(metrics.contains(
        "actgate_decisions_total{decision=\"denied\",reason=\"store_unavailable\",source=\"enforce\"} 1"
    ));

    // Back: decisions resume without a restart.
    pg.resume();
    let back = Instant::now();
    loop {
        let (s, body) = enforce(&gw.api, &token).await;
        if s == StatusCode::OK && body["decision"] == "allowed" {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(token.clone()).await.status(), StatusCode::OK);
    let ready = reqwest::get(format!("{}/readyz", gw.admin)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // A change made without a notification (a lost NOTIFY) is still picked up, by the poll.
    let db = pg.client().await;
    db.batch_execute(
        "UPDATE tokens SET revoked_at = 1; UPDATE actgate_meta SET value = value + 1 WHERE key = 'version'",
    )
    .await
    .unwrap();
    let took = until_reason(&gw.api, &token, "token_revoked").await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    let lines = gw.stop();
    assert!(
        lines.iter().any(|l| l.contains("store unreachable")),
        "the outage is logged"
    );
    assert!(lines.iter().all(|l| !l.contains(postgres::PASSWORD)));
    assert!(lines.iter().any(|l| l.contains("store reachable again")));
}

#[tokio::test]
async fn migrate_applies_the_schema_and_a_newer_schema_is_refused() {
    let Some(pg) = Pg::start() else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = replica_config(dir.path(), "m", &up, "30s");
    let cfg = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_actgate"))
            .args(args)
            .env(URL_VAR, &pg.url)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["migrate", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("OK: postgres://actgate@127.0.0.1:"),
        "{out}"
    );
    // Again: nothing to do, same answer.
    assert_eq!(run(&["migrate", "--config", cfg]).0, 0);
    let db = pg.client().await;
    db.execute("UPDATE actgate_schema SET version = 99", &[])
        .await
        .unwrap();
    let (code, _, err) = run(&["migrate", "--config", cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("newer than this actgate"), "{err}");
    // Without the variable: named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(["migrate", "--config", cfg])
        .env_remove(URL_VAR)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(URL_VAR));
}

/// The same calls against the embedded SQLite store and PostgreSQL give the same answers.
#[tokio::test]
async fn both_stores_answer_alike() {
    use actgate::store::postgres::{PgSettings, PgStore};
    use actgate::store::sqlite::SqliteStore;
    use actgate::store::{
        Agent, AgentStatus, ApiKeyRecord, Role, Store, StoreError, StoredPolicy, TokenRecord,
    };
    let Some(pg) = Pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let postgres = PgStore::connect(
        &PgSettings {
            url: pg.url.clone(),
            max_connections: 2,
            ca_file: None,
        },
        true,
    )
    .await
    .unwrap();

    fn conflict<T>(r: Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Conflict(_)))
    }

    async fn script(s: &dyn Store) -> Vec<String> {
        let mut out = Vec::new();
        let mut log = |what: &str, v: String| out.push(format!("{what}: {v}"));
        let agent = |id: &str, tenant: &str| Agent {
            id: id.into(),
            tenant: tenant.into(),
            name: format!("agent {id}"),
            description: Some("d".into()),
            metadata: serde_json::from_value(json!({"openai_assistant_id": "asst_1"})).unwrap(),
            status: AgentStatus::Active,
            created_at: "2026-12-01T00:00:00Z".into(),
            updated_at: "2026-12-01T00:00:00Z".into(),
            source: actgate::policy::PolicySource::Api,
        };
        log(
            "a1",
            format!("{:?}", s.insert_agent(&agent("a1", "t")).await),
        );
        log(
            "a2",
            format!("{:?}", s.insert_agent(&agent("a2", "t")).await),
        );
        log(
            "a1 again",
            format!("{}", conflict(s.insert_agent(&agent("a1", "t")).await)),
        );
        log(
            "a1 other tenant",
            format!("{:?}", s.insert_agent(&agent("a1", "u")).await),
        );
        log("agent", format!("{:?}", s.agent("t", "a1").await.unwrap()));
        log("agents", format!("{:?}", s.agents("t").await.unwrap()));
        log(
            "missing",
            format!("{:?}", s.agent("t", "zz").await.unwrap()),
        );
        log(
            "revoke",
            format!(
                "{:?}",
                s.set_agent_status("t", "a2", AgentStatus::Revoked, "2026-12-02T00:00:00Z")
                    .await
                    .unwrap()
            ),
        );
        log(
            "revoke missing",
            format!(
                "{:?}",
                s.set_agent_status("t", "zz", AgentStatus::Revoked, "x")
                    .await
                    .unwrap()
            ),
        );
        let mut all = s.all_agents().await.unwrap();
        all.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        log("all agents", format!("{all:?}"));

        let policy = |id: &str, name: &str| {
            StoredPolicy {
            tenant: "t".into(),
            input: serde_json::from_value(json!({"id": id, "name": name, "actions": ["read"], "resources": ["api://crm/**"], "effect": "allow", "constraints": {"maxRows": 5}})).unwrap(),
            created_at: "2026-12-01T00:00:00Z".into(),
            updated_at: "2026-12-01T00:00:00Z".into(),
        }
        };
        log(
            "p1",
            format!("{:?}", s.insert_policy(&policy("pol_1", "one")).await),
        );
        log(
            "p2",
            format!("{:?}", s.insert_policy(&policy("pol_2", "two")).await),
        );
        log(
            "p3 same name",
            format!(
                "{}",
                conflict(s.insert_policy(&policy("pol_3", "one")).await)
            ),
        );
        log(
            "update",
            format!("{:?}", s.update_policy(&policy("pol_1", "uno")).await),
        );
        log(
            "update missing",
            format!("{:?}", s.update_policy(&policy("pol_9", "x")).await),
        );
        let names = |ps: Vec<StoredPolicy>| {
            ps.iter()
                .map(|p| format!("{}={:?}", p.id(), p.input.name))
                .collect::<Vec<_>>()
                .join(",")
        };
        log("policies", names(s.policies("t").await.unwrap()));
        log(
            "delete",
            format!("{:?}", s.delete_policy("t", "pol_2").await),
        );
        log(
            "delete again",
            format!("{:?}", s.delete_policy("t", "pol_2").await),
        );
        log("all policies", names(s.all_policies().await.unwrap()));
        log(
            "policy",
            format!(
                "{:?}",
                s.policy("t", "pol_1")
                    .await
                    .unwrap()
                    .map(|p| p.input.constraints)
            ),
        );

        let token = |id: &str, exp: i64| TokenRecord {
            id: id.into(),
            tenant: "t".into(),
            agent_id: "a1".into(),
            policy_ids: Some(vec!["pol_1".into()]),
            issued_at: 1000,
            expires_at: exp,
            revoked_at: None,
            kid: Some("kabc".into()),
        };
        for (id, exp) in [("tok_1", 5000), ("tok_2", 5000), ("tok_3", 1500)] {
            log(id, format!("{:?}", s.insert_token(&token(id, exp)).await));
        }
        log(
            "revoke tok_1",
            format!("{:?}", s.revoke_token("t", "tok_1", 2000).await),
        );
        log(
            "revoke again",
            format!("{:?}", s.revoke_token("t", "tok_1", 3000).await),
        );
        log(
            "revoke other tenant",
            format!("{:?}", s.revoke_token("u", "tok_2", 2000).await),
        );
        log(
            "revoke tok_3",
            format!("{:?}", s.revoke_token("t", "tok_3", 1200).await),
        );
        let mut revoked = s.revoked_token_ids(2000).await.unwrap();
        revoked.sort();
        log("revoked", format!("{revoked:?}"));
        log("token", format!("{:?}", s.token("t", "tok_2").await));
        log(
            "live by kid",
            format!("{:?}", s.live_tokens_by_kid(2000).await),
        );

        let key = |id: &str, b: u8| ApiKeyRecord {
            id: id.into(),
            hash: [b; 32],
            tenant: "t".into(),
            name: format!("key {id}"),
            role: Role::Issuer,
            agents: Some(vec!["a1".into()]),
            created_at: "2026-12-01T00:00:00Z".into(),
            source: actgate::policy::PolicySource::Api,
        };
        log("k1", format!("{:?}", s.put_api_key(&key("key_1", 1)).await));
        log(
            "k2 same hash",
            format!("{}", conflict(s.put_api_key(&key("key_2", 1)).await)),
        );
        log("k3", format!("{:?}", s.put_api_key(&key("key_3", 3)).await));
        log("keys", format!("{:?}", s.api_keys().await));
        log(
            "delete k1",
            format!("{:?}", s.delete_api_key("t", "key_1").await),
        );
        log(
            "delete k1 again",
            format!("{:?}", s.delete_api_key("t", "key_1").await),
        );
        log("keys after", format!("{:?}", s.api_keys().await));
        log("ping", format!("{:?}", s.ping().await));
        out
    }

    let a = script(&sqlite).await;
    let b = script(&postgres).await;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "SQLite and PostgreSQL disagree");
    }
    assert_eq!(a.len(), b.len());
}
