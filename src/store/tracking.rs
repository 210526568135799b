//! Keeps the local cache coherent: a RESP3 connection with `CLIENT TRACKING ON BCAST PREFIX
//! <prefix> NOLOOP`, so that Redis pushes the name of every session key any client changes,
//! touches, deletes or lets expire, to every gate at once. The same connection sends this
//! gate's throttled, batched touches; NOLOOP keeps them from invalidating our own copies.
//!
//! While the connection is down the cache is off and empty; it comes back by itself.
//!
//! On a Redis Cluster each master pushes invalidations for its own keys only, so the stream
//! is one such connection to every master. The cache is live only while all of them are; one
//! lost (or stalled) turns it off and empties it, and all are made again. The masters are
//! read again every [`PING_INTERVAL`]: a failover or a resharding changes them, and the
//! stream is then rebuilt on the new masters (the cache emptied on the way, since the new
//! master's stream starts only now).
//!
//! A connection can also stop delivering without closing: a frozen Redis, a blackholed
//! network path, a middlebox that dropped the flow. No FIN or RST arrives, so nothing would
//! ever tell the gate, and it would serve revoked sessions for the whole `cache.ttl`. So the
//! stream's liveness is checked on that same connection: a PING every [`PING_INTERVAL`],
//! answered within [`PING_DEADLINE`] (or the connection's response timeout, `redis.timeout`,
//! when that is shorter). Redis writes replies and pushes to a connection in order, so a PONG
//! that arrives proves that every invalidation Redis wrote before it has arrived too. A missed
//! deadline turns the cache off (which empties it), drops the connection and reconnects.
//!
//! The bound: an invalidation lost in a stall was written after the last PONG that arrived;
//! the next PING leaves at most [`PING_INTERVAL`] after that PONG and is given up on at most
//! [`PING_DEADLINE`] later, when the cache is emptied at once. So a session revoked in Redis
//! is served from the cache for at most `PING_INTERVAL + min(PING_DEADLINE, redis.timeout)`
//! plus one network trip after its revocation: 1.5 s with the default `redis.timeout` of
//! 500 ms, 2 s at most, however long `cache.ttl` is. (A request that read its cache entry
//! just before the flush still completes with it.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, PushKind, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::cache::SessionCache;
use super::redis::conn::{masters, Master, SentinelConn};
use super::RedisSettings;

/// Where the invalidations come from.
pub enum Source {
    /// One server.
    One(Client),
    /// A cluster: a connection to each of its masters, found through the cluster connection.
    Cluster {
        settings: RedisSettings,
        conn: ClusterConnection,
    },
    /// The master the sentinels name, followed when they name another.
    Sentinel(SentinelConn),
}

/// Touches waiting to go out are sent together, up to this many per round trip.
pub const TOUCH_BATCH: usize = 256;

/// How often the stream is checked. Half of the stall bound; one PING a second per gate is
/// nothing to Redis.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long a PING may wait for its PONG. Far above a healthy round trip (well under a
/// millisecond on a LAN), so that a busy Redis or a short fork pause does not flush the cache
/// for nothing; the connection's own response timeout (`redis.timeout`) applies too.
pub const PING_DEADLINE: Duration = Duration::from_secs(1);

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
    pub async fn run(self: Arc<Self>, source: Source, prefix: String, timeout: Duration) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let connected = match &source {
                Source::One(client) => {
                    self.session(
                        std::slice::from_ref(client),
                        Watch::Nothing,
                        &prefix,
                        timeout,
                    )
                    .await
                }
                Source::Cluster { settings, conn } => {
                    self.cluster_session(settings, conn.clone(), &prefix, timeout)
                        .await
                }
                Source::Sentinel(sentinel) => {
                    self.sentinel_session(sentinel, &prefix, timeout).await
                }
            };
            match connected {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => tracing::debug!(error = %e, "cache invalidation stream unavailable"),
            }
            self.cache.set_live(false);
            *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One connected stretch on a cluster: a stream from every master that serves slots now,
    /// until one is lost or the masters change.
    async fn cluster_session(
        &self,
        settings: &RedisSettings,
        mut conn: ClusterConnection,
        prefix: &str,
        timeout: Duration,
    ) -> redis::RedisResult<()> {
        let now = tokio::time::timeout(timeout, masters(&mut conn))
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "CLUSTER NODES timed out"))
            })??;
        if now.is_empty() {
            return Err((redis::ErrorKind::Io, "no cluster master serves slots").into());
        }
        let clients = now
            .iter()
            .map(|m| settings.node_client(&m.host, m.port, redis::ProtocolVersion::RESP3))
            .collect::<redis::RedisResult<Vec<Client>>>()?;
        self.session(&clients, Watch::Cluster(conn, now), prefix, timeout)
            .await
    }

    /// One connected stretch with sentinels: to the master they name, until they name another.
    async fn sentinel_session(
        &self,
        sentinel: &SentinelConn,
        prefix: &str,
        timeout: Duration,
    ) -> redis::RedisResult<()> {
        let (master, client) = sentinel
            .master_client(redis::ProtocolVersion::RESP3)
            .await?;
        let moved = master_moved(sentinel.clone(), master);
        self.session(&[client], Watch::Sentinel(Box::pin(moved)), prefix, timeout)
            .await
    }

    /// One connected stretch: a tracking connection to each client (one server, or every
    /// master of a cluster, with the cluster connection to watch its masters through);
    /// returns when one is lost, stalls, or the masters change.
    async fn session(
        &self,
        clients: &[Client],
        topology: Watch,
        prefix: &str,
        timeout: Duration,
    ) -> redis::RedisResult<()> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(tx);
        let mut conns = Vec::with_capacity(clients.len());
        for client in clients {
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
            conns.push(conn);
        }
        if !matches!(topology, Watch::Cluster(..)) {
            *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = conns.first().cloned();
        }
        self.cache.set_live(true);
        tracing::info!(
            connections = conns.len(),
            "session cache live: Redis invalidations connected"
        );
        // Ends (with why) when any connection stalls, or the cluster's masters change.
        let mut watch: JoinSet<String> = JoinSet::new();
        for conn in conns {
            watch.spawn(stalled(conn));
        }
        match topology {
            Watch::Nothing => {}
            Watch::Cluster(conn, masters_then) => {
                watch.spawn(topology_changed(conn, masters_then));
            }
            Watch::Sentinel(moved) => {
                watch.spawn(moved);
            }
        }
        loop {
            let push = tokio::select! {
                biased;
                push = rx.recv() => push,
                why = watch.join_next() => {
                    let why = why.map_or_else(|| "no connection".to_owned(), |w| w.unwrap_or_else(|e| e.to_string()));
                    // `run` turns the cache off (emptying it) as soon as this returns, with no
                    // await in between, drops the connection with its last handle, and
                    // reconnects.
                    tracing::warn!(reason = %why, "session cache off: Redis invalidation stream stalled; reconnecting");
                    return Ok(());
                }
            };
            let Some(push) = push else { break };
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

/// What ends a connected stretch besides a lost or stalled connection.
enum Watch {
    Nothing,
    /// The cluster's masters are no longer these.
    Cluster(ClusterConnection, Vec<Master>),
    /// The sentinels name another master.
    Sentinel(std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>),
}

/// Returns (why) once the sentinels name another master than `then`.
async fn master_moved(sentinel: SentinelConn, then: Master) -> String {
    loop {
        tokio::time::sleep(PING_INTERVAL / 2).await;
        if let Ok(now) = sentinel.master().await {
            if now != then {
                return format!(
                    "the sentinels name a new master ({}:{})",
                    now.host, now.port
                );
            }
        }
    }
}

/// Returns (why) once the cluster's masters are no longer `then`: checked every
/// [`PING_INTERVAL`]; a check that fails counts as a change (the stream is rebuilt).
async fn topology_changed(mut conn: ClusterConnection, then: Vec<Master>) -> String {
    loop {
        tokio::time::sleep(PING_INTERVAL).await;
        match tokio::time::timeout(PING_DEADLINE, masters(&mut conn)).await {
            Ok(Ok(now)) if now == then => {}
            Ok(Ok(now)) => {
                return format!(
                    "the cluster's masters changed ({} to {})",
                    then.len(),
                    now.len()
                )
            }
            Ok(Err(e)) => return format!("CLUSTER NODES failed: {e}"),
            Err(_) => return format!("no CLUSTER NODES answer within {PING_DEADLINE:?}"),
        }
    }
}

/// Returns (why) once the connection misses a PING's deadline: see the module's comment.
async fn stalled(mut conn: MultiplexedConnection) -> String {
    let ping = redis::cmd("PING");
    loop {
        tokio::time::sleep(PING_INTERVAL).await;
        match tokio::time::timeout(PING_DEADLINE, ping.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("PING failed: {e}"),
            Err(_) => return format!("no PONG within {PING_DEADLINE:?}"),
        }
    }
}
