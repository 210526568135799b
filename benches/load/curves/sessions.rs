//! The sessions curve (`curve-sessions`): 1,000 to 1,000,000 sessions in Redis, cycled, cache
//! on and off.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use super::chart::{line_chart, Panel, Series, BLUE_, GREEN_, ORANGE_};
use super::{check_session, measure, metric, subtitle, CurveGate, Window};
use crate::driver::{Ctx, Target};
use crate::processes::{Cache, GateSpec, CACHE_BYTES};
use crate::report::{fmt_int, mib};
use crate::workset::{now_ms, seed_sessions, small_session, Mix};

const SESSION_COUNTS: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// Seeds the sessions, measures the sessions curve and draws `curve-sessions.svg`; returns
/// its section of curves.md.
pub fn sessions(ctx: &mut Ctx<'_>, spec: &GateSpec<'_>) -> String {
    struct Point {
        n: usize,
        cache: bool,
        w: Window,
        entries: f64,
        bytes: f64,
        rss: u64,
        hwm: u64,
    }
    let max = SESSION_COUNTS[SESSION_COUNTS.len() - 1];
    eprintln!("load bench: writing {max} sessions into Redis for curve-sessions ...");
    let seeding = Instant::now();
    let now = now_ms();
    let all = seed_sessions(&mut ctx.redis, "cv", max, |i| small_session(i, now));
    let seed_secs = seeding.elapsed().as_secs_f64();
    eprintln!("load bench: {max} sessions written in {seed_secs:.1} s");
    let mut points = Vec::new();
    for n in SESSION_COUNTS {
        let cookies = Arc::new(all[..n].to_vec());
        for (cache, on) in [(Cache::On, true), (Cache::Off, false)] {
            let name = format!("gate-sessions-{n}-{}", if on { "cache" } else { "nocache" });
            let mut gate = CurveGate::start(spec, &name, cache, "", "");
            check_session(&name, gate.port, &cookies[n - 1], &format!("user{}", n - 1));
            let target = Target {
                port: gate.port,
                path: "/api/data",
                cookie: None,
                mix: Some(Mix::cycling(&cookies)),
            };
            let label = format!(
                "curve: {} sessions cycled, cache {}",
                fmt_int(n as f64),
                if on { "on" } else { "off" }
            );
            let w = measure(ctx, &gate, &label, &target, None, true);
            gate.proc.assert_running();
            let m = gate.metrics();
            let (rss, hwm) = gate.rss();
            points.push(Point {
                n,
                cache: on,
                w,
                entries: metric(&m, "sessiongate_cache_entries"),
                bytes: metric(&m, "sessiongate_cache_bytes"),
                rss,
                hwm,
            });
        }
    }

    let mut md = format!(
        "## Sessions: 1,000 to 1,000,000\n\n\
         Sessions of about 200 bytes (`cookie`, `user`, `roles`, `sessiongate`) written \
         straight into Redis (1,000,000 in {seed_secs:.1} s, pipelined 10,000 at a time), and \
         each request on `/api/data` carrying the next one in turn (cycling through all of \
         them), cache on (`max_bytes` {}, `touch_interval = \"60s\"`) and off \
         (`touch_interval = \"0s\"`). From 10,000 sessions the working set is larger than the \
         cache. `hits` are the cache's hits over hits and misses in the window; the cache's \
         bytes and sessions are the gate's `sessiongate_cache_bytes` and \
         `sessiongate_cache_entries` after the window; RSS is VmRSS after the window, peak RSS \
         VmHWM.\n\n\
         | sessions | cache | req/s | p50 ms | p99 ms | hits | Redis cmds/req | cached sessions | cache bytes | bytes per cached session | RSS | peak RSS | failed |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        mib(CACHE_BYTES / 1024),
    );
    for p in &points {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {:.3} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
            fmt_int(p.n as f64),
            if p.cache { "on" } else { "off" },
            fmt_int(p.w.rps()),
            p.w.ms(0.5),
            p.w.ms(0.99),
            p.w.hit_ratio()
                .map_or("—".into(), |h| format!("{:.1} %", h * 100.0)),
            p.w.redis_per_req(),
            if p.cache {
                fmt_int(p.entries)
            } else {
                "—".into()
            },
            if p.cache {
                mib((p.bytes / 1024.0) as u64)
            } else {
                "—".into()
            },
            if p.cache && p.entries > 0.0 {
                format!("{:.2} KB", p.bytes / p.entries / 1000.0)
            } else {
                "—".into()
            },
            mib(p.rss),
            mib(p.hwm),
            p.w.failures(),
        );
    }
    md.push('\n');
    for pair in points.chunks(2) {
        if let [on, off] = pair {
            let _ = writeln!(
                md,
                "- {} sessions: cache on / cache off {:.2}x; the cache's RSS over the gate without it {:+.1} MiB",
                fmt_int(on.n as f64),
                on.w.rps() / off.w.rps(),
                (on.rss as f64 - off.rss as f64) / 1024.0,
            );
        }
    }
    let series = |on: bool, f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|p| p.cache == on)
            .map(|p| (p.n as f64, f(p)))
            .collect()
    };
    line_chart(
        &ctx.opts.out.join("curve-sessions.svg"),
        "sessiongate: sessions in Redis, each request the next one",
        &subtitle(ctx.opts, "200-byte sessions, cycled"),
        "sessions (log scale)",
        (700.0, 1_500_000.0),
        &[
            Panel::cache_on_off(series(true, &|p| p.w.rps()), series(false, &|p| p.w.rps())),
            Panel {
                y_label: "gate RSS, MiB".into(),
                series: vec![
                    Series {
                        name: "RSS, cache on".into(),
                        points: series(true, &|p| p.rss as f64 / 1024.0),
                        color: BLUE_,
                    },
                    Series {
                        name: "RSS, cache off".into(),
                        points: series(false, &|p| p.rss as f64 / 1024.0),
                        color: ORANGE_,
                    },
                    Series {
                        name: "cache bytes (its own count)".into(),
                        points: series(true, &|p| p.bytes / 1024.0 / 1024.0),
                        color: GREEN_,
                    },
                ],
                baseline: None,
            },
            Panel {
                y_label: "KB per cached session".into(),
                series: vec![Series {
                    name: "cache bytes / cached sessions".into(),
                    points: series(true, &|p| {
                        if p.entries > 0.0 {
                            p.bytes / p.entries / 1000.0
                        } else {
                            0.0
                        }
                    }),
                    color: GREEN_,
                }],
                baseline: None,
            },
        ],
    );
    md
}
