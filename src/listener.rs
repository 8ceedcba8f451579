//! Serving a listener: accept with a connection limit, optional TLS handshake (with a
//! deadline), HTTP/1.1 or HTTP/2 through hyper-util's auto builder with every limit set, and a
//! graceful drain on stop. Shared by the proxy and the API.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{IntCounter, IntGauge};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::Limits;
use crate::tls::{ClientIdentity, ServerTls};

type BoxError = Box<dyn StdError + Send + Sync>;

/// How one listener serves.
pub struct Options {
    /// `proxy` or `api`, for logs.
    pub name: &'static str,
    /// Limits applied to every connection.
    pub limits: Limits,
    /// TLS, when configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Counts connections refused at `limits.maxConnections`.
    pub rejected: IntCounter,
    /// The listener's connection slots (`limits.maxConnections`), shared by the threads that
    /// serve it.
    pub slots: Arc<Semaphore>,
    /// Connections holding a slot (`actgate_connections_open{listener}`).
    pub open: IntGauge,
}

/// A connection's slot: released, and the open-connections gauge lowered, when dropped.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves `listener` until `stop` turns true, then drains for at most `limits.drainTimeout`.
/// `make` builds the service of one connection from the peer address and, with mutual TLS,
/// the client certificate's identity.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    opts: Options,
    make: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn(SocketAddr, Option<Arc<ClientIdentity>>) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = Arc::new(builder(&opts.limits));
    let graceful = GracefulShutdown::new();
    let slots = Arc::clone(&opts.slots);
    let make = Arc::new(make);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(listener = opts.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            opts.rejected.inc();
            drop(stream);
            continue;
        };
        opts.open.inc();
        let permit = Slot {
            _permit: permit,
            open: opts.open.clone(),
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let make = Arc::clone(&make);
        match &opts.tls {
            None => {
                let deadline = opts.limits.header_read_timeout;
                tokio::spawn(async move {
                    let io = TokioIo::new(FirstByteDeadline::new(stream, deadline));
                    serve_io(&builder, watcher, io, make(peer, None)).await;
                    drop(permit);
                });
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                let deadline = opts.limits.header_read_timeout;
                let name = opts.name;
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(deadline, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(listener = name, %peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(listener = name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(ClientIdentity::from_chain)
                        .map(Arc::new);
                    let io = TokioIo::new(FirstByteDeadline::new(stream, deadline));
                    serve_io(&builder, watcher, io, make(peer, identity)).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(opts.limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = opts.name, deadline = ?opts.limits.drain_timeout, "drain deadline passed; closing the remaining connections");
    }
}

async fn serve_io<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: TokioIo<I>,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = builder.serve_connection(io, service);
    let _ = watcher.watch(conn.into_owned()).await;
}

/// Closes a connection that sends nothing: the first read must bring bytes within the
/// deadline. (HTTP version detection waits for the first bytes before hyper's header-read
/// timer starts, so without this an idle connection would hold its slot for ever.) After the
/// first bytes, reads pass through; hyper's header-read timeout covers every later request
/// head, and so idle keep-alive connections too.
struct FirstByteDeadline<I> {
    inner: I,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstByteDeadline<I> {
    fn new(inner: I, limit: Duration) -> Self {
        FirstByteDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = match self.deadline.as_mut() {
                    Some(d) => d.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the header read timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
