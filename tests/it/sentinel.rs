//! Redis Sentinel: a master, its replica and a sentinel (the test kit's [`RedisSentinel`]).
//! The gate asks the sentinel for the master, follows a failover without a restart and
//! without a logout, writes new logins to the new master, never to the demoted one, and moves
//! its invalidation stream there. The sentinels are asked in order, with their own password.

use std::time::{Duration, Instant};

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

fn gate_on(s: &RedisSentinel, app: &Upstream, cache: bool) -> Gate {
    let mut b = standard(
        GateBuilder::new()
            .redis_sentinel(
                &s.sentinel_url(),
                sessiongate_testkit::redis_sentinel::MASTER_NAME,
            )
            .admin(ADMIN),
        &[app],
    );
    if cache {
        b = b.cache();
    }
    b.start()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_is_followed_without_logouts() {
    let s = RedisSentinel::start();
    let app = Upstream::start("app").await;
    let (g1, g2) = (gate_on(&s, &app, false), gate_on(&s, &app, true));
    let mut cookies = Vec::new();
    for i in 0..5 {
        let mut c = g1.client();
        login(&mut c, &format!("user{i}"), &[]).await;
        cookies.push(c.cookie.clone().unwrap());
    }
    let old = s.master().unwrap();
    redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query::<i64>(&mut s.node(old))
        .unwrap();
    for pair in &cookies {
        for gate in [&g1, &g2] {
            assert_eq!(
                gate.client_with_cookie(pair).get("/account/").await.status,
                200
            );
        }
    }

    let start = Instant::now();
    let new = s.failover();
    assert_ne!(new, old);
    // Every session works again by itself; meanwhile a request may wait (503), never 401.
    let mut statuses = std::collections::BTreeMap::new();
    loop {
        let mut all = true;
        for pair in &cookies {
            for gate in [&g1, &g2] {
                let status = gate.client_with_cookie(pair).get("/account/").await.status;
                *statuses.entry(status).or_insert(0) += 1;
                assert!(
                    status == 200 || status == 503,
                    "{status} during the failover"
                );
                all &= status == 200;
            }
        }
        if all {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never recovered: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "sentinel failover: every session served again {:?} after SENTINEL FAILOVER; answers {statuses:?}",
        start.elapsed()
    );

    // Once the old master is a replica, writes still land: on the new master.
    wait_for(
        "the old master to be demoted",
        Duration::from_secs(30),
        || {
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut s.node(old)).ok()?;
            matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"slave").then_some(())
        },
    );
    let mut fresh = g1.client();
    login(&mut fresh, "after", &[]).await;
    let key = format!("sess:{}", sid_of(&fresh));
    let on_new: Option<String> = redis::cmd("GET").arg(&key).query(&mut s.node(new)).unwrap();
    assert!(on_new.is_some(), "the login was written to the new master");
    assert_eq!(
        g2.client_with_cookie(fresh.cookie.as_deref().unwrap())
            .get("/account/")
            .await
            .status,
        200
    );
    for pair in &cookies {
        let mut c = g1.client_with_cookie(pair);
        assert_eq!(
            c.post("/login?update=%7B%22theme%22%3A%22dark%22%7D")
                .await
                .status,
            200
        );
    }

    // The caching gate's stream moved to the new master.
    let admin = g2.admin.unwrap();
    let mut live = false;
    for _ in 0..500 {
        if admin_metric(admin, ADMIN, "sessiongate_cache_live").await == 1 {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(live);
    let cached = fresh.cookie.clone().unwrap();
    assert_eq!(
        g2.client_with_cookie(&cached).get("/account/").await.status,
        200
    );
    let invalidations = admin_metric(admin, ADMIN, "sessiongate_cache_invalidations_total").await;
    redis::cmd("DEL")
        .arg(&key)
        .query::<i64>(&mut s.node(new))
        .unwrap();
    let start = Instant::now();
    while admin_metric(admin, ADMIN, "sessiongate_cache_invalidations_total").await == invalidations
    {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the cache never heard the new master"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        g2.client_with_cookie(&cached).get("/account/").await.status,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_sentinel_that_answers_is_asked_with_the_sentinels_password() {
    const PASSWORD: &str = "sentinel-secret-0123";
    let s = RedisSentinel::start_with_password(Some(PASSWORD));
    let app = Upstream::start("app").await;
    // The first sentinel of the list is down: the gate asks the next one.
    let nodes = [
        format!("redis://127.0.0.1:{}", free_port()),
        s.sentinel_url(),
    ];
    let master = sessiongate_testkit::redis_sentinel::MASTER_NAME;
    let gate = standard(
        GateBuilder::new()
            .redis_sentinels(&nodes, master, Some(PASSWORD))
            .cache(),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let key = format!("sess:{}", sid_of(&c));
    let stored: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query(&mut s.node(s.master().unwrap()))
        .unwrap();
    assert!(stored.is_some(), "the session is on the master");

    // With a wrong password no sentinel names the master: the store is unavailable (503),
    // and nobody is logged out.
    let refused = standard(
        GateBuilder::new().redis_sentinels(&nodes, master, Some("wrong-password")),
        &[&app],
    )
    .start();
    let r = refused
        .client_with_cookie(c.cookie.as_deref().unwrap())
        .get("/account/")
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
}
