//! Assembling and running the gate on Pingora's server: the proxy service with its
//! listeners (behind the request head limits of [`crate::head`]; HTTP/2 and HTTP/1.1 by ALPN
//! on TLS listeners), the pools' health checks, the admin API with its probes and metrics,
//! the access log, and a lifecycle with a drain and bounded grace periods.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::Opt;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignalWatch, UnixShutdownSignalWatch};
use pingora::services::background::background_service;

use crate::access_log::{AccessLog, Sink};
use crate::admin::AdminApi;
use crate::config::{Config, ConfigError};
use crate::decide::Decider;
use crate::forward_auth::ForwardAuth;
use crate::head;
use crate::metrics::Metrics;
use crate::probes::{DrainSignal, DrainWatch, Draining};
use crate::proxy::Gate;
use crate::reload::Reloader;
use crate::runtime::Runtime;
use crate::sessions::Sessions;
use crate::store;
use crate::store::{StoreError, StoreSettings};
use crate::upstreams::{self, Pool, Upkeep};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS listener {addr}: {source}")]
    Tls {
        addr: String,
        source: Box<pingora::Error>,
    },
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--upgrade needs server.upgrade_socket in the config: the socket the running gate hands its listeners over")]
    NoUpgradeSocket,
    #[error("resolving upstream servers: {0}")]
    Resolve(String),
    #[error("cannot catch SIGHUP for reloads: {0}")]
    Signal(std::io::Error),
}

/// Why the `sessions` CLI cannot work on a store from outside the gate.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("the embedded memory store lives inside the running gate; use its admin API ([admin] in the config)")]
    EmbeddedStore,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The session service on the configured store, for the `sessions` CLI: the admin API's work
/// without a running gate. Only a shared store (Redis, PostgreSQL) can be reached from outside.
pub fn offline_sessions(config: Config) -> Result<Sessions, OfflineError> {
    if matches!(config.store, StoreSettings::Memory(_)) {
        return Err(OfflineError::EmbeddedStore);
    }
    let store = store::from_settings(
        &config.store,
        &config.session.prefix,
        &config.session.index_prefix,
    )?;
    Ok(Sessions::new(config.session, store))
}

/// A gate ready to run.
pub struct GateServer {
    server: Server,
    draining: Arc<Draining>,
    drain_delay: std::time::Duration,
}

impl GateServer {
    /// A gate on this config, without live reload (for embedding and tests).
    pub fn new(config: Config) -> Result<Self, StartError> {
        Self::build(config, None, false, None)
    }

    /// The same, with the access log (`[log] access`) written to `sink` instead of stdout.
    pub fn with_access_log(config: Config, sink: Sink) -> Result<Self, StartError> {
        Self::build(config, None, false, Some(sink))
    }

    /// A gate on the config at `path`, which SIGHUP reloads. With `upgrade`, the listening
    /// sockets are taken from the running process over `server.upgrade_socket` (that process
    /// hands them over on SIGQUIT).
    pub fn from_file(path: &Path, upgrade: bool) -> Result<Self, StartError> {
        let config = Config::load(path)?;
        if upgrade && config.upgrade_socket.is_none() {
            return Err(StartError::NoUpgradeSocket);
        }
        Self::build(config, Some(path.to_owned()), upgrade, None)
    }

    fn build(
        config: Config,
        path: Option<PathBuf>,
        upgrade: bool,
        sink: Option<Sink>,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::default());
        // The proxy's store, with the local cache when configured.
        let store = store::cached(
            &config.store,
            &config.session.prefix,
            &config.session.index_prefix,
            config.cache.as_ref(),
            metrics.clone(),
        )?;
        let mut conf = ServerConf {
            threads: config.threads,
            // Pingora waits 300 s by default before it stops; operators and tests should not.
            grace_period_seconds: Some(config.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(config.grace_period.as_secs().max(1)),
            ..ServerConf::default()
        };
        if let Some(sock) = &config.upgrade_socket {
            conf.upgrade_sock = sock.clone();
        }
        let opt = Opt {
            upgrade,
            ..Opt::default()
        };
        let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
        server.bootstrap();

        // The pools' servers are resolved and checked once before the first request.
        let pools = resolve_now(&config)?;
        let current = Arc::new(ArcSwap::from_pointee(Runtime::new(
            &config,
            store.clone(),
            pools,
        )));
        server.add_service(background_service(
            "sessiongate upstreams",
            Upkeep {
                pools: Box::new({
                    let current = current.clone();
                    move || current.load().pools.clone()
                }),
            },
        ));
        if let Some(path) = path {
            server.add_service(background_service(
                "sessiongate reload",
                Reloader {
                    path,
                    current: current.clone(),
                    store: store.clone(),
                    running: Mutex::new(config.clone()),
                    pending: Reloader::catch_early().map_err(StartError::Signal)?,
                },
            ));
        }
        let draining = Arc::new(Draining::default());
        server.add_service(background_service(
            "sessiongate drain",
            DrainWatch(draining.clone()),
        ));
        if let Some(admin) = &config.admin {
            // Its own store client (Redis), so that admin work never shares the proxy's
            // connection or runtime; the embedded store is shared, being this process's memory.
            let admin_store = match &config.store {
                StoreSettings::Memory(_) => store.clone(),
                other => store::from_settings(
                    other,
                    &config.session.prefix,
                    &config.session.index_prefix,
                )?,
            };
            // The running config's session settings (a reload changes them), on that client.
            let api = AdminApi::new(
                Box::new({
                    let current = current.clone();
                    move || current.load().sessions.on_store(admin_store.clone())
                }),
                &admin.token,
                metrics.clone(),
                Box::new({
                    let current = current.clone();
                    move || current.load().pools.clone()
                }),
                draining.clone(),
                Box::new({
                    let current = current.clone();
                    move || current.load().assertions.as_ref().map(|a| a.jwks())
                }),
            );
            let mut service =
                pingora::services::listening::Service::new("sessiongate admin".into(), api);
            service.add_tcp(&admin.listen);
            server.add_service(service);
        }
        server.add_service(background_service(
            "sessiongate store maintenance",
            store::Maintenance(store.clone()),
        ));
        let access_log = Arc::new(AccessLog::start(
            config.log.access,
            sink,
            metrics.access_log_dropped.clone(),
        ));
        // One decision for both fronts: the same outage log and store metrics.
        let decider = Arc::new(Decider::new(metrics.clone()));
        if let Some(fa) = &config.forward_auth {
            let app = ForwardAuth::new(
                current.clone(),
                fa,
                decider.clone(),
                metrics.clone(),
                access_log.clone(),
            );
            // The same request head and connection limits as the proxy's listeners: callers
            // outside `trusted` are refused, but may still connect.
            let app = head::Limited::new(
                app,
                config.head.clone(),
                &config.connections,
                metrics.clone(),
                access_log.clone(),
            );
            let mut service =
                pingora::services::listening::Service::new("sessiongate forward-auth".into(), app);
            for addr in &fa.listen {
                service.add_listener(ListenerConfig::tcp(addr).l4_buffer(client_buffers()));
            }
            server.add_service(service);
        }
        if config.listen.is_empty() && config.tls.is_none() {
            // Forward-auth alone: no proxy listener.
            return Ok(Self {
                server,
                draining,
                drain_delay: config.drain_delay,
            });
        }
        let gate = Gate::new(current, decider, metrics.clone(), access_log.clone());
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, gate);
        // HTTP/2's own limits: idle connections, concurrent streams, the header list.
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2_idle_timeout = Some(config.connections.idle_timeout);
        proxy.server_options = Some(options);
        let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
        h2.max_concurrent_streams(config.connections.h2_max_streams)
            .max_header_list_size(config.head.max_bytes as u32);
        proxy.h2_options = Some(h2);
        let mut proxy = pingora::services::listening::Service::new(
            "sessiongate".into(),
            head::Limited::new(
                proxy,
                config.head.clone(),
                &config.connections,
                metrics,
                access_log,
            ),
        );
        for addr in &config.listen {
            proxy.add_listener(ListenerConfig::tcp(addr).l4_buffer(client_buffers()));
        }
        if let Some(tls) = &config.tls {
            for addr in &tls.listen {
                // HTTP/2 for clients that offer it (ALPN `h2`), HTTP/1.1 for the rest.
                let mut settings =
                    TlsSettings::intermediate(&tls.cert, &tls.key).map_err(|source| {
                        StartError::Tls {
                            addr: addr.clone(),
                            source,
                        }
                    })?;
                settings.enable_h2();
                proxy.add_listener(
                    ListenerConfig::tcp(addr)
                        .tls(settings)
                        .l4_buffer(client_buffers()),
                );
            }
        }
        server.add_service(proxy);
        Ok(Self {
            server,
            draining,
            drain_delay: config.drain_delay,
        })
    }

    /// Runs until SIGTERM (a drain, then graceful), SIGINT (fast) or SIGQUIT (upgrade).
    pub fn run(self) {
        self.run_until(Box::new(UnixShutdownSignalWatch));
    }

    /// Runs until `signal` fires: for embedding and tests. A graceful terminate from it is a
    /// drain, as SIGTERM is.
    pub fn run_until(self, signal: Box<dyn ShutdownSignalWatch + Send + Sync>) {
        self.server.run(RunArgs {
            shutdown_signal: Box::new(DrainSignal {
                inner: signal,
                draining: self.draining,
                delay: self.drain_delay,
            }),
        });
    }
}

/// Builds the config's pools and resolves their servers once, on a runtime of its own: the
/// caller may be on a runtime already (a test), where blocking on another is not allowed.
fn resolve_now(config: &Config) -> Result<Vec<Arc<Pool>>, StartError> {
    let upstreams = config.upstreams.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(upstreams::build(&upstreams)))
    })
    .join()
    .map_err(|_| StartError::Resolve("the resolver thread panicked".into()))?
    .map_err(|e: std::io::Error| StartError::Resolve(e.to_string()))
}

/// The buffers of a client connection: Pingora's write buffer, and no read buffer. The gate
/// reads each HTTP/1 head into a buffer of its own that grows only as a head needs it
/// ([`head`]), and Pingora reads bodies into its own: a 64 KiB read buffer in front of them
/// (Pingora's default) would cost every connection 64 KiB, idle or not, and a copy of every
/// byte read.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}
