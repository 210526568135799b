//! Sessions in Redis, in connect-redis's layout: `SET <prefix><sid> <json> EX <ttl>`, touched
//! with `EXPIRE`, read and touched in one round trip with `GETEX` (Redis 6.2+).
//!
//! The connection is a multiplexed [`ConnectionManager`], made on first use so that it lives
//! on the proxy's own runtime; it reconnects by itself after Redis comes back. Every command
//! is bounded by the configured timeout, so an unreachable Redis costs a request at most that.
//! Cluster and Sentinel fit behind the same trait as further connection kinds.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd};

use super::{SessionStore, StoreError};
use crate::config::runtime::redact_url;
use crate::config::RedisSettings;

pub struct RedisStore {
    client: Client,
    url: String,
    conn: OnceLock<Result<ConnectionManager, String>>,
    prefix: String,
    timeout: Duration,
}

impl RedisStore {
    /// `settings.url` was validated with the config.
    pub fn new(settings: &RedisSettings, prefix: &str) -> Self {
        Self {
            client: settings.client().expect("validated with the config"),
            url: redact_url(&settings.url),
            conn: OnceLock::new(),
            prefix: prefix.to_owned(),
            timeout: settings.timeout,
        }
    }

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self.conn.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                // Reconnect quickly and keep trying on later commands rather than backing off
                // for minutes: recovery after an outage should be prompt.
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(200));
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| e.to_string())
        });
        conn.clone().map_err(StoreError::Backend)
    }

    fn key(&self, sid: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + sid.len());
        k.push_str(&self.prefix);
        k.push_str(sid);
        k
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection()?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Backend(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

/// Whole seconds, rounded up, at least one: Redis TTLs are seconds and 0 would delete.
fn secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, sid: &str, touch: Option<Duration>) -> Result<Option<String>, StoreError> {
        let key = self.key(sid);
        let cmd = match touch {
            Some(ttl) => redis::cmd("GETEX")
                .arg(key)
                .arg("EX")
                .arg(secs(ttl))
                .to_owned(),
            None => redis::cmd("GET").arg(key).to_owned(),
        };
        self.run(cmd).await
    }

    async fn expire(&self, sid: &str, ttl: Duration) -> Result<(), StoreError> {
        self.run::<i64>(
            redis::cmd("EXPIRE")
                .arg(self.key(sid))
                .arg(secs(ttl))
                .to_owned(),
        )
        .await
        .map(drop)
    }

    async fn save(&self, sid: &str, json: &str, ttl: Duration) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(sid))
                .arg(json)
                .arg("EX")
                .arg(secs(ttl))
                .to_owned(),
        )
        .await
    }

    async fn destroy(&self, sid: &str) -> Result<(), StoreError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(sid)).to_owned())
            .await
            .map(drop)
    }

    fn describe(&self) -> String {
        format!(
            "redis {} (prefix `{}`, timeout {:?})",
            self.url, self.prefix, self.timeout
        )
    }
}
