//! The session size curve (`curve-size`): about 200 bytes and about 4 KiB of JSON, cache on
//! and off.

use std::fmt::Write as _;

use http::HeaderValue;

use super::chart::{line_chart, Panel, Series, BLUE_, GREEN_, GREY_, ORANGE_};
use super::{check_session, measure, metric, subtitle, CurveGate, Window};
use crate::driver::{Ctx, Target};
use crate::processes::{Cache, GateSpec};
use crate::report::{fmt_int, mib};
use crate::workset::{now_ms, seed_sessions, small_session, Mix};

/// Sessions per size, cycled through: all of them fit in the cache.
const SIZE_SESSIONS: usize = 100;
const LARGE_JSON: usize = 4096;

/// [`small_session`] with fields of 48 characters (`"f000": "000…0"`, as an app's session
/// data) added up to at least `bytes` of JSON.
fn large_session(i: usize, now: u64, bytes: usize) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&small_session(i, now)).unwrap();
    let mut k = 0;
    loop {
        let json = v.to_string();
        if json.len() >= bytes {
            return json;
        }
        v.as_object_mut()
            .unwrap()
            .insert(format!("f{k:03}"), format!("{k:0>48}").into());
        k += 1;
    }
}

/// Seeds the sessions of both sizes, measures the size curve and draws `curve-size.svg`;
/// returns its section of curves.md.
pub fn size(ctx: &mut Ctx<'_>, spec: &GateSpec<'_>) -> String {
    struct Point {
        bytes: usize,
        cache: bool,
        w: Window,
        per_entry: Option<f64>,
        hwm: u64,
    }
    let now = now_ms();
    let small = seed_sessions(&mut ctx.redis, "sz0200", SIZE_SESSIONS, |i| {
        small_session(i, now)
    });
    let large = seed_sessions(&mut ctx.redis, "sz4096", SIZE_SESSIONS, |i| {
        large_session(i, now, LARGE_JSON)
    });
    // The same 32-character ids, signed the same way: the cookies differ only by the
    // signatures' percent-encoded `+` and `/`.
    let mean = |c: &[HeaderValue]| c.iter().map(HeaderValue::len).sum::<usize>() / c.len();
    let cookie_len = mean(&small);
    assert!(
        mean(&large).abs_diff(cookie_len) <= 2,
        "the cookie is the same size either way"
    );
    let small_len = small_session(0, now).len();
    let large_len = large_session(0, now, LARGE_JSON).len();
    let mut points = Vec::new();
    for (bytes, cookies) in [(small_len, &small), (large_len, &large)] {
        for (cache, on) in [(Cache::On, true), (Cache::Off, false)] {
            let name = format!("gate-size-{bytes}-{}", if on { "cache" } else { "nocache" });
            let mut gate = CurveGate::start(spec, &name, cache, "", "");
            check_session(&name, gate.port, &cookies[0], "user0");
            let target = Target {
                port: gate.port,
                path: "/api/data",
                cookie: None,
                mix: Some(Mix::cycling(cookies)),
            };
            let label = format!(
                "curve: {bytes}-byte sessions, cache {}",
                if on { "on" } else { "off" }
            );
            let w = measure(ctx, &gate, &label, &target, None, true);
            gate.proc.assert_running();
            let m = gate.metrics();
            let entries = metric(&m, "sessiongate_cache_entries");
            points.push(Point {
                bytes,
                cache: on,
                w,
                per_entry: (on && entries > 0.0)
                    .then(|| metric(&m, "sessiongate_cache_bytes") / entries),
                hwm: gate.rss().1,
            });
        }
    }

    let mut md = format!(
        "## Session size: {small_len} bytes and {large_len} bytes of JSON\n\n\
         {SIZE_SESSIONS} sessions of each size in Redis, each request on `/api/data` the next \
         one in turn (so that all of them fit in the cache). The small one is the sessions \
         curve's (`cookie`, `user`, `roles`, `sessiongate`); the large one the same with \
         fields of 48 characters added up to {LARGE_JSON} bytes, as an app's session data. \
         The cookie is the same size either way (`connect.sid=…`, {cookie_len} bytes). Cache on \
         and off as in the sessions curve.\n\n\
         | session JSON | cache | req/s | p50 ms | p99 ms | p99.9 ms | hits | Redis cmds/req | bytes per cached session | peak RSS | failed |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in &points {
        let _ = writeln!(
            md,
            "| {} B | {} | {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {} | {} | {} |",
            fmt_int(p.bytes as f64),
            if p.cache { "on" } else { "off" },
            fmt_int(p.w.rps()),
            p.w.ms(0.5),
            p.w.ms(0.99),
            p.w.ms(0.999),
            p.w.hit_ratio()
                .map_or("—".into(), |h| format!("{:.1} %", h * 100.0)),
            p.w.redis_per_req(),
            p.per_entry
                .map_or("—".into(), |b| format!("{:.2} KB", b / 1000.0)),
            mib(p.hwm),
            p.w.failures(),
        );
    }
    md.push('\n');
    for on in [true, false] {
        let get = |bytes| points.iter().find(|p| p.cache == on && p.bytes == bytes);
        if let (Some(s), Some(l)) = (get(small_len), get(large_len)) {
            let _ = writeln!(
                md,
                "- cache {}: {large_len} B / {small_len} B sessions {:.2}x the throughput, p99 {:.3} ms against {:.3} ms",
                if on { "on" } else { "off" },
                l.w.rps() / s.w.rps(),
                l.w.ms(0.99),
                s.w.ms(0.99),
            );
        }
    }
    let series = |on: bool, f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|p| p.cache == on)
            .map(|p| (p.bytes as f64, f(p)))
            .collect()
    };
    line_chart(
        &ctx.opts.out.join("curve-size.svg"),
        "sessiongate: session size, cache on and off",
        &subtitle(ctx.opts, "sessions cycled, all in the cache when it is on"),
        "session JSON, bytes (log scale)",
        (100.0, 20_000.0),
        &[
            Panel::cache_on_off(series(true, &|p| p.w.rps()), series(false, &|p| p.w.rps())),
            Panel {
                y_label: "latency, ms".into(),
                series: vec![
                    Series {
                        name: "p50, cache on".into(),
                        points: series(true, &|p| p.w.ms(0.5)),
                        color: BLUE_,
                    },
                    Series {
                        name: "p99, cache on".into(),
                        points: series(true, &|p| p.w.ms(0.99)),
                        color: GREEN_,
                    },
                    Series {
                        name: "p50, cache off".into(),
                        points: series(false, &|p| p.w.ms(0.5)),
                        color: ORANGE_,
                    },
                    Series {
                        name: "p99, cache off".into(),
                        points: series(false, &|p| p.w.ms(0.99)),
                        color: GREY_,
                    },
                ],
                baseline: None,
            },
        ],
    );
    md
}
