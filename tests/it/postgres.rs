//! The PostgreSQL store: connect-pg-simple's table row for row, every guarantee the Redis store
//! gives, on a real PostgreSQL server started by the harness. Rows are read and written with
//! SQL exactly as connect-pg-simple sends it, so that what the gate does is checked against
//! what an express fleet on the same table does.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .div_ceil(1000) as f64
}

/// Writes a session with connect-pg-simple's own upsert, and returns a cookie pair for it.
async fn plant(db: &tokio_postgres::Client, sid: &str, fields: Value, ttl_s: f64) -> String {
    let mut record =
        json!({"cookie": {"originalMaxAge": null, "expires": null, "httpOnly": true, "path": "/"}});
    for (k, v) in fields.as_object().unwrap() {
        record[k] = v.clone();
    }
    db.execute(
        "INSERT INTO \"session\" (sess, expire, sid) SELECT $1::text::json, to_timestamp($2), $3 \
         ON CONFLICT (sid) DO UPDATE SET sess = $1::text::json, expire = to_timestamp($2) RETURNING sid",
        &[&record.to_string(), &(now_s() + ttl_s), &sid],
    )
    .await
    .unwrap();
    format!("connect.sid={}", express_sign(SECRET, sid))
}

/// The row's `sess` as stored, and `expire` in seconds since the epoch.
async fn row(db: &tokio_postgres::Client, sid: &str) -> Option<(String, f64)> {
    db.query_opt(
        "SELECT sess::text, extract(epoch FROM expire::timestamptz)::float8 FROM \"session\" WHERE sid = $1",
        &[&sid],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

async fn rows(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM \"session\"", &[])
        .await
        .unwrap()
        .get(0)
}

async fn status(gate: SocketAddr, pair: &str) -> u16 {
    raw(gate, "GET", "/account/", &[("cookie", pair)])
        .await
        .status
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_makes_connect_pg_simples_table_and_writes_its_rows() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().postgres(&pg), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let db = pg.client().await;
    let columns: Vec<(String, String, String)> = db
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_name = 'session' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let col = |n: &str, t: &str| (n.to_string(), t.to_string(), "NO".to_string());
    assert_eq!(
        columns,
        [
            col("sid", "character varying"),
            col("sess", "json"),
            col("expire", "timestamp without time zone")
        ]
    );
    let indexes = || async {
        db.query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'session' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
    };
    // The user index is built in the background (CONCURRENTLY), off the request path.
    wait_until_async("the user index", || async { indexes().await.len() == 3 }).await;
    assert_eq!(
        indexes().await,
        ["IDX_session_expire", "IDX_session_user", "session_pkey"]
    );
    let sid = sid_of(&c);
    let (sess, expire) = row(&db, &sid).await.expect("the session's row");
    assert!(sess.starts_with("{\"cookie\":{"), "{sess}");
    let record: Value = serde_json::from_str(&sess).unwrap();
    assert_eq!(record["user"], "alice");
    // No max-age: the TTL is the idle timeout (a day), rounded up to the second.
    let ttl = expire - now_s();
    assert!((86_390.0..=86_401.0).contains(&ttl), "{ttl}");
    assert_eq!(c.get("/account/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_connect_pg_simple_wrote_are_served_until_their_expire_passes() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().postgres(&pg), &[&app]).start();
    // The gate made the table; an express app writes to it.
    let mut c = gate.client();
    login(&mut c, "carol", &[]).await;
    let db = pg.client().await;
    let sid = "PgSimpleSession0123456789abcdefA";
    let pair = plant(&db, sid, json!({"user": "dave"}), 3600.0).await;
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("dave"));
    db.execute(
        "UPDATE \"session\" SET expire = to_timestamp($1) WHERE sid = $2",
        &[&(now_s() - 5.0), &sid],
    )
    .await
    .unwrap();
    assert_eq!(
        status(gate.addr, &pair).await,
        401,
        "an expired row is no session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_touch_moves_expire_and_leaves_sess_byte_for_byte() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().postgres(&pg), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let db = pg.client().await;
    let sid = "TouchedSession0123456789abcdefAB";
    let pair = plant(&db, sid, json!({"user": "erin", "n": 1.50}), 600.0).await;
    let (sess, expire) = row(&db, sid).await.unwrap();
    assert_eq!(status(gate.addr, &pair).await, 200);
    let (sess2, expire2) = row(&db, sid).await.unwrap();
    assert_eq!(sess2, sess, "a touch does not rewrite sess");
    assert!(expire2 > expire + 80_000.0, "{expire} -> {expire2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_whose_sess_does_not_parse_is_destroyed() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().postgres(&pg), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let db = pg.client().await;
    let sid = "BrokenSession0123456789abcdefABC";
    db.execute(
        "INSERT INTO \"session\" (sess, expire, sid) VALUES ('[1,2]', to_timestamp($1), $2)",
        &[&(now_s() + 600.0), &sid],
    )
    .await
    .unwrap();
    let pair = format!("connect.sid={}", express_sign(SECRET, sid));
    assert_eq!(status(gate.addr, &pair).await, 401);
    assert_eq!(row(&db, sid).await, None, "the unreadable row is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_migrated_to_jsonb_and_timestamptz_keep_working() {
    let pg = Postgres::start();
    let db = pg.client().await;
    db.batch_execute(
        "CREATE TABLE \"session\" (sid varchar NOT NULL PRIMARY KEY, sess jsonb NOT NULL, expire timestamptz NOT NULL);\
         CREATE INDEX \"IDX_session_expire\" ON \"session\" (expire);",
    )
    .await
    .unwrap();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .postgres(&pg)
            .postgres_setting("create_table = false"),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let pair = plant(
        &db,
        "JsonbSession0123456789abcdefABCD",
        json!({"user": "bob"}),
        60.0,
    )
    .await;
    assert_eq!(status(gate.addr, &pair).await, 200);
    let r = c.post("/login/x?update=%7B%22n%22%3A2%7D").await;
    assert_eq!(r.status, 200);
    let (sess, _) = row(&db, &sid_of(&c)).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&sess).unwrap()["n"], 2);
    let sid = sid_of(&c);
    assert_eq!(c.post("/logout").await.status, 204);
    assert_eq!(row(&db, &sid).await, None, "a logout deletes the row");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_is_503_not_a_logout_unless_the_gate_may_make_it() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .postgres(&pg)
            .postgres_setting("create_table = false"),
        &[&app],
    )
    .start();
    let pair = format!(
        "connect.sid={}",
        express_sign(SECRET, "NoTableSession0123456789abcdefAB")
    );
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn log_out_everywhere_deletes_every_row_of_the_user_whoever_wrote_it() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let b = standard(GateBuilder::new().postgres(&pg).admin(ADMIN), &[&app]);
    let (g1, g2) = (b.start(), b.start());
    let mut laptop = g1.client();
    let mut phone = g2.client();
    login(&mut laptop, "alice", &[]).await;
    login(&mut phone, "alice", &[]).await;
    let db = pg.client().await;
    // Written by an express app, never seen by a gate.
    let express_alice = plant(
        &db,
        "ExpressAlice0123456789abcdefABCD",
        json!({"user": "alice"}),
        600.0,
    )
    .await;
    let express_bob = plant(
        &db,
        "ExpressBob0123456789abcdefABCDEF",
        json!({"user": "bob"}),
        600.0,
    )
    .await;
    let numeric = plant(
        &db,
        "ExpressNum0123456789abcdefABCDEF",
        json!({"user": 42}),
        600.0,
    )
    .await;
    assert_eq!(rows(&db).await, 5);

    let r = laptop.post("/login/everywhere?destroy=all").await;
    assert_eq!(r.status, 200);
    for gate in [&g1, &g2] {
        assert_eq!(
            status(gate.addr, phone.cookie.as_deref().unwrap()).await,
            401
        );
        assert_eq!(status(gate.addr, &express_alice).await, 401);
        assert_eq!(status(gate.addr, &express_bob).await, 200, "bob stays");
    }
    assert_eq!(rows(&db).await, 2, "only bob's and user 42's rows are left");

    // The admin API: list, count, revoke (a numeric user by its digits).
    let auth = format!("Bearer {ADMIN}");
    let admin = g1.admin.unwrap();
    let r = raw(
        admin,
        "GET",
        "/users/42/sessions",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["sessions"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.body
    );
    let r = raw(admin, "GET", "/sessions/count", &[("authorization", &auth)]).await;
    assert_eq!(r.json()["count"], 2, "{}", r.body);
    let r = raw(
        admin,
        "DELETE",
        "/users/42/sessions",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status(g2.addr, &numeric).await, 401);
    assert_eq!(rows(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_user_cap_counts_rows_express_wrote() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new().postgres(&pg).session("max_per_user = 2"),
        &[&app],
    )
    .start();
    let db = pg.client().await;
    let mut first = gate.client();
    login(&mut first, "alice", &[]).await;
    let express = plant(
        &db,
        "ExpressCapped0123456789abcdefABC",
        json!({"user": "alice"}),
        600.0,
    )
    .await;
    let mut third = gate.client();
    login(&mut third, "alice", &[]).await;
    let alive = [
        status(gate.addr, &express).await,
        status(gate.addr, first.cookie.as_deref().unwrap()).await,
        status(gate.addr, third.cookie.as_deref().unwrap()).await,
    ];
    // The express session has no creation time: it counts as the oldest and ends.
    assert_eq!(alive, [401, 200, 200]);
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM \"session\" WHERE sess->>'user' = 'alice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_and_regeneration_keep_the_row_and_its_expire() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().postgres(&pg), &[&app]).start();
    let db = pg.client().await;
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let old = sid_of(&c);
    let (_, expire) = row(&db, &old).await.unwrap();
    let r = c.post("/login/x?update=%7B%22cart%22%3A3%7D").await;
    assert_eq!(r.status, 200);
    let r = c.post("/login/x?regenerate=1").await;
    assert_eq!(r.status, 200);
    let new = sid_of(&c);
    assert_ne!(new, old);
    assert_eq!(row(&db, &old).await, None);
    let (sess, expire2) = row(&db, &new).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&sess).unwrap()["cart"], 3);
    assert!((expire2 - expire).abs() < 5.0, "{expire} {expire2}");
    assert_eq!(c.get("/account/").await.status, 200);
}

async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let r = raw(
        admin,
        "GET",
        "/metrics",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

async fn until_metric(admin: SocketAddr, name: &str, f: impl Fn(u64) -> bool) {
    wait_until_async(name, || async { f(metric(admin, name).await) }).await;
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut f: impl FnMut() -> F,
) {
    for _ in 0..1000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never came");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_deleted_in_sql_stops_working_on_a_caching_gate() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new().postgres(&pg).cache().admin(ADMIN),
        &[&app],
    )
    .start();
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    until_metric(admin, "sessiongate_cache_live", |v| v == 1).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let hits = metric(admin, "sessiongate_cache_hits_total").await;
    assert_eq!(c.get("/account/").await.status, 200);
    assert!(
        metric(admin, "sessiongate_cache_hits_total").await > hits,
        "served from the cache"
    );
    let db = pg.client().await;
    let invalidated = metric(admin, "sessiongate_cache_invalidations_total").await;
    db.execute("DELETE FROM \"session\" WHERE sid = $1", &[&sid_of(&c)])
        .await
        .unwrap();
    until_metric(admin, "sessiongate_cache_invalidations_total", |v| {
        v > invalidated
    })
    .await;
    assert_eq!(c.get("/account/").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_is_503_and_the_gate_recovers_by_itself() {
    let mut pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new().postgres(&pg).cache().admin(ADMIN),
        &[&app],
    )
    .start();
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let pair = c.cookie.clone().unwrap();
    assert_eq!(status(gate.addr, &pair).await, 200);
    assert_eq!(raw(admin, "GET", "/readyz", &[]).await.status, 200);
    until_metric(admin, "sessiongate_cache_live", |v| v == 1).await;

    pg.stop();
    wait_until_async("the cache to go off", || async {
        metric(admin, "sessiongate_cache_live").await == 0
    })
    .await;
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(r.json()["error"], "store_unavailable");
    // The probe keeps the store's answer for a second.
    wait_until_async("/readyz to follow the store", || async {
        raw(admin, "GET", "/readyz", &[]).await.status == 503
    })
    .await;
    assert_eq!(
        raw(gate.addr, "GET", "/public/x", &[("cookie", &pair)])
            .await
            .status,
        200,
        "public routes keep working"
    );

    pg.restart();
    wait_until_async("the session to be served again", || async {
        status(gate.addr, &pair).await == 200
    })
    .await;
    wait_until_async("/readyz to follow the store back", || async {
        raw(admin, "GET", "/readyz", &[]).await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_cli_works_on_postgres() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let builder = standard(GateBuilder::new().postgres(&pg), &[&app]);
    let gate = builder.start();
    let mut c = gate.client();
    login(&mut c, "carol", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, builder.toml(free_addr())).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["sessions", "count"]).trim(), "1");
    let listed = cli(&["sessions", "list", "--user", "carol"]);
    let sid = sid_of(&c);
    assert!(
        listed.contains(&sid[..6]) && !listed.contains(&sid),
        "{listed}"
    );
    assert!(cli(&["sessions", "revoke", "--user", "carol"]).contains("revoked 1 session"));
    assert_eq!(c.get("/account/").await.status, 401);
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("store: postgres postgres://postgres@127.0.0.1")
            && said.contains("table public.session"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_absolute_timeout_ends_a_session_and_deletes_its_row() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .postgres(&pg)
            .session(r#"absolute_timeout = "1h""#),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let db = pg.client().await;
    let created = |ago_ms: u64| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - ago_ms
    };
    let young = plant(
        &db,
        "YoungSession0123456789abcdefABCD",
        json!({"user": "bob", "sessiongate": {"created": created(60_000)}}),
        600.0,
    )
    .await;
    let old = plant(
        &db,
        "ElderSession0123456789abcdefABCD",
        json!({"user": "bob", "sessiongate": {"created": created(3_700_000)}}),
        600.0,
    )
    .await;
    assert_eq!(status(gate.addr, &young).await, 200);
    assert_eq!(status(gate.addr, &old).await, 401);
    assert_eq!(row(&db, "ElderSession0123456789abcdefABCD").await, None);
    // The young one's touch is cut short by its absolute deadline: under an hour left.
    let (_, expire) = row(&db, "YoungSession0123456789abcdefABCD").await.unwrap();
    let left = expire - now_s();
    assert!((3_500.0..3_541.0).contains(&left), "{left}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_token_client_is_served_from_postgres() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .postgres(&pg)
            .table("[session.token]\nheader = \"authorization\"\nscheme = \"Session\""),
        &[&app],
    )
    .start();
    let login = raw(
        gate.addr,
        "POST",
        "/login?issue=%7B%22user%22%3A%22app-user%22%7D",
        &[("x-session-token", "request")],
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login
        .header("x-session-token")
        .expect("a token")
        .to_string();
    let auth = format!("Session {token}");
    let r = raw(gate.addr, "GET", "/account/", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("app-user"));
    let sid = express_unsign(SECRET, &format!("connect.sid={token}")).unwrap();
    let db = pg.client().await;
    assert!(
        row(&db, &sid).await.is_some(),
        "the token's session is a row"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caching_gate_sends_its_touches_from_cache_hits_in_batches() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .postgres(&pg)
            .cache()
            .admin(ADMIN)
            // Every hit has a touch due, so that the test needs no clock.
            .session(r#"touch_interval = "0s""#),
        &[&app],
    )
    .start();
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    until_metric(admin, "sessiongate_cache_live", |v| v == 1).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let db = pg.client().await;
    let sid = sid_of(&c);
    // Five minutes off the row: an `expire`-only change notifies nobody, the copy stays.
    db.execute(
        "UPDATE \"session\" SET expire = expire - interval '300 seconds' WHERE sid = $1",
        &[&sid],
    )
    .await
    .unwrap();
    let (sess, aged) = row(&db, &sid).await.unwrap();
    let touches = metric(admin, "sessiongate_cache_touches_total").await;
    let hits = metric(admin, "sessiongate_cache_hits_total").await;
    assert_eq!(c.get("/account/").await.status, 200);
    assert!(
        metric(admin, "sessiongate_cache_hits_total").await > hits,
        "served from the cache"
    );
    until_metric(admin, "sessiongate_cache_touches_total", |v| v > touches).await;
    let (sess2, touched) = row(&db, &sid).await.unwrap();
    assert!(touched > aged + 250.0, "{aged} -> {touched}");
    assert_eq!(sess2, sess, "the batched touch moves expire only");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_slower_than_the_timeout_is_503_and_service_resumes_after() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().postgres(&pg), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let pair = c.cookie.clone().unwrap();
    assert_eq!(status(gate.addr, &pair).await, 200);
    // A migration holds the table: every statement on it waits.
    let mut db = pg.client().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE \"session\" IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("3"));
    tx.commit().await.unwrap();
    wait_until_async("the session to be served again", || async {
        status(gate.addr, &pair).await == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_listening_connection_empties_the_cache_and_is_made_again() {
    let pg = Postgres::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new().postgres(&pg).cache().admin(ADMIN),
        &[&app],
    )
    .start();
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    until_metric(admin, "sessiongate_cache_live", |v| v == 1).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let flushes = metric(admin, "sessiongate_cache_flushes_total").await;
    let db = pg.client().await;
    let cut: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'sessiongate listen') t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, 1, "one listening connection per gate");
    until_metric(admin, "sessiongate_cache_flushes_total", |v| v > flushes).await;
    until_metric(admin, "sessiongate_cache_live", |v| v == 1).await;
    // The new connection listens: a delete in SQL reaches the cache again.
    assert_eq!(c.get("/account/").await.status, 200);
    let invalidated = metric(admin, "sessiongate_cache_invalidations_total").await;
    db.execute("DELETE FROM \"session\" WHERE sid = $1", &[&sid_of(&c)])
        .await
        .unwrap();
    until_metric(admin, "sessiongate_cache_invalidations_total", |v| {
        v > invalidated
    })
    .await;
    assert_eq!(c.get("/account/").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_postgres_is_verified_against_the_private_ca() {
    let pki = TestPki::new();
    let cert = std::fs::read_to_string(pki.path("cert.pem")).unwrap();
    let key = std::fs::read_to_string(pki.path("key.pem")).unwrap();
    let pg = Postgres::start_tls(&cert, &key);
    let app = Upstream::start("app").await;
    let url = format!("{}?sslmode=require", pg.url());
    let trusted = standard(
        GateBuilder::new()
            .postgres(&pg)
            .postgres_setting(&format!("url = {url:?}"))
            .postgres_setting(&format!("ca_file = {:?}", pki.path("ca.pem"))),
        &[&app],
    )
    .start();
    let mut c = trusted.client();
    login(&mut c, "alice", &[]).await;
    assert_eq!(c.get("/account/").await.status, 200);
    let db = pg.client().await;
    let encrypted: Vec<bool> = db
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.application_name = 'sessiongate'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !encrypted.is_empty() && encrypted.iter().all(|e| *e),
        "{encrypted:?}"
    );
    // Without the CA the server's certificate is not trusted: no connection, a 503.
    let untrusted = standard(
        GateBuilder::new()
            .postgres(&pg)
            .postgres_setting(&format!("url = {url:?}")),
        &[&app],
    )
    .start();
    let r = raw(
        untrusted.addr,
        "GET",
        "/account/",
        &[("cookie", c.cookie.as_deref().unwrap())],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
}
