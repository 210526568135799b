//! The store's connection: one Redis server (a reconnecting multiplexed connection) or a Redis
//! Cluster (redis-rs's async cluster connection, which follows MOVED and ASK and refreshes the
//! slot map on topology changes by itself). Both speak [`ConnectionLike`], so every command is
//! written once; what differs is what may share a script or a pipeline: on a cluster, only keys
//! of one slot (see the module comment of [`super`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisFuture, RedisResult, Value};

use super::RedisSettings;

#[derive(Clone)]
pub enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// A connection to the master the sentinels name. It is made on first use after asking the
/// sentinels, checked with `ROLE`, and dropped, to be made again, when a command fails on it
/// for the connection's sake or with `READONLY` (the node was demoted by a failover): such a
/// command is sent once more, to the master the sentinels name now. [`SentinelConn::follow`]
/// also drops it as soon as the sentinels name another master, so the gate never keeps
/// writing to a demoted one.
#[derive(Clone)]
pub struct SentinelConn(Arc<SentinelShared>);

struct SentinelShared {
    settings: RedisSettings,
    timeout: Duration,
    current: tokio::sync::Mutex<Option<(Master, MultiplexedConnection)>>,
    /// Bumped whenever `current` is made or dropped: an answer read at one epoch came from
    /// the connection of that epoch, and from no other.
    epoch: AtomicU64,
}

impl SentinelConn {
    pub fn new(settings: RedisSettings, timeout: Duration) -> Self {
        SentinelConn(Arc::new(SentinelShared {
            settings,
            timeout,
            current: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
        }))
    }

    /// The master the sentinels name now: the first sentinel that answers.
    pub async fn master(&self) -> RedisResult<Master> {
        let s = self
            .0
            .settings
            .sentinel
            .as_ref()
            .expect("sentinel settings");
        let mut last = None;
        for client in s.clients()? {
            let ask = async {
                let mut c = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&s.master)
                    .query_async::<Option<(String, u16)>>(&mut c)
                    .await
            };
            match tokio::time::timeout(self.0.timeout, ask).await {
                Ok(Ok(Some((host, port)))) => return Ok(Master { host, port }),
                Ok(Ok(None)) => last = Some(format!("no master named {}", s.master)),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some("no answer in time".to_owned()),
            }
        }
        Err((
            redis::ErrorKind::Io,
            "no sentinel named the master",
            last.unwrap_or_default(),
        )
            .into())
    }

    /// A client for the master the sentinels name now, and where it is.
    pub async fn master_client(
        &self,
        protocol: redis::ProtocolVersion,
    ) -> RedisResult<(Master, redis::Client)> {
        let m = self.master().await?;
        let client = self.0.settings.node_client(&m.host, m.port, protocol)?;
        Ok((m, client))
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut current = self.0.current.lock().await;
        if let Some((_, c)) = current.as_ref() {
            return Ok(c.clone());
        }
        let (m, client) = self.master_client(redis::ProtocolVersion::RESP2).await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.0.timeout))
            .set_response_timeout(Some(self.0.timeout));
        let mut c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut c).await?;
        let is_master = matches!(role.first(), Some(Value::BulkString(b)) if b == b"master")
            || matches!(role.first(), Some(Value::SimpleString(s)) if s == "master");
        if !is_master {
            return Err((
                redis::ErrorKind::Io,
                "the node the sentinels name is not a master yet",
            )
                .into());
        }
        *current = Some((m, c.clone()));
        self.0.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(c)
    }

    /// The connection's epoch now: take it before a read, to ask [`Self::still_master`] after.
    pub fn epoch(&self) -> u64 {
        self.0.epoch.load(Ordering::SeqCst)
    }

    /// Whether an answer read since `epoch` came from a node that is still a master (`ROLE`).
    /// A demoted master answers reads as a replica, and while it resyncs from the new master
    /// its keyspace is empty: a missing session read there means nothing. `false` when the
    /// connection was made again or dropped since `epoch` (the answer may have come from the
    /// old node), or when its node is no master any more: then the connection is dropped and
    /// the next command goes to the master the sentinels name.
    pub async fn still_master(&self, epoch: u64) -> RedisResult<bool> {
        let current = {
            let current = self.0.current.lock().await;
            (self.epoch() == epoch)
                .then(|| current.as_ref().map(|(_, c)| c.clone()))
                .flatten()
        };
        let Some(mut c) = current else {
            return Ok(false);
        };
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut c).await?;
        let master = matches!(role.first(), Some(Value::BulkString(b)) if b == b"master")
            || matches!(role.first(), Some(Value::SimpleString(s)) if s == "master");
        if !master {
            self.forget().await;
        }
        Ok(master)
    }

    async fn forget(&self) {
        let mut current = self.0.current.lock().await;
        if current.take().is_some() {
            self.0.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Drops the connection when the sentinels name another master than the one it goes to.
    pub async fn follow(&self) {
        let Ok(named) = self.master().await else {
            return;
        };
        let mut current = self.0.current.lock().await;
        if current.as_ref().is_some_and(|(m, _)| *m != named) {
            tracing::info!(host = %named.host, port = named.port, "the sentinels name a new Redis master; following it");
            *current = None;
            self.0.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether an error means the connection should be made again (to the master named now).
    fn stale(e: &redis::RedisError) -> bool {
        e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.to_string().contains("READONLY")
            || e.to_string()
                .to_ascii_lowercase()
                .contains("read only replica")
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut c = self.connection().await?;
            match c.req_packed_command(cmd).await {
                Err(e) if Self::stale(&e) => {
                    self.forget().await;
                    let mut c = self.connection().await?;
                    c.req_packed_command(cmd).await
                }
                other => other,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut c = self.connection().await?;
            match c.req_packed_commands(pipeline, offset, count).await {
                Err(e) if Self::stale(&e) => {
                    self.forget().await;
                    let mut c = self.connection().await?;
                    c.req_packed_commands(pipeline, offset, count).await
                }
                other => other,
            }
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A master of the cluster: where it listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Master {
    pub host: String,
    pub port: u16,
}

/// The masters that serve slots now, as `CLUSTER NODES` on any node has them, sorted. An
/// error while that node's view does not cover all 16384 slots (during a failover, before
/// the replica's promotion has reached it): nothing may rely on a partial list.
pub async fn masters(conn: &mut ClusterConnection) -> RedisResult<Vec<Master>> {
    let nodes = conn
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").to_owned(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let text: String = redis::from_redis_value(nodes)?;
    let (masters, slots) = parse_masters(&text);
    if slots != 16384 {
        return Err((
            redis::ErrorKind::Io,
            "the cluster's masters do not cover every slot yet",
        )
            .into());
    }
    Ok(masters)
}

/// The masters in a `CLUSTER NODES` answer (flagged `master`, not failed, serving slots), and
/// how many slots they serve together.
pub fn parse_masters(text: &str) -> (Vec<Master>, u32) {
    let mut slots = 0u32;
    let mut out: Vec<Master> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = f.get(2)?;
            let master = flags.split(',').any(|x| x == "master");
            let failed = flags.split(',').any(|x| x == "fail" || x == "fail?");
            if !master || failed || f.len() <= 8 {
                return None;
            }
            for range in f[8..].iter().filter(|r| !r.starts_with('[')) {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                slots += b.saturating_sub(a) + 1;
            }
            let addr = f.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Master {
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
        })
        .collect();
    out.sort();
    (out, slots)
}

/// Runs `cmd` on one master.
pub async fn on_master<T: redis::FromRedisValue>(
    conn: &mut ClusterConnection,
    master: &Master,
    cmd: Cmd,
) -> RedisResult<T> {
    let v = conn
        .route_command(
            cmd,
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: master.host.clone(),
                port: master.port,
            }),
        )
        .await?;
    redis::from_redis_value(v).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::SentinelSettings;

    #[tokio::test]
    async fn a_miss_is_not_believed_when_no_connection_vouches_for_it() {
        let timeout = Duration::from_millis(100);
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1/0".into(),
            cluster: Vec::new(),
            sentinel: Some(SentinelSettings {
                master: "mymaster".into(),
                nodes: vec!["redis://127.0.0.1:1".into()],
                password: None,
            }),
            timeout,
            retry_after: Duration::from_secs(1),
            ca_pem: None,
        };
        let conn = SentinelConn::new(settings, timeout);
        // The follower dropped the connection the read went out on (or none was made yet):
        // the answer may come from a demoted master, so it must be read again.
        assert!(!conn.still_master(conn.epoch()).await.unwrap());
        conn.forget().await;
        assert!(!conn.still_master(conn.epoch()).await.unwrap());
    }

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 5 connected 10923-16383
f6 127.0.0.1:7006@17006 master - 0 0 6 connected
";
        let (masters, slots) = parse_masters(text);
        let ports: Vec<u16> = masters.iter().map(|m| m.port).collect();
        assert_eq!(ports, [7001, 7002, 7005]);
        assert_eq!(slots, 16384);
        let (_, partial) = parse_masters(&text.replace(
            "e5 127.0.0.1:7005@17005 master",
            "e5 127.0.0.1:7005@17005 slave",
        ));
        assert_eq!(
            partial, 10923,
            "a failed master's slots are nobody's until a replica takes over"
        );
    }
}
