//! One harness for every integration test: a real `redis-server` on a unix socket in a temp
//! dir, real HTTP upstreams, and the real gate running in-process on a free port. Each test
//! gets its own of each, so tests run in parallel without sharing state.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use hmac::Mac;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use serde_json::{json, Value};

pub const SECRET: &str = "test secret, first";
pub const OLD_SECRET: &str = "test secret, retired";

/// A free loopback port. The listener is dropped before use, which is racy in theory and
/// fine in practice on a machine that is not handing out thousands of ports a second.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("{what} did not come up within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// Redis

pub struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let mut r = Redis {
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Starts (again) on the same socket, with no data: a restarted Redis without persistence.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        wait_for("redis-server", Duration::from_secs(10), || {
            client
                .get_connection()
                .ok()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn ttl(&self, key: &str) -> i64 {
        redis::cmd("TTL").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn set(&self, key: &str, value: &str, ttl_secs: u64) {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(ttl_secs)
            .query::<()>(&mut self.conn())
            .unwrap();
    }

    pub fn expire(&self, key: &str, ttl_secs: u64) {
        redis::cmd("EXPIRE")
            .arg(key)
            .arg(ttl_secs)
            .query::<()>(&mut self.conn())
            .unwrap();
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.conn())
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Upstreams

/// An HTTP server that answers every request with JSON describing what it received. Query
/// parameters script its answer: `issue=<json>` (sent as `X-Session-Issue`), `destroy=1|all`,
/// `update=<json>`, `regenerate=1`, `max_age=<duration>`, `set_cookie=<value>`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_string(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (n, h) = (n.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        echo(n.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            name: name.into(),
            hits,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    name: String,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into());
    }
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let body = json!({
        "upstream": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "headers": headers,
    });
    let mut resp = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json");
    if let Some(issue) = query.get("issue") {
        resp = resp.header("X-Session-Issue", issue.as_str());
    }
    // The rest of the session directives, passed through as given.
    for (param, header) in [
        ("destroy", "X-Session-Destroy"),
        ("update", "X-Session-Update"),
        ("regenerate", "X-Session-Regenerate"),
        ("max_age", "X-Session-Max-Age"),
    ] {
        if let Some(v) = query.get(param) {
            resp = resp.header(header, v.as_str());
        }
    }
    if let Some(c) = query.get("set_cookie") {
        resp = resp.header("set-cookie", c.as_str());
    }
    Ok(resp.body(Full::new(Bytes::from(body.to_string()))).unwrap())
}

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
        }
    }

    pub fn redis(mut self, r: &Redis) -> Self {
        self.store = Some(r.url());
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
        match &self.store {
            Some(_) => t += "store = \"redis\"\n",
            None => t += "store = \"memory\"\n",
        }
        for l in &self.session {
            t += &format!("{l}\n");
        }
        t += "\n[session.cookie]\n";
        for l in &self.cookie {
            t += &format!("{l}\n");
        }
        if let Some(url) = &self.store {
            t +=
                &format!("\n[redis]\nurl = \"{url}\"\ntimeout = \"300ms\"\nretry_after = \"3s\"\n");
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
        for extra in &self.tail {
            t += &format!("\n{extra}\n");
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
    /// `session.cookie_name`, which this gate's clients track.
    pub cookie_name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    pub fn run(config: sessiongate::Config, addr: SocketAddr) -> Gate {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cookie_name = config.session.cookie_name.clone();
        let admin: Option<SocketAddr> = config.admin.as_ref().map(|a| a.listen.parse().unwrap());
        let server = sessiongate::GateServer::new(config).expect("gate starts");
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
        Gate {
            addr,
            admin,
            cookie_name,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.cookie_name)
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

/// One HTTPS request to the gate, trusting only `pki`'s CA.
pub async fn raw_tls(
    addr: SocketAddr,
    pki: &TestPki,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut roots = rustls::RootCertStore::empty();
    let mut pem = pki.ca_pem.as_bytes();
    for cert in rustls_pemfile_certs(&mut pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
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
    child: Child,
    pub port: u16,
    pub password: String,
}

impl TlsRedis {
    pub fn start(pki: &TestPki) -> Self {
        let port = free_addr().port();
        let password = "redis-pass-123".to_string();
        let child = Command::new("redis-server")
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
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("TLS redis-server", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        TlsRedis {
            child,
            port,
            password,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
