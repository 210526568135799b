//! `session.max_per_user`: a login past the cap ends the user's oldest session, or with
//! `max_per_user_action = "refuse"` is refused (403 `too_many_sessions`); on the embedded
//! store, one Redis, a Sentinel's master and a Cluster. Logins racing at the cap never leave
//! the user more than the cap; dead index entries never count; a session an express app
//! wrote counts once a gate has seen it; the metrics count both outcomes.

use serde_json::json;

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

fn capped(b: GateBuilder, app: &Upstream, lines: &[&str]) -> Gate {
    let mut b = standard(b.admin(ADMIN), &[app]);
    for line in lines {
        b = b.session(line);
    }
    b.start()
}

/// A login as `user` that may be refused: the status and the error code, if any.
async fn try_login(client: &mut Client, user: &str) -> (u16, Option<String>) {
    let issue = json!({ "user": user, "roles": [] }).to_string();
    let q = percent_encoding::utf8_percent_encode(&issue, percent_encoding::NON_ALPHANUMERIC);
    let r = client.post(&format!("/login?issue={q}")).await;
    let code = (r.status != 200).then(|| r.json()["error"].as_str().unwrap_or("").to_owned());
    (r.status, code)
}

/// How many of these cookies the gate still serves.
async fn served(gate: &Gate, cookies: &[String]) -> Vec<bool> {
    let mut out = Vec::new();
    for pair in cookies {
        let status = gate.client_with_cookie(pair).get("/account/").await.status;
        assert!(status == 200 || status == 401, "{status}");
        out.push(status == 200);
    }
    out
}

/// Logs `n` fresh clients in as `user`, one after the other; their cookies, oldest first.
async fn logins(gate: &Gate, user: &str, n: usize) -> Vec<String> {
    let mut cookies = Vec::new();
    for _ in 0..n {
        let mut c = gate.client();
        login(&mut c, user, &[]).await;
        cookies.push(c.cookie.clone().unwrap());
    }
    cookies
}

/// Four logins under a cap of three: the first ends, the other three and other users' stay.
async fn the_oldest_of_four_ends(gate: &Gate) {
    let bob = logins(gate, "bob", 1).await;
    let alice = logins(gate, "alice", 4).await;
    assert_eq!(
        served(gate, &alice).await,
        [false, true, true, true],
        "the oldest of alice's four sessions ended"
    );
    assert_eq!(served(gate, &bob).await, [true], "other users keep theirs");
    let admin = gate.admin.unwrap();
    assert_eq!(
        admin_metric(admin, ADMIN, "sessiongate_sessions_ended_by_cap_total").await,
        1
    );
    // A fifth ends the second: always the oldest left.
    logins(gate, "alice", 1).await;
    assert_eq!(
        served(gate, &alice).await,
        [false, false, true, true],
        "then the second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_of_four_sessions_ends_in_memory() {
    let app = Upstream::start("app").await;
    let gate = capped(GateBuilder::new(), &app, &["max_per_user = 3"]);
    the_oldest_of_four_ends(&gate).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_of_four_sessions_ends_on_redis() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = capped(
        GateBuilder::new().redis(&redis),
        &app,
        &["max_per_user = 3"],
    );
    the_oldest_of_four_ends(&gate).await;
    let index: Vec<String> = redis::cmd("ZRANGE")
        .arg("sessidx:alice")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(index.len(), 3, "the index holds the three left: {index:?}");
    for sid in &index {
        assert!(redis.get(&format!("sess:{sid}")).is_some());
    }
    assert_eq!(
        redis.keys("sess:*").len(),
        3 + 1,
        "alice's three and bob's one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_copy_of_the_ended_session_is_dropped_on_every_gate() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let b = || GateBuilder::new().redis(&redis).cache();
    let (g1, g2) = (
        capped(b(), &app, &["max_per_user = 3"]),
        capped(b(), &app, &["max_per_user = 3"]),
    );
    let alice = logins(&g1, "alice", 3).await;
    // Both gates cache all three.
    assert_eq!(served(&g1, &alice).await, [true; 3]);
    assert_eq!(served(&g2, &alice).await, [true; 3]);
    logins(&g2, "alice", 1).await;
    // The gate that ended it dropped its copy at once; the other hears from Redis.
    assert_eq!(served(&g2, &alice).await, [false, true, true]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served(&g1, &alice[..1]).await != [false] {
        assert!(
            std::time::Instant::now() < deadline,
            "the other gate still serves the ended session from its cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(served(&g1, &alice).await, [false, true, true]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_of_four_sessions_ends_on_a_cluster() {
    let cluster = RedisCluster::start();
    let app = Upstream::start("app").await;
    let gate = capped(
        GateBuilder::new().redis_cluster(&cluster.urls()),
        &app,
        &["max_per_user = 3"],
    );
    the_oldest_of_four_ends(&gate).await;
    logins_race_at_the_cap(&gate, "carol").await;
    a_regenerate_keeps_its_place(&gate, "erin").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_of_four_sessions_ends_behind_a_sentinel() {
    let s = RedisSentinel::start();
    let app = Upstream::start("app").await;
    let gate = capped(
        GateBuilder::new().redis_sentinel(
            &s.sentinel_url(),
            sessiongate_testkit::redis_sentinel::MASTER_NAME,
        ),
        &app,
        &["max_per_user = 3"],
    );
    the_oldest_of_four_ends(&gate).await;
    logins_race_at_the_cap(&gate, "carol").await;
}

/// `user` at the cap of three, then logins all at once: three sessions are left, the newest.
async fn logins_race_at_the_cap(gate: &Gate, user: &str) {
    let before = logins(gate, user, 3).await;
    let mut clients: Vec<Client> = (0..6).map(|_| gate.client()).collect();
    let statuses =
        futures_util::future::join_all(clients.iter_mut().map(|c| try_login(c, user))).await;
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    let racing: Vec<String> = clients.iter().map(|c| c.cookie.clone().unwrap()).collect();
    let live = [served(gate, &before).await, served(gate, &racing).await].concat();
    assert_eq!(
        live.iter().filter(|l| **l).count(),
        3,
        "exactly the cap is left: {live:?}"
    );
    assert_eq!(
        served(gate, &before).await,
        [false; 3],
        "the three that were there first are older than every racing login"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_logins_at_the_cap_never_leave_more_than_three() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let memory = capped(GateBuilder::new(), &app, &["max_per_user = 3"]);
    logins_race_at_the_cap(&memory, "alice").await;
    // Two gates on one Redis, their logins racing each other.
    let b = || GateBuilder::new().redis(&redis);
    let (g1, g2) = (
        capped(b(), &app, &["max_per_user = 3"]),
        capped(b(), &app, &["max_per_user = 3"]),
    );
    logins(&g1, "alice", 3).await;
    let mut clients: Vec<(Client, bool)> = (0..8)
        .map(|i| {
            (
                if i % 2 == 0 { g1.client() } else { g2.client() },
                i % 2 == 0,
            )
        })
        .collect();
    let statuses =
        futures_util::future::join_all(clients.iter_mut().map(|(c, _)| try_login(c, "alice")))
            .await;
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    let cookies: Vec<String> = clients
        .iter()
        .map(|(c, _)| c.cookie.clone().unwrap())
        .collect();
    assert_eq!(
        served(&g1, &cookies).await.iter().filter(|l| **l).count(),
        3
    );
    assert_eq!(
        redis.keys("sess:*").len(),
        3,
        "no more than three in the store"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refuse_refuses_the_fourth_login_and_counts_it() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    for store in [None, Some(&redis)] {
        let gate = capped(
            GateBuilder::new().store(store),
            &app,
            &["max_per_user = 3", r#"max_per_user_action = "refuse""#],
        );
        let alice = logins(&gate, "alice", 3).await;
        let mut fourth = gate.client();
        assert_eq!(
            try_login(&mut fourth, "alice").await,
            (403, Some("too_many_sessions".into()))
        );
        assert!(fourth.cookie.is_none(), "no session for the refused login");
        assert_eq!(served(&gate, &alice).await, [true; 3], "the three stay");
        let admin = gate.admin.unwrap();
        assert_eq!(
            admin_metric(
                admin,
                ADMIN,
                r#"sessiongate_refusals_total{reason="too_many_sessions"}"#
            )
            .await,
            1
        );
        assert_eq!(
            admin_metric(admin, ADMIN, "sessiongate_sessions_ended_by_cap_total").await,
            0
        );
        // A login that replaces one of alice's own sessions does not count it twice.
        let mut again = gate.client_with_cookie(&alice[2]);
        assert_eq!(try_login(&mut again, "alice").await, (200, None));
        // Logging out of one makes room.
        let mut first = gate.client_with_cookie(&alice[0]);
        assert_eq!(first.post("/logout").await.status, 204);
        assert_eq!(try_login(&mut fourth, "alice").await, (200, None));
        assert_eq!(try_login(&mut gate.client(), "bob").await, (200, None));
        // Logins racing for the last place: exactly one gets it.
        assert_eq!(try_login(&mut gate.client(), "dave").await, (200, None));
        assert_eq!(try_login(&mut gate.client(), "dave").await, (200, None));
        let mut clients: Vec<Client> = (0..4).map(|_| gate.client()).collect();
        let mut statuses: Vec<u16> =
            futures_util::future::join_all(clients.iter_mut().map(|c| try_login(c, "dave")))
                .await
                .into_iter()
                .map(|(s, _)| s)
                .collect();
        statuses.sort();
        assert_eq!(statuses, [200, 403, 403, 403]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_that_ended_do_not_count() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = capped(
        GateBuilder::new().redis(&redis),
        &app,
        &["max_per_user = 3", r#"max_per_user_action = "refuse""#],
    );
    let alice = logins(&gate, "alice", 3).await;
    // One expires in Redis; its index entry stays behind until someone looks.
    let sid = express_unsign(SECRET, &alice[1]).unwrap();
    redis::cmd("DEL")
        .arg(format!("sess:{sid}"))
        .query::<()>(&mut redis.conn())
        .unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("sessidx:alice")
        .arg(&sid)
        .query(&mut redis.conn())
        .unwrap();
    assert!(score.is_some(), "a dead entry in the index");
    assert_eq!(try_login(&mut gate.client(), "alice").await, (200, None));
    let index: Vec<String> = redis::cmd("ZRANGE")
        .arg("sessidx:alice")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(index.len(), 3);
    assert!(!index.contains(&sid), "the dead entry was dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_express_session_counts_once_a_gate_has_seen_it() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = capped(
        GateBuilder::new().redis(&redis),
        &app,
        &["max_per_user = 3"],
    );
    let seen = plant_session(
        &redis,
        SECRET,
        "express-seen-0001",
        json!({"user": "alice"}),
        None,
    );
    let unseen = plant_session(
        &redis,
        SECRET,
        "express-unseen-01",
        json!({"user": "alice"}),
        None,
    );
    assert_eq!(served(&gate, std::slice::from_ref(&seen)).await, [true]);
    let alice = logins(&gate, "alice", 3).await;
    assert_eq!(
        served(&gate, std::slice::from_ref(&seen)).await,
        [false],
        "the express session was alice's oldest"
    );
    assert_eq!(served(&gate, &alice).await, [true; 3]);
    // The unseen one was outside the count until now; served, it joins the index, and the
    // next login ends the oldest again.
    assert_eq!(served(&gate, std::slice::from_ref(&unseen)).await, [true]);
    logins(&gate, "alice", 1).await;
    assert_eq!(served(&gate, &alice[..1]).await, [false]);
}

#[test]
fn the_cap_is_checked_with_the_config() {
    let base = "[session]\nsecrets = [\"a secret of some length\"]\n";
    let tail = "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\nauth = \"public\"\n";
    let err = |lines: &str| {
        sessiongate::Config::parse(&format!("{base}{lines}\n{tail}"), "proxy.toml", &|_| None)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let zero = err("max_per_user = 0");
    assert!(
        zero.contains("proxy.toml:3: session.max_per_user"),
        "{zero}"
    );
    let alone = err(r#"max_per_user_action = "refuse""#);
    assert!(alone.contains("session.max_per_user_action"), "{alone}");
    let bad = err("max_per_user = 3\nmax_per_user_action = \"evict\"");
    assert!(bad.contains("max_per_user_action"), "{bad}");
    let ok = sessiongate::Config::parse(
        &format!("{base}max_per_user = 2\n{tail}"),
        "proxy.toml",
        &|_| None,
    )
    .unwrap();
    assert!(ok.describe().contains("at most 2 sessions per user"));
}

/// A regenerate of `user`'s oldest at the cap: it keeps its place, nothing counts twice.
async fn a_regenerate_keeps_its_place(gate: &Gate, user: &str) {
    let mut sessions = logins(gate, user, 3).await;
    let mut first = gate.client_with_cookie(&sessions[0]);
    assert_eq!(first.post("/login?regenerate=1").await.status, 200);
    assert_ne!(first.cookie.as_ref(), Some(&sessions[0]), "a new id");
    sessions[0] = first.cookie.clone().unwrap();
    assert_eq!(
        served(gate, &sessions).await,
        [true; 3],
        "nothing counted twice"
    );
    logins(gate, user, 1).await;
    assert_eq!(
        served(gate, &sessions).await,
        [false, true, true],
        "still the oldest: it began first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_regenerated_session_is_no_new_login_and_keeps_its_place() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    for store in [None, Some(&redis)] {
        let gate = capped(GateBuilder::new().store(store), &app, &["max_per_user = 3"]);
        a_regenerate_keeps_its_place(&gate, "alice").await;
    }
}
