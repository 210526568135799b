//! Wire compatibility with express 5 + express-session + connect-pg-simple 10 on one
//! PostgreSQL table (`tests/interop/express/app.js` with `PG_URL`): the table is made by
//! connect-pg-simple's own `table.sql`, and sessions, rolls, touches, rotated secrets and log
//! out everywhere cross between the app and the gate.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::harness::*;
use crate::interop_harness::*;

const MAX_AGE_MS: u64 = 600_000;

/// The table as connect-pg-simple's `table.sql` makes it.
async fn table(pg: &Postgres) -> tokio_postgres::Client {
    let db = pg.client().await;
    db.batch_execute(&connect_pg_simple_table_sql())
        .await
        .unwrap();
    db
}

fn express(pg: &Postgres, secrets: &[&str]) -> Express {
    Express::on_postgres(pg)
        .secrets(secrets)
        .max_age_ms(Some(MAX_AGE_MS))
        .start()
}

/// `/login`, `/whoami`, `/write`, `/logout` at express; `/issue` and `/everywhere` at the
/// echo upstream (a login and a log out everywhere at the edge).
fn gate(pg: &Postgres, secrets: &[&str], express: SocketAddr, issuer: &Upstream) -> Gate {
    GateBuilder::new()
        .postgres(pg)
        .postgres_setting("create_table = false")
        .secrets(secrets)
        .cookie(&format!(r#"max_age = "{MAX_AGE_MS}ms""#))
        .upstream_addrs("express", &[express])
        .upstream("issuer", &[issuer])
        .route("path = \"/login\"\nupstream = \"express\"\nauth = \"public\"")
        .route("path = \"/issue\"\nupstream = \"issuer\"\nauth = \"public\"\nissue_sessions = true")
        .route(
            "path = \"/everywhere\"\nupstream = \"issuer\"\nauth = \"required\"\nissue_sessions = true",
        )
        .route("path = \"/whoami\"\nupstream = \"express\"\nauth = \"required\"")
        .route("path = \"/write\"\nupstream = \"express\"\nauth = \"required\"")
        .route("path = \"/logout\"\nupstream = \"express\"\nauth = \"optional\"")
        .start()
}

async fn express_login(c: &mut Client, user: &str) {
    let r = c.post(&format!("/login?user={user}&roles=reader")).await;
    assert_eq!(r.status, 200, "express login: {}", r.body);
    assert!(c.cookie.is_some());
}

async fn gate_login(c: &mut Client, user: &str) {
    let issue = json!({"user": user, "roles": ["admin"]}).to_string();
    let q = percent_encoding::utf8_percent_encode(&issue, percent_encoding::NON_ALPHANUMERIC);
    let r = c.post(&format!("/issue?issue={q}")).await;
    assert_eq!(r.status, 200, "gate login: {}", r.body);
}

async fn row(db: &tokio_postgres::Client, sid: &str) -> Option<(String, f64)> {
    db.query_opt(
        "SELECT sess::text, extract(epoch FROM expire::timestamptz)::float8 FROM \"session\" WHERE sid = $1",
        &[&sid],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

fn sid(c: &Client, secrets: &[&str]) -> String {
    let pair = c.cookie.as_deref().expect("a cookie");
    secrets
        .iter()
        .find_map(|s| express_unsign(s, pair))
        .expect("signed with a shared secret")
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_flow_both_ways_between_connect_pg_simple_and_the_gate() {
    let pg = Postgres::start();
    let db = table(&pg).await;
    let app = express(&pg, &[SECRET]);
    let issuer = Upstream::start("issuer").await;
    let gate = gate(&pg, &[SECRET], app.addr, &issuer);

    // express writes, the gate serves.
    let mut c = gate.client();
    express_login(&mut c, "alice").await;
    let (sess, expire) = row(&db, &sid(&c, &[SECRET]))
        .await
        .expect("connect-pg-simple's row");
    assert!(
        sess.starts_with("{\"cookie\":{\"originalMaxAge\":600000,"),
        "{sess}"
    );
    assert!((expire - now_s() - 600.0).abs() < 3.0, "{expire}");
    let r = c.get("/whoami").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"], "alice");

    // The gate writes, express reads, and its writes land in the gate's row.
    let mut g = gate.client();
    gate_login(&mut g, "bob").await;
    let mut direct = app.client_like(&g);
    let r = direct.get("/whoami").await;
    assert_eq!(r.json()["user"], "bob", "{}", r.body);
    assert_eq!(r.json()["sessionId"], sid(&g, &[SECRET]));
    let r = direct.post("/write?key=theme&value=dark").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (sess, _) = row(&db, &sid(&g, &[SECRET])).await.unwrap();
    let sess: Value = serde_json::from_str(&sess).unwrap();
    assert_eq!(
        (sess["user"].clone(), sess["theme"].clone()),
        (json!("bob"), json!("dark"))
    );
    assert!(
        sess["sessiongate"]["created"].is_u64(),
        "express kept the gate's field"
    );
    assert_eq!(g.get("/whoami").await.json()["session"]["theme"], "dark");

    // A logout at express ends the session at the gate.
    let pair = c.cookie.clone().unwrap();
    let r = c.post("/logout").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw(gate.addr, "GET", "/whoami", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn touches_move_expire_the_same_way_on_both_sides_and_leave_sess_alone() {
    let pg = Postgres::start();
    let db = table(&pg).await;
    let app = express(&pg, &[SECRET]);
    let issuer = Upstream::start("issuer").await;
    let gate = gate(&pg, &[SECRET], app.addr, &issuer);
    let mut c = gate.client();
    express_login(&mut c, "carol").await;
    let id = sid(&c, &[SECRET]);
    // Age the row as if it were written five minutes ago.
    db.execute(
        "UPDATE \"session\" SET expire = expire - interval '300 seconds' WHERE sid = $1",
        &[&id],
    )
    .await
    .unwrap();
    let (sess, aged) = row(&db, &id).await.unwrap();

    // Through the gate (the gate touches; express's own touch follows on its response).
    let mut direct = app.client_like(&c);
    let r = c.get("/whoami").await;
    assert_eq!(r.status, 200);
    let (sess_after_gate, by_gate) = row(&db, &id).await.unwrap();
    assert!(by_gate > aged + 250.0, "{aged} -> {by_gate}");
    assert!((by_gate - now_s() - 600.0).abs() < 3.0);

    // express alone: connect-pg-simple's touch, `expire` only.
    db.execute(
        "UPDATE \"session\" SET expire = expire - interval '300 seconds' WHERE sid = $1",
        &[&id],
    )
    .await
    .unwrap();
    let r = direct.get("/whoami").await;
    assert_eq!(r.status, 200);
    let (sess_after_express, by_express) = row(&db, &id).await.unwrap();
    assert!(
        (by_express - by_gate).abs() < 3.0,
        "{by_gate} vs {by_express}"
    );
    assert!(
        r.set_cookie("connect.sid").is_some(),
        "rolling: express re-sent the cookie"
    );
    // express-session's touch rewrites nothing; the gate's neither. (express re-saves only a
    // modified session, and neither request modified it.)
    let without_expires = |s: &str| {
        let mut v: Value = serde_json::from_str(s).unwrap();
        v["cookie"].as_object_mut().unwrap().remove("expires");
        v
    };
    assert_eq!(
        sess_after_gate, sess,
        "the gate's touch left sess byte for byte"
    );
    assert_eq!(without_expires(&sess_after_express), without_expires(&sess));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_secrets_are_shared_on_one_table() {
    const NEW: &str = "test secret, rotated in";
    let pg = Postgres::start();
    let _db = table(&pg).await;
    let old_app = express(&pg, &[SECRET]);
    let mut c = old_app.client();
    express_login(&mut c, "dave").await;
    // The fleet rotates: the new secret signs, the old one still verifies.
    let app = express(&pg, &[NEW, SECRET]);
    let issuer = Upstream::start("issuer").await;
    let gate = gate(&pg, &[NEW, SECRET], app.addr, &issuer);
    let mut through = gate.client();
    through.cookie = c.cookie.clone();
    let r = through.get("/whoami").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"], "dave");
    let resigned = through.cookie.clone().unwrap();
    assert!(
        express_unsign(NEW, &resigned).is_some(),
        "the rolled cookie is signed with the new secret: {resigned}"
    );
    let mut direct = app.client();
    direct.cookie = Some(resigned);
    assert_eq!(direct.get("/whoami").await.json()["user"], "dave");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_out_everywhere_at_the_gate_removes_the_users_express_rows_and_no_others() {
    let pg = Postgres::start();
    let db = table(&pg).await;
    let app = express(&pg, &[SECRET]);
    let issuer = Upstream::start("issuer").await;
    let gate = gate(&pg, &[SECRET], app.addr, &issuer);
    // Two sessions express made for alice, one for bob, all straight at express (no gate has
    // seen them), and one the gate made for alice.
    let mut a1 = app.client();
    let mut a2 = app.client();
    let mut bob = app.client();
    express_login(&mut a1, "alice").await;
    express_login(&mut a2, "alice").await;
    express_login(&mut bob, "bob").await;
    let mut at_gate = gate.client();
    gate_login(&mut at_gate, "alice").await;
    let count = |user: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT count(*) FROM \"session\" WHERE sess->>'user' = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!((count("alice").await, count("bob").await), (3, 1));

    let r = at_gate.post("/everywhere?destroy=all").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((count("alice").await, count("bob").await), (0, 1));
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.get("/whoami").await.json()["user"], Value::Null);
    }
    assert_eq!(bob.get("/whoami").await.json()["user"], "bob");
    let mut bob_at_gate = gate.client();
    bob_at_gate.cookie = bob.cookie.clone();
    assert_eq!(bob_at_gate.get("/whoami").await.status, 200);
}
