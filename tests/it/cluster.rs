//! Redis Cluster: three masters and three replicas on loopback (the test kit's
//! [`RedisCluster`]). Two gates share sessions in every slot, with and without the local cache;
//! log out everywhere reaches sessions other writers put in every slot, for string and
//! numeric user ids; every key keeps a TTL.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

fn cluster_conn(cluster: &RedisCluster) -> redis::cluster::ClusterConnection {
    redis::cluster::ClusterClient::new(cluster.urls())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Puts a session into the cluster as connect-redis would; returns its cookie pair.
fn plant(cluster: &RedisCluster, sid: &str, user: Value) -> String {
    let record = json!({"cookie": {"originalMaxAge": 600_000, "expires": null, "httpOnly": true, "path": "/"}, "user": user});
    redis::cmd("SET")
        .arg(format!("sess:{sid}"))
        .arg(record.to_string())
        .arg("EX")
        .arg(600)
        .query::<()>(&mut cluster_conn(cluster))
        .unwrap();
    format!("connect.sid={}", express_sign(SECRET, sid))
}

/// Session ids whose keys land on every master, `per_master` on each.
fn ids_on_every_master(cluster: &RedisCluster, tag: &str, per_master: usize) -> Vec<String> {
    let mut by_master: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for i in 0.. {
        let sid = format!("{tag}{i:0>width$}", width = 32 - tag.len());
        let m = cluster.master_of(&format!("sess:{sid}"));
        let on = by_master.entry(m).or_default();
        if on.len() < per_master {
            on.push(sid);
        }
        if by_master.len() == 3 && by_master.values().all(|v| v.len() == per_master) {
            break;
        }
    }
    by_master.into_values().flatten().collect()
}

fn gate_on(cluster: &RedisCluster, app: &Upstream, cache: bool) -> Gate {
    let mut b = standard(
        GateBuilder::new()
            .redis_cluster(&cluster.urls())
            .admin(ADMIN),
        &[app],
    );
    if cache {
        b = b.cache();
    }
    b.start()
}

/// Every key under the session and index prefixes, on every master, carries a TTL.
fn assert_every_key_has_a_ttl(cluster: &RedisCluster) {
    for port in cluster.masters() {
        let mut c = cluster.node(port);
        let keys: Vec<String> = redis::cmd("KEYS").arg("sess*").query(&mut c).unwrap();
        for key in keys {
            let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut c).unwrap();
            assert!(ttl > 0, "{key} on {port} has no TTL ({ttl})");
        }
    }
}

fn sweep_done(cluster: &RedisCluster, index: &str) {
    let mut c = cluster_conn(cluster);
    wait_for(
        "the sweep after a revocation",
        Duration::from_secs(10),
        || {
            let mark: Option<f64> = redis::cmd("ZSCORE")
                .arg(index)
                .arg("!sweep")
                .query(&mut c)
                .unwrap();
            mark.is_none().then_some(())
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gates_share_sessions_in_every_slot_of_a_cluster() {
    let cluster = RedisCluster::start();
    let app = Upstream::start("app").await;
    let (g1, g2) = (
        gate_on(&cluster, &app, false),
        gate_on(&cluster, &app, true),
    );
    let mut clients = Vec::new();
    let mut masters = BTreeSet::new();
    // Ids are random: log in until every master holds sessions (twelve at least), so that
    // the test never depends on where twelve random ids happen to fall.
    let mut i = 0;
    while clients.len() < 12 || (masters.len() < 3 && i < 120) {
        let mut c = g1.client();
        login(&mut c, &format!("user{i}"), &[]).await;
        masters.insert(cluster.master_of(&format!("sess:{}", sid_of(&c))));
        clients.push(c);
        i += 1;
    }
    assert_eq!(masters.len(), 3, "sessions on every master");
    for (i, c) in clients.iter().enumerate() {
        for gate in [&g1, &g2] {
            let mut there = gate.client_with_cookie(c.cookie.as_deref().unwrap());
            let r = there.get("/account/").await;
            assert_eq!(r.status, 200);
            assert_eq!(r.upstream_header("x-user"), Some(format!("user{i}")));
        }
    }

    // An update, a regenerate and a logout, each on one gate, seen by the other.
    let q = |v: Value| {
        percent_encoding::utf8_percent_encode(&v.to_string(), percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    };
    let mut c = g2.client_with_cookie(clients[0].cookie.as_deref().unwrap());
    assert_eq!(
        c.post(&format!("/login?update={}", q(json!({"theme": "dark"}))))
            .await
            .status,
        200
    );
    let old = c.cookie.clone().unwrap();
    assert_eq!(c.post("/login?regenerate=1").await.status, 200);
    assert_ne!(c.cookie.as_deref(), Some(old.as_str()), "a new id");
    assert_eq!(
        g1.client_with_cookie(&old).get("/account/").await.status,
        401
    );
    let moved = &g1
        .client_with_cookie(c.cookie.as_deref().unwrap())
        .get("/account/")
        .await;
    assert_eq!(moved.status, 200);
    assert_eq!(moved.upstream_header("x-user").as_deref(), Some("user0"));
    let mut leaving = g1.client_with_cookie(clients[1].cookie.as_deref().unwrap());
    assert_eq!(leaving.post("/logout").await.status, 204);
    assert_eq!(
        g2.client_with_cookie(clients[1].cookie.as_deref().unwrap())
            .get("/account/")
            .await
            .status,
        401
    );

    // The caching gate hears a deletion from the master that holds the key.
    let cached = clients[2].cookie.clone().unwrap();
    let admin = g2.admin.unwrap();
    for _ in 0..500 {
        if admin_metric(admin, ADMIN, "sessiongate_cache_live").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        g2.client_with_cookie(&cached).get("/account/").await.status,
        200
    );
    let hits = admin_metric(admin, ADMIN, "sessiongate_cache_hits_total").await;
    assert_eq!(
        g2.client_with_cookie(&cached).get("/account/").await.status,
        200
    );
    assert!(
        admin_metric(admin, ADMIN, "sessiongate_cache_hits_total").await > hits,
        "served from the cache"
    );
    let invalidations = admin_metric(admin, ADMIN, "sessiongate_cache_invalidations_total").await;
    let key = format!("sess:{}", sid_of(&clients[2]));
    redis::cmd("DEL")
        .arg(&key)
        .query::<i64>(&mut cluster.node(cluster.master_of(&key)))
        .unwrap();
    let start = std::time::Instant::now();
    while admin_metric(admin, ADMIN, "sessiongate_cache_invalidations_total").await == invalidations
    {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the cache never heard the deletion"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        g2.client_with_cookie(&cached).get("/account/").await.status,
        401
    );
    let r = raw(
        g1.admin.unwrap(),
        "GET",
        "/sessions/count",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(r.json()["count"], 10, "{}", r.body);
    assert_every_key_has_a_ttl(&cluster);
}

#[tokio::test(flavor = "multi_thread")]
async fn log_out_everywhere_on_a_cluster_reaches_sessions_in_every_slot() {
    let cluster = RedisCluster::start();
    let app = Upstream::start("app").await;
    let (g1, g2) = (
        gate_on(&cluster, &app, false),
        gate_on(&cluster, &app, true),
    );

    // String ids: sessions other writers put in every slot; two served by a gate once.
    let ids = ids_on_every_master(&cluster, "alice", 2);
    let pairs: Vec<String> = ids
        .iter()
        .map(|sid| plant(&cluster, sid, json!("alice")))
        .collect();
    for pair in &pairs[..2] {
        assert_eq!(
            g2.client_with_cookie(pair).get("/account/").await.status,
            200
        );
    }
    let mut bob = g1.client();
    login(&mut bob, "bob", &[]).await;
    let mut at_gate = g1.client();
    login(&mut at_gate, "alice", &[]).await;
    assert_eq!(at_gate.post("/login?destroy=all").await.status, 200);
    for pair in &pairs {
        for gate in [&g1, &g2] {
            assert_eq!(
                gate.client_with_cookie(pair).get("/account/").await.status,
                401
            );
        }
    }
    sweep_done(&cluster, "sessidx:alice");
    let mut c = cluster_conn(&cluster);
    for sid in &ids {
        let left: Option<String> = redis::cmd("GET")
            .arg(format!("sess:{sid}"))
            .query(&mut c)
            .unwrap();
        assert!(left.is_none(), "{sid} swept");
    }
    assert_eq!(bob.get("/account/").await.status, 200, "others stay");
    // Written after the revocation: works.
    let after = plant(&cluster, "aliceWrittenAfterTheRevocation01", json!("alice"));
    assert_eq!(
        g2.client_with_cookie(&after).get("/account/").await.status,
        200
    );
    let mut again = g2.client();
    login(&mut again, "alice", &[]).await;
    assert_eq!(again.get("/account/").await.status, 200);

    // Sessions express writes through connect-redis and node-redis's cluster client, in
    // several slots, one served by a gate: one log out everywhere ends them all.
    let express = crate::interop_harness::Express::on_cluster(&cluster.urls())
        .secrets(&[SECRET])
        .max_age_ms(Some(600_000))
        .start();
    let mut browsers = Vec::new();
    let mut slots = BTreeSet::new();
    for _ in 0..6 {
        let mut b = express.client();
        let r = b.post("/login?user=carol").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let sid = express_unsign(SECRET, b.cookie.as_deref().unwrap()).unwrap();
        slots.insert(cluster.master_of(&format!("sess:{sid}")));
        browsers.push(b);
    }
    assert!(slots.len() >= 2, "express wrote on several masters");
    let pair = browsers[0].cookie.clone().unwrap();
    assert_eq!(
        g1.client_with_cookie(&pair).get("/account/").await.status,
        200
    );
    let mut carol = g2.client();
    login(&mut carol, "carol", &[]).await;
    assert_eq!(carol.post("/login?destroy=all").await.status, 200);
    for b in &browsers {
        let pair = b.cookie.clone().unwrap();
        assert_eq!(
            g1.client_with_cookie(&pair).get("/account/").await.status,
            401
        );
    }
    sweep_done(&cluster, "sessidx:carol");
    for b in &mut browsers {
        assert_eq!(
            b.get("/whoami").await.json()["user"],
            Value::Null,
            "gone at express too"
        );
    }

    // A 16-digit numeric id, the largest JavaScript holds exactly, through the admin API.
    const JS: &str = "9007199254740991";
    let ids = ids_on_every_master(&cluster, "num", 1);
    let pairs: Vec<String> = ids
        .iter()
        .map(|sid| plant(&cluster, sid, json!(9007199254740991u64)))
        .collect();
    assert_eq!(
        g1.client_with_cookie(&pairs[0])
            .get("/account/")
            .await
            .status,
        200
    );
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("sessidx:{JS}"))
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(members, [ids[0].clone()], "indexed under its exact decimal");
    let r = raw(
        g1.admin.unwrap(),
        "DELETE",
        &format!("/users/{JS}/sessions"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], 3);
    for pair in &pairs {
        assert_eq!(
            g2.client_with_cookie(pair).get("/account/").await.status,
            401
        );
    }
    assert_every_key_has_a_ttl(&cluster);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_follows_a_failover_to_the_new_master() {
    let mut cluster = RedisCluster::start();
    let app = Upstream::start("app").await;
    let gate = gate_on(&cluster, &app, true);
    let mut c = gate.client();
    login(&mut c, "erin", &[]).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let key = format!("sess:{}", sid_of(&c));
    let master = cluster.master_of(&key);
    // The login is on the replica before its master dies.
    redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query::<i64>(&mut cluster.node(master))
        .unwrap();
    cluster.kill(master);
    wait_for("a replica to take over", Duration::from_secs(30), || {
        let m = cluster.masters();
        (m.len() == 3 && !m.contains(&master)).then_some(())
    });
    let start = std::time::Instant::now();
    loop {
        let status = c.get("/account/").await.status;
        assert_ne!(status, 401, "a replicated session is never logged out");
        if status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never recovered: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stream was rebuilt on the new master: a deletion there reaches the cache.
    let admin = gate.admin.unwrap();
    let mut live = false;
    for _ in 0..500 {
        if admin_metric(admin, ADMIN, "sessiongate_cache_live").await == 1 {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(live, "the cache comes back on after the failover");
    let now = cluster.master_of(&key);
    assert_eq!(c.get("/account/").await.status, 200);
    let hits = admin_metric(admin, ADMIN, "sessiongate_cache_hits_total").await;
    assert_eq!(c.get("/account/").await.status, 200);
    assert!(
        admin_metric(admin, ADMIN, "sessiongate_cache_hits_total").await > hits,
        "served from the cache"
    );
    let invalidations = admin_metric(admin, ADMIN, "sessiongate_cache_invalidations_total").await;
    let n = redis::cmd("DEL")
        .arg(&key)
        .query::<i64>(&mut cluster.node(now))
        .unwrap();
    assert_eq!(n, 1, "the session was on the new master");
    let start = std::time::Instant::now();
    while admin_metric(admin, ADMIN, "sessiongate_cache_invalidations_total").await == invalidations
    {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the cache never heard the new master"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.get("/account/").await.status, 401);
}
