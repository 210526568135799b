//! The targets the issue set, each checked against the measured rows, and the reference
//! ratios reported next to them.

use crate::processes::CACHE_BYTES;
use crate::report::{mib, Row};

pub struct Verdict {
    pub text: String,
    pub mark: Mark,
}

pub enum Mark {
    Pass,
    Miss,
    /// A ratio reported for reference, with no target to meet.
    Ratio,
    NotEvaluated,
}

impl Mark {
    fn of(pass: bool) -> Self {
        if pass {
            Mark::Pass
        } else {
            Mark::Miss
        }
    }

    pub fn word(&self) -> &'static str {
        match self {
            Mark::Pass => "PASS",
            Mark::Miss => "MISS",
            Mark::Ratio => "ratio",
            Mark::NotEvaluated => "n/a",
        }
    }
}

/// A ratio of two rows and whether it meets its target (`None`: no target).
type Ratio<'a> = dyn Fn(&Row, &Row) -> (f64, Option<bool>) + 'a;

pub fn targets(rows: &[Row]) -> Vec<Verdict> {
    let get = |k: &str| rows.iter().find(|r| r.key == k && r.stats.is_some());
    let mut out = Vec::new();
    let mut ratio =
        |name: &str, a: Option<&Row>, b: Option<&Row>, f: &Ratio<'_>, why: &str| match (a, b) {
            (Some(a), Some(b)) => {
                let (r, ok) = f(a, b);
                out.push(Verdict {
                    text: format!("{name}: measured {r:.3}x"),
                    mark: ok.map_or(Mark::Ratio, Mark::of),
                });
            }
            _ => out.push(Verdict {
                text: format!("{name}: not evaluated ({why})"),
                mark: Mark::NotEvaluated,
            }),
        };
    let rps = |r: &Row| r.rps().unwrap();
    let p99 = |r: &Row| r.p99().unwrap();
    let (public, nocache, cache, nginx, pingora) = (
        get("public"),
        get("auth-nocache"),
        get("auth-cache"),
        get("nginx"),
        get("pingora"),
    );
    ratio(
        "auth, cache on >= 0.95x public throughput",
        cache,
        public,
        &|a, b| (rps(a) / rps(b), Some(rps(a) >= 0.95 * rps(b))),
        "a row was not run",
    );
    ratio(
        "auth, cache on p99 <= 1.2x public p99",
        cache,
        public,
        &|a, b| (p99(a) / p99(b), Some(p99(a) <= 1.2 * p99(b))),
        "a row was not run",
    );
    ratio(
        "auth, cache off >= 0.8x public throughput",
        nocache,
        public,
        &|a, b| (rps(a) / rps(b), Some(rps(a) >= 0.8 * rps(b))),
        "a row was not run",
    );
    let nginx_why = if rows.iter().any(|r| r.key == "nginx" && r.skipped.is_some()) {
        "nginx not installed"
    } else {
        "a row was not run"
    };
    ratio(
        "public >= 0.6x nginx proxy_pass (1 worker each)",
        public,
        nginx,
        &|a, b| (rps(a) / rps(b), Some(rps(a) >= 0.6 * rps(b))),
        nginx_why,
    );
    // What the gate's routing, normalisation, header and metrics work costs on top of the
    // Pingora it is built on: with the defaults (metrics on, access log off), and with the
    // access log on.
    for (key, what) in [
        ("public", "public"),
        ("public-log", "public, access log on,"),
    ] {
        if !rows.iter().any(|r| r.key == key) {
            continue;
        }
        ratio(
            &format!("{what} >= 0.95x bare Pingora pass-through throughput (1 thread each)"),
            get(key),
            pingora,
            &|a, b| (rps(a) / rps(b), Some(rps(a) >= 0.95 * rps(b))),
            "a row was not run",
        );
        ratio(
            &format!("{what} p99 <= 1.1x bare Pingora pass-through p99"),
            get(key),
            pingora,
            &|a, b| (p99(a) / p99(b), Some(p99(a) <= 1.1 * p99(b))),
            "a row was not run",
        );
    }
    for (key, which) in [
        ("express", "keep-alive upstream agent"),
        ("express-defaults", "http-proxy-middleware defaults"),
    ] {
        if !rows.iter().any(|r| r.key == key) {
            continue;
        }
        ratio(
            &format!("auth, cache on >= 20x express peer throughput ({which})"),
            cache,
            get(key),
            &|a, b| (rps(a) / rps(b), Some(rps(a) >= 20.0 * rps(b))),
            "the express peer was not run",
        );
        ratio(
            &format!("auth, cache on p99 < 0.1x express peer p99 ({which})"),
            cache,
            get(key),
            &|a, b| (p99(a) / p99(b), Some(p99(a) < 0.1 * p99(b))),
            "the express peer was not run",
        );
    }
    // No targets: what the assertion costs on the cached path, and forward-auth beside the
    // express-session checker behind the same nginx.
    for (a, b, name) in [
        (
            "assert-cached",
            "auth-cache",
            "auth with a cached assertion / auth, cache on",
        ),
        (
            "assert-bound",
            "auth-cache",
            "auth with a bound ES256 assertion / auth, cache on",
        ),
        (
            "assert-bound-eddsa",
            "auth-cache",
            "auth with a bound EdDSA assertion / auth, cache on",
        ),
        (
            "fa-nginx",
            "fa-express",
            "nginx auth_request: gate, cache on / express checker",
        ),
        (
            "fa-nginx-nocache",
            "fa-express",
            "nginx auth_request: gate, cache off / express checker",
        ),
        (
            "fa-nginx",
            "nginx",
            "nginx auth_request + gate, cache on / nginx proxy_pass",
        ),
    ] {
        if rows.iter().any(|r| r.key == a) {
            ratio(
                &format!("{name} throughput"),
                get(a),
                get(b),
                &|a, b| (rps(a) / rps(b), None),
                "a row was not run",
            );
        }
    }
    for (off, on, what) in [
        ("ws-nocache-cycle", "ws-cache-cycle", "cycling"),
        ("ws-nocache-zipf", "ws-cache-zipf", "Zipf"),
    ] {
        if rows.iter().any(|r| r.key == on || r.key == off) {
            ratio(
                &format!("working set > cache, {what}: cache on >= 0.95x cache off throughput"),
                get(on),
                get(off),
                &|a, b| (rps(a) / rps(b), Some(rps(a) >= 0.95 * rps(b))),
                "a row was not run",
            );
        }
    }
    match cache.and_then(|r| r.redis.as_ref()) {
        Some((per, _)) => out.push(Verdict {
            text: format!(
                "<= 0.05 Redis commands per authenticated request, cache on: measured {per:.4}"
            ),
            mark: Mark::of(*per <= 0.05),
        }),
        None => out.push(Verdict {
            text: "<= 0.05 Redis commands per authenticated request, cache on: not evaluated"
                .into(),
            mark: Mark::NotEvaluated,
        }),
    }
    let rss = |k: &str| get(k).and_then(|r| r.rss_kib);
    if let (Some(on), Some(off)) = (rss("ws-cache-cycle"), rss("ws-nocache-cycle")) {
        let grown = on.saturating_sub(off);
        out.push(Verdict {
            text: format!(
                "working set > cache: RSS the cache adds (cache on less cache off, cycling) <= 1.5x cache max_bytes ({}): measured {} ({:.2}x max_bytes)",
                mib(CACHE_BYTES * 3 / 2 / 1024),
                mib(grown),
                grown as f64 * 1024.0 / CACHE_BYTES as f64
            ),
            mark: Mark::of(grown * 1024 <= CACHE_BYTES * 3 / 2),
        });
    }
    let budget = 64 * 1024 + CACHE_BYTES / 1024;
    let peak = rows
        .iter()
        .filter(|r| r.key.starts_with("auth") || r.key == "public")
        .filter_map(|r| r.rss_kib)
        .max();
    match peak {
        Some(p) => out.push(Verdict {
            text: format!(
                "gate peak RSS <= 64 MiB + cache max_bytes ({}): measured {}",
                mib(budget),
                mib(p)
            ),
            mark: Mark::of(p <= budget),
        }),
        None => out.push(Verdict {
            text: "gate peak RSS: not evaluated".into(),
            mark: Mark::NotEvaluated,
        }),
    }
    out
}
