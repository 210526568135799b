//! The local session cache in front of Redis: bounded in bytes, short-lived, and coherent
//! across gates through Redis itself (see [`super::tracking`]). It serves only while the
//! invalidation stream is connected; losing the stream drops everything, so a cache never
//! serves what it may have missed the invalidation of.
//!
//! **What an entry weighs** is what it holds on the heap, counted from its structure: the
//! parsed record ([`SessionRecord::heap_bytes`]: every string, array and map serde_json
//! made, rounded to the allocator's size classes), its id, and [`ENTRY_OVERHEAD`], the
//! fixed part (the `Cached` and the record in their `Arc`s, moka's copy of the key in its
//! `Arc`, its entry, deque nodes and hash-table slot), measured with a counting allocator
//! (`tests/it/memory_bound.rs`, which fails when the weight is more than 25 % off what an
//! entry really costs). The raw JSON is not kept: the record is parsed once, and the JSON
//! text's length says little about it (a 140-byte session costs some 2.5 KB parsed).
//!
//! **Admission.** A working set larger than the cache makes most loads misses; each would pay
//! an insertion that evicts (or that moka's TinyLFU refuses) an entry that was never going to
//! be read again. So once the cache is full, an entry is admitted on its second sight only:
//! a [`Doorkeeper`] (a small Bloom filter, as Caffeine's) remembers the ids of recent misses,
//! and forgets them all once it has remembered as many as the cache holds entries. A session
//! read again within that window is admitted; one read once per cycle never costs an
//! insertion. While the cache has room, everything is admitted.
//!
//! **Invalidations for keys not held.** The tracking stream is BCAST by prefix, so Redis
//! pushes every change to a session key whether this gate holds it or not; there is no
//! per-key tracking to stop for an evicted key. Each such push costs one hash lookup that
//! finds nothing (and a generation bump), and pushes only follow writes: loads write
//! nothing but throttled touches (`touch_interval`, a minute with the cache).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::CacheSettings;
use crate::metrics::Metrics;
use crate::record::{alloc_bytes, SessionRecord};

/// Counted for every entry besides its record's heap and its id's text, in bytes: the
/// `Arc<Cached>`, the `Arc<SessionRecord>`, moka's `Arc` of the key, its value entry and
/// bookkeeping, its deque nodes, its hash-table slot and frequency-sketch share. Measured
/// with mimalloc (`tests/it/memory_bound.rs`: 20 000 entries of four shapes, moka's
/// housekeeping run; what an entry holds less its record's heap and its id's text was
/// 470-478 bytes).
pub const ENTRY_OVERHEAD: u64 = 472;

/// One cached session record.
pub struct Cached {
    pub record: Arc<SessionRecord>,
    /// What the entry costs in memory, for the bound (see the module's comment).
    weight: u32,
    /// When Redis drops the key, as last known: ms after the cache's base instant.
    expires_ms: AtomicU64,
    /// The TTL a touch gives this session (its idle timeout).
    pub own_ttl: Duration,
    touch_pending: AtomicBool,
}

/// What an entry for `sid` holding `record` costs: see the module's comment.
pub fn entry_weight(sid: &str, record: &SessionRecord) -> u64 {
    (alloc_bytes(sid.len()) + record.heap_bytes()) as u64 + ENTRY_OVERHEAD
}

/// Admission on second sight: a Bloom filter of the ids that missed recently.
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    /// Ids remembered since the last reset.
    remembered: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl Doorkeeper {
    /// Room for `keys` ids at 16 bits each (two probes: about 1.4 % false positives full).
    fn new(keys: u64) -> Self {
        let words = (keys.max(1024) * 16).div_ceil(64) as usize;
        Self {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            remembered: AtomicU64::new(0),
            hasher: Default::default(),
        }
    }

    /// Whether `sid` was seen since the last reset; remembers it either way. Forgets all once
    /// `window` ids are remembered.
    fn seen(&self, sid: &str, window: u64) -> bool {
        let h = self.hasher.hash_one(sid);
        let n = self.bits.len() as u64 * 64;
        let mut seen = true;
        for probe in [h % n, (h >> 32 ^ h.rotate_left(17)) % n] {
            let (word, bit) = ((probe / 64) as usize, 1u64 << (probe % 64));
            seen &= self.bits[word].fetch_or(bit, Relaxed) & bit != 0;
        }
        if !seen && self.remembered.fetch_add(1, Relaxed) + 1 >= window {
            self.clear();
        }
        seen
    }

    fn clear(&self) {
        for w in self.bits.iter() {
            w.store(0, Relaxed);
        }
        self.remembered.store(0, Relaxed);
    }
}

pub struct SessionCache {
    entries: moka::sync::Cache<String, Arc<Cached>>,
    max_bytes: u64,
    doorkeeper: Doorkeeper,
    /// Bumped by every invalidation, so that a load racing one does not cache what it read.
    generation: AtomicU64,
    live: AtomicBool,
    base: Instant,
    metrics: Arc<Metrics>,
}

impl SessionCache {
    pub fn new(settings: &CacheSettings, metrics: Arc<Metrics>) -> Self {
        let evictions = metrics.cache_evictions.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|_: &String, v: &Arc<Cached>| v.weight)
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.inc();
                }
            })
            .time_to_live(settings.ttl)
            .build();
        Self {
            entries,
            max_bytes: settings.max_bytes,
            // Sized for the most entries the cache could hold (the smallest entry weighs a
            // little more than ENTRY_OVERHEAD).
            doorkeeper: Doorkeeper::new(settings.max_bytes / ENTRY_OVERHEAD),
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

    /// Caches what the store returned, unless an invalidation arrived since `generation`, or
    /// the cache is full and this is the first recent sight of `sid` (see the module's
    /// comment).
    pub fn insert(
        &self,
        sid: &str,
        record: Arc<SessionRecord>,
        remaining: Duration,
        own_ttl: Duration,
        generation: u64,
    ) {
        if !self.live.load(SeqCst) || remaining.is_zero() {
            return;
        }
        let weight = entry_weight(sid, &record);
        if self.entries.weighted_size() + weight > self.max_bytes
            && !self
                .doorkeeper
                .seen(sid, self.entries.entry_count().max(64))
        {
            Metrics::inc(&self.metrics.cache_admissions_refused);
            return;
        }
        let entry = Arc::new(Cached {
            record,
            weight: weight.min(u32::MAX as u64) as u32,
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
        self.doorkeeper.clear();
        Metrics::inc(&self.metrics.cache_flushes);
    }

    /// What the entries weigh together, in bytes (moka's count, as of its last housekeeping).
    pub fn bytes(&self) -> u64 {
        self.entries.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Lets moka finish its pending work (admissions, evictions), for exact counts.
    pub fn settle(&self) {
        self.entries.run_pending_tasks();
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
            Duration::from_secs(10),
            Duration::from_secs(60),
            c.generation(),
        );
        c.set_live(false);
        assert!(c.get("a").is_none());
        c.insert(
            "a",
            rec(),
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

    #[test]
    fn a_full_cache_admits_a_session_on_its_second_sight_only() {
        let metrics = Arc::new(Metrics::default());
        let weight = entry_weight("s00", &rec());
        let c = SessionCache::new(
            &CacheSettings {
                max_bytes: weight * 10,
                ttl: Duration::from_secs(30),
            },
            metrics.clone(),
        );
        c.set_live(true);
        let put = |sid: &str| {
            let ttl = Duration::from_secs(60);
            c.insert(sid, rec(), ttl, ttl, c.generation());
            c.settle();
        };
        for i in 0..10 {
            put(&format!("s{i:02}"));
        }
        assert_eq!((c.entry_count(), c.bytes()), (10, weight * 10));
        assert_eq!(
            metrics.cache_admissions_refused.get(),
            0,
            "room: all admitted"
        );
        put("new");
        assert!(c.get("new").is_none(), "full: a first sight is not cached");
        assert_eq!(metrics.cache_admissions_refused.get(), 1);
        assert_eq!(c.entry_count(), 10, "and evicts nothing");
        put("new");
        assert_eq!(
            metrics.cache_admissions_refused.get(),
            1,
            "seen before: offered to moka"
        );
        assert!(c.bytes() <= weight * 10, "never over the bound");
    }
}
