//! The end-to-end load bench: `cargo bench -p sessiongate-benches --bench load`.
//!
//! It builds the gate (`cargo build --release --bin sessiongate`: the tuned release profile)
//! and, for the `pingora` row, this package's bare Pingora pass-through (`cargo build
//! --release -p sessiongate-benches --bin pingora-passthrough`: the same profile), starts its
//! own `redis-server` on a free loopback port, a fast upstream (hyper, one thread, small fixed
//! body, keep-alive; a separate process) and the gate as a separate process, logs one user in
//! through the gate, then drives keep-alive load with a closed-loop Rust load generator (hyper
//! client, N connections, warm-up then a fixed measured window, latencies in an HdrHistogram)
//! against, one after the other (the `ws-*` rows each with many sessions, see `workset`):
//!
//! | row | what |
//! |---|---|
//! | `upstream` | the upstream directly: the ceiling of this machine and load generator |
//! | `nginx` | nginx plain `proxy_pass`, 1 worker, keep-alive upstream (only when `nginx` is on PATH) |
//! | `pingora` | a bare Pingora pass-through (`pingora_passthrough.rs`): a `ProxyHttp` that forwards every request to the upstream, no routing, no sessions; built and run like the gate (release profile, `threads = 1`): the limit the public route is measured against |
//! | `public` | the gate on a `public` route: no session work, the gate's bare-proxy limit (set against `pingora`), metrics on and the access log off (the defaults) |
//! | `public-log` | the same with `[log] access = "json"` (the lines go to the gate's log file) |
//! | `auth-nocache` | the gate on a `required` route, `[cache] enabled = false`: verify + one Redis round trip (read + touch) per request |
//! | `auth-cache` | the same with `[cache] enabled = true` (`touch_interval = "60s"`) |
//! | `assert-cached` | `auth-cache` with `[identity.assertion]` (ES256 key, `bind_request = false`): the token is signed once per session and audience and reused from its cache |
//! | `assert-bound` | the same with `bind_request = true`: an ES256 signature per request |
//! | `assert-bound-eddsa` | the same with an Ed25519 key (EdDSA), the key the docs advise for `bind_request` |
//! | `pg-nocache`, `pg-cache` | the same two on PostgreSQL (connect-pg-simple's table, the user index and the notify trigger; the test kit's server with `pg_stat_statements`, which counts the statements per request) |
//! | `ws-nocache-cycle`, `ws-cache-cycle` | working set larger than the cache: `BENCH_WORKING_SET` sessions (100 000, about 200 bytes each) in Redis, each request the next one in turn, cache off and on |
//! | `ws-nocache-zipf`, `ws-cache-zipf` | the same sessions drawn from a Zipf distribution (exponent 0.99) |
//! | `express` | express-session + connect-redis + http-proxy-middleware doing the same job (benches/peer/, one Node process, keep-alive agent to the upstream) |
//! | `express-defaults` | the same with http-proxy-middleware's default agent: a new upstream connection per request, as most apps run it |
//! | `fa-nginx` | nginx (1 worker) with `auth_request`, configured by contrib/nginx/ as users copy it, asking the gate's `[forward_auth]` `/auth/request` (cache on, as `auth-cache`) about each request and proxying to the upstream (only when `nginx` is on PATH) |
//! | `fa-nginx-nocache` | the same, the gate's cache off (as `auth-nocache`) |
//! | `fa-express` | the same nginx asking an express-session + connect-redis checker instead (benches/peer/ with `PEER_MODE=auth-request`: 200 with `X-User`, or 401) |
//! | `curve-routes` | growth curve: a gate with 10, 100, 1,000 and 10,000 tenant routes (host and prefix routes, public), load on a host route in the middle of the table; target: each count within 5 % of the 10-route throughput (see `curves`) |
//! | `curve-sessions` | growth curve: 1,000 to 1,000,000 sessions in Redis, each request the next in turn, cache on and off; throughput, the cache's bytes per session (admin `/metrics`), the gate's RSS |
//! | `curve-connections` | growth curve: 0, 100, 1,000 and 10,000 idle keep-alive connections beside the active ones; RSS per idle connection, active throughput and p99; the bare Pingora pass-through measured the same way beside it |
//! | `curve-size` | growth curve: sessions of about 200 bytes and 4 KiB of JSON, cache on and off; throughput, p50, p99 |
//!
//! `pingora`, `public`, `public-log`, `auth-nocache` and `auth-cache` are the head-to-head
//! rows: their servers are all started first, then measured in `BENCH_ROUNDS` interleaved
//! rounds, and each row's req/s and p99 are the medians of its rounds (`rounds`).
//!
//! Every authenticated row is checked first: no cookie gets 401, the cookie gets 200 and the
//! upstream saw `X-User: alice` (a forged `X-User` is replaced); the assertion rows also that
//! the upstream got a token for `alice` (bound: with `htm`/`htu`, a new one per request;
//! cached: the same one again). Every gate row reports the Redis commands per request (INFO
//! commandstats before and after the measured window, script-internal calls included, INFO
//! itself excluded) and the gate's peak RSS (VmHWM); the `fa-*` rows the checker's (the gate
//! or the Node process), not nginx's.
//!
//! Results: a table on stdout, `benches/results/load.md` and `benches/results/load.svg`, and
//! the targets with their measured ratios (and `public / bare Pingora`, a ratio with no
//! target). The `curve-*` rows write `benches/results/curves.md` (a section per curve, which
//! a run of other curves keeps) and `curve-routes.svg`, `curve-sessions.svg`,
//! `curve-connections.svg`, `curve-size.svg`; a run of only `curve-*` rows leaves load.md as
//! it was.
//!
//! The modules: `opts` (the environment), `processes` (Redis, the upstream, the release builds,
//! the gate, the pass-through, nginx, the express peer; all through the test kit's process
//! guard), `probe` (set-up and correctness checks, the invalidation delay), `driver` (the
//! load generator), `rounds` (the head-to-head rows' interleaved rounds), `report` and
//! `targets` (table, load.md, targets), `chart` (load.svg),
//! `curves` (the growth curves, curves.md and their charts).
//!
//! Environment (all optional):
//!
//! - `BENCH_DURATION` measured seconds per row (10), `BENCH_WARMUP` seconds (2),
//!   `BENCH_CONNECTIONS` (32), `BENCH_CLIENT_THREADS` load generator threads (1);
//! - `BENCH_ROWS` a comma list of the rows above (all);
//! - `BENCH_WORKING_SET` sessions in the working-set rows (100000);
//! - `BENCH_ROUNDS` interleaved rounds of the head-to-head rows (3);
//! - `BENCH_CURVE_DURATION` measured seconds (5) and `BENCH_CURVE_WARMUP` warm-up seconds (1)
//!   per point of the `curve-*` rows;
//! - `BENCH_ROLLING=0` runs the gate and the peer with `rolling` off (touch only, no
//!   `Set-Cookie` on every response), to see what the rolling cookie costs;
//! - `BENCH_OUT` where to write load.md and load.svg (benches/results);
//! - `SESSIONGATE_BIN` a gate binary to use instead of building one (relative to the
//!   workspace root);
//! - `BENCH_TIME_LIMIT` seconds the bench may run after the build before it gives up (3600).

mod chart;
mod curves;
mod driver;
mod opts;
mod probe;
mod processes;
mod report;
mod rounds;
mod targets;
mod workset;

use std::time::Duration;

use driver::{client_runtime, Ctx, Target};
use opts::Opts;
use probe::{check_assertion, check_authenticates, invalidation_delay, login, probe, wait_for_200};
use processes::{
    assertion_table, build_gate, build_passthrough, forward_auth_table, key_file, nginx_worker_rss,
    start_express, start_gate, start_gate_on, start_gate_with, start_nginx, start_nginx_auth,
    start_passthrough, start_upstream, upstream_main, BenchPostgres, BenchRedis, Cache, GateSpec,
    PeerMode, StoreAt,
};
use report::{report, Row};
use rounds::Contender;
use sessiongate_testkit::on_path;

const SECRET: &str = "bench-secret-7d1c4f0e9a2b45d6b8e3c1f0a9d8e7b6";
const USER: &str = "alice";
/// The upstream's answer: a small JSON document.
const BODY: &str =
    r#"{"ok":true,"items":[1,2,3],"note":"a small fixed body from the bench upstream"}"#;
const ROLE_ENV: &str = "SG_BENCH_ROLE";

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        match role.as_str() {
            "upstream" => return upstream_main(),
            other => panic!("unknown {ROLE_ENV} `{other}`"),
        }
    }
    let opts = Opts::from_env();
    run(&opts);
}

/// Ends the whole bench (and, through PR_SET_PDEATHSIG, every child) if it runs too long.
fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "load bench: gave up after {}s (BENCH_TIME_LIMIT); children die with this process",
            limit.as_secs()
        );
        std::process::exit(3);
    });
}

fn run(opts: &Opts) {
    let gate_bin = build_gate();
    // The `pingora` row, and the bare Pingora beside the gate in `curve-connections`.
    let passthrough_bin =
        (opts.wants("pingora") || opts.wants("curve-connections")).then(build_passthrough);
    watchdog(opts.time_limit);
    let tmp = tempfile::Builder::new()
        .prefix("sessiongate-load-")
        .tempdir()
        .expect("create a temp dir");
    let dir = tmp.path();

    let redis = BenchRedis::start();
    let (upstream, upstream_port) = start_upstream();
    let mut ctx = Ctx {
        opts,
        rt: client_runtime(opts.client_threads),
        redis,
    };
    let redis_url = ctx.redis.url();
    let spec = GateSpec {
        bin: &gate_bin,
        tmp: dir,
        redis_url: &redis_url,
        upstream: upstream_port,
        rolling: opts.rolling,
    };

    // One user logged in through the gate, used by every authenticated row (gate and express).
    let cookie = {
        let (_gate, port) = start_gate(&spec, "gate-login", Cache::Off);
        login(port)
    };

    let mut rows = Vec::new();

    let mut row = Row::new("upstream", "upstream direct");
    if opts.wants(row.key) {
        let target = Target {
            port: upstream_port,
            path: "/public/data",
            cookie: None,
            mix: None,
        };
        let p = probe(upstream_port, "GET", "/public/data", &[]).unwrap();
        assert_eq!(p.status, 200);
        ctx.measure(&mut row, &target, Some(&upstream));
        rows.push(row);
    }

    let mut row = Row::new("nginx", "nginx proxy_pass (reference)");
    if opts.wants(row.key) {
        if on_path("nginx") {
            let (mut nginx, port) = start_nginx(dir, upstream_port);
            wait_for_200(&mut nginx, port, "/public/ready", Duration::from_secs(10));
            let target = Target {
                port,
                path: "/public/data",
                cookie: None,
                mix: None,
            };
            ctx.measure(&mut row, &target, None);
            // The worker does the work; the master only supervises.
            row.rss_kib = nginx_worker_rss(nginx.pid());
        } else {
            row.skipped = Some("nginx not installed".into());
            eprintln!("load bench: nginx not installed: no nginx reference row");
        }
        rows.push(row);
    }

    // The head-to-head rows: every server up at once, measured in interleaved rounds.
    let mut contenders = Vec::new();
    if let Some(bin) = passthrough_bin.as_ref().filter(|_| opts.wants("pingora")) {
        let (server, port) = start_passthrough(bin, upstream_port);
        contenders.push(Contender {
            row: Row::new("pingora", "bare Pingora pass-through"),
            target: Target::public(port),
            server,
            check: Box::new(|t: &Target| {
                assert_eq!(
                    probe(t.port, "GET", "/public/data", &[]).unwrap().status,
                    200
                )
            }),
        });
    }
    for (key, label, log) in [
        ("public", "gate, public route", ""),
        (
            "public-log",
            "gate, public route, access log on",
            "\n[log]\naccess = \"json\"\n",
        ),
    ] {
        if !opts.wants(key) {
            continue;
        }
        let (server, port) = start_gate_with(&spec, &format!("gate-{key}"), Cache::On, log);
        contenders.push(Contender {
            row: Row::new(key, label),
            target: Target::public(port),
            server,
            check: Box::new(|t: &Target| {
                let p = probe(
                    t.port,
                    "GET",
                    "/public/data",
                    &[("X-User", "mallory"), ("x_user", "m")],
                )
                .unwrap();
                assert_eq!(p.status, 200);
                assert_eq!(
                    p.header("x-seen-user"),
                    None,
                    "client identity headers are stripped"
                );
            }),
        });
    }
    for (key, label, cache) in [
        ("auth-nocache", "gate, auth, cache off", Cache::Off),
        ("auth-cache", "gate, auth, cache on", Cache::On),
    ] {
        if !opts.wants(key) {
            continue;
        }
        let (server, port) = start_gate(&spec, &format!("gate-{key}"), cache);
        let cookie_for_check = cookie.clone();
        contenders.push(Contender {
            row: Row::new(key, label),
            target: Target {
                port,
                path: "/api/data",
                cookie: Some(cookie.clone()),
                mix: None,
            },
            server,
            check: Box::new(move |t: &Target| {
                check_authenticates(label, t.port, &cookie_for_check)
            }),
        });
    }
    rows.extend(rounds::interleaved(&mut ctx, contenders, opts.rounds));

    for (key, label, alg, bind) in [
        (
            "assert-cached",
            "gate, auth, assertion cached",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            false,
        ),
        (
            "assert-bound",
            "gate, auth, assertion bound ES256",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            true,
        ),
        (
            "assert-bound-eddsa",
            "gate, auth, assertion bound EdDSA",
            &rcgen::PKCS_ED25519,
            true,
        ),
    ] {
        if !opts.wants(key) {
            continue;
        }
        let mut row = Row::new(key, label);
        let key_path = key_file(dir, &format!("{key}.pem"), alg);
        let (mut gate, port) = start_gate_with(
            &spec,
            &format!("gate-{key}"),
            Cache::On,
            &assertion_table(&key_path, bind),
        );
        check_authenticates(label, port, &cookie);
        check_assertion(label, port, &cookie, bind);
        let target = Target {
            port,
            path: "/api/data",
            cookie: Some(cookie.clone()),
            mix: None,
        };
        ctx.measure(&mut row, &target, Some(&gate));
        gate.assert_running();
        check_assertion(label, port, &cookie, bind);
        rows.push(row);
    }
    if opts.wants("pg-nocache") || opts.wants("pg-cache") {
        let pg = BenchPostgres::start(&ctx.rt);
        let pg_url = pg.url();
        let store = StoreAt::Postgres(&pg_url);
        // Its own user, logged in through a gate on PostgreSQL.
        let pg_cookie = {
            let (_gate, port) = start_gate_on(&spec, store, "gate-pg-login", Cache::Off, "");
            login(port)
        };
        for (key, label, cache) in [
            (
                "pg-nocache",
                "gate, auth, PostgreSQL, cache off",
                Cache::Off,
            ),
            ("pg-cache", "gate, auth, PostgreSQL, cache on", Cache::On),
        ] {
            let mut row = Row::new(key, label);
            if !opts.wants(key) {
                continue;
            }
            let (mut gate, port) = start_gate_on(&spec, store, &format!("gate-{key}"), cache, "");
            check_authenticates(label, port, &pg_cookie);
            let target = Target {
                port,
                path: "/api/data",
                cookie: Some(pg_cookie.clone()),
                mix: None,
            };
            ctx.measure_counted(&mut row, &target, Some(&gate), |ctx| {
                pg.statement_calls(&ctx.rt)
            });
            gate.assert_running();
            check_authenticates(label, port, &pg_cookie);
            rows.push(row);
        }
    }

    let workset_rows = [
        (
            "ws-nocache-cycle",
            "working set > cache, cycling, cache off",
            Cache::Off,
            false,
        ),
        (
            "ws-cache-cycle",
            "working set > cache, cycling, cache on",
            Cache::On,
            false,
        ),
        (
            "ws-nocache-zipf",
            "working set > cache, Zipf, cache off",
            Cache::Off,
            true,
        ),
        (
            "ws-cache-zipf",
            "working set > cache, Zipf, cache on",
            Cache::On,
            true,
        ),
    ];
    if workset_rows.iter().any(|(k, ..)| opts.wants(k)) {
        let cookies = workset::seed(&mut ctx.redis, opts.working_set);
        for (key, label, cache, zipf) in workset_rows {
            if !opts.wants(key) {
                continue;
            }
            let mut row = Row::new(key, label);
            let (mut gate, port) = start_gate(&spec, &format!("gate-{key}"), cache);
            let target = Target {
                port,
                path: "/api/data",
                cookie: None,
                mix: Some(if zipf {
                    workset::Mix::zipf(&cookies)
                } else {
                    workset::Mix::cycling(&cookies)
                }),
            };
            ctx.measure(&mut row, &target, Some(&gate));
            gate.assert_running();
            rows.push(row);
        }
    }

    for (key, label, keep_alive) in [
        ("express", "express peer (upstream keep-alive)", true),
        ("express-defaults", "express peer (proxy defaults)", false),
    ] {
        let mut row = Row::new(key, label);
        if !opts.wants(key) {
            continue;
        }
        let mode = PeerMode::Proxy { keep_alive };
        match start_express(&redis_url, upstream_port, opts.rolling, mode) {
            Ok((mut node, port)) => {
                check_authenticates(label, port, &cookie);
                let target = Target {
                    port,
                    path: "/api/data",
                    cookie: Some(cookie.clone()),
                    mix: None,
                };
                ctx.measure(&mut row, &target, Some(&node));
                node.assert_running();
            }
            Err(why) => {
                eprintln!("load bench: express peer not run: {why}");
                row.skipped = Some(why);
            }
        }
        rows.push(row);
    }
    // nginx `auth_request` (contrib/nginx as users copy it) in front of the upstream, asking
    // the gate's forward-auth or the express-session checker about every request.
    for (key, label, checker) in [
        (
            "fa-nginx",
            "nginx auth_request + gate, cache on",
            Some(Cache::On),
        ),
        (
            "fa-nginx-nocache",
            "nginx auth_request + gate, cache off",
            Some(Cache::Off),
        ),
        ("fa-express", "nginx auth_request + express", None),
    ] {
        if !opts.wants(key) {
            continue;
        }
        let mut row = Row::new(key, label);
        if !on_path("nginx") {
            row.skipped = Some("nginx not installed".into());
            rows.push(row);
            continue;
        }
        // The checker is the process the row's RSS is read from; nginx is the same in both.
        let checked = match checker {
            Some(cache) => {
                let fa = sessiongate_testkit::free_port();
                let (gate, _) = start_gate_with(
                    &spec,
                    &format!("gate-{key}"),
                    cache,
                    &forward_auth_table(fa),
                );
                Ok((gate, fa))
            }
            None => start_express(
                &redis_url,
                upstream_port,
                opts.rolling,
                PeerMode::AuthRequest,
            ),
        };
        let (mut checker, checker_port) = match checked {
            Ok(c) => c,
            Err(why) => {
                eprintln!("load bench: express checker not run: {why}");
                row.skipped = Some(why);
                rows.push(row);
                continue;
            }
        };
        checker.wait_for_port(checker_port, Duration::from_secs(20));
        let (mut nginx, port) =
            start_nginx_auth(dir, &format!("nginx-{key}"), checker_port, upstream_port);
        wait_for_200(&mut nginx, port, "/public/ready", Duration::from_secs(10));
        check_authenticates(label, port, &cookie);
        let target = Target {
            port,
            path: "/api/data",
            cookie: Some(cookie.clone()),
            mix: None,
        };
        ctx.measure(&mut row, &target, Some(&checker));
        checker.assert_running();
        nginx.assert_running();
        check_authenticates(label, port, &cookie);
        rows.push(row);
    }

    let invalidation = if opts.wants("invalidation") {
        invalidation_delay(&spec, &mut ctx.redis, 50)
    } else {
        String::new()
    };
    // The growth curves (curves.md and curve-*.svg).
    if curves::KEYS.iter().any(|k| opts.wants(k)) {
        curves::run(&mut ctx, &spec, &cookie, passthrough_bin.as_deref());
    }
    drop(upstream);

    report(opts, &rows, &invalidation);
}
