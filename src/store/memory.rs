//! The embedded store: a single gate needs no Redis. Expiry, touches, indexes and atomic
//! updates follow the same rules as the Redis store.
//!
//! Expiry is kept in an ordered index of `(deadline, id)`, as mini-redis does: a read checks
//! its own entry's deadline, and a background task ([`SessionStore::maintain`]) drops expired
//! entries from the front of the index every [`SWEEP_EVERY`]. Nothing on the request path
//! scans the map.
//!
//! **The bound** (`[memory] max_bytes`): every entry is weighed by what it holds on the heap,
//! counted the way the cache counts ([`entry_weight`]): its JSON, its parsed record, its id
//! (kept three times: the map, the expiry index, the user's index), its user, and a fixed
//! part measured with a counting allocator (`tests/it/memory_bound.rs`, which fails when the
//! weight is more than 25 % off). When a new session would not fit, expired ones are swept
//! first; if it still does not fit, it is refused ([`StoreError::Full`]: the client gets 503
//! `store_full` with `Retry-After`). Nothing is ever evicted to make room: an eviction would
//! be a logout nobody asked for. Sessions that exist keep working; an update that would
//! grow the store past the bound is refused the same way (the session keeps what it had),
//! while one that shrinks or keeps its size always passes, and so do renames (a regenerate)
//! and a change of user.
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
    parse_record, Loaded, MemorySettings, Revocation, Rewrite, Saved, SessionStore, StoreError,
    StoredSession, UserCap, UserIndex, WhenFull,
};
use crate::metrics::Metrics;
use crate::record::{alloc_bytes, epoch_ms, ExpiryPolicy, SessionRecord};

/// How often expired records are dropped, so that sessions nobody asks for again do not
/// hold memory.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Counted for every entry besides the text of its id (three copies), JSON and user and its
/// record's heap, in bytes: the map's slot for the id and the [`Entry`] (its share of a
/// table at most 7/8 full, doubled as it grows), the `Arc<SessionRecord>`, the expiry
/// index's B-tree share and the user's set slot. Measured with mimalloc
/// (`tests/it/memory_bound.rs`: 20 000 sessions of four shapes: 428-437 bytes).
pub const ENTRY_OVERHEAD: usize = 432;

/// What an entry costs: see the module's comment.
pub fn entry_weight(
    sid: &str,
    json: &str,
    record: Option<&SessionRecord>,
    user: Option<&str>,
) -> u64 {
    let id = alloc_bytes(sid.len());
    let ids = if user.is_some() { 3 * id } else { 2 * id };
    (ids + alloc_bytes(json.len())
        + record.map_or(0, SessionRecord::heap_bytes)
        + user.map_or(0, |u| alloc_bytes(u.len()))
        + ENTRY_OVERHEAD) as u64
}

struct Entry {
    json: String,
    /// Parsed once when written; `None` if unreadable.
    record: Option<Arc<SessionRecord>>,
    expires: Instant,
    user: Option<String>,
    /// Order of writing, which breaks ties between sessions that began in the same
    /// millisecond when the cap picks the oldest.
    seq: u64,
    /// What it costs, for the bound.
    weight: u64,
}

impl Entry {
    fn new(sid: &str, json: String, expires: Instant, user: Option<String>, seq: u64) -> Self {
        let record = SessionRecord::parse(&json).ok().map(Arc::new);
        let weight = entry_weight(sid, &json, record.as_deref(), user.as_deref());
        Entry {
            json,
            record,
            expires,
            user,
            seq,
            weight,
        }
    }

    /// The same entry under another id or user: reweighed.
    fn moved(mut self, sid: &str) -> Self {
        self.weight = entry_weight(
            sid,
            &self.json,
            self.record.as_deref(),
            self.user.as_deref(),
        );
        self
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// What the entries weigh together.
    bytes: u64,
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
        self.bytes -= e.weight;
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
        self.bytes += entry.weight;
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

pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_bytes: u64,
    /// Set while new sessions are refused, so that the log says it once per episode.
    full: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// With the default bound, and metrics of its own.
    pub fn new() -> Self {
        Self::with_settings(&MemorySettings::default(), Arc::default())
    }

    pub fn with_settings(settings: &MemorySettings, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Mutex::default(),
            max_bytes: settings.max_bytes,
            full: Default::default(),
            metrics,
        }
    }

    /// What the sessions held weigh together, in bytes, and how many there are.
    pub fn usage(&self) -> (u64, usize) {
        self.with(|inner, _| (inner.bytes, inner.map.len()))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, Instant) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut inner, Instant::now());
        self.metrics.store_bytes.set(inner.bytes as i64);
        self.metrics.store_sessions.set(inner.map.len() as i64);
        out
    }

    /// Whether `grow` more bytes fit, sweeping expired entries first if they do not; logs
    /// when the store fills up and when it has room again.
    fn fits(&self, inner: &mut Inner, now: Instant, grow: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if inner.bytes + grow > self.max_bytes {
            inner.sweep(now);
        }
        let fits = inner.bytes + grow <= self.max_bytes;
        if fits && self.full.load(Relaxed) && self.full.swap(false, Relaxed) {
            tracing::info!("embedded session store has room again");
        } else if !fits && !self.full.swap(true, Relaxed) {
            tracing::warn!(
                max_bytes = self.max_bytes,
                sessions = inner.map.len(),
                "embedded session store full ([memory] max_bytes): refusing new sessions with 503 store_full until some end"
            );
        }
        fits
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
        self.with(|inner, now| {
            let seq = inner.next_seq;
            let entry = Entry::new(
                sid,
                json.to_owned(),
                now + ttl,
                user.map(str::to_owned),
                seq,
            );
            let replaced = inner.map.get(sid).map_or(0, |e| e.weight);
            // A full store refuses before the cap ends anything: a refused login ends no
            // session.
            if !self.fits(inner, now, entry.weight.saturating_sub(replaced)) {
                return Err(StoreError::Full(self.max_bytes));
            }
            // The count, the eviction and the write under one lock: logins racing at the cap
            // take turns, and none sees a count another is about to change.
            let ended = match (cap, user) {
                (Some(cap), Some(user)) => match inner.make_room(user, sid, cap, now) {
                    Some(ended) => ended,
                    None => return Ok(Saved::Refused),
                },
                _ => Vec::new(),
            };
            inner.insert(sid, entry);
            inner.next_seq += 1;
            Ok(Saved::Stored { ended })
        })
    }

    async fn destroy(&self, sid: &str, _user: Option<&str>) -> Result<(), StoreError> {
        self.with(|inner, _| inner.remove(sid));
        Ok(())
    }

    async fn update(&self, sid: &str, f: Rewrite<'_>) -> Result<Option<String>, StoreError> {
        self.with(|inner, now| {
            let Some(e) = inner.live(sid, now) else {
                return Ok(None);
            };
            let Some(new) = f(&e.json) else {
                return Ok(None);
            };
            let (expires, user, old, seq) = (e.expires, e.user.clone(), e.weight, e.seq);
            let entry = Entry::new(sid, new.clone(), expires, user, seq);
            if entry.weight > old && !self.fits(inner, now, entry.weight - old) {
                return Err(StoreError::Full(self.max_bytes));
            }
            inner.bytes = inner.bytes - old + entry.weight;
            *inner.map.get_mut(sid).expect("live") = entry;
            Ok(Some(new))
        })
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
            inner.insert(new, e.moved(new));
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
                inner.insert(sid, e.moved(sid));
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

    #[tokio::test(start_paused = true)]
    async fn at_its_bound_the_store_refuses_new_sessions_and_evicts_none() {
        let json = r#"{"user":"u"}"#;
        let weight = entry_weight("s00", json, SessionRecord::parse(json).ok().as_ref(), None);
        let metrics = Arc::new(Metrics::default());
        let store = MemoryStore::with_settings(
            &MemorySettings {
                max_bytes: weight * 3,
            },
            metrics.clone(),
        );
        let ttl = Duration::from_secs(60);
        for sid in ["s00", "s01"] {
            store.save(sid, json, ttl, None, None).await.unwrap();
        }
        store.save("s02", json, ttl / 2, None, None).await.unwrap();
        assert_eq!(store.usage(), (weight * 3, 3));
        assert_eq!(metrics.store_bytes.get() as u64, weight * 3);
        assert_eq!(metrics.store_sessions.get(), 3);
        assert!(matches!(
            store.save("s03", json, ttl, None, None).await,
            Err(StoreError::Full(_))
        ));
        for sid in ["s00", "s01", "s02"] {
            assert!(store.load(sid, None).await.unwrap().is_some(), "{sid} kept");
        }
        // Rewriting a session in place fits; growing one past the bound does not.
        store.save("s00", json, ttl, None, None).await.unwrap();
        assert!(matches!(
            store
                .update("s01", &|_| Some(format!(
                    r#"{{"user":"u","x":"{}"}}"#,
                    "x".repeat(64)
                )))
                .await,
            Err(StoreError::Full(_))
        ));
        assert_eq!(
            store
                .load("s01", None)
                .await
                .unwrap()
                .unwrap()
                .record
                .pointer("/x"),
            None
        );
        assert!(store
            .update("s01", &|_| Some("{}".into()))
            .await
            .unwrap()
            .is_some());
        // An expired session makes room even before the sweep.
        store.save("s01", json, ttl, None, None).await.unwrap();
        tokio::time::advance(ttl / 2 + Duration::from_secs(1)).await;
        store.save("s03", json, ttl, None, None).await.unwrap();
        assert_eq!(store.usage(), (weight * 3, 3));
        // A logout frees its share.
        store.destroy("s00", None).await.unwrap();
        store.save("s04", json, ttl, None, None).await.unwrap();
        assert!(store.rename("s04", "s05", None).await.unwrap());
        assert_eq!(store.usage(), (weight * 3, 3));
    }
}
