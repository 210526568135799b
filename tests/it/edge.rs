//! Edge traffic: upstream timeouts, retries, no health-check blackout, server names, trusted
//! proxies and pipelining, each against real servers that misbehave the way real ones do.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sessiongate_testkit::{echo, serve};

use crate::harness::*;

/// An `[[upstream]]` table written out, for settings the builder does not write.
fn upstream_table(name: &str, servers: &[SocketAddr], extra: &str) -> String {
    let s: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[upstream]]\nname = \"{name}\"\nservers = [{}]\n{extra}",
        s.join(", ")
    )
}

fn route(path: &str, upstream: &str) -> String {
    format!("path = \"{path}\"\nupstream = \"{upstream}\"\nauth = \"public\"")
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_upstream_gets_504_at_the_read_timeout() {
    let app = Upstream::start("app").await;
    let (hung, _task) = silent_server().await;
    let gate = standard(GateBuilder::new(), &[&app])
        .table(&upstream_table(
            "hung",
            &[hung],
            "read_timeout = \"1s\"\nhealth_check = false",
        ))
        .route(&route("/hung/", "hung"))
        .start();
    let started = Instant::now();
    let r = raw(gate.addr, "GET", "/hung/x", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(
        took >= Duration::from_millis(900),
        "answered before the read timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the configured read timeout, not Pingora's 60 s default: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_server_is_retried_on_another_whatever_the_method() {
    let app = Upstream::start("app").await;
    let live = Upstream::start("live").await;
    let refused = free_addr();
    // No health checks: the refused server stays in the rotation, and only the retry helps.
    let gate = standard(GateBuilder::new(), &[&app])
        .table(&upstream_table(
            "pair",
            &[refused, live.addr],
            "health_check = false",
        ))
        .route(&route("/pair/", "pair"))
        .start();
    for i in 0..10 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let r = raw(gate.addr, method, "/pair/x", &[]).await;
        assert_eq!(r.status, 200, "{method} #{i}: {}", r.body);
        assert_eq!(r.json()["upstream"], "live");
    }
    assert_eq!(live.hits(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_started_after_the_gate_is_served_at_once() {
    let app = Upstream::start("app").await;
    let later = free_addr();
    // Its first check fails and the next is a minute away: without panic mode the pool would
    // answer 502 for that minute.
    let gate = standard(GateBuilder::new(), &[&app])
        .table(&upstream_table(
            "late",
            &[later],
            "health_check_interval = \"60s\"",
        ))
        .route(&route("/late/", "late"))
        .start();
    let r = raw(gate.addr, "GET", "/late/x", &[]).await;
    assert_eq!(r.status, 502, "nothing listens yet: {}", r.body);
    let listener = tokio::net::TcpListener::bind(later).await.unwrap();
    let late = tokio::spawn(serve(listener, |req| echo("late", req)));
    let r = raw(gate.addr, "GET", "/late/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["upstream"], "late");
    late.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_may_be_named_by_host_name() {
    let app = Upstream::start("app").await;
    let named = Upstream::start("named").await;
    let gate = standard(GateBuilder::new(), &[&app])
        .table(&format!(
            "[[upstream]]\nname = \"named\"\nservers = [\"localhost:{}\"]\nhealth_check_interval = \"200ms\"",
            named.addr.port()
        ))
        .route(&route("/named/", "named"))
        .start();
    let r = raw(gate.addr, "GET", "/named/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["upstream"], "named");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced_by_the_gates_view() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    let r = raw(
        gate.addr,
        "GET",
        "/public/x",
        &[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4;proto=https;host=evil.example"),
            ("x-real-ip", "1.2.3.4"),
            ("x_real_ip", "1.2.3.4"),
            ("X_Forwarded_For", "5.6.7.8"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(r.upstream_header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("localhost")
    );
    assert_eq!(r.upstream_header("forwarded"), None);
    assert_eq!(r.upstream_header("x_real_ip"), None);
    assert_eq!(r.upstream_header("x_forwarded_for"), None);
    // Nor does the client's claim make a cookie Secure.
    let r = raw(
        gate.addr,
        "POST",
        "/login?issue=%7B%22user%22%3A%22a%22%7D",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(!r.set_cookie("connect.sid").unwrap().contains("Secure"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_is_appended_to_and_believed() {
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .server(r#"trusted_proxies = ["127.0.0.0/8"]"#)
            .admin("admin-token-0123456789"),
        &[&app],
    )
    .start();
    let headers = [
        ("x-forwarded-for", "198.51.100.7, 127.0.0.9"),
        ("x-forwarded-proto", "https"),
    ];
    let r = raw(gate.addr, "GET", "/public/x", &headers).await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("198.51.100.7, 127.0.0.9, 127.0.0.1")
    );
    assert_eq!(
        r.upstream_header("x-real-ip").as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    // Secure cookies behind a TLS-terminating proxy, and the real client in the session.
    let r = raw(
        gate.addr,
        "POST",
        "/login?issue=%7B%22user%22%3A%22tess%22%7D",
        &headers,
    )
    .await;
    assert!(r.set_cookie("connect.sid").unwrap().contains("; Secure"));
    let list = raw(
        gate.admin.unwrap(),
        "GET",
        "/users/tess/sessions",
        &[("authorization", "Bearer admin-token-0123456789")],
    )
    .await;
    assert_eq!(list.json()["sessions"][0]["ip"], "198.51.100.7");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheme_is_the_one_the_trusted_proxy_wrote_not_the_clients() {
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new().server(r#"trusted_proxies = ["127.0.0.0/8"]"#),
        &[&app],
    )
    .start();
    // The client said https; the proxy in front, which appends, wrote http after it.
    for headers in [
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
        ][..],
        &[("x-forwarded-proto", "https, http")][..],
    ] {
        let r = raw(
            gate.addr,
            "POST",
            "/login?issue=%7B%22user%22%3A%22a%22%7D",
            headers,
        )
        .await;
        assert!(
            !r.set_cookie("connect.sid").unwrap().contains("Secure"),
            "{headers:?}"
        );
        let r = raw(gate.addr, "GET", "/public/x", headers).await;
        assert_eq!(
            r.upstream_header("x-forwarded-proto").as_deref(),
            Some("http"),
            "{headers:?}"
        );
    }
}

#[test]
fn the_removed_trust_forwarded_proto_says_what_replaces_it() {
    let toml = GateBuilder::new()
        .server("trust_forwarded_proto = true")
        .upstream_addrs("app", &[free_addr()])
        .route(&route("/", "app"))
        .toml(free_addr());
    let e = sessiongate::Config::parse(&toml, "test.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.trust_forwarded_proto"), "{e}");
    assert!(e.contains("server.trusted_proxies"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    let two = "GET /public/1 HTTP/1.1\r\nHost: localhost\r\n\r\n\
               POST /public/2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nbody\
               GET /public/3 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let bytes = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
        s.write_all(two.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
            .await
            .expect("never a silent hang: both answered, or the connection closed")
            .ok();
        buf
    };
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let at = |p: &str| {
        text.find(p)
            .unwrap_or_else(|| panic!("{p} unanswered: {text}"))
    };
    assert!(
        at("/public/1") < at("/public/2") && at("/public/2") < at("/public/3"),
        "{text}"
    );
    assert!(text.contains(r#""method":"POST""#), "{text}");
}
