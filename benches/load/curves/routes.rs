//! The routes curve (`curve-routes`): 10 to 10,000 tenant routes, load on one in the middle.

use std::fmt::Write as _;

use super::chart::{line_chart, Panel, Series, BLUE_, GREEN_, GREY_, ORANGE_};
use super::{measure_interleaved, subtitle, CurveGate, Load, Window, ROUNDS};
use crate::driver::{Ctx, Target};
use crate::probe::probe;
use crate::processes::{Cache, GateSpec};
use crate::report::{fmt_int, mib};
use crate::BODY;

const ROUTE_COUNTS: [usize; 4] = [10, 100, 1_000, 10_000];
/// Within this fraction of the 10-route throughput.
const ROUTES_TOLERANCE: f64 = 0.05;

/// `n` routes in all (the bench config's 3 and the tenants'): per tenant `k` a host route
/// (`t<k>.example.test`, `/app/`) and a prefix route (`/t<k>/`), all public. Returns the
/// routes as TOML and the middle tenant.
fn tenant_routes(n: usize) -> (String, usize) {
    let extra = n - 3;
    let mut toml = String::new();
    for j in 0..extra {
        let k = j / 2;
        if j % 2 == 0 {
            let _ = write!(
                toml,
                "\n[[route]]\nhost = \"t{k}.example.test\"\npath = \"/app/\"\nupstream = \"app\"\nauth = \"public\"\n"
            );
        } else {
            let _ = write!(
                toml,
                "\n[[route]]\npath = \"/t{k}/\"\nupstream = \"app\"\nauth = \"public\"\n"
            );
        }
    }
    (toml, extra / 4)
}

/// Measures the routes curve and draws `curve-routes.svg`; returns its section of curves.md.
pub fn routes(ctx: &mut Ctx<'_>, spec: &GateSpec<'_>) -> String {
    struct Point {
        n: usize,
        w: Window,
        rss: u64,
        hwm: u64,
    }
    // Every count's gate at once, measured in interleaved rounds: the 5 % target is a
    // comparison between them.
    let mut gates = Vec::new();
    for n in ROUTE_COUNTS {
        let (extra, mid) = tenant_routes(n);
        let host = format!("t{mid}.example.test");
        let gate = CurveGate::start(spec, &format!("gate-routes-{n}"), Cache::On, "", &extra);
        // The host route answers its host, and only it; the tenant's prefix route any host.
        let hit = probe(gate.port, "GET", "/app/data", &[("Host", &host)]).unwrap();
        assert_eq!(hit.status, 200, "{n} routes: {host}/app/ is routed");
        assert_eq!(hit.body, BODY.as_bytes(), "{n} routes: the upstream's body");
        let other = probe(
            gate.port,
            "GET",
            "/app/data",
            &[("Host", "nobody.example.test")],
        )
        .unwrap();
        assert_ne!(other.status, 200, "{n} routes: /app/ is bound to its hosts");
        let prefix = probe(gate.port, "GET", &format!("/t{mid}/x"), &[]).unwrap();
        assert_eq!(prefix.status, 200, "{n} routes: /t{mid}/ is routed");
        gates.push((n, host, gate));
    }
    let loads: Vec<Load<'_>> = gates
        .iter()
        .map(|(n, host, gate)| Load {
            gate,
            target: Target {
                port: gate.port,
                path: "/app/data",
                cookie: None,
                mix: None,
            },
            host: Some(host.clone()),
            label: format!("curve: {n} routes, {host}/app/"),
        })
        .collect();
    let windows = measure_interleaved(ctx, &loads);
    drop(loads);
    let mut points = Vec::new();
    for ((n, _, mut gate), w) in gates.into_iter().zip(windows) {
        gate.proc.assert_running();
        let (rss, hwm) = gate.rss();
        points.push(Point { n, w, rss, hwm });
    }

    let base = points[0].w.rps();
    let mut md = format!(
        "## Routes: 10 to 10,000\n\n\
         A multi-tenant table: per tenant `k` a host route (`host = \"t<k>.example.test\"`, \
         `path = \"/app/\"`) and a prefix route (`/t<k>/`), all `auth = \"public\"` to the bench \
         upstream, beside the bench's own three routes. The load is on the host route of the \
         tenant in the middle of the table (`Host: t<k>.example.test`, `GET /app/data`). A \
         lookup is a hash lookup per host label and path segment (src/routes.rs): the \
         throughput should not move with the count. The four gates run side by side and are \
         measured in turns: {ROUNDS} rounds, each giving every gate `BENCH_CURVE_DURATION` / \
         {ROUNDS}, so that other work on the machine weighs on every count alike. RSS is VmRSS \
         after the window, peak RSS VmHWM (start-up, reading the configuration, included). \
         `vs 10 routes` is the median over the rounds of the count's throughput over the \
         10-route gate's in the same round; the target is checked on it.\n\n\
         | routes | req/s | vs 10 routes | whole window vs 10 routes | p50 ms | p99 ms | non-2xx | errors | Redis cmds/req | RSS | peak RSS |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in &points {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3}x | {:.3}x | {:.3} | {:.3} | {} | {} | {:.3} | {} | {} |",
            fmt_int(p.n as f64),
            fmt_int(p.w.rps()),
            p.w.median_ratio(&points[0].w),
            p.w.rps() / base,
            p.w.ms(0.5),
            p.w.ms(0.99),
            p.w.stats.non_2xx,
            p.w.stats.transport_errors,
            p.w.redis_per_req(),
            mib(p.rss),
            mib(p.hwm),
        );
    }
    md.push_str(
        "\nTarget: every count's throughput within 5 % of the 10-route figure (median of the \
         rounds).\n\n",
    );
    for p in &points[1..] {
        let r = p.w.median_ratio(&points[0].w);
        let _ = writeln!(
            md,
            "- **{}** {} routes: {r:.3}x of the 10-route throughput (target ≥ {:.2}x)",
            if r >= 1.0 - ROUTES_TOLERANCE {
                "PASS"
            } else {
                "MISS"
            },
            fmt_int(p.n as f64),
            1.0 - ROUTES_TOLERANCE
        );
    }
    let xy = |f: &dyn Fn(&Point) -> f64| points.iter().map(|p| (p.n as f64, f(p))).collect();
    line_chart(
        &ctx.opts.out.join("curve-routes.svg"),
        "sessiongate: throughput against the number of routes",
        &subtitle(ctx.opts, "public host route of the middle tenant"),
        "routes (log scale)",
        (7.0, 15_000.0),
        &[
            Panel {
                y_label: "req/s".into(),
                series: vec![Series {
                    name: "req/s".into(),
                    points: xy(&|p| p.w.rps()),
                    color: BLUE_,
                }],
                baseline: Some((
                    "10 routes -5 %".into(),
                    base * (1.0 - ROUTES_TOLERANCE),
                    GREY_,
                )),
            },
            Panel {
                y_label: "latency, ms".into(),
                series: vec![
                    Series {
                        name: "p50".into(),
                        points: xy(&|p| p.w.ms(0.5)),
                        color: GREEN_,
                    },
                    Series {
                        name: "p99".into(),
                        points: xy(&|p| p.w.ms(0.99)),
                        color: ORANGE_,
                    },
                ],
                baseline: None,
            },
        ],
    );
    md
}
