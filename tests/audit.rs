//! The tamper-evident audit log: verification of intact and tampered logs, torn-write repair,
//! index rebuild, strict durability, queue-full behaviour, and a kill -9 crash test.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use actgate::audit::log::{self, Checkpoint};
use actgate::token::keys::public_keys;
use common::process::{Proc, actgate};
use common::upstream::Upstream;
use common::{KEY, TestGateway, config_yaml};
use serde_json::json;

// Strict: each decision is its own commit, so segments rotate at the same records however
// fast the machine is (a batched commit can hold a whole run of decisions).
const SMALL_SEGMENTS: &str =
    "audit: { durability: strict, segmentMaxBytes: 4096, checkpointEvery: 10 }\n";

const POLICY: &str = r#"{"name": "read", "actions": ["read"], "resources": ["api://crm/customers/*"], "effect": "allow"}"#;

/// A gateway that made `n` decisions (half allowed, half denied) and was stopped.
async fn log_with(n: usize, extra: &str) -> tempfile::TempDir {
    let gw = TestGateway::start(extra).await;
    gw.raw_post("/v1/policies", KEY, "application/json", POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    for i in 0..n {
        let action = if i % 2 == 0 { "read" } else { "delete" };
        gw.enforce(
            &token,
            action,
            &format!("api://crm/customers/{i}"),
            json!({}),
        )
        .await;
    }
    gw.stop().await
}

fn audit_dir(dir: &Path) -> PathBuf {
    dir.join("data/audit")
}

fn verify(dir: &Path) -> Result<log::Verified, log::Broken> {
    let keys = public_keys(&dir.join("data/keys")).unwrap();
    log::verify(&audit_dir(dir), &|kid| keys.get(kid).cloned(), &[])
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// A copy of a stopped gateway's data directory, to tamper with.
fn copy(dir: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir.join("data"))
        .arg(to.path())
        .status()
        .unwrap();
    assert!(status.success());
    to
}

#[tokio::test]
async fn an_intact_log_verifies_and_every_kind_of_tampering_is_found_and_located() {
    let dir = log_with(80, SMALL_SEGMENTS).await;
    let ok = verify(dir.path()).unwrap();
    assert_eq!(ok.records, 80);
    assert!(ok.segments >= 3, "small segments rotate: {ok:?}");
    assert!(ok.checkpoints >= 2, "{ok:?}");
    let segs = log::segments(&audit_dir(dir.path())).unwrap();

    // Edited record: the next record's prevHash no longer matches.
    let t = copy(dir.path());
    let seg = log::segments(&audit_dir(t.path())).unwrap()[1].clone();
    let mut lines = lines_of(&seg);
    assert!(lines.len() >= 2);
    let edited_seq: u64 = serde_json::from_str::<serde_json::Value>(&lines[0]).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let edited = lines[0].replace("api://crm", "api://hr");
    assert_ne!(edited, lines[0]);
    lines[0] = edited;
    write_lines(&seg, &lines);
    let err = verify(t.path()).unwrap_err();
    assert_eq!(err.file, seg);
    assert_eq!(err.line, Some(2));
    assert_eq!(err.seq, Some(edited_seq + 1));
    assert!(err.what.contains("prevHash"), "{err}");

    // Deleted record.
    let t = copy(dir.path());
    let seg = log::segments(&audit_dir(t.path())).unwrap()[2].clone();
    let mut lines = lines_of(&seg);
    lines.remove(1);
    write_lines(&seg, &lines);
    let err = verify(t.path()).unwrap_err();
    assert_eq!((err.file.clone(), err.line), (seg, Some(2)), "{err}");
    assert!(err.what.contains("deleted"), "{err}");

    // Reordered records.
    let t = copy(dir.path());
    let seg = log::segments(&audit_dir(t.path())).unwrap()[1].clone();
    let mut lines = lines_of(&seg);
    lines.swap(0, 1);
    write_lines(&seg, &lines);
    let err = verify(t.path()).unwrap_err();
    assert_eq!((err.file.clone(), err.line), (seg, Some(1)), "{err}");

    // Truncation after a checkpoint: the tail is cut cleanly, the chain alone looks fine,
    // the signed checkpoint does not.
    let t = copy(dir.path());
    let mut cut = 2;
    while cut > 0 {
        let last = log::segments(&audit_dir(t.path()))
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let mut lines = lines_of(&last);
        if lines.len() > cut {
            lines.truncate(lines.len() - cut);
            write_lines(&last, &lines);
            cut = 0;
        } else {
            cut -= lines.len();
            std::fs::remove_file(&last).unwrap();
        }
    }
    let err = verify(t.path()).unwrap_err();
    assert!(err.what.contains("truncated"), "{err}");

    // A whole segment removed.
    let t = copy(dir.path());
    std::fs::remove_file(&log::segments(&audit_dir(t.path())).unwrap()[2]).unwrap();
    let err = verify(t.path()).unwrap_err();
    assert!(err.what.contains("segment is missing"), "{err}");

    // The last record rewritten: only the checkpoint can tell.
    let t = copy(dir.path());
    let last = log::segments(&audit_dir(t.path()))
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let mut lines = lines_of(&last);
    let n = lines.len() - 1;
    lines[n] = lines[n].replace("api://crm", "api://hr");
    write_lines(&last, &lines);
    let err = verify(t.path()).unwrap_err();
    assert!(err.what.contains("rewritten"), "{err}");

    // A forged checkpoint.
    let t = copy(dir.path());
    let cp_path = audit_dir(t.path()).join(log::CHECKPOINTS);
    let mut cps = lines_of(&cp_path);
    let mut cp: Checkpoint = serde_json::from_str(&cps[0]).unwrap();
    cp.hash = "00".repeat(32);
    cps[0] = serde_json::to_string(&cp).unwrap();
    write_lines(&cp_path, &cps);
    let err = verify(t.path()).unwrap_err();
    assert!(err.what.contains("signature"), "{err}");
    let _ = segs;
}

#[tokio::test]
async fn the_cli_verifies_exports_checkpoints_and_exits_1_on_tampering() {
    let dir = log_with(12, "").await;
    let config = dir.path().join("actgate.yaml");
    std::fs::write(&config, config_yaml(&dir.path().join("data"), "")).unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = actgate(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: 12 records"), "{out}");
    // Export a checkpoint, keep it "elsewhere", then truncate the log and its checkpoints.
    let (code, exported, err) = actgate(&["audit", "checkpoint", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let kept = dir.path().join("kept-checkpoint.json");
    std::fs::write(&kept, &exported).unwrap();
    let seg = log::segments(&audit_dir(dir.path())).unwrap()[0].clone();
    let mut lines = lines_of(&seg);
    lines.truncate(8);
    write_lines(&seg, &lines);
    std::fs::remove_file(audit_dir(dir.path()).join(log::CHECKPOINTS)).unwrap();
    // The index still records seq 9..12: verify says what `serve` would refuse.
    let (code, out, _) = actgate(&["audit", "verify", "--config", cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("TAMPERED:")
            && out.contains("the log ends at seq 8")
            && out.contains("seq 9..=12 are missing"),
        "{out}"
    );
    // With the index gone too, only the exported checkpoint can tell.
    std::fs::remove_dir_all(dir.path().join("data/audit-index")).unwrap();
    let (code, out, _) = actgate(&["audit", "verify", "--config", cfg]);
    assert_eq!(
        code, 0,
        "without the index and the exported checkpoint a clean truncation is invisible: {out}"
    );
    let (code, out, _) = actgate(&[
        "audit",
        "verify",
        "--config",
        cfg,
        "--checkpoint",
        kept.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("TAMPERED:") && out.contains("truncated"),
        "{out}"
    );
    // Tail prints the last records as JSON.
    let (code, out, _) = actgate(&["audit", "tail", "--config", cfg, "-n", "3"]);
    assert_eq!(code, 0);
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![6, 7, 8]);
}

#[tokio::test]
async fn a_torn_last_record_is_repaired_at_start_without_losing_the_records_before_it() {
    let dir = log_with(10, "").await;
    let seg = log::segments(&audit_dir(dir.path()))
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, br#"{"prevHash":"ab12","seq":11,"kind":"deci"#).unwrap();
    drop(f);
    assert!(verify(dir.path()).is_err(), "torn before repair");
    let gw = TestGateway::start_in(dir, "").await;
    let torn: Vec<_> = std::fs::read_dir(audit_dir(gw.dir.path()))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(torn.len(), 1, "the torn bytes are kept for forensics");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("actgate_audit_torn_repairs_total 1"),
        "{metrics}"
    );
    // New records chain onto the last intact one.
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    gw.enforce(&token, "read", "api://crm/customers/1", json!({}))
        .await;
    let dir = gw.stop().await;
    let ok = verify(dir.path()).unwrap();
    assert_eq!(ok.records, 11);
}

#[tokio::test]
async fn damage_inside_the_log_stops_the_start_and_says_why() {
    let dir = log_with(6, "").await;
    let seg = log::segments(&audit_dir(dir.path()))
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let mut lines = lines_of(&seg);
    lines[2] = "garbage".into();
    write_lines(&seg, &lines);
    let yaml = config_yaml(&dir.path().join("data"), "");
    let config = actgate::config::Config::parse(&yaml, "test").unwrap();
    let err = actgate::server::start(config)
        .await
        .err()
        .expect("refuses to start");
    assert!(
        err.to_string().contains("line 3 is not an audit record"),
        "{err}"
    );
}

#[tokio::test]
async fn the_index_is_rebuilt_from_the_log() {
    let dir = log_with(8, "").await;
    // Lose the index (a volume restored without it, or removed to be rebuilt).
    let index = actgate::audit::index::index_dir(&dir.path().join("data"));
    assert_eq!(
        actgate::audit::index::head(&dir.path().join("data")).unwrap(),
        Some(8)
    );
    std::fs::remove_dir_all(&index).unwrap();
    let gw = TestGateway::start_in(dir, "").await;
    assert_eq!(gw.audit_events(8).await.len(), 8, "caught up at start");
    let dir = gw.stop().await;
    // A log that is behind its index refuses to start, until reindexed.
    std::fs::remove_dir_all(audit_dir(dir.path())).unwrap();
    let yaml = config_yaml(&dir.path().join("data"), "");
    let err = actgate::server::start(actgate::config::Config::parse(&yaml, "t").unwrap())
        .await
        .err()
        .expect("refuses");
    assert!(err.to_string().contains("audit reindex"), "{err}");
    let config = dir.path().join("actgate.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let (code, out, err) = actgate(&["audit", "reindex", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reindexed 0 audit records"));
    let gw = TestGateway::start_in(dir, "").await;
    gw.stop().await;
}

#[tokio::test]
async fn strict_mode_answers_only_after_the_record_is_on_disk() {
    let gw = TestGateway::start("audit: { durability: strict }\n").await;
    gw.raw_post("/v1/policies", KEY, "application/json", POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    for i in 0..5 {
        let d = gw
            .enforce(
                &token,
                "read",
                &format!("api://crm/customers/{i}"),
                json!({}),
            )
            .await;
        let id = d["auditId"].as_str().unwrap().to_string();
        let mut found = false;
        log::read_from(&gw.data_dir().join("audit"), 0, |r| {
            found |= r.event.id == id
        })
        .unwrap();
        assert!(
            found,
            "enforce answered before its record {id} was in the log"
        );
    }
}

async fn burst(gw: &TestGateway, token: &str, n: usize) -> Vec<serde_json::Value> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = gw.client.clone();
        let url = format!("{}/v1/enforce", gw.api);
        let body = json!({"capabilityToken": token, "action": "read", "resourceId": format!("api://crm/customers/{i}")});
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("X-Api-Key", KEY)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_full_queue_denies_in_deny_mode_and_is_counted() {
    let gw =
        TestGateway::start("audit: { queueCapacity: 1, flushInterval: 1s, onFull: deny }\n").await;
    gw.raw_post("/v1/policies", KEY, "application/json", POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let answers = burst(&gw, &token, 20).await;
    let denied = answers
        .iter()
        .filter(|a| a["reason"] == "internal_error")
        .count();
    let allowed = answers
        .iter()
        .filter(|a| a["decision"] == "allowed")
        .count();
    assert!(denied >= 1, "{answers:?}");
    assert_eq!(denied + allowed, 20);
    let metrics = gw.metrics().await;
    let failures: u64 = metrics
        .lines()
        .find(|l| l.starts_with("actgate_audit_failures_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(failures, denied as u64);
    // Every allowed answer has its record.
    let dir = gw.stop().await;
    assert_eq!(verify(dir.path()).unwrap().records, allowed as u64);
}

#[tokio::test]
async fn a_full_queue_applies_backpressure_in_block_mode_and_loses_nothing() {
    let gw =
        TestGateway::start("audit: { queueCapacity: 1, flushInterval: 100ms, onFull: block }\n")
            .await;
    gw.raw_post("/v1/policies", KEY, "application/json", POLICY)
        .await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let answers = burst(&gw, &token, 12).await;
    assert!(
        answers.iter().all(|a| a["decision"] == "allowed"),
        "{answers:?}"
    );
    let dir = gw.stop().await;
    assert_eq!(verify(dir.path()).unwrap().records, 12);
}

#[tokio::test]
async fn kill_9_in_strict_mode_loses_no_record_of_a_forwarded_request() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = format!(
        r#"
audit: {{ durability: strict }}
upstreams: {{ crm: {{ url: "{}", timeout: 5s }} }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}" }}
policies:
  - {{ name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow }}
"#,
        up.url()
    );
    let config = dir.path().join("actgate.yaml");
    std::fs::write(&config, config_yaml(&data, &extra)).unwrap();
    let proc = Proc::spawn(&config, &[]);
    let client = reqwest::Client::new();
    let (_agent, token) = common::agent_and_token(&proc.api).await;
    // Eight clients hammer the proxy until the gateway dies under them.
    let mut workers = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        let url = proc.proxy.clone();
        let token = token.clone();
        workers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let r = client
                    .get(format!("{url}/crm/customers/{w}-{i}"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                if r.is_err() {
                    break;
                }
            }
        }));
    }
    for _ in 0..2000 {
        if up.requests().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proc.kill9();
    for w in workers {
        let _ = w.await;
    }
    let received = up.requests();
    assert!(received.len() >= 200, "traffic flowed: {}", received.len());
    // Restart on the same data: the log opens (repairing a torn tail if the kill left one).
    let proc = Proc::spawn(&config, &[]);
    proc.stop();
    let mut logged = std::collections::HashSet::new();
    log::read_from(&data.join("audit"), 0, |r| {
        if r.event.kind == actgate::audit::EventKind::Decision {
            logged.insert(r.event.request_id.clone());
        }
    })
    .unwrap();
    let missing: Vec<_> = received
        .iter()
        .map(|r| r.headers["x-act-request-id"].to_str().unwrap().to_string())
        .filter(|id| !logged.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} forwarded requests have no audit record, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let keys = public_keys(&data.join("keys")).unwrap();
    let ok = log::verify(&data.join("audit"), &|kid| keys.get(kid).cloned(), &[]).unwrap();
    assert!(ok.records as usize >= received.len());
}

/// The records of a stopped gateway's log, oldest first.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    log::read_from(&audit_dir(dir), 0, |r| {
        out.push(serde_json::to_value(&r.event).unwrap())
    })
    .unwrap();
    out
}

async fn forward_fast_and_abandon_slow(durability: &str) -> tempfile::TempDir {
    let up = Upstream::start().await;
    let extra = format!(
        r#"
audit: {{ durability: {durability} }}
upstreams: {{ crm: {{ url: "{}", timeout: 5s }} }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}" }}
  - {{ name: slow, method: GET, path: "/slow/{{id}}", upstream: crm, action: read, resource: "api://crm/slow/{{id}}" }}
policies:
  - {{ name: read, actions: [read], resources: ["api://crm/**"], effect: allow }}
"#,
        up.url()
    );
    let gw = TestGateway::start(&extra).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let ok = gw
        .client
        .get(format!("{}/crm/customers/7", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    // The client gives up while the upstream takes its time.
    let gone = gw
        .client
        .get(format!("{}/slow/1", gw.proxy))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gone.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.stop().await
}

#[tokio::test]
async fn batched_mode_writes_one_record_per_request_with_its_outcome_and_keeps_abandoned_ones() {
    let dir = forward_fast_and_abandon_slow("batched").await;
    let recs = records(dir.path());
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert!(recs.iter().all(|r| r["kind"] == "decision"), "{recs:#?}");
    let ok = recs.iter().find(|r| r["route"] == "get-customer").unwrap();
    assert_eq!(ok["decision"], "allowed");
    assert_eq!(ok["upstreamStatus"], 200);
    assert!(ok["latencyUs"].as_u64().is_some());
    // Abandoned mid-forward: the decision is recorded, with no outcome.
    let slow = recs.iter().find(|r| r["route"] == "slow").unwrap();
    assert_eq!(slow["decision"], "allowed");
    assert!(slow.get("upstreamStatus").is_none(), "{slow}");
    verify(dir.path()).unwrap();
}

#[tokio::test]
async fn strict_mode_commits_the_decision_first_and_the_outcome_after() {
    let dir = forward_fast_and_abandon_slow("strict").await;
    let recs = records(dir.path());
    let decision = recs.iter().find(|r| r["route"] == "get-customer").unwrap();
    let outcome = recs
        .iter()
        .find(|r| r["kind"] == "outcome" && r["decisionId"] == decision["id"])
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert_eq!(outcome["upstreamStatus"], 200);
    assert!(decision["seq"].as_u64() < outcome["seq"].as_u64());
    assert!(recs.iter().any(|r| r["route"] == "slow"));
}
