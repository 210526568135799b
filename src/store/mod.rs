//! Where sessions live. The gate speaks to one [`SessionStore`]: the embedded [`MemoryStore`]
//! for a single instance, or [`RedisStore`] for state shared with other gates and with an
//! express-session fleet. Records are the raw JSON strings connect-redis writes; parsing is
//! the caller's business so that every store holds exactly the same bytes.

mod cache;
mod memory;
mod redis;
mod tracking;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::session::{id_prefix, ExpiryPolicy, Session};

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
use crate::config::runtime::CacheSettings;
use crate::config::StoreSettings;
use crate::metrics::Metrics;

/// The store could not answer. This is never "no session": callers answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the session store failed: {0}")]
    Backend(String),
}

/// A session as loaded: parsed once, and shared with the cache that may hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub record: Arc<Session>,
    /// Its TTL was pushed by this load (or the push is on its way).
    pub touched: bool,
}

/// Parses a stored record; an unreadable one is reported and counts as no session.
pub(crate) fn parse_record(sid: &str, json: &str) -> Option<Arc<Session>> {
    match Session::parse(json) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!(sid = id_prefix(sid), error = %e, "unreadable session record; treating it as no session");
            None
        }
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
    /// Writes a new record with a TTL and adds it to its user's index.
    async fn save(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn destroy(&self, sid: &str, user: Option<&str>) -> Result<(), StoreError>;
    /// Read-modify-write of one record, atomic against concurrent writers, keeping its TTL.
    /// Returns the record written, or `None` when the session is gone or `f` declined.
    async fn update(&self, sid: &str, f: Rewrite<'_>) -> Result<Option<String>, StoreError>;
    /// Moves a session to a new id, keeping its data and TTL; `false` when it is gone.
    async fn rename(&self, old: &str, new: &str, user: Option<&str>) -> Result<bool, StoreError>;
    /// The user's live sessions (the index is pruned of dead ones on the way).
    async fn user_sessions(&self, user: &str) -> Result<Vec<StoredSession>, StoreError>;
    /// Deletes every session of the user at once; returns their ids.
    async fn revoke_user(&self, user: &str) -> Result<Vec<String>, StoreError>;
    /// Live sessions in the store.
    async fn count(&self) -> Result<usize, StoreError>;
    /// Background work the store needs for as long as the gate runs (the cache's
    /// invalidation stream and batched touches); never returns.
    async fn maintain(&self) {
        std::future::pending().await
    }
    /// A short name for logs and `check`.
    fn describe(&self) -> String;
}

/// Runs [`SessionStore::maintain`] as a Pingora background service.
pub struct Maintenance(pub Arc<dyn SessionStore>);

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
) -> Arc<dyn SessionStore> {
    cached(settings, prefix, index_prefix, None, Arc::default())
}

/// The same, with the local cache in front when `cache` is given (Redis only).
pub fn cached(
    settings: &StoreSettings,
    prefix: &str,
    index_prefix: &str,
    cache: Option<&CacheSettings>,
    metrics: Arc<Metrics>,
) -> Arc<dyn SessionStore> {
    match settings {
        StoreSettings::Memory => Arc::new(MemoryStore::new()),
        StoreSettings::Redis(r) => {
            Arc::new(RedisStore::new(r, prefix, index_prefix, cache, metrics))
        }
    }
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
