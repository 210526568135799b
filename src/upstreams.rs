//! Upstream pools: Pingora's [`LoadBalancer`] with round robin over servers that share
//! session state through the store, so no request needs to stick to one of them.
//!
//! - **Names are followed.** `servers` may name hosts; every name is resolved again every
//!   `health_check_interval`, to all its addresses ([`Dns`], a Pingora `ServiceDiscovery`),
//!   so containers whose addresses change are followed without a restart.
//! - **Health without blackouts.** TCP health checks take a failing server out of the
//!   rotation only while a healthy one remains: when every server of a pool is marked down
//!   (right after start, before any check passed, say) the gate still tries them all, as
//!   Envoy's panic threshold and nginx do, so a backend that comes up after the gate is
//!   served at once.
//! - **Timeouts** for connecting, reading, writing and idle pooled connections, per pool.
//!
//! [`Upkeep`] runs the resolution and the checks for whatever pools the gate currently has,
//! so that a reloaded config's pools are tended like the first ones.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::LoadBalancer;
use pingora::lb::{health_check::TcpHealthCheck, selection::RoundRobin, Backend, Backends};
use pingora::prelude::HttpPeer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

/// A server as the config names it: a host name or address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One `[[upstream]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub name: String,
    pub servers: Vec<ServerName>,
    pub tls: bool,
    pub sni: String,
    /// How often servers are checked (`None`: never) and names resolved again.
    pub health_check_interval: Option<Duration>,
    pub refresh_interval: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Resolves every server name to all its addresses, each time it is asked.
struct Dns {
    servers: Vec<ServerName>,
}

#[async_trait]
impl ServiceDiscovery for Dns {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut found = BTreeSet::new();
        for s in &self.servers {
            match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
                Ok(addrs) => {
                    for a in addrs {
                        found.insert(Backend::new(&a.to_string())?);
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %s, error = %e, "upstream server name did not resolve")
                }
            }
        }
        if found.is_empty() {
            // Keep the servers known so far rather than none.
            return pingora::Error::e_explain(
                pingora::ErrorType::ConnectNoRoute,
                "no upstream server name resolved",
            );
        }
        Ok((found, HashMap::new()))
    }
}

pub struct Pool {
    pub name: String,
    lb: LoadBalancer<RoundRobin>,
    settings: UpstreamSettings,
    /// When the servers are next resolved and checked.
    next: Mutex<Instant>,
}

impl Pool {
    /// A pool with no servers yet: [`refresh`](Self::refresh) it before use.
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(Dns {
            servers: settings.servers.clone(),
        })));
        if settings.health_check_interval.is_some() {
            lb.set_health_check(TcpHealthCheck::new());
        }
        Self {
            name: settings.name.clone(),
            lb,
            settings: settings.clone(),
            next: Mutex::new(Instant::now()),
        }
    }

    /// A server to send a request to, avoiding the ones in `tried` (a retry): a healthy one;
    /// when none is healthy, any (panic mode); when all were tried, any again.
    pub fn peer(&self, tried: &[SocketAddr]) -> Option<HttpPeer> {
        let fresh = |b: &Backend| b.addr.as_inet().is_none_or(|a| !tried.contains(a));
        // Round robin ignores the key; the bound covers every server of a pool.
        let backend = self
            .lb
            .select_with(b"", 256, |b, healthy| healthy && fresh(b))
            .or_else(|| self.lb.select_with(b"", 256, |b, _| fresh(b)))
            .or_else(|| self.lb.select_with(b"", 256, |_, _| true))?;
        let mut peer = HttpPeer::new(backend, self.settings.tls, self.settings.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.settings.connect_timeout);
        o.read_timeout = Some(self.settings.read_timeout);
        o.write_timeout = Some(self.settings.write_timeout);
        o.idle_timeout = Some(self.settings.idle_timeout);
        Some(peer)
    }

    /// Every resolved server and whether it is in rotation (healthy, or not checked), for the
    /// metrics.
    pub fn health(&self) -> Vec<(String, bool)> {
        let backends = self.lb.backends();
        backends
            .get_backend()
            .iter()
            .map(|b| (b.addr.to_string(), backends.ready(b)))
            .collect()
    }

    /// Resolves the server names again and runs the health checks.
    pub async fn refresh(&self) {
        if let Err(e) = self.lb.update().await {
            tracing::debug!(upstream = self.name, error = %e, "upstream servers not re-resolved; keeping the last ones");
        }
        if self.settings.health_check_interval.is_some() {
            self.lb.backends().run_health_check(true).await;
        }
    }

    /// Whether a refresh is due, and if so, when the next one is.
    fn due(&self, now: Instant) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if *next > now {
            return false;
        }
        let every = self
            .settings
            .health_check_interval
            .unwrap_or(self.settings.refresh_interval);
        *next = now + every;
        true
    }
}

/// Builds the pools of `settings`, indexed like them, with their servers resolved and
/// checked once.
pub async fn build(settings: &[UpstreamSettings]) -> Vec<Arc<Pool>> {
    let pools: Vec<Arc<Pool>> = settings.iter().map(|u| Arc::new(Pool::new(u))).collect();
    for p in &pools {
        p.due(Instant::now());
        p.refresh().await;
    }
    pools
}

/// How often [`Upkeep`] looks for pools that are due.
const UPKEEP_TICK: Duration = Duration::from_millis(100);

/// Resolves and checks the current pools, each at its own interval, for as long as the gate
/// runs: a Pingora background service.
pub struct Upkeep {
    pub pools: Box<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>,
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(UPKEEP_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            for pool in (self.pools)() {
                if pool.due(now) {
                    pool.refresh().await;
                }
            }
        }
    }
}
