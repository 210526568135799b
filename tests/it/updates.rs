//! Upstream updates to the session: atomic merges that never lose a concurrent writer's
//! fields, and regeneration of the id keeping the data.

use serde_json::Value;

use crate::harness::*;

fn enc(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn concurrent_updates_all_land(redis: Option<&Redis>) {
    let app = Upstream::start("app").await;
    let b = GateBuilder::new().store(redis);
    let gate = standard(b, &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &["reader"]).await;
    let cookie = c.cookie.clone().unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (addr, cookie) = (gate.addr, cookie.clone());
        tasks.push(tokio::spawn(async move {
            let path = format!(
                "/login/prefs?update={}",
                enc(&format!("{{\"field{i}\":{i}}}"))
            );
            raw(addr, "POST", &path, &[("cookie", &cookie)])
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let r = c.get("/account/").await;
    assert_eq!(
        r.upstream_header("x-user").as_deref(),
        Some("alice"),
        "the update kept the other fields"
    );
    if let Some(redis) = redis {
        let stored: Value =
            serde_json::from_str(&redis.get(&format!("sess:{}", sid_of(&c))).unwrap()).unwrap();
        for i in 0..24 {
            assert_eq!(
                stored[format!("field{i}")],
                i,
                "update {i} was lost: {stored}"
            );
        }
        assert_eq!(stored["user"], "alice");
        assert!(
            stored["cookie"].is_object(),
            "the cookie is not the upstream's to change"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_updates_both_land_on_redis() {
    let redis = Redis::start();
    concurrent_updates_all_land(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_updates_both_land_in_memory() {
    concurrent_updates_all_land(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_keeps_the_ttl_and_reaches_identity_headers() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .session("rolling = false")
            .session("touch = false"),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &["reader"]).await;
    let key = format!("sess:{}", sid_of(&c));
    redis.expire(&key, 500);
    let r = c
        .post(&format!(
            "/login/prefs?update={}",
            enc(r#"{"roles":["reader","editor"],"cookie":{"path":"/x"}}"#)
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-session-update").is_none());
    let ttl = redis.ttl(&key);
    assert!((490..=500).contains(&ttl), "KEEPTTL: {ttl}");
    assert_eq!(
        c.get("/account/")
            .await
            .upstream_header("x-user-roles")
            .as_deref(),
        Some("reader,editor")
    );
    let stored: Value = serde_json::from_str(&redis.get(&key).unwrap()).unwrap();
    assert_eq!(stored["cookie"]["path"], "/");
    // Malformed updates are refused and change nothing.
    let r = c.post("/login/prefs?update=oops").await;
    assert_eq!(r.status, 502);
}

async fn regenerate(redis: Option<&Redis>) {
    let app = Upstream::start("app").await;
    let b = GateBuilder::new().store(redis);
    let gate = standard(b, &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &["reader"]).await;
    let old = c.cookie.clone().unwrap();
    let old_sid = sid_of(&c);
    let r = c
        .post(&format!(
            "/login/elevate?regenerate=1&update={}",
            enc(r#"{"roles":["admin"]}"#)
        ))
        .await;
    assert_eq!(r.status, 200);
    let new_sid = sid_of(&c);
    assert_ne!(new_sid, old_sid, "a new id");
    let me = c.get("/account/").await;
    assert_eq!(me.status, 200);
    assert_eq!(
        me.upstream_header("x-user").as_deref(),
        Some("alice"),
        "the data came along"
    );
    assert_eq!(
        me.upstream_header("x-user-roles").as_deref(),
        Some("admin"),
        "and the update applied to it"
    );
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("cookie", &old)])
            .await
            .status,
        401,
        "the old cookie stops working"
    );
    if let Some(redis) = redis {
        assert!(redis.get(&format!("sess:{old_sid}")).is_none());
        let idx: Vec<String> = redis::cmd("ZRANGE")
            .arg("sessidx:alice")
            .arg(0)
            .arg(-1)
            .query(&mut redis.conn())
            .unwrap();
        assert_eq!(idx, [new_sid], "the user's index follows the new id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn regenerate_changes_the_id_and_keeps_the_data_on_redis() {
    let redis = Redis::start();
    regenerate(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regenerate_changes_the_id_and_keeps_the_data_in_memory() {
    regenerate(None).await;
}
