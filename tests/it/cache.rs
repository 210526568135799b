//! The local session cache: hits cost no Redis command, and Redis's invalidation stream keeps
//! every gate's cache coherent. Waits are for the invalidation to arrive (seen in the admin
//! API's metrics), never for a time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

async fn metrics(admin: SocketAddr) -> HashMap<String, u64> {
    let r = raw(
        admin,
        "GET",
        "/metrics",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        // Histogram sums are fractions; every counter and gauge read here is whole.
        .map(|(k, v)| {
            let v: f64 = v
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("metric {k}: {v:?}: {e}"));
            (k.to_string(), v as u64)
        })
        .collect()
}

/// Waits until `name` satisfies `f` (bounded; the stream normally answers within a millisecond).
async fn until(admin: SocketAddr, name: &str, f: impl Fn(u64) -> bool) {
    for _ in 0..500 {
        if f(metrics(admin).await[name]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never reached the expected value");
}

/// Commands Redis has run, but the invalidation stream's once-a-second liveness PING, which
/// is no request's cost.
fn commands(redis: &Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    info.lines()
        .filter(|l| !l.starts_with("cmdstat_ping:"))
        .filter_map(|l| l.split("calls=").nth(1))
        .map(|rest| rest.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn cached_gate(redis: &Redis, app: &Upstream) -> Gate {
    standard(GateBuilder::new().redis(redis).cache().admin(ADMIN), &[app]).start()
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_cost_no_redis_command() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = cached_gate(&redis, &app);
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    until(admin, "sessiongate_cache_live", |v| v == 1).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let before = commands(&redis);
    let hits = metrics(admin).await["sessiongate_cache_hits_total"];
    for _ in 0..50 {
        let r = c.get("/account/").await;
        assert_eq!(r.upstream_header("x-user").as_deref(), Some("alice"));
    }
    // INFO itself counts once per call; allow one throttled touch besides.
    let spent = commands(&redis) - before;
    assert!(spent <= 3, "50 cached requests cost {spent} Redis commands");
    assert!(metrics(admin).await["sessiongate_cache_hits_total"] >= hits + 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_and_update_on_one_gate_reach_the_other_gates_cache() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let (a, b) = (cached_gate(&redis, &app), cached_gate(&redis, &app));
    let b_admin = b.admin.unwrap();
    let mut on_a = a.client();
    login(&mut on_a, "alice", &["reader"]).await;
    let mut on_b = b.client();
    on_b.cookie = on_a.cookie.clone();
    until(b_admin, "sessiongate_cache_live", |v| v == 1).await;
    on_b.get("/account/").await;
    let hits = metrics(b_admin).await["sessiongate_cache_hits_total"];
    assert_eq!(
        on_b.get("/account/")
            .await
            .upstream_header("x-user-roles")
            .as_deref(),
        Some("reader")
    );
    assert!(
        metrics(b_admin).await["sessiongate_cache_hits_total"] > hits,
        "B serves from its cache"
    );

    // An update through A...
    let seen = metrics(b_admin).await["sessiongate_cache_invalidations_total"];
    let r = on_a
        .post("/login/prefs?update=%7B%22roles%22%3A%5B%22editor%22%5D%7D")
        .await;
    assert_eq!(r.status, 200);
    until(b_admin, "sessiongate_cache_invalidations_total", |v| {
        v > seen
    })
    .await;
    assert_eq!(
        on_b.get("/account/")
            .await
            .upstream_header("x-user-roles")
            .as_deref(),
        Some("editor")
    );

    // ...and a revocation through A.
    on_b.get("/account/").await;
    let seen = metrics(b_admin).await["sessiongate_cache_invalidations_total"];
    let r = on_a.post("/login/everywhere?destroy=all").await;
    assert_eq!(r.status, 200);
    until(b_admin, "sessiongate_cache_invalidations_total", |v| {
        v > seen
    })
    .await;
    assert_eq!(
        on_b.get("/account/").await.status,
        401,
        "B's cache never serves a revoked session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restart_drops_the_cache_instead_of_serving_it_stale() {
    let mut redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = cached_gate(&redis, &app);
    let admin = gate.admin.unwrap();
    let pair = plant_session(
        &redis,
        SECRET,
        "CachedSession0123456789abcdefABC",
        json!({"user": "alice"}),
        Some(600_000),
    );
    until(admin, "sessiongate_cache_live", |v| v == 1).await;
    for _ in 0..2 {
        assert_eq!(
            raw(gate.addr, "GET", "/account/", &[("cookie", &pair)])
                .await
                .status,
            200
        );
    }
    let flushes = metrics(admin).await["sessiongate_cache_flushes_total"];
    redis.stop();
    until(admin, "sessiongate_cache_live", |v| v == 0).await;
    assert!(metrics(admin).await["sessiongate_cache_flushes_total"] > flushes);
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("cookie", &pair)])
            .await
            .status,
        503,
        "not a stale 200"
    );

    redis.restart();
    until(admin, "sessiongate_cache_live", |v| v == 1).await;
    // The restarted Redis kept nothing: neither may the cache.
    let mut status = 0;
    for _ in 0..100 {
        status = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)])
            .await
            .status;
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn touches_are_throttled_with_the_cache() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .cache()
            .admin(ADMIN)
            .session(r#"touch_interval = "2s""#)
            .cookie(r#"max_age = "10m""#),
        &[&app],
    )
    .start();
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    until(admin, "sessiongate_cache_live", |v| v == 1).await;
    let key = format!("sess:{}", sid_of(&c));
    c.get("/account/").await;
    for _ in 0..20 {
        let r = c.get("/account/").await;
        assert!(
            r.set_cookie("connect.sid").is_none(),
            "the cookie rolls with the TTL, not more often"
        );
    }
    assert_eq!(
        metrics(admin).await["sessiongate_cache_touches_total"],
        0,
        "no touch within the interval"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = c.get("/account/").await;
    assert!(
        r.set_cookie("connect.sid").unwrap().contains("Max-Age=600"),
        "a due touch rolls the cookie"
    );
    until(admin, "sessiongate_cache_touches_total", |v| v == 1).await;
    let ttl = redis.ttl(&key);
    assert!(ttl >= 599, "the batched touch pushed the TTL: {ttl}");
    for _ in 0..20 {
        c.get("/account/").await;
    }
    assert_eq!(
        metrics(admin).await["sessiongate_cache_touches_total"],
        1,
        "one touch per interval"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_secret_cookie_is_resigned_even_between_touches() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .cache()
            .admin(ADMIN)
            .secrets(&[SECRET, OLD_SECRET]),
        &[&app],
    )
    .start();
    until(gate.admin.unwrap(), "sessiongate_cache_live", |v| v == 1).await;
    let sid = "RetiredSecretSession0123456789ab";
    let mut c = gate.client();
    c.cookie = Some(plant_session(
        &redis,
        OLD_SECRET,
        sid,
        json!({"user": "x"}),
        Some(600_000),
    ));
    c.get("/account/").await;
    assert_eq!(
        express_unsign(SECRET, c.cookie.as_deref().unwrap()).as_deref(),
        Some(sid),
        "re-signed with the current secret"
    );
    let r = c.get("/account/").await;
    assert_eq!(r.status, 200);
    assert!(
        r.set_cookie("connect.sid").is_none(),
        "and then left alone until a touch is due"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_active_session_outlives_an_idle_timeout_shorter_than_the_touch_interval() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    // The cache's default touch interval (1 minute) is far longer than this idle timeout.
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .cache()
            .admin(ADMIN)
            .session(r#"idle_timeout = "2s""#),
        &[&app],
    )
    .start();
    until(gate.admin.unwrap(), "sessiongate_cache_live", |v| v == 1).await;
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        assert_eq!(
            c.get("/account/").await.status,
            200,
            "active at {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_invalidation_stream_stops_the_cache_long_before_its_ttl() {
    let redis = Redis::start();
    let relay = FreezableRelay::start(&redis).await;
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis_url(&relay.url())
            .cache()
            .cache_setting(r#"ttl = "60s""#)
            .admin(ADMIN),
        &[&app],
    )
    .start();
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    until(admin, "sessiongate_cache_live", |v| v == 1).await;
    login(&mut c, "alice", &[]).await;
    // The login's own write comes back as an invalidation: let it arrive before the freeze.
    until(admin, "sessiongate_cache_invalidations_total", |v| v >= 1).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let hits = metrics(admin).await["sessiongate_cache_hits_total"];
    assert_eq!(c.get("/account/").await.status, 200);
    until(admin, "sessiongate_cache_hits_total", |v| v > hits).await;

    // The invalidation stream stops delivering without closing, and then the session ends.
    assert!(
        relay.freeze_tracking() >= 1,
        "tracking went through the relay"
    );
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("sess:{}", sid_of(&c)))
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(deleted, 1);

    // cache.ttl is 60 s: a gate that does not notice the stall serves the session that long.
    let start = std::time::Instant::now();
    loop {
        let status = c.get("/account/").await.status;
        if status == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a session deleted in Redis is still served ({status}) {:?} into the stall",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
