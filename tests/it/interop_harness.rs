//! The real express-session + connect-redis stack (`tests/interop/express/app.js`) and a
//! non-Node backend (`tests/interop/python_backend.py`, Python's standard library only), run
//! as child processes for the interop tests.
//!
//! `npm ci` runs once per test process, from the committed lockfile, when `node_modules` is
//! missing or older than `package-lock.json`. When it fails (no npm, no registry), every
//! interop test fails with npm's own error: they never skip.
//!
//! Just over the usual length: the express app takes many settings, one builder method each.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::harness::{Client, Postgres, ProcessGuard, Redis};

/// How long a child gets to print `LISTENING <port>`: node loads express and connects to
/// Redis first, on a machine that may be busy compiling.
const STARTUP: Duration = Duration::from_secs(60);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn express_dir() -> PathBuf {
    interop_dir().join("express")
}

/// connect-pg-simple's own `table.sql`, as npm installed it.
pub fn connect_pg_simple_table_sql() -> String {
    ensure_npm_ci();
    let path = express_dir().join("node_modules/connect-pg-simple/table.sql");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// npm ci

/// Installs the express app's dependencies from the committed lockfile, once per process.
/// Panics, loudly and with npm's stderr, when that is impossible.
pub fn ensure_npm_ci() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = INSTALLED.get_or_init(npm_ci) {
        panic!("{e}");
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// `node_modules` is current when npm's record of the install (`node_modules/.package-lock.json`,
/// written last by `npm ci`) is at least as new as the committed lockfile.
fn node_modules_current(dir: &Path) -> bool {
    match (
        modified(&dir.join("node_modules/.package-lock.json")),
        modified(&dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => {
            installed >= lock
                && dir
                    .join("node_modules/express-session/package.json")
                    .is_file()
        }
        _ => false,
    }
}

fn npm_ci() -> Result<(), String> {
    let dir = express_dir();
    // Another `cargo test` process may be installing into the same directory: one at a time.
    let _lock = InstallLock::acquire()?;
    if node_modules_current(&dir) {
        return Ok(());
    }
    let banner = "INTEROP TESTS CANNOT RUN: `npm ci` failed";
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "{banner}: npm could not be started in {} ({e}). Install Node.js and npm \
                 (scripts/test does).",
                dir.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "{banner} in {} ({}).\n--- npm stderr ---\n{}\n--- npm stdout ---\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
        ));
    }
    if !node_modules_current(&dir) {
        return Err(format!(
            "{banner}: it exited successfully but left no usable node_modules in {}.\n\
             --- npm stderr ---\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(())
}

/// A directory made with `mkdir` (atomic) as a lock between test processes. A lock older than
/// any install takes was left by a killed process and is broken.
struct InstallLock(PathBuf);

impl InstallLock {
    const STALE: Duration = Duration::from_secs(300);

    fn acquire() -> Result<Self, String> {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-npm-ci.lock");
        let start = std::time::Instant::now();
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(InstallLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = modified(&path).and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > Self::STALE) {
                        let _ = std::fs::remove_dir(&path);
                    } else if start.elapsed() > Self::STALE + Duration::from_secs(60) {
                        return Err(format!("{} is held for too long", path.display()));
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Child processes

/// A server in a child process that prints `LISTENING <port>` once it listens on 127.0.0.1:
/// the test kit's [`ProcessGuard`] (its output in a log file, killed on drop or when the test
/// process dies), and the port it printed.
pub struct ChildServer {
    pub addr: SocketAddr,
    guard: ProcessGuard,
}

impl ChildServer {
    fn spawn(what: &str, mut cmd: Command) -> Self {
        let mut guard = ProcessGuard::spawn(what, &mut cmd);
        let log = guard.log_path().to_owned();
        let listening = || {
            std::fs::read_to_string(&log).ok().and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("LISTENING "))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            })
        };
        guard.wait_until("print `LISTENING <port>`", STARTUP, || {
            listening().is_some()
        });
        let port = listening().expect("the port it printed");
        ChildServer {
            addr: ([127, 0, 0, 1], port).into(),
            guard,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The express app

/// express 5 + express-session + connect-redis on the test's Redis, with `rolling: true`,
/// `resave: false`, `saveUninitialized: false`: `POST /login?user=U&roles=a,b`,
/// `GET /whoami`, `POST /write?key=K&value=V`, `POST /logout`.
pub struct Express {
    pub server: ChildServer,
    pub addr: SocketAddr,
    pub cookie_name: String,
    pub backend: String,
}

impl Express {
    pub fn builder(redis: &Redis) -> ExpressBuilder {
        ExpressBuilder {
            redis_url: format!("unix://{}", redis.socket().display()),
            ..Self::defaults()
        }
    }

    /// Every setting at express-session's and connect-redis's default, on no Redis yet.
    fn defaults() -> ExpressBuilder {
        ExpressBuilder {
            redis_url: String::new(),
            secrets: vec![],
            cookie_name: "connect.sid".into(),
            prefix: "sess:".into(),
            max_age_ms: None,
            same_site: None,
            store_ttl: None,
            backend: "express".into(),
            trust_proxy: false,
            cluster: None,
            pg_url: None,
        }
    }

    /// The same app on connect-pg-simple 10, on the test's PostgreSQL (`public.session`).
    pub fn on_postgres(pg: &Postgres) -> ExpressBuilder {
        ExpressBuilder {
            pg_url: Some(pg.url()),
            ..Self::defaults()
        }
    }

    /// The same app on a Redis Cluster (node-redis's cluster client on `seeds`).
    pub fn on_cluster(seeds: &[String]) -> ExpressBuilder {
        ExpressBuilder {
            cluster: Some(seeds.to_vec()),
            ..Self::defaults()
        }
    }

    /// A browser talking to this app directly, with no cookie yet.
    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.cookie_name)
    }

    /// The same browser as `other` (its cookie), now talking to this app directly.
    pub fn client_like(&self, other: &Client) -> Client {
        let mut c = self.client();
        c.cookie = other.cookie.clone();
        c
    }
}

/// express-session's and connect-redis's options, as the app takes them (environment).
#[derive(Clone)]
pub struct ExpressBuilder {
    redis_url: String,
    secrets: Vec<String>,
    cookie_name: String,
    prefix: String,
    max_age_ms: Option<u64>,
    same_site: Option<String>,
    store_ttl: Option<u64>,
    backend: String,
    trust_proxy: bool,
    cluster: Option<Vec<String>>,
    /// connect-pg-simple on this database instead of Redis.
    pg_url: Option<String>,
}

impl ExpressBuilder {
    /// express-session `secret` (an array: the first signs, all verify).
    pub fn secrets(mut self, s: &[&str]) -> Self {
        self.secrets = s.iter().map(|s| s.to_string()).collect();
        self
    }

    /// express-session `name`.
    pub fn cookie_name(mut self, n: &str) -> Self {
        self.cookie_name = n.into();
        self
    }

    /// connect-redis `prefix`.
    pub fn prefix(mut self, p: &str) -> Self {
        self.prefix = p.into();
        self
    }

    /// express-session `cookie.maxAge`; `None` makes browser-session cookies.
    pub fn max_age_ms(mut self, ms: Option<u64>) -> Self {
        self.max_age_ms = ms;
        self
    }

    /// express-session `cookie.sameSite` (`lax`, `strict`, `none`, `true`).
    pub fn same_site(mut self, s: &str) -> Self {
        self.same_site = Some(s.into());
        self
    }

    /// connect-redis `ttl` in seconds.
    pub fn store_ttl(mut self, secs: u64) -> Self {
        self.store_ttl = Some(secs);
        self
    }

    /// The name the app puts in its answers (`backend`).
    pub fn backend(mut self, name: &str) -> Self {
        self.backend = name.into();
        self
    }

    /// node-redis's cluster client on these seed URLs, instead of the test's Redis.
    pub fn cluster(mut self, seeds: &[String]) -> Self {
        self.cluster = Some(seeds.to_vec());
        self
    }

    /// `app.set("trust proxy", true)`: the app believes `X-Forwarded-Host`.
    pub fn trust_proxy(mut self) -> Self {
        self.trust_proxy = true;
        self
    }

    pub fn start(&self) -> Express {
        ensure_npm_ci();
        assert!(!self.secrets.is_empty(), "express needs secrets");
        let dir = express_dir();
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("app.js"))
            .current_dir(&dir)
            .env("PORT", "0")
            .env("REDIS_URL", &self.redis_url)
            .env(
                "SESSION_SECRETS",
                serde_json::to_string(&self.secrets).unwrap(),
            )
            .env("COOKIE_NAME", &self.cookie_name)
            .env("SESSION_PREFIX", &self.prefix)
            .env("BACKEND_NAME", &self.backend)
            .env_remove("COOKIE_MAX_AGE_MS")
            .env_remove("SAME_SITE")
            .env_remove("STORE_TTL")
            .env_remove("NODE_OPTIONS")
            .env_remove("REDIS_CLUSTER")
            .env_remove("PG_URL")
            .env_remove("PG_SCHEMA")
            .env_remove("PG_TABLE")
            .env_remove("DEBUG")
            .env("TRUST_PROXY", if self.trust_proxy { "1" } else { "0" });
        if let Some(ms) = self.max_age_ms {
            cmd.env("COOKIE_MAX_AGE_MS", ms.to_string());
        }
        if let Some(s) = &self.same_site {
            cmd.env("SAME_SITE", s);
        }
        if let Some(seeds) = &self.cluster {
            cmd.env("REDIS_CLUSTER", serde_json::to_string(seeds).unwrap());
        }
        if let Some(t) = self.store_ttl {
            cmd.env("STORE_TTL", t.to_string());
        }
        if let Some(url) = &self.pg_url {
            cmd.env("PG_URL", url);
        }
        let server = ChildServer::spawn(&format!("the express app ({})", self.backend), cmd);
        Express {
            addr: server.addr,
            server,
            cookie_name: self.cookie_name.clone(),
            backend: self.backend.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Node's own http server

/// An echo server on Node's `http` module: every request gets `{"method", "path",
/// "headers"}`, the headers as Node's parser read them (trimmed, lower-cased names).
pub struct NodeEcho {
    pub server: ChildServer,
    pub addr: SocketAddr,
}

impl NodeEcho {
    pub fn start() -> Self {
        let mut cmd = Command::new("node");
        cmd.arg(interop_dir().join("node_echo.js")).env("PORT", "0");
        let server = ChildServer::spawn("the node echo server", cmd);
        NodeEcho {
            addr: server.addr,
            server,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The Python backend

/// An echo server in Python's standard library: every request gets
/// `{"backend", "method", "path", "headers"}` (header names lowercased).
pub struct Python {
    pub server: ChildServer,
    pub addr: SocketAddr,
    pub backend: String,
}

impl Python {
    pub fn start(backend: &str) -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg(interop_dir().join("python_backend.py"))
            .env("PORT", "0")
            .env("BACKEND_NAME", backend)
            .env("PYTHONUNBUFFERED", "1");
        let server = ChildServer::spawn(&format!("the python backend ({backend})"), cmd);
        Python {
            addr: server.addr,
            server,
            backend: backend.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The JWT-verifying upstream

/// A Node upstream that verifies every request's assertion with `jose` against a JWKS URL
/// (`tests/interop/jwt_upstream.mjs`): 200 `{"ok": true, "claims", "protectedHeader",
/// "url", "token"}` or `{"ok": false, "code"}` (jose's error code).
pub struct JwtUpstream {
    pub server: ChildServer,
    pub addr: SocketAddr,
}

impl JwtUpstream {
    pub fn start(jwks_url: &str, issuer: &str, audience: &str) -> Self {
        ensure_npm_ci();
        let mut cmd = Command::new("node");
        cmd.arg(interop_dir().join("jwt_upstream.mjs"))
            .env("PORT", "0")
            .env("JWKS_URL", jwks_url)
            .env("ISSUER", issuer)
            .env("AUDIENCE", audience);
        let server = ChildServer::spawn("the JWT-verifying node upstream", cmd);
        JwtUpstream {
            addr: server.addr,
            server,
        }
    }
}
