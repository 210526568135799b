//! Forward-auth beside an edge the team already runs: real nginx (`auth_request`) and real
//! Caddy (`forward_auth`) in front of a real upstream, asking the gate's forward-auth
//! listener about each request; Traefik's and Envoy's exact header shapes against the
//! listener; callers outside `trusted` refused whatever they report; the gate on
//! forward-auth alone, without a proxy listener or upstreams.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// The routes the edges' tests share: `/account/` (required, 401), `/pages/` (required,
/// login redirect), `/public/` and `/` (public), `/login` (public, issues sessions).
fn routes(b: GateBuilder) -> GateBuilder {
    b.route("path = \"/login\"\nupstream = \"app\"\nauth = \"public\"\nissue_sessions = true")
        .route("path = \"/account/\"\nupstream = \"app\"\nauth = \"required\"")
        .route(
            "path = \"/pages/\"\nupstream = \"app\"\nauth = \"required\"\nlogin_redirect = \"/login\"",
        )
        .route("path = \"/maybe/\"\nupstream = \"app\"\nauth = \"optional\"")
        .route("path = \"/public/\"\nupstream = \"app\"\nauth = \"public\"")
}

/// A request to the forward-auth listener, from 127.0.0.1.
async fn ask(fa: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    raw(fa, "GET", path, headers).await
}

/// Traefik's ForwardAuth request for `method uri` (Caddy and HAProxy send the same).
async fn traefik(fa: SocketAddr, method: &str, uri: &str, extra: &[(&str, &str)]) -> Response {
    let mut h = vec![
        ("x-forwarded-method", method),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-uri", uri),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    h.extend_from_slice(extra);
    ask(fa, "/auth/forward", &h).await
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_and_envoy_requests_get_the_proxys_decision() {
    let app = Upstream::start("app").await;
    let gate = routes(
        GateBuilder::new()
            .upstream("app", &[&app])
            .forward_auth(&["127.0.0.1"]),
    )
    .route("path = \"/\"\nupstream = \"app\"\nauth = \"public\"")
    .start();
    let fa = gate.forward_auth.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &["admin"]).await;
    let cookie = c.cookie.clone().unwrap();
    let hits = app.hits();

    // A session passes with the gate's identity, whatever the client claimed.
    let r = traefik(
        fa,
        "GET",
        "/account/settings?tab=1",
        &[("cookie", &cookie), ("x-user", "mallory")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-user"), Some("alice"));
    assert_eq!(r.header("x-user-roles"), Some("admin"));
    assert!(r.header("x-request-id").is_some());
    // The secure flag follows the edge's scheme.
    let rolled = r.set_cookie("connect.sid").expect("a rolling cookie");
    assert!(rolled.contains("; Secure"), "{rolled}");

    // Public routes pass, with every identity header present and empty.
    let r = traefik(fa, "GET", "/public/x", &[("x-user", "mallory")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-user"), Some(""));
    assert_eq!(r.header("x-user-roles"), Some(""));
    // An optional route without a session passes too, anonymous.
    let r = traefik(fa, "GET", "/maybe/x", &[]).await;
    assert_eq!((r.status, r.header("x-user")), (200, Some("")));

    // No session: a page load is sent to the login, anything else gets 401 JSON.
    let html = ("accept", "text/html,application/xhtml+xml");
    let r = traefik(fa, "GET", "/pages/report?y=2", &[html]).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/login?return_to=%2Fpages%2Freport%3Fy%3D2")
    );
    let r = traefik(
        fa,
        "GET",
        "/pages/report",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("unauthenticated"))
    );
    let r = traefik(fa, "POST", "/pages/report", &[html]).await;
    assert_eq!(r.status, 401, "a POST is no page load");
    let r = traefik(fa, "GET", "/account/", &[]).await;
    assert_eq!(r.status, 401);

    // The original target is read as the proxy reads it: canonical, the same 400s.
    let r = traefik(fa, "GET", "/public/../account/", &[]).await;
    assert_eq!(r.status, 401, "judged on the canonical path: {}", r.body);
    for bad in [
        "/public/%252e%252e/account/",
        "/account%2fx",
        "/public/x?_method=DELETE",
    ] {
        let r = traefik(fa, "GET", bad, &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let r = traefik(fa, "get", "/public/x", &[]).await;
    assert_eq!(r.status, 400, "a case variant of a method");
    // A report missing, repeated or malformed is a 400, never a guess.
    let r = ask(fa, "/auth/forward", &[("x-forwarded-uri", "/public/x")]).await;
    assert_eq!(r.status, 400, "no X-Forwarded-Method: {}", r.body);
    let r = ask(
        fa,
        "/auth/forward",
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-uri", "/account/"),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "two X-Forwarded-Uri");
    let r = traefik(fa, "GET", "public/x", &[]).await;
    assert_eq!(r.status, 400, "not a path");
    let r = ask(fa, "/auth/other", &[]).await;
    assert_eq!(r.status, 404);

    // Envoy ext_authz: the original path after the prefix, Host, the method.
    let envoy = |path: &'static str, cookie: Option<String>| async move {
        let mut h = vec![("host", "app.example"), ("x-forwarded-proto", "https")];
        let cookie = cookie.unwrap_or_default();
        if !cookie.is_empty() {
            h.push(("cookie", cookie.as_str()));
        }
        raw(fa, "GET", path, &h).await
    };
    let r = envoy("/auth/envoy/account/x?z=1", Some(cookie.clone())).await;
    assert_eq!(
        (r.status, r.header("x-user")),
        (200, Some("alice")),
        "{}",
        r.body
    );
    let r = envoy("/auth/envoy/account/x", None).await;
    assert_eq!(r.status, 401);
    let r = envoy("/auth/envoy/public/x", None).await;
    assert_eq!(r.status, 200);
    let r = raw(
        fa,
        "DELETE",
        "/auth/envoy/pages/x",
        &[("host", "app.example")],
    )
    .await;
    assert_eq!(r.status, 401, "Envoy's method is the original one");
    let r = raw(
        fa,
        "HEAD",
        "/auth/envoy/account/x",
        &[("host", "app.example")],
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, ""),
        "a HEAD answer has no body"
    );

    // nginx's shape on its own endpoint: 401 with the login page in Location.
    let r = ask(
        fa,
        "/auth/request",
        &[
            ("x-original-url", "https://app.example/pages/report"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("location"),
        Some("/login?return_to=%2Fpages%2Freport")
    );
    let r = ask(
        fa,
        "/auth/request",
        &[
            ("x-original-url", "http://app.example/account/"),
            ("x-original-method", "GET"),
            ("cookie", &cookie),
        ],
    )
    .await;
    assert_eq!((r.status, r.header("x-user")), (200, Some("alice")));
    assert!(
        !r.set_cookie("connect.sid").unwrap().contains("Secure"),
        "an http:// original gets no Secure cookie"
    );

    assert_eq!(app.hits(), hits, "forward-auth never asks the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_outside_trusted_is_refused_whatever_it_reports() {
    let app = Upstream::start("app").await;
    let (gate, lines) = routes(
        GateBuilder::new()
            .upstream("app", &[&app])
            .forward_auth(&["127.0.0.1/32"])
            .log("access = \"json\""),
    )
    .start_logged();
    let fa = gate.forward_auth.unwrap();
    let request = "GET /auth/forward HTTP/1.1\r\nHost: gate\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /public/x\r\nX-Forwarded-Host: app.example\r\nConnection: close\r\n\r\n";
    // From 127.0.0.2, outside `trusted`: a public path reported is no pass.
    let r = raw_bytes_from("127.0.0.2", fa, request.as_bytes()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "forbidden");
    for endpoint in ["/auth/request", "/auth/envoy/public/x", "/nothing"] {
        let req = format!("GET {endpoint} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n");
        let r = raw_bytes_from("127.0.0.2", fa, req.as_bytes()).await;
        assert_eq!(r.status, 403, "{endpoint}");
    }
    // The listener has the proxy's head limits, for any caller.
    let big = format!(
        "GET /auth/forward HTTP/1.1\r\nHost: gate\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    let r = raw_bytes_from("127.0.0.2", fa, big.as_bytes()).await;
    assert_eq!(r.status, 431, "{}", r.body);
    // The very same request from the trusted edge passes: the source decided.
    let r = raw_bytes_from("127.0.0.1", fa, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let logged = lines.wait_json(6);
    assert_eq!(logged[0]["status"], 403);
    let passed = logged
        .iter()
        .find(|l| l["status"] == 200)
        .expect("the pass is logged");
    assert_eq!(passed["path"], "/public/x", "the original path is logged");
    assert_eq!(passed["method"], "GET");
}

/// Writes `request` from a socket bound to `source` and reads the answer to its end.
async fn raw_bytes_from(source: &str, to: SocketAddr, request: &[u8]) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    parse_response(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_runs_alone_without_a_proxy_or_upstreams() {
    let fa = free_addr();
    let toml = format!(
        r#"[server]
listen = []
grace_period = "0s"

[session]
secrets = ["{SECRET}"]

[identity.headers]
"X-User" = "/user"

[forward_auth]
listen = ["{fa}"]
trusted = ["127.0.0.1"]

[[route]]
path = "/account/"
auth = "required"

[[route]]
path = "/"
auth = "public"
"#
    );
    let config = sessiongate::Config::parse(&toml, "proxy.toml", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let _gate = Gate::run(config, fa);
    let r = traefik(fa, "GET", "/account/", &[]).await;
    assert_eq!(r.status, 401);
    let r = traefik(fa, "GET", "/index.html", &[]).await;
    assert_eq!((r.status, r.header("x-user")), (200, Some("")));

    // While the gate proxies, every route needs its upstream.
    let proxying = toml.replace("listen = []", "listen = [\"127.0.0.1:1\"]");
    let e = sessiongate::Config::parse(&proxying, "proxy.toml", &|_| None).unwrap_err();
    assert!(
        e.to_string().starts_with("proxy.toml:") && e.to_string().contains("route[0].upstream"),
        "{e}"
    );
    let untrusting = toml.replace("trusted = [\"127.0.0.1\"]", "trusted = []");
    let e = sessiongate::Config::parse(&untrusting, "proxy.toml", &|_| None).unwrap_err();
    assert!(e.to_string().contains("forward_auth.trusted"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Real edges

/// The snippet the README gives for nginx, around `upstream`, asking the gate at `fa`.
fn nginx_conf(prefix: &Path, port: u16, fa: SocketAddr, upstream: SocketAddr) -> String {
    let p = prefix.display();
    let contrib = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/contrib/nginx/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .replace("127.0.0.1:9090", &fa.to_string())
        .replace("127.0.0.1:3000", &upstream.to_string())
        .replace("/etc/nginx/snippets/", &format!("{p}/"))
    };
    for snippet in ["sessiongate.conf", "sessiongate-location.conf"] {
        std::fs::write(prefix.join(snippet), contrib(snippet)).unwrap();
    }
    let site =
        contrib("site.conf").replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};"));
    format!(
        r#"master_process off;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
{site}
}}
"#
    )
}

fn start_nginx(dir: &Path, fa: SocketAddr, upstream: SocketAddr) -> (ProcessGuard, SocketAddr) {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port, fa, upstream)).unwrap();
    let mut nginx = ProcessGuard::spawn(
        "nginx",
        Command::new(edge_binary("nginx", &["/usr/sbin/nginx"]))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf),
    )
    .graceful();
    nginx.wait_for_port(port, Duration::from_secs(10));
    (nginx, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The Caddyfile of contrib/, around `upstream`, asking the gate at `fa`.
fn start_caddy(dir: &Path, fa: SocketAddr, upstream: SocketAddr) -> (ProcessGuard, SocketAddr) {
    let port = free_port();
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/caddy/Caddyfile"
    ))
    .unwrap()
    // Any host name, on this port.
    .replace("app.example.com", &format!("http://:{port}"))
    .replace("127.0.0.1:9090", &fa.to_string())
    .replace("127.0.0.1:3000", &upstream.to_string());
    // No admin endpoint, no certificates, nothing kept: a test's Caddy.
    let file = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{file}");
    let path = dir.join("Caddyfile");
    std::fs::write(&path, file).unwrap();
    let mut caddy = ProcessGuard::spawn(
        "caddy",
        Command::new(edge_binary("caddy", &["/usr/bin/caddy"]))
            .arg("run")
            .arg("--adapter")
            .arg("caddyfile")
            .arg("--config")
            .arg(&path)
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir),
    )
    .graceful();
    caddy.wait_for_port(port, Duration::from_secs(20));
    (caddy, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The edge's binary: on PATH, or where Debian puts it. `scripts/test` installs it.
fn edge_binary(name: &str, places: &[&str]) -> String {
    if Command::new(name).arg("-v").output().is_ok() {
        return name.into();
    }
    places
        .iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| panic!("{name} is not installed: scripts/test installs it"))
        .to_string()
}

/// One edge in front of the echo, with the gate's forward-auth behind it, on Redis.
async fn through_edge(
    edge: fn(&Path, SocketAddr, SocketAddr) -> (ProcessGuard, SocketAddr),
    name: &str,
) {
    let mut redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = routes(
        GateBuilder::new()
            .redis(&redis)
            .upstream("app", &[&app])
            .forward_auth(&["127.0.0.1"]),
    )
    .start();
    let fa = gate.forward_auth.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_edge, at) = edge(dir.path(), fa, app.addr);
    let sid = "EdgeSession0123456789abcdefABCDE";
    let pair = plant_session(
        &redis,
        SECRET,
        sid,
        json!({"user": "alice", "roles": ["admin"]}),
        Some(3_600_000),
    );
    let spoof = [
        ("x-user", "mallory"),
        ("x-user-roles", "admin"),
        ("x_user", "mallory"),
    ];

    // A session passes with the gate's identity; the client's never arrives.
    let mut h = vec![("cookie", pair.as_str())];
    h.extend_from_slice(&spoof);
    let r = raw(at, "GET", "/account/x", &h).await;
    assert_eq!(r.status, 200, "{name}: {}", r.body);
    assert_eq!(r.json()["upstream"], "app", "{name}");
    assert_eq!(
        r.upstream_header("x-user").as_deref(),
        Some("alice"),
        "{name}"
    );
    assert_eq!(
        r.upstream_header("x-user-roles").as_deref(),
        Some("admin"),
        "{name}"
    );
    assert_eq!(
        r.upstream_header("x-session-assertion"),
        None,
        "{name}: no assertion is on"
    );
    // The rolling cookie reaches the browser.
    let rolled = r
        .set_cookie("connect.sid")
        .unwrap_or_else(|| panic!("{name}: no rolling Set-Cookie: {:?}", r.headers));
    let rolled_pair = rolled.split(';').next().unwrap();
    assert_eq!(
        express_unsign(SECRET, rolled_pair).as_deref(),
        Some(sid),
        "{name}: {rolled}"
    );

    // Public routes pass, and a spoofed identity is not let through there either.
    let r = raw(at, "GET", "/public/x", &spoof).await;
    assert_eq!(r.status, 200, "{name}: {}", r.body);
    for h in ["x-user", "x-user-roles", "x_user"] {
        let arrived = r.upstream_header(h);
        assert!(
            matches!(arrived.as_deref(), None | Some("")),
            "{name}: a spoofed {h} arrived: {arrived:?}"
        );
    }

    // No session: a page load goes to the login, an API call gets 401; the app is not asked.
    let hits = app.hits();
    let r = raw(at, "GET", "/pages/report", &[("accept", "text/html")]).await;
    assert_eq!(r.status, 302, "{name}: {}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/login?return_to=%2Fpages%2Freport"),
        "{name}"
    );
    let r = raw(at, "GET", "/account/x", &[("accept", "application/json")]).await;
    assert_eq!(r.status, 401, "{name}: {}", r.body);
    let r = raw(at, "GET", "/account/x", &spoof).await;
    assert_eq!(r.status, 401, "{name}: a spoofed identity is no session");
    assert_eq!(app.hits(), hits, "{name}: refused requests reached the app");

    // The store down: 503 with Retry-After through the edge, never 401, no cookie cleared.
    redis.stop();
    let r = raw(at, "GET", "/account/x", &[("cookie", pair.as_str())]).await;
    assert_eq!(r.status, 503, "{name}: {}", r.body);
    assert_eq!(r.header("retry-after"), Some("3"), "{name}");
    assert!(r.set_cookie("connect.sid").is_none(), "{name}");
    assert_eq!(app.hits(), hits, "{name}");
    let r = raw(at, "GET", "/public/x", &[]).await;
    assert_eq!(r.status, 200, "{name}: public routes need no store");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_asks_the_gate() {
    through_edge(start_nginx, "nginx").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_asks_the_gate() {
    through_edge(start_caddy, "caddy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_gets_the_assertion_bound_to_the_original_request() {
    use base64::Engine;
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let key = crate::assertion::key_file(&dir, "k.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let gate = routes(
        GateBuilder::new()
            .upstream("app", &[&app])
            .forward_auth(&["127.0.0.1"]),
    )
    .route("path = \"/api/\"\nupstream = \"app\"\nauth = \"required\"\naudience = \"billing\"")
    .table(&format!(
        "[identity.assertion]\nissuer = \"https://gate.test\"\nkey = \"file:{key}\"\nbind_request = true"
    ))
    .start();
    let fa = gate.forward_auth.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let cookie = c.cookie.clone().unwrap();
    let claims = |token: &str| -> serde_json::Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };

    let r = traefik(fa, "POST", "/api/pay?amount=5", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.header("x-session-assertion").expect("an assertion");
    let c1 = claims(token);
    assert_eq!(c1["sub"], "alice");
    assert_eq!(c1["aud"], "billing");
    assert_eq!(c1["iss"], "https://gate.test");
    assert_eq!(c1["htm"], "POST", "the original method");
    assert_eq!(c1["htu"], "https://app.example/api/pay", "the original URL");
    // Another request gets another token.
    let r = traefik(fa, "GET", "/api/other", &[("cookie", &cookie)]).await;
    let c2 = claims(r.header("x-session-assertion").unwrap());
    assert_eq!(c2["htu"], "https://app.example/api/other");
    assert_ne!(c1["jti"], c2["jti"]);
    // Without a session the header is still there, empty: an edge copying it overwrites
    // any client copy.
    let r = traefik(fa, "GET", "/public/x", &[("x-session-assertion", "forged")]).await;
    assert_eq!((r.status, r.header("x-session-assertion")), (200, Some("")));
}

/// The forward-auth advisories of oauth2-proxy, Authelia, Oathkeeper and Traefik, each as the
/// request that caused it, asked of the gate.
#[tokio::test(flavor = "multi_thread")]
async fn the_known_forward_auth_bypasses_do_not_pass() {
    let app = Upstream::start("app").await;
    let gate = routes(
        GateBuilder::new()
            .upstream("app", &[&app])
            .forward_auth(&["127.0.0.1"]),
    )
    .route("path = \"/\"\nhost = \"admin.example\"\nupstream = \"app\"\nauth = \"required\"")
    .route("path = \"/\"\nupstream = \"app\"\nauth = \"public\"")
    .start();
    let fa = gate.forward_auth.unwrap();
    let refused = |r: &Response| r.status == 400 || r.status == 401;

    // The query or a fragment made a protected path look public (oauth2-proxy CVE-2025-54576,
    // CVE-2026-41059); an encoded path was matched undecoded (Oathkeeper #1003).
    for uri in [
        "/account/?/public/",
        "/account/#/public/",
        "/%61ccount/",
        "/ACCOUNT/",
        "/public/..%2faccount/",
        "/public/%2e%2e/account/",
    ] {
        let r = traefik(fa, "GET", uri, &[]).await;
        assert!(refused(&r), "{uri}: {} {}", r.status, r.body);
    }
    // A mixed-case host skipped a host's rule (Authelia CVE-2026-48794).
    for host in [
        "admin.example",
        "ADMIN.Example",
        "admin.example.",
        "admin.example:443",
    ] {
        let r = ask(
            fa,
            "/auth/forward",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", host),
                ("x-forwarded-uri", "/index.html"),
            ],
        )
        .await;
        assert!(refused(&r), "{host}: {} {}", r.status, r.body);
    }
    // A malformed URL through auth_request answered 200 (Authelia CVE-2021-32637).
    for url in [
        "https://app.example",
        "//app.example/account/",
        "app.example/account/",
        "https://",
        "https:///account/",
        "https://app.example?/account/",
    ] {
        let r = ask(
            fa,
            "/auth/request",
            &[("x-original-url", url), ("x-original-method", "GET")],
        )
        .await;
        if url == "https://app.example" {
            assert_eq!(r.status, 200, "the root of a public host: {}", r.body);
            continue;
        }
        assert_eq!(r.status, 400, "{url}: {}", r.body);
    }
    // A health-check User-Agent skipped authentication (oauth2-proxy CVE-2026-34457).
    for ua in ["kube-probe/1.29", "ELB-HealthChecker/2.0", "GoogleHC/1.0"] {
        let r = traefik(fa, "GET", "/account/", &[("user-agent", ua)]).await;
        assert_eq!(r.status, 401, "{ua}");
    }
    // The way back after a login stays on this site (oauth2-proxy CVE-2020-5233,
    // CVE-2020-11053, CVE-2021-21291).
    for uri in [
        "/pages//evil.example",
        "/pages/\\evil.example",
        "/pages/%09/evil.example",
    ] {
        let r = traefik(fa, "GET", uri, &[("accept", "text/html")]).await;
        if r.status == 302 {
            let location = r.header("location").unwrap();
            assert!(
                location.starts_with("/login?return_to=%2F"),
                "{uri}: {location}"
            );
            assert!(!location.contains("return_to=%2F%2F"), "{uri}: {location}");
        } else {
            assert_eq!(r.status, 400, "{uri}: {}", r.body);
        }
    }
}
