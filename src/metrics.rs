//! The gate's metrics: one Prometheus registry, rendered in the text format by the admin
//! API at `/metrics`.
//!
//! Every label has a bounded set of values: `route` is a route's configured path (never the
//! request's), `status` an HTTP status, `auth` one of the outcomes of
//! [`crate::access_log::Auth`], `upstream` and `server` the configured pools and their
//! resolved addresses, `op` a store operation (`load`, `write`), `reason` one of the gate's
//! refusal codes ([`crate::error::RequestError::refusal`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::upstreams::Pool;

/// Latency buckets, in seconds: from a cache hit (well under a millisecond) to a slow
/// upstream (the default read timeout is 60 s).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

pub struct Metrics {
    registry: Registry,
    /// `sessiongate_requests_total{route,status,auth}`.
    pub requests: IntCounterVec,
    /// `sessiongate_request_duration_seconds{route}`.
    pub request_duration: HistogramVec,
    /// `sessiongate_upstream_duration_seconds{upstream}`.
    pub upstream_duration: HistogramVec,
    /// `sessiongate_store_duration_seconds{op}`: operations that reached the store (a cache
    /// hit is not one).
    pub store_duration: HistogramVec,
    pub sessions_issued: IntCounter,
    pub sessions_destroyed: IntCounter,
    pub sessions_revoked: IntCounter,
    /// Sessions a login past `session.max_per_user` ended (the user's oldest).
    pub sessions_ended_by_cap: IntCounter,
    /// `sessiongate_refusals_total{reason}`: requests refused by a limit or the cross-origin
    /// check, by reason (`too_many_sessions`, `cross_origin`, …).
    pub refusals: IntCounterVec,
    /// `sessiongate_forward_auth_requests_total{edge,status}`: forward-auth answers, by the
    /// endpoint asked (`nginx`, `forwarded`, `envoy`, `none`) and status.
    pub forward_auth: IntCounterVec,
    /// `sessiongate_upstream_server_up{upstream,server}`, read from the pools at each scrape.
    upstream_up: IntGaugeVec,
    /// Access-log lines dropped because stdout did not keep up.
    pub access_log_dropped: IntCounter,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// Keys invalidated by Redis's tracking stream.
    pub cache_invalidations: IntCounter,
    /// Whole-cache drops: the invalidation stream was lost (or Redis flushed).
    pub cache_flushes: IntCounter,
    /// 1 while the cache serves (its invalidation stream is connected).
    pub cache_live: IntGauge,
    pub cache_touches: IntCounter,
    /// What the cached entries weigh together, and how many there are (read at each scrape).
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    /// Misses not cached: the cache was full and the session had not been seen recently.
    pub cache_admissions_refused: IntCounter,
    /// Entries evicted (or refused by moka's TinyLFU) to keep within `max_bytes`.
    pub cache_evictions: IntCounter,
    pub store_errors: IntCounter,
    /// Session values that have no header form, so their identity header was not sent.
    pub identity_refused: IntCounter,
    /// Cross-origin requests `cross_origin = "report"` let through.
    pub cross_origin_reported: IntCounter,
    /// Client connections open now, both protocols.
    pub connections: IntGauge,
    /// Client connections closed at once because `server.max_connections` were open.
    pub connections_refused: IntCounter,
    /// The embedded store: what its sessions weigh together, and how many it holds.
    pub store_bytes: IntGauge,
    pub store_sessions: IntGauge,
    /// Run before each scrape, to read gauges kept elsewhere (the cache's size).
    on_scrape: std::sync::Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let counter =
            |name: &str, help: &str| reg(&registry, IntCounter::new(name, help).expect("valid"));
        let gauge =
            |name: &str, help: &str| reg(&registry, IntGauge::new(name, help).expect("valid"));
        let histogram = |name: &str, help: &str, label: &str| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                    &[label],
                )
                .expect("valid"),
            )
        };
        Self {
            requests: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "sessiongate_requests_total",
                        "Requests answered, by route, status and auth outcome.",
                    ),
                    &["route", "status", "auth"],
                )
                .expect("valid"),
            ),
            request_duration: histogram(
                "sessiongate_request_duration_seconds",
                "Time from the request head to the end of the answer, by route.",
                "route",
            ),
            upstream_duration: histogram(
                "sessiongate_upstream_duration_seconds",
                "Time from the first connection attempt to the end of the upstream's answer (or its failure), by upstream.",
                "upstream",
            ),
            store_duration: histogram(
                "sessiongate_store_duration_seconds",
                "Session store operations on the request path (cache hits excluded), by operation.",
                "op",
            ),
            sessions_issued: counter(
                "sessiongate_sessions_issued_total",
                "Sessions issued at login (X-Session-Issue).",
            ),
            sessions_destroyed: counter(
                "sessiongate_sessions_destroyed_total",
                "Sessions ended by a logout (the gate's logout path or X-Session-Destroy).",
            ),
            sessions_revoked: counter(
                "sessiongate_sessions_revoked_total",
                "Sessions revoked through the admin API.",
            ),
            sessions_ended_by_cap: counter(
                "sessiongate_sessions_ended_by_cap_total",
                "Sessions ended because their user logged in past session.max_per_user (the oldest first).",
            ),
            cross_origin_reported: counter(
                "sessiongate_cross_origin_reported_total",
                "Cross-origin requests with the session cookie let through by cross_origin = \"report\" (refuse would have answered 403).",
            ),
            refusals: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "sessiongate_refusals_total",
                        "Requests refused by a limit or the cross-origin check, by reason.",
                    ),
                    &["reason"],
                )
                .expect("valid"),
            ),
            forward_auth: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "sessiongate_forward_auth_requests_total",
                        "Forward-auth answers, by endpoint and status.",
                    ),
                    &["edge", "status"],
                )
                .expect("valid"),
            ),
            upstream_up: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "sessiongate_upstream_server_up",
                        "1 while an upstream server passes its health check (or has none), else 0.",
                    ),
                    &["upstream", "server"],
                )
                .expect("valid"),
            ),
            access_log_dropped: counter(
                "sessiongate_access_log_dropped_total",
                "Access-log lines dropped because stdout did not keep up.",
            ),
            cache_hits: counter(
                "sessiongate_cache_hits_total",
                "Session loads served by the local cache.",
            ),
            cache_misses: counter(
                "sessiongate_cache_misses_total",
                "Session loads that went to the store.",
            ),
            cache_invalidations: counter(
                "sessiongate_cache_invalidations_total",
                "Cached sessions invalidated by Redis.",
            ),
            cache_flushes: counter(
                "sessiongate_cache_flushes_total",
                "Times the whole cache was dropped.",
            ),
            cache_live: reg(
                &registry,
                IntGauge::new(
                    "sessiongate_cache_live",
                    "1 while the cache's invalidation stream is connected.",
                )
                .expect("valid"),
            ),
            cache_touches: counter(
                "sessiongate_cache_touches_total",
                "Throttled TTL pushes sent for cached sessions.",
            ),
            cache_bytes: gauge(
                "sessiongate_cache_bytes",
                "What the cached sessions weigh together, in bytes (bounded by cache.max_bytes).",
            ),
            cache_entries: gauge("sessiongate_cache_entries", "Sessions in the local cache."),
            cache_admissions_refused: counter(
                "sessiongate_cache_admissions_refused_total",
                "Misses not cached: the cache was full and the session was not seen recently.",
            ),
            cache_evictions: counter(
                "sessiongate_cache_evictions_total",
                "Cached sessions evicted (or not admitted by the cache's TinyLFU) for room.",
            ),
            store_errors: counter(
                "sessiongate_store_errors_total",
                "Store operations that failed or timed out.",
            ),
            identity_refused: counter(
                "sessiongate_identity_values_refused_total",
                "Identity headers not sent because the session value has no header form (objects, nested arrays, unsafe integers).",
            ),
            connections: reg(
                &registry,
                IntGauge::new(
                    "sessiongate_connections",
                    "Client connections open now (HTTP/1 and HTTP/2).",
                )
                .expect("valid"),
            ),
            connections_refused: counter(
                "sessiongate_connections_refused_total",
                "Client connections closed at once because server.max_connections were open.",
            ),
            store_bytes: gauge(
                "sessiongate_store_bytes",
                "The embedded store: what its sessions weigh together, in bytes (bounded by memory.max_bytes).",
            ),
            store_sessions: gauge(
                "sessiongate_store_sessions",
                "The embedded store: sessions it holds (expired ones until the sweep).",
            ),
            on_scrape: Default::default(),
            registry,
        }
    }
}

impl Metrics {
    pub fn inc(counter: &IntCounter) {
        counter.inc();
    }

    /// Runs `hook` before every scrape.
    pub fn on_scrape(&self, hook: Box<dyn Fn() + Send + Sync>) {
        self.on_scrape
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// Counts one answered request on no route (or before one was chosen).
    pub fn request(&self, route: &str, status: u16, auth: &'static str, took: Duration) {
        self.requests
            .with_label_values(&[route, status_label(status).as_ref(), auth])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// The series of the route labelled `route`, resolved now (see [`SeriesCache`]).
    fn route_series(&self, route: &str) -> RouteSeries {
        RouteSeries {
            route: route.into(),
            duration: self.request_duration.with_label_values(&[route]),
            requests: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// The Prometheus text format of every metric; `pools` are the running config's, whose
    /// servers' health is read now.
    pub fn render(&self, pools: &[Arc<Pool>]) -> String {
        for hook in self
            .on_scrape
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            hook();
        }
        // Servers come and go with DNS and reloads: only the current ones are reported.
        self.upstream_up.reset();
        for pool in pools {
            for (server, up) in pool.health() {
                self.upstream_up
                    .with_label_values(&[pool.name.as_str(), server.as_str()])
                    .set(up as i64);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// A status as its label: the common ones without formatting.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        204 => "204".into(),
        302 => "302".into(),
        304 => "304".into(),
        401 => "401".into(),
        403 => "403".into(),
        404 => "404".into(),
        503 => "503".into(),
        _ => status.to_string().into(),
    }
}

/// One route's series: its duration histogram resolved once, and its request counters
/// resolved the first time each `(status, auth)` is seen. Reads take no lock: the counters
/// are an immutable list swapped whole when one is added (a handful per route).
pub struct RouteSeries {
    route: Box<str>,
    duration: Histogram,
    requests: ArcSwap<Vec<(u16, &'static str, IntCounter)>>,
}

impl RouteSeries {
    /// Counts one answered request.
    pub fn request(&self, metrics: &Metrics, status: u16, auth: &'static str, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        let known = self.requests.load();
        if let Some((.., c)) = known.iter().find(|(s, a, _)| *s == status && *a == auth) {
            c.inc();
            return;
        }
        let counter =
            metrics
                .requests
                .with_label_values(&[&self.route, status_label(status).as_ref(), auth]);
        counter.inc();
        self.requests.rcu(|list| {
            let mut list = Vec::clone(list);
            if !list.iter().any(|(s, a, _)| *s == status && *a == auth) {
                list.push((status, auth, counter.clone()));
            }
            list
        });
    }
}

/// The series of each route of one config (a reload starts a new cache), each resolved on
/// the route's first request: the request path finds its counters by the route's index,
/// with no lookup by label.
pub struct SeriesCache {
    routes: Box<[OnceLock<RouteSeries>]>,
    pools: Box<[OnceLock<Histogram>]>,
}

impl SeriesCache {
    pub fn new(routes: usize, pools: usize) -> Self {
        Self {
            routes: (0..routes).map(|_| OnceLock::new()).collect(),
            pools: (0..pools).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Route `index`'s series, labelled `label`.
    pub fn route(&self, metrics: &Metrics, index: usize, label: &str) -> &RouteSeries {
        self.routes[index].get_or_init(|| metrics.route_series(label))
    }

    /// `sessiongate_upstream_duration_seconds` of pool `index`, named `name`.
    pub fn upstream(&self, metrics: &Metrics, index: usize, name: &str) -> &Histogram {
        self.pools[index].get_or_init(|| metrics.upstream_duration.with_label_values(&[name]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, starts: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(starts))
    }

    #[test]
    fn route_series_count_each_status_and_outcome_under_the_routes_label() {
        let m = Metrics::default();
        let cache = SeriesCache::new(2, 1);
        let took = Duration::from_millis(2);
        for (status, auth) in [
            (200, "cache"),
            (200, "cache"),
            (401, "missing"),
            (200, "store"),
        ] {
            cache.route(&m, 1, "/api/").request(&m, status, auth, took);
        }
        cache.route(&m, 0, "/").request(&m, 599, "public", took);
        cache.upstream(&m, 0, "app").observe(0.001);
        let text = m.render(&[]);
        let count = |l: &str| line(&text, l).map(|l| l.rsplit(' ').next().unwrap().to_owned());
        assert_eq!(
            count(r#"sessiongate_requests_total{auth="cache",route="/api/",status="200"}"#)
                .as_deref(),
            Some("2")
        );
        assert_eq!(
            count(r#"sessiongate_requests_total{auth="missing",route="/api/",status="401"}"#)
                .as_deref(),
            Some("1")
        );
        assert_eq!(
            count(r#"sessiongate_requests_total{auth="store",route="/api/",status="200"}"#)
                .as_deref(),
            Some("1")
        );
        assert_eq!(
            count(r#"sessiongate_requests_total{auth="public",route="/",status="599"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            count(r#"sessiongate_request_duration_seconds_count{route="/api/"}"#).as_deref(),
            Some("4")
        );
        assert_eq!(
            count(r#"sessiongate_upstream_duration_seconds_count{upstream="app"}"#).as_deref(),
            Some("1")
        );
        // The unrouted path and the cached one write the same series.
        m.request("/api/", 200, "cache", took);
        let text = m.render(&[]);
        assert!(text
            .contains(r#"sessiongate_requests_total{auth="cache",route="/api/",status="200"} 3"#));
    }
}
