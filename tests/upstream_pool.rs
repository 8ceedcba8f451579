//! The proxy's upstream connections, black-box: a hand-written HTTP/1.1 upstream that counts
//! the connections it accepts and answers by path. Connections are reused after a response
//! read to its end (sized, chunked, empty, HEAD), never after one cut short; a connection the
//! upstream closed while idle costs no request a 502; concurrent requests each get their own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestGateway;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections accepted, and connections the upstream saw closed by the proxy.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed_by_peer: AtomicUsize,
}

/// Answers requests on `stream` until the peer closes it (or a `/close-idle` answer closes
/// it 100 ms later, as a server's idle timeout would).
async fn serve(mut stream: TcpStream, counts: Arc<Counts>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        let answer: Vec<u8> = if path.ends_with("/chunked") {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec()
        } else if path.ends_with("/empty") {
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
        } else if path.ends_with("/big") {
            let mut a = b"HTTP/1.1 200 OK\r\ncontent-length: 8388608\r\n\r\n".to_vec();
            a.resize(a.len() + 8 * 1024 * 1024, b'x');
            a
        } else if method == "HEAD" {
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world".to_vec()
        };
        if stream.write_all(&answer).await.is_err() {
            counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if path.ends_with("/close-idle") {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    }
}

async fn upstream() -> (String, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Counts::default());
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, Arc::clone(&c)));
        }
    });
    (url, counts)
}

fn config(url: &str) -> String {
    format!(
        r#"
upstreams:
  up: {{ url: "{url}", timeout: 5s }}
routes:
  - {{ name: any, method: GET, path: "/u/{{what}}", upstream: up, action: read, resource: "api://u/{{what}}" }}
  - {{ name: head, method: HEAD, path: "/u/{{what}}", upstream: up, action: read, resource: "api://u/{{what}}" }}
policies:
  - {{ name: all, actions: [read], resources: ["api://u/*"], effect: allow }}
"#
    )
}

#[tokio::test]
async fn connections_are_reused_after_a_whole_response_and_closed_after_a_cut_one() {
    let (url, counts) = upstream().await;
    let gw = TestGateway::start(&config(&url)).await;
    let agent = gw.agent().await;
    let (token, _) = gw.token(&agent).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", gw.proxy))
            .bearer_auth(&token)
            .send()
    };

    // Sized, chunked, empty and HEAD answers, one after another: one upstream connection.
    for path in [
        "/u/plain",
        "/u/chunked",
        "/u/empty",
        "/u/plain",
        "/u/chunked",
    ] {
        let r = get(path).await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status}");
        assert_eq!(
            body,
            if path.ends_with("empty") {
                ""
            } else {
                "hello world"
            }
        );
    }
    let r = client
        .head(format!("{}/u/plain", gw.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        1,
        "every answer was read to its end: one connection carried them all"
    );

    // A body the client stops reading: that connection is closed, never reused with the
    // rest of the body still on it; the next request gets a new connection and a clean answer.
    let r = get("/u/big").await.unwrap();
    let mut r = r;
    let _first = r.chunk().await.unwrap();
    drop(r);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counts.closed_by_peer.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cut connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = counts.accepted.load(Ordering::SeqCst);
    assert_eq!(
        get("/u/plain").await.unwrap().text().await.unwrap(),
        "hello world"
    );
    assert_eq!(counts.accepted.load(Ordering::SeqCst), before + 1);

    // The upstream closes a connection while it is idle (its idle timeout): the next request
    // goes out on a new connection, not a 502.
    for _ in 0..5 {
        let r = get("/u/close-idle").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "hello world");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = get("/u/plain").await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "a stale idle connection was used"
        );
    }

    // Concurrent requests each get a connection; afterwards they are reused, not multiplied.
    let concurrent = || {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let url = format!("{}/u/plain", gw.proxy);
                let token = token.clone();
                tokio::spawn(async move {
                    let r = reqwest::Client::new()
                        .get(url)
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap();
                    (r.status(), r.text().await.unwrap())
                })
            })
            .collect();
        async move {
            for h in handles {
                assert_eq!(
                    h.await.unwrap(),
                    (StatusCode::OK, "hello world".to_string())
                );
            }
        }
    };
    concurrent().await;
    let after_first = counts.accepted.load(Ordering::SeqCst);
    concurrent().await;
    concurrent().await;
    let grown = counts.accepted.load(Ordering::SeqCst) - after_first;
    assert!(
        grown <= 16,
        "connections are reused across bursts: {grown} new for 32 more requests"
    );
}
