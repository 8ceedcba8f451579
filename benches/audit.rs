//! What durability costs: proxy throughput with `audit.durability` `off`, `batched` and
//! `strict`, in one run. Three gateways (one per mode) in front of one upstream; 32 clients
//! send allowed GETs through each for 3 s per round, rounds alternating between the modes;
//! the table shows the median of 3 rounds and the ratio to `off`.
//!
//! ```text
//! cargo bench --bench audit
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actgate::config::Config;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

async fn upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"{\"id\":42}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Gw {
    mode: &'static str,
    proxy: String,
    bearer: String,
    _running: actgate::server::Running,
    _dir: tempfile::TempDir,
}

async fn gateway(mode: &'static str, up: std::net::SocketAddr) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let key = "bench-key-0123456789";
    let yaml = format!(
        r#"
listen: {{ proxy: "127.0.0.1:0", api: "127.0.0.1:0", admin: "127.0.0.1:0" }}
dataDir: {data}
apiKeys: [{{ name: bench, sha256: {hash} }}]
audit: {{ durability: {mode} }}
upstreams: {{ crm: {{ url: "http://{up}", timeout: 5s }} }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}" }}
policies:
  - {{ name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow }}
"#,
        data = dir.path().display(),
        hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes())),
    );
    let running = actgate::server::start(Config::parse(&yaml, "bench").unwrap())
        .await
        .unwrap();
    let api = format!("http://{}", running.api);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let post = |path: &str, body: String| {
        Request::post(format!("{api}{path}"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let r = client
        .request(post("/v1/agents", r#"{"name":"bench"}"#.into()))
        .await
        .unwrap();
    let agent: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let r = client
        .request(post(
            "/v1/tokens",
            format!(r#"{{"agentId":"{}"}}"#, agent["id"].as_str().unwrap()),
        ))
        .await
        .unwrap();
    let tok: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    Gw {
        mode,
        proxy: format!("http://{}", running.proxy),
        bearer: format!("Bearer {}", tok["token"].as_str().unwrap()),
        _running: running,
        _dir: dir,
    }
}

async fn load(gw: &Gw, clients: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let url = format!("{}/crm/customers/{c}", gw.proxy);
        let bearer = gw.bearer.clone();
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(url.as_str())
                    .header("authorization", bearer.as_str())
                    .body(Empty::new())
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / elapsed
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let up = upstream().await;
        let gws = vec![
            gateway("off", up).await,
            gateway("batched", up).await,
            gateway("strict", up).await,
        ];
        for gw in &gws {
            load(gw, 32, 1).await; // warm up
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); gws.len()];
        for _round in 0..3 {
            for (i, gw) in gws.iter().enumerate() {
                rates[i].push(load(gw, 32, 3).await);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let medians: Vec<f64> = rates.iter_mut().map(median).collect();
        println!();
        println!("| audit.durability | requests/s (median of 3 × 3 s, 32 clients) | vs off |");
        println!("|---|---:|---:|");
        for (i, gw) in gws.iter().enumerate() {
            println!(
                "| {} | {:.0} | {:.2}× |",
                gw.mode,
                medians[i],
                medians[i] / medians[0]
            );
        }
    });
}
