//! The embedded store: a single gate needs no Redis. Expiry, touches, indexes and atomic
//! updates follow the same rules as the Redis store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
// Tokio's clock, so that tests can pause and advance time.
use tokio::time::Instant;

use super::{parse_record, Loaded, Rewrite, SessionStore, StoreError, StoredSession};
use crate::session::{ExpiryPolicy, Session};

/// Expired records are also dropped in bulk this often, so that sessions nobody asks for
/// again do not hold memory until restart.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Entry {
    json: String,
    /// Parsed once when written; `None` if unreadable.
    record: Option<Arc<Session>>,
    expires: Instant,
    user: Option<String>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// user -> session ids: the index behind "log out everywhere".
    users: HashMap<String, HashSet<String>>,
    last_sweep: Option<Instant>,
}

impl Inner {
    fn remove(&mut self, sid: &str) -> Option<Entry> {
        let e = self.map.remove(sid)?;
        if let Some(u) = &e.user {
            if let Some(set) = self.users.get_mut(u) {
                set.remove(sid);
                if set.is_empty() {
                    self.users.remove(u);
                }
            }
        }
        Some(e)
    }

    fn insert(&mut self, sid: &str, entry: Entry) {
        self.remove(sid);
        if let Some(u) = &entry.user {
            self.users
                .entry(u.clone())
                .or_default()
                .insert(sid.to_owned());
        }
        self.map.insert(sid.to_owned(), entry);
    }

    /// The live entry for `sid`; an expired one is removed on the way.
    fn live(&mut self, sid: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.get(sid).is_some_and(|e| e.expires <= now) {
            self.remove(sid);
        }
        self.map.get_mut(sid)
    }
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, Instant) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if inner
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            let dead: Vec<String> = inner
                .map
                .iter()
                .filter(|(_, e)| e.expires <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for sid in dead {
                inner.remove(&sid);
            }
            inner.last_sweep = Some(now);
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
    async fn load(
        &self,
        sid: &str,
        touch: Option<&ExpiryPolicy>,
    ) -> Result<Option<Loaded>, StoreError> {
        Ok(self.with(|inner, now| {
            let e = inner.live(sid, now)?;
            let Some(record) = e.record.clone() else {
                return parse_record(sid, &e.json).map(|record| Loaded {
                    record,
                    touched: false,
                });
            };
            let Some(policy) = touch else {
                return Some(Loaded {
                    record,
                    touched: false,
                });
            };
            match record.touch_ttl(policy, SystemTime::now()) {
                None => {
                    inner.remove(sid);
                    None
                }
                Some(ttl) => {
                    let remaining = e.expires.saturating_duration_since(now);
                    let touched = remaining + policy.interval_for(ttl) <= ttl;
                    if touched {
                        e.expires = now + ttl;
                    }
                    Some(Loaded { record, touched })
                }
            }
        }))
    }

    async fn save(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|inner, now| {
            inner.insert(
                sid,
                Entry {
                    json: json.to_owned(),
                    record: Session::parse(json).ok().map(Arc::new),
                    expires: now + ttl,
                    user: user.map(str::to_owned),
                },
            )
        });
        Ok(())
    }

    async fn destroy(&self, sid: &str, _user: Option<&str>) -> Result<(), StoreError> {
        self.with(|inner, _| inner.remove(sid));
        Ok(())
    }

    async fn update(&self, sid: &str, f: Rewrite<'_>) -> Result<Option<String>, StoreError> {
        Ok(self.with(|inner, now| {
            let e = inner.live(sid, now)?;
            let new = f(&e.json)?;
            e.record = Session::parse(&new).ok().map(Arc::new);
            e.json = new.clone();
            Some(new)
        }))
    }

    async fn rename(&self, old: &str, new: &str, user: Option<&str>) -> Result<bool, StoreError> {
        Ok(self.with(|inner, now| {
            if inner.live(old, now).is_none() {
                return false;
            }
            let mut e = inner.remove(old).expect("live");
            if e.user.is_none() {
                e.user = user.map(str::to_owned);
            }
            inner.insert(new, e);
            true
        }))
    }

    async fn user_sessions(&self, user: &str) -> Result<Vec<StoredSession>, StoreError> {
        Ok(self.with(|inner, now| {
            let ids: Vec<String> = inner
                .users
                .get(user)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            ids.into_iter()
                .filter_map(|sid| {
                    let e = inner.live(&sid, now)?;
                    Some(StoredSession {
                        json: e.json.clone(),
                        ttl: Some(e.expires.saturating_duration_since(now)),
                        sid,
                    })
                })
                .collect()
        }))
    }

    async fn revoke_user(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.with(|inner, _| {
            let ids: Vec<String> = inner
                .users
                .remove(user)
                .map(|s| s.into_iter().collect())
                .unwrap_or_default();
            for sid in &ids {
                inner.map.remove(sid);
            }
            ids
        }))
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.len())
    }

    fn describe(&self) -> String {
        "memory (embedded, this process only)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(interval: u64) -> ExpiryPolicy {
        ExpiryPolicy {
            idle_timeout: Duration::from_secs(80),
            absolute_timeout: None,
            touch_interval: Duration::from_secs(interval),
            user_field: "user".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_and_touch_extends_them() {
        let store = MemoryStore::new();
        store
            .save("a", "{}", Duration::from_secs(80), None)
            .await
            .unwrap();
        assert!(store.load("a", None).await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(50)).await;
        store.load("a", Some(&policy(0))).await.unwrap();
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(
            store.load("a", None).await.unwrap().is_some(),
            "touch pushed expiry forward"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(store.load("a", None).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn touches_are_throttled() {
        let store = MemoryStore::new();
        store
            .save("a", "{}", Duration::from_secs(80), None)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        store.load("a", Some(&policy(30))).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            store.load("a", None).await.unwrap(),
            None,
            "a 20 s drop is under the 30 s interval: no touch"
        );
    }

    #[tokio::test]
    async fn indexes_follow_sessions() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        store
            .save("a", r#"{"user":"u"}"#, ttl, Some("u"))
            .await
            .unwrap();
        store
            .save("b", r#"{"user":"u"}"#, ttl, Some("u"))
            .await
            .unwrap();
        store
            .save("c", r#"{"user":"v"}"#, ttl, Some("v"))
            .await
            .unwrap();
        assert_eq!(store.user_sessions("u").await.unwrap().len(), 2);
        assert!(store.rename("a", "a2", Some("u")).await.unwrap());
        assert!(!store.rename("a", "a3", Some("u")).await.unwrap());
        let mut ids = store.revoke_user("u").await.unwrap();
        ids.sort();
        assert_eq!(ids, ["a2", "b"]);
        assert_eq!(store.count().await.unwrap(), 1);
        let updated = store
            .update("c", &|j| Some(j.replace('v', "w")))
            .await
            .unwrap();
        assert_eq!(updated.as_deref(), Some(r#"{"user":"w"}"#));
        assert_eq!(
            store.update("zz", &|j| Some(j.to_owned())).await.unwrap(),
            None
        );
    }
}
