//! Sessions in Redis, in connect-redis's layout: `SET <prefix><sid> <json> EX <ttl>`. A read
//! and its touch are one round trip (a Lua script that also applies the absolute timeout and
//! keeps the user's index alive). Needs Redis 7.0 or newer (`EXPIRE … NX/GT`).
//!
//! The connection is a multiplexed [`ConnectionManager`], made on first use so that it lives
//! on the runtime of the service using it; it reconnects by itself after Redis comes back.
//! Every command is bounded by the configured timeout. Updates use WATCH/MULTI on a
//! connection of their own, since a multiplexed connection cannot hold a WATCH.
//!
//! Per-user indexes are sorted sets `<index_prefix><user>` of session ids scored by creation
//! time. Their TTL only grows and is pushed with every touch of any of the user's sessions,
//! so an index outlives its sessions and then expires: nothing leaks.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, Script};
use tokio::sync::mpsc;

use super::cache::SessionCache;
use super::tracking::{Tracking, TOUCH_BATCH};
use super::{parse_record, Loaded, Rewrite, SessionStore, StoreError, StoredSession};
use crate::config::runtime::{redact_url, CacheSettings};
use crate::config::RedisSettings;
use crate::metrics::Metrics;
use crate::session::{epoch_ms, ExpiryPolicy};

/// What the load script answers: the record, its TTL left, its own TTL (seconds), and
/// whether it was touched.
type Answer = Option<(String, i64, i64, i64)>;

/// GET, and with a policy: the session's own TTL (cookie.originalMaxAge or the idle
/// timeout), cut by the absolute deadline (expired: DEL, nil); EXPIRE when the TTL has
/// fallen by more than the interval, and the user's index with it (GT: indexes only grow;
/// they got their first TTL when written). Returns `{record, ttl left, own ttl, touched}`
/// (the record is '' when ARGV[8] is 'quiet': a touch only).
const LOAD_TOUCH: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local out = v
if ARGV[8] == 'quiet' then out = '' end
if ARGV[1] == '' then return {out, redis.call('TTL', KEYS[1]), 0, 0} end
local ok, s = pcall(cjson.decode, v)
if not ok or type(s) ~= 'table' then return {out, redis.call('TTL', KEYS[1]), 0, 0} end
local ttl = tonumber(ARGV[1])
local c = s['cookie']
if type(c) == 'table' and type(c['originalMaxAge']) == 'number' and c['originalMaxAge'] > 0 then
  ttl = math.ceil(c['originalMaxAge'] / 1000)
end
local user = s[ARGV[5]]
local idx = nil
if type(user) == 'string' or type(user) == 'number' then idx = ARGV[6] .. tostring(user) end
local abs = tonumber(ARGV[3])
local meta = s['sessiongate']
if abs > 0 and type(meta) == 'table' and type(meta['created']) == 'number' then
  local left = math.floor((meta['created'] + abs * 1000 - tonumber(ARGV[4])) / 1000)
  if left < 1 then
    redis.call('DEL', KEYS[1])
    if idx then redis.call('ZREM', idx, ARGV[7]) end
    return false
  end
  if left < ttl then ttl = left end
end
-- Never more than half the TTL, so an active session is pushed before it runs out.
local interval = math.min(tonumber(ARGV[2]), math.floor(ttl / 2))
if interval > 0 then
  local remaining = redis.call('TTL', KEYS[1])
  if remaining >= 0 and remaining + interval > ttl then return {out, remaining, ttl, 0} end
end
redis.call('EXPIRE', KEYS[1], ttl)
if idx then redis.call('EXPIRE', idx, ttl, 'GT') end
return {out, ttl, ttl, 1}
"#;

/// SET a new session and add it to its user's index (KEYS[2], optional).
const SAVE: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[2] then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[2], 'NX')
  redis.call('EXPIRE', KEYS[2], ARGV[2], 'GT')
end
return 1
"#;

/// RENAME a session to a new id and move it in its user's index (KEYS[3], optional).
const RENAME: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
if KEYS[3] then
  local score = redis.call('ZSCORE', KEYS[3], ARGV[1]) or ARGV[3]
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[3], score, ARGV[2])
  local t = redis.call('TTL', KEYS[2])
  if t > 0 then
    redis.call('EXPIRE', KEYS[3], t, 'NX')
    redis.call('EXPIRE', KEYS[3], t, 'GT')
  end
end
return 1
"#;

/// Delete every session in a user's index, and the index.
const REVOKE_USER: &str = r#"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do redis.call('DEL', ARGV[1] .. id) end
redis.call('DEL', KEYS[1])
return ids
"#;

/// How often an update retries when another gate changed the record under it.
const UPDATE_ATTEMPTS: usize = 16;
/// Updates of one session within this process take turns on one of these locks (by a hash
/// of the id), so that WATCH only ever races other processes, not this one's own requests.
const UPDATE_LOCKS: usize = 64;

pub struct RedisStore {
    client: Client,
    url: String,
    conn: OnceLock<Result<ConnectionManager, String>>,
    prefix: String,
    index_prefix: String,
    timeout: Duration,
    load_touch: Script,
    save: Script,
    rename: Script,
    revoke_user: Script,
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
    resp3: Client,
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
    ) -> Self {
        let cache = cache.map(|c| {
            let cache = Arc::new(SessionCache::new(c, metrics.clone()));
            let (touches, rx) = mpsc::unbounded_channel();
            CacheParts {
                tracking: Arc::new(Tracking {
                    cache: cache.clone(),
                    conn: Mutex::new(None),
                }),
                cache,
                resp3: settings
                    .client_with(redis::ProtocolVersion::RESP3)
                    .expect("validated with the config"),
                touches,
                pending_touches: Mutex::new(Some(rx)),
            }
        });
        Self {
            cache,
            metrics,
            client: settings.client().expect("validated with the config"),
            url: redact_url(&settings.url),
            conn: OnceLock::new(),
            prefix: prefix.to_owned(),
            index_prefix: index_prefix.to_owned(),
            timeout: settings.timeout,
            load_touch: Script::new(LOAD_TOUCH),
            save: Script::new(SAVE),
            rename: Script::new(RENAME),
            revoke_user: Script::new(REVOKE_USER),
            update_locks: (0..UPDATE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
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

    /// Bounds a store operation by the timeout and maps its errors.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Backend(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection()?;
        self.bounded(async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }

    async fn update_once(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        key: &str,
        f: Rewrite<'_>,
    ) -> redis::RedisResult<Option<Option<String>>> {
        redis::cmd("WATCH").arg(key).query_async::<()>(conn).await?;
        let Some(old) = redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(conn)
            .await?
        else {
            redis::cmd("UNWATCH").query_async::<()>(conn).await?;
            return Ok(Some(None));
        };
        let Some(new) = f(&old) else {
            redis::cmd("UNWATCH").query_async::<()>(conn).await?;
            return Ok(Some(None));
        };
        let done: Option<()> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key)
            .arg(&new)
            .arg("KEEPTTL")
            .ignore()
            .query_async(conn)
            .await?;
        // A nil EXEC means another writer got there first: try again on the new record.
        Ok(done.map(|_| Some(new)))
    }
}

/// The load script for one session: EVALSHA with `sha`, or EVAL with the text; `quiet` asks
/// for the touch only.
fn load_command(
    sha: Option<&str>,
    prefix: &str,
    index_prefix: &str,
    sid: &str,
    touch: Option<&ExpiryPolicy>,
    quiet: bool,
) -> Cmd {
    let mut c = match sha {
        Some(sha) => redis::cmd("EVALSHA").arg(sha).to_owned(),
        None => redis::cmd("EVAL").arg(LOAD_TOUCH).to_owned(),
    };
    c.arg(1).arg(format!("{prefix}{sid}"));
    match touch {
        None => c.arg("").arg(0).arg(0).arg(0).arg("").arg("").arg(sid),
        Some(p) => c
            .arg(secs(p.idle_timeout))
            .arg(p.touch_interval.as_secs())
            .arg(p.absolute_timeout.map_or(0, |a| a.as_secs()))
            .arg(epoch_ms(SystemTime::now()))
            .arg(&p.user_field)
            .arg(index_prefix)
            .arg(sid),
    };
    c.arg(if quiet { "quiet" } else { "" });
    c
}

/// Sends the touches cached sessions have due, many per round trip, on the tracking
/// connection (NOLOOP: they do not invalidate this gate's own copies).
async fn send_touches(
    mut rx: mpsc::UnboundedReceiver<(String, ExpiryPolicy)>,
    tracking: Arc<Tracking>,
    prefix: String,
    index_prefix: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(TOUCH_BATCH);
    while rx.recv_many(&mut batch, TOUCH_BATCH).await > 0 {
        let Some(mut conn) = tracking.connection() else {
            // The stream is down, so the cache is off and empty: these touches have no entry
            // to update, and the next load touches in Redis itself.
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        for (sid, policy) in &batch {
            // EVAL: a pipeline cannot fall back from EVALSHA on NOSCRIPT by itself.
            pipe.add_command(load_command(
                None,
                &prefix,
                &index_prefix,
                sid,
                Some(policy),
                true,
            ));
        }
        let results: redis::RedisResult<Vec<Answer>> =
            match tokio::time::timeout(timeout, pipe.query_async(&mut conn)).await {
                Ok(r) => r,
                Err(_) => Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "touch timed out",
                ))),
            };
        match results {
            Ok(results) => {
                for ((sid, _), r) in batch.iter().zip(results) {
                    Metrics::inc(&metrics.cache_touches);
                    tracking.cache.touched(
                        sid,
                        r.map(|(_, left, _, _)| Duration::from_secs(left.max(0) as u64)),
                    );
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "batched touches failed; the sessions are touched on their next load");
                for (sid, _) in &batch {
                    tracking.cache.touched(sid, None);
                }
            }
        }
        batch.clear();
    }
}

/// Whole seconds, rounded up, at least one: Redis TTLs are seconds and 0 would delete.
fn secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(
        &self,
        sid: &str,
        touch: Option<&ExpiryPolicy>,
    ) -> Result<Option<Loaded>, StoreError> {
        let cache = self.cache();
        if let Some((cache, touches)) = cache {
            if let Some(hit) = cache.get(sid) {
                let touched = match touch {
                    Some(p) if cache.touch_due(&hit, p.interval_for(hit.own_ttl)) => {
                        touches.send((sid.to_owned(), p.clone())).is_ok()
                    }
                    _ => false,
                };
                return Ok(Some(Loaded {
                    record: hit.record.clone(),
                    touched,
                }));
            }
        }
        let generation = cache.map(|(c, _)| c.generation());
        let cmd = load_command(
            Some(self.load_touch.get_hash()),
            &self.prefix,
            &self.index_prefix,
            sid,
            touch,
            false,
        );
        let mut conn = self.connection()?;
        let answer: Answer = self
            .bounded(async move {
                match cmd.query_async(&mut conn).await {
                    // After a Redis restart the script cache is empty: load it once, retry.
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
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
        let Some((json, remaining, own, touched)) = answer else {
            return Ok(None);
        };
        let Some(record) = parse_record(sid, &json) else {
            return Ok(None);
        };
        if let (Some((cache, _)), Some(generation)) = (cache, generation) {
            // Keys without a TTL (another writer's `disableTTL`) are not cached: nothing but an
            // invalidation would tell the cache when they end.
            if remaining > 0 {
                let own = if own > 0 { own } else { remaining };
                cache.insert(
                    sid,
                    record.clone(),
                    json.len(),
                    Duration::from_secs(remaining as u64),
                    Duration::from_secs(own as u64),
                    generation,
                );
            }
        }
        Ok(Some(Loaded {
            record,
            touched: touched == 1,
        }))
    }

    async fn save(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut inv = self.save.key(self.key(sid));
        if let Some(u) = user {
            inv.key(self.index(u));
        }
        inv.arg(json)
            .arg(secs(ttl))
            .arg(epoch_ms(SystemTime::now()))
            .arg(sid);
        self.forget(sid);
        let mut conn = self.connection()?;
        self.bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(drop)
    }

    async fn destroy(&self, sid: &str, user: Option<&str>) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(self.key(sid)).ignore();
        if let Some(u) = user {
            pipe.cmd("ZREM").arg(self.index(u)).arg(sid).ignore();
        }
        self.forget(sid);
        let mut conn = self.connection()?;
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
        let work = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            for _ in 0..UPDATE_ATTEMPTS {
                if let Some(outcome) = self.update_once(&mut conn, &key, f).await? {
                    return Ok(outcome);
                }
            }
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "too many concurrent writers",
            )))
        };
        self.bounded(work).await
    }

    async fn rename(&self, old: &str, new: &str, user: Option<&str>) -> Result<bool, StoreError> {
        let mut inv = self.rename.key(self.key(old));
        inv.key(self.key(new));
        if let Some(u) = user {
            inv.key(self.index(u));
        }
        inv.arg(old).arg(new).arg(epoch_ms(SystemTime::now()));
        self.forget(old);
        let mut conn = self.connection()?;
        self.bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|n| n == 1)
    }

    async fn user_sessions(&self, user: &str) -> Result<Vec<StoredSession>, StoreError> {
        let index = self.index(user);
        let ids: Vec<String> = self
            .run(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1).to_owned())
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in &ids {
            pipe.cmd("GET")
                .arg(self.key(sid))
                .cmd("PTTL")
                .arg(self.key(sid));
        }
        let mut conn = self.connection()?;
        let rows: Vec<(Option<String>, i64)> = {
            let flat: Vec<redis::Value> = self
                .bounded(async move { pipe.query_async(&mut conn).await })
                .await?;
            flat.chunks(2)
                .map(|c| {
                    let json =
                        redis::from_redis_value::<Option<String>>(c[0].clone()).unwrap_or(None);
                    let ttl = redis::from_redis_value::<i64>(c[1].clone()).unwrap_or(-2);
                    (json, ttl)
                })
                .collect()
        };
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (sid, (json, ttl)) in ids.into_iter().zip(rows) {
            match json {
                Some(json) => live.push(StoredSession {
                    sid,
                    json,
                    ttl: (ttl >= 0).then(|| Duration::from_millis(ttl as u64)),
                }),
                None => dead.push(sid),
            }
        }
        if !dead.is_empty() {
            self.run::<i64>(redis::cmd("ZREM").arg(&index).arg(&dead).to_owned())
                .await?;
        }
        Ok(live)
    }

    async fn revoke_user(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut inv = self.revoke_user.key(self.index(user));
        inv.arg(&self.prefix);
        let mut conn = self.connection()?;
        let ids = self
            .bounded(async move { inv.invoke_async::<Vec<String>>(&mut conn).await })
            .await?;
        for sid in &ids {
            self.forget(sid);
        }
        Ok(ids)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        // connect-redis's `length`: SCAN over the prefix, as KEYS would block the server.
        let pattern = format!("{}*", self.prefix.replace('*', "\\*").replace('?', "\\?"));
        let mut conn = self.connection()?;
        let work = async move {
            let mut cursor = 0u64;
            let mut n = 0usize;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                n += keys.len();
                if next == 0 {
                    return Ok(n);
                }
                cursor = next;
            }
        };
        // A count may scan a large keyspace: allow it more time than one request.
        match tokio::time::timeout(self.timeout * 20, work).await {
            Ok(r) => r.map_err(|e: redis::RedisError| StoreError::Backend(e.to_string())),
            Err(_) => Err(StoreError::Timeout(self.timeout * 20)),
        }
    }

    async fn maintain(&self) {
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
        let stream =
            parts
                .tracking
                .clone()
                .run(parts.resp3.clone(), self.prefix.clone(), self.timeout);
        let touches = send_touches(
            rx,
            parts.tracking.clone(),
            self.prefix.clone(),
            self.index_prefix.clone(),
            self.timeout,
            self.metrics.clone(),
        );
        tokio::join!(stream, touches);
    }

    fn describe(&self) -> String {
        format!(
            "redis {} (prefix `{}`, timeout {:?})",
            self.url, self.prefix, self.timeout
        )
    }
}
