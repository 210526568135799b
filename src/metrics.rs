//! Counters in Prometheus text format, served by the admin API at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
pub struct Metrics {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Keys invalidated by Redis's tracking stream.
    pub cache_invalidations: AtomicU64,
    /// Whole-cache drops: the invalidation stream was lost (or Redis flushed).
    pub cache_flushes: AtomicU64,
    /// 1 while the cache serves (its invalidation stream is connected).
    pub cache_live: AtomicU64,
    pub cache_touches: AtomicU64,
    pub store_errors: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 7] = [
            (
                "sessiongate_cache_hits_total",
                "counter",
                "Session loads served by the local cache.",
                &self.cache_hits,
            ),
            (
                "sessiongate_cache_misses_total",
                "counter",
                "Session loads that went to the store.",
                &self.cache_misses,
            ),
            (
                "sessiongate_cache_invalidations_total",
                "counter",
                "Cached sessions invalidated by Redis.",
                &self.cache_invalidations,
            ),
            (
                "sessiongate_cache_flushes_total",
                "counter",
                "Times the whole cache was dropped.",
                &self.cache_flushes,
            ),
            (
                "sessiongate_cache_live",
                "gauge",
                "1 while the cache's invalidation stream is connected.",
                &self.cache_live,
            ),
            (
                "sessiongate_cache_touches_total",
                "counter",
                "Throttled TTL pushes sent for cached sessions.",
                &self.cache_touches,
            ),
            (
                "sessiongate_store_errors_total",
                "counter",
                "Store operations that failed or timed out.",
                &self.store_errors,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        out
    }
}
