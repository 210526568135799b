//! What a run leaves: the table and the targets on stdout, `load.md` and (through
//! [`crate::chart`]) `load.svg` in `BENCH_OUT`, and the machine they were measured on.

use std::fmt::Write as _;
use std::process::Command;

use sessiongate_testkit::{on_path, Redis};

use crate::chart::chart;
use crate::driver::LoadStats;
use crate::opts::Opts;
use crate::rounds::median;
use crate::targets::targets;

pub struct Row {
    pub key: &'static str,
    pub label: &'static str,
    pub stats: Option<LoadStats>,
    /// Redis calls per request and the top commands, when the row talks to Redis.
    pub redis: Option<(f64, Vec<(String, f64)>)>,
    /// Peak RSS of the server process (KiB).
    pub rss_kib: Option<u64>,
    /// Why the row has no numbers.
    pub skipped: Option<String>,
    /// Throughput and p99 of each interleaved round ([`crate::rounds`]); empty for a row
    /// measured once.
    pub rounds: Vec<(f64, f64)>,
}

impl Row {
    pub fn new(key: &'static str, label: &'static str) -> Self {
        Row {
            key,
            label,
            stats: None,
            redis: None,
            rss_kib: None,
            skipped: None,
            rounds: Vec::new(),
        }
    }
    /// Requests per second: the median of the rounds where there were rounds.
    pub fn rps(&self) -> Option<f64> {
        if !self.rounds.is_empty() {
            return median(self.rounds.iter().map(|r| r.0));
        }
        self.stats.as_ref().map(|s| s.req_per_sec())
    }
    /// p99 in milliseconds: the median of the rounds where there were rounds.
    pub fn p99(&self) -> Option<f64> {
        if !self.rounds.is_empty() {
            return median(self.rounds.iter().map(|r| r.1));
        }
        self.stats.as_ref().map(|s| s.quantile_ms(0.99))
    }
}

/// A reference row: no gate in it, no Redis column.
pub fn is_reference(key: &str) -> bool {
    matches!(key, "upstream" | "nginx" | "pingora")
}

pub fn fmt_int(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn machine(opts: &Opts) -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or("?".into(), |k| {
            format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0)
        });
    let cmd = |c: &str, args: &[&str]| -> String {
        Command::new(c)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let s = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&s)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "not installed".into())
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        ("date".into(), cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        ("CPU".into(), format!("{cpu}, {nproc} logical CPUs (nproc)")),
        ("memory".into(), mem),
        ("kernel".into(), format!("Linux {kernel}")),
        (
            "rustc".into(),
            cmd(&std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()), &["--version"]),
        ),
        ("redis-server".into(), Redis::version()),
        ("node".into(), cmd("node", &["--version"])),
        (
            "nginx".into(),
            if on_path("nginx") {
                cmd("nginx", &["-v"])
            } else {
                "not installed".into()
            },
        ),
        (
            "load".into(),
            format!(
                "{} keep-alive connections, {} load-generator thread(s), {}s warm-up + {}s measured per row, closed loop, rolling {}",
                opts.connections,
                opts.client_threads,
                opts.warmup.as_secs(),
                opts.duration.as_secs(),
                if opts.rolling { "on" } else { "off" }
            ),
        ),
    ]
}

/// What each row measures, for load.md.
const ROW_NOTES: &[(&str, &str)] = &[
    ("upstream", "the load generator straight to the upstream: the ceiling of this machine."),
    ("nginx", "nginx plain `proxy_pass` to the same upstream, 1 worker, upstream keep-alive: the reference proxy."),
    ("pingora", "a minimal Pingora `ProxyHttp` (benches/pingora_passthrough.rs) that sends every request to the same upstream: no routing, no session work, no header changes. Built like the gate (release profile, mimalloc) and run like it (`threads = 1`, Pingora's keep-alive on both sides): what the gate's public route is measured against."),
    ("public", "the gate on an `auth = \"public\"` route: path normalisation, routing, header stripping, the forwarding headers and the request id, no session work; metrics on and the access log off (their defaults). The gate's bare-proxy limit, set against the bare Pingora row."),
    ("public-log", "the same with `[log] access = \"json\"`: a JSON line per request, written in batches by the access log's thread to the gate's stdout (a file here)."),
    ("auth-nocache", "the gate on an `auth = \"required\"` route with `[cache] enabled = false`, `touch_interval = \"0s\"`, rolling: cookie verify, one Redis round trip per request (the load+touch script), identity headers, a fresh `Set-Cookie`."),
    ("auth-cache", "the same with `[cache] enabled = true`, `touch_interval = \"60s\"` (the defaults with Redis): sessions come from the local cache."),
    ("assert-cached", "`auth-cache` with `[identity.assertion]` (an ES256 key, `claims = { roles = \"/roles\" }`, `bind_request = false`): every proxied request carries a JWT, signed once per session and audience and reused from the assertion cache for half its `ttl`."),
    ("assert-bound", "the same with `bind_request = true`: `htm`/`htu` in every token, so an ES256 signature per request."),
    ("assert-bound-eddsa", "the same with an Ed25519 key (EdDSA): a signature per request with the key the docs advise for `bind_request`."),
    ("pg-nocache", "`auth-nocache` on PostgreSQL (`store = \"postgres\"`, connect-pg-simple's table with the user index and the notify trigger): its column counts SQL statements per request (`pg_stat_statements`, the listener's once-a-second `SELECT 1` left out) instead of Redis commands."),
    ("pg-cache", "`auth-cache` on PostgreSQL: the cache kept coherent by the notify trigger and the gate's `LISTEN` connection."),
    ("ws-nocache-cycle", "working set larger than the cache: 100 000 sessions (`BENCH_WORKING_SET`) of about 200 bytes in Redis, 18 times what 16 MiB of cache hold; each request carries the next session in turn; cache off (as `auth-nocache`). Its peak RSS is the baseline of the cache's memory."),
    ("ws-cache-cycle", "the same, cache on (as `auth-cache`): every request misses; the cache must cost nothing, and its RSS over the cache-off row is what the cache holds."),
    ("ws-nocache-zipf", "the same sessions drawn from a Zipf distribution (exponent 0.99, YCSB's), cache off."),
    ("ws-cache-zipf", "the same, cache on: the hot sessions stay cached."),
    ("express", "express 5 + express-session + connect-redis 9 + http-proxy-middleware 3 in one Node process (benches/peer/), checking the same session in the same Redis (rolling, `resave: false`), 401 without a user, identity headers set, with a keep-alive agent to the upstream."),
    ("express-defaults", "the same app with http-proxy-middleware's default agent: a new upstream connection per request, as most deployments run it."),
    ("fa-nginx", "nginx (1 worker) with `auth_request`, set up with contrib/nginx/ (site.conf and its two snippets, addresses put in): every request is first asked of the gate's `[forward_auth]` `/auth/request` (one thread, cache on as `auth-cache`), then proxied to the upstream with the identity the gate answered. The snippets keep connections to the gate and the upstream alive (`keepalive 32`). Peak RSS is the gate's."),
    ("fa-nginx-nocache", "the same, the gate's cache off (as `auth-nocache`): one Redis round trip per request, as the express checker makes."),
    ("fa-express", "the same nginx and snippets asking an express-session + connect-redis checker instead (benches/peer/ with `PEER_MODE=auth-request`, one Node process: 200 with `X-User`/`X-User-Roles`, or 401; the same Redis, session and secret). Peak RSS is the Node process's."),
];

pub fn report(opts: &Opts, rows: &[Row], invalidation: &str) {
    if rows.is_empty() && invalidation.is_empty() {
        // Only the growth curves ran (curves.md): the table's results stay as they were.
        println!("\nno row of load.md was run: it is left as it was");
        return;
    }
    let verdicts = targets(rows);
    let public_rps = rows.iter().find(|r| r.key == "public").and_then(Row::rps);

    let mut table = String::new();
    table.push_str("| row | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | errors | Redis cmds/req | peak RSS | vs public |\n");
    table.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        match &r.stats {
            Some(s) => {
                let redis = match &r.redis {
                    _ if is_reference(r.key) => "—".to_string(),
                    Some((t, _)) => format!("{t:.3}"),
                    None => "—".into(),
                };
                let _ = writeln!(
                    table,
                    "| {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} |",
                    r.label,
                    fmt_int(r.rps().unwrap_or(0.0)),
                    s.quantile_ms(0.50),
                    r.p99().unwrap_or(0.0),
                    s.quantile_ms(0.999),
                    s.non_2xx,
                    s.transport_errors,
                    redis,
                    r.rss_kib.map_or("—".into(), mib),
                    public_rps.map_or("—".into(), |p| format!(
                        "{:.2}x",
                        r.rps().unwrap_or(0.0) / p
                    )),
                );
            }
            None => {
                let _ = writeln!(
                    table,
                    "| {} | {} | | | | | | | | |",
                    r.label,
                    r.skipped.as_deref().unwrap_or("not run")
                );
            }
        }
    }

    let mut breakdown = String::new();
    for r in rows {
        if let (Some((_, per)), false) = (&r.redis, is_reference(r.key)) {
            if r.stats.is_none() {
                continue;
            }
            let parts: Vec<String> = per
                .iter()
                .take(8)
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect();
            let _ = writeln!(
                breakdown,
                "- {}: {}",
                r.label,
                if parts.is_empty() {
                    "none".into()
                } else {
                    parts.join(", ")
                }
            );
        }
    }

    let mut rounds_md = String::new();
    for r in rows.iter().filter(|r| !r.rounds.is_empty()) {
        let each: Vec<String> = r
            .rounds
            .iter()
            .map(|(rps, p99)| format!("{} req/s, p99 {p99:.3} ms", fmt_int(*rps)))
            .collect();
        let _ = writeln!(rounds_md, "- {}: {}", r.label, each.join("; "));
    }
    if !rounds_md.is_empty() {
        rounds_md = format!(
            "Interleaved rounds (req/s and p99 of the head-to-head rows are the medians of these; \
             every server up throughout, each round measuring each row in turn):\n\n{rounds_md}\n"
        );
    }

    let mut rows_md = String::new();
    for r in rows {
        if let Some((_, note)) = ROW_NOTES.iter().find(|(k, _)| *k == r.key) {
            let _ = writeln!(rows_md, "- **{}**: {note}", r.label);
        }
    }

    let mut verdict_md = String::new();
    for v in &verdicts {
        let _ = writeln!(verdict_md, "- **{}** {}", v.mark.word(), v.text);
    }
    let machine = machine(opts);
    let mut machine_md = String::new();
    for (k, v) in &machine {
        let _ = writeln!(machine_md, "- {k}: {v}");
    }

    println!();
    println!("{table}");
    print!("{rounds_md}");
    println!("Redis commands per request (INFO commandstats; script-internal calls included):");
    print!("{breakdown}");
    println!();
    println!("{invalidation}");
    println!();
    println!("Targets:");
    for v in &verdicts {
        println!("  [{}] {}", v.mark.word(), v.text);
    }
    println!();
    for (k, v) in &machine {
        println!("{k}: {v}");
    }

    let md = format!(
        "# sessiongate load bench\n\n\
         Generated by `cargo bench -p sessiongate-benches --bench load` (benches/load/). \
         Every server runs as its own process with one worker (gate and bare Pingora \
         `threads = 1`, nginx `worker_processes 1`, one Node process, a one-thread upstream), all on this machine \
         with the load generator, Redis and the upstream: on a small machine they compete for \
         the same cores, the same way for every row.\n\n\
         {table}\n\
         `errors` are transport errors (refused or reset connections, 5 s timeouts); `non-2xx` \
         are answers other than 2xx. Latencies are closed-loop (one request in flight per \
         connection), like wrk's.\n\n\
         {rounds_md}\
         {rows_md}\n\
         Redis commands per request (INFO commandstats before and after the measured window; \
         commands run inside Lua scripts count too, INFO itself does not):\n\n\
         {breakdown}\n\
         ## Cache invalidation\n\n{invalidation}\n\n\
         ## Targets\n\n{verdict_md}\n\
         ## Machine\n\n{machine_md}\n\
         ![req/s per row](load.svg)\n\n\
         Growth curves (routes, sessions, idle connections, session size; rows `curve-*`): \
         [curves.md](curves.md).\n"
    );
    std::fs::create_dir_all(&opts.out).expect("create the results directory");
    let md_path = opts.out.join("load.md");
    std::fs::write(&md_path, md).expect("write load.md");
    let svg_path = opts.out.join("load.svg");
    chart(&svg_path, rows, &machine);
    println!("\nwrote {} and {}", md_path.display(), svg_path.display());
}
