//! Keeps the local cache coherent: a RESP3 connection with `CLIENT TRACKING ON BCAST PREFIX
//! <prefix> NOLOOP`, so that Redis pushes the name of every session key any client changes,
//! touches, deletes or lets expire, to every gate at once. The same connection sends this
//! gate's throttled, batched touches; NOLOOP keeps them from invalidating our own copies.
//!
//! While the connection is down the cache is off and empty; it comes back by itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushKind, Value};
use tokio::sync::mpsc;

use super::cache::SessionCache;

/// Touches waiting to go out are sent together, up to this many per round trip.
pub const TOUCH_BATCH: usize = 256;

pub struct Tracking {
    pub cache: Arc<SessionCache>,
    /// The tracking connection, for sending touches; `None` while down.
    pub conn: Mutex<Option<MultiplexedConnection>>,
}

impl Tracking {
    pub fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs for the life of the gate: connect, subscribe, apply invalidations, reconnect.
    pub async fn run(self: Arc<Self>, client: Client, prefix: String, timeout: Duration) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.session(&client, &prefix, timeout).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => tracing::debug!(error = %e, "cache invalidation stream unavailable"),
            }
            self.cache.set_live(false);
            *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One connected stretch; returns when the connection is lost.
    async fn session(
        &self,
        client: &Client,
        prefix: &str,
        timeout: Duration,
    ) -> redis::RedisResult<()> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(tx);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(prefix)
            .arg("NOLOOP")
            .query_async::<()>(&mut conn)
            .await?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        self.cache.set_live(true);
        tracing::info!("session cache live: Redis invalidations connected");
        while let Some(push) = rx.recv().await {
            match push.kind {
                PushKind::Invalidate => match push.data.first() {
                    Some(Value::Array(keys)) => {
                        for k in keys {
                            if let Ok(key) = redis::from_redis_value_ref::<String>(k) {
                                if let Some(sid) = key.strip_prefix(prefix) {
                                    self.cache.invalidated_by_redis(sid);
                                }
                            }
                        }
                    }
                    // A nil list: Redis flushed its keyspace.
                    _ => self.cache.clear(),
                },
                PushKind::Disconnection => break,
                _ => {}
            }
        }
        tracing::warn!("session cache off: Redis invalidation stream lost");
        Ok(())
    }
}
