//! TLS on both sides: HTTPS listeners make cookies `Secure`; `rediss://` with AUTH and a
//! private CA reaches a TLS-only Redis.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn https_clients_get_secure_cookies() {
    let pki = TestPki::new();
    let app = Upstream::start("app").await;
    let tls_addr = free_addr();
    let gate = standard(GateBuilder::new(), &[&app])
        .server(&format!(
            "[server.tls]\nlisten = [\"{tls_addr}\"]\ncert = \"{}\"\nkey = \"{}\"",
            pki.path("cert.pem"),
            pki.path("key.pem")
        ))
        .start();
    let login = "/login?issue=%7B%22user%22%3A%22alice%22%7D";
    let r = raw_tls(tls_addr, &pki, "POST", login, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = r.set_cookie("connect.sid").unwrap();
    assert!(c.contains("; Secure"), "{c}");
    let pair = c.split(';').next().unwrap().to_string();
    let me = raw_tls(tls_addr, &pki, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(
        me.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert!(me.set_cookie("connect.sid").unwrap().contains("; Secure"));

    // Plain HTTP on the same gate: no Secure, and a client's X-Forwarded-Proto is not believed.
    let r = raw(gate.addr, "POST", login, &[("x-forwarded-proto", "https")]).await;
    assert!(!r.set_cookie("connect.sid").unwrap().contains("Secure"));
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_proto_is_believed_only_from_trusted_proxies() {
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new().server(r#"trusted_proxies = ["127.0.0.1/32"]"#),
        &[&app],
    )
    .start();
    let r = raw(
        gate.addr,
        "POST",
        "/login?issue=%7B%22user%22%3A%22a%22%7D",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(r.set_cookie("connect.sid").unwrap().contains("; Secure"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_auth_and_a_private_ca() {
    let pki = TestPki::new();
    let redis = TlsRedis::start(&pki);
    let app = Upstream::start("app").await;
    let addr = free_addr();
    let url = format!("rediss://:{}@localhost:{}/0", redis.password, redis.port);
    let toml = standard(GateBuilder::new(), &[&app])
        .toml(addr)
        .replace("store = \"memory\"", "store = \"redis\"")
        + &format!(
            "\n[redis]\nurl = \"{url}\"\nca_file = \"{}\"\n",
            pki.path("ca.pem")
        );
    let gate = Gate::run(
        sessiongate::Config::parse(&toml, "t", &|_| None).unwrap(),
        addr,
    );
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let r = c.get("/account/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("alice"));

    // The wrong password is an outage (503), not "no session".
    let bad = toml
        .replace(&redis.password, "wrong")
        .replace(&addr.to_string(), &free_addr().to_string());
    let config = sessiongate::Config::parse(&bad, "t", &|_| None).unwrap();
    let addr2: std::net::SocketAddr = config.listen[0].parse().unwrap();
    let gate2 = Gate::run(config, addr2);
    let r = raw(
        gate2.addr,
        "GET",
        "/account/",
        &[("cookie", c.cookie.as_deref().unwrap())],
    )
    .await;
    assert_eq!(r.status, 503);
}
