//! A Redis outage is not a logout: 503 with Retry-After where a session is needed, public
//! routes keep working, and service comes back by itself when Redis does.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_503_and_recovery_needs_no_restart() {
    let mut redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let sid = "OutageSession0123456789abcdefABC";
    let pair = plant_session(&redis, SECRET, sid, json!({"user": "alice"}), None);
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("cookie", &pair)])
            .await
            .status,
        200
    );

    redis.stop();
    for path in ["/account/", "/maybe/", "/pages/x"] {
        let r = raw(gate.addr, "GET", path, &[("cookie", &pair)]).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.header("retry-after"), Some("3"));
        assert_eq!(r.json()["error"], "store_unavailable");
    }
    let r = raw(
        gate.addr,
        "POST",
        "/login?issue=%7B%22user%22%3A%22bob%22%7D",
        &[],
    )
    .await;
    assert_eq!(
        r.status, 503,
        "a login that cannot be stored is not a login"
    );
    assert!(r.set_cookie("connect.sid").is_none());
    assert_eq!(
        raw(gate.addr, "GET", "/public/x", &[("cookie", &pair)])
            .await
            .status,
        200,
        "public routes keep working"
    );

    redis.restart();
    let pair = plant_session(&redis, SECRET, sid, json!({"user": "alice"}), None);
    let mut status = 0;
    for _ in 0..100 {
        status = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)])
            .await
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the gate reconnected by itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_never_answers_times_out_into_503() {
    // A listener that accepts and never answers: slower than any timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let app = Upstream::start("app").await;
    let addr = free_addr();
    let toml = standard(GateBuilder::new(), &[&app])
        .toml(addr)
        .replace("store = \"memory\"", "store = \"redis\"")
        + &format!("\n[redis]\nurl = \"{url}\"\ntimeout = \"200ms\"\n");
    let config = sessiongate::Config::parse(&toml, "t", &|_| None).unwrap();
    let gate = Gate::run(config, addr);
    let pair = format!(
        "connect.sid={}",
        express_sign(SECRET, "SilentSession0123456789abcdefABC")
    );
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("retry-after"),
        Some("2"),
        "the default Retry-After"
    );
    drop(silent);
}
