//! The bench's options, all from the environment (see the list in main.rs): one place that
//! reads them, checks them and gives their defaults.

use std::path::PathBuf;
use std::time::Duration;

pub struct Opts {
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub client_threads: usize,
    pub rows: Vec<String>,
    pub rolling: bool,
    pub out: PathBuf,
    pub time_limit: Duration,
    /// Sessions in the working-set rows.
    pub working_set: usize,
    /// Interleaved rounds of the head-to-head rows ([`crate::rounds`]).
    pub rounds: usize,
    /// Measured seconds and warm-up seconds per point of the growth curves (`curve-*`).
    pub curve_duration: Duration,
    pub curve_warmup: Duration,
}

pub const ALL_ROWS: &[&str] = &[
    "upstream",
    "nginx",
    "pingora",
    "public",
    "public-log",
    "auth-nocache",
    "auth-cache",
    "assert-cached",
    "assert-bound",
    "assert-bound-eddsa",
    "pg-nocache",
    "pg-cache",
    "ws-nocache-cycle",
    "ws-cache-cycle",
    "ws-nocache-zipf",
    "ws-cache-zipf",
    "express",
    "express-defaults",
    "fa-nginx",
    "fa-nginx-nocache",
    "fa-express",
    "invalidation",
    "curve-routes",
    "curve-sessions",
    "curve-connections",
    "curve-size",
];

impl Opts {
    pub fn from_env() -> Self {
        let num = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name} must be a whole number, got {v:?}")),
                Err(_) => default,
            }
        };
        let rows = match std::env::var("BENCH_ROWS") {
            Ok(v) => v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .inspect(|s| {
                    assert!(
                        ALL_ROWS.contains(&s.as_str()),
                        "BENCH_ROWS: unknown row `{s}` (rows: {})",
                        ALL_ROWS.join(",")
                    )
                })
                .collect(),
            Err(_) => ALL_ROWS.iter().map(|s| s.to_string()).collect(),
        };
        Self {
            duration: Duration::from_secs(num("BENCH_DURATION", 10).max(1)),
            warmup: Duration::from_secs(num("BENCH_WARMUP", 2)),
            connections: num("BENCH_CONNECTIONS", 32).max(1) as usize,
            client_threads: num("BENCH_CLIENT_THREADS", 1).max(1) as usize,
            rows,
            rolling: num("BENCH_ROLLING", 1) != 0,
            out: std::env::var_os("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| bench_dir().join("results")),
            time_limit: Duration::from_secs(num("BENCH_TIME_LIMIT", 3600)),
            working_set: num("BENCH_WORKING_SET", 100_000).max(1) as usize,
            rounds: num("BENCH_ROUNDS", 3).max(1) as usize,
            curve_duration: Duration::from_secs(num("BENCH_CURVE_DURATION", 5).max(1)),
            curve_warmup: Duration::from_secs(num("BENCH_CURVE_WARMUP", 1)),
        }
    }

    pub fn wants(&self, row: &str) -> bool {
        self.rows.iter().any(|r| r == row)
    }
}

/// The benches package's directory (`benches/`).
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
