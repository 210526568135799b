//! Sessions in PostgreSQL, in connect-pg-simple's layout: one row per session in
//! `session(sid varchar primary key, sess json, expire timestamp(6))` with its
//! `IDX_session_expire` index, `sess` the same JSON connect-redis stores. An express fleet on
//! connect-pg-simple and the gate share the table row for row; nothing changes on their side.
//!
//! **connect-pg-simple's rules, kept:** `$now` is the writer's clock rounded up to the second
//! (never the database's); a read ignores rows whose `expire` has passed; a write is its
//! upsert with `expire = to_timestamp(ceil(now + ttl))`; a touch updates `expire` only; a
//! destroy deletes; a row whose `sess` does not parse is deleted; expired rows are pruned
//! every `prune_interval` (15 minutes, randomised to 50-150 % per run, as it does). Every
//! query casts (`sess::text`, `$1::text::json`, `expire::timestamptz`), so tables migrated to
//! `jsonb` / `timestamptz` keep working.
//!
//! **Per user** (log out everywhere, `session.max_per_user`, the admin API), rows are found
//! by the user field itself: `(sess ->> '<user_field>') = $1`, which the expression index
//! `IDX_session_user` (created with `create_user_index`, or by hand) turns into an index
//! lookup. So a revocation is one `DELETE … RETURNING sid` that reaches every session of the
//! user whoever wrote it, an express app included, at once: nothing to stamp, no marker, no
//! sweep. The cost is one more index entry per row version (every write and touch, since a
//! touch of an indexed `expire` is never a HOT update anyway) and the index's size, about the
//! size of the user ids. A user id is the field's text as PostgreSQL's `->>` renders it:
//! strings as they are, integers as their digits (a number stored as `42.0` is not user
//! `42`).
//!
//! **The local cache** is kept coherent by a trigger (`create_notify_trigger`) that sends
//! `pg_notify` with the id of every row deleted, renamed or whose `sess` is rewritten, and a
//! `LISTEN` connection of the gate's own ([`listen`]) that evicts: the cache serves only
//! while that connection is up and answering, and is emptied when it is lost. Without the
//! trigger, entries live at most [`NO_TRIGGER_CACHE_TTL`].
//!
//! The parts: [`settings`] (the pool and TLS), [`sql`] (every query), [`listen`] (the
//! invalidations, the batched touches and the pruning).

mod listen;
mod settings;
pub(crate) mod sql;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, PoolError};
use tokio::sync::{mpsc, OnceCell};

pub use self::settings::{
    redact_pg_url, PostgresSettings, DEFAULT_POOL_SIZE, DEFAULT_PRUNE_INTERVAL,
};
use self::sql::Names;
use super::cache::SessionCache;
use super::{
    parse_record, CacheSettings, Loaded, Revocation, Rewrite, Saved, SessionStore, StoreError,
    StoredSession, UserCap, UserIndex, WhenFull,
};
use crate::metrics::Metrics;
use crate::record::{epoch_ms, id_prefix, ExpiryPolicy, SessionRecord};

/// Without the notify trigger nothing tells a gate that a row changed: its cached copy is
/// served for at most this long.
pub const NO_TRIGGER_CACHE_TTL: Duration = Duration::from_secs(1);
/// How often preparing the table (index, trigger) is tried again after it failed.
const EXTRAS_RETRY: Duration = Duration::from_secs(2);

pub struct PostgresStore {
    pool: Pool,
    settings: PostgresSettings,
    names: Names,
    q: Queries,
    /// The table checked (and made, with `create_table`).
    ready: OnceCell<()>,
    /// The user index and the notify trigger made when asked to, and the index checked.
    extras: OnceCell<()>,
    cache: Option<CacheParts>,
    metrics: Arc<Metrics>,
}

/// The queries, built once.
struct Queries {
    get: String,
    set: String,
    touch: String,
    touch_many: String,
    destroy: String,
    destroy_if: String,
    destroy_many: String,
    get_for_update: String,
    rewrite: String,
    rename: String,
    user_sessions: String,
    revoke: String,
    count: String,
    prune: String,
}

impl Queries {
    fn new(n: &Names) -> Self {
        Self {
            get: n.get(),
            set: n.set(),
            touch: n.touch(),
            touch_many: n.touch_many(),
            destroy: n.destroy(),
            destroy_if: n.destroy_if(),
            destroy_many: n.destroy_many(),
            get_for_update: n.get_for_update(),
            rewrite: n.rewrite(),
            rename: n.rename(),
            user_sessions: n.user_sessions(),
            revoke: n.revoke(),
            count: n.count(),
            prune: n.prune(),
        }
    }
}

/// A touch a cached session has due: its id and the TTL it gets.
type Touch = (String, Duration);

struct CacheParts {
    cache: Arc<SessionCache>,
    touches: mpsc::UnboundedSender<Touch>,
    pending_touches: Mutex<Option<mpsc::UnboundedReceiver<Touch>>>,
}

/// Seconds since the epoch, as PostgreSQL's `to_timestamp` takes them.
fn epoch_s(t: SystemTime) -> f64 {
    epoch_ms(t) as f64 / 1000.0
}

/// connect-pg-simple's `$now`: the clock rounded up to the second.
fn now_s(t: SystemTime) -> f64 {
    epoch_ms(t).div_ceil(1000) as f64
}

/// The `expire` a session gets for `ttl` from `now`: `ceil(now + ttl)` in seconds.
fn expire_s(now: SystemTime, ttl: Duration) -> f64 {
    (epoch_ms(now) + ttl.as_millis() as u64).div_ceil(1000) as f64
}

/// Time left from `now` to `expire` (seconds since the epoch).
fn left(expire: f64, now: SystemTime) -> Duration {
    Duration::from_secs_f64((expire - epoch_s(now)).max(0.0))
}

impl From<tokio_postgres::Error> for StoreError {
    /// The server's message and SQLSTATE, or the client's error and its cause; never the
    /// server's DETAIL, which may quote row values (session ids).
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(db), _) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            (None, Some(cause)) => format!("{e}: {cause}"),
            (None, None) => e.to_string(),
        })
    }
}

impl PostgresStore {
    /// `settings` were validated with the config. With `cache`, loads are served from a
    /// local cache, kept coherent through the notify trigger (or short-lived without it).
    pub fn new(
        settings: &PostgresSettings,
        cache: Option<&CacheSettings>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let pool = settings.pool().map_err(StoreError::Postgres)?;
        let names = settings.names();
        let cache = cache.map(|c| {
            let mut c = c.clone();
            if !settings.create_notify_trigger {
                c.ttl = c.ttl.min(NO_TRIGGER_CACHE_TTL);
            }
            let cache = Arc::new(SessionCache::new(&c, metrics.clone()));
            // Without the trigger there is no stream to wait for: the short TTL is the bound.
            if !settings.create_notify_trigger {
                cache.set_live(true);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            CacheParts {
                cache,
                touches: tx,
                pending_touches: Mutex::new(Some(rx)),
            }
        });
        Ok(Self {
            pool,
            q: Queries::new(&names),
            names,
            settings: settings.clone(),
            ready: OnceCell::new(),
            extras: OnceCell::new(),
            cache,
            metrics,
        })
    }

    /// Bounds a store operation by the timeout.
    async fn within<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.settings.timeout;
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or(Err(StoreError::Timeout(limit)))
    }

    /// A pooled connection, once the table is known to be there.
    async fn client(&self) -> Result<Object, StoreError> {
        self.ready.get_or_try_init(|| self.ensure_table()).await?;
        self.pooled().await
    }

    async fn pooled(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => StoreError::Timeout(self.settings.timeout),
            PoolError::Backend(e) => e.into(),
            e => StoreError::Postgres(e.to_string()),
        })
    }

    /// Checks the table and makes it with `create_table` (connect-pg-simple's `table.sql`:
    /// an empty table, quick), in one transaction under an advisory lock, so that gates
    /// starting together make it once.
    async fn ensure_table(&self) -> Result<(), StoreError> {
        let n = &self.names;
        let mut client = self.pooled().await?;
        let tx = client.transaction().await?;
        tx.execute(n.lock_user(), &[&n.schema_lock_key()]).await?;
        let exists: bool = tx
            .query_one(n.table_exists(), &[&n.qualified])
            .await?
            .get(0);
        if !exists {
            if !self.settings.create_table {
                return Err(StoreError::Postgres(format!(
                    "the session table {} does not exist (create it with connect-pg-simple's table.sql, or set [postgres] create_table = true)",
                    n.qualified
                )));
            }
            tx.batch_execute(&n.create_table()).await?;
            tracing::info!(table = %n.qualified, "created the session table");
        }
        tx.commit().await?;
        Ok(())
    }

    /// What the gate adds to the table when asked to, off the request path and without its
    /// timeout, since an index on a large table takes a while: the user index, built
    /// `CONCURRENTLY` so that writers are not held up meanwhile, and the notify trigger (in
    /// a transaction under the advisory lock). Then warns when no valid user index is there.
    async fn add_extras(&self) -> Result<(), StoreError> {
        let n = &self.names;
        self.ready.get_or_try_init(|| self.ensure_table()).await?;
        let mut client = self.pooled().await?;
        if self.settings.create_user_index {
            client.batch_execute(&n.create_user_index()).await?;
        }
        if self.settings.create_notify_trigger {
            let tx = client.transaction().await?;
            tx.execute(n.lock_user(), &[&n.schema_lock_key()]).await?;
            tx.batch_execute(&n.create_notify_trigger()).await?;
            tx.commit().await?;
        }
        let valid: Option<bool> = client
            .query_opt(n.user_index_valid(), &[&n.qualified, &n.user_index_name()])
            .await?
            .map(|r| r.get(0));
        match valid {
            Some(true) => {}
            Some(false) => tracing::warn!(
                table = %n.qualified,
                index = %n.user_index_name(),
                "the user index is invalid (a concurrent build failed): per-user lookups scan the table until it is dropped and built again"
            ),
            None => tracing::warn!(
                table = %n.qualified,
                index = %n.user_index_name(),
                "no index on the user field: log out everywhere, session.max_per_user and the admin API scan the whole table (set [postgres] create_user_index = true)"
            ),
        }
        Ok(())
    }

    /// [`add_extras`](Self::add_extras) until it succeeds (once per process), trying again
    /// every few seconds; also awaited by the cache's listener, which needs the trigger.
    pub(super) async fn extras(&self) {
        let mut logged = false;
        loop {
            match self.extras.get_or_try_init(|| self.add_extras()).await {
                Ok(()) => return,
                Err(e) if !logged => {
                    tracing::warn!(error = %e, table = %self.names.qualified, "could not prepare the session table (index, trigger); trying again");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(EXTRAS_RETRY).await;
        }
    }

    /// Drops a session from the local cache at once, ahead of the trigger's notification.
    fn forget(&self, sid: &str) {
        if let Some(parts) = &self.cache {
            parts.cache.invalidate(sid);
        }
    }

    /// A session served by the local cache, when it holds one that may still be served.
    fn cached(&self, sid: &str, touch: Option<&ExpiryPolicy>) -> Option<Loaded> {
        let parts = self.cache.as_ref()?;
        let hit = parts.cache.get(sid)?;
        let touched = match touch {
            Some(p) if p.push && parts.cache.touch_due(&hit, p.interval_for(hit.own_ttl)) => {
                match hit.record.touch_ttl(p, SystemTime::now()) {
                    Some(ttl) => parts.touches.send((sid.to_owned(), ttl)).is_ok(),
                    None => {
                        // Past its absolute timeout: the store load deletes it.
                        parts.cache.touched(sid, None);
                        return None;
                    }
                }
            }
            _ => false,
        };
        Some(Loaded {
            record: hit.record.clone(),
            touched,
            cached: true,
        })
    }

    /// Deletes a record whose `sess` does not parse, as connect-pg-simple does, unless it was
    /// rewritten meanwhile.
    async fn destroy_unreadable(&self, client: &Object, sid: &str, json: &str) {
        let stmt = client.prepare_cached(&self.q.destroy_if).await;
        if let Ok(stmt) = stmt {
            if let Err(e) = client.execute(&stmt, &[&sid, &json]).await {
                tracing::debug!(sid = id_prefix(sid), error = %e, "could not delete an unreadable session");
            }
        }
        self.forget(sid);
    }

    async fn load_from_store(
        &self,
        sid: &str,
        touch: Option<&ExpiryPolicy>,
    ) -> Result<Option<Loaded>, StoreError> {
        let generation = self.cache.as_ref().map(|p| p.cache.generation());
        let client = self.client().await?;
        let now = SystemTime::now();
        let stmt = client.prepare_cached(&self.q.get).await?;
        let Some(row) = client.query_opt(&stmt, &[&sid, &now_s(now)]).await? else {
            return Ok(None);
        };
        let (json, expire): (String, f64) = (row.get(0), row.get(1));
        let Some(record) = parse_record(sid, &json) else {
            self.destroy_unreadable(&client, sid, &json).await;
            return Ok(None);
        };
        let mut remaining = left(expire, now);
        let mut touched = false;
        if let Some(policy) = touch.filter(|p| p.push) {
            let Some(ttl) = record.touch_ttl(policy, now) else {
                // Past its absolute timeout.
                let stmt = client.prepare_cached(&self.q.destroy).await?;
                client.execute(&stmt, &[&sid]).await?;
                self.forget(sid);
                return Ok(None);
            };
            if remaining + policy.interval_for(ttl) <= ttl {
                let stmt = client.prepare_cached(&self.q.touch).await?;
                if client
                    .query_opt(&stmt, &[&expire_s(now, ttl), &sid])
                    .await?
                    .is_none()
                {
                    return Ok(None);
                }
                touched = true;
                remaining = ttl;
            } else {
                remaining = remaining.min(ttl);
            }
        }
        if let (Some(parts), Some(generation)) = (&self.cache, generation) {
            let own = touch.map_or(remaining, |p| record.ttl(p.idle_timeout));
            parts
                .cache
                .insert(sid, record.clone(), remaining, own, generation);
        }
        Ok(Some(Loaded {
            record,
            touched,
            cached: false,
        }))
    }

    /// [`SessionStore::save`] under `session.max_per_user`: the user's live sessions counted
    /// and the oldest ended (or the login refused) in the same transaction as the write, under
    /// a lock on the user, so that concurrent logins on any gate take turns.
    async fn save_capped(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: &str,
        cap: UserCap,
    ) -> Result<Saved, StoreError> {
        let mut client = self.client().await?;
        let now = SystemTime::now();
        let tx = client.transaction().await?;
        tx.execute(
            self.names.lock_user(),
            &[&format!("sessiongate user {} {user}", self.names.qualified)],
        )
        .await?;
        let rows = tx
            .query(&self.q.user_sessions, &[&user, &now_s(now)])
            .await?;
        let mut live: Vec<(u64, String)> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .filter(|(id, _)| id != sid)
            .map(|(id, json)| {
                let born = SessionRecord::parse(&json)
                    .ok()
                    .and_then(|r| r.born_ms())
                    .unwrap_or(0);
                (born, id)
            })
            .collect();
        let mut ended = Vec::new();
        if live.len() >= cap.max {
            if cap.when_full == WhenFull::Refuse {
                return Ok(Saved::Refused);
            }
            live.sort();
            let over = live.len() + 1 - cap.max;
            ended = live.into_iter().take(over).map(|(_, id)| id).collect();
            tx.execute(&self.q.destroy_many, &[&ended]).await?;
        }
        tx.execute(&self.q.set, &[&json, &expire_s(now, ttl), &sid])
            .await?;
        tx.commit().await?;
        for id in &ended {
            self.forget(id);
        }
        self.forget(sid);
        Ok(Saved::Stored { ended })
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn load(
        &self,
        sid: &str,
        touch: Option<&ExpiryPolicy>,
    ) -> Result<Option<Loaded>, StoreError> {
        if let Some(hit) = self.cached(sid, touch) {
            return Ok(Some(hit));
        }
        self.within(self.load_from_store(sid, touch)).await
    }

    async fn save(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: Option<&str>,
        cap: Option<UserCap>,
    ) -> Result<Saved, StoreError> {
        self.forget(sid);
        if let (Some(cap), Some(user)) = (cap, user) {
            return self
                .within(self.save_capped(sid, json, ttl, user, cap))
                .await;
        }
        self.within(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(&self.q.set).await?;
            client
                .execute(&stmt, &[&json, &expire_s(SystemTime::now(), ttl), &sid])
                .await?;
            self.forget(sid);
            Ok(Saved::stored())
        })
        .await
    }

    async fn destroy(&self, sid: &str, _user: Option<&str>) -> Result<(), StoreError> {
        self.forget(sid);
        self.within(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(&self.q.destroy).await?;
            client.execute(&stmt, &[&sid]).await?;
            Ok(())
        })
        .await
    }

    async fn update(&self, sid: &str, f: Rewrite<'_>) -> Result<Option<String>, StoreError> {
        self.forget(sid);
        let out = self
            .within(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let Some(row) = tx
                    .query_opt(&self.q.get_for_update, &[&sid, &now_s(SystemTime::now())])
                    .await?
                else {
                    return Ok(None);
                };
                let old: String = row.get(0);
                let Some(new) = f(&old) else {
                    return Ok(None);
                };
                tx.execute(&self.q.rewrite, &[&new, &sid]).await?;
                tx.commit().await?;
                Ok(Some(new))
            })
            .await;
        self.forget(sid);
        out
    }

    async fn rename(&self, old: &str, new: &str, _user: Option<&str>) -> Result<bool, StoreError> {
        self.forget(old);
        let n = self
            .within(async {
                let client = self.client().await?;
                let stmt = client.prepare_cached(&self.q.rename).await?;
                Ok(client
                    .execute(&stmt, &[&old, &new, &now_s(SystemTime::now())])
                    .await?)
            })
            .await?;
        self.forget(old);
        Ok(n == 1)
    }

    /// Nothing to do: the user index is on the record's own user field, so the update that
    /// named the new user has already moved the session.
    async fn reindex(
        &self,
        _sid: &str,
        _old: Option<&str>,
        _new: Option<&str>,
        _born_ms: u64,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.within(async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    async fn maintain(&self) {
        tokio::join!(self.extras(), self.prune(), self.maintain_cache());
    }
}

#[async_trait]
impl UserIndex for PostgresStore {
    async fn user_sessions(&self, user: &str) -> Result<Vec<StoredSession>, StoreError> {
        self.within(async {
            let client = self.client().await?;
            let now = SystemTime::now();
            let stmt = client.prepare_cached(&self.q.user_sessions).await?;
            let rows = client.query(&stmt, &[&user, &now_s(now)]).await?;
            Ok(rows
                .iter()
                .map(|r| StoredSession {
                    sid: r.get(0),
                    json: r.get(1),
                    ttl: Some(left(r.get(2), now)),
                })
                .collect())
        })
        .await
    }

    /// One `DELETE` through the user index ends every session naming the user, whoever wrote
    /// it: nothing is left for [`sweep_user`](UserIndex::sweep_user).
    async fn revoke_user(&self, user: &str, _max_life: Duration) -> Result<Revocation, StoreError> {
        let at_ms = epoch_ms(SystemTime::now());
        let ids: Vec<String> = self
            .within(async {
                let client = self.client().await?;
                let stmt = client.prepare_cached(&self.q.revoke).await?;
                let rows = client.query(&stmt, &[&user]).await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .await?;
        for id in &ids {
            self.forget(id);
        }
        Ok(Revocation { ids, at_ms })
    }

    async fn sweep_user(
        &self,
        _user: &str,
        _user_field: &str,
        _revocation: &Revocation,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.within(async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(&self.q.count).await?;
            let n: i64 = client
                .query_one(&stmt, &[&now_s(SystemTime::now())])
                .await?
                .get(0);
            Ok(n.max(0) as usize)
        })
        .await
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_rounded_up_to_the_second_as_connect_pg_simple_does() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_400);
        assert_eq!(now_s(t), 1001.0);
        assert_eq!(expire_s(t, Duration::from_secs(60)), 1061.0);
        assert_eq!(expire_s(t, Duration::from_millis(600)), 1001.0);
        assert_eq!(left(1010.0, t), Duration::from_millis(9_600));
        assert_eq!(left(900.0, t), Duration::ZERO);
    }
}
