//! Log out everywhere: every session of a user ends on every gate at once, other users stay.

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn revoke_all_logs_a_user_out_on_both_gates() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let b = standard(GateBuilder::new().redis(&redis), &[&app]);
    let (g1, g2) = (b.start(), b.start());
    let mut laptop = g1.client();
    let mut phone = g2.client();
    let mut bob = g1.client();
    login(&mut laptop, "alice", &[]).await;
    login(&mut phone, "alice", &[]).await;
    login(&mut bob, "bob", &[]).await;
    let idx: Vec<String> = redis::cmd("ZRANGE")
        .arg("sessidx:alice")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(idx.len(), 2);
    assert!(redis.ttl("sessidx:alice") > 0, "indexes carry a TTL");

    let phone_cookie = phone.cookie.clone().unwrap();
    let laptop_cookie = laptop.cookie.clone().unwrap();
    let r = laptop.post("/login/everywhere?destroy=all").await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookie("connect.sid").unwrap().contains("Max-Age=0"));
    for gate in [&g1, &g2] {
        for cookie in [&phone_cookie, &laptop_cookie] {
            assert_eq!(
                raw(gate.addr, "GET", "/account/", &[("cookie", cookie)])
                    .await
                    .status,
                401
            );
        }
    }
    assert_eq!(
        bob.get("/account/").await.status,
        200,
        "other users stay logged in"
    );
    assert!(redis.get("sessidx:alice").is_none() && redis.keys("sessidx:alice").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_all_through_the_admin_api_in_memory() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().admin(ADMIN), &[&app]).start();
    let mut a1 = gate.client();
    let mut a2 = gate.client();
    let mut bob = gate.client();
    login(&mut a1, "alice", &[]).await;
    login(&mut a2, "alice", &[]).await;
    login(&mut bob, "bob", &[]).await;
    let r = raw(
        gate.admin.unwrap(),
        "DELETE",
        "/users/alice/sessions",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], 2);
    assert_eq!(a1.get("/account/").await.status, 401);
    assert_eq!(a2.get("/account/").await.status, 401);
    assert_eq!(bob.get("/account/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn indexes_expire_with_their_sessions() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new().redis(&redis).cookie(r#"max_age = "1h""#),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let ttl = redis.ttl("sessidx:alice");
    assert!(
        (3590..=3600).contains(&ttl),
        "the index lives as long as its longest session: {ttl}"
    );
    redis.expire("sessidx:alice", 10);
    redis.expire(&format!("sess:{}", sid_of(&c)), 10);
    assert_eq!(c.get("/account/").await.status, 200);
    assert!(
        redis.ttl("sessidx:alice") > 3500,
        "a touch of the session pushes its index too"
    );
}
