//! Assembling and running the gate on Pingora's server: the proxy service with its
//! listeners, the pools' health checks, and a lifecycle with bounded grace periods.

use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignalWatch};

use crate::admin::AdminApi;
use crate::config::{Config, StoreSettings};
use crate::metrics::Metrics;
use crate::proxy::Gate;
use crate::sessions::Sessions;
use crate::store;
use crate::upstreams;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS listener {addr}: {source}")]
    Tls {
        addr: String,
        source: Box<pingora::Error>,
    },
}

/// A gate ready to run.
pub struct GateServer {
    server: Server,
}

impl GateServer {
    pub fn new(config: Config) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::default());
        // The proxy's store, with the local cache when configured.
        let store = store::cached(
            &config.store,
            &config.session.prefix,
            &config.session.index_prefix,
            config.cache.as_ref(),
            metrics.clone(),
        );
        let conf = ServerConf {
            threads: config.threads,
            // Pingora waits 300 s by default before it stops; operators and tests should not.
            grace_period_seconds: Some(config.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(config.grace_period.as_secs().max(1)),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        let (pools, health_checks) = upstreams::build(&config.upstreams);
        let listen = config.listen.clone();
        let tls = config.tls.clone();
        if let Some(admin) = &config.admin {
            // Its own store client (Redis), so that admin work never shares the proxy's
            // connection or runtime; the embedded store is shared, being this process's memory.
            let admin_store = match &config.store {
                StoreSettings::Memory => store.clone(),
                other => store::from_settings(
                    other,
                    &config.session.prefix,
                    &config.session.index_prefix,
                ),
            };
            let api = AdminApi::new(
                Sessions::new(config.session.clone(), admin_store),
                &admin.token,
                metrics.clone(),
            );
            let mut service =
                pingora::services::listening::Service::new("sessiongate admin".into(), api);
            service.add_tcp(&admin.listen);
            server.add_service(service);
        }
        server.add_service(pingora::services::background::background_service(
            "sessiongate store maintenance",
            store::Maintenance(store.clone()),
        ));
        let gate = Gate::new(config, pools, store, metrics);
        let mut proxy = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            gate,
            "sessiongate",
        );
        for addr in &listen {
            proxy.add_tcp(addr);
        }
        if let Some(tls) = tls {
            for addr in &tls.listen {
                proxy
                    .add_tls(addr, &tls.cert, &tls.key)
                    .map_err(|source| StartError::Tls {
                        addr: addr.clone(),
                        source,
                    })?;
            }
        }
        server.add_service(proxy);
        for hc in health_checks {
            server.add_service(hc);
        }
        Ok(Self { server })
    }

    /// Runs until SIGTERM (graceful), SIGINT (fast) or SIGQUIT (upgrade).
    pub fn run(self) {
        self.server.run(RunArgs::default());
    }

    /// Runs until `signal` fires: for embedding and tests.
    pub fn run_until(self, signal: Box<dyn ShutdownSignalWatch>) {
        self.server.run(RunArgs {
            shutdown_signal: signal,
        });
    }
}
