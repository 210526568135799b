//! The admin API and the `sessions` CLI: a token-guarded listener of their own.

use std::process::Command;

use crate::harness::*;

const TOKEN: &str = "admin-token-0123456789";

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_missing_and_wrong_tokens() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().admin(TOKEN), &[&app]).start();
    let admin = gate.admin.unwrap();
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some(TOKEN),
        Some("Basic YWRtaW4="),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let r = raw(admin, "GET", "/sessions/count", &headers).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = raw(
        admin,
        "GET",
        "/sessions/count",
        &[("authorization", &bearer(TOKEN))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["count"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn is_not_reachable_on_the_public_listener() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().admin(TOKEN), &[&app]).start();
    let r = raw(
        gate.addr,
        "DELETE",
        "/users/alice/sessions",
        &[("authorization", &bearer(TOKEN))],
    )
    .await;
    assert!(
        r.json().get("revoked").is_none(),
        "the public listener served the admin API: {}",
        r.body
    );
    assert_eq!(
        r.json()["upstream"],
        "app",
        "it is just a path on the public routes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_revokes_one_and_counts_without_whole_ids() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis).admin(TOKEN), &[&app]).start();
    let admin = gate.admin.unwrap();
    let auth = bearer(TOKEN);
    let mut laptop = gate.client();
    let mut phone = gate.client();
    login(&mut laptop, "alice", &[]).await;
    let issue = "/login?issue=%7B%22user%22%3A%22alice%22%7D";
    let r = phone
        .send("POST", issue, &[("user-agent", "PhoneApp/1.0")])
        .await;
    assert_eq!(r.status, 200);

    let r = raw(
        admin,
        "GET",
        "/users/alice/sessions",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    let list = r.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let phone_sid = sid_of(&phone);
    let phone_row = list
        .iter()
        .find(|s| s["user_agent"] == "PhoneApp/1.0")
        .expect("the user agent was recorded");
    assert_eq!(phone_row["ip"], "127.0.0.1");
    assert!(
        phone_row["created"].as_u64().is_some()
            && phone_row["expires"].as_u64().is_some()
            && phone_row["last_seen"].as_u64().is_some()
    );
    let prefix = phone_row["id_prefix"].as_str().unwrap();
    assert!(phone_sid.starts_with(prefix) && prefix.len() < 10);
    assert!(
        !r.body.contains(&phone_sid) && !r.body.contains(&sid_of(&laptop)),
        "whole ids are never shown"
    );

    let r = raw(
        admin,
        "DELETE",
        &format!("/users/alice/sessions/{prefix}"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(phone.get("/account/").await.status, 401);
    assert_eq!(laptop.get("/account/").await.status, 200);
    let r = raw(
        admin,
        "DELETE",
        &format!("/users/alice/sessions/{prefix}"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 404);
    let r = raw(admin, "GET", "/sessions/count", &[("authorization", &auth)]).await;
    assert_eq!(r.json()["count"], 1);
    assert_eq!(
        raw(admin, "GET", "/nope", &[("authorization", &auth)])
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_or_short_id_prefix_revokes_nothing() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().admin(TOKEN), &[&app]).start();
    let admin = gate.admin.unwrap();
    let mut laptop = gate.client();
    let mut phone = gate.client();
    login(&mut laptop, "alice", &[]).await;
    login(&mut phone, "alice", &[]).await;
    let short = &sid_of(&phone)[..3];
    for path in [
        "/users/alice/sessions/".to_string(),
        format!("/users/alice/sessions/{short}"),
        "/users/alice/sessions/%20".to_string(),
    ] {
        let r = raw(admin, "DELETE", &path, &[("authorization", &bearer(TOKEN))]).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_prefix");
    }
    assert_eq!(laptop.get("/account/").await.status, 200);
    assert_eq!(phone.get("/account/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_in_the_path_is_decoded_exactly_or_refused() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().admin(TOKEN), &[&app]).start();
    let admin = gate.admin.unwrap();
    let mut c = gate.client();
    // A user whose name is what lossy decoding makes of invalid UTF-8.
    login(&mut c, "a\u{FFFD}", &[]).await;
    for path in [
        "/users/a%FF/sessions",
        "/users/a%FE/sessions",
        "/users//sessions",
    ] {
        let r = raw(admin, "DELETE", path, &[("authorization", &bearer(TOKEN))]).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    assert_eq!(
        c.get("/account/").await.status,
        200,
        "no one else was revoked"
    );
    let r = raw(
        admin,
        "DELETE",
        "/users/a%EF%BF%BD/sessions",
        &[("authorization", &bearer(TOKEN))],
    )
    .await;
    assert_eq!(r.json()["revoked"], 1, "the exact spelling names the user");
    assert_eq!(c.get("/account/").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_cli_works_on_the_store_directly() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let builder = standard(GateBuilder::new().redis(&redis), &[&app]);
    let gate = builder.start();
    let mut c = gate.client();
    login(&mut c, "carol", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, builder.toml(free_addr())).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
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
}
