//! Login and logout at the edge: `X-Session-Issue` and `X-Session-Destroy` from upstreams
//! allowed to send them, the gate's own POST logout, and the embedded store.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn login_replaces_any_session_the_request_carried() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    // An attacker-planted but valid session (fixation attempt) and a stale one.
    let fixed = "FixedSessionId0123456789abcdefAB";
    let pair = plant_session(&redis, SECRET, fixed, json!({"user": "anon"}), None);
    let mut c = gate.client();
    c.cookie = Some(pair);
    login(&mut c, "alice", &[]).await;
    let sid = sid_of(&c);
    assert_ne!(sid, fixed, "a login never keeps the id the client brought");
    assert!(
        redis.get(&format!("sess:{fixed}")).is_none(),
        "the old session is destroyed"
    );
    assert!(redis.get(&format!("sess:{sid}")).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_destroy_deletes_the_session_and_expires_the_cookie() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let old = c.cookie.clone().unwrap();
    let sid = sid_of(&c);
    let r = c.post("/login/out?destroy=1").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-session-destroy").is_none());
    let expired = r.set_cookie("connect.sid").unwrap();
    assert!(
        expired.starts_with("connect.sid=; Path=/; Max-Age=0"),
        "{expired}"
    );
    assert!(redis.get(&format!("sess:{sid}")).is_none());
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("cookie", &old)])
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_routes_with_issue_sessions_may_issue_or_destroy() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let issue = "%7B%22user%22%3A%22root%22%7D";
    let r = raw(gate.addr, "GET", &format!("/public/x?issue={issue}"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookie("connect.sid").is_none());
    assert!(
        r.header("x-session-issue").is_none(),
        "the header is removed even when ignored"
    );
    assert!(redis.keys("sess:*").is_empty());

    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let r = c.get("/account/x?destroy=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(c.get("/account/").await.status, 200, "the session survives");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_issue_header_is_a_502_not_a_session() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    for bad in ["not-json", "%5B1%2C2%5D", "%22alice%22"] {
        let r = raw(gate.addr, "POST", &format!("/login?issue={bad}"), &[]).await;
        assert_eq!(r.status, 502, "{bad}");
        assert!(r.set_cookie("connect.sid").is_none());
    }
    assert!(redis.keys("sess:*").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gates_own_logout_is_post_only_and_same_origin_only() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let sid = sid_of(&c);
    let cookie = c.cookie.clone().unwrap();

    let r = c.get("/logout").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = raw(
        gate.addr,
        "POST",
        "/logout",
        &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "cross_origin");
    let r = raw(
        gate.addr,
        "POST",
        "/logout",
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        redis.get(&format!("sess:{sid}")).is_some(),
        "refused logouts change nothing"
    );

    let r = raw(
        gate.addr,
        "POST",
        "/logout",
        &[("cookie", &cookie), ("origin", "http://localhost")],
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.set_cookie("connect.sid").unwrap().contains("Max-Age=0"));
    assert!(redis.get(&format!("sess:{sid}")).is_none());
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("cookie", &cookie)])
            .await
            .status,
        401
    );
    assert_eq!(app.hits(), 1, "only the login reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_store_needs_no_redis_and_expires_sessions() {
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .cookie(r#"max_age = "1s""#)
            .session("rolling = false")
            .session("touch = false"),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &["a"]).await;
    let r = c.get("/account/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("alice"));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        c.get("/account/").await.status,
        401,
        "the session expired with its TTL"
    );

    login(&mut c, "bob", &[]).await;
    let r = raw(
        gate.addr,
        "POST",
        "/logout",
        &[("cookie", c.cookie.as_deref().unwrap())],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(c.get("/account/").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_expires_the_cookie_where_it_was_set() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let sid = "PathAppSession0123456789abcdefAB";
    let record = json!({"cookie": {"originalMaxAge": null, "expires": null, "httpOnly": true, "path": "/app", "domain": "localhost"}, "user": "x"});
    redis.set(&format!("sess:{sid}"), &record.to_string(), 600);
    let pair = format!("connect.sid={}", express_sign(SECRET, sid));
    let r = raw(gate.addr, "POST", "/logout", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 204);
    let c = r.set_cookie("connect.sid").unwrap();
    assert!(c.contains("Path=/app; Domain=localhost; Max-Age=0"), "{c}");
}
