//! TLS, mutual TLS, sender-constrained tokens, certificate rotation, https upstreams, live
//! config reload under load, and SIGTERM draining a long request. Certificates are generated
//! in the test with rcgen.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::upstream::Upstream;
use common::{KEY, TestGateway, config_yaml};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use serde_json::json;

/// A test CA that signs server and client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (cert PEM, key PEM) for DNS names and URI SANs; `expired` backdates it.
    fn leaf(&self, dns: &[&str], uris: &[&str], expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A TLS client: trusts `ca`, presents `client` when given, offers `alpn`.
fn tls_client(
    ca: &str,
    client: Option<&(String, String)>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One GET over TLS; `Err` when the handshake or the request fails.
async fn get(
    addr: &str,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
    token: &str,
) -> Result<(u16, String, Option<Vec<u8>>, Vec<CertificateDer<'static>>), String> {
    let tcp = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|a| a.to_vec());
    let server_certs: Vec<_> = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let req = http::Request::get(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut().remove("host");
        s.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        s.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        alpn,
        server_certs,
    ))
}

struct TlsSetup {
    gw: TestGateway,
    up: Upstream,
    ca: Ca,
    cert_path: PathBuf,
    key_path: PathBuf,
    agent_a: String,
    token_a: String,
    token_b: String,
    client_a: (String, String),
}

async fn tls_setup(client_auth: &str) -> TlsSetup {
    let up = Upstream::start().await;
    let ca = Ca::new("actgate test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&["localhost"], &[], false);
    let cert_path = write(dir.path(), "tls.crt", &cert);
    let key_path = write(dir.path(), "tls.key", &key);
    let ca_path = write(dir.path(), "ca.crt", &ca.pem);
    let extra = format!(
        r#"
reload: {{ interval: 100ms }}
tls:
  proxy:
    cert: {cert}
    key: {key}
    clientCa: {ca}
    clientAuth: {client_auth}
    identity: {{ san: uri, template: "spiffe://test.local/tenant/{{tenant}}/agent/{{agent}}" }}
upstreams: {{ crm: {{ url: "{up}", timeout: 5s }} }}
routes:
  - {{ name: open, method: GET, path: "/open/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}" }}
  - {{ name: bound, method: GET, path: "/bound/{{id}}", upstream: crm, action: read, resource: "api://crm/customers/{{id}}", senderConstrained: true }}
policies:
  - {{ name: read, actions: [read], resources: ["api://crm/customers/*"], effect: allow }}
"#,
        cert = cert_path.display(),
        key = key_path.display(),
        ca = ca_path.display(),
        up = up.url()
    );
    let gw = TestGateway::start_in(dir, &extra).await;
    let agent_a = gw.agent().await;
    let agent_b = gw.agent().await;
    let (token_a, _) = gw.token(&agent_a).await;
    let (token_b, _) = gw.token(&agent_b).await;
    let client_a = ca.leaf(
        &[],
        &[&format!(
            "spiffe://test.local/tenant/default-tenant/agent/{agent_a}"
        )],
        false,
    );
    TlsSetup {
        gw,
        up,
        ca,
        cert_path,
        key_path,
        agent_a,
        token_a,
        token_b,
        client_a,
    }
}

#[tokio::test]
async fn tls_serves_h2_and_http1_and_mtls_refuses_strangers() {
    let s = tls_setup("required").await;
    let addr = s.gw.proxy.clone();
    for alpn in [&[b"h2".as_slice()][..], &[b"http/1.1".as_slice()][..]] {
        let c = tls_client(&s.ca.pem, Some(&s.client_a), alpn);
        let (status, body, got, _) = get(&addr, &c, "/open/1", &s.token_a).await.unwrap();
        assert_eq!((status, got.as_deref()), (200, Some(alpn[0])), "{body}");
    }
    // No client certificate: the handshake (or the first request) fails.
    let c = tls_client(&s.ca.pem, None, &[b"http/1.1"]);
    assert!(get(&addr, &c, "/open/1", &s.token_a).await.is_err());
    // A certificate from another CA.
    let other = Ca::new("someone else");
    let stranger = other.leaf(
        &[],
        &[&format!(
            "spiffe://test.local/tenant/default-tenant/agent/{}",
            s.agent_a
        )],
        false,
    );
    let c = tls_client(&s.ca.pem, Some(&stranger), &[b"http/1.1"]);
    assert!(get(&addr, &c, "/open/1", &s.token_a).await.is_err());
    // An expired certificate from the right CA.
    let expired = s.ca.leaf(
        &[],
        &[&format!(
            "spiffe://test.local/tenant/default-tenant/agent/{}",
            s.agent_a
        )],
        true,
    );
    let c = tls_client(&s.ca.pem, Some(&expired), &[b"http/1.1"]);
    assert!(get(&addr, &c, "/open/1", &s.token_a).await.is_err());
    // Plain HTTP on the TLS port gets nothing useful.
    let answer = common::raw(
        &addr,
        b"GET /open/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_ne!(common::raw_status(&answer), 200);
    assert_eq!(s.up.requests().len(), 2);
}

#[tokio::test]
async fn a_sender_constrained_token_only_works_from_its_own_workload() {
    let s = tls_setup("optional").await;
    let addr = s.gw.proxy.clone();
    let mine = tls_client(&s.ca.pem, Some(&s.client_a), &[b"http/1.1"]);
    let (status, _, _, _) = get(&addr, &mine, "/bound/1", &s.token_a).await.unwrap();
    assert_eq!(status, 200);
    // Agent B's token presented from agent A's workload: a stolen token.
    let (status, body, _, _) = get(&addr, &mine, "/bound/1", &s.token_b).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("sender_mismatch"), "{body}");
    // No client certificate at all (allowed by clientAuth: optional) is not an identity.
    let anon = tls_client(&s.ca.pem, None, &[b"http/1.1"]);
    let (status, body, _, _) = get(&addr, &anon, "/bound/1", &s.token_a).await.unwrap();
    assert_eq!(status, 401, "{body}");
    // Routes that do not require it accept any valid caller.
    let (status, _, _, _) = get(&addr, &anon, "/open/1", &s.token_b).await.unwrap();
    assert_eq!(status, 200);
    // An agent can require it for itself, on every route.
    let (st, _) = s
        .gw
        .post(
            "/v1/agents",
            KEY,
            json!({"name": "strict agent", "id": "agent_bound", "metadata": {"senderConstrained": true}}),
        )
        .await;
    assert_eq!(st, reqwest::StatusCode::CREATED);
    let (token, _) = s.gw.token("agent_bound").await;
    let (status, body, _, _) = get(&addr, &anon, "/open/1", &token).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let own = tls_client(
        &s.ca.pem,
        Some(&s.ca.leaf(
            &[],
            &["spiffe://test.local/tenant/default-tenant/agent/agent_bound"],
            false,
        )),
        &[b"h2"],
    );
    let (status, _, _, _) = get(&addr, &own, "/open/1", &token).await.unwrap();
    assert_eq!(status, 200);
    // Agent ids are unique within a tenant only: the workload of another tenant's agent with
    // the same id is another identity, and the token is refused from it.
    let neighbour = tls_client(
        &s.ca.pem,
        Some(&s.ca.leaf(
            &[],
            &["spiffe://test.local/tenant/other/agent/agent_bound"],
            false,
        )),
        &[b"h2"],
    );
    let (status, body, _, _) = get(&addr, &neighbour, "/open/1", &token).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("sender_mismatch"), "{body}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let s = tls_setup("optional").await;
    let addr = s.gw.proxy.clone();
    let c = tls_client(&s.ca.pem, None, &[b"http/1.1"]);
    let (_, _, _, before) = get(&addr, &c, "/open/1", &s.token_a).await.unwrap();
    let (cert, key) = s.ca.leaf(&["localhost", "rotated.local"], &[], false);
    std::fs::write(&s.key_path, key).unwrap();
    std::fs::write(&s.cert_path, cert).unwrap();
    let mut after = before.clone();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = get(&addr, &c, "/open/1", &s.token_a).await.unwrap().3;
        if after != before {
            break;
        }
    }
    assert_ne!(after[0], before[0], "the new certificate is served");
    let _ = &s.agent_a;
}

#[tokio::test]
async fn https_upstreams_are_verified_against_their_ca() {
    // An https upstream with a certificate from a private CA.
    let ca = Ca::new("upstream CA");
    let (cert, key) = ca.leaf(&["crm.internal"], &[], false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"{\"tls\":true}")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_path = write(dir.path(), "upstream-ca.crt", &ca.pem);
    let other_ca = write(dir.path(), "other-ca.crt", &Ca::new("wrong").pem);
    let extra = format!(
        r#"
upstreams:
  crm: {{ url: "https://127.0.0.1:{port}", caFile: {ca}, serverName: crm.internal, timeout: 5s }}
  wrong: {{ url: "https://127.0.0.1:{port}", caFile: {other}, serverName: crm.internal, timeout: 5s }}
routes:
  - {{ name: good, method: GET, path: "/good/{{id}}", upstream: crm, action: read, resource: "api://x/{{id}}" }}
  - {{ name: bad, method: GET, path: "/bad/{{id}}", upstream: wrong, action: read, resource: "api://x/{{id}}" }}
policies:
  - {{ name: read, actions: [read], resources: ["api://x/*"], effect: allow }}
"#,
        ca = ca_path.display(),
        other = other_ca.display()
    );
    let gw = TestGateway::start_in(dir, &extra).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let r = gw
        .client
        .get(format!("{}/good/1", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "{\"tls\":true}");
    // The same upstream through a CA it does not chain to: refused, never sent.
    let r = gw
        .client
        .get(format!("{}/bad/1", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

fn reload_config(dir: &Path, up: &Upstream, policy_resource: &str, extra_route: bool) -> String {
    let mut routes = String::from(
        r#"  - { name: get-customer, method: GET, path: "/crm/customers/{id}", upstream: crm, action: read, resource: "api://crm/customers/{id}" }
"#,
    );
    if extra_route {
        routes.push_str(
            r#"  - { name: get-account, method: GET, path: "/crm/accounts/{id}", upstream: crm, action: read, resource: "api://crm/accounts/{id}" }
"#,
        );
    }
    config_yaml(
        &dir.join("data"),
        &format!(
            "reload: {{ interval: 100ms }}\nupstreams: {{ crm: {{ url: \"{}\", timeout: 5s }} }}\nroutes:\n{routes}policies:\n  - {{ name: read, actions: [read], resources: [\"api://crm/customers/*\", \"{policy_resource}\"], effect: allow }}\n",
            up.url()
        ),
    )
}

#[tokio::test]
async fn reload_under_load_fails_no_request_and_a_bad_config_changes_nothing() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actgate.yaml");
    std::fs::write(&path, reload_config(dir.path(), &up, "api://none/*", false)).unwrap();
    let config = actgate::config::Config::load(&path).unwrap();
    let running = actgate::server::start(config).await.unwrap();
    let proxy = format!("http://{}", running.proxy);
    let api = format!("http://{}", running.api);
    let client = reqwest::Client::new();
    let (_agent, token) = common::agent_and_token(&api).await;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (client, proxy, token) = (client.clone(), proxy.clone(), token.clone());
        let (ok, failed, stop) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .get(format!("{proxy}/crm/customers/{w}-{i}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Five reloads while the load runs, alternating the policy and a route.
    for n in 0..5 {
        let extra = n % 2 == 0;
        std::fs::write(
            &path,
            reload_config(
                dir.path(),
                &up,
                if extra {
                    "api://crm/accounts/*"
                } else {
                    "api://none/*"
                },
                extra,
            ),
        )
        .unwrap();
        running.reload();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The last reload added /crm/accounts and allowed it.
    let r = client
        .get(format!("{proxy}/crm/accounts/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An invalid config: refused, counted, nothing changes.
    let before = common::metrics_at(&running.admin.to_string()).await;
    std::fs::write(&path, "routes: [ { name: broken } ]\n").unwrap();
    running.reload();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = client
        .get(format!("{proxy}/crm/accounts/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the previous config keeps serving");
    let after = common::metrics_at(&running.admin.to_string()).await;
    let errors = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("actgate_snapshot_reloads_total{result=\"error\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        errors(&after) > errors(&before),
        "the refused reload is counted"
    );
    // A config that changes what only a restart can change is refused too.
    let mut moved = reload_config(dir.path(), &up, "api://crm/accounts/*", true);
    moved = moved.replace("dataDir: ", "dataDir: /elsewhere");
    std::fs::write(&path, moved).unwrap();
    running.reload();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during reloads",
        ok + failed
    );
    running.shutdown().await;
}

#[tokio::test]
async fn sigterm_lets_a_long_request_finish_within_the_drain_deadline() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actgate.yaml");
    std::fs::write(
        &config,
        config_yaml(
            &dir.path().join("data"),
            &format!(
                "limits: {{ drainTimeout: 10s }}\nupstreams: {{ crm: {{ url: \"{}\", timeout: 5s }} }}\nroutes:\n  - {{ name: slow, method: GET, path: /slow, upstream: crm, action: read, resource: \"api://slow\" }}\npolicies:\n  - {{ name: r, actions: [read], resources: [\"api://slow\"], effect: allow }}\n",
                up.url()
            ),
        ),
    )
    .unwrap();
    let proc = common::process::Proc::spawn(&config, &[]);
    let client = reqwest::Client::new();
    let (_agent, token) = common::agent_and_token(&proc.api).await;
    let url = format!("{}/slow", proc.proxy);
    let pending = tokio::spawn(async move { client.get(url).bearer_auth(token).send().await });
    for _ in 0..400 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(up.requests().len(), 1, "the request is in flight");
    let stopped = tokio::task::spawn_blocking(move || proc.stop());
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "finished despite SIGTERM");
    let logs = stopped.await.unwrap();
    assert!(logs.iter().any(|l| l.contains("shutting down")));
}

#[tokio::test]
async fn sighup_reloads_the_config_of_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actgate.yaml");
    let write = |extra_route: bool| {
        let mut routes = String::from(
            "  - { name: a, method: GET, path: /a, upstream: u, action: read, resource: \"api://a\" }\n",
        );
        if extra_route {
            routes.push_str("  - { name: b, method: GET, path: /b, upstream: u, action: read, resource: \"api://b\" }\n");
        }
        std::fs::write(
            &config,
            config_yaml(
                &dir.path().join("data"),
                &format!("reload: {{ watch: false }}\nupstreams: {{ u: {{ url: \"http://127.0.0.1:1\" }} }}\nroutes:\n{routes}"),
            ),
        )
        .unwrap();
    };
    write(false);
    let mut proc = common::process::Proc::spawn(&config, &[]);
    let status = |proxy: String| async move {
        reqwest::get(format!("{proxy}/b"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(proc.proxy.clone()).await, 404);
    write(true);
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(proc.child.id().to_string())
        .status();
    proc.wait_for("config reloaded");
    // The route exists now: no token, so 401 instead of 404.
    assert_eq!(status(proc.proxy.clone()).await, 401);
    proc.stop();
}

#[tokio::test]
async fn an_upstream_that_requires_a_client_certificate_gets_ours() {
    let ca = Ca::new("upstream CA");
    let (cert, key) = ca.leaf(&["crm.internal"], &[], false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let who = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(actgate::tls::ClientIdentity::from_chain)
                    .map(|id| id.dns.join(","))
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |_req| {
                    let who = who.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from(who)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_path = write(dir.path(), "ca.crt", &ca.pem);
    let (client_cert, client_key) = ca.leaf(&["actgate.gateway.internal"], &[], false);
    let cc = write(dir.path(), "client.crt", &client_cert);
    let ck = write(dir.path(), "client.key", &client_key);
    let extra = format!(
        r#"
upstreams:
  with-cert: {{ url: "https://127.0.0.1:{port}", caFile: {ca}, serverName: crm.internal, clientCert: {cc}, clientKey: {ck} }}
  without: {{ url: "https://127.0.0.1:{port}", caFile: {ca}, serverName: crm.internal }}
routes:
  - {{ name: with-cert, method: GET, path: /with, upstream: with-cert, action: read, resource: "api://x/1" }}
  - {{ name: without, method: GET, path: /without, upstream: without, action: read, resource: "api://x/1" }}
policies:
  - {{ name: read, actions: [read], resources: ["api://x/*"], effect: allow }}
"#,
        ca = ca_path.display(),
        cc = cc.display(),
        ck = ck.display()
    );
    let gw = TestGateway::start_in(dir, &extra).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let r = gw
        .client
        .get(format!("{}/with", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "actgate.gateway.internal",
        "the upstream saw our client certificate"
    );
    let r = gw
        .client
        .get(format!("{}/without", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}
