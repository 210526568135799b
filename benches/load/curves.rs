//! Growth curves (rows `curve-*`): what the gate's cost does as the work grows, each a table
//! in `curves.md` and a line chart in `curve-<name>.svg` (both in `BENCH_OUT`):
//!
//! - `curve-routes`: 10, 100, 1,000 and 10,000 routes, a multi-tenant table (per tenant a host
//!   route `host = "t<k>.example.test"`, `path = "/app/"` and a prefix route `/t<k>/`, all
//!   public, to the bench upstream), load on the host route of the tenant in the middle;
//!   target: every count within 5 % of the 10-route throughput.
//! - `curve-sessions`: 1,000 to 1,000,000 sessions of about 200 bytes seeded in Redis, each
//!   request the next one in turn, cache on and off: throughput, the cache's bytes per
//!   session (`sessiongate_cache_bytes` / `sessiongate_cache_entries` from the admin
//!   listener's `/metrics`) and the gate's RSS.
//! - `curve-connections`: 0, 100, 1,000 and 10,000 idle keep-alive connections (each answered
//!   once on a public route, then silent) beside the usual active connections (cache on):
//!   the RSS each idle connection costs, and the active throughput and p99 with them open;
//!   the bare Pingora pass-through beside the gate at every point, measured the same way.
//! - `curve-size`: sessions of about 200 bytes and about 4 KiB of JSON (the same cookie),
//!   cache on and off: throughput, p50 and p99.
//!
//! Every point is a fresh gate (`threads = 1`, as the other rows) with an `[admin]` listener
//! on a free port, driven by the bench's load generator ([`crate::driver`]) for
//! `BENCH_CURVE_WARMUP` (1 s) and then `BENCH_CURVE_DURATION` (5 s) seconds.

mod chart;
mod connections;
mod idle;
mod routes;
mod sessions;
mod size;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::HeaderValue;
use sessiongate_testkit::{free_port, status_kib, ProcessGuard};

use crate::driver::{drive_as, Ctx, LoadStats, Target};
use crate::opts::Opts;
use crate::probe::{probe, wait_for_200};
use crate::processes::{gate_config, Cache, GateSpec, StoreAt};
use crate::report::machine;
use crate::SECRET;

/// The row keys, in the order their sections appear in curves.md.
pub const KEYS: [&str; 4] = [
    "curve-routes",
    "curve-sessions",
    "curve-connections",
    "curve-size",
];

const ADMIN_TOKEN_ENV: &str = "SG_BENCH_ADMIN_TOKEN";
const ADMIN_TOKEN: &str = "bench-admin-token-5f2c9e1a7b3d4c60";

/// Runs the curves `ctx.opts` asks for and writes their sections and charts.
/// `passthrough`: the bare Pingora pass-through's binary, measured beside the gate in
/// `curve-connections`.
pub fn run(ctx: &mut Ctx<'_>, spec: &GateSpec<'_>, cookie: &str, passthrough: Option<&Path>) {
    std::fs::create_dir_all(&ctx.opts.out).expect("create the results directory");
    let mut sections = Vec::new();
    for key in KEYS {
        if !ctx.opts.wants(key) {
            continue;
        }
        let started = Instant::now();
        let load = loadavg();
        let mut md = match key {
            "curve-routes" => routes::routes(ctx, spec),
            "curve-sessions" => sessions::sessions(ctx, spec),
            "curve-connections" => connections::connections(ctx, spec, cookie, passthrough),
            _ => size::size(ctx, spec),
        };
        let _ = write!(
            md,
            "\n{}; load average {load} when the curve started; the curve took {:.0} s.\n\n\
             ![{key}]({key}.svg)\n",
            conditions(ctx.opts),
            started.elapsed().as_secs_f64(),
        );
        eprintln!(
            "load bench: {key} took {:.0} s",
            started.elapsed().as_secs_f64()
        );
        sections.push((key, md));
    }
    for (_, md) in &sections {
        println!("\n{md}");
    }
    write_md(ctx.opts, &sections);
}

// ---------------------------------------------------------------------------------------------
// A gate per point, its metrics and memory, one measured window
// ---------------------------------------------------------------------------------------------

struct CurveGate {
    proc: ProcessGuard,
    port: u16,
    admin: u16,
}

impl CurveGate {
    /// The bench's gate configuration ([`gate_config`]) with `extra` tables, an `[admin]`
    /// listener on a free port, and `server_keys` added to its `[server]` table.
    fn start(
        spec: &GateSpec<'_>,
        name: &str,
        cache: Cache,
        server_keys: &str,
        extra: &str,
    ) -> Self {
        let (port, admin) = (free_port(), free_port());
        let extra = format!(
            "{extra}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"env:{ADMIN_TOKEN_ENV}\"\n"
        );
        let mut config = gate_config(
            port,
            StoreAt::Redis(spec.redis_url),
            spec.upstream,
            cache,
            spec.rolling,
            &extra,
        );
        if !server_keys.is_empty() {
            let at = "\nthreads = 1\n";
            assert!(
                config.contains(at),
                "the bench gate's [server] table changed"
            );
            config = config.replacen(at, &format!("{at}{server_keys}"), 1);
        }
        let path = spec.tmp.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut proc = ProcessGuard::spawn(
            name,
            Command::new(spec.bin)
                .arg("--config")
                .arg(&path)
                .env("SESSION_SECRET", SECRET)
                .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
                .env("SESSIONGATE_LOG", "warn"),
        );
        proc.wait_for_port(port, Duration::from_secs(30));
        wait_for_200(&mut proc, port, "/public/ready", Duration::from_secs(20));
        proc.wait_for_port(admin, Duration::from_secs(10));
        CurveGate { proc, port, admin }
    }

    /// The admin listener's `/metrics`, each sample by its name (and labels).
    fn metrics(&self) -> BTreeMap<String, f64> {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let p = probe(self.admin, "GET", "/metrics", &[("Authorization", &auth)])
            .expect("GET /metrics");
        assert_eq!(p.status, 200, "GET /metrics on the admin listener");
        String::from_utf8_lossy(&p.body)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// VmRSS and VmHWM, KiB.
    fn rss(&self) -> (u64, u64) {
        let pid = self.proc.pid();
        (
            status_kib(pid, "VmRSS:").unwrap_or(0),
            status_kib(pid, "VmHWM:").unwrap_or(0),
        )
    }
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// One measured window (or the sum of a point's slices) and what changed in it.
struct Window {
    stats: LoadStats,
    /// Redis commands run in the window (INFO commandstats, script-internal ones included).
    redis_calls: u64,
    hits: f64,
    misses: f64,
    /// Requests per second of each slice, in the order they ran (one for [`measure`]).
    slices: Vec<f64>,
}

impl Window {
    fn rps(&self) -> f64 {
        self.stats.req_per_sec()
    }
    fn ms(&self, q: f64) -> f64 {
        self.stats.quantile_ms(q)
    }
    fn failures(&self) -> u64 {
        self.stats.non_2xx + self.stats.transport_errors
    }
    fn redis_per_req(&self) -> f64 {
        self.redis_calls as f64 / self.stats.requests().max(1) as f64
    }
    fn hit_ratio(&self) -> Option<f64> {
        let n = self.hits + self.misses;
        (n > 0.0).then(|| self.hits / n)
    }

    /// Another slice of the same point.
    fn add(&mut self, other: Window) {
        let (a, b) = (&mut self.stats, other.stats);
        a.ok += b.ok;
        a.non_2xx += b.non_2xx;
        a.transport_errors += b.transport_errors;
        a.elapsed += b.elapsed;
        if let (Some(h), Some(o)) = (a.hist.as_mut(), b.hist.as_ref()) {
            h.add(o).expect("histograms of the same bounds");
        }
        self.redis_calls += other.redis_calls;
        self.hits += other.hits;
        self.misses += other.misses;
        self.slices.extend(other.slices);
    }

    /// The median over the rounds of this point's throughput over `base`'s in the same round
    /// (points measured together by [`measure_interleaved`]): a round that other work on the
    /// machine slowed does not decide it.
    fn median_ratio(&self, base: &Window) -> f64 {
        let mut r: Vec<f64> = self
            .slices
            .iter()
            .zip(&base.slices)
            .map(|(a, b)| a / b)
            .collect();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    fn log(&self, label: &str) {
        eprintln!(
            "load bench: {label}: {:.0} req/s, p99 {:.3} ms, {} non-2xx, {} transport errors",
            self.rps(),
            self.ms(0.99),
            self.stats.non_2xx,
            self.stats.transport_errors
        );
    }
}

/// `BENCH_CURVE_WARMUP` (when `warm_up`), then `BENCH_CURVE_DURATION` of load on `target`
/// (with `host` as the `Host` header), with Redis's command counts and the gate's cache
/// counters read around the window.
fn measure(
    ctx: &mut Ctx<'_>,
    gate: &CurveGate,
    label: &str,
    target: &Target,
    host: Option<&str>,
    warm_up: bool,
) -> Window {
    eprintln!("load bench: {label} ...");
    if warm_up && !ctx.opts.curve_warmup.is_zero() {
        let conns = ctx.opts.connections;
        drive_as(&ctx.rt, target, host, conns, ctx.opts.curve_warmup);
    }
    let w = slice(ctx, gate, target, host, ctx.opts.curve_duration);
    w.log(label);
    w
}

/// One point of a curve measured by [`measure_interleaved`].
struct Load<'a> {
    gate: &'a CurveGate,
    target: Target,
    host: Option<String>,
    label: String,
}

/// Rounds of [`measure_interleaved`].
const ROUNDS: u32 = 5;

/// Every point warmed up (`BENCH_CURVE_WARMUP`), then measured in [`ROUNDS`] rounds, each
/// giving every point `BENCH_CURVE_DURATION / ROUNDS` in turn, a round starting one point
/// later than the one before: a machine whose speed drifts (other work starting or ending on
/// it) then slows every point alike, not the one that happened to run at the time. A point's
/// window is the sum of its slices. Only for gates that share nothing in Redis: a gate's
/// writes (touches) reach the others' caches.
fn measure_interleaved(ctx: &mut Ctx<'_>, loads: &[Load<'_>]) -> Vec<Window> {
    let conns = ctx.opts.connections;
    for l in loads {
        eprintln!("load bench: {} (warm-up) ...", l.label);
        if !ctx.opts.curve_warmup.is_zero() {
            drive_as(
                &ctx.rt,
                &l.target,
                l.host.as_deref(),
                conns,
                ctx.opts.curve_warmup,
            );
        }
    }
    let length = ctx.opts.curve_duration / ROUNDS;
    let mut out: Vec<Option<Window>> = loads.iter().map(|_| None).collect();
    for round in 0..ROUNDS as usize {
        eprintln!("load bench: round {} of {ROUNDS} ...", round + 1);
        for k in 0..loads.len() {
            let i = (round + k) % loads.len();
            let l = &loads[i];
            let w = slice(ctx, l.gate, &l.target, l.host.as_deref(), length);
            match &mut out[i] {
                Some(acc) => acc.add(w),
                none => *none = Some(w),
            }
        }
    }
    let out: Vec<Window> = out.into_iter().map(Option::unwrap).collect();
    for (l, w) in loads.iter().zip(&out) {
        w.log(&l.label);
    }
    out
}

/// `length` of load, with Redis's command counts and the gate's cache counters around it.
fn slice(
    ctx: &mut Ctx<'_>,
    gate: &CurveGate,
    target: &Target,
    host: Option<&str>,
    length: Duration,
) -> Window {
    let (redis0, m0) = (ctx.redis.command_calls(), gate.metrics());
    let stats = drive_as(&ctx.rt, target, host, ctx.opts.connections, length);
    let (redis1, m1) = (ctx.redis.command_calls(), gate.metrics());
    let calls = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let delta = |name: &str| metric(&m1, name) - metric(&m0, name);
    Window {
        slices: vec![stats.req_per_sec()],
        redis_calls: calls(&redis1).saturating_sub(calls(&redis0)),
        hits: delta("sessiongate_cache_hits_total"),
        misses: delta("sessiongate_cache_misses_total"),
        stats,
    }
}

/// The `Cookie` of a seeded session gets 200 with its user injected.
fn check_session(label: &str, port: u16, cookie: &HeaderValue, user: &str) {
    let p = probe(
        port,
        "GET",
        "/api/data",
        &[("Cookie", cookie.to_str().unwrap()), ("X-User", "mallory")],
    )
    .unwrap();
    assert_eq!(p.status, 200, "{label}: a seeded session must get 200");
    assert_eq!(
        p.header("x-seen-user"),
        Some(user),
        "{label}: the upstream must see the session's user"
    );
    let anon = probe(port, "GET", "/api/data", &[]).unwrap();
    assert_eq!(anon.status, 401, "{label}: no cookie must get 401");
}

// ---------------------------------------------------------------------------------------------
// curves.md
// ---------------------------------------------------------------------------------------------

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// When, where and how a curve was measured.
fn conditions(opts: &Opts) -> String {
    let m = machine(opts);
    let get = |k: &str| {
        m.iter()
            .find(|(key, _)| key == k)
            .map_or("?", |(_, v)| v.as_str())
            .to_string()
    };
    format!(
        "Measured {}, {}; {} connections, {} s warm-up + {} s measured per point \
         (`BENCH_CURVE_WARMUP`, `BENCH_CURVE_DURATION`), closed loop, rolling {}",
        get("date"),
        get("CPU"),
        opts.connections,
        opts.curve_warmup.as_secs(),
        opts.curve_duration.as_secs(),
        if opts.rolling { "on" } else { "off" },
    )
}

fn subtitle(opts: &Opts, what: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{what}; gate threads = 1, {} connections, {} s per point, {cpus} CPUs shared with the load generator, Redis and the upstream",
        opts.connections,
        opts.curve_duration.as_secs()
    )
}

const MD_HEAD: &str = "# sessiongate load bench: growth curves\n\n\
    Generated by `cargo bench -p sessiongate-benches --bench load` with the `curve-*` rows \
    (`BENCH_ROWS=curve-routes,curve-sessions,curve-connections,curve-size`; benches/load/curves.rs): \
    what the gate's cost does as the work grows. Every point is a fresh gate (`threads = 1`) on \
    the same machine as the load generator, Redis and the upstream. A run rewrites the sections \
    of the curves it measured and keeps the others, so each section says when and how it was \
    measured.\n";

fn markers(key: &str) -> (String, String) {
    (format!("<!-- {key} -->"), format!("<!-- /{key} -->"))
}

/// Writes `curves.md` in `BENCH_OUT`: the sections measured now, and the others as they were.
fn write_md(opts: &Opts, sections: &[(&str, String)]) {
    let path = opts.out.join("curves.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut md = String::from(MD_HEAD);
    for key in KEYS {
        let (open, close) = markers(key);
        let body = match sections.iter().find(|(k, _)| *k == key) {
            Some((_, new)) => Some(new.trim_end().to_string()),
            None => old
                .split_once(&open)
                .and_then(|(_, rest)| rest.split_once(&close))
                .map(|(body, _)| body.trim().to_string()),
        };
        if let Some(body) = body {
            let _ = write!(md, "\n{open}\n{body}\n{close}\n");
        }
    }
    std::fs::write(&path, md).expect("write curves.md");
    println!("wrote {} and its charts", path.display());
}
