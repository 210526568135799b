//! Building a [`Runtime`] from the config, and changing it while the gate runs.
//!
//! SIGHUP ([`Reloader`]) reads `proxy.toml` again. An invalid file is refused with the same
//! `FILE:LINE: key: message` that `check` prints, and the running config stays. A change that
//! only a new process can make (listeners, TLS, threads, request head limits, the drain, the
//! store, the cache, the admin API, forward-auth, the upgrade socket, the logs) is refused with
//! a log line that points to `sessiongate --upgrade`. Anything else is built into a new
//! `Runtime`, with its pools resolved and checked, and swapped in.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::assertion::Assertions;
use crate::config::Config;
use crate::identity::Identity;
use crate::metrics::SeriesCache;
use crate::routes::RouteTable;
use crate::runtime::Runtime;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::upstreams::{self, Pool};

impl Runtime {
    /// `pools` are `config.upstreams`' pools, built by [`upstreams::build`]; `store` is the
    /// gate's one store, which outlives every runtime.
    pub fn new(config: &Config, store: Arc<dyn Store>, pools: Vec<Arc<Pool>>) -> Self {
        let routes = RouteTable::new(config.routes.clone(), config.case_sensitive_paths);
        Self {
            series: SeriesCache::new(routes.len(), pools.len()),
            routes,
            pools,
            sessions: Sessions::new(config.session.clone(), store),
            identity: Identity::new(&config.identity),
            assertions: config.identity.assertion.clone().map(Assertions::new),
            path_policy: config.path_policy,
            trusted_proxies: config.trusted_proxies.clone(),
            cross_origin: config.cross_origin.clone(),
            retry_after_secs: config.store.retry_after().as_secs().max(1).to_string(),
        }
    }
}

/// The first setting that differs between two configs and that only a new process can
/// change, by its key.
pub fn restart_only_change(old: &Config, new: &Config) -> Option<&'static str> {
    let changes = [
        ("server.listen", old.listen != new.listen),
        ("server.tls", old.tls != new.tls),
        ("server.threads", old.threads != new.threads),
        ("server.grace_period", old.grace_period != new.grace_period),
        ("server.drain_delay", old.drain_delay != new.drain_delay),
        (
            "server.max_header_bytes",
            old.head.max_bytes != new.head.max_bytes,
        ),
        (
            "server.max_headers",
            old.head.max_headers != new.head.max_headers,
        ),
        (
            "server.header_timeout",
            old.head.timeout != new.head.timeout,
        ),
        (
            "server.idle_timeout",
            old.connections.idle_timeout != new.connections.idle_timeout,
        ),
        (
            "server.max_connections",
            old.connections.max_connections != new.connections.max_connections,
        ),
        (
            "server.h2_max_streams",
            old.connections.h2_max_streams != new.connections.h2_max_streams,
        ),
        (
            "server.upgrade_socket",
            old.upgrade_socket != new.upgrade_socket,
        ),
        ("session.store", old.store != new.store),
        ("session.prefix", old.session.prefix != new.session.prefix),
        (
            "session.index_prefix",
            old.session.index_prefix != new.session.index_prefix,
        ),
        ("cache", old.cache != new.cache),
        ("admin", old.admin != new.admin),
        ("forward_auth", old.forward_auth != new.forward_auth),
        ("log", old.log != new.log),
    ];
    changes
        .into_iter()
        .find_map(|(key, changed)| changed.then_some(key))
}

/// Reloads the config on SIGHUP: a Pingora background service.
pub struct Reloader {
    pub path: PathBuf,
    pub current: Arc<ArcSwap<Runtime>>,
    pub store: Arc<dyn Store>,
    /// The config the running runtime was built from.
    pub running: Mutex<Config>,
    /// Set by a SIGHUP from the moment the gate starts (see [`Reloader::catch_early`]), so
    /// that one sent before this service listens is neither fatal nor lost.
    pub pending: Arc<AtomicBool>,
}

impl Reloader {
    /// Catches SIGHUP from now on: by default it would end the process, and the service that
    /// reloads starts only once Pingora runs its services.
    pub fn catch_early() -> std::io::Result<Arc<AtomicBool>> {
        let pending = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, pending.clone())?;
        Ok(pending)
    }

    /// Reads the file again and swaps in what it says, or says why not.
    pub async fn reload(&self) -> Result<(), String> {
        let new = Config::load(&self.path).map_err(|e| e.to_string())?;
        let old = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(key) = restart_only_change(&old, &new) {
            return Err(format!(
                "{key} changed, and cannot change while the gate runs: start a new process \
                 with `sessiongate --upgrade` (server.upgrade_socket) to apply it"
            ));
        }
        let pools = upstreams::build(&new.upstreams).await;
        self.current
            .store(Arc::new(Runtime::new(&new, self.store.clone(), pools)));
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload needs a restart");
                return;
            }
        };
        tracing::info!("listening for SIGHUP to reload the config");
        loop {
            // A SIGHUP from before this service listened is served first.
            if !self.pending.swap(false, Ordering::SeqCst) {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = hangups.recv() => {}
                }
                self.pending.store(false, Ordering::SeqCst);
            }
            let path = self.path.display().to_string();
            match self.reload().await {
                Ok(()) => tracing::info!(config = path, "config reloaded"),
                Err(e) => tracing::error!(
                    config = path,
                    "config not reloaded, the running one stays: {e}"
                ),
            }
        }
    }
}
