//! What the PostgreSQL store runs beside the request path: the cache's invalidations (a
//! `LISTEN` connection of its own), the cache's batched touches, and connect-pg-simple's
//! pruning of expired rows.
//!
//! **Invalidations.** The notify trigger sends the id of every row deleted, renamed or whose
//! `sess` is rewritten, after commit, to every listening gate. The cache serves only while the
//! listening connection is up and the trigger is on the table; losing the connection empties
//! it, since notifications sent meanwhile are lost for good. A connection can also stall
//! without closing, so it is asked `SELECT 1` every [`PING_INTERVAL`], answered within
//! [`PING_DEADLINE`] (or `postgres.timeout` when shorter): PostgreSQL sends a session the
//! notifications committed before a query ahead of that query's answer, so an answer proves
//! none is missing. A missed answer empties the cache and the connection is made again.
//!
//! The bound is then the Redis store's: a row deleted in SQL is served from a gate's cache
//! for at most `PING_INTERVAL + min(PING_DEADLINE, postgres.timeout)` plus a round trip
//! after its commit, 1.5 s with the default timeout, and in practice a millisecond.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};

use super::sql::ident;
use super::{expire_s, now_s, PostgresSettings, PostgresStore, Touch};
use crate::metrics::Metrics;
use crate::store::tracking::{PING_DEADLINE, PING_INTERVAL, TOUCH_BATCH};

/// How long the listener waits before connecting again.
const RECONNECT: Duration = Duration::from_millis(200);

impl PostgresStore {
    /// Listens for invalidations and sends the cache's touches, for as long as the gate runs.
    pub(super) async fn maintain_cache(&self) {
        let Some(parts) = &self.cache else {
            return std::future::pending().await;
        };
        let touches = parts
            .pending_touches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let send_touches = async {
            match touches {
                Some(rx) => self.send_touches(rx).await,
                None => std::future::pending().await,
            }
        };
        let listen = async {
            if !self.settings.create_notify_trigger {
                return std::future::pending().await;
            }
            let mut down_logged = false;
            loop {
                match self.listen_once(&mut down_logged).await {
                    Ok(()) => {}
                    Err(e) if !down_logged => {
                        tracing::warn!(error = %e, "the cache's PostgreSQL notifications are down; the cache is off until they are back");
                        down_logged = true;
                    }
                    Err(_) => {}
                }
                parts.cache.set_live(false);
                tokio::time::sleep(RECONNECT).await;
            }
        };
        tokio::join!(send_touches, listen);
    }

    /// One listening connection, until it is lost.
    async fn listen_once(&self, down_logged: &mut bool) -> Result<(), String> {
        let parts = self.cache.as_ref().expect("a cache");
        let limit = self.settings.timeout;
        // The table and the trigger first: the gate makes them when asked to (this waits,
        // without a bound, for an index build on a large table).
        self.extras().await;
        let connect = connect(&self.settings);
        let (client, mut notes) = tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| format!("no connection within {limit:?}"))??;
        let subscribe = async {
            client
                .batch_execute(&format!("LISTEN {}", ident(&self.names.channel)))
                .await?;
            client
                .query_one(
                    self.names.has_trigger(),
                    &[&self.names.qualified, &self.names.trigger_name()],
                )
                .await
                .map(|row| row.get::<_, bool>(0))
        };
        let has_trigger = tokio::time::timeout(limit, subscribe)
            .await
            .map_err(|_| format!("LISTEN not answered within {limit:?}"))?
            .map_err(|e| e.to_string())?;
        if !has_trigger {
            return Err(format!(
                "the notify trigger {} is not on {}",
                self.names.trigger_name(),
                self.names.qualified
            ));
        }
        parts.cache.set_live(true);
        if std::mem::take(down_logged) {
            tracing::info!("the cache's PostgreSQL notifications are back; the cache is on");
        }
        let deadline = PING_DEADLINE.min(limit);
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                note = notes.recv() => match note {
                    Some(sid) => parts.cache.invalidated_by_redis(&sid),
                    None => return Err("the listening connection closed".into()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(deadline, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err(format!("the listening connection did not answer within {deadline:?}")),
                    }
                }
            }
        }
    }

    /// Sends the touches cached sessions have due, many per statement.
    async fn send_touches(&self, mut rx: mpsc::UnboundedReceiver<Touch>) {
        let parts = self.cache.as_ref().expect("a cache");
        let mut batch = Vec::with_capacity(TOUCH_BATCH);
        while rx.recv_many(&mut batch, TOUCH_BATCH).await > 0 {
            let now = SystemTime::now();
            let sids: Vec<&str> = batch.iter().map(|(sid, _)| sid.as_str()).collect();
            let expires: Vec<f64> = batch.iter().map(|(_, ttl)| expire_s(now, *ttl)).collect();
            let sent = self
                .within(async {
                    let client = self.client().await?;
                    let stmt = client.prepare_cached(&self.q.touch_many).await?;
                    let rows = client.query(&stmt, &[&sids, &expires]).await?;
                    Ok(rows
                        .iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<std::collections::HashSet<_>>())
                })
                .await;
            match sent {
                Ok(found) => {
                    for (sid, ttl) in &batch {
                        Metrics::inc(&self.metrics.cache_touches);
                        parts
                            .cache
                            .touched(sid, found.contains(sid).then_some(*ttl));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "batched touches failed; the sessions are touched on their next load");
                    for (sid, _) in &batch {
                        parts.cache.touched(sid, None);
                    }
                }
            }
            batch.clear();
        }
    }

    /// connect-pg-simple's pruning: expired rows deleted every `prune_interval`, randomised
    /// to 50-150 % of it for each run so that many writers do not prune together.
    pub(super) async fn prune(&self) {
        let every = self.settings.prune_interval;
        if every.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let delay = every.mul_f64(rand::random_range(0.5..1.5));
            tokio::time::sleep(delay).await;
            let pruned = self
                .within(async {
                    let client = self.client().await?;
                    Ok(client
                        .execute(&self.q.prune, &[&now_s(SystemTime::now())])
                        .await?)
                })
                .await;
            match pruned {
                Ok(n) => tracing::debug!(rows = n, "pruned expired sessions"),
                Err(e) => tracing::warn!(error = %e, "pruning expired sessions failed"),
            }
        }
    }
}

/// A connection of its own for `LISTEN`: its notifications go to the receiver; the receiver
/// closes when the connection does.
async fn connect(
    settings: &PostgresSettings,
) -> Result<(Client, mpsc::UnboundedReceiver<String>), String> {
    let mut config = settings.pg_config().map_err(|e| e.to_string())?;
    // Told apart from the pool's connections in pg_stat_activity.
    config.application_name("sessiongate listen");
    let (tx, rx) = mpsc::unbounded_channel();
    let client = if PostgresSettings::wants_tls(&config) {
        let (client, conn) = config
            .connect(settings.tls()?)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(forward(conn, tx));
        client
    } else {
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(forward(conn, tx));
        client
    };
    Ok((client, rx))
}

/// Drives a connection, sending on the payload (a session id) of every notification.
async fn forward<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    tx: mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if tx.send(n.payload().to_owned()).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}
