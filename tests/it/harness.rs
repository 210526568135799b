//! One harness for every integration test: a real `redis-server` on a unix socket in a temp
//! dir, real HTTP upstreams, and the real gate running in-process on a free port. Each test
//! gets its own of each, so tests run in parallel without sharing state.
//!
//! What is not about the gate (child processes, `redis-server`, the echo upstream, ports,
//! waiting) comes from the test kit (`testkit/`, shared with the benches) and is re-exported
//! here, so that a test module needs only `use crate::harness::*;`. This file keeps what is:
//! the gate's config builder, the in-process gate, an HTTP client that keeps its cookie,
//! express-session's signing, and TLS material. It is long because every test module leans
//! on it; each part is small and stands alone.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use hmac::Mac;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use serde_json::{json, Value};

pub use sessiongate_testkit::{
    free_addr, free_port, wait_for, Postgres, ProcessGuard, Redis, RedisCluster, RedisSentinel,
    Upstream,
};

mod browser;
mod relay;
pub use browser::Browser;
pub use relay::FreezableRelay;

pub const SECRET: &str = "test secret, first";
pub const OLD_SECRET: &str = "test secret, retired";

// ---------------------------------------------------------------------------------------
// The gate

/// Writes a `proxy.toml` for a test, starting from defaults that every test shares.
pub struct GateBuilder {
    store: Option<String>,
    secrets: Vec<String>,
    session: Vec<String>,
    cookie: Vec<String>,
    server: Vec<String>,
    identity: Vec<String>,
    upstreams: Vec<(String, Vec<SocketAddr>)>,
    routes: Vec<String>,
    admin_token: Option<String>,
    tail: Vec<String>,
    cache: bool,
    cache_lines: Vec<String>,
    log: Vec<String>,
    /// `[forward_auth]`: its listener and `trusted`.
    forward_auth: Option<(SocketAddr, Vec<String>)>,
    /// `[postgres]` lines that replace the harness's defaults for the same keys.
    postgres_lines: Vec<String>,
}

impl GateBuilder {
    pub fn new() -> Self {
        GateBuilder {
            store: None,
            secrets: vec![SECRET.into()],
            session: vec![],
            cookie: vec![],
            server: vec![],
            identity: vec![
                r#""X-User" = "/user""#.into(),
                r#""X-User-Roles" = "/roles""#.into(),
            ],
            upstreams: vec![],
            routes: vec![],
            admin_token: None,
            tail: vec![],
            cache: false,
            cache_lines: vec![],
            log: vec![],
            forward_auth: None,
            postgres_lines: vec![],
        }
    }

    /// A forward-auth listener believing `trusted` (CIDRs or addresses).
    pub fn forward_auth(mut self, trusted: &[&str]) -> Self {
        self.forward_auth = Some((free_addr(), trusted.iter().map(|t| t.to_string()).collect()));
        self
    }

    /// A `key = value` line for `[log]`.
    pub fn log(mut self, line: &str) -> Self {
        self.log.push(line.into());
        self
    }

    /// Redis Sentinel: the sentinel at `sentinel_url` names the master `master`.
    pub fn redis_sentinel(self, sentinel_url: &str, master: &str) -> Self {
        self.redis_sentinels(&[sentinel_url.to_owned()], master, None)
    }

    /// Redis Sentinel: the sentinels at `urls`, asked in order, with their `password`.
    pub fn redis_sentinels(
        mut self,
        urls: &[String],
        master: &str,
        password: Option<&str>,
    ) -> Self {
        let nodes: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        let password = password.map_or(String::new(), |p| format!(", password = {p:?}"));
        self.store = Some(format!(
            "sentinel:{{ master = {master:?}, nodes = [{}]{password} }}",
            nodes.join(", ")
        ));
        self
    }

    /// A Redis Cluster, by its seed nodes.
    pub fn redis_cluster(mut self, seeds: &[String]) -> Self {
        self.store = Some(format!("cluster:{}", seeds.join(",")));
        self
    }

    pub fn redis(mut self, r: &Redis) -> Self {
        self.store = Some(r.url());
        self
    }

    /// The PostgreSQL store on a harness server: the table, the user index and the notify
    /// trigger made by the gate, unless [`postgres_setting`](Self::postgres_setting) says
    /// otherwise.
    pub fn postgres(mut self, pg: &Postgres) -> Self {
        self.store = Some(format!("postgres:{}", pg.url()));
        self
    }

    /// A `key = value` line for `[postgres]`, replacing the harness's default for that key.
    pub fn postgres_setting(mut self, line: &str) -> Self {
        self.postgres_lines.push(line.into());
        self
    }

    /// Redis at this URL (a [`FreezableRelay`] in front of a harness Redis, say).
    pub fn redis_url(mut self, url: &str) -> Self {
        self.store = Some(url.into());
        self
    }

    /// Redis when given, else the embedded store: for tests that run on both.
    pub fn store(self, r: Option<&Redis>) -> Self {
        match r {
            Some(r) => self.redis(r),
            None => self,
        }
    }

    pub fn secrets(mut self, s: &[&str]) -> Self {
        self.secrets = s.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Turns the local session cache on (tests run without it unless they are about it, so
    /// that a test writing to Redis directly sees its write on the next request).
    pub fn cache(mut self) -> Self {
        self.cache = true;
        self
    }

    /// A `key = value` line for `[cache]`.
    pub fn cache_setting(mut self, line: &str) -> Self {
        self.cache_lines.push(line.into());
        self
    }

    /// Whole tables appended to the file, like `[session.token]`.
    pub fn table(mut self, text: &str) -> Self {
        self.tail.push(text.into());
        self
    }

    /// An admin API on a free port, with this bearer token.
    pub fn admin(mut self, token: &str) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// A `key = value` line for `[session]`.
    pub fn session(mut self, line: &str) -> Self {
        self.session.push(line.into());
        self
    }

    /// A `key = value` line for `[session.cookie]`.
    pub fn cookie(mut self, line: &str) -> Self {
        self.cookie.push(line.into());
        self
    }

    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.into());
        self
    }

    /// A `"Header" = "/pointer"` line for `[identity.headers]`.
    pub fn identity(mut self, line: &str) -> Self {
        self.identity.push(line.into());
        self
    }

    pub fn upstream(mut self, name: &str, servers: &[&Upstream]) -> Self {
        self.upstreams
            .push((name.into(), servers.iter().map(|u| u.addr).collect()));
        self
    }

    /// An `[[upstream]]` of servers that are not [`Upstream`]s (child processes, say).
    pub fn upstream_addrs(mut self, name: &str, servers: &[SocketAddr]) -> Self {
        self.upstreams.push((name.into(), servers.to_vec()));
        self
    }

    /// The body of a `[[route]]` table.
    pub fn route(mut self, body: &str) -> Self {
        self.routes.push(body.into());
        self
    }

    pub fn toml(&self, listen: SocketAddr) -> String {
        let mut t = format!("[server]\nlisten = [\"{listen}\"]\ngrace_period = \"0s\"\n");
        for l in &self.server {
            t += &format!("{l}\n");
        }
        let secrets: Vec<String> = self.secrets.iter().map(|s| format!("{s:?}")).collect();
        t += &format!("\n[session]\nsecrets = [{}]\n", secrets.join(", "));
        let postgres = self
            .store
            .as_deref()
            .and_then(|s| s.strip_prefix("postgres:"));
        match (&self.store, postgres) {
            (_, Some(_)) => t += "store = \"postgres\"\n",
            (Some(_), None) => t += "store = \"redis\"\n",
            (None, None) => t += "store = \"memory\"\n",
        }
        for l in &self.session {
            t += &format!("{l}\n");
        }
        t += "\n[session.cookie]\n";
        for l in &self.cookie {
            t += &format!("{l}\n");
        }
        if let Some(sentinel) = self
            .store
            .as_deref()
            .and_then(|s| s.strip_prefix("sentinel:"))
        {
            t += &format!(
                "\n[redis]\nurl = \"redis://127.0.0.1:1/0\"\nsentinel = {sentinel}\ntimeout = \"300ms\"\nretry_after = \"3s\"\n"
            );
        }
        if let Some(url) = postgres {
            t += "\n[postgres]\n";
            let defaults = [
                format!("url = {url:?}"),
                "create_table = true".into(),
                "create_user_index = true".into(),
                "create_notify_trigger = true".into(),
                "timeout = \"300ms\"".into(),
                "retry_after = \"3s\"".into(),
            ];
            let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_owned();
            for l in defaults.iter().chain(&self.postgres_lines) {
                let overridden = self.postgres_lines.iter().any(|o| key(o) == key(l));
                if !overridden || self.postgres_lines.iter().any(|o| std::ptr::eq(o, l)) {
                    t += &format!("{l}\n");
                }
            }
        }
        match self
            .store
            .as_deref()
            .filter(|s| !s.starts_with("sentinel:") && !s.starts_with("postgres:"))
            .map(|s| (s, s.strip_prefix("cluster:")))
        {
            Some((_, Some(seeds))) => {
                let seeds: Vec<String> = seeds.split(',').map(|s| format!("{s:?}")).collect();
                t += &format!(
                    "\n[redis]\ncluster = [{}]\ntimeout = \"300ms\"\nretry_after = \"3s\"\n",
                    seeds.join(", ")
                );
            }
            Some((url, None)) => {
                t += &format!(
                    "\n[redis]\nurl = \"{url}\"\ntimeout = \"300ms\"\nretry_after = \"3s\"\n"
                );
            }
            None => {}
        }
        t += "\n[identity.headers]\n";
        for l in &self.identity {
            t += &format!("{l}\n");
        }
        for (name, servers) in &self.upstreams {
            let s: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
            t += &format!("\n[[upstream]]\nname = \"{name}\"\nservers = [{}]\nhealth_check_interval = \"200ms\"\n", s.join(", "));
        }
        for r in &self.routes {
            t += &format!("\n[[route]]\n{r}\n");
        }
        t += &format!("\n[cache]\nenabled = {}\n", self.cache);
        for l in &self.cache_lines {
            t += &format!("{l}\n");
        }
        if !self.log.is_empty() {
            t += "\n[log]\n";
            for l in &self.log {
                t += &format!("{l}\n");
            }
        }
        for extra in &self.tail {
            t += &format!("\n{extra}\n");
        }
        if let Some((addr, trusted)) = &self.forward_auth {
            let trusted: Vec<String> = trusted.iter().map(|t| format!("{t:?}")).collect();
            t += &format!(
                "\n[forward_auth]\nlisten = [\"{addr}\"]\ntrusted = [{}]\n",
                trusted.join(", ")
            );
        }
        if let Some(token) = &self.admin_token {
            t += &format!(
                "\n[admin]\nlisten = \"{}\"\ntoken = \"{token}\"\n",
                free_addr()
            );
        }
        t
    }

    pub fn start(&self) -> Gate {
        let addr = free_addr();
        let toml = self.toml(addr);
        let config = sessiongate::Config::parse(&toml, "test.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        Gate::run(config, addr)
    }

    /// Starts the gate with its access log (`[log] access`, set it) written to the returned
    /// [`AccessLines`] instead of stdout.
    pub fn start_logged(&self) -> (Gate, AccessLines) {
        let addr = free_addr();
        let toml = self.toml(addr);
        let config = sessiongate::Config::parse(&toml, "test.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let lines = AccessLines::default();
        let server =
            sessiongate::GateServer::with_access_log(config.clone(), Box::new(lines.clone()))
                .expect("gate starts");
        (Gate::serve(server, &config, addr), lines)
    }
}

/// What a gate wrote to its access log: a shared, growing buffer.
#[derive(Clone, Default)]
pub struct AccessLines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for AccessLines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AccessLines {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Waits (bounded) until `n` lines were written, and returns them: lines are written
    /// after the answer, by a thread of their own.
    pub fn wait(&self, n: usize) -> Vec<String> {
        wait_for(
            &format!("{n} access-log lines"),
            Duration::from_secs(20),
            || {
                let text = self.text();
                (text.lines().count() >= n).then(|| text.lines().map(str::to_owned).collect())
            },
        )
    }

    /// The same, each line parsed as JSON.
    pub fn wait_json(&self, n: usize) -> Vec<Value> {
        self.wait(n)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Stops a gate started in-process when the test drops it.
struct StopSignal(Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().unwrap().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

pub struct Gate {
    pub addr: SocketAddr,
    /// The admin API's listener, when the config has one.
    pub admin: Option<SocketAddr>,
    /// The forward-auth listener, when the config has one.
    pub forward_auth: Option<SocketAddr>,
    /// `session.cookie_name`, which this gate's clients track.
    pub cookie_name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    pub fn run(config: sessiongate::Config, addr: SocketAddr) -> Gate {
        let server = sessiongate::GateServer::new(config.clone()).expect("gate starts");
        Gate::serve(server, &config, addr)
    }

    /// Runs `server` (built from `config`) and waits for its listeners.
    pub fn serve(
        server: sessiongate::GateServer,
        config: &sessiongate::Config,
        addr: SocketAddr,
    ) -> Gate {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cookie_name = config.session.cookie_name.clone();
        let admin: Option<SocketAddr> = config.admin.as_ref().map(|a| a.listen.parse().unwrap());
        let forward_auth: Option<SocketAddr> = config
            .forward_auth
            .as_ref()
            .map(|f| f.listen[0].parse().unwrap());
        let thread = std::thread::spawn(move || {
            server.run_until(Box::new(StopSignal(Mutex::new(Some(rx)))))
        });
        wait_for("the gate", Duration::from_secs(20), || {
            TcpStream::connect(addr).ok()
        });
        if let Some(a) = admin {
            wait_for("the admin API", Duration::from_secs(20), || {
                TcpStream::connect(a).ok()
            });
        }
        if let Some(a) = forward_auth {
            wait_for("the forward-auth listener", Duration::from_secs(20), || {
                TcpStream::connect(a).ok()
            });
        }
        Gate {
            addr,
            admin,
            forward_auth,
            cookie_name,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.cookie_name)
    }

    /// A client of this gate that sends the cookie `pair` (`name=value`).
    pub fn client_with_cookie(&self, pair: &str) -> Client {
        let mut c = self.client();
        c.cookie = Some(pair.to_owned());
        c
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// An HTTP/1.1 client that sends the request target byte for byte (no URL normalisation,
/// which would hide exactly the spellings the gate must handle) and keeps a session cookie.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// `name=value` of the session cookie, as the gate last set it.
    pub cookie: Option<String>,
    /// The name of the session cookie to keep (`connect.sid` unless the gate says otherwise).
    pub cookie_name: String,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// What the echo upstream received for `name`, if it was an upstream answering.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_array().map(|v| {
            v.iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// The Set-Cookie for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

impl Client {
    /// A client of `addr` with no cookie yet, keeping the session cookie called `cookie_name`.
    pub fn new(addr: SocketAddr, cookie_name: &str) -> Self {
        Client {
            addr,
            cookie: None,
            cookie_name: cookie_name.into(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, &[]).await
    }

    pub async fn post(&mut self, path: &str) -> Response {
        self.send("POST", path, &[]).await
    }

    /// Sends a request with the session cookie (if any) and picks up a new one from the answer.
    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        let cookie = self.cookie.clone();
        if let Some(c) = &cookie {
            h.push(("cookie", c));
        }
        let resp = raw(self.addr, method, path, &h).await;
        if let Some(sc) = resp.set_cookie(&self.cookie_name) {
            let pair = sc.split(';').next().unwrap();
            self.cookie = if pair.strip_suffix('=') == Some(self.cookie_name.as_str()) {
                None
            } else {
                Some(pair.to_string())
            };
        }
        resp
    }
}

/// One request on a fresh connection.
pub async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    send_on(stream, method, path, headers).await
}

/// Writes `request` byte for byte on a fresh connection (for request lines and headers no
/// HTTP client would send) and reads the answer until the peer closes; status 0 when it closed
/// without answering. Send `Connection: close` in `request`.
pub async fn raw_bytes(addr: SocketAddr, request: &[u8]) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("the peer neither answered nor closed")
        .ok();
    parse_response(&bytes)
}

/// Reads one HTTP/1.1 response (head, then the body as far as it goes).
pub fn parse_response(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Response {
            status: 0,
            headers: vec![],
            body: String::new(),
        };
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(body.len());
    Response {
        status,
        headers,
        body: body.get(..len).unwrap_or(body).to_string(),
    }
}

/// One HTTP/1.1 request over any byte stream (plain TCP or TLS).
async fn send_on<S>(io: S, method: &str, path: &str, headers: &[(&str, &str)]) -> Response
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", "localhost");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// express-session's signing, written out independently of the gate's code

pub fn express_sign(secret: &str, sid: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sid.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let value = format!("s:{sid}.{}", sig.trim_end_matches('='));
    percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The session id inside a `connect.sid=...` pair, if `secret` signed it.
pub fn express_unsign(secret: &str, pair: &str) -> Option<String> {
    let value = pair.split_once('=')?.1;
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?;
    let (sid, _) = decoded.strip_prefix("s:")?.rsplit_once('.')?;
    let expected = percent_encoding::percent_decode_str(&express_sign(secret, sid))
        .decode_utf8()
        .ok()?
        .into_owned();
    (expected == decoded).then(|| sid.to_string())
}

/// Puts a session into Redis as connect-redis would, and returns a cookie pair for it.
pub fn plant_session(
    redis: &Redis,
    secret: &str,
    sid: &str,
    fields: Value,
    max_age_ms: Option<u64>,
) -> String {
    let mut record = json!({"cookie": {"originalMaxAge": max_age_ms, "expires": null, "httpOnly": true, "path": "/"}});
    for (k, v) in fields.as_object().unwrap() {
        record[k] = v.clone();
    }
    let ttl = max_age_ms.map(|m| m.div_ceil(1000)).unwrap_or(86400);
    redis.set(&format!("sess:{sid}"), &record.to_string(), ttl);
    format!("connect.sid={}", express_sign(secret, sid))
}

/// The session id of a client's cookie (signed with [`SECRET`]).
pub fn sid_of(client: &Client) -> String {
    express_unsign(SECRET, client.cookie.as_deref().expect("a session cookie"))
        .expect("signed with SECRET")
}

/// Logs a client in through a route with `issue_sessions`, as `user`.
pub async fn login(client: &mut Client, user: &str, roles: &[&str]) -> Response {
    let issue = json!({"user": user, "roles": roles}).to_string();
    let q: String =
        percent_encoding::utf8_percent_encode(&issue, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let resp = client.post(&format!("/login?issue={q}")).await;
    assert_eq!(resp.status, 200, "login: {}", resp.body);
    assert!(client.cookie.is_some(), "login set a cookie");
    resp
}

/// The routes most tests share, all on upstream `app`:
/// `/login` (public, may issue sessions), `/account/` (required), `/pages/` (required, login
/// redirect), `/maybe/` (optional), `/public/` and `/` (public), and `POST /logout`.
pub fn standard(b: GateBuilder, app: &[&Upstream]) -> GateBuilder {
    b.upstream("app", app)
        .session(r#"logout_path = "/logout""#)
        .route(
            r#"path = "/login"
upstream = "app"
auth = "public"
issue_sessions = true"#,
        )
        .route(
            r#"path = "/account/"
upstream = "app"
auth = "required""#,
        )
        .route(
            r#"path = "/pages/"
upstream = "app"
auth = "required"
login_redirect = "/login""#,
        )
        .route(
            r#"path = "/maybe/"
upstream = "app"
auth = "optional""#,
        )
        .route(
            r#"path = "/public/"
upstream = "app"
auth = "public""#,
        )
        .route(
            r#"path = "/"
upstream = "app"
auth = "public""#,
        )
}

// ---------------------------------------------------------------------------------------
// TLS

/// A private CA and a certificate for `localhost` / 127.0.0.1 signed by it, as PEM files.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl TestPki {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A TLS connection to `addr` trusting only `pki`'s CA, offering `alpn`.
pub async fn tls_stream(
    addr: SocketAddr,
    pki: &TestPki,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTPS request to the gate, trusting only `pki`'s CA.
pub async fn raw_tls(
    addr: SocketAddr,
    pki: &TestPki,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let tls = tls_stream(addr, pki, &[]).await;
    send_on(tls, method, path, headers).await
}

fn rustls_pemfile_certs(pem: &mut &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

/// `redis-server` with TLS only and a password, on a free port.
pub struct TlsRedis {
    server: ProcessGuard,
    pub port: u16,
    pub password: String,
}

impl TlsRedis {
    pub fn start(pki: &TestPki) -> Self {
        let port = free_port();
        let password = "redis-pass-123".to_string();
        let mut server = ProcessGuard::spawn(
            "TLS redis-server",
            std::process::Command::new("redis-server")
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .args([
                    "--tls-cert-file",
                    &pki.path("cert.pem"),
                    "--tls-key-file",
                    &pki.path("key.pem"),
                ])
                .args([
                    "--tls-ca-cert-file",
                    &pki.path("ca.pem"),
                    "--tls-auth-clients",
                    "no",
                ])
                .args([
                    "--requirepass",
                    &password,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]),
        );
        server.wait_for_port(port, Duration::from_secs(10));
        TlsRedis {
            server,
            port,
            password,
        }
    }
}

/// One counter or gauge of the admin API's `/metrics` (0 when absent).
pub async fn admin_metric(admin: SocketAddr, token: &str, name: &str) -> u64 {
    let r = raw(
        admin,
        "GET",
        "/metrics",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(k, _)| *k == name)
        .map_or(0, |(_, v)| {
            v.trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("metric {name}: {v:?}: {e}")) as u64
        })
}
