//! The `[postgres]` settings, and the pool and TLS the store builds from them.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::Names;

/// connect-pg-simple's `pruneSessionInterval`: 15 minutes (randomised to 50-150 % per run).
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Connections the gate keeps to PostgreSQL at most (per store client).
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The `[postgres]` settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `postgres://user@host:port/db?sslmode=…`.
    pub url: String,
    /// Resolved from `env:`/`file:`; overrides a password in the URL.
    pub password: Option<String>,
    /// PEM roots for TLS (`sslmode=require`) to a server with a private CA; the system roots
    /// otherwise.
    pub ca_pem: Option<Vec<u8>>,
    pub schema: String,
    pub table: String,
    /// Run connect-pg-simple's `table.sql` when the table is missing.
    pub create_table: bool,
    /// Create the expression index on the user field (log out everywhere, the per-user cap
    /// and the admin API look users up through it).
    pub create_user_index: bool,
    /// Create the trigger that notifies gates of deletes and `sess` updates, and listen to
    /// it: what keeps the local cache coherent.
    pub create_notify_trigger: bool,
    /// How often expired rows are deleted; zero: never (another writer prunes).
    pub prune_interval: Duration,
    pub pool_size: usize,
    pub timeout: Duration,
    pub retry_after: Duration,
    /// `session.user_field`: the `sess` member the user index is on.
    pub user_field: String,
}

impl PostgresSettings {
    /// The URL's settings with the password, as tokio-postgres reads them.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = self.url.parse()?;
        if let Some(p) = &self.password {
            config.password(p);
        }
        config.connect_timeout(self.timeout);
        config.application_name("sessiongate");
        Ok(config)
    }

    /// Whether the URL asks for TLS (`sslmode=prefer` or `require`).
    pub fn wants_tls(config: &tokio_postgres::Config) -> bool {
        config.get_ssl_mode() != SslMode::Disable
    }

    /// The TLS connector: rustls with the private CA, or the system's roots.
    pub fn tls(&self) -> Result<MakeRustlsConnect, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            Some(pem) => {
                use rustls::pki_types::pem::PemObject;
                let mut any = false;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
                    roots.add(cert).map_err(|e| e.to_string())?;
                    any = true;
                }
                if !any {
                    return Err("holds no PEM certificate".into());
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// The pool: at most `pool_size` connections, each wait, connect and check bounded by
    /// `timeout`.
    pub fn pool(&self) -> Result<Pool, String> {
        let config = self.pg_config().map_err(|e| e.to_string())?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if Self::wants_tls(&config) {
            Manager::from_config(config, self.tls()?, manager_config)
        } else {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        };
        Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.timeout))
            .create_timeout(Some(self.timeout))
            .recycle_timeout(Some(self.timeout))
            .build()
            .map_err(|e| e.to_string())
    }

    pub fn names(&self) -> Names {
        Names::new(&self.schema, &self.table, &self.user_field)
    }
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redact_pg_url(&self.url))
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Hides the password of a PostgreSQL URL (`postgres://user:pw@host/db`) for logs and `check`.
/// (A `password=` query parameter is refused by the config: use `[postgres] password`.)
pub fn redact_pg_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_pg_url;

    #[test]
    fn a_password_in_the_url_is_hidden_and_nothing_else_is() {
        assert_eq!(
            redact_pg_url("postgres://gate:pw@db:5432/app"),
            "postgres://gate:***@db:5432/app"
        );
        assert_eq!(
            redact_pg_url("postgres://gate@db/app?sslmode=require"),
            "postgres://gate@db/app?sslmode=require"
        );
    }
}
