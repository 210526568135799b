//! Rolling sessions: each authenticated request pushes the Redis TTL forward (one Lua script, one
//! round trip) and re-sends the cookie with a fresh expiry.

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_request_pushes_the_ttl_and_resends_the_cookie() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .cookie(r#"max_age = "10m""#),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let key = format!("sess:{}", sid_of(&c));
    redis.expire(&key, 30);
    let before = redis.get(&key).unwrap();

    let r = c.get("/account/").await;
    assert_eq!(r.status, 200);
    let ttl = redis.ttl(&key);
    assert!(
        (595..=600).contains(&ttl),
        "TTL pushed back to the max-age: {ttl}"
    );
    let set_cookie = r
        .set_cookie("connect.sid")
        .expect("rolling re-sends the cookie");
    assert!(set_cookie.contains("Max-Age=600; Expires="), "{set_cookie}");
    assert_eq!(
        redis.get(&key).unwrap(),
        before,
        "a touch does not rewrite the record (connect-redis semantics)"
    );

    // Public routes never touch the session.
    redis.expire(&key, 30);
    let r = c.get("/public/").await;
    assert!(r.set_cookie("connect.sid").is_none());
    assert!(redis.ttl(&key) <= 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_with_their_own_max_age_keep_it() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .cookie(r#"max_age = "10m""#),
        &[&app],
    )
    .start();
    // Written by another writer (an express app) with a 2-hour cookie.
    let sid = "OwnMaxAgeSession0123456789abcdef";
    let pair = plant_session(&redis, SECRET, sid, json!({"user": "x"}), Some(7_200_000));
    redis.expire(&format!("sess:{sid}"), 30);
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200);
    let ttl = redis.ttl(&format!("sess:{sid}"));
    assert!(
        (7195..=7200).contains(&ttl),
        "the session's own originalMaxAge rules: {ttl}"
    );
    assert!(r
        .set_cookie("connect.sid")
        .unwrap()
        .contains("Max-Age=7200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_rolling_and_touch_nothing_moves() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .session("rolling = false")
            .session("touch = false")
            .cookie(r#"max_age = "10m""#),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let key = format!("sess:{}", sid_of(&c));
    redis.expire(&key, 30);
    let r = c.get("/account/").await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookie("connect.sid").is_none());
    assert!(redis.ttl(&key) <= 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn touch_without_rolling_pushes_the_ttl_but_sends_no_cookie() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .session("rolling = false")
            .cookie(r#"max_age = "10m""#),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let key = format!("sess:{}", sid_of(&c));
    redis.expire(&key, 30);
    let r = c.get("/account/").await;
    assert!(r.set_cookie("connect.sid").is_none());
    assert!(
        redis.ttl(&key) > 590,
        "express-session with resave: false touches unmodified sessions"
    );
}
