//! Where sessions live: the embedded [`MemoryStore`] for a single instance, or [`RedisStore`]
//! or [`PostgresStore`] for state shared with other gates and with an express-session fleet
//! (connect-redis or connect-pg-simple). Each speaks two small
//! traits, as Pingora keeps service discovery apart from health checks: [`SessionStore`], the
//! hot path (load with its touch, save, destroy, update, rename), and [`UserIndex`], the
//! per-user view behind the admin API and log out everywhere (list, revoke, count). Records
//! are the raw JSON strings connect-redis writes; parsing is the caller's business so that
//! every store holds exactly the same bytes.

mod cache;
mod memory;
mod postgres;
mod redis;
mod tracking;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::record::{id_prefix, ExpiryPolicy, SessionRecord};

pub use self::cache::{entry_weight as cache_entry_weight, SessionCache};
pub use self::memory::entry_weight as memory_entry_weight;
pub use self::memory::MemoryStore;
pub use self::postgres::{
    redact_pg_url, PostgresSettings, PostgresStore, DEFAULT_POOL_SIZE, DEFAULT_PRUNE_INTERVAL,
};
pub use self::redis::{redact_url, RedisSettings, RedisStore, SentinelSettings};
use crate::metrics::Metrics;

/// What a 503 tells clients to wait before retrying when the store is down.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Which store, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Memory(MemorySettings),
    Redis(RedisSettings),
    Postgres(PostgresSettings),
}

impl StoreSettings {
    /// How long a 503 asks clients to wait while the store is down.
    pub fn retry_after(&self) -> Duration {
        match self {
            StoreSettings::Memory(_) => DEFAULT_RETRY_AFTER,
            StoreSettings::Redis(r) => r.retry_after,
            StoreSettings::Postgres(p) => p.retry_after,
        }
    }
}

/// The `[memory]` settings (the embedded store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySettings {
    /// What the sessions held may weigh together (see [`MemoryStore`]).
    pub max_bytes: u64,
}

/// 256 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// The `[cache]` settings (Redis only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_bytes: u64,
    pub ttl: Duration,
}

/// The store could not answer, or would not take more. This is never "no session": callers
/// answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded store holds all it may (`[memory] max_bytes`): no new session fits.
    #[error("the embedded session store is full ({0} bytes)")]
    Full(u64),
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the session store failed: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// PostgreSQL refused, failed or could not be reached (the message says which).
    #[error("the session store failed: {0}")]
    Postgres(String),
    #[error("too many concurrent writers changed the session; gave up")]
    Contended,
}

/// A session as loaded: parsed once, and shared with the cache that may hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub record: Arc<SessionRecord>,
    /// Its TTL was pushed by this load (or the push is on its way).
    pub touched: bool,
    /// Served by the local cache, without asking the store.
    pub cached: bool,
}

/// Parses a stored record; an unreadable one is reported and counts as no session.
pub(crate) fn parse_record(sid: &str, json: &str) -> Option<Arc<SessionRecord>> {
    match SessionRecord::parse(json) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!(sid = id_prefix(sid), error = %e, "unreadable session record; treating it as no session");
            None
        }
    }
}

/// `session.max_per_user`: how many live sessions one user may hold, and what a login past
/// that does. Counted through the per-user index, so sessions another writer made count once
/// a gate has seen them (they join the index at their first load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCap {
    /// At least 1.
    pub max: usize,
    pub when_full: WhenFull,
}

/// What a login at the cap does (`session.max_per_user_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// `"end_oldest"`: the user's oldest sessions (by when each began) end to make room.
    EndOldest,
    /// `"refuse"`: the new session is not written.
    Refuse,
}

/// What [`SessionStore::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Written; `ended` are the user's sessions the cap ended to make room, oldest first.
    Stored { ended: Vec<String> },
    /// Not written: the user is at the cap and the cap refuses.
    Refused,
}

impl Saved {
    /// Written, nothing ended.
    pub fn stored() -> Self {
        Saved::Stored { ended: Vec::new() }
    }
}

/// A session as listed for its user.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub sid: String,
    pub json: String,
    /// Time left before the store drops it.
    pub ttl: Option<Duration>,
}

/// Rewrites a record inside [`SessionStore::update`]; `None` leaves it as it is.
pub type Rewrite<'a> = &'a (dyn Fn(&str) -> Option<String> + Send + Sync);

/// The hot path: what a request does with its session.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The record for `sid`. With a policy, its TTL is pushed forward in the same round trip
    /// (when it has fallen by more than the policy's interval), and a session past its
    /// absolute timeout is deleted and reported missing.
    async fn load(
        &self,
        sid: &str,
        touch: Option<&ExpiryPolicy>,
    ) -> Result<Option<Loaded>, StoreError>;
    /// Writes a new record with a TTL and adds it to its user's index. With a `cap` (and a
    /// user), the user's live sessions are counted through the index in the same atomic step:
    /// at the cap, the oldest are ended to make room, or the new one is refused (see
    /// [`UserCap`]).
    async fn save(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: Option<&str>,
        cap: Option<UserCap>,
    ) -> Result<Saved, StoreError>;
    async fn destroy(&self, sid: &str, user: Option<&str>) -> Result<(), StoreError>;
    /// Read-modify-write of one record, atomic against concurrent writers, keeping its TTL.
    /// Returns the record written, or `None` when the session is gone or `f` declined.
    async fn update(&self, sid: &str, f: Rewrite<'_>) -> Result<Option<String>, StoreError>;
    /// Moves a session to a new id, keeping its data and TTL; `false` when it is gone.
    async fn rename(&self, old: &str, new: &str, user: Option<&str>) -> Result<bool, StoreError>;
    /// The session's user changed (an update named a new one): it leaves the old user's index
    /// and joins the new one's, scored `born_ms`, the index living at least `ttl`.
    async fn reindex(
        &self,
        sid: &str,
        old: Option<&str>,
        new: Option<&str>,
        born_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Whether the store answers, within its timeout: the readiness probe.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Background work the store needs for as long as the gate runs (expiry sweeps, the
    /// cache's invalidation stream and batched touches); never returns.
    async fn maintain(&self) {
        std::future::pending().await
    }
}

/// The per-user view: a user's sessions, all of them at once.
#[async_trait]
pub trait UserIndex: Send + Sync + 'static {
    /// The user's live sessions (the index is pruned of dead ones on the way).
    async fn user_sessions(&self, user: &str) -> Result<Vec<StoredSession>, StoreError>;
    /// Revokes the user: from now on no session of theirs that began before now is served
    /// (a marker kept `max_life`), and every session in their index is deleted at once. Cheap
    /// enough for the request path; [`sweep_user`](Self::sweep_user) finishes the job.
    async fn revoke_user(&self, user: &str, max_life: Duration) -> Result<Revocation, StoreError>;
    /// After [`revoke_user`](Self::revoke_user): finds and deletes the user's sessions the
    /// index did not know (written by express apps, never seen by a gate) that began before
    /// the revocation; `user_field` is the session field naming the user. May scan the whole
    /// store: never on the request path. Returns their ids.
    async fn sweep_user(
        &self,
        user: &str,
        user_field: &str,
        revocation: &Revocation,
    ) -> Result<Vec<String>, StoreError>;
    /// Live sessions in the store.
    async fn count(&self) -> Result<usize, StoreError>;
}

/// A revocation made by [`UserIndex::revoke_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The sessions deleted through the user's index.
    pub ids: Vec<String>,
    /// When it took effect, ms since the epoch: sessions born at or before it are refused.
    pub at_ms: u64,
}

/// A whole store: both views of one place.
pub trait Store: SessionStore + UserIndex {}

impl<T: SessionStore + UserIndex> Store for T {}

/// Runs [`SessionStore::maintain`] as a Pingora background service.
pub struct Maintenance(pub Arc<dyn Store>);

#[async_trait]
impl pingora::services::background::BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        tokio::select! {
            _ = self.0.maintain() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The store the settings describe. `prefix` names session keys, `index_prefix` the per-user
/// indexes.
pub fn from_settings(
    settings: &StoreSettings,
    prefix: &str,
    index_prefix: &str,
) -> Result<Arc<dyn Store>, StoreError> {
    cached(settings, prefix, index_prefix, None, Arc::default())
}

/// The same, with the local cache in front when `cache` is given (Redis and PostgreSQL).
pub fn cached(
    settings: &StoreSettings,
    prefix: &str,
    index_prefix: &str,
    cache: Option<&CacheSettings>,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match settings {
        StoreSettings::Memory(m) => Arc::new(MemoryStore::with_settings(m, metrics)),
        StoreSettings::Redis(r) => {
            Arc::new(RedisStore::new(r, prefix, index_prefix, cache, metrics)?)
        }
        StoreSettings::Postgres(p) => Arc::new(PostgresStore::new(p, cache, metrics)?),
    })
}

/// Logs store outages once per burst instead of once per request, and says when the store
/// answers again, so that a Redis restart is two log lines, not thousands.
#[derive(Default)]
pub struct OutageLog {
    down: std::sync::atomic::AtomicBool,
    suppressed: std::sync::atomic::AtomicU64,
}

impl OutageLog {
    pub fn failed(&self, err: &StoreError) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.down.swap(true, Relaxed) {
            tracing::error!(error = %err, "session store unavailable; answering 503 on authenticated routes");
        } else {
            self.suppressed.fetch_add(1, Relaxed);
        }
    }

    pub fn succeeded(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.down.load(Relaxed) && self.down.swap(false, Relaxed) {
            let failed = self.suppressed.swap(0, Relaxed) + 1;
            tracing::info!(failed_requests = failed, "session store reachable again");
        }
    }
}
