//! Log out everywhere: every session of a user ends on every gate at once, other users stay.
//!
//! Longer than most modules: every way a session can come to exist (a gate, an express app
//! seen or unseen, an update naming a user, a numeric id) is one test, on every store.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::interop_harness::Express;

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
    sweep_done(&redis, "sessidx:alice");
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg("sessidx:alice")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        left,
        ["!revoked"],
        "the index keeps only the revocation mark"
    );
    assert_every_key_has_a_ttl(&redis);
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

// ---------------------------------------------------------------------------------------
// Log out everywhere reaches every session of the user, whoever wrote it

/// A revocation through the admin API (waits for the sweep to finish).
async fn admin_revoke(gate: &Gate, user: &str) -> Response {
    let r = raw(
        gate.admin.unwrap(),
        "DELETE",
        &format!("/users/{user}/sessions"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r
}

/// Every key under the session and index prefixes carries a TTL.
fn assert_every_key_has_a_ttl(redis: &Redis) {
    let keys: Vec<String> = [redis.keys("sess:*"), redis.keys("sessidx:*")].concat();
    for key in keys {
        let ttl = redis.ttl(&key);
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

/// Waits until the sweep that follows an `X-Session-Destroy: all` is done.
fn sweep_done(redis: &Redis, index: &str) {
    wait_for(
        "the sweep after a revocation",
        Duration::from_secs(10),
        || {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(index)
                .arg("!sweep")
                .query(&mut redis.conn())
                .unwrap();
            score.is_none().then_some(())
        },
    );
}

/// A gate on `redis` that shares express's cookie, with the admin API.
fn gate_beside_express(redis: &Redis, app: &Upstream) -> Gate {
    standard(GateBuilder::new().redis(redis).admin(ADMIN), &[app]).start()
}

fn express_on(redis: &Redis) -> Express {
    Express::builder(redis)
        .secrets(&[SECRET])
        .max_age_ms(Some(600_000))
        .start()
}

/// Logs in at express directly and returns the browser.
async fn express_login(express: &Express, user: &str) -> Client {
    let mut c = express.client();
    let r = c.post(&format!("/login?user={user}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    c
}

/// The same browser, now talking to the gate.
fn through(gate: &Gate, browser: &Client) -> Client {
    let mut c = gate.client();
    c.cookie = browser.cookie.clone();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn express_sessions_no_gate_has_seen_are_revoked_and_later_ones_work() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let express = express_on(&redis);
    let gate = gate_beside_express(&redis, &app);
    // Three express logins the gate never sees, and one at the gate that logs out everywhere.
    let unseen = [
        express_login(&express, "alice").await,
        express_login(&express, "alice").await,
        express_login(&express, "alice").await,
    ];
    let mut bob = express_login(&express, "bob").await;
    let mut at_gate = gate.client();
    login(&mut at_gate, "alice", &[]).await;
    let r = at_gate.post("/login?destroy=all").await;
    assert_eq!(r.status, 200);
    for browser in &unseen {
        assert_eq!(through(&gate, browser).get("/account/").await.status, 401);
    }
    sweep_done(&redis, "sessidx:alice");
    for browser in &unseen {
        let sid = express_unsign(SECRET, browser.cookie.as_deref().unwrap()).unwrap();
        assert!(redis.get(&format!("sess:{sid}")).is_none(), "swept");
        assert_eq!(
            express.client_like(browser).get("/whoami").await.json()["user"],
            Value::Null,
            "express sees it gone too"
        );
    }
    assert_eq!(bob.get("/whoami").await.json()["user"], "bob");
    assert_eq!(through(&gate, &bob).get("/account/").await.status, 200);

    // Sessions made after the revocation work, at express and at the gate.
    let after = express_login(&express, "alice").await;
    assert_eq!(through(&gate, &after).get("/account/").await.status, 200);
    assert_eq!(through(&gate, &after).get("/account/").await.status, 200);
    let mut again = gate.client();
    login(&mut again, "alice", &[]).await;
    assert_eq!(again.get("/account/").await.status, 200);
    assert_every_key_has_a_ttl(&redis);
    let marker_ttl = redis.ttl("sessidx:alice");
    assert!(
        marker_ttl >= 30 * 24 * 3600 - 10,
        "the revocation mark lives as long as the longest session (remember_max): {marker_ttl}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_express_session_the_gate_has_served_is_revoked() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let express = express_on(&redis);
    let gate = gate_beside_express(&redis, &app);
    let browser = express_login(&express, "alice").await;
    let mut via_gate = through(&gate, &browser);
    assert_eq!(via_gate.get("/account/").await.status, 200);
    assert_eq!(admin_revoke(&gate, "alice").await.json()["revoked"], 1);
    assert_eq!(via_gate.get("/account/").await.status, 401);
    assert_eq!(
        express.client_like(&browser).get("/whoami").await.json()["user"],
        Value::Null
    );
    assert_every_key_has_a_ttl(&redis);
}

/// Logs in without a user, then an upstream names the user with `X-Session-Update`.
async fn user_set_by_update(client: &mut Client, user: &str) {
    let q = |v: Value| {
        percent_encoding::utf8_percent_encode(&v.to_string(), percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    };
    let r = client
        .post(&format!("/login?issue={}", q(json!({"cart": 1}))))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = client
        .post(&format!("/login?update={}", q(json!({"user": user}))))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        client
            .get("/account/")
            .await
            .upstream_header("x-user")
            .as_deref(),
        Some(user)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_user_was_set_by_an_update_is_revoked() {
    for redis in [None, Some(Redis::start())] {
        let app = Upstream::start("app").await;
        let gate = standard(
            GateBuilder::new().store(redis.as_ref()).admin(ADMIN),
            &[&app],
        )
        .start();
        let mut c = gate.client();
        user_set_by_update(&mut c, "alice").await;
        // A second one whose user moves from alice to carol: carol's revocation ends it.
        let mut moved = gate.client();
        login(&mut moved, "alice", &[]).await;
        let q = percent_encoding::utf8_percent_encode(
            r#"{"user":"carol"}"#,
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert_eq!(moved.post(&format!("/login?update={q}")).await.status, 200);
        assert_eq!(admin_revoke(&gate, "alice").await.json()["revoked"], 1);
        assert_eq!(
            c.get("/account/").await.status,
            401,
            "on redis: {}",
            redis.is_some()
        );
        assert_eq!(moved.get("/account/").await.status, 200, "now carol's");
        admin_revoke(&gate, "carol").await;
        assert_eq!(moved.get("/account/").await.status, 401);
        if let Some(redis) = &redis {
            assert_every_key_has_a_ttl(redis);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_user_ids_name_one_user_everywhere_or_none() {
    // The largest integer JavaScript and Lua hold exactly: a user on every side.
    const SAFE: &str = "9007199254740991";
    let issue = |user: &str| {
        percent_encoding::utf8_percent_encode(
            &format!(r#"{{"user":{user}}}"#),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string()
    };
    for redis in [None, Some(Redis::start())] {
        let on = format!("on redis: {}", redis.is_some());
        let app = Upstream::start("app").await;
        let gate = standard(
            GateBuilder::new().store(redis.as_ref()).admin(ADMIN),
            &[&app],
        )
        .start();
        let mut safe = gate.client();
        assert_eq!(
            safe.post(&format!("/login?issue={}", issue(SAFE)))
                .await
                .status,
            200
        );
        let r = safe.get("/account/").await;
        assert_eq!(r.status, 200, "{on}");
        assert_eq!(r.upstream_header("x-user").as_deref(), Some(SAFE), "{on}");

        // Past 2^53 - 1, two ids are one double to JavaScript and Lua: no user at all, so
        // no index, revocation or upstream can confuse them.
        let mut big = Vec::new();
        for user in ["1234567890123456789", "1234567890123456790"] {
            let mut c = gate.client();
            assert_eq!(
                c.post(&format!("/login?issue={}", issue(user)))
                    .await
                    .status,
                200
            );
            let r = c.get("/account/").await;
            assert_eq!(r.status, 401, "{user} is no user ({on}): {}", r.body);
            let r = c.get("/maybe/").await;
            assert_eq!(r.status, 200);
            assert_eq!(r.upstream_header("x-user"), None, "{on}: {}", r.body);
            big.push(c);
        }
        if let Some(redis) = &redis {
            // Written by another writer (JavaScript prints the rounded double) and loaded.
            let pair = plant_session(
                redis,
                SECRET,
                "numericUserPlantedSession0000001",
                json!({"user": 1234567890123456800u64}),
                Some(600_000),
            );
            assert_eq!(
                gate.client_with_cookie(&pair).get("/account/").await.status,
                401
            );
            let indexes = redis.keys("sessidx:*");
            assert_eq!(
                indexes,
                [format!("sessidx:{SAFE}")],
                "only the safe id has an index"
            );
        }
        for typed in [
            "1234567890123456789",
            "1234567890123456768",
            "1234567890123456800",
        ] {
            assert_eq!(
                admin_revoke(&gate, typed).await.json()["revoked"],
                0,
                "{typed} ({on})"
            );
        }
        assert_eq!(admin_revoke(&gate, SAFE).await.json()["revoked"], 1, "{on}");
        assert_eq!(safe.get("/account/").await.status, 401, "{on}");
        if let Some(redis) = &redis {
            assert_every_key_has_a_ttl(redis);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_string_user_revoked_with_a_never_seen_planted_session_on_one_redis() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = gate_beside_express(&redis, &app);
    let pair = plant_session(
        &redis,
        SECRET,
        "plantedNeverSeenByTheGate0000001",
        json!({"user": "dave"}),
        Some(600_000),
    );
    assert_eq!(admin_revoke(&gate, "dave").await.json()["revoked"], 1);
    let mut c = gate.client();
    c.cookie = Some(pair);
    assert_eq!(c.get("/account/").await.status, 401);
    assert!(redis.get("sess:plantedNeverSeenByTheGate0000001").is_none());
    assert_every_key_has_a_ttl(&redis);
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_log_out_everywhere_scans_the_store_at_most_twice_at_a_time() {
    let redis = Redis::start();
    // A large keyspace, so that each sweep takes many SCAN steps.
    let mut con = redis.conn();
    for chunk in 0..100 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SET")
                .arg(format!("other:{chunk}:{i}"))
                .arg("x")
                .arg("EX")
                .arg(600)
                .ignore();
        }
        pipe.query::<()>(&mut con).unwrap();
    }
    let app = Upstream::start("app").await;
    let gate = gate_beside_express(&redis, &app);
    let scans = |con: &mut redis::Connection| Redis::command_calls(con).get("scan").copied();
    let mut stats = redis.conn();
    let before = scans(&mut stats).unwrap_or(0);
    admin_revoke(&gate, "nobody").await;
    let per_sweep = scans(&mut stats).unwrap() - before;
    assert!(per_sweep >= 50, "{per_sweep} SCAN steps for one sweep");

    // Ten times in a row, as fast as the user can: log in, log out everywhere.
    let before = scans(&mut stats).unwrap();
    for _ in 0..10 {
        let mut c = gate.client();
        login(&mut c, "alice", &[]).await;
        assert_eq!(c.post("/login?destroy=all").await.status, 200);
    }
    let settled = || {
        let mark: Option<f64> = redis::cmd("ZSCORE")
            .arg("sessidx:alice")
            .arg("!sweep")
            .query(&mut redis.conn())
            .unwrap();
        mark.is_none().then_some(())
    };
    wait_for("the sweeps", Duration::from_secs(30), settled);
    std::thread::sleep(Duration::from_millis(500));
    wait_for("the sweeps", Duration::from_secs(30), settled);
    let burst = scans(&mut stats).unwrap() - before;
    assert!(
        burst <= 4 * per_sweep,
        "{burst} SCAN steps for 10 revocations ({per_sweep} per sweep): sweeps of one user are folded"
    );
}
