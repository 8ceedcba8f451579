//! The stack's floor: a reverse proxy on hyper and tokio doing nothing but forwarding — no
//! token, route, decision, header rewrite, audit, metrics or logs — so `benches/stack-floor.sh`
//! can measure, in one run beside nginx and actgate, how much of actgate's CPU per request is
//! the HTTP stack itself and how much is actgate's own work.
//!
//!   bare-proxy LISTEN UPSTREAM legacy|owned [WORKERS]
//!
//! - `legacy`: hyper-util's pooled client, one per worker (actgate's architecture);
//! - `owned`: each downstream connection owns one upstream connection (hyper's
//!   `client::conn::http1`) and drives it from its own task — no pool, no connection task, no
//!   hand-off between tasks — the arrangement the performance issue measured as the faster one.
//!
//! Both run one current-thread runtime per worker accepting from one shared socket, as
//! actgate does. Built with `cargo build --release --example bare-proxy`; not shipped.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;
/// Response bodies (no `Sync` needed).
type RespBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bare-proxy LISTEN UPSTREAM legacy|owned [WORKERS]");
        std::process::exit(2);
    }
    let listen: SocketAddr = args[1].parse().expect("LISTEN: host:port");
    let upstream: SocketAddr = args[2].parse().expect("UPSTREAM: host:port");
    let owned = match args[3].as_str() {
        "legacy" => false,
        "owned" => true,
        other => panic!("mode {other}: legacy or owned"),
    };
    let workers: usize = args.get(4).map_or(1, |w| w.parse().expect("WORKERS"));
    let socket = std::net::TcpListener::bind(listen).expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let socket = socket.try_clone().expect("clone");
            std::thread::spawn(move || worker(socket, upstream, owned))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn worker(socket: std::net::TcpListener, upstream: SocketAddr, owned: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::from_std(socket).expect("listener");
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Client<HttpConnector, ProxyBody> =
            Client::builder(TokioExecutor::new()).build(http);
        let host = HeaderValue::from_str(&upstream.to_string()).expect("host");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let host = host.clone();
            tokio::task::spawn_local(async move {
                let io = TokioIo::new(stream);
                if owned {
                    let conn: Arc<Mutex<Option<Upstream>>> = Arc::new(Mutex::new(None));
                    let svc = service_fn(move |req| {
                        let conn = Arc::clone(&conn);
                        let host = host.clone();
                        async move { forward_owned(conn, upstream, host, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let svc = service_fn(move |req| {
                        let client = client.clone();
                        let host = host.clone();
                        async move { forward_legacy(&client, upstream, host, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
}

fn upstream_request(
    req: Request<Incoming>,
    upstream: SocketAddr,
    host: HeaderValue,
) -> Request<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(upstream.to_string())
        .path_and_query(path)
        .build()
        .expect("uri");
    parts.headers.insert(http::header::HOST, host);
    Request::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
}

fn bad_gateway() -> Response<RespBody> {
    Response::builder()
        .status(502)
        .body(
            http_body_util::Empty::new()
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        )
        .expect("response")
}

async fn forward_legacy(
    client: &Client<HttpConnector, ProxyBody>,
    upstream: SocketAddr,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    Ok(
        match client.request(upstream_request(req, upstream, host)).await {
            Ok(r) => r.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
            Err(_) => bad_gateway(),
        },
    )
}

/// A downstream connection's own upstream connection.
struct Upstream {
    sender: http1::SendRequest<ProxyBody>,
    connection: http1::Connection<TokioIo<TcpStream>, ProxyBody>,
}

impl Upstream {
    /// Drives the connection; `true` once it has ended.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.connection).poll(cx).is_ready()
    }
}

async fn forward_owned(
    slot: Arc<Mutex<Option<Upstream>>>,
    upstream: SocketAddr,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let taken = slot.lock().expect("slot").take();
    let mut up = match taken {
        Some(u) => u,
        None => {
            let Ok(stream) = TcpStream::connect(upstream).await else {
                return Ok(bad_gateway());
            };
            let _ = stream.set_nodelay(true);
            let Ok((sender, connection)) = http1::handshake(TokioIo::new(stream)).await else {
                return Ok(bad_gateway());
            };
            Upstream { sender, connection }
        }
    };
    let mut response = std::pin::pin!(
        up.sender
            .send_request(upstream_request(req, upstream, host))
    );
    let mut ended = false;
    let head = poll_fn(|cx| {
        if !ended {
            ended = up.poll_ended(cx);
        }
        response.as_mut().poll(cx)
    })
    .await;
    let Ok(head) = head else {
        return Ok(bad_gateway());
    };
    let up = (!ended).then_some(up);
    Ok(head.map(move |inner| Driven { inner, up, slot }.boxed_unsync()))
}

/// A response body that drives its connection while read, and gives it back to the
/// downstream connection at its end.
struct Driven {
    inner: Incoming,
    up: Option<Upstream>,
    slot: Arc<Mutex<Option<Upstream>>>,
}

impl Body for Driven {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(up) = this.up.as_mut()
            && up.poll_ended(cx)
        {
            this.up = None;
        }
        let frame = Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as BoxError);
        if let Poll::Ready(None) = frame
            && let Some(up) = this.up.take()
        {
            *this.slot.lock().expect("slot") = Some(up);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if self.inner.is_end_stream()
            && let Some(up) = self.up.take()
        {
            *self.slot.lock().expect("slot") = Some(up);
        }
    }
}
