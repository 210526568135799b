//! Idle and absolute timeouts together, and "remember me": on Redis and on the embedded store.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn short_lived(b: GateBuilder) -> GateBuilder {
    b.session(r#"idle_timeout = "2s""#)
        .session(r#"absolute_timeout = "4s""#)
}

async fn absolute_beats_rolling(redis: Option<&Redis>) {
    let app = Upstream::start("app").await;
    let b = short_lived(GateBuilder::new().store(redis));
    let gate = standard(b, &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    // Active every 500 ms: the idle timeout (2 s) never runs out...
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2800) {
        assert_eq!(
            c.get("/account/").await.status,
            200,
            "alive at {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ...but the absolute timeout (4 s from login) does.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        c.get("/account/").await.status,
        401,
        "past the absolute timeout"
    );
    if let Some(r) = redis {
        assert!(
            r.keys("sess:*").is_empty(),
            "the expired session is gone from the store"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_timeout_beats_rolling_on_redis() {
    let redis = Redis::start();
    absolute_beats_rolling(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_timeout_beats_rolling_in_memory() {
    absolute_beats_rolling(None).await;
}

async fn idle_expires(redis: Option<&Redis>) {
    let app = Upstream::start("app").await;
    let b = GateBuilder::new()
        .session(r#"idle_timeout = "1s""#)
        .store(redis);
    let gate = standard(b, &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    assert_eq!(c.get("/account/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        c.get("/account/").await.status,
        401,
        "idle longer than the idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_expires_on_redis() {
    let redis = Redis::start();
    idle_expires(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_expires_in_memory() {
    idle_expires(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_from_other_writers_fall_back_to_idle_only() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(short_lived(GateBuilder::new().redis(&redis)), &[&app]).start();
    // No `sessiongate.created`: an express-made session. Only the idle timeout applies.
    let pair = plant_session(
        &redis,
        SECRET,
        "ExpressMadeSession0123456789abcd",
        json!({"user": "x"}),
        None,
    );
    for _ in 0..10 {
        assert_eq!(
            raw(gate.addr, "GET", "/account/", &[("cookie", &pair)])
                .await
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remember_me_gets_the_asked_max_age_capped() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .session(r#"remember_max = "7d""#),
        &[&app],
    )
    .start();

    // Default: a browser-session cookie.
    let mut plain = gate.client();
    let r = login(&mut plain, "a", &[]).await;
    assert!(!r.set_cookie("connect.sid").unwrap().contains("Max-Age"));

    let issue = "%7B%22user%22%3A%22alice%22%7D";
    let mut c = gate.client();
    let r = c.post(&format!("/login?issue={issue}&max_age=1h")).await;
    let cookie = r.set_cookie("connect.sid").unwrap();
    assert!(cookie.contains("; Max-Age=3600; Expires="), "{cookie}");
    assert!(r.header("x-session-max-age").is_none());
    let sid = sid_of(&c);
    let ttl = redis.ttl(&format!("sess:{sid}"));
    assert!((3595..=3600).contains(&ttl), "the TTL follows: {ttl}");
    let rolled = c.get("/account/").await;
    assert!(
        rolled
            .set_cookie("connect.sid")
            .unwrap()
            .contains("Max-Age=3600"),
        "rolling keeps the asked life"
    );

    let mut greedy = gate.client();
    let r = greedy
        .post(&format!("/login?issue={issue}&max_age=365d"))
        .await;
    assert!(
        r.set_cookie("connect.sid")
            .unwrap()
            .contains("; Max-Age=604800;"),
        "capped at remember_max"
    );
    assert!(redis.ttl(&format!("sess:{}", sid_of(&greedy))) > 604_000);

    let r = raw(
        gate.addr,
        "POST",
        &format!("/login?issue={issue}&max_age=soon"),
        &[],
    )
    .await;
    assert_eq!(r.status, 502, "a malformed max-age is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_cookie_never_outlives_the_absolute_timeout() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .session(r#"absolute_timeout = "1h""#),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    let r = c
        .post("/login?issue=%7B%22user%22%3A%22a%22%7D&max_age=7d")
        .await;
    let cookie = r.set_cookie("connect.sid").unwrap();
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&max_age), "{cookie}");
    assert!(redis.ttl(&format!("sess:{}", sid_of(&c))) <= 3600);
}
