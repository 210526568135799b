//! What the Redis store runs for as long as the gate runs, when the local cache is on: the
//! invalidation stream (one connection, or one per master of a cluster, following a
//! sentinel failover) and the batched touches.

use super::*;

impl RedisStore {
    pub(super) async fn maintain_cache(&self) {
        let Some(parts) = &self.cache else {
            return std::future::pending().await;
        };
        let Some(rx) = parts
            .pending_touches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return std::future::pending().await;
        };
        let (source, cluster) = match (&parts.resp3, &self.sentinel) {
            (Some(client), _) => (Source::One(client.clone()), None),
            (None, Some(s)) => (Source::Sentinel(s.clone()), None),
            (None, None) => {
                // A cluster: its connection finds the masters (and, here, sends the touches).
                let conn = loop {
                    match self.connection().await {
                        Ok(Conn::Cluster(c)) => break c,
                        Ok(_) => unreachable!("a cluster store has a cluster connection"),
                        Err(e) => {
                            tracing::debug!(error = %e, "Redis Cluster unavailable; the cache waits");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                (
                    Source::Cluster {
                        settings: self.settings.clone(),
                        conn: conn.clone(),
                    },
                    Some(Conn::Cluster(conn)),
                )
            }
        };
        let stream = parts
            .tracking
            .clone()
            .run(source, self.prefix.clone(), self.timeout);
        let touches = Toucher {
            cluster,
            tracking: parts.tracking.clone(),
            scripts: self.scripts.clone(),
            prefix: self.prefix.clone(),
            index_prefix: self.index_prefix.clone(),
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        }
        .run(rx);
        tokio::join!(stream, touches);
    }
}
