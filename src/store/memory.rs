//! The embedded store: a single gate needs no Redis. Expiry follows the same TTL rules.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock, so that tests can pause and advance time.
use tokio::time::Instant;

use async_trait::async_trait;

use super::{SessionStore, StoreError};

/// Expired records are also dropped in bulk this often, so that sessions nobody asks for
/// again do not hold memory until restart.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Entry {
    json: String,
    expires: Instant,
}

struct Inner {
    map: HashMap<String, Entry>,
    last_sweep: Instant,
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, Instant) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(inner.last_sweep) >= SWEEP_EVERY {
            inner.map.retain(|_, e| e.expires > now);
            inner.last_sweep = now;
        }
        f(&mut inner, now)
    }

    /// Live records, for tests and diagnostics.
    pub fn len(&self) -> usize {
        self.with(|inner, now| inner.map.values().filter(|e| e.expires > now).count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, sid: &str, touch: Option<Duration>) -> Result<Option<String>, StoreError> {
        Ok(self.with(|inner, now| match inner.map.get_mut(sid) {
            Some(e) if e.expires > now => {
                if let Some(ttl) = touch {
                    e.expires = now + ttl;
                }
                Some(e.json.clone())
            }
            Some(_) => {
                inner.map.remove(sid);
                None
            }
            None => None,
        }))
    }

    async fn expire(&self, sid: &str, ttl: Duration) -> Result<(), StoreError> {
        self.with(|inner, now| {
            if let Some(e) = inner.map.get_mut(sid).filter(|e| e.expires > now) {
                e.expires = now + ttl;
            }
        });
        Ok(())
    }

    async fn save(&self, sid: &str, json: &str, ttl: Duration) -> Result<(), StoreError> {
        self.with(|inner, now| {
            inner.map.insert(
                sid.to_owned(),
                Entry {
                    json: json.to_owned(),
                    expires: now + ttl,
                },
            )
        });
        Ok(())
    }

    async fn destroy(&self, sid: &str) -> Result<(), StoreError> {
        self.with(|inner, _| inner.map.remove(sid));
        Ok(())
    }

    fn describe(&self) -> String {
        "memory (embedded, this process only)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn records_expire_and_touch_extends_them() {
        let store = MemoryStore::new();
        store
            .save("a", "{}", Duration::from_secs(80))
            .await
            .unwrap();
        assert_eq!(store.load("a", None).await.unwrap().as_deref(), Some("{}"));
        tokio::time::advance(Duration::from_secs(50)).await;
        store
            .load("a", Some(Duration::from_secs(80)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(
            store.load("a", None).await.unwrap().is_some(),
            "touch pushed expiry forward"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(store.load("a", None).await.unwrap(), None);
        store
            .save("b", "{}", Duration::from_secs(60))
            .await
            .unwrap();
        store.destroy("b").await.unwrap();
        assert!(store.is_empty());
    }
}
