//! Upstream pools: pingora's [`LoadBalancer`] with round robin over servers that share session
//! state through the store, so no request needs to stick to one of them. Health checks run as
//! Pingora background services and take a dead server out of the rotation.

use std::sync::Arc;

use pingora::lb::{health_check::TcpHealthCheck, selection::RoundRobin, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::services::background::{background_service, GenBackgroundService};

use crate::config::UpstreamSettings;

pub struct Pool {
    pub name: String,
    lb: Arc<LoadBalancer<RoundRobin>>,
    tls: bool,
    sni: String,
}

impl Pool {
    /// The next healthy server, as a peer to connect to.
    pub fn peer(&self) -> Option<HttpPeer> {
        // Round robin ignores the key; the bound covers a pool whose servers are all down.
        let backend = self.lb.select(b"", 256)?;
        Some(HttpPeer::new(backend, self.tls, self.sni.clone()))
    }
}

/// The pools, indexed like the config's upstreams, and the health-check services that the
/// server must run for them.
pub fn build(
    settings: &[UpstreamSettings],
) -> (
    Vec<Pool>,
    Vec<GenBackgroundService<LoadBalancer<RoundRobin>>>,
) {
    let mut pools = Vec::new();
    let mut services = Vec::new();
    for u in settings {
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(u.servers.iter().copied())
            .expect("socket addresses need no lookup");
        let lb = match u.health_check_interval {
            Some(every) => {
                lb.set_health_check(TcpHealthCheck::new());
                lb.health_check_frequency = Some(every);
                let service = background_service(&format!("health check {}", u.name), lb);
                let task = service.task();
                services.push(service);
                task
            }
            None => Arc::new(lb),
        };
        pools.push(Pool {
            name: u.name.clone(),
            lb,
            tls: u.tls,
            sni: u.sni.clone(),
        });
    }
    (pools, services)
}
