//! The local session cache in front of Redis: bounded in bytes, short-lived, and coherent
//! across gates through Redis itself (see [`super::tracking`]). It serves only while the
//! invalidation stream is connected; losing the stream drops everything, so a cache never
//! serves what it may have missed the invalidation of.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::CacheSettings;
use crate::metrics::Metrics;
use crate::record::SessionRecord;

/// Counted against `max_bytes` for every entry besides its JSON: key, bookkeeping, moka.
const ENTRY_OVERHEAD: u64 = 160;

/// One cached session record.
pub struct Cached {
    pub record: Arc<SessionRecord>,
    /// Size of the stored JSON, for the memory bound.
    bytes: u64,
    /// When Redis drops the key, as last known: ms after the cache's base instant.
    expires_ms: AtomicU64,
    /// The TTL a touch gives this session (its idle timeout).
    pub own_ttl: Duration,
    touch_pending: AtomicBool,
}

pub struct SessionCache {
    entries: moka::sync::Cache<String, Arc<Cached>>,
    /// Bumped by every invalidation, so that a load racing one does not cache what it read.
    generation: AtomicU64,
    live: AtomicBool,
    base: Instant,
    metrics: Arc<Metrics>,
}

impl SessionCache {
    pub fn new(settings: &CacheSettings, metrics: Arc<Metrics>) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|k: &String, v: &Arc<Cached>| {
                (k.len() as u64 + v.bytes + ENTRY_OVERHEAD).min(u32::MAX as u64) as u32
            })
            .time_to_live(settings.ttl)
            .build();
        Self {
            entries,
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            base: Instant::now(),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// A live cached record, or `None` (a miss).
    pub fn get(&self, sid: &str) -> Option<Arc<Cached>> {
        if !self.live.load(SeqCst) {
            return None;
        }
        let hit = self
            .entries
            .get(sid)
            .filter(|c| c.expires_ms.load(Relaxed) > self.now_ms());
        Metrics::inc(if hit.is_some() {
            &self.metrics.cache_hits
        } else {
            &self.metrics.cache_misses
        });
        hit
    }

    /// Take this before reading the store; pass it to [`insert`](Self::insert).
    pub fn generation(&self) -> u64 {
        self.generation.load(SeqCst)
    }

    /// Caches what the store returned, unless an invalidation arrived since `generation`.
    pub fn insert(
        &self,
        sid: &str,
        record: Arc<SessionRecord>,
        bytes: usize,
        remaining: Duration,
        own_ttl: Duration,
        generation: u64,
    ) {
        if !self.live.load(SeqCst) || remaining.is_zero() {
            return;
        }
        let entry = Arc::new(Cached {
            record,
            bytes: bytes as u64,
            expires_ms: AtomicU64::new(self.now_ms() + remaining.as_millis() as u64),
            own_ttl,
            touch_pending: AtomicBool::new(false),
        });
        self.entries.insert(sid.to_owned(), entry);
        // Checked after inserting: an invalidation that raced the store read is undone here.
        if self.generation.load(SeqCst) != generation {
            self.entries.invalidate(sid);
        }
    }

    /// Whether a touch of this entry is due (its TTL has fallen by `interval` or more); at
    /// most one is in flight per entry.
    pub fn touch_due(&self, c: &Cached, interval: Duration) -> bool {
        let remaining = c.expires_ms.load(Relaxed).saturating_sub(self.now_ms());
        c.own_ttl.as_millis() as u64 >= remaining + interval.as_millis() as u64
            && !c.touch_pending.swap(true, SeqCst)
    }

    /// Records the outcome of a touch.
    pub fn touched(&self, sid: &str, remaining: Option<Duration>) {
        if let Some(c) = self.entries.get(sid) {
            match remaining {
                Some(r) => c
                    .expires_ms
                    .store(self.now_ms() + r.as_millis() as u64, Relaxed),
                None => self.entries.invalidate(sid),
            }
            c.touch_pending.store(false, SeqCst);
        }
    }

    pub fn invalidate(&self, sid: &str) {
        self.generation.fetch_add(1, SeqCst);
        self.entries.invalidate(sid);
    }

    /// Called for every key in Redis's invalidation stream.
    pub fn invalidated_by_redis(&self, sid: &str) {
        Metrics::inc(&self.metrics.cache_invalidations);
        self.invalidate(sid);
    }

    pub fn clear(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.entries.invalidate_all();
        Metrics::inc(&self.metrics.cache_flushes);
    }

    /// Serve only while the invalidation stream is up; going down drops everything.
    pub fn set_live(&self, live: bool) {
        if !live {
            self.live.store(false, SeqCst);
            self.clear();
        } else {
            self.clear();
            self.live.store(true, SeqCst);
        }
        self.metrics.cache_live.set(live as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Arc<SessionRecord> {
        Arc::new(SessionRecord::parse("{}").unwrap())
    }

    fn cache() -> SessionCache {
        let c = SessionCache::new(
            &CacheSettings {
                max_bytes: 1 << 20,
                ttl: Duration::from_secs(30),
            },
            Arc::default(),
        );
        c.set_live(true);
        c
    }

    #[tokio::test(start_paused = true)]
    async fn serves_until_expiry_or_invalidation() {
        let c = cache();
        let g = c.generation();
        c.insert(
            "a",
            rec(),
            2,
            Duration::from_secs(10),
            Duration::from_secs(60),
            g,
        );
        assert!(c.get("a").is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(c.get("a").is_none(), "past the TTL Redis gave it");
        c.insert(
            "b",
            rec(),
            2,
            Duration::from_secs(10),
            Duration::from_secs(60),
            c.generation(),
        );
        c.invalidated_by_redis("b");
        assert!(c.get("b").is_none());
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let c = cache();
        let g = c.generation();
        c.invalidated_by_redis("a"); // arrives while the store read is in flight
        c.insert(
            "a",
            rec(),
            2,
            Duration::from_secs(10),
            Duration::from_secs(60),
            g,
        );
        assert!(c.get("a").is_none());
    }

    #[test]
    fn losing_the_stream_drops_everything() {
        let c = cache();
        c.insert(
            "a",
            rec(),
            2,
            Duration::from_secs(10),
            Duration::from_secs(60),
            c.generation(),
        );
        c.set_live(false);
        assert!(c.get("a").is_none());
        c.insert(
            "a",
            rec(),
            2,
            Duration::from_secs(10),
            Duration::from_secs(60),
            c.generation(),
        );
        assert!(
            c.get("a").is_none(),
            "nothing is cached while the stream is down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn touches_are_due_once_per_interval() {
        let c = cache();
        c.insert(
            "a",
            rec(),
            2,
            Duration::from_secs(600),
            Duration::from_secs(600),
            c.generation(),
        );
        let e = c.get("a").unwrap();
        assert!(!c.touch_due(&e, Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(c.touch_due(&e, Duration::from_secs(60)));
        assert!(
            !c.touch_due(&e, Duration::from_secs(60)),
            "one in flight at a time"
        );
        c.touched("a", Some(Duration::from_secs(600)));
        assert!(!c.touch_due(&e, Duration::from_secs(60)));
    }
}
