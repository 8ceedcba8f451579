//! A whole request through the proxy stack: raw bytes over a real socket to a running
//! actgate; the gateway never crashes, and the upstream only ever receives requests whose
//! target actgate accepts as canonical, with actgate's own identity headers.
#![no_main]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

struct World {
    proxy: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    token: String,
    _rt: tokio::runtime::Runtime,
    _dir: std::path::PathBuf,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let dir = std::env::temp_dir().join(format!("actgate-fuzz-{}", std::process::id()));
        let (proxy, token) = rt.block_on(async {
            // Upstream: records the request line and X-Act-Agent-Id of each request.
            let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let up_addr = up.local_addr().unwrap();
            let rec = Arc::clone(&seen);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok((mut s, _)) = up.accept().await {
                    let rec = Arc::clone(&rec);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        // A connection abandoned before anything was sent (the client of a
                        // forwarded request went away) carries no request.
                        if n == 0 {
                            return;
                        }
                        let head = String::from_utf8_lossy(&buf[..n]).to_string();
                        rec.lock().unwrap().push(head);
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
                    });
                }
            });
            let yaml = format!(
                "listen: {{ proxy: \"127.0.0.1:0\", api: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\ndataDir: {}\naudit: {{ durability: off }}\nagents: [{{ id: agent_fuzz, name: fuzz }}]\nupstreams: {{ u: {{ url: \"http://{up_addr}\" }} }}\nroutes:\n  - {{ name: r, method: GET, path: \"/crm/customers/{{id}}\", upstream: u, action: read, resource: \"api://crm/customers/{{id}}\" }}\n  - {{ name: l, method: GET, path: /crm/customers, upstream: u, action: list, resource: \"api://crm/customers\", rows: {{ query: limit }} }}\n  - {{ name: u, method: POST, path: \"/crm/customers/{{id}}\", upstream: u, action: update, resource: \"api://crm/customers/{{id}}\" }}\n  - {{ name: m, method: POST, path: /mail, upstream: u, action: send, resource: \"api://mail\", recipients: {{ json: [/to] }} }}\npolicies:\n  - {{ name: p, actions: [\"*\"], resources: [\"api://crm/customers\", \"api://crm/customers/*\", \"api://mail\"], effect: allow, constraints: {{ maxRows: 10 }} }}\n",
                dir.display()
            );
            let config = actgate::config::Config::parse(&yaml, "fuzz").unwrap();
            let running = actgate::server::start(config).await.unwrap();
            let proxy = running.proxy;
            let (token, _) = running
                .gateway
                .tokens
                .issue("agent_fuzz", "default-tenant", Duration::from_secs(86400), None, actgate::token::now_unix())
                .unwrap();
            std::mem::forget(running);
            (proxy, token)
        });
        World { proxy, seen, token, _rt: rt, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    // Half the inputs get a valid token spliced in, so requests get past the token stage.
    let text = String::from_utf8_lossy(data).replace("TOKEN", &w.token);
    let Ok(mut s) = TcpStream::connect(w.proxy) else { panic!("the gateway is down") };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = s.write_all(text.as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    for head in w.seen.lock().unwrap().drain(..) {
        let line = head.lines().next().unwrap_or_default();
        let target = line.split(' ').nth(1).unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default();
        assert!(actgate::proxy::canonical::canonical_path(path).is_ok(), "forwarded a non-canonical target {target:?}");
        assert!(head.to_ascii_lowercase().contains("x-act-agent-id: agent_fuzz"), "forwarded without identity: {head:?}");
        assert!(!head.contains(&w.token), "forwarded the token");
    }
});
