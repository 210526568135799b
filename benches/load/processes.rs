//! The servers the bench measures and the ones they need, each its own process (started with
//! the test kit's [`ProcessGuard`], so none outlives the bench): Redis, the upstream (this
//! binary again, in the `upstream` role), the gate and the bare Pingora pass-through (both
//! built here with the release profile), nginx and the express peer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use sessiongate_testkit::{free_port, on_path, status_kib, Postgres, ProcessGuard, Redis};

use crate::opts::bench_dir;
use crate::probe::wait_for_200;
use crate::{BODY, ROLE_ENV, SECRET, USER};

// ---------------------------------------------------------------------------------------------
// The upstream (runs in a child process of this binary: SG_BENCH_ROLE=upstream)
// ---------------------------------------------------------------------------------------------

pub fn start_upstream() -> (ProcessGuard, u16) {
    let port = free_port();
    let mut upstream = ProcessGuard::spawn(
        "upstream",
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, "upstream")
            .env("SG_BENCH_PORT", port.to_string()),
    );
    upstream.wait_for_port(port, Duration::from_secs(10));
    (upstream, port)
}

/// The `upstream` role: one thread, keep-alive, the fixed body.
pub fn upstream_main() {
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
        sessiongate_testkit::serve(listener, move |req| upstream_answer(req, body.clone())).await;
    });
}

/// 200 with the fixed body; echoes the identity it was given (`x-seen-user`) so the harness
/// can check the gate injected it, and the assertion (`x-seen-assertion`) when the request
/// carries `x-echo-assertion`. `/login` answers the gate's login directive.
fn upstream_answer(req: &Request<Incoming>, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(user) = req.headers().get("x-user") {
        resp = resp.header("x-seen-user", user.clone());
    }
    // Only when the probe asks: the measured requests carry no token back.
    if req.headers().contains_key("x-echo-assertion") {
        if let Some(token) = req.headers().get("x-session-assertion") {
            resp = resp.header("x-seen-assertion", token.clone());
        }
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
// Redis
// ---------------------------------------------------------------------------------------------

/// The kit's `redis-server` on a loopback port, and one connection kept open for INFO and for
/// the invalidation's DEL (opening a connection runs commands of its own).
pub struct BenchRedis {
    server: Redis,
    pub con: redis::Connection,
}

impl BenchRedis {
    pub fn start() -> Self {
        let server = Redis::start_tcp();
        let con = server.conn();
        BenchRedis { server, con }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Calls per command (INFO commandstats), INFO itself left out.
    pub fn command_calls(&mut self) -> BTreeMap<String, u64> {
        Redis::command_calls(&mut self.con)
    }
}

/// A private PostgreSQL with `pg_stat_statements`, which counts what the gate asks of it.
pub struct BenchPostgres {
    pub server: Postgres,
}

impl BenchPostgres {
    pub fn start(rt: &tokio::runtime::Runtime) -> Self {
        let server = Postgres::start_with(&["shared_preload_libraries=pg_stat_statements"]);
        rt.block_on(async {
            server
                .client()
                .await
                .batch_execute("CREATE EXTENSION pg_stat_statements")
                .await
                .expect("pg_stat_statements (Debian's postgresql package ships it)")
        });
        BenchPostgres { server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Calls per statement (the first words of its text), the bench's own queries and the
    /// listening connection's once-a-second `SELECT 1` left out.
    pub fn statement_calls(&self, rt: &tokio::runtime::Runtime) -> BTreeMap<String, u64> {
        rt.block_on(async {
            let db = self.server.client().await;
            let rows = db
                .query(
                    "SELECT query, calls::int8 FROM pg_stat_statements \
                     WHERE query NOT LIKE '%pg_stat_statements%' AND query <> 'SELECT 1'",
                    &[],
                )
                .await
                .expect("pg_stat_statements");
            let mut out = BTreeMap::new();
            for r in rows {
                let text: String = r.get(0);
                let name: String = text
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ");
                *out.entry(name).or_insert(0) += r.get::<_, i64>(1) as u64;
            }
            out
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Release builds: the gate, and the bare Pingora pass-through
// ---------------------------------------------------------------------------------------------

/// `cargo build --release --bin sessiongate`, so the bench runs the shipped profile.
pub fn build_gate() -> PathBuf {
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
    cargo_build_release("sessiongate", "sessiongate")
}

/// `cargo build --release -p sessiongate-benches --bin pingora-passthrough`: the same
/// profile (the workspace's `[profile.release]`) and target directory as the gate.
pub fn build_passthrough() -> PathBuf {
    cargo_build_release("sessiongate-benches", "pingora-passthrough")
}

fn cargo_build_release(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = bench_dir().join("../Cargo.toml");
    eprintln!("load bench: cargo build --release -p {package} --bin {bin} (fat LTO: this takes minutes the first time)");
    // A target directory of its own: `cargo bench` builds the shared dependencies with the
    // bench package's features unified in (serde, smallvec, zerocopy), and sharing
    // target/release would make the two builds rebuild each other's Pingora every run.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench_dir().join("../target"))
        .join("load-bench");
    let out = Command::new(cargo)
        .args(["build", "--release", "-p", package, "--bin", bin])
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
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no {bin} executable"))
}

// ---------------------------------------------------------------------------------------------
// The gate and the bare Pingora pass-through
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub enum Cache {
    Off,
    On,
}

pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Where a bench gate keeps its sessions.
#[derive(Clone, Copy)]
pub enum StoreAt<'a> {
    Redis(&'a str),
    /// connect-pg-simple's table at this URL, with the user index and the notify trigger.
    Postgres(&'a str),
}

impl StoreAt<'_> {
    fn toml(&self) -> (&'static str, String) {
        match self {
            StoreAt::Redis(url) => ("redis", format!("[redis]\nurl = \"{url}\"\ntimeout = \"500ms\"")),
            StoreAt::Postgres(url) => (
                "postgres",
                format!(
                    "[postgres]\nurl = \"{url}\"\ntimeout = \"500ms\"\ncreate_table = true\ncreate_user_index = true\ncreate_notify_trigger = true"
                ),
            ),
        }
    }
}

pub fn gate_config(
    port: u16,
    store: StoreAt<'_>,
    upstream: u16,
    cache: Cache,
    rolling: bool,
    extra: &str,
) -> String {
    let (store_kind, store_section) = store.toml();
    let (enabled, touch_interval) = match cache {
        Cache::Off => (false, "0s"),
        Cache::On => (true, "60s"),
    };
    format!(
        r#"# Generated by benches/load/processes.rs.
[server]
listen = ["127.0.0.1:{port}"]
threads = 1

[session]
cookie_name = "connect.sid"
secrets = ["env:SESSION_SECRET"]
store = "{store_kind}"
rolling = {rolling}
touch_interval = "{touch_interval}"

[session.cookie]
http_only = true
secure = false
same_site = "lax"
max_age = "30m"

{store_section}

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
{extra}"#
    )
}

/// `[forward_auth]` on `port`, believing the local nginx.
pub fn forward_auth_table(port: u16) -> String {
    format!("\n[forward_auth]\nlisten = [\"127.0.0.1:{port}\"]\ntrusted = [\"127.0.0.1\"]\n")
}

/// `[identity.assertion]` signed with the PKCS#8 PEM key at `key`; `bind_request` signs one
/// per request, otherwise one per session is cached.
pub fn assertion_table(key: &Path, bind_request: bool) -> String {
    format!(
        "\n[identity.assertion]\nkey = \"file:{}\"\nissuer = \"https://gate.bench\"\nclaims = {{ roles = \"/roles\" }}\nbind_request = {bind_request}\n",
        key.display()
    )
}

/// A fresh PKCS#8 PEM private key for `alg` (rcgen's P-256 for ES256, Ed25519 for EdDSA).
pub fn key_file(tmp: &Path, name: &str, alg: &'static rcgen::SignatureAlgorithm) -> PathBuf {
    let pem = rcgen::KeyPair::generate_for(alg)
        .expect("generate a key")
        .serialize_pem();
    let path = tmp.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

pub struct GateSpec<'a> {
    pub bin: &'a Path,
    pub tmp: &'a Path,
    pub redis_url: &'a str,
    pub upstream: u16,
    pub rolling: bool,
}

pub fn start_gate(spec: &GateSpec<'_>, name: &str, cache: Cache) -> (ProcessGuard, u16) {
    start_gate_on(spec, StoreAt::Redis(spec.redis_url), name, cache, "")
}

/// The gate with `extra` (whole TOML tables) added to its configuration.
pub fn start_gate_with(
    spec: &GateSpec<'_>,
    name: &str,
    cache: Cache,
    extra: &str,
) -> (ProcessGuard, u16) {
    start_gate_on(spec, StoreAt::Redis(spec.redis_url), name, cache, extra)
}

/// The same, on the store given.
pub fn start_gate_on(
    spec: &GateSpec<'_>,
    store: StoreAt<'_>,
    name: &str,
    cache: Cache,
    extra: &str,
) -> (ProcessGuard, u16) {
    let GateSpec {
        bin,
        tmp,
        upstream,
        rolling,
        ..
    } = *spec;
    let port = free_port();
    let config = tmp.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        gate_config(port, store, upstream, cache, rolling, extra),
    )
    .unwrap();
    let mut proc = ProcessGuard::spawn(
        name,
        Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("SESSION_SECRET", SECRET)
            .env("SESSIONGATE_LOG", "warn"),
    );
    proc.wait_for_port(port, Duration::from_secs(20));
    wait_for_200(&mut proc, port, "/public/ready", Duration::from_secs(20));
    (proc, port)
}

/// The bare Pingora pass-through (benches/pingora_passthrough.rs) in front of the upstream.
pub fn start_passthrough(bin: &Path, upstream: u16) -> (ProcessGuard, u16) {
    let port = free_port();
    let mut proc = ProcessGuard::spawn(
        "pingora-passthrough",
        Command::new(bin)
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("127.0.0.1:{upstream}")),
    );
    proc.wait_for_port(port, Duration::from_secs(20));
    wait_for_200(&mut proc, port, "/public/ready", Duration::from_secs(20));
    (proc, port)
}

// ---------------------------------------------------------------------------------------------
// nginx and the express peer
// ---------------------------------------------------------------------------------------------

pub fn start_nginx(tmp: &Path, upstream: u16) -> (ProcessGuard, u16) {
    let port = free_port();
    let server = format!(
        r#"    upstream app {{
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
"#
    );
    run_nginx(
        &tmp.join("nginx"),
        "plain proxy_pass, one worker, loopback only",
        &server,
        port,
    )
}

/// nginx with `auth_request` as users set it up: contrib/nginx/site.conf and its two snippets
/// as they are, with only the addresses put in (`checker` is asked at `/auth/request`, the
/// app is the bench upstream), as tests/it/forward_auth.rs runs them. The snippets open a
/// connection per subrequest and per proxied request (no `keepalive` upstream blocks).
pub fn start_nginx_auth(
    tmp: &Path,
    name: &str,
    checker: u16,
    upstream: u16,
) -> (ProcessGuard, u16) {
    let port = free_port();
    let prefix = tmp.join(name);
    std::fs::create_dir_all(&prefix).unwrap();
    let p = prefix.display().to_string();
    let contrib = |file: &str| {
        std::fs::read_to_string(bench_dir().join("../contrib/nginx").join(file))
            .unwrap_or_else(|e| panic!("read contrib/nginx/{file}: {e}"))
            .replace("127.0.0.1:9090", &format!("127.0.0.1:{checker}"))
            .replace("127.0.0.1:3000", &format!("127.0.0.1:{upstream}"))
            .replace("/etc/nginx/snippets/", &format!("{p}/"))
    };
    for snippet in ["sessiongate.conf", "sessiongate-location.conf"] {
        std::fs::write(prefix.join(snippet), contrib(snippet)).unwrap();
    }
    let site =
        contrib("site.conf").replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};"));
    run_nginx(
        &prefix,
        "contrib/nginx auth_request, one worker, loopback only",
        &site,
        port,
    )
}

/// nginx (one worker, no access log, client keep-alive without a request limit) serving
/// `servers` (what goes in its `http` block), with its files under `prefix`.
fn run_nginx(prefix: &Path, what: &str, servers: &str, port: u16) -> (ProcessGuard, u16) {
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let p = prefix.display();
    let conf = format!(
        r#"# Generated by benches/load/processes.rs: {what}.
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
{servers}}}
"#
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut proc = ProcessGuard::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&path),
    )
    .graceful();
    proc.wait_for_port(port, Duration::from_secs(10));
    (proc, port)
}

/// The worker does the work; the master only supervises.
pub fn nginx_worker_rss(master: u32) -> Option<u64> {
    let children =
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter_map(|pid| status_kib(pid, "VmHWM:"))
        .max()
}

/// What the express peer does with a request that has its session.
#[derive(Clone, Copy)]
pub enum PeerMode {
    /// Proxies it to the upstream (http-proxy-middleware); `keep_alive`: with a keep-alive
    /// agent rather than the middleware's default of a connection per request.
    Proxy { keep_alive: bool },
    /// Answers nginx's `auth_request` subrequest: 200 with the identity headers, or 401.
    AuthRequest,
}

pub fn start_express(
    redis_url: &str,
    upstream: u16,
    rolling: bool,
    mode: PeerMode,
) -> Result<(ProcessGuard, u16), String> {
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
    let mut cmd = Command::new("node");
    cmd.arg(peer.join("app.js"))
        .env("PORT", port.to_string())
        .env("REDIS_URL", redis_url)
        .env("SESSION_SECRET", SECRET)
        .env("ROLLING", if rolling { "1" } else { "0" })
        .env("NODE_ENV", "production");
    match mode {
        PeerMode::Proxy { keep_alive } => cmd
            .env("UPSTREAM", format!("http://127.0.0.1:{upstream}"))
            .env(
                "PEER_UPSTREAM_KEEPALIVE",
                if keep_alive { "1" } else { "0" },
            ),
        PeerMode::AuthRequest => cmd.env("PEER_MODE", "auth-request"),
    };
    let mut proc = ProcessGuard::spawn("express-peer", &mut cmd);
    proc.wait_for_port(port, Duration::from_secs(20));
    Ok((proc, port))
}
