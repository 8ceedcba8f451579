//! Running actgate: bind the listeners, serve until told to stop, reload on change, drain,
//! shut down.
//!
//! [`start`] takes a validated config, opens the gateway, binds every listener (port 0 is
//! fine: the bound addresses are reported back), and returns a [`Running`] handle; tests use
//! it directly, `actgate serve` wraps it with signal handling (SIGHUP reloads, SIGTERM and
//! SIGINT drain and stop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::gateway::{Background, Gateway, StartError};
use crate::tls::ServerTls;

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
    plane: Arc<crate::dataplane::DataPlane>,
    stop: watch::Sender<bool>,
    reload_now: Arc<Notify>,
    servers: JoinSet<()>,
    background: Background,
    drain: Duration,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; another process holds the port (another actgate?): stop it or change the address"
        } else {
            ""
        };
        StartError::Listen(format!("cannot listen on {addr} ({what}): {e}{hint}"))
    })
}

fn tls_for(
    settings: &Option<crate::config::TlsSettings>,
) -> Result<Option<Arc<ServerTls>>, StartError> {
    settings
        .as_ref()
        .map(|s| ServerTls::new(s.clone()).map(Arc::new))
        .transpose()
        .map_err(StartError::Tls)
}

/// Starts every listener.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let proxy_listener = bind(config.listen.proxy, "listen.proxy").await?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let admin_listener = bind(config.listen.admin, "listen.admin").await?;
    let drain = config.limits.drain_timeout;
    let proxy_tls = tls_for(&config.tls.proxy)?;
    let api_tls = tls_for(&config.tls.api)?;
    let config_path = (config.origin != "embedded")
        .then(|| PathBuf::from(&config.origin))
        .filter(|p| p.is_file());
    let reload = config.reload.clone();
    let api_limits = config.limits.clone();
    let (gateway, background) = Gateway::open(config).await?;
    let addr = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| StartError::DataDir(e.to_string()))
    };
    let (proxy, api, admin) = (
        addr(&proxy_listener)?,
        addr(&api_listener)?,
        addr(&admin_listener)?,
    );
    let (stop, _) = watch::channel(false);
    let reload_now = Arc::new(Notify::new());
    let mut servers = JoinSet::new();

    let plane = crate::dataplane::DataPlane::new(Arc::clone(&gateway));
    let workers = plane
        .spawn_workers(
            proxy_listener
                .into_std()
                .map_err(|e| StartError::Listen(format!("listen.proxy: {e}")))?,
            gateway.config().listen.workers,
            proxy_tls.clone(),
            stop.subscribe(),
        )
        .map_err(|e| StartError::DataDir(format!("cannot start the proxy workers: {e}")))?;
    servers.spawn(workers);
    let router = crate::api::router(Arc::clone(&gateway));
    let opts = crate::listener::Options {
        name: "api",
        slots: Arc::new(tokio::sync::Semaphore::new(api_limits.max_connections)),
        limits: api_limits,
        tls: api_tls.clone(),
        rejected: gateway
            .metrics
            .connections_rejected
            .with_label_values(&["api"]),
        open: gateway.metrics.connections_open.with_label_values(&["api"]),
    };
    servers.spawn(crate::listener::serve(
        api_listener,
        opts,
        move |_, _| hyper_util::service::TowerToHyperService::new(router.clone()),
        stop.subscribe(),
    ));
    let admin_router = crate::admin::router(Arc::clone(&gateway));
    let mut rx = stop.subscribe();
    servers.spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(listener = "admin", error = %e, "listener failed");
        }
    });
    servers.spawn(watch_keys(Arc::clone(&gateway), stop.subscribe()));
    if let Some(pg) = gateway.shared.clone() {
        servers.spawn(crate::replicas::watch_store(
            Arc::clone(&gateway),
            pg.clone(),
            stop.subscribe(),
        ));
        servers.spawn(crate::replicas::ship_audit(
            Arc::clone(&gateway),
            pg,
            stop.subscribe(),
        ));
    }
    servers.spawn(flush_refusal_summaries(
        Arc::clone(&gateway),
        stop.subscribe(),
    ));
    let tls: Vec<(&'static str, Arc<ServerTls>)> = [("proxy", proxy_tls), ("api", api_tls)]
        .into_iter()
        .filter_map(|(n, t)| t.map(|t| (n, t)))
        .collect();
    servers.spawn(watch_files(
        Arc::clone(&gateway),
        config_path,
        tls,
        reload,
        Arc::clone(&reload_now),
        stop.subscribe(),
    ));
    tracing::info!(%proxy, %api, %admin, "actgate listening");
    Ok(Running {
        proxy,
        api,
        admin,
        gateway,
        plane,
        stop,
        reload_now,
        servers,
        background,
        drain,
    })
}

impl Running {
    /// Checks the config file and TLS files now (SIGHUP), instead of at the next interval.
    pub fn reload(&self) {
        self.reload_now.notify_one();
    }

    /// Stops accepting, lets in-flight requests finish within the drain deadline, then
    /// flushes the audit log.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.drain + Duration::from_secs(1), async {
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
            plane,
            ..
        } = self;
        plane.mcp().shutdown().await;
        drop(plane);
        // Refusals counted during the drain get their summary before the writer stops.
        gateway
            .audit
            .flush_summaries(&gateway.config().tenant)
            .await;
        let shared = gateway.shared.clone().map(|pg| (pg, gateway.config()));
        drop(gateway);
        // The writer ends when the last sink is gone and the queue is drained.
        let writer = tokio::task::spawn_blocking(move || background.audit_writer.join());
        if tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .is_err()
        {
            tracing::error!("audit writer did not finish within 10s");
        }
        // With a shared store: copy what the drain wrote, so a replica scaled down with its
        // volume loses nothing the store should hold.
        if let Some((pg, config)) = shared {
            match tokio::time::timeout(
                Duration::from_secs(10),
                crate::replicas::ship_remaining(&config, &pg),
            )
            .await
            {
                Ok(Ok(n)) => tracing::info!(records = n, "last audit records copied to the store"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the last audit records were not copied to the store (they are in the local log)")
                }
                Err(_) => tracing::error!(
                    "copying the last audit records to the store took over 10s; the rest are in the local log"
                ),
            }
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Live reload: every `reload.interval` (or at once on SIGHUP) the config file and the TLS
/// files are checked. A changed config is loaded and validated off the hot path, then
/// applied atomically; an invalid one is refused, logged and counted, and the old one keeps
/// serving. Changed certificates are loaded for new connections.
async fn watch_files(
    gateway: Arc<Gateway>,
    config_path: Option<PathBuf>,
    tls: Vec<(&'static str, Arc<ServerTls>)>,
    reload: crate::config::ReloadSettings,
    now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = config_path.as_deref().and_then(stamp);
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(reload.interval), if reload.watch => false,
            _ = now.notified() => true,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        for (name, t) in &tls {
            match t.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(listener = name, "TLS certificate reloaded");
                    gateway
                        .metrics
                        .tls_reloads
                        .with_label_values(&[name, "ok"])
                        .inc();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(listener = name, error = %e, "TLS files changed but do not load; keeping the current certificate");
                    gateway
                        .metrics
                        .tls_reloads
                        .with_label_values(&[name, "error"])
                        .inc();
                }
            }
        }
        let Some(path) = &config_path else { continue };
        let current = stamp(path);
        if !forced && current == seen {
            continue;
        }
        seen = current;
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load(&path)).await
        };
        match loaded {
            Ok(Ok(config)) => {
                let _ = gateway.reload(config).await;
            }
            Ok(Err(e)) => {
                gateway.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(config = %path.display(), error = %e, "config reload refused: invalid; the previous config keeps serving");
            }
            Err(e) => tracing::error!(error = %e, "config reload task failed"),
        }
    }
}

/// Every second (and once more at shutdown), writes the summary records of unauthenticated
/// refusals that were counted instead of recorded one by one.
async fn flush_refusal_summaries(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let tenant = gateway.config().tenant.clone();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => true,
        };
        gateway.audit.flush_summaries(&tenant).await;
        if stopping {
            return;
        }
    }
}

/// How often the key directory is checked for a rotation or a retirement.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Picks up `actgate keys rotate` and `actgate keys retire` run while the gateway runs: when
/// anything in the key directory changes (names, sizes, times), the key set is reloaded — a
/// new active key signs, a retired key verifies nothing from then on, and the token cache is
/// emptied so no token of a retired key is served from it. A key set that does not load keeps
/// the current one, logged.
async fn watch_keys(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let dir = gateway.config().keys_dir();
    let mut seen = crate::token::keys::fingerprint(&dir).ok();
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEY_CHECK_INTERVAL) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
        let now = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || crate::token::keys::fingerprint(&dir)).await
        };
        let now = match now {
            Ok(Ok(f)) => Some(f),
            Ok(Err(e)) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the key directory; keeping the current keys");
                continue;
            }
            Err(_) => continue,
        };
        if now == seen {
            continue;
        }
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || crate::token::KeySet::load(&dir)).await
        };
        match loaded {
            Ok(Ok(keys)) => {
                // Only a change that loaded counts as seen: a failed reload (a retirement
                // included) is tried again at the next check.
                seen = now;
                last_error = None;
                let before: Vec<String> = gateway.tokens.keys().kids().map(String::from).collect();
                let after: Vec<String> = keys.kids().map(String::from).collect();
                let retired: Vec<&String> = before.iter().filter(|k| !after.contains(k)).collect();
                let active = keys
                    .signing
                    .as_ref()
                    .map(|k| k.kid.clone())
                    .unwrap_or_default();
                gateway.tokens.set_keys(keys);
                tracing::info!(active = %active, retired = ?retired, trusted = after.len(), "signing keys reloaded");
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(&e) {
                    tracing::error!(error = %e, "the key directory changed but does not load; keeping the current keys and trying again every 2 s");
                    last_error = Some(e);
                }
            }
            Err(e) => tracing::error!(error = %e, "key reload task failed"),
        }
    }
}
