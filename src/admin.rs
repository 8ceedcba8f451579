//! The admin listener: `/metrics` (Prometheus text), `/healthz` (process up), `/readyz`
//! (config loaded, store answering, audit writer running). No authentication: bind it to
//! loopback or a pod-internal address.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::gateway::Gateway;

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    gw.metrics.sync_from(&gw);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gw.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let store = gw.store.ping().await;
    let audit = gw.audit.is_open();
    let snapshot = gw.snapshot().version > 0;
    if store.is_ok() && audit && snapshot {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let mut why = String::new();
        match (gw.health.not_ready(), store) {
            (Some(stale), _) => why.push_str(&format!("{stale}\n")),
            (None, Err(e)) => why.push_str(&format!("store: {e}\n")),
            (None, Ok(())) => {}
        }
        if !audit {
            why.push_str("audit writer stopped\n");
        }
        if !snapshot {
            why.push_str("no snapshot\n");
        }
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    }
}

/// The admin router.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gw)
}
