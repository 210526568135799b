//! The cache's throttled touches, sent in batches on the tracking connection: many sessions
//! per round trip, and (NOLOOP) without invalidating this gate's own cached copies.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::conn::Conn;
use super::scripts::{is_noscript, load_command, LoadAnswer, Scripts, LOAD_TOUCH};
use crate::metrics::Metrics;
use crate::record::ExpiryPolicy;
use crate::store::tracking::{Tracking, TOUCH_BATCH};

/// Where touches go and how they are sent.
pub struct Toucher {
    /// On a cluster, touches go through the cluster connection, one command each (a batch
    /// spans slots), and are not NOLOOP: they invalidate this gate's own copies too.
    pub cluster: Option<Conn>,
    pub tracking: Arc<Tracking>,
    pub scripts: Arc<Scripts>,
    pub prefix: String,
    pub index_prefix: String,
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl Toucher {
    /// Sends the touches cached sessions have due until the gate stops.
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<(String, ExpiryPolicy)>) {
        let mut batch = Vec::with_capacity(TOUCH_BATCH);
        while rx.recv_many(&mut batch, TOUCH_BATCH).await > 0 {
            self.send(&batch).await;
            batch.clear();
        }
    }

    async fn send(&self, batch: &[(String, ExpiryPolicy)]) {
        if let Some(conn) = &self.cluster {
            return self.send_each(conn, batch).await;
        }
        let Some(mut conn) = self.tracking.connection() else {
            // The stream is down, so the cache is off and empty: these touches have no entry
            // to update, and the next load touches in Redis itself.
            return;
        };
        let mut pipe = redis::pipe();
        for (sid, policy) in batch {
            pipe.add_command(load_command(
                &self.scripts,
                &self.prefix,
                &self.index_prefix,
                sid,
                Some(policy),
                true,
                true,
            ));
        }
        let mut results = self.query(&mut conn, &pipe).await;
        if matches!(&results, Err(e) if is_noscript(e)) {
            // A restarted Redis has forgotten the script: load it and send the batch again.
            let loaded = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(LOAD_TOUCH)
                .query_async::<()>(&mut conn)
                .await;
            results = match loaded {
                Ok(()) => self.query(&mut conn, &pipe).await,
                Err(e) => Err(e),
            };
        }
        match results {
            Ok(results) => {
                for ((sid, _), answer) in batch.iter().zip(results) {
                    Metrics::inc(&self.metrics.cache_touches);
                    let left = answer.map(|a| Duration::from_secs(a.remaining.max(0) as u64));
                    self.tracking.cache.touched(sid, left);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "batched touches failed; the sessions are touched on their next load");
                for (sid, _) in batch {
                    self.tracking.cache.touched(sid, None);
                }
            }
        }
    }

    /// A batch on a cluster: each touch to its own slot, all at once.
    async fn send_each(&self, conn: &Conn, batch: &[(String, ExpiryPolicy)]) {
        let mut set = tokio::task::JoinSet::new();
        for (i, (sid, policy)) in batch.iter().enumerate() {
            let cmd = load_command(
                &self.scripts,
                &self.prefix,
                "",
                sid,
                Some(policy),
                true,
                false,
            );
            let (mut conn, timeout) = (conn.clone(), self.timeout);
            set.spawn(async move {
                let r =
                    tokio::time::timeout(timeout, cmd.query_async::<Option<LoadAnswer>>(&mut conn))
                        .await;
                (i, r.ok().and_then(Result::ok))
            });
        }
        while let Some(done) = set.join_next().await {
            let Ok((i, answer)) = done else { continue };
            Metrics::inc(&self.metrics.cache_touches);
            let left = answer
                .flatten()
                .map(|a| Duration::from_secs(a.remaining.max(0) as u64));
            self.tracking.cache.touched(&batch[i].0, left);
        }
    }

    async fn query(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<Vec<Option<LoadAnswer>>> {
        match tokio::time::timeout(self.timeout, pipe.query_async(conn)).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "touch timed out",
            ))),
        }
    }
}
