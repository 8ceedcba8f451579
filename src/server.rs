//! Running actgate: bind the listeners, serve until told to stop, drain, shut down.
//!
//! [`start`] takes a validated config, opens the gateway, binds every listener (port 0 is
//! fine: the bound addresses are reported back), and returns a [`Running`] handle; tests use
//! it directly, `actgate serve` wraps it with signal handling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::gateway::{Background, Gateway, StartError};

/// A running gateway.
pub struct Running {
    /// Bound address of the proxy.
    pub proxy: SocketAddr,
    /// Bound address of the REST API.
    pub api: SocketAddr,
    /// Bound address of the admin listener.
    pub admin: SocketAddr,
    /// The shared state.
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    servers: JoinSet<()>,
    background: Background,
    drain: Duration,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::DataDir(format!("cannot listen on {addr} ({what}): {e}")))
}

/// Starts every listener.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let proxy_listener = bind(config.listen.proxy, "listen.proxy").await?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let admin_listener = bind(config.listen.admin, "listen.admin").await?;
    let drain = config.limits.drain_timeout;
    let (gateway, background) = Gateway::open(config).await?;
    let api = api_listener
        .local_addr()
        .map_err(|e| StartError::DataDir(e.to_string()))?;
    let admin = admin_listener
        .local_addr()
        .map_err(|e| StartError::DataDir(e.to_string()))?;
    let proxy = proxy_listener
        .local_addr()
        .map_err(|e| StartError::DataDir(e.to_string()))?;
    let (stop, _) = watch::channel(false);
    let mut servers = JoinSet::new();
    for (listener, router, name) in [
        (
            api_listener,
            crate::api::router(Arc::clone(&gateway)),
            "api",
        ),
        (
            admin_listener,
            crate::admin::router(Arc::clone(&gateway)),
            "admin",
        ),
    ] {
        let mut rx = stop.subscribe();
        servers.spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(listener = name, error = %e, "listener failed");
            }
        });
    }
    servers.spawn(watch_keys(Arc::clone(&gateway), stop.subscribe()));
    servers.spawn(
        crate::proxy::Proxy::new(Arc::clone(&gateway)).serve(proxy_listener, stop.subscribe()),
    );
    tracing::info!(%proxy, %api, %admin, "actgate listening");
    Ok(Running {
        proxy,
        api,
        admin,
        gateway,
        stop,
        servers,
        background,
        drain,
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within the drain deadline, then
    /// flushes the audit log.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.drain, async {
            while self.servers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(deadline = ?self.drain, "drain deadline passed; closing remaining connections");
            self.servers.abort_all();
        }
        let Running {
            gateway,
            background,
            ..
        } = self;
        drop(gateway);
        // The writer ends when the last sink is gone and the queue is drained.
        let writer = tokio::task::spawn_blocking(move || background.audit_writer.join());
        if tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .is_err()
        {
            tracing::error!("audit writer did not finish within 10s");
        }
    }
}

/// How often the key directory is checked for a rotation.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Picks up `actgate keys rotate` run while the gateway runs: when `keys/active` names another
/// key, the key set is reloaded (old keys keep verifying). A failed reload keeps the current
/// keys and is logged.
async fn watch_keys(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let dir = gateway.config.data_dir.join("keys");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEY_CHECK_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let active = tokio::fs::read_to_string(dir.join("active")).await;
        let current = gateway
            .tokens
            .keys()
            .signing
            .as_ref()
            .map(|k| k.kid.clone());
        match active {
            Ok(kid) if Some(kid.trim()) != current.as_deref() => {
                match crate::token::KeySet::load(&dir) {
                    Ok(keys) => {
                        tracing::info!(kid = %kid.trim(), "signing key rotated; older keys still verify");
                        gateway.tokens.set_keys(keys);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "key rotation found but the key set does not load; keeping the current keys")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read the active key id; keeping the current keys")
            }
        }
    }
}
