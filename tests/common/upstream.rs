//! A recording upstream: a real HTTP/1.1 server on 127.0.0.1:0 that records every request it
//! received *completely* (head and whole body) and answers by path:
//! - `/slow…` waits 1 s, then answers;
//! - `/big…` streams `?mb=N` MiB (default 64) in 64 KiB chunks;
//! - anything else answers `200 {"ok": true, "path": …}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub addr: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut up = Upstream {
            addr: Some(listener.local_addr().unwrap()),
            ..Upstream::default()
        };
        let seen = Arc::clone(&up.seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&seen), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        up.seen = up.seen.clone();
        up
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// Every complete request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn handle(
    seen: Arc<Mutex<Vec<Recorded>>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    // Only a request whose body arrived whole is recorded.
    let Ok(body) = body.collect().await else {
        return Ok(Response::builder()
            .status(400)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap());
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.to_bytes(),
    });
    if target.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if target.starts_with("/big") {
        let mb: usize = target
            .split("mb=")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        let chunks = mb * 16;
        let stream = futures_stream(chunks);
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .body(StreamBody::new(stream).boxed())
            .unwrap());
    }
    let body = serde_json::json!({"ok": true, "path": target}).to_string();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-upstream-private")
        .header("x-upstream-private", "secret-hop")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap())
}

/// `n` chunks of 64 KiB, produced lazily.
fn futures_stream(
    n: usize,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync {
    struct Chunks {
        left: usize,
        chunk: Bytes,
    }
    impl futures_core::Stream for Chunks {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            self.left -= 1;
            std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
        }
    }
    Chunks {
        left: n,
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
    }
}
