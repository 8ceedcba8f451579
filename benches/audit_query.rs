//! `GET /v1/audit` on a large log: how long each filter takes through the REST API once the
//! log holds millions of events (target: ≤ 50 ms on 10 million).
//!
//! ```text
//! cargo bench --bench audit_query                        # 10 million events
//! AUDIT_BENCH_EVENTS=1000000 cargo bench --bench audit_query
//! ```
//!
//! The first run writes the log and its index under `target/audit-bench-<events>/` (about
//! 450 bytes of log per event: 4.5 GB for 10 million; kept for the next run); then a gateway
//! starts on it and each query is asked 7 times, the median and the slowest reported.
//!
//! The events: 1,000 agents in turn, plus one rare agent every 1,000,000 events; 1% denied;
//! actions read/write/delete; 100,000 distinct resources; one event per millisecond.

use std::path::Path;
use std::time::{Duration, Instant};

use actgate::audit::index::AuditIndex;
use actgate::audit::log::LogFile;
use actgate::audit::{AuditEvent, Source};

const KEY: &str = "audit-bench-key-0123456789abcdef";
const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn event(i: u64) -> AuditEvent {
    let mut e = AuditEvent::refusal(
        format!("aud_bench{i:012}"),
        Source::Proxy,
        "bench",
        &format!("req_bench{i:012}"),
        if i % 100 == 7 {
            "no_matching_policy"
        } else {
            "allowed"
        },
        if i % 100 == 7 {
            "no policy allows this action on this resource (default deny)".into()
        } else {
            String::new()
        },
    );
    e.decision = if i % 100 == 7 { "denied" } else { "allowed" }.into();
    e.agent_id = Some(if i % 1_000_000 == 500_000 {
        "agent_rare".into()
    } else {
        format!("agent_{:04}", i % 1000).into()
    });
    e.token_id = Some(format!("tok_{:06}", i % 100_000).into());
    e.action = ["read", "write", "delete"][(i % 3) as usize].into();
    e.resource = format!("api://crm/customers/{}", (i * 7919) % 100_000);
    e.route = Some("get-customer".into());
    e.method = Some("GET".into());
    e.upstream_status = (e.decision == "allowed").then_some(200);
    e.latency_us = Some(180 + i % 50);
    e.time_ms = START_MS + i as i64;
    e.time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(e.time_ms as u64),
    )
    .to_string();
    e.snapshot_version = 1;
    e
}

fn build(data: &Path, events: u64) {
    let log_dir = data.join("audit");
    let (mut log, _) = LogFile::open(&log_dir, 256 << 20).expect("log opens");
    if log.last_seq >= events {
        return;
    }
    let index = AuditIndex::open(data, &log_dir).expect("index opens");
    let started = Instant::now();
    let mut i = log.last_seq;
    while i < events {
        let n = 8192.min(events - i);
        let mut batch: Vec<AuditEvent> = (i..i + n).map(event).collect();
        let pos = log.append(&mut batch).expect("append");
        index.append(&batch, &pos).expect("index");
        i += n;
        if i % 1_000_000 < 8192 {
            eprintln!(
                "  written {i} of {events} events ({:.0}s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

fn main() {
    let events: u64 = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("audit-bench-{events}"));
    let data = root.join("data");
    std::fs::create_dir_all(&data).expect("bench dir");
    eprintln!("== log and index of {events} events in {}", data.display());
    build(&data, events);
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(KEY.as_bytes()));
    let yaml = format!(
        r#"
listen: {{ proxy: "127.0.0.1:0", api: "127.0.0.1:0", admin: "127.0.0.1:0" }}
dataDir: {data}
tenant: bench
apiKeys: [{{ name: bench, sha256: {hash} }}]
reload: {{ watch: false }}
"#,
        data = data.display()
    );
    let config = actgate::config::Config::parse(&yaml, "bench").expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let opened = Instant::now();
        let running = actgate::server::start(config)
            .await
            .expect("gateway starts");
        eprintln!(
            "== gateway started on it in {:.2}s",
            opened.elapsed().as_secs_f64()
        );
        let api = format!("http://{}", running.api);
        let client = reqwest::Client::new();
        let mid = START_MS + events as i64 / 2;
        let queries: Vec<(&str, String)> = vec![
            ("newest 100", "limit=100".into()),
            ("newest 1000", "limit=1000".into()),
            (
                "one agent (1 in 1,000)",
                "agentId=agent_0042&limit=100".into(),
            ),
            (
                "a rare agent (1 in 1,000,000)",
                "agentId=agent_rare&limit=100".into(),
            ),
            (
                "an unknown agent (full scan)",
                "agentId=nobody&limit=100".into(),
            ),
            ("denied (1%)", "decision=denied&limit=100".into()),
            (
                "one resource (1 in 100,000)",
                "resource=api://crm/customers/4242&limit=100".into(),
            ),
            (
                "one minute, mid-log",
                format!("since={}&until={}&limit=100", mid, mid + 60_000),
            ),
            (
                "denied deletes of one agent",
                "agentId=agent_0007&decision=denied&action=delete&limit=100".into(),
            ),
            (
                "page 2 of newest (cursor)",
                format!("cursor={}&limit=100", events - 99),
            ),
        ];
        println!("| `GET /v1/audit` on {events} events | results | median ms | slowest ms |");
        println!("|---|---:|---:|---:|");
        let mut worst = 0.0f64;
        for (name, q) in queries {
            let mut times = Vec::new();
            let mut results = 0;
            for _ in 0..7 {
                let t = Instant::now();
                let resp = client
                    .get(format!("{api}/v1/audit?{q}"))
                    .header("X-Api-Key", KEY)
                    .send()
                    .await
                    .expect("answer");
                assert_eq!(resp.status(), 200, "{q}");
                let body: serde_json::Value = resp.json().await.expect("json");
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                results = body["events"].as_array().map_or(0, Vec::len);
            }
            times.sort_by(f64::total_cmp);
            worst = worst.max(times[3]);
            println!(
                "| {name} | {results} | {:.1} | {:.1} |",
                times[3],
                times[times.len() - 1]
            );
        }
        println!();
        println!(
            "slowest median: {worst:.1} ms ({} the 50 ms target)",
            if worst <= 50.0 { "within" } else { "OVER" }
        );
        running.shutdown().await;
    });
}
