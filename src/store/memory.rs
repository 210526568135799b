//! The embedded store: a single gate needs no Redis. Expiry, touches, indexes and atomic
//! updates follow the same rules as the Redis store.
//!
//! Expiry is kept in an ordered index of `(deadline, id)`, as mini-redis does: a read checks
//! its own entry's deadline, and a background task ([`SessionStore::maintain`]) drops expired
//! entries from the front of the index every [`SWEEP_EVERY`]. Nothing on the request path
//! scans the map.
//!
//! A good third of the file is its tests: the embedded store must keep every rule the Redis
//! store keeps.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
// Tokio's clock, so that tests can pause and advance time.
use tokio::time::Instant;

use super::{
    parse_record, Loaded, Revocation, Rewrite, Saved, SessionStore, StoreError, StoredSession,
    UserCap, UserIndex, WhenFull,
};
use crate::record::{epoch_ms, ExpiryPolicy, SessionRecord};

/// How often expired records are dropped, so that sessions nobody asks for again do not
/// hold memory.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    json: String,
    /// Parsed once when written; `None` if unreadable.
    record: Option<Arc<SessionRecord>>,
    expires: Instant,
    user: Option<String>,
    /// Order of writing, which breaks ties between sessions that began in the same
    /// millisecond when the cap picks the oldest.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Every entry's deadline, soonest first.
    expiries: BTreeSet<(Instant, String)>,
    /// user -> session ids: the index behind "log out everywhere".
    users: HashMap<String, HashSet<String>>,
    /// The next [`Entry::seq`].
    next_seq: u64,
}

impl Inner {
    fn remove(&mut self, sid: &str) -> Option<Entry> {
        let e = self.map.remove(sid)?;
        self.expiries.remove(&(e.expires, sid.to_owned()));
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
        self.expiries.insert((entry.expires, sid.to_owned()));
        self.map.insert(sid.to_owned(), entry);
    }

    /// Moves an entry's deadline, in the entry and in the index.
    fn set_expiry(&mut self, sid: &str, expires: Instant) {
        if let Some(e) = self.map.get_mut(sid) {
            self.expiries.remove(&(e.expires, sid.to_owned()));
            e.expires = expires;
            self.expiries.insert((expires, sid.to_owned()));
        }
    }

    /// The live entry for `sid`; an expired one is removed on the way.
    fn live(&mut self, sid: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.get(sid).is_some_and(|e| e.expires <= now) {
            self.remove(sid);
        }
        self.map.get_mut(sid)
    }

    /// Makes room for one more session of `user` (other than `sid`) under `cap`: ends their
    /// oldest live sessions (by when each began) so that the new one makes `cap.max`, and
    /// returns their ids; `None` when the cap refuses instead. Expired entries are dropped
    /// on the way and never count.
    fn make_room(
        &mut self,
        user: &str,
        sid: &str,
        cap: UserCap,
        now: Instant,
    ) -> Option<Vec<String>> {
        let ids: Vec<String> = self
            .users
            .get(user)
            .map(|s| s.iter().filter(|id| *id != sid).cloned().collect())
            .unwrap_or_default();
        let mut live: Vec<((u64, u64), String)> = ids
            .into_iter()
            .filter_map(|id| {
                let e = self.live(&id, now)?;
                let born = e.record.as_ref().and_then(|r| r.born_ms()).unwrap_or(0);
                Some(((born, e.seq), id))
            })
            .collect();
        if live.len() < cap.max {
            return Some(Vec::new());
        }
        if cap.when_full == WhenFull::Refuse {
            return None;
        }
        live.sort();
        let over = live.len() + 1 - cap.max;
        let ended: Vec<String> = live.into_iter().take(over).map(|(_, id)| id).collect();
        for id in &ended {
            self.remove(id);
        }
        Some(ended)
    }

    /// Drops every entry whose deadline has passed, soonest first.
    fn sweep(&mut self, now: Instant) {
        while let Some((expires, sid)) = self.expiries.first().cloned() {
            if expires > now {
                break;
            }
            self.remove(&sid);
        }
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
        f(&mut inner, Instant::now())
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
                    cached: false,
                });
            };
            let Some(policy) = touch.filter(|p| p.push) else {
                return Some(Loaded {
                    record,
                    touched: false,
                    cached: false,
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
                        inner.set_expiry(sid, now + ttl);
                    }
                    Some(Loaded {
                        record,
                        touched,
                        cached: false,
                    })
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
        cap: Option<UserCap>,
    ) -> Result<Saved, StoreError> {
        Ok(self.with(|inner, now| {
            // The count, the eviction and the write under one lock: logins racing at the cap
            // take turns, and none sees a count another is about to change.
            let ended = match (cap, user) {
                (Some(cap), Some(user)) => match inner.make_room(user, sid, cap, now) {
                    Some(ended) => ended,
                    None => return Saved::Refused,
                },
                _ => Vec::new(),
            };
            inner.insert(
                sid,
                Entry {
                    json: json.to_owned(),
                    record: SessionRecord::parse(json).ok().map(Arc::new),
                    expires: now + ttl,
                    user: user.map(str::to_owned),
                    seq: inner.next_seq,
                },
            );
            inner.next_seq += 1;
            Saved::Stored { ended }
        }))
    }

    async fn destroy(&self, sid: &str, _user: Option<&str>) -> Result<(), StoreError> {
        self.with(|inner, _| inner.remove(sid));
        Ok(())
    }

    async fn update(&self, sid: &str, f: Rewrite<'_>) -> Result<Option<String>, StoreError> {
        Ok(self.with(|inner, now| {
            let e = inner.live(sid, now)?;
            let new = f(&e.json)?;
            e.record = SessionRecord::parse(&new).ok().map(Arc::new);
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

    async fn reindex(
        &self,
        sid: &str,
        _old: Option<&str>,
        new: Option<&str>,
        _born_ms: u64,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|inner, now| {
            if inner.live(sid, now).is_some() {
                let mut e = inner.remove(sid).expect("live");
                e.user = new.map(str::to_owned);
                inner.insert(sid, e);
            }
        });
        Ok(())
    }

    async fn maintain(&self) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.with(|inner, now| inner.sweep(now));
        }
    }
}

#[async_trait]
impl UserIndex for MemoryStore {
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

    async fn revoke_user(&self, user: &str, _max_life: Duration) -> Result<Revocation, StoreError> {
        let ids = self.with(|inner, _| {
            let ids: Vec<String> = inner
                .users
                .remove(user)
                .map(|s| s.into_iter().collect())
                .unwrap_or_default();
            for sid in &ids {
                inner.remove(sid);
            }
            ids
        });
        Ok(Revocation {
            ids,
            at_ms: epoch_ms(SystemTime::now()),
        })
    }

    /// Every session here was written by this gate, and its index follows every write that
    /// names a user (save, rename, [`reindex`](SessionStore::reindex)), all under one lock:
    /// [`revoke_user`](UserIndex::revoke_user) has already ended them all.
    async fn sweep_user(
        &self,
        _user: &str,
        _user_field: &str,
        _revocation: &Revocation,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.with(|inner, now| {
            // Expired entries the sweep has not reached yet sit at the front of the index.
            let expired = inner.expiries.iter().take_while(|(t, _)| *t <= now).count();
            inner.map.len() - expired
        }))
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
            push: true,
            max_life: Duration::from_secs(80),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_and_touch_extends_them() {
        let store = MemoryStore::new();
        store
            .save("a", "{}", Duration::from_secs(80), None, None)
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
            .save("a", "{}", Duration::from_secs(80), None, None)
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
            .save("a", r#"{"user":"u"}"#, ttl, Some("u"), None)
            .await
            .unwrap();
        store
            .save("b", r#"{"user":"u"}"#, ttl, Some("u"), None)
            .await
            .unwrap();
        store
            .save("c", r#"{"user":"v"}"#, ttl, Some("v"), None)
            .await
            .unwrap();
        assert_eq!(store.user_sessions("u").await.unwrap().len(), 2);
        assert!(store.rename("a", "a2", Some("u")).await.unwrap());
        assert!(!store.rename("a", "a3", Some("u")).await.unwrap());
        let mut ids = store
            .revoke_user("u", Duration::from_secs(60))
            .await
            .unwrap()
            .ids;
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

    #[tokio::test(start_paused = true)]
    async fn the_cap_counts_live_sessions_only_and_ends_the_oldest() {
        let store = MemoryStore::new();
        let refuse = Some(UserCap {
            max: 2,
            when_full: WhenFull::Refuse,
        });
        let end_oldest = Some(UserCap {
            max: 2,
            when_full: WhenFull::EndOldest,
        });
        let rec = r#"{"user":"u","sessiongate":{"created":1}}"#;
        let save = |sid: &'static str, secs: u64, cap| {
            store.save(sid, rec, Duration::from_secs(secs), Some("u"), cap)
        };
        assert_eq!(save("a", 10, refuse).await.unwrap(), Saved::stored());
        assert_eq!(save("b", 60, refuse).await.unwrap(), Saved::stored());
        assert_eq!(save("c", 60, refuse).await.unwrap(), Saved::Refused);
        assert!(store.load("c", None).await.unwrap().is_none());
        // "a" expires: it no longer counts, though no sweep has run.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(save("c", 60, refuse).await.unwrap(), Saved::stored());
        // Same beginning (ms) for all: the order of writing decides which is oldest.
        assert_eq!(
            save("d", 60, end_oldest).await.unwrap(),
            Saved::Stored {
                ended: vec!["b".into()]
            }
        );
        assert!(store.load("b", None).await.unwrap().is_none());
        assert_eq!(store.user_sessions("u").await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_sweep_drops_expired_records_soonest_first() {
        let store = Arc::new(MemoryStore::new());
        for (sid, secs) in [("a", 10), ("b", 20), ("c", 30)] {
            store
                .save(
                    sid,
                    r#"{"user":"u"}"#,
                    Duration::from_secs(secs),
                    Some("u"),
                    None,
                )
                .await
                .unwrap();
        }
        // A touch moves "a" behind "b" in the index.
        store.load("a", Some(&policy(0))).await.unwrap();
        let sweeper = tokio::spawn({
            let store = store.clone();
            async move { store.maintain().await }
        });
        tokio::time::sleep(Duration::from_secs(21)).await;
        {
            let inner = store.inner.lock().unwrap();
            let left: Vec<&str> = inner.map.keys().map(String::as_str).collect();
            assert_eq!(left.len(), 2, "{left:?}: only b was due");
            assert!(!inner.map.contains_key("b"));
            assert_eq!(inner.expiries.len(), 2);
            assert_eq!(inner.users["u"].len(), 2, "the index follows");
        }
        assert_eq!(store.count().await.unwrap(), 2);
        tokio::time::sleep(Duration::from_secs(80)).await;
        assert!(store.inner.lock().unwrap().map.is_empty());
        assert!(store.inner.lock().unwrap().users.is_empty());
        sweeper.abort();
    }
}
