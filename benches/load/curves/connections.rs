//! The idle connections curve (`curve-connections`): 0 to 10,000 idle keep-alive connections
//! beside the active ones; the bare Pingora pass-through measured the same way at every point,
//! so that what idle connections cost the gate can be told from what they cost Pingora and the
//! kernel.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use sessiongate_testkit::status_kib;
use tokio::net::TcpStream;

use super::chart::{line_chart, Panel, Series, BLUE_, GREEN_, GREY_, ORANGE_};
use super::{idle, measure, metric, subtitle, CurveGate, Window};
use crate::driver::{drive_as, Ctx, LoadStats, Target};
use crate::processes::{start_passthrough, Cache, GateSpec};
use crate::report::{fmt_int, mib};

const IDLE_COUNTS: [usize; 4] = [0, 100, 1_000, 10_000];

/// Warms the server at `target` (process `pid`) up on the active connections alone, then opens
/// `n` idle ones beside them, each answered once on the public path; returns them, and the
/// server's VmRSS (KiB) before and once they are open.
fn open_beside(
    ctx: &mut Ctx<'_>,
    target: &Target,
    pid: u32,
    n: usize,
) -> (Vec<TcpStream>, u64, u64) {
    let rss = || status_kib(pid, "VmRSS:").unwrap_or(0);
    drive_as(
        &ctx.rt,
        target,
        None,
        ctx.opts.connections,
        ctx.opts.curve_warmup.max(Duration::from_secs(1)),
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = rss();
    let conns = idle::open(&ctx.rt, target.port, "/public/data", n);
    std::thread::sleep(Duration::from_millis(500));
    (conns, before, rss())
}

/// The bare Pingora pass-through at one point of the curve.
struct Bare {
    n: usize,
    stats: LoadStats,
    before: u64,
    with_idle: u64,
    closed: usize,
}

/// A fresh pass-through (`bin`) in front of the bench upstream, warmed up by the active
/// connections on the public path (it has no sessions), then measured beside `n` idle ones
/// for as long as the gate's point; its VmRSS before and with the idle ones, in KiB.
fn bare_point(ctx: &mut Ctx<'_>, bin: &Path, upstream: u16, n: usize) -> Bare {
    let (mut proc, port) = start_passthrough(bin, upstream);
    let target = Target {
        port,
        path: "/public/data",
        cookie: None,
        mix: None,
    };
    let active = ctx.opts.connections;
    let (conns, before, with_idle) = open_beside(ctx, &target, proc.pid(), n);
    eprintln!(
        "load bench: curve: bare Pingora, {active} active connections beside {n} idle ones ..."
    );
    let stats = drive_as(&ctx.rt, &target, None, active, ctx.opts.curve_duration);
    eprintln!(
        "load bench: bare Pingora beside {n} idle: {:.0} req/s, p99 {:.3} ms",
        stats.req_per_sec(),
        stats.quantile_ms(0.99)
    );
    let closed = idle::closed(&conns);
    drop(conns);
    proc.assert_running();
    Bare {
        n,
        stats,
        before,
        with_idle,
        closed,
    }
}

/// Measures the idle connections curve and draws `curve-connections.svg`; returns its section
/// of curves.md. `cookie` is the logged-in session the active connections carry; `passthrough`
/// the bare Pingora measured beside the gate.
pub fn connections(
    ctx: &mut Ctx<'_>,
    spec: &GateSpec<'_>,
    cookie: &str,
    passthrough: Option<&Path>,
) -> String {
    struct Point {
        n: usize,
        w: Window,
        open: f64,
        before: u64,
        with_idle: u64,
        after: u64,
        hwm: u64,
        closed: usize,
    }
    let active = ctx.opts.connections;
    let most = IDLE_COUNTS[IDLE_COUNTS.len() - 1];
    // This process holds both ends' worth of nothing: its own sockets only. The gate
    // inherits the limit (ProcessGuard spawns it from here) and holds the same number
    // plus its upstream, Redis and admin connections.
    let limit = idle::raise_nofile((most + active + 512) as u64);
    eprintln!("load bench: RLIMIT_NOFILE {limit} for curve-connections");
    // The default `server.max_connections` (10,000) would refuse the active connections
    // beside 10,000 idle ones; a long `idle_timeout` keeps the idle ones for the whole point.
    let server_keys = format!(
        "max_connections = {}\nidle_timeout = \"10m\"\n",
        most + active + 1000
    );
    let mut points = Vec::new();
    let mut bare = Vec::new();
    let mut skipped = Vec::new();
    for n in IDLE_COUNTS {
        if (n + active + 256) as u64 > limit {
            skipped.push(n);
            eprintln!("load bench: {n} idle connections need a higher RLIMIT_NOFILE than {limit}");
            continue;
        }
        let mut gate =
            CurveGate::start(spec, &format!("gate-idle-{n}"), Cache::On, &server_keys, "");
        let target = Target {
            port: gate.port,
            path: "/api/data",
            cookie: Some(cookie.to_string()),
            mix: None,
        };
        let (conns, before, with_idle) = open_beside(ctx, &target, gate.proc.pid(), n);
        let open = metric(&gate.metrics(), "sessiongate_connections");
        let label = format!("curve: {active} active connections beside {n} idle ones");
        let w = measure(ctx, &gate, &label, &target, None, false);
        let (after, hwm) = gate.rss();
        let closed = idle::closed(&conns);
        if closed > 0 {
            eprintln!("load bench: the gate closed {closed} of {n} idle connections");
        }
        drop(conns);
        gate.proc.assert_running();
        drop(gate);
        if let Some(bin) = passthrough {
            bare.push(bare_point(ctx, bin, spec.upstream, n));
        }
        points.push(Point {
            n,
            w,
            open,
            before,
            with_idle,
            after,
            hwm,
            closed,
        });
    }

    let zero = points.iter().find(|p| p.n == 0).map(|p| p.with_idle);
    let per = |p: &Point, base: u64| (p.with_idle as f64 - base as f64) / p.n as f64;
    let mut md = format!(
        "## Idle connections: 0 to 10,000\n\n\
         A fresh gate per point (cache on, `server.max_connections = {}`, \
         `server.idle_timeout = \"10m\"`). {active} active connections warm it up on \
         `/api/data` (the logged-in session); then the idle ones are opened, each answered once \
         on `GET /public/data` and then silent (plain TCP, a minimal HTTP/1.1 GET), and the \
         {active} active ones are measured beside them. `RSS before` is VmRSS after the \
         warm-up, `RSS with idle` once the idle ones are open; per idle connection is \
         (RSS with N idle − RSS with 0 idle) / N, and the same within one gate \
         ((RSS with idle − RSS before) / N). `open` is the gate's `sessiongate_connections` \
         with the idle ones open; `closed` the idle ones the gate had closed by the end of the \
         window (none should be).\n\n\
         | idle | req/s | p50 ms | p99 ms | failed | open | RSS before | RSS with idle | per idle conn | per idle conn, same gate | RSS after the window | peak RSS | closed |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        most + active + 1000,
    );
    for p in &points {
        let (vs_zero, same) = if p.n == 0 {
            ("—".to_string(), "—".to_string())
        } else {
            (
                zero.map_or("—".into(), |z| format!("{:.1} KiB", per(p, z))),
                format!("{:.1} KiB", per(p, p.before)),
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {vs_zero} | {same} | {} | {} | {} |",
            fmt_int(p.n as f64),
            fmt_int(p.w.rps()),
            p.w.ms(0.5),
            p.w.ms(0.99),
            p.w.failures(),
            fmt_int(p.open),
            mib(p.before),
            mib(p.with_idle),
            mib(p.after),
            mib(p.hwm),
            p.closed,
        );
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            md,
            "\nNot run: {} idle connections (RLIMIT_NOFILE {limit} is too low; raise the hard limit).",
            skipped
                .iter()
                .map(|n| fmt_int(*n as f64))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let gate_zero_rps = points.iter().find(|p| p.n == 0).map(|p| p.w.rps());
    let bare_zero = bare.iter().find(|b| b.n == 0);
    if !bare.is_empty() {
        let _ = write!(
            md,
            "\nThe bare Pingora pass-through (`benches/pingora_passthrough.rs`, with Pingora's \
             default 64 KiB read buffer per connection) at the same points, each measured right \
             after the gate's: a fresh one per point, its {active} active connections on \
             `/public/data` (it has no sessions), the idle ones opened the same way. `vs 0 idle` \
             is a server's throughput over its own with no idle connection.\n\n\
             | idle | Pingora req/s | p99 ms | failed | RSS before | RSS with idle | per idle conn | closed | Pingora vs 0 idle | gate vs 0 idle |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        );
        for b in &bare {
            let rps = b.stats.req_per_sec();
            let (per_conn, bare_vs, gate_vs) = match (b.n, bare_zero) {
                (0, _) | (_, None) => ("—".to_string(), "—".to_string(), "—".to_string()),
                (n, Some(z)) => {
                    let gate = points
                        .iter()
                        .find(|p| p.n == n)
                        .zip(gate_zero_rps)
                        .map_or("—".into(), |(p, z)| format!("{:.3}×", p.w.rps() / z));
                    (
                        format!(
                            "{:.1} KiB",
                            (b.with_idle as f64 - z.with_idle as f64) / n as f64
                        ),
                        format!("{:.3}×", rps / z.stats.req_per_sec()),
                        gate,
                    )
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {} | {} | {} | {per_conn} | {} | {bare_vs} | {gate_vs} |",
                fmt_int(b.n as f64),
                fmt_int(rps),
                b.stats.quantile_ms(0.99),
                b.stats.non_2xx + b.stats.transport_errors,
                mib(b.before),
                mib(b.with_idle),
                b.closed,
            );
        }
    }
    let zero_point = points.iter().find(|p| p.n == 0);
    let counted: Vec<&Point> = points.iter().filter(|p| p.n > 0).collect();
    let xy = |f: &dyn Fn(&Point) -> f64| counted.iter().map(|p| (p.n as f64, f(p))).collect();
    let base = |f: &dyn Fn(&Point) -> f64| zero_point.map(|p| ("0 idle".to_string(), f(p), GREY_));
    line_chart(
        &ctx.opts.out.join("curve-connections.svg"),
        &format!("sessiongate: {active} active connections beside idle keep-alive ones"),
        &subtitle(ctx.opts, "cache on, the idle ones each answered once"),
        "idle connections (log scale)",
        (70.0, 15_000.0),
        &[
            Panel {
                y_label: "req/s (active)".into(),
                series: vec![Series {
                    name: "gate".into(),
                    points: xy(&|p| p.w.rps()),
                    color: BLUE_,
                }],
                baseline: base(&|p| p.w.rps()),
            },
            Panel {
                y_label: "req/s ÷ with 0 idle".into(),
                series: std::iter::once(Series {
                    name: "gate".into(),
                    points: xy(&|p| gate_zero_rps.map_or(f64::NAN, |z| p.w.rps() / z)),
                    color: BLUE_,
                })
                .chain(bare_zero.map(|z| {
                    Series {
                        name: "bare Pingora".into(),
                        points: bare
                            .iter()
                            .filter(|b| b.n > 0)
                            .map(|b| (b.n as f64, b.stats.req_per_sec() / z.stats.req_per_sec()))
                            .collect(),
                        color: GREY_,
                    }
                }))
                .collect(),
                baseline: None,
            },
            Panel {
                y_label: "p99, ms (active)".into(),
                series: vec![Series {
                    name: "p99".into(),
                    points: xy(&|p| p.w.ms(0.99)),
                    color: ORANGE_,
                }],
                baseline: base(&|p| p.w.ms(0.99)),
            },
            Panel {
                y_label: "RSS, MiB".into(),
                series: std::iter::once(Series {
                    name: "gate, with the idle ones open".into(),
                    points: xy(&|p| p.with_idle as f64 / 1024.0),
                    color: GREEN_,
                })
                .chain((!bare.is_empty()).then(|| {
                    Series {
                        name: "bare Pingora".into(),
                        points: bare
                            .iter()
                            .filter(|b| b.n > 0)
                            .map(|b| (b.n as f64, b.with_idle as f64 / 1024.0))
                            .collect(),
                        color: GREY_,
                    }
                }))
                .collect(),
                baseline: base(&|p| p.with_idle as f64 / 1024.0),
            },
        ],
    );
    md
}
