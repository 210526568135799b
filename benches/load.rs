//! The end-to-end load bench: `cargo bench -p sessiongate-benches --bench load`.
//!
//! It builds the gate (`cargo build --release --bin sessiongate`: the tuned release profile),
//! starts its own `redis-server` on a free loopback port, a fast upstream (hyper, one thread,
//! small fixed body, keep-alive; a separate process) and the gate as a separate process, logs
//! one user in through the gate, then drives keep-alive load with a closed-loop Rust load
//! generator (hyper client, N connections, warm-up then a fixed measured window, latencies in
//! an HdrHistogram) against, one after the other:
//!
//! | row | what |
//! |---|---|
//! | `upstream` | the upstream directly: the ceiling of this machine and load generator |
//! | `nginx` | nginx plain `proxy_pass`, 1 worker, keep-alive upstream (only when `nginx` is on PATH) |
//! | `public` | the gate on a `public` route: no session work, the bare-proxy limit |
//! | `auth-nocache` | the gate on a `required` route, `[cache] enabled = false`: verify + one Redis round trip (read + touch) per request |
//! | `auth-cache` | the same with `[cache] enabled = true` (`touch_interval = "60s"`) |
//! | `express` | express-session + connect-redis + http-proxy-middleware doing the same job (benches/peer/, one Node process, keep-alive agent to the upstream) |
//! | `express-defaults` | the same with http-proxy-middleware's default agent: a new upstream connection per request, as most apps run it |
//!
//! Every authenticated row is checked first: no cookie gets 401, the cookie gets 200 and the
//! upstream saw `X-User: alice` (a forged `X-User` is replaced). Every gate row reports the
//! Redis commands per request (INFO commandstats before and after the measured window,
//! script-internal calls included, INFO itself excluded) and the gate's peak RSS (VmHWM).
//!
//! Results: a table on stdout, `benches/results/load.md` and `benches/results/load.svg`, and
//! the targets with their measured ratios.
//!
//! Environment (all optional):
//!
//! - `BENCH_DURATION` measured seconds per row (10), `BENCH_WARMUP` seconds (2),
//!   `BENCH_CONNECTIONS` (32), `BENCH_CLIENT_THREADS` load generator threads (1);
//! - `BENCH_ROWS` a comma list of the rows above (all);
//! - `BENCH_ROLLING=0` runs the gate and the peer with `rolling` off (touch only, no
//!   `Set-Cookie` on every response), to see what the rolling cookie costs;
//! - `BENCH_OUT` where to write load.md and load.svg (benches/results);
//! - `SESSIONGATE_BIN` a gate binary to use instead of building one (relative to the
//!   workspace root);
//! - `BENCH_TIME_LIMIT` seconds the bench may run after the build before it gives up (900).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

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

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

struct Opts {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    client_threads: usize,
    rows: Vec<String>,
    rolling: bool,
    out: PathBuf,
    time_limit: Duration,
}

const ALL_ROWS: &[&str] = &[
    "upstream",
    "nginx",
    "public",
    "auth-nocache",
    "auth-cache",
    "express",
    "express-defaults",
    "invalidation",
];

impl Opts {
    fn from_env() -> Self {
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
            time_limit: Duration::from_secs(num("BENCH_TIME_LIMIT", 900)),
        }
    }

    fn wants(&self, row: &str) -> bool {
        self.rows.iter().any(|r| r == row)
    }
}

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Child processes: killed when dropped (also on panic), and when this process dies
// (PR_SET_PDEATHSIG), so nothing outlives the bench.
// ---------------------------------------------------------------------------------------------

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// SIGTERM first (nginx: its master stops its workers), then SIGKILL.
    graceful: bool,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, tmp: &Path, graceful: bool) -> Proc {
        let log = tmp.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create a log file");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc {
            name: name.into(),
            child,
            log,
            graceful,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the end of the process's log when it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log ({}):\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }

    /// Peak resident set size (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.graceful {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("sessiongate-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn wait_for_port(proc: &mut Proc, port: u16, within: Duration) {
    let until = Instant::now() + within;
    loop {
        proc.assert_running();
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < until,
            "{} did not listen on 127.0.0.1:{port} within {within:?}; its log:\n{}",
            proc.name,
            tail(&proc.log, 40)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream (runs in a child process of this binary: SG_BENCH_ROLE=upstream)
// ---------------------------------------------------------------------------------------------

fn upstream_main() {
    let port: u16 = std::env::var("SG_BENCH_PORT")
        .expect("SG_BENCH_PORT")
        .parse()
        .expect("a port");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the upstream port");
        let body = Bytes::from_static(BODY.as_bytes());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(upstream_answer(&req, body)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// 200 with the fixed body; echoes the identity it was given (`x-seen-user`) so the harness
/// can check the gate injected it. `/login` answers the gate's login directive.
fn upstream_answer(req: &Request<Incoming>, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(user) = req.headers().get("x-user") {
        resp = resp.header("x-seen-user", user.clone());
    }
    if req.uri().path() == "/login" {
        resp = resp.header(
            "x-session-issue",
            format!(r#"{{"user":"{USER}","roles":["admin","reader"]}}"#),
        );
    }
    resp.body(Full::new(body)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A tiny blocking HTTP/1.1 client for set-up and correctness checks
// ---------------------------------------------------------------------------------------------

struct Probe {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Probe {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn probe(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Probe> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    Ok(Probe { status, headers })
}

/// Waits until `path` answers 200 (the gate's health checks have found the upstream).
fn wait_for_200(proc: &mut Proc, port: u16, path: &str, within: Duration) {
    let until = Instant::now() + within;
    loop {
        proc.assert_running();
        if let Ok(p) = probe(port, "GET", path, &[]) {
            if p.status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < until,
            "{} did not answer 200 on {path} within {within:?}; its log:\n{}",
            proc.name,
            tail(&proc.log, 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The authenticated route really authenticates: no cookie 401, the cookie 200 with the
/// identity injected (and a forged one replaced).
fn check_authenticates(name: &str, port: u16, cookie: &str) {
    let anon = probe(port, "GET", "/api/data", &[("X-User", "mallory")]).unwrap();
    assert_eq!(
        anon.status, 401,
        "{name}: a request without the cookie must get 401"
    );
    let authed = probe(
        port,
        "GET",
        "/api/data",
        &[("Cookie", cookie), ("X-User", "mallory")],
    )
    .unwrap();
    assert_eq!(authed.status, 200, "{name}: the cookie must get 200");
    assert_eq!(
        authed.header("x-seen-user"),
        Some(USER),
        "{name}: the upstream must see X-User from the session"
    );
    let forged = probe(
        port,
        "GET",
        "/api/data",
        &[("Cookie", "connect.sid=s%3Aforged.AAAA")],
    )
    .unwrap();
    assert_eq!(forged.status, 401, "{name}: a forged cookie must get 401");
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

struct Redis {
    _proc: Proc,
    port: u16,
    con: redis::Connection,
}

impl Redis {
    fn start(tmp: &Path) -> Redis {
        let port = free_port();
        let mut proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ])
                .arg("--dir")
                .arg(tmp),
            tmp,
            false,
        );
        wait_for_port(&mut proc, port, Duration::from_secs(10));
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let mut con = loop {
            match client.get_connection() {
                Ok(c) => break c,
                Err(e) if Instant::now() > until => panic!("redis-server: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let _: String = redis::cmd("PING").query(&mut con).expect("PING");
        Redis {
            _proc: proc,
            port,
            con,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Calls per command (INFO commandstats), INFO itself left out.
    fn command_calls(&mut self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.con)
            .expect("INFO commandstats");
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                (name != "info").then(|| (name.to_string(), calls))
            })
            .collect()
    }

    fn version() -> String {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| {
                s.split_whitespace()
                    .find_map(|w| w.strip_prefix("v=").map(str::to_string))
            })
            .unwrap_or_else(|| "?".into())
    }
}

// ---------------------------------------------------------------------------------------------
// The gate
// ---------------------------------------------------------------------------------------------

/// `cargo build --release --bin sessiongate`, so the bench runs the shipped profile.
fn build_gate() -> PathBuf {
    if let Some(bin) = std::env::var_os("SESSIONGATE_BIN") {
        // cargo runs benches in the package directory: read a relative path from the
        // workspace root, where the command was most likely typed.
        let bin = PathBuf::from(bin);
        let bin = if bin.is_relative() {
            bench_dir().join("..").join(bin)
        } else {
            bin
        };
        assert!(
            bin.is_file(),
            "SESSIONGATE_BIN: no file at {}",
            bin.display()
        );
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = bench_dir().join("../Cargo.toml");
    eprintln!("load bench: cargo build --release --bin sessiongate (fat LTO: this takes minutes the first time)");
    // A target directory of its own: `cargo bench` builds the shared dependencies with the
    // bench package's features unified in (serde, smallvec, zerocopy), and sharing
    // target/release would make the two builds rebuild each other's Pingora every run.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench_dir().join("../target"))
        .join("load-bench");
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "sessiongate",
            "--bin",
            "sessiongate",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "cargo build --release failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "sessiongate")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no sessiongate executable")
}

#[derive(Clone, Copy)]
enum Cache {
    Off,
    On,
}

const CACHE_BYTES: u64 = 16 * 1024 * 1024;

fn gate_config(port: u16, redis_url: &str, upstream: u16, cache: Cache, rolling: bool) -> String {
    let (enabled, touch_interval) = match cache {
        Cache::Off => (false, "0s"),
        Cache::On => (true, "60s"),
    };
    format!(
        r#"# Generated by benches/load.rs.
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[session]
cookie_name = "connect.sid"
secrets = ["env:SESSION_SECRET"]
store = "redis"
rolling = {rolling}
touch_interval = "{touch_interval}"

[session.cookie]
http_only = true
secure = false
same_site = "lax"
max_age = "30m"

[redis]
url = "{redis_url}"
timeout = "500ms"

[cache]
enabled = {enabled}
max_bytes = {CACHE_BYTES}
ttl = "30s"

[identity.headers]
"X-User" = "/user"
"X-User-Roles" = "/roles"

[[upstream]]
name = "app"
servers = ["127.0.0.1:{upstream}"]

[[route]]
path = "/public/"
upstream = "app"
auth = "public"

[[route]]
path = "/login"
upstream = "app"
auth = "public"
issue_sessions = true

[[route]]
path = "/api/"
upstream = "app"
auth = "required"
"#
    )
}

struct GateSpec<'a> {
    bin: &'a Path,
    tmp: &'a Path,
    redis_url: &'a str,
    upstream: u16,
    rolling: bool,
}

fn start_gate(spec: &GateSpec<'_>, name: &str, cache: Cache) -> (Proc, u16) {
    let GateSpec {
        bin,
        tmp,
        redis_url,
        upstream,
        rolling,
    } = *spec;
    let port = free_port();
    let config = tmp.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        gate_config(port, redis_url, upstream, cache, rolling),
    )
    .unwrap();
    let mut proc = Proc::spawn(
        name,
        Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("SESSION_SECRET", SECRET)
            .env("SESSIONGATE_LOG", "warn"),
        tmp,
        false,
    );
    wait_for_port(&mut proc, port, Duration::from_secs(20));
    wait_for_200(&mut proc, port, "/public/ready", Duration::from_secs(20));
    (proc, port)
}

/// Logs `alice` in through the gate (the upstream answers `X-Session-Issue`): the session is
/// stored exactly as the gate stores every session. Returns the `Cookie` header value.
fn login(port: u16) -> String {
    let p = probe(port, "POST", "/login", &[]).expect("login");
    assert_eq!(p.status, 200, "login through the gate");
    let set_cookie = p
        .headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("connect.sid="))
        .map(|(_, v)| v.clone())
        .expect("the gate set the session cookie at login");
    set_cookie.split(';').next().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// The load generator: closed loop, keep-alive, one request in flight per connection
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct LoadStats {
    /// Latency of every request completed in the window, in microseconds.
    hist: Option<Histogram<u64>>,
    ok: u64,
    non_2xx: u64,
    transport_errors: u64,
    elapsed: Duration,
}

impl LoadStats {
    fn requests(&self) -> u64 {
        self.ok + self.non_2xx
    }
    fn req_per_sec(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }
    fn quantile_ms(&self, q: f64) -> f64 {
        self.hist
            .as_ref()
            .map_or(f64::NAN, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

struct Target {
    port: u16,
    path: &'static str,
    cookie: Option<String>,
}

fn client_runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    }
}

fn drive(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    connections: usize,
    length: Duration,
) -> LoadStats {
    let addr: SocketAddr = ([127, 0, 0, 1], target.port).into();
    let mut headers = vec![
        (
            header::HOST,
            HeaderValue::from_str(&format!("127.0.0.1:{}", target.port)).unwrap(),
        ),
        (
            header::USER_AGENT,
            HeaderValue::from_static("sessiongate-load/1"),
        ),
        (header::ACCEPT, HeaderValue::from_static("application/json")),
    ];
    if let Some(c) = &target.cookie {
        headers.push((
            header::COOKIE,
            HeaderValue::from_str(&format!("_ga=GA1.2.1234567890.1700000000; {c}")).unwrap(),
        ));
    }
    let path = target.path;
    rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let until = start + length;
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let headers = headers.clone();
                tokio::spawn(connection_loop(addr, path, headers, until))
            })
            .collect();
        let mut total = LoadStats {
            hist: Some(new_hist()),
            ..Default::default()
        };
        for t in tasks {
            let s = t.await.expect("a load task panicked");
            total.ok += s.ok;
            total.non_2xx += s.non_2xx;
            total.transport_errors += s.transport_errors;
            total
                .hist
                .as_mut()
                .unwrap()
                .add(s.hist.as_ref().unwrap())
                .unwrap();
        }
        total.elapsed = length;
        total
    })
}

async fn connection_loop(
    addr: SocketAddr,
    path: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    until: tokio::time::Instant,
) -> LoadStats {
    let mut stats = LoadStats {
        hist: Some(new_hist()),
        ..Default::default()
    };
    let hist = stats.hist.as_mut().unwrap();
    let per_request = Duration::from_secs(5);
    'connect: while tokio::time::Instant::now() < until {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                stats.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            stats.transport_errors += 1;
            continue;
        };
        tokio::spawn(conn);
        loop {
            if sender.ready().await.is_err() {
                // The server closed the idle connection after a complete response (a
                // keep-alive request limit): not an error, open another one.
                continue 'connect;
            }
            let mut req = Request::get(path).body(Empty::<Bytes>::new()).unwrap();
            for (k, v) in &headers {
                req.headers_mut().insert(k.clone(), v.clone());
            }
            let t0 = tokio::time::Instant::now();
            if t0 >= until {
                break 'connect;
            }
            let res = tokio::time::timeout(per_request, async {
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            })
            .await;
            let t1 = tokio::time::Instant::now();
            if t1 > until {
                // Straddles the end of the window: neither counted nor timed.
                break 'connect;
            }
            match res {
                Ok(Ok(status)) => {
                    let _ = hist.record((t1 - t0).as_micros().max(1) as u64);
                    if status.is_success() {
                        stats.ok += 1;
                    } else {
                        stats.non_2xx += 1;
                    }
                }
                _ => {
                    stats.transport_errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    stats
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

struct Row {
    key: &'static str,
    label: &'static str,
    stats: Option<LoadStats>,
    /// Redis calls per request and the top commands, when the row talks to Redis.
    redis: Option<(f64, Vec<(String, f64)>)>,
    /// Peak RSS of the server process (KiB).
    rss_kib: Option<u64>,
    /// Why the row has no numbers.
    skipped: Option<String>,
}

impl Row {
    fn new(key: &'static str, label: &'static str) -> Self {
        Row {
            key,
            label,
            stats: None,
            redis: None,
            rss_kib: None,
            skipped: None,
        }
    }
    fn rps(&self) -> Option<f64> {
        self.stats.as_ref().map(|s| s.req_per_sec())
    }
    fn p99(&self) -> Option<f64> {
        self.stats.as_ref().map(|s| s.quantile_ms(0.99))
    }
}

struct Ctx<'a> {
    opts: &'a Opts,
    rt: tokio::runtime::Runtime,
    redis: Redis,
}

impl Ctx<'_> {
    /// Warm-up, then the measured window, with Redis INFO commandstats around the window.
    fn measure(&mut self, row: &mut Row, target: &Target, server: Option<&Proc>) {
        eprintln!("load bench: {} ...", row.label);
        if !self.opts.warmup.is_zero() {
            drive(&self.rt, target, self.opts.connections, self.opts.warmup);
        }
        let before = self.redis.command_calls();
        let stats = drive(&self.rt, target, self.opts.connections, self.opts.duration);
        let after = self.redis.command_calls();
        let n = stats.requests().max(1) as f64;
        let mut per: Vec<(String, f64)> = after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - before.get(k).copied().unwrap_or(0)) as f64 / n,
                )
            })
            .filter(|(_, v)| *v > 0.0)
            .collect();
        per.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = per.iter().map(|(_, v)| v).sum::<f64>() + 0.0;
        row.redis = Some((total, per));
        row.rss_kib = server.and_then(Proc::peak_rss_kib);
        eprintln!(
            "load bench: {}: {:.0} req/s, p99 {:.3} ms, {} non-2xx, {} transport errors",
            row.label,
            stats.req_per_sec(),
            stats.quantile_ms(0.99),
            stats.non_2xx,
            stats.transport_errors
        );
        row.stats = Some(stats);
    }
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
    watchdog(opts.time_limit);
    let tmp = TempDir::new();
    let dir = tmp.0.as_path();

    let redis = Redis::start(dir);
    let upstream_port = free_port();
    let mut upstream = Proc::spawn(
        "upstream",
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, "upstream")
            .env("SG_BENCH_PORT", upstream_port.to_string()),
        dir,
        false,
    );
    wait_for_port(&mut upstream, upstream_port, Duration::from_secs(10));
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

    let mut row = Row::new("public", "gate, public route");
    if opts.wants(row.key) {
        let (mut gate, port) = start_gate(&spec, "gate-public", Cache::On);
        let p = probe(
            port,
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
        let target = Target {
            port,
            path: "/public/data",
            cookie: None,
        };
        ctx.measure(&mut row, &target, Some(&gate));
        gate.assert_running();
        rows.push(row);
    }

    for (key, label, cache) in [
        ("auth-nocache", "gate, auth, cache off", Cache::Off),
        ("auth-cache", "gate, auth, cache on", Cache::On),
    ] {
        let mut row = Row::new(key, label);
        if !opts.wants(key) {
            continue;
        }
        let (mut gate, port) = start_gate(&spec, &format!("gate-{key}"), cache);
        check_authenticates(label, port, &cookie);
        let target = Target {
            port,
            path: "/api/data",
            cookie: Some(cookie.clone()),
        };
        ctx.measure(&mut row, &target, Some(&gate));
        gate.assert_running();
        check_authenticates(label, port, &cookie);
        rows.push(row);
    }

    for (key, label, keep_alive) in [
        ("express", "express peer (upstream keep-alive)", true),
        ("express-defaults", "express peer (proxy defaults)", false),
    ] {
        let mut row = Row::new(key, label);
        if !opts.wants(key) {
            continue;
        }
        match start_express(dir, &redis_url, upstream_port, opts.rolling, keep_alive) {
            Ok((mut node, port)) => {
                wait_for_port(&mut node, port, Duration::from_secs(20));
                check_authenticates(label, port, &cookie);
                let target = Target {
                    port,
                    path: "/api/data",
                    cookie: Some(cookie.clone()),
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
    let invalidation = if opts.wants("invalidation") {
        invalidation_delay(&spec, &mut ctx.redis, 50)
    } else {
        String::new()
    };
    drop(upstream);

    report(opts, &rows, &invalidation);
}

/// How soon a session ended elsewhere (deleted in Redis, as an express app's `destroy()` or
/// another gate does) stops being served from a gate's local cache: the session is served
/// from the cache, deleted, and the gate polled until it answers 401. Each figure is an
/// upper bound: it includes one HTTP request to the gate on a fresh connection.
fn invalidation_delay(spec: &GateSpec<'_>, redis: &mut Redis, rounds: usize) -> String {
    let (gate, port) = start_gate(spec, "gate-invalidation", Cache::On);
    let mut delays = Vec::with_capacity(rounds);
    let mut cached_rounds = 0;
    for _ in 0..rounds {
        let cookie = login(port);
        let value = cookie.split_once('=').unwrap().1;
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .unwrap()
            .into_owned();
        let sid = decoded
            .strip_prefix("s:")
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .0
            .to_string();
        // Warm the cache, and check that it serves: no Redis command for the last requests.
        for _ in 0..3 {
            assert_eq!(
                probe(port, "GET", "/api/data", &[("Cookie", &cookie)])
                    .unwrap()
                    .status,
                200
            );
        }
        let before: u64 = redis.command_calls().values().sum();
        assert_eq!(
            probe(port, "GET", "/api/data", &[("Cookie", &cookie)])
                .unwrap()
                .status,
            200
        );
        if redis.command_calls().values().sum::<u64>() == before {
            cached_rounds += 1;
        }
        let start = Instant::now();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("sess:{sid}"))
            .query(&mut redis.con)
            .unwrap();
        loop {
            if probe(port, "GET", "/api/data", &[("Cookie", &cookie)])
                .unwrap()
                .status
                == 401
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the gate kept serving a deleted session"
            );
        }
        delays.push(start.elapsed());
    }
    drop(gate);
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let line = format!(
        "Revocation reaching a gate's local cache ({rounds} sessions, {cached_rounds} of them served from the cache before the delete): \
         median {:.3} ms, p90 {:.3} ms, max {:.3} ms from the Redis `DEL` to the gate's first 401 \
         (each an upper bound: it includes one HTTP request on a new connection).",
        ms(delays[rounds / 2]),
        ms(delays[rounds * 9 / 10]),
        ms(delays[rounds - 1]),
    );
    eprintln!("load bench: {line}");
    line
}

fn start_nginx(tmp: &Path, upstream: u16) -> (Proc, u16) {
    let port = free_port();
    let prefix = tmp.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let p = prefix.display();
    let conf = format!(
        r#"# Generated by benches/load.rs: plain proxy_pass, one worker, loopback only.
worker_processes 1;
daemon off;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut proc = Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&path),
        tmp,
        true,
    );
    wait_for_port(&mut proc, port, Duration::from_secs(10));
    (proc, port)
}

fn nginx_worker_rss(master: u32) -> Option<u64> {
    let children =
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter_map(|pid| proc_status_kib(pid, "VmHWM:"))
        .max()
}

fn start_express(
    tmp: &Path,
    redis_url: &str,
    upstream: u16,
    rolling: bool,
    keep_alive: bool,
) -> Result<(Proc, u16), String> {
    if !on_path("node") || !on_path("npm") {
        return Err("Node.js/npm not installed".into());
    }
    let peer = bench_dir().join("peer");
    let modules = peer.join("node_modules");
    let lock = peer.join("package-lock.json");
    let stale = match (std::fs::metadata(&modules), std::fs::metadata(&lock)) {
        (Ok(m), Ok(l)) => m.modified().ok() < l.modified().ok(),
        _ => true,
    };
    if stale {
        eprintln!("load bench: npm ci in {}", peer.display());
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&peer)
            .status()
            .map_err(|e| format!("npm ci: {e}"))?;
        if !st.success() {
            return Err(format!("npm ci failed ({st})"));
        }
    }
    let port = free_port();
    let proc = Proc::spawn(
        "express-peer",
        Command::new("node")
            .arg(peer.join("app.js"))
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis_url)
            .env("UPSTREAM", format!("http://127.0.0.1:{upstream}"))
            .env("SESSION_SECRET", SECRET)
            .env("ROLLING", if rolling { "1" } else { "0" })
            .env(
                "PEER_UPSTREAM_KEEPALIVE",
                if keep_alive { "1" } else { "0" },
            )
            .env("NODE_ENV", "production"),
        tmp,
        false,
    );
    Ok((proc, port))
}

// ---------------------------------------------------------------------------------------------
// Report: table, targets, Markdown, SVG
// ---------------------------------------------------------------------------------------------

fn fmt_int(v: f64) -> String {
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

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

struct Verdict {
    text: String,
    pass: Option<bool>,
}

fn targets(rows: &[Row]) -> Vec<Verdict> {
    let get = |k: &str| rows.iter().find(|r| r.key == k && r.stats.is_some());
    let mut out = Vec::new();
    let mut ratio = |name: &str,
                     a: Option<&Row>,
                     b: Option<&Row>,
                     f: &dyn Fn(&Row, &Row) -> (f64, bool),
                     why: &str| {
        match (a, b) {
            (Some(a), Some(b)) => {
                let (r, ok) = f(a, b);
                out.push(Verdict {
                    text: format!("{name}: measured {r:.3}x"),
                    pass: Some(ok),
                });
            }
            _ => out.push(Verdict {
                text: format!("{name}: not evaluated ({why})"),
                pass: None,
            }),
        }
    };
    let rps = |r: &Row| r.rps().unwrap();
    let p99 = |r: &Row| r.p99().unwrap();
    let (public, nocache, cache, nginx) = (
        get("public"),
        get("auth-nocache"),
        get("auth-cache"),
        get("nginx"),
    );
    ratio(
        "auth, cache on >= 0.95x public throughput",
        cache,
        public,
        &|a, b| (rps(a) / rps(b), rps(a) >= 0.95 * rps(b)),
        "a row was not run",
    );
    ratio(
        "auth, cache on p99 <= 1.2x public p99",
        cache,
        public,
        &|a, b| (p99(a) / p99(b), p99(a) <= 1.2 * p99(b)),
        "a row was not run",
    );
    ratio(
        "auth, cache off >= 0.8x public throughput",
        nocache,
        public,
        &|a, b| (rps(a) / rps(b), rps(a) >= 0.8 * rps(b)),
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
        &|a, b| (rps(a) / rps(b), rps(a) >= 0.6 * rps(b)),
        nginx_why,
    );
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
            &|a, b| (rps(a) / rps(b), rps(a) >= 20.0 * rps(b)),
            "the express peer was not run",
        );
        ratio(
            &format!("auth, cache on p99 < 0.1x express peer p99 ({which})"),
            cache,
            get(key),
            &|a, b| (p99(a) / p99(b), p99(a) < 0.1 * p99(b)),
            "the express peer was not run",
        );
    }
    match cache.and_then(|r| r.redis.as_ref()) {
        Some((per, _)) => out.push(Verdict {
            text: format!(
                "<= 0.05 Redis commands per authenticated request, cache on: measured {per:.4}"
            ),
            pass: Some(*per <= 0.05),
        }),
        None => out.push(Verdict {
            text: "<= 0.05 Redis commands per authenticated request, cache on: not evaluated"
                .into(),
            pass: None,
        }),
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
            pass: Some(p <= budget),
        }),
        None => out.push(Verdict {
            text: "gate peak RSS: not evaluated".into(),
            pass: None,
        }),
    }
    out
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v.pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a",
    }
}

fn machine(opts: &Opts) -> Vec<(String, String)> {
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
    ("public", "the gate on an `auth = \"public\"` route: path normalisation, routing, header stripping, no session work. The bare-proxy limit."),
    ("auth-nocache", "the gate on an `auth = \"required\"` route with `[cache] enabled = false`, `touch_interval = \"0s\"`, rolling: cookie verify, one Redis round trip per request (the load+touch script), identity headers, a fresh `Set-Cookie`."),
    ("auth-cache", "the same with `[cache] enabled = true`, `touch_interval = \"60s\"` (the defaults with Redis): sessions come from the local cache."),
    ("express", "express 5 + express-session + connect-redis 9 + http-proxy-middleware 3 in one Node process (benches/peer/), checking the same session in the same Redis (rolling, `resave: false`), 401 without a user, identity headers set, with a keep-alive agent to the upstream."),
    ("express-defaults", "the same app with http-proxy-middleware's default agent: a new upstream connection per request, as most deployments run it."),
];

fn report(opts: &Opts, rows: &[Row], invalidation: &str) {
    let verdicts = targets(rows);
    let public_rps = rows.iter().find(|r| r.key == "public").and_then(Row::rps);

    let mut table = String::new();
    table.push_str("| row | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | errors | Redis cmds/req | peak RSS | vs public |\n");
    table.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        match &r.stats {
            Some(s) => {
                let redis = match (&r.redis, r.key) {
                    (_, "upstream" | "nginx") => "—".to_string(),
                    (Some((t, _)), _) => format!("{t:.3}"),
                    (None, _) => "—".into(),
                };
                let _ = writeln!(
                    table,
                    "| {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} |",
                    r.label,
                    fmt_int(s.req_per_sec()),
                    s.quantile_ms(0.50),
                    s.quantile_ms(0.99),
                    s.quantile_ms(0.999),
                    s.non_2xx,
                    s.transport_errors,
                    redis,
                    r.rss_kib.map_or("—".into(), mib),
                    public_rps.map_or("—".into(), |p| format!("{:.2}x", s.req_per_sec() / p)),
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
        if let (Some((_, per)), false) = (&r.redis, matches!(r.key, "upstream" | "nginx")) {
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

    let mut rows_md = String::new();
    for r in rows {
        if let Some((_, note)) = ROW_NOTES.iter().find(|(k, _)| *k == r.key) {
            let _ = writeln!(rows_md, "- **{}**: {note}", r.label);
        }
    }

    let mut verdict_md = String::new();
    for v in &verdicts {
        let _ = writeln!(verdict_md, "- **{}** {}", verdict_word(v), v.text);
    }
    let machine = machine(opts);
    let mut machine_md = String::new();
    for (k, v) in &machine {
        let _ = writeln!(machine_md, "- {k}: {v}");
    }

    println!();
    println!("{table}");
    println!("Redis commands per request (INFO commandstats; script-internal calls included):");
    print!("{breakdown}");
    println!();
    println!("{invalidation}");
    println!();
    println!("Targets:");
    for v in &verdicts {
        println!("  [{}] {}", verdict_word(v), v.text);
    }
    println!();
    for (k, v) in &machine {
        println!("{k}: {v}");
    }

    let md = format!(
        "# sessiongate load bench\n\n\
         Generated by `cargo bench -p sessiongate-benches --bench load` (benches/load.rs). \
         Every server runs as its own process with one worker (gate `threads = 1`, nginx \
         `worker_processes 1`, one Node process, a one-thread upstream), all on this machine \
         with the load generator, Redis and the upstream: on a small machine they compete for \
         the same cores, the same way for every row.\n\n\
         {table}\n\
         `errors` are transport errors (refused or reset connections, 5 s timeouts); `non-2xx` \
         are answers other than 2xx. Latencies are closed-loop (one request in flight per \
         connection), like wrk's.\n\n\
         {rows_md}\n\
         Redis commands per request (INFO commandstats before and after the measured window; \
         commands run inside Lua scripts count too, INFO itself does not):\n\n\
         {breakdown}\n\
         ## Cache invalidation\n\n{invalidation}\n\n\
         ## Targets\n\n{verdict_md}\n\
         ## Machine\n\n{machine_md}\n\
         ![req/s per row](load.svg)\n"
    );
    std::fs::create_dir_all(&opts.out).expect("create the results directory");
    let md_path = opts.out.join("load.md");
    std::fs::write(&md_path, md).expect("write load.md");
    let svg_path = opts.out.join("load.svg");
    chart(&svg_path, rows, &machine);
    println!("\nwrote {} and {}", md_path.display(), svg_path.display());
}

fn chart(path: &Path, rows: &[Row], machine: &[(String, String)]) {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    let measured: Vec<&Row> = rows.iter().filter(|r| r.stats.is_some()).collect();
    let skipped: Vec<&Row> = rows.iter().filter(|r| r.stats.is_none()).collect();
    let (w, left, bar_max) = (1060i32, 330i32, 460i32);
    let row_h = 40i32;
    let top = 70i32;
    let h = top + row_h * (measured.len() + skipped.len()) as i32 + 56;
    let root = SVGBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let font = |size: f64| ("sans-serif", size).into_font();
    root.draw(&Text::new(
        "sessiongate load bench: requests per second (p99 latency)",
        (16, 24),
        font(22.0).style(FontStyle::Bold).color(&BLACK),
    ))
    .unwrap();
    let cpu = machine
        .iter()
        .find(|(k, _)| k == "CPU")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let load = machine
        .iter()
        .find(|(k, _)| k == "load")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    root.draw(&Text::new(
        format!("{cpu}; {load}"),
        (16, 46),
        font(14.0).color(&RGBColor(90, 90, 90)),
    ))
    .unwrap();
    let max = measured
        .iter()
        .filter_map(|r| r.rps())
        .fold(1.0f64, f64::max);
    let left_style = font(17.0)
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    let value_style = font(16.0)
        .color(&RGBColor(40, 40, 40))
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, r) in measured.iter().enumerate() {
        let y = top + row_h * i as i32;
        let mid = y + row_h / 2;
        let rps = r.rps().unwrap();
        let len = ((rps / max) * bar_max as f64).round().max(1.0) as i32;
        let color = match r.key {
            "upstream" | "nginx" => RGBColor(150, 150, 150),
            "express" | "express-defaults" => RGBColor(230, 140, 40),
            _ => RGBColor(40, 110, 200),
        };
        root.draw(&Text::new(
            r.label.to_string(),
            (left - 10, mid),
            left_style.clone(),
        ))
        .unwrap();
        root.draw(&Rectangle::new(
            [(left, y + 8), (left + len, y + row_h - 8)],
            color.filled(),
        ))
        .unwrap();
        root.draw(&Text::new(
            format!("{} req/s  ·  p99 {:.2} ms", fmt_int(rps), r.p99().unwrap()),
            (left + len + 8, mid),
            value_style.clone(),
        ))
        .unwrap();
    }
    for (j, r) in skipped.iter().enumerate() {
        let mid = top + row_h * (measured.len() + j) as i32 + row_h / 2;
        root.draw(&Text::new(
            r.label.to_string(),
            (left - 10, mid),
            left_style.clone(),
        ))
        .unwrap();
        root.draw(&Text::new(
            r.skipped.clone().unwrap_or_else(|| "not run".into()),
            (left + 8, mid),
            value_style.clone(),
        ))
        .unwrap();
    }
    root.draw(&PathElement::new(
        vec![
            (left, top),
            (left, top + row_h * (measured.len() + skipped.len()) as i32),
        ],
        BLACK.stroke_width(1),
    ))
    .unwrap();
    root.draw(&Text::new(
        "one worker per server, all processes on the same machine; bars are linear in req/s",
        (16, h - 24),
        font(14.0).color(&RGBColor(90, 90, 90)),
    ))
    .unwrap();
    root.present().unwrap();
}
