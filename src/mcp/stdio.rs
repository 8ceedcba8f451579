//! Stdio MCP servers behind the gateway: actgate runs the server as a child process and serves
//! it over Streamable HTTP, behind the same enforcement as an HTTP server.
//!
//! - **Legacy sessions** (the initialize handshake): each session gets its own child process,
//!   started by `initialize` and stopped by `DELETE` (or when the session is idle past
//!   `sessionIdleTimeout`), so one agent's session never shares a server process with
//!   another's. actgate mints the `Mcp-Session-Id`.
//! - **Stateless requests** (2026-07-28): one shared child per endpoint, started on first use
//!   and restarted with backoff (1 s doubling to 30 s) when it dies; request ids are mapped to
//!   ids of actgate's own so clients cannot collide.
//!
//! Messages are newline-delimited JSON on stdin/stdout; each line read is bounded. A POST's
//! answer is JSON when the server's response comes first, or an event stream when the server
//! sends requests or notifications before it (sampling, elicitation, progress); the client's
//! answers to server requests are written back to the same child. The child's stderr goes to
//! actgate's log, line by line. The environment is cleared except `PATH`, `HOME`, `LANG` and
//! the upstream's `env`: actgate's own variables (its API key) never reach the child. Children
//! are killed when actgate stops; if actgate is killed outright, their stdin closes and MCP
//! servers exit on end of input.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::runtime::Handle;
use tokio::sync::{Mutex, mpsc};

use super::endpoint::McpEndpoint;
use crate::config::StdioCommand;
use crate::proxy::error::ProxyError;
use crate::proxy::{BoxError, ProxyBody};

/// Longest line read from a child (one JSON-RPC message).
const MAX_LINE: usize = 8 << 20;
/// Messages waiting for a stream that reads them slowly.
const STREAM_QUEUE: usize = 256;

/// A running child process and the routing of what it says.
struct Child {
    stdin: Mutex<tokio::process::ChildStdin>,
    /// Requests waiting for their answer: actgate's id → where the messages go.
    pending: std::sync::Mutex<HashMap<String, mpsc::Sender<Value>>>,
    /// The session's event stream (GET), when one is open.
    stream: std::sync::Mutex<Option<mpsc::Sender<Value>>>,
    /// The most recent request still waiting: where server requests and notifications go.
    /// Only a session's child (one agent) has one; a shared child's server-initiated messages
    /// cannot be attributed to an agent, so they are dropped.
    current: std::sync::Mutex<Option<String>>,
    /// Shared by every agent's stateless requests.
    shared: bool,
    alive: std::sync::atomic::AtomicBool,
    last_used: std::sync::Mutex<Instant>,
    process: Mutex<tokio::process::Child>,
    next_id: AtomicU64,
}

impl Child {
    /// Starts the server on `runtime`: its pipes and the tasks reading them belong to the
    /// gateway's main runtime, which outlives the proxy workers (a child started by a request
    /// on one worker serves requests on every worker, and is stopped after they are gone).
    fn spawn(
        runtime: &Handle,
        ep: &McpEndpoint,
        command: &StdioCommand,
        shared: bool,
    ) -> Result<Arc<Child>, String> {
        let _on = runtime.enter();
        let mut cmd = tokio::process::Command::new(&command.argv[0]);
        cmd.args(&command.argv[1..])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        cmd.envs(&command.env);
        let mut process = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.argv[0]))?;
        let stdin = process.stdin.take().ok_or("no stdin")?;
        let stdout = process.stdout.take().ok_or("no stdout")?;
        let stderr = process.stderr.take().ok_or("no stderr")?;
        let child = Arc::new(Child {
            stdin: Mutex::new(stdin),
            pending: std::sync::Mutex::new(HashMap::new()),
            stream: std::sync::Mutex::new(None),
            current: std::sync::Mutex::new(None),
            shared,
            alive: std::sync::atomic::AtomicBool::new(true),
            last_used: std::sync::Mutex::new(Instant::now()),
            process: Mutex::new(process),
            next_id: AtomicU64::new(1),
        });
        let name = ep.name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line: String = line.chars().take(2000).collect();
                tracing::info!(endpoint = %name, stderr = %line, "stdio MCP server");
            }
        });
        let reader = Arc::clone(&child);
        let name = ep.name.clone();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout);
            loop {
                match read_line(&mut out).await {
                    Ok(Some(line)) => match serde_json::from_slice::<Value>(&line) {
                        Ok(v) => reader.route(v).await,
                        Err(_) => {
                            tracing::warn!(endpoint = %name, "stdio MCP server wrote a line that is not JSON; ignored")
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(endpoint = %name, error = %e, "stdio MCP server output unreadable; stopping it");
                        break;
                    }
                }
            }
            reader.alive.store(false, Ordering::SeqCst);
            // Every waiting request learns the server is gone (its channel closes).
            if let Ok(mut p) = reader.pending.lock() {
                p.clear();
            }
            if let Ok(mut s) = reader.stream.lock() {
                *s = None;
            }
            let _ = reader.process.lock().await.kill().await;
            tracing::warn!(endpoint = %name, "stdio MCP server exited");
        });
        Ok(child)
    }

    /// Sends what the child said where it belongs.
    async fn route(&self, msg: Value) {
        let is_response = msg.get("method").is_none();
        let target = if is_response {
            let id = msg.get("id").and_then(Value::as_str).map(str::to_string);
            id.and_then(|id| self.pending.lock().ok().and_then(|p| p.get(&id).cloned()))
        } else if self.shared {
            None
        } else {
            let current = self.current.lock().ok().and_then(|c| c.clone());
            let to_request =
                current.and_then(|id| self.pending.lock().ok().and_then(|p| p.get(&id).cloned()));
            to_request.or_else(|| self.stream.lock().ok().and_then(|s| s.clone()))
        };
        match target {
            Some(tx) => {
                if tx.send(msg).await.is_err() {
                    tracing::debug!("an MCP client stopped reading before the server's message");
                }
            }
            None => tracing::debug!("a message of a stdio MCP server had nowhere to go; dropped"),
        }
    }

    async fn write(&self, msg: &Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(&line).await.map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    async fn stop(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.process.lock().await.kill().await;
    }

    /// Sends a request and answers it: JSON when the response comes first, else an event
    /// stream carrying what the server says before its response.
    async fn request(
        self: &Arc<Self>,
        mut msg: Value,
        timeout: Duration,
        extra_headers: &[(&'static str, String)],
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.touch();
        let client_id = msg.get("id").cloned().unwrap_or(Value::Null);
        let ours = format!("actgate-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        msg["id"] = Value::String(ours.clone());
        let (tx, mut rx) = mpsc::channel(STREAM_QUEUE);
        if let Ok(mut p) = self.pending.lock() {
            p.insert(ours.clone(), tx);
        }
        if let Ok(mut c) = self.current.lock() {
            *c = Some(ours.clone());
        }
        let cleanup = Cleanup {
            child: Arc::clone(self),
            id: ours.clone(),
        };
        self.write(&msg)
            .await
            .map_err(|e| ProxyError::BadGateway(format!("writing to the stdio MCP server: {e}")))?;
        let first = tokio::time::timeout(timeout, rx.recv())
            .await
            .map_err(|_| ProxyError::GatewayTimeout)?
            .ok_or_else(|| ProxyError::BadGateway("the stdio MCP server exited".into()))?;
        let restore = move |mut v: Value| {
            if v.get("method").is_none() {
                v["id"] = client_id.clone();
            }
            v
        };
        let is_final = |v: &Value| v.get("method").is_none();
        if is_final(&first) {
            drop(cleanup);
            let mut resp = Response::new(
                Full::new(Bytes::from(restore(first).to_string()))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            for (k, v) in extra_headers {
                if let Ok(v) = HeaderValue::from_str(v) {
                    resp.headers_mut().insert(*k, v);
                }
            }
            return Ok(resp);
        }
        // An event stream: the server's requests and notifications, then its response.
        let (frames_tx, frames_rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(STREAM_QUEUE);
        tokio::spawn(async move {
            let _cleanup = cleanup;
            let mut next = Some(first);
            while let Some(v) = next.take() {
                let done = is_final(&v);
                let event = format!("event: message\r\ndata: {}\r\n\r\n", restore(v));
                if frames_tx
                    .send(Ok(Frame::data(Bytes::from(event))))
                    .await
                    .is_err()
                    || done
                {
                    return;
                }
                next = rx.recv().await;
            }
        });
        let body = StreamBody::new(ReceiverStream(frames_rx)).boxed();
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        for (k, v) in extra_headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(*k, v);
            }
        }
        Ok(resp)
    }
}

/// Removes a request's routing entry when its answer is done (or abandoned).
struct Cleanup {
    child: Arc<Child>,
    id: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut p) = self.child.pending.lock() {
            p.remove(&self.id);
        }
        if let Ok(mut c) = self.child.current.lock()
            && c.as_deref() == Some(&self.id)
        {
            *c = None;
        }
    }
}

struct ReceiverStream<T>(mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut limited = r.take(MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(std::io::Error::other(format!(
            "a line longer than {MAX_LINE} bytes"
        )));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// A shared child and its restart backoff.
#[derive(Default)]
struct Shared {
    child: Option<Arc<Child>>,
    failed_at: Option<Instant>,
    backoff: Duration,
}

/// Every stdio server of the gateway.
pub struct Pool {
    sessions: std::sync::Mutex<HashMap<String, Arc<Child>>>,
    shared: Mutex<HashMap<String, Shared>>,
    runtime: Handle,
}

fn handshake_version(headers: &HeaderMap) -> bool {
    match headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(v) => super::HANDSHAKE_VERSIONS.contains(&v),
    }
}

fn session_key(ep: &McpEndpoint, sid: &str) -> String {
    format!("{}\n{sid}", ep.name)
}

fn status_answer(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

impl Pool {
    /// A pool whose servers run on `runtime`.
    pub fn new(runtime: Handle) -> Pool {
        Pool {
            sessions: std::sync::Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
            runtime,
        }
    }

    /// Serves one HTTP request of endpoint `ep` from its stdio server: the message in `body`
    /// (already decided), or a GET (the session's event stream) or DELETE (end the session).
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        ep: &McpEndpoint,
        command: &StdioCommand,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        _agent: (Option<&str>, Option<&str>),
        timeout: Duration,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.sweep(ep).await;
        let sid = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let session = sid.as_deref().and_then(|s| {
            self.sessions
                .lock()
                .ok()
                .and_then(|m| m.get(&session_key(ep, s)).cloned())
        });
        if *method == Method::DELETE {
            return Ok(match (sid, session) {
                (Some(s), Some(child)) => {
                    if let Ok(mut m) = self.sessions.lock() {
                        m.remove(&session_key(ep, &s));
                    }
                    child.stop().await;
                    status_answer(StatusCode::OK)
                }
                _ => status_answer(StatusCode::NOT_FOUND),
            });
        }
        if *method == Method::GET {
            let Some(child) = session else {
                return Ok(status_answer(StatusCode::METHOD_NOT_ALLOWED));
            };
            let (tx, rx) = mpsc::channel::<Value>(STREAM_QUEUE);
            if let Ok(mut s) = child.stream.lock() {
                *s = Some(tx);
            }
            let (frames_tx, frames_rx) =
                mpsc::channel::<Result<Frame<Bytes>, BoxError>>(STREAM_QUEUE);
            tokio::spawn(async move {
                let mut rx = rx;
                while let Some(v) = rx.recv().await {
                    let event = format!("event: message\r\ndata: {v}\r\n\r\n");
                    if frames_tx
                        .send(Ok(Frame::data(Bytes::from(event))))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            let mut resp = Response::new(StreamBody::new(ReceiverStream(frames_rx)).boxed());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            return Ok(resp);
        }
        let msg: Value = serde_json::from_slice(&body)
            .map_err(|_| ProxyError::bad_request("the message is not JSON"))?;
        let is_request = msg.get("id").is_some() && msg.get("method").is_some();
        let is_initialize = msg.get("method").and_then(Value::as_str) == Some("initialize");
        if !handshake_version(headers) {
            // Stateless: the shared child.
            let child = self.shared(ep, command).await?;
            return if is_request {
                child.request(msg, timeout, &[]).await
            } else {
                child.write(&msg).await.map_err(ProxyError::BadGateway)?;
                Ok(status_answer(StatusCode::ACCEPTED))
            };
        }
        if is_initialize {
            let child =
                Child::spawn(&self.runtime, ep, command, false).map_err(ProxyError::BadGateway)?;
            let mut raw = [0u8; 16];
            crate::ids::fill(&mut raw);
            let sid = hex::encode(raw);
            let resp = child
                .request(msg, timeout, &[("mcp-session-id", sid.clone())])
                .await;
            match &resp {
                Ok(r) if r.status().is_success() => {
                    if let Ok(mut m) = self.sessions.lock() {
                        m.insert(session_key(ep, &sid), child);
                    }
                }
                _ => child.stop().await,
            }
            return resp;
        }
        let Some(child) = session else {
            return Ok(status_answer(if sid.is_some() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            }));
        };
        if !child.alive.load(Ordering::SeqCst) {
            return Ok(status_answer(StatusCode::NOT_FOUND));
        }
        if is_request {
            child.request(msg, timeout, &[]).await
        } else {
            // Notifications and the client's answers to the server's requests.
            child.touch();
            child.write(&msg).await.map_err(ProxyError::BadGateway)?;
            Ok(status_answer(StatusCode::ACCEPTED))
        }
    }

    /// The endpoint's shared child, started (or restarted, after its backoff) when needed.
    async fn shared(
        &self,
        ep: &McpEndpoint,
        command: &StdioCommand,
    ) -> Result<Arc<Child>, ProxyError> {
        let mut shared = self.shared.lock().await;
        let entry = shared.entry(ep.name.clone()).or_default();
        if let Some(c) = &entry.child
            && c.alive.load(Ordering::SeqCst)
        {
            return Ok(Arc::clone(c));
        }
        if entry.child.take().is_some() {
            // It died: the next start waits for the backoff.
            entry.failed_at = Some(Instant::now());
            entry.backoff =
                (entry.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        }
        if let Some(at) = entry.failed_at
            && at.elapsed() < entry.backoff
        {
            return Err(ProxyError::BadGateway(format!(
                "the stdio MCP server of {} is restarting (backoff {:?})",
                ep.name, entry.backoff
            )));
        }
        match Child::spawn(&self.runtime, ep, command, true) {
            Ok(c) => {
                entry.child = Some(Arc::clone(&c));
                Ok(c)
            }
            Err(e) => {
                entry.failed_at = Some(Instant::now());
                entry.backoff =
                    (entry.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
                Err(ProxyError::BadGateway(e))
            }
        }
    }

    /// Stops session children idle past the endpoint's session timeout.
    async fn sweep(&self, ep: &McpEndpoint) {
        let idle: Vec<Arc<Child>> = match self.sessions.lock() {
            Ok(mut m) => {
                let prefix = format!("{}\n", ep.name);
                let stale: Vec<String> = m
                    .iter()
                    .filter(|(k, c)| {
                        k.starts_with(&prefix)
                            && (c.idle_for() >= ep.session_idle_timeout
                                || !c.alive.load(Ordering::SeqCst))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                stale.iter().filter_map(|k| m.remove(k)).collect()
            }
            Err(_) => Vec::new(),
        };
        for c in idle {
            c.stop().await;
        }
    }

    /// Stops every child (at shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Child>> = match self.sessions.lock() {
            Ok(mut m) => m.drain().map(|(_, c)| c).collect(),
            Err(_) => Vec::new(),
        };
        for c in all {
            c.stop().await;
        }
        for (_, s) in self.shared.lock().await.drain() {
            if let Some(c) = s.child {
                c.stop().await;
            }
        }
    }

    /// Children running (sessions and shared).
    pub async fn running(&self) -> usize {
        let sessions = self.sessions.lock().map(|m| m.len()).unwrap_or(0);
        let shared = self
            .shared
            .lock()
            .await
            .values()
            .filter(|s| {
                s.child
                    .as_ref()
                    .is_some_and(|c| c.alive.load(Ordering::SeqCst))
            })
            .count();
        sessions + shared
    }
}
