//! Shared state instead of sticky routing: many upstream servers per pool, many gates per
//! Redis, and any of them serves any user.

use std::collections::BTreeSet;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn three_upstreams_behind_one_route_all_receive_identity() {
    let redis = Redis::start();
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let gate = standard(GateBuilder::new().redis(&redis), &[&a, &b, &c]).start();
    let mut client = gate.client();
    login(&mut client, "alice", &["x"]).await;
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        let r = client.get("/account/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream_header("x-user").as_deref(), Some("alice"));
        seen.insert(r.json()["upstream"].as_str().unwrap().to_string());
    }
    assert_eq!(
        seen,
        BTreeSet::from(["a".to_string(), "b".into(), "c".into()]),
        "round robin reached every server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_server_leaves_the_rotation() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gate = standard(GateBuilder::new(), &[&a, &b]).start();
    drop(b);
    // The health check (every 200 ms here) takes it out; until then requests to it fail over.
    let mut ok = 0;
    for _ in 0..50 {
        let r = raw(gate.addr, "GET", "/public/", &[]).await;
        if r.status == 200 {
            assert_eq!(r.json()["upstream"], "a");
            ok += 1;
        }
        if ok >= 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok >= 10, "requests keep being served by the live server");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gates_on_one_redis_serve_the_same_user_and_share_logout() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let builder = standard(GateBuilder::new().redis(&redis), &[&app]);
    let (g1, g2) = (builder.start(), builder.start());

    let mut on1 = g1.client();
    login(&mut on1, "alice", &[]).await;
    let mut on2 = g2.client();
    on2.cookie = on1.cookie.clone();
    for _ in 0..2 {
        assert_eq!(
            on1.get("/account/")
                .await
                .upstream_header("x-user")
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            on2.get("/account/")
                .await
                .upstream_header("x-user")
                .as_deref(),
            Some("alice")
        );
    }

    let old = on1.cookie.clone().unwrap();
    let r = raw(g2.addr, "POST", "/logout", &[("cookie", &old)]).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        raw(g1.addr, "GET", "/account/", &[("cookie", &old)])
            .await
            .status,
        401
    );
    assert_eq!(
        raw(g2.addr, "GET", "/account/", &[("cookie", &old)])
            .await
            .status,
        401
    );
}
