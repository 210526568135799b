//! Where sessions live. The gate speaks to one [`SessionStore`]: the embedded [`MemoryStore`]
//! for a single instance, or [`RedisStore`] for state shared with other gates and with an
//! express-session fleet. Records are the raw JSON strings connect-redis writes; parsing is
//! the caller's business so that every store holds exactly the same bytes.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
use crate::config::StoreSettings;

/// The store could not answer. This is never "no session": callers answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the session store failed: {0}")]
    Backend(String),
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The record for `sid`, with its TTL reset to `touch` in the same round trip when given.
    async fn load(&self, sid: &str, touch: Option<Duration>) -> Result<Option<String>, StoreError>;
    /// Resets the TTL of an existing record; a missing record stays missing.
    async fn expire(&self, sid: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Writes the record with a TTL.
    async fn save(&self, sid: &str, json: &str, ttl: Duration) -> Result<(), StoreError>;
    async fn destroy(&self, sid: &str) -> Result<(), StoreError>;
    /// A short name for logs and `check`.
    fn describe(&self) -> String;
}

pub fn from_settings(settings: &StoreSettings, prefix: &str) -> Arc<dyn SessionStore> {
    match settings {
        StoreSettings::Memory => Arc::new(MemoryStore::new()),
        StoreSettings::Redis(r) => Arc::new(RedisStore::new(r, prefix)),
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
