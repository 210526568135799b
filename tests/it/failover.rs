//! Failover without logouts: a Redis Cluster master with a replica is killed, or a Sentinel
//! master is. Sessions that had been replicated are never answered as logged out: while the
//! failover runs, requests get 503 with `Retry-After` (never 401), every session works again
//! by itself afterwards, and new logins are written to the new master. Each test prints the
//! window it measured (from the kill to every session served again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Asks for every session on every gate until all are served, and returns how long that took
/// and how many answers of each status came meanwhile. Only 200 and 503 (with Retry-After)
/// are allowed.
async fn until_all_served(gates: &[&Gate], cookies: &[String]) -> (Duration, BTreeMap<u16, u32>) {
    let start = Instant::now();
    let mut statuses = BTreeMap::new();
    loop {
        let mut all = true;
        for (gi, gate) in gates.iter().enumerate() {
            for (ci, pair) in cookies.iter().enumerate() {
                let mut c = gate.client();
                c.cookie = Some(pair.clone());
                let r = c.get("/account/").await;
                *statuses.entry(r.status).or_insert(0) += 1;
                match r.status {
                    200 => {}
                    503 => {
                        assert_eq!(
                            r.header("retry-after"),
                            Some("3"),
                            "a 503 says when to retry"
                        );
                        all = false;
                    }
                    other => panic!(
                        "{other} during the failover from gate {gi} for session {ci} after {:?}: {} ({statuses:?})",
                        start.elapsed(),
                        r.body
                    ),
                }
            }
        }
        if all {
            return (start.elapsed(), statuses);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never recovered: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_cluster_master_never_logs_anyone_out() {
    let mut cluster = RedisCluster::start();
    let app = Upstream::start("app").await;
    let gate = |cache: bool| {
        let b = standard(GateBuilder::new().redis_cluster(&cluster.urls()), &[&app]);
        if cache {
            b.cache().start()
        } else {
            b.start()
        }
    };
    let (g1, g2) = (gate(false), gate(true));
    let mut cookies = Vec::new();
    let mut keys = Vec::new();
    for i in 0..12 {
        let mut c = g1.client();
        login(&mut c, &format!("user{i}"), &[]).await;
        keys.push(format!("sess:{}", sid_of(&c)));
        cookies.push(c.cookie.clone().unwrap());
    }
    // Only replicated sessions are promised to survive: wait until every replica has its
    // master's sessions.
    let roles = cluster.roles();
    wait_for(
        "the replicas to have every session",
        Duration::from_secs(10),
        || {
            keys.iter()
                .all(|k| {
                    let master = cluster.master_of(k);
                    roles
                        .iter()
                        .filter(|r| !r.master && r.master_port == Some(master))
                        .all(|r| {
                            let mut c = cluster.node(r.port);
                            redis::cmd("READONLY").query::<()>(&mut c).unwrap();
                            redis::cmd("EXISTS").arg(k).query::<i64>(&mut c).unwrap() == 1
                        })
                })
                .then_some(())
        },
    );
    let victim = cluster.master_of(&keys[0]);
    let on_victim = keys
        .iter()
        .filter(|k| cluster.master_of(k) == victim)
        .count();
    cluster.kill(victim);
    let (window, statuses) = until_all_served(&[&g1, &g2], &cookies).await;
    eprintln!(
        "cluster failover (cluster-node-timeout 1.5 s): {window:?} from killing a master ({on_victim} of 12 sessions on it) to every session served again; answers {statuses:?}"
    );
    // New logins: every slot has a master again (a slot's first request after the window may
    // still wait while the client refreshes its map; never longer than a few seconds).
    let start = Instant::now();
    let mut fresh = g2.client();
    let mut refused = BTreeMap::new();
    loop {
        let r = fresh
            .post("/login?issue=%7B%22user%22%3A%22after%22%7D")
            .await;
        if r.status == 200 {
            break;
        }
        *refused.entry(r.status).or_insert(0) += 1;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(start.elapsed() < Duration::from_secs(15), "{refused:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("cluster failover: first login after the window refused {refused:?}, then written after {:?}", start.elapsed());
    let key = format!("sess:{}", sid_of(&fresh));
    assert_ne!(cluster.master_of(&key), victim);
    assert_eq!(
        {
            let mut c = g1.client();
            c.cookie = fresh.cookie.clone();
            c.get("/account/").await.status
        },
        200,
        "new logins land on the masters there are now"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_sentinel_master_never_logs_anyone_out() {
    let mut s = RedisSentinel::start();
    let app = Upstream::start("app").await;
    let gate = |cache: bool| {
        let b = standard(
            GateBuilder::new().redis_sentinel(
                &s.sentinel_url(),
                sessiongate_testkit::redis_sentinel::MASTER_NAME,
            ),
            &[&app],
        );
        if cache {
            b.cache().start()
        } else {
            b.start()
        }
    };
    let (g1, g2) = (gate(false), gate(true));
    let mut cookies = Vec::new();
    for i in 0..6 {
        let mut c = g1.client();
        login(&mut c, &format!("user{i}"), &[]).await;
        cookies.push(c.cookie.clone().unwrap());
    }
    let old = s.master().unwrap();
    // Only replicated sessions are promised to survive: wait until the replica has them all.
    let replica = *s.nodes().iter().find(|p| **p != old).unwrap();
    let keys: Vec<String> = cookies
        .iter()
        .map(|pair| format!("sess:{}", express_unsign(SECRET, pair).unwrap()))
        .collect();
    wait_for(
        "the replica to have every session",
        Duration::from_secs(10),
        || {
            let mut c = s.node(replica);
            keys.iter()
                .all(|k| redis::cmd("EXISTS").arg(k).query::<i64>(&mut c).unwrap() == 1)
                .then_some(())
        },
    );
    s.kill(old);
    let (window, statuses) = until_all_served(&[&g1, &g2], &cookies).await;
    eprintln!(
        "sentinel failover (down-after-milliseconds 1 s): {window:?} from killing the master to every session served again; answers {statuses:?}"
    );
    let new = s.master().unwrap();
    assert_ne!(new, old);
    let mut fresh = g2.client();
    login(&mut fresh, "after", &[]).await;
    let key = format!("sess:{}", sid_of(&fresh));
    let on_new: Option<String> = redis::cmd("GET").arg(&key).query(&mut s.node(new)).unwrap();
    assert!(on_new.is_some(), "the login was written to the new master");
}
