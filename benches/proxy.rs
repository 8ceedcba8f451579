//! Added latency of the proxy, in one run: the same small GET sent sequentially over one
//! keep-alive connection (a) straight to the upstream, (b) through actgate, allowed with a
//! warm token cache, (c) through actgate on the deny path. Rounds alternate between the three
//! so machine noise hits them alike. Prints p50/p99/mean and the added latency.
//!
//! ```text
//! cargo bench --bench proxy
//! ```
//! (The throughput comparison with nginx is `benches/proxy-load.sh`.)

use std::convert::Infallible;
use std::time::Instant;

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
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(
                                b"{\"id\":42,\"name\":\"Ada\"}",
                            )))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "bench-key-0123456789";
    let yaml = format!(
        r#"
listen: {{ proxy: "127.0.0.1:0", api: "127.0.0.1:0", admin: "127.0.0.1:0" }}
dataDir: {data}
apiKeys: [{{ name: bench, sha256: {hash} }}]
upstreams: {{ crm: {{ url: "http://{up}", timeout: 5s }} }}
routes:
  - {{ name: get-customer, method: GET, path: "/crm/customers/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}" }}
  - {{ name: delete-customer, method: DELETE, path: "/crm/customers/{{id}}", upstream: crm, action: delete, resource: "api://crm/customers/{{id}}" }}
policies:
  - {{ name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow }}
"#,
        data = dir.path().display(),
        hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes())),
    );
    let config = Config::parse(&yaml, "bench").unwrap();
    let running = actgate::server::start(config).await.unwrap();
    let api = format!("http://{}", running.api);
    let proxy = format!("http://{}", running.proxy);

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let json = |method: &str, path: &str, body: String| {
        Request::builder()
            .method(method)
            .uri(format!("{api}{path}"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let resp = client
        .request(json("POST", "/v1/agents", r#"{"name":"bench"}"#.into()))
        .await
        .unwrap();
    let agent: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let resp = client
        .request(json(
            "POST",
            "/v1/tokens",
            format!(r#"{{"agentId":"{}"}}"#, agent["id"].as_str().unwrap()),
        ))
        .await
        .unwrap();
    let tok: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let bearer = format!("Bearer {}", tok["token"].as_str().unwrap());

    let get: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let targets = [
        (
            "direct",
            format!("http://{up}/crm/customers/42"),
            "GET",
            200,
        ),
        (
            "actgate allow",
            format!("{proxy}/crm/customers/42"),
            "GET",
            200,
        ),
        (
            "actgate deny",
            format!("{proxy}/crm/customers/42"),
            "DELETE",
            403,
        ),
    ];
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); targets.len()];
    let rounds = 20;
    let per_round = 1000;
    for round in 0..=rounds {
        for (i, (_, url, method, want)) in targets.iter().enumerate() {
            for _ in 0..per_round {
                let req = Request::builder()
                    .method(*method)
                    .uri(url.as_str())
                    .header("authorization", bearer.as_str())
                    .body(Empty::new())
                    .unwrap();
                let t = Instant::now();
                let resp = get.request(req).await.unwrap();
                let status = resp.status().as_u16();
                resp.into_body().collect().await.unwrap();
                let ns = t.elapsed().as_nanos() as u64;
                assert_eq!(status, *want);
                // Round 0 warms connections and caches.
                if round > 0 {
                    samples[i].push(ns);
                }
            }
        }
    }
    println!();
    println!("| path | requests | p50 µs | p99 µs | mean µs | added p50 µs | added mean µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let stats: Vec<(u64, u64, f64)> = samples
        .iter_mut()
        .map(|s| {
            s.sort_unstable();
            let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
            (percentile(s, 0.5), percentile(s, 0.99), mean)
        })
        .collect();
    for (i, (name, ..)) in targets.iter().enumerate() {
        let (p50, p99, mean) = stats[i];
        let (d50, _, dmean) = stats[0];
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            samples[i].len(),
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            mean / 1e3,
            (p50 as f64 - d50 as f64) / 1e3,
            (mean - dmean) / 1e3
        );
    }
    running.shutdown().await;
}
