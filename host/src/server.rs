//! Start-up and shutdown: open the database, build the app, serve until
//! Ctrl-C/SIGTERM with graceful draining of in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::db::Db;
use crate::store::Store;
use crate::telemetry::Metrics;

/// A server bound to a port and running in the background (used by tests and
/// by `rapport serve`).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    delivery: crate::delivery::DeliveryHandle,
}

impl RunningServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// This node's id (outbox and rescore-queue leases, delivery log).
    pub fn node(&self) -> &str {
        self.delivery.node()
    }

    /// Stops accepting, drains in-flight requests and deliveries (claimed
    /// messages not yet started are handed back), and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.delivery.join().await;
        self.task.await.context("server task")?.context("server")?;
        Ok(())
    }
}

/// Builds the application state: database (migrated), store, metrics.
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let db = Db::open(&config.database.url)
        .await
        .with_context(|| format!("opening database {}", redact(&config.database.url)))?;
    let manifest = crate::manifest::ManifestHandle::open(config.plugins.manifest.as_deref())
        .context("loading the plugin manifest")?;
    let manifest = Arc::new(manifest);
    let store = Store::new(db);
    let runtime_config = runtime_config(config);
    // The recorder first: what is recorded before it exists is lost.
    let metrics = Arc::new(Metrics::global());
    let plugins = Arc::new(
        crate::plugins::PluginService::new(runtime_config, manifest.clone(), store.clone()).with_secrets(
            crate::manifest::config_schema::SecretSource {
                file: config.plugins.secrets_file.clone(),
            },
        ),
    );
    Ok(AppState {
        store,
        metrics,
        manifest,
        plugins,
    })
}

/// The plugin runtime's settings from the `[plugins]` section, shared by the
/// server and `rapport manifest check` so both judge a manifest alike.
pub fn runtime_config(config: &Config) -> crate::runtime::RuntimeConfig {
    let defaults = crate::runtime::RuntimeConfig::default();
    let plugins = &config.plugins;
    let shares = defaults.admission();
    crate::runtime::RuntimeConfig {
        cache_dir: plugins.cache_dir.clone(),
        max_memory_mb: plugins.max_memory_mb.unwrap_or(defaults.max_memory_mb),
        admission: Some(crate::runtime::AdmissionConfig {
            max_concurrent_calls: plugins.max_concurrent_calls.unwrap_or(shares.max_concurrent_calls),
            max_concurrent_calls_per_tenant: plugins
                .max_concurrent_calls_per_tenant
                .unwrap_or(shares.max_concurrent_calls_per_tenant),
            max_concurrent_calls_per_plugin: plugins
                .max_concurrent_calls_per_plugin
                .unwrap_or(shares.max_concurrent_calls_per_plugin),
        }),
        guest_run_slots: plugins.guest_run_slots.or(defaults.guest_run_slots),
        ..defaults
    }
}

/// Binds `config.server.listen` and serves in a background task.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    let state = build_state(config).await?;
    start_with_state(config, state).await
}

pub async fn start_with_state(config: &Config, state: AppState) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    // Compile every plugin now, in the background: the server serves at
    // once, `/readyz` says 503 until they are loaded or marked unavailable,
    // and a call that comes earlier waits for its plugin's compilation.
    state.plugins.load_all(false);
    let app = api::app(state.clone());
    let (shutdown, mut rx) = tokio::sync::watch::channel(false);
    // Outbox workers (see delivery.rs); `[delivery] enabled = false` leaves
    // delivery to other nodes. Its node id exists either way.
    let delivery = crate::delivery::spawn(
        &config.delivery,
        state.store.clone(),
        state.plugins.clone(),
        state.manifest.clone(),
        rx.clone(),
    );
    // Rescores customers queued by ingest (see plugins/scoring.rs); stops
    // with the server. `rescore_interval_ms = 0` leaves it to other nodes.
    // Its queue leases carry the delivery node id, so one id names this node
    // in both queues.
    let interval = config.plugins.rescore_interval_ms.map_or(
        crate::plugins::scoring::RESCORE_INTERVAL,
        std::time::Duration::from_millis,
    );
    if !interval.is_zero() {
        state
            .plugins
            .clone()
            .spawn_rescore_worker(delivery.node().to_string(), interval, rx.clone());
    }
    // Campaigns a stopped node left half-sent (see api/campaigns.rs).
    tokio::spawn(api::campaigns::resume_unfinished(state.store.clone()));
    // Returns what bursts freed to the OS (see memory.rs).
    crate::memory::spawn_trimmer(rx.clone());
    // Escalates complaint cases left unanswered past their due time (see
    // store/complaints.rs); every node may run it: each case escalates once.
    spawn_complaint_escalation(state.store.clone(), rx.clone());
    spawn_optimizer(state.store.db().clone(), rx.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        state,
        shutdown,
        task,
        delivery,
    })
}

/// How often the escalation check looks for overdue complaint cases.
const ESCALATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

fn spawn_complaint_escalation(store: crate::store::Store, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(ESCALATION_INTERVAL) => {}
            }
            match store.escalate_overdue_complaints().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(escalated = n, "overdue complaint cases escalated"),
                Err(e) => tracing::warn!(error = %e, "complaint escalation check failed"),
            }
        }
    });
}

/// Refreshes the planner's statistics at start and every
/// [`crate::db::OPTIMIZE_INTERVAL`] until shutdown. The hot queries are
/// written so the intended index is the only sensible plan, but a planner
/// working from statistics of an empty tenant (or none) can still pick a
/// scan: with `ANALYZE` left to chance a rewarded ingest slowed 200x as the
/// tenant grew (issue #18). A failure is logged and retried next time.
fn spawn_optimizer(db: crate::db::Db, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::db::OPTIMIZE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let started = std::time::Instant::now();
            // Raced against shutdown too: a long ANALYZE must not hold up a
            // stop (dropping it is safe, it runs outside any transaction).
            tokio::select! {
                result = db.optimize() => match result {
                    Ok(()) => tracing::debug!(elapsed = ?started.elapsed(), "planner statistics refreshed"),
                    Err(error) => tracing::warn!(%error, "refreshing planner statistics failed"),
                },
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    });
}

/// Serves until SIGINT/SIGTERM.
pub async fn serve(config: &Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    tracing::info!(url = %server.url(), "rapport listening");
    let reloader = tokio::spawn(reload_manifest_on_sighup(
        server.state.manifest.clone(),
        server.state.plugins.clone(),
    ));
    shutdown_signal().await;
    reloader.abort();
    tracing::info!("shutting down: draining in-flight requests");
    server.stop().await
}

/// `kill -HUP` re-reads the plugin manifest and loads its plugins; a broken
/// one is logged and the previous one stays in force (same as
/// `POST /v1/admin/manifest/reload`).
async fn reload_manifest_on_sighup(
    manifest: Arc<crate::manifest::ManifestHandle>,
    plugins: Arc<crate::plugins::PluginService>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let handle = manifest.clone();
            match tokio::task::spawn_blocking(move || handle.reload()).await {
                Ok(Ok(m)) => {
                    tracing::info!(plugins = m.plugins.len(), "SIGHUP: plugin manifest reloaded");
                    plugins.load_all(true);
                }
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "SIGHUP: manifest reload failed; keeping the previous one")
                }
                Err(err) => tracing::error!(error = %err, "SIGHUP: manifest reload task failed"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (manifest, plugins);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Hides a password in a database URL before it goes into a log line.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
