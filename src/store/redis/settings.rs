//! The `[redis]` settings, and the clients the store builds from them.

use std::time::Duration;

/// The `[redis]` settings; the store builds its clients from them.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    /// Seed nodes of a Redis Cluster (`[redis] cluster`); empty for one server at `url`.
    pub cluster: Vec<String>,
    /// Sentinels that name the master (`[redis] sentinel`); `url` then gives only the data
    /// nodes' credentials, database and TLS.
    pub sentinel: Option<SentinelSettings>,
    pub timeout: Duration,
    pub retry_after: Duration,
    /// PEM roots for `rediss://`.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisSettings {
    /// A client for these settings: the URL, and the private CA when there is one.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        self.client_with(redis::ProtocolVersion::RESP2)
    }

    /// The same with RESP3, which the cache's invalidation stream needs for push messages.
    pub fn client_with(
        &self,
        protocol: redis::ProtocolVersion,
    ) -> redis::RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let info = self.url.as_str().into_connection_info()?;
        let redis_info = info.redis_settings().clone().set_protocol(protocol);
        let info = info.set_redis_settings(redis_info);
        open(info, self.ca_pem.as_deref())
    }
}

/// `[redis] sentinel`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// The name the sentinels monitor the master under.
    pub master: String,
    /// The sentinels' URLs.
    pub nodes: Vec<String>,
    /// The sentinels' own password (resolved from `env:`/`file:`).
    pub password: Option<String>,
}

impl SentinelSettings {
    /// A client for each sentinel, with the sentinels' password.
    pub fn clients(&self) -> redis::RedisResult<Vec<redis::Client>> {
        use redis::IntoConnectionInfo;
        self.nodes
            .iter()
            .map(|url| {
                let mut info = url.as_str().into_connection_info()?;
                if let Some(p) = &self.password {
                    let r = info.redis_settings().clone().set_password(p);
                    info = info.set_redis_settings(r);
                }
                redis::Client::open(info)
            })
            .collect()
    }
}

impl RedisSettings {
    /// A Redis Cluster client for the seed nodes, with the private CA when there is one.
    pub fn cluster_client(
        &self,
        protocol: redis::ProtocolVersion,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let mut b =
            redis::cluster::ClusterClientBuilder::new(self.cluster.iter().map(String::as_str))
                .use_protocol(protocol)
                .connection_timeout(self.timeout)
                .response_timeout(self.timeout)
                .retries(2)
                .max_retry_wait(200);
        if let Some(pem) = &self.ca_pem {
            b = b.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
        b.build()
    }

    /// A client for one data node at `host:port` (a cluster's master, or the master the
    /// sentinels name), with the credentials, database and TLS of the seed nodes or `url`.
    pub fn node_client(
        &self,
        host: &str,
        port: u16,
        protocol: redis::ProtocolVersion,
    ) -> redis::RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let seed = self.cluster.first().unwrap_or(&self.url).as_str();
        let info = seed.into_connection_info()?;
        let addr = match info.addr() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let redis_info = info.redis_settings().clone().set_protocol(protocol);
        let info = info.set_addr(addr).set_redis_settings(redis_info);
        open(info, self.ca_pem.as_deref())
    }
}

/// A client for `info`, trusting the private CA `ca_pem` when there is one.
fn open(info: redis::ConnectionInfo, ca_pem: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match ca_pem {
        None => redis::Client::open(info),
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field(
                "cluster",
                &self
                    .cluster
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Hides the password of a Redis URL for logs and `check`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
