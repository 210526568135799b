//! Sessions in Redis, in connect-redis's layout: `SET <prefix><sid> <json> EX <ttl>`. A read
//! and its touch are one round trip (a Lua script that also applies the absolute timeout and
//! keeps the user's index alive). Needs Redis 7.0 or newer (`EXPIRE … NX/GT`).
//!
//! The connection is a multiplexed [`ConnectionManager`], made on first use so that it lives
//! on the runtime of the service using it; it reconnects by itself after Redis comes back.
//! Every command is bounded by the configured timeout. Updates use WATCH/MULTI on a
//! connection of their own, since a multiplexed connection cannot hold a WATCH.
//!
//! Per-user indexes are sorted sets `<index_prefix><user>` of session ids scored by when each
//! session began. Their TTL only grows and is pushed with every load of any of the user's
//! sessions, so an index outlives its sessions and then expires: nothing leaks.
//!
//! Log out everywhere has to reach sessions the gate never wrote: express apps write
//! sessions through connect-redis, set users on them, and a JSON number names a user as a
//! JavaScript double. The design, in [`index`]:
//!
//! - **Every session a gate loads joins its user's index** (the load script, `ZADD NX`), so
//!   the index knows every session any gate has served, whoever wrote it and however its user
//!   was set; an update that changes the user moves it ([`SessionStore::reindex`]).
//! - **A session's beginning** is `sessiongate.created` (a gate made it) or, for others,
//!   `sessiongate.seen`, stamped by the load script the first time a gate loads it (express
//!   sessions carry no creation time, and `cookie.expires` moves with rolling).
//! - **Revoking** marks the user's index with `!revoked` (the time) and deletes every session
//!   the index holds. The load script refuses (and deletes) any session of the user that
//!   began at or before the mark: constant cost per request, one `ZSCORE` in the same script.
//! - **Sessions no gate has seen** have no beginning. A sweep, off the request path, SCANs the
//!   session keys and deletes those of the user that began before the mark or were never
//!   seen; while it runs (`!sweep`, a deadline it pushes as it goes), the load script refuses
//!   never-seen sessions of the user instead of stamping them. After it, a never-seen session
//!   was written after the revocation, and is stamped and served.
//! - **TTLs everywhere:** the mark lives in the index, which lives at least as long as the
//!   longest session can (`max_life`), so it outlives everything it must refuse.
//! - **User ids** are rendered the same in Rust and Lua: strings as they are, integral
//!   numbers without exponent (`%.0f` of the double), so `12345678901234567` names the same
//!   index on every side ([`crate::record::render_user`]).
//!
//! **On a Redis Cluster** (`[redis] cluster`) the same keys live in many slots, and a script
//! or a pipeline may only touch one slot. Every script declares its keys and stays on one
//! slot; what spans a session and its user's index is one step per slot, in an order that
//! keeps revocation safe: a load reads the session, then checks and keeps it in the index
//! ([`RedisStore::admit`]), then stamps a never-seen session with the time from before the
//! check; a login writes the index first, then the session (under `session.max_per_user`
//! the session first, then the index: see [`cap`]); a logout deletes the session first;
//! updates swap on the session only if it is what was read; a regenerate copies the record
//! with its TTL, moves the index entry (unless the session has left the index meanwhile),
//! then deletes the old id; sweeps and counts SCAN every master.
//!
//! **With Redis Sentinel** (`[redis] sentinel`) the connection goes to the master the
//! sentinels name ([`conn::SentinelConn`]): asked again every 500 ms, dropped when they name
//! another, and a command refused with `READONLY` or lost with the connection is sent again to
//! the master named now. A missing session is believed only when the connection it was read
//! on is still the current one and its node still says it is a master; otherwise it is read
//! again (at most three times, then the request gets a 503), never answered as logged out.
//!
//! The parts: [`settings`] (the clients), [`conn`] (one server, a cluster, or the sentinels'
//! master), [`scripts`] (the Lua and its decoded answer), [`touch`] (the cache's batched
//! touches), [`index`] (the per-user view), [`cap`] (logins under `session.max_per_user`);
//! the local cache itself and its invalidation
//! stream are [`super::cache`] and [`super::tracking`].
//!
//! This file stays longer than the others: it is the store itself (its struct, its
//! connections for the three modes, and the hot path, load to rename), kept in one place so
//! that every command a request costs reads in order.

mod admit;
mod cap;
pub(super) mod conn;
mod index;
mod maintain;
mod scripts;
mod settings;
mod touch;
mod writes;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::{Client, Cmd};
use tokio::sync::{mpsc, OnceCell};

use self::conn::{Conn, SentinelConn};
use self::scripts::{is_noscript, load_command, secs, LoadAnswer, Scripts, LOAD_TOUCH};
pub use self::settings::{redact_url, RedisSettings, SentinelSettings};
use self::touch::Toucher;
use super::cache::SessionCache;
use super::tracking::{Source, Tracking};
use super::{
    parse_record, CacheSettings, Loaded, Rewrite, Saved, SessionStore, StoreError, UserCap,
    WhenFull,
};
use crate::metrics::Metrics;
use crate::record::{epoch_ms, ExpiryPolicy, META_FIELD};

/// How often the sentinels are asked which node is the master, to follow a failover.
const SENTINEL_POLL: Duration = Duration::from_millis(500);
/// How often an update retries when another gate changed the record under it.
const UPDATE_ATTEMPTS: usize = 16;
/// Updates of one session within this process take turns on one of these locks (by a hash
/// of the id), so that WATCH only ever races other processes, not this one's own requests.
const UPDATE_LOCKS: usize = 64;

pub struct RedisStore {
    /// One server; `None` on a cluster.
    client: Option<Client>,
    /// A Redis Cluster (`[redis] cluster`); `None` for one server.
    cluster: Option<ClusterClient>,
    /// The master the sentinels name (`[redis] sentinel`).
    sentinel: Option<SentinelConn>,
    settings: RedisSettings,
    url: String,
    conn: OnceCell<Conn>,
    prefix: String,
    index_prefix: String,
    timeout: Duration,
    scripts: Arc<Scripts>,
    update_locks: Vec<tokio::sync::Mutex<()>>,
    cache: Option<CacheParts>,
    metrics: Arc<Metrics>,
}

/// The local cache and what keeps it coherent, run by [`SessionStore::maintain`].
struct CacheParts {
    cache: Arc<SessionCache>,
    tracking: Arc<Tracking>,
    touches: mpsc::UnboundedSender<(String, ExpiryPolicy)>,
    pending_touches: Mutex<Option<mpsc::UnboundedReceiver<(String, ExpiryPolicy)>>>,
    /// The invalidation stream's client (one server; on a cluster, one per master is made
    /// from the settings).
    resp3: Option<Client>,
}

impl RedisStore {
    /// `settings` were validated with the config. With `cache`, loads are served from a
    /// local cache kept coherent by Redis's invalidation stream.
    pub fn new(
        settings: &RedisSettings,
        prefix: &str,
        index_prefix: &str,
        cache: Option<&CacheSettings>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let cache = match cache {
            None => None,
            Some(c) => {
                let cache = Arc::new(SessionCache::new(c, metrics.clone()));
                metrics.on_scrape(Box::new({
                    let cache = Arc::downgrade(&cache);
                    let (bytes, entries) =
                        (metrics.cache_bytes.clone(), metrics.cache_entries.clone());
                    move || {
                        if let Some(c) = cache.upgrade() {
                            bytes.set(c.bytes() as i64);
                            entries.set(c.entry_count() as i64);
                        }
                    }
                }));
                let (touches, rx) = mpsc::unbounded_channel();
                Some(CacheParts {
                    tracking: Arc::new(Tracking {
                        cache: cache.clone(),
                        conn: Mutex::new(None),
                    }),
                    cache,
                    resp3: match settings.cluster.is_empty() && settings.sentinel.is_none() {
                        true => Some(settings.client_with(redis::ProtocolVersion::RESP3)?),
                        false => None,
                    },
                    touches,
                    pending_touches: Mutex::new(Some(rx)),
                })
            }
        };
        Ok(Self {
            cache,
            metrics,
            client: match settings.cluster.is_empty() && settings.sentinel.is_none() {
                true => Some(settings.client()?),
                false => None,
            },
            sentinel: settings
                .sentinel
                .as_ref()
                .map(|_| SentinelConn::new(settings.clone(), settings.timeout)),
            cluster: match settings.cluster.is_empty() {
                true => None,
                false => Some(settings.cluster_client(redis::ProtocolVersion::RESP2)?),
            },
            settings: settings.clone(),
            url: match (&settings.sentinel, settings.cluster.first()) {
                (Some(s), _) => format!("sentinel master {}", s.master),
                (None, Some(seed)) => format!("cluster {}", redact_url(seed)),
                (None, None) => redact_url(&settings.url),
            },
            conn: OnceCell::new(),
            prefix: prefix.to_owned(),
            index_prefix: index_prefix.to_owned(),
            timeout: settings.timeout,
            scripts: Arc::default(),
            update_locks: (0..UPDATE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    async fn connection(&self) -> Result<Conn, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                if let Some(sentinel) = &self.sentinel {
                    return Ok::<Conn, StoreError>(Conn::Sentinel(sentinel.clone()));
                }
                if let Some(cluster) = &self.cluster {
                    let conn = self
                        .within(self.timeout, async {
                            Ok(cluster.get_async_connection().await?)
                        })
                        .await?;
                    return Ok::<Conn, StoreError>(Conn::Cluster(conn));
                }
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    // Reconnect quickly and keep trying on later commands rather than backing
                    // off for minutes: recovery after an outage should be prompt.
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(200));
                let client = self.client.clone().expect("one server");
                Ok(Conn::One(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            })
            .await?;
        Ok(conn.clone())
    }

    fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Runs one command per key, each to its own slot, all at once; answers in order. On a
    /// cluster this is what a pipeline of commands on different slots becomes.
    async fn each<T: redis::FromRedisValue + Send + 'static>(
        &self,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.connection().await?;
        let mut set = tokio::task::JoinSet::new();
        for (i, cmd) in cmds.into_iter().enumerate() {
            let mut conn = conn.clone();
            set.spawn(async move { (i, cmd.query_async::<T>(&mut conn).await) });
        }
        let work = async move {
            let mut out: Vec<Option<T>> = Vec::new();
            out.resize_with(set.len(), || None);
            while let Some(done) = set.join_next().await {
                let (i, r) = done.expect("a store command task");
                out[i] = Some(r?);
            }
            Ok::<Vec<T>, redis::RedisError>(out.into_iter().flatten().collect())
        };
        self.within(self.timeout * 4, async { Ok(work.await?) })
            .await
    }

    /// The cache and where its due touches go.
    fn cache(
        &self,
    ) -> Option<(
        &SessionCache,
        &mpsc::UnboundedSender<(String, ExpiryPolicy)>,
    )> {
        self.cache.as_ref().map(|p| (&*p.cache, &p.touches))
    }

    /// Drops a session from the local cache at once, ahead of Redis's invalidation.
    fn forget(&self, sid: &str) {
        if let Some(parts) = &self.cache {
            parts.cache.invalidate(sid);
        }
    }

    fn key(&self, sid: &str) -> String {
        format!("{}{sid}", self.prefix)
    }

    fn index(&self, user: &str) -> String {
        format!("{}{user}", self.index_prefix)
    }

    /// Bounds a store operation by `limit` and maps its errors.
    async fn within<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or(Err(StoreError::Timeout(limit)))
    }

    /// Bounds a store operation by the timeout.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.within(self.timeout, async { Ok(fut.await?) }).await
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        self.bounded(async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }
}

impl RedisStore {
    /// [`SessionStore::load`], the `attempt`th time.
    async fn load_attempt(
        &self,
        sid: &str,
        touch: Option<&ExpiryPolicy>,
        attempt: u32,
    ) -> Result<Option<Loaded>, StoreError> {
        let cache = self.cache();
        if let Some((cache, touches)) = cache {
            if let Some(hit) = cache.get(sid) {
                let touched = match touch {
                    Some(p) if p.push && cache.touch_due(&hit, p.interval_for(hit.own_ttl)) => {
                        touches.send((sid.to_owned(), p.clone())).is_ok()
                    }
                    _ => false,
                };
                return Ok(Some(Loaded {
                    record: hit.record.clone(),
                    touched,
                    cached: true,
                }));
            }
        }
        let generation = cache.map(|(c, _)| c.generation());
        // On a cluster the user's index lives in another slot: the load script reads and
        // touches the session only, and the index's part follows in a second step (`admit`).
        let cluster = self.is_cluster();
        let cmd = load_command(
            &self.scripts,
            &self.prefix,
            if cluster { "" } else { &self.index_prefix },
            sid,
            touch,
            false,
            !cluster,
        );
        let epoch = self.sentinel.as_ref().map(SentinelConn::epoch);
        let mut conn = self.connection().await?;
        let answer: Option<LoadAnswer> = self
            .bounded(async move {
                match cmd.query_async(&mut conn).await {
                    // After a Redis restart the script cache is empty: load it once, retry.
                    Err(e) if is_noscript(&e) => {
                        redis::cmd("SCRIPT")
                            .arg("LOAD")
                            .arg(LOAD_TOUCH)
                            .query_async::<()>(&mut conn)
                            .await?;
                        cmd.query_async(&mut conn).await
                    }
                    other => other,
                }
            })
            .await?;
        let answer = match (answer, &self.sentinel, epoch) {
            // "No session" from a node the sentinels have demoted, or from a connection
            // replaced since, is no answer: ask the master the sentinels name now.
            (None, Some(s), Some(epoch)) if !self.bounded(s.still_master(epoch)).await? => {
                if attempt == SENTINEL_READS {
                    return Err(StoreError::Redis(
                        (
                            redis::ErrorKind::Io,
                            "the sentinels' master kept changing during the read",
                        )
                            .into(),
                    ));
                }
                return Box::pin(self.load_attempt(sid, touch, attempt + 1)).await;
            }
            (answer, _, _) => answer,
        };
        let Some(answer) = answer else {
            return Ok(None);
        };
        let Some(record) = parse_record(sid, &answer.json) else {
            return Ok(None);
        };
        if cluster && !self.admit(sid, &record, touch, &answer).await? {
            return Ok(None);
        }
        if let (Some((cache, _)), Some(generation)) = (cache, generation) {
            // Keys without a TTL (another writer's `disableTTL`) are not cached: nothing but an
            // invalidation would tell the cache when they end.
            if let Some(remaining) = answer.remaining() {
                let own = match answer.own_ttl {
                    own if own > 0 => Duration::from_secs(own as u64),
                    _ => remaining,
                };
                cache.insert(sid, record.clone(), remaining, own, generation);
            }
        }
        Ok(Some(Loaded {
            record,
            touched: answer.touched,
            cached: false,
        }))
    }
}

/// How often a load asks again when its "no session" may have come from a demoted master.
const SENTINEL_READS: u32 = 3;

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(
        &self,
        sid: &str,
        touch: Option<&ExpiryPolicy>,
    ) -> Result<Option<Loaded>, StoreError> {
        self.load_attempt(sid, touch, 1).await
    }

    async fn save(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: Option<&str>,
        cap: Option<UserCap>,
    ) -> Result<Saved, StoreError> {
        if let (Some(cap), Some(user)) = (cap, user) {
            return self.save_capped(sid, json, ttl, user, cap).await;
        }
        if self.is_cluster() {
            // Two slots: the index first, then the session. A revocation in between finds
            // the session created before it, and the load refuses it.
            self.forget(sid);
            if let Some(u) = user {
                self.reindex(sid, None, Some(u), epoch_ms(SystemTime::now()), ttl)
                    .await?;
            }
            return self
                .run::<()>(
                    redis::cmd("SET")
                        .arg(self.key(sid))
                        .arg(json)
                        .arg("EX")
                        .arg(secs(ttl))
                        .to_owned(),
                )
                .await
                .map(|()| Saved::stored());
        }
        let mut inv = self.scripts.save.key(self.key(sid));
        if let Some(u) = user {
            inv.key(self.index(u));
        }
        inv.arg(json)
            .arg(secs(ttl))
            .arg(epoch_ms(SystemTime::now()))
            .arg(sid);
        self.forget(sid);
        let mut conn = self.connection().await?;
        self.bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|_| Saved::stored())
    }

    async fn destroy(&self, sid: &str, user: Option<&str>) -> Result<(), StoreError> {
        if self.is_cluster() {
            // The session first: once it is gone, the index entry is only a dead one.
            self.forget(sid);
            self.run::<i64>(redis::cmd("DEL").arg(self.key(sid)).to_owned())
                .await?;
            if let Some(u) = user {
                self.run::<i64>(redis::cmd("ZREM").arg(self.index(u)).arg(sid).to_owned())
                    .await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(self.key(sid)).ignore();
        if let Some(u) = user {
            pipe.cmd("ZREM").arg(self.index(u)).arg(sid).ignore();
        }
        self.forget(sid);
        let mut conn = self.connection().await?;
        self.bounded(async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }

    async fn update(&self, sid: &str, f: Rewrite<'_>) -> Result<Option<String>, StoreError> {
        let key = self.key(sid);
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            sid.hash(&mut h);
            h.finish() as usize % UPDATE_LOCKS
        };
        let _turn = self.update_locks[stripe].lock().await;
        self.forget(sid);
        let Some(client) = self.client.as_ref() else {
            // A cluster or a sentinel's master: no WATCH connection of its own to hold.
            return self
                .within(self.timeout, self.update_by_swap(&key, f))
                .await;
        };
        let work = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            for _ in 0..UPDATE_ATTEMPTS {
                if let Some(outcome) = self.update_once(&mut conn, &key, f).await? {
                    return Ok(outcome);
                }
            }
            Err::<Option<String>, StoreError>(StoreError::Contended)
        };
        self.within(self.timeout, work).await
    }

    async fn rename(&self, old: &str, new: &str, user: Option<&str>) -> Result<bool, StoreError> {
        if self.is_cluster() {
            return self.rename_across_slots(old, new, user).await;
        }
        let mut inv = self.scripts.rename.key(self.key(old));
        inv.key(self.key(new));
        if let Some(u) = user {
            inv.key(self.index(u));
        }
        inv.arg(old).arg(new).arg(epoch_ms(SystemTime::now()));
        self.forget(old);
        let mut conn = self.connection().await?;
        self.bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|n| n == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run::<String>(redis::cmd("PING")).await.map(drop)
    }

    async fn reindex(
        &self,
        sid: &str,
        old: Option<&str>,
        new: Option<&str>,
        born_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if let Some(u) = old {
            self.run::<i64>(redis::cmd("ZREM").arg(self.index(u)).arg(sid).to_owned())
                .await?;
        }
        let Some(u) = new else { return Ok(()) };
        let mut inv = self.scripts.reindex.key(self.index(u));
        inv.arg(sid).arg(born_ms).arg(secs(ttl));
        let mut conn = self.connection().await?;
        self.bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(drop)
    }

    async fn maintain(&self) {
        // With sentinels: move to a new master as soon as they name it, cache or not.
        let follow = async {
            match &self.sentinel {
                Some(s) => loop {
                    tokio::time::sleep(SENTINEL_POLL).await;
                    s.follow().await;
                },
                None => std::future::pending::<()>().await,
            }
        };
        tokio::join!(follow, self.maintain_cache());
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
