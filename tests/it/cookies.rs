//! The express-session wire format at the gate: signed cookies, secret rotation, rejection
//! of everything not exactly signed, and the record layout in Redis.

use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn login_issues_a_cookie_an_express_verifier_accepts() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .cookie(r#"max_age = "30m""#),
        &[&app],
    )
    .start();
    let mut c = gate.client();
    let resp = login(&mut c, "alice", &["admin"]).await;

    let set_cookie = resp.set_cookie("connect.sid").unwrap();
    assert!(set_cookie.contains("; Path=/"), "{set_cookie}");
    assert!(set_cookie.contains("; HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("; SameSite=Lax"), "{set_cookie}");
    assert!(
        set_cookie.contains("; Max-Age=1800; Expires="),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP gets no Secure: {set_cookie}"
    );
    assert!(
        resp.header("x-session-issue").is_none(),
        "internal header reached the client"
    );

    let sid =
        express_unsign(SECRET, c.cookie.as_ref().unwrap()).expect("express accepts the signature");
    assert_eq!(sid.len(), 32);
    assert!(sid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    let stored: Value = serde_json::from_str(&redis.get(&format!("sess:{sid}")).unwrap()).unwrap();
    let keys: Vec<&String> = stored.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["cookie", "user", "roles", "sessiongate"],
        "cookie first, then the fields, then the gate's own"
    );
    assert!(stored["sessiongate"]["created"].as_u64().is_some());
    assert_eq!(stored["sessiongate"]["ip"], json!("127.0.0.1"));
    assert_eq!(stored["cookie"]["originalMaxAge"], json!(1_800_000));
    assert_eq!(stored["cookie"]["httpOnly"], json!(true));
    assert_eq!(stored["cookie"]["path"], json!("/"));
    assert!(stored["cookie"]["expires"].as_str().unwrap().ends_with('Z'));
    assert_eq!(stored["user"], json!("alice"));
    let ttl = redis.ttl(&format!("sess:{sid}"));
    assert!(
        (1795..=1800).contains(&ttl),
        "TTL is ceil(originalMaxAge/1000): {ttl}"
    );

    let me = c.get("/account/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.upstream_header("x-user").as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_session_cookie_and_default_ttl_without_max_age() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let mut c = gate.client();
    let resp = login(&mut c, "bob", &[]).await;
    let set_cookie = resp.set_cookie("connect.sid").unwrap();
    assert!(
        !set_cookie.contains("Expires") && !set_cookie.contains("Max-Age"),
        "{set_cookie}"
    );
    let sid = sid_of(&c);
    let stored: Value = serde_json::from_str(&redis.get(&format!("sess:{sid}")).unwrap()).unwrap();
    assert_eq!(stored["cookie"]["originalMaxAge"], Value::Null);
    assert_eq!(stored["cookie"]["expires"], Value::Null);
    assert!(
        redis.ttl(&format!("sess:{sid}")) > 86_000,
        "connect-redis's one-day default"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cookie_signed_with_a_retired_secret_still_works() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .secrets(&[SECRET, OLD_SECRET]),
        &[&app],
    )
    .start();
    let sid = "OldSecretSession0123456789abcdef";
    let pair = plant_session(
        &redis,
        OLD_SECRET,
        sid,
        json!({"user": "carol"}),
        Some(600_000),
    );
    let mut c = gate.client();
    c.cookie = Some(pair);
    let resp = c.get("/account/").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.upstream_header("x-user").as_deref(), Some("carol"));
    // The rolling cookie is re-signed with the current secret, as express-session does.
    assert_eq!(
        express_unsign(SECRET, c.cookie.as_deref().unwrap()).as_deref(),
        Some(sid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_unknown_and_unsigned_cookies_are_no_session() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let sid = "ValidSession0123456789abcdefABCD";
    let good = plant_session(&redis, SECRET, sid, json!({"user": "dave"}), None);
    let unknown = format!("connect.sid={}", express_sign("some other secret", sid));
    let value = good.split_once('=').unwrap().1.to_string();
    let tampered_sig = format!(
        "connect.sid={}",
        value.replace(&value[value.len() - 3..], "AAA")
    );
    let tampered_sid = format!(
        "connect.sid={}",
        value.replacen("ValidSession", "ValidSessioN", 1)
    );
    let unsigned = format!("connect.sid={sid}");
    let unsigned_prefixed = format!("connect.sid=s%3A{sid}");
    let trailing = format!("{good}x");
    let garbage = "connect.sid=%E0%A4%A".to_string();

    let mut ok = gate.client();
    ok.cookie = Some(good.clone());
    assert_eq!(
        ok.get("/account/").await.status,
        200,
        "the untouched cookie works"
    );
    for bad in [
        unknown,
        tampered_sig,
        tampered_sid,
        unsigned,
        unsigned_prefixed,
        trailing,
        garbage,
    ] {
        let resp = raw(gate.addr, "GET", "/account/", &[("cookie", &bad)]).await;
        assert_eq!(resp.status, 401, "{bad} must not authenticate");
        assert_eq!(resp.json()["error"], "unauthenticated");
        assert!(app.hits() >= 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_json_in_redis_is_no_session_not_a_crash() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let sid = "BrokenJsonSession0123456789abcde";
    let pair = plant_session(&redis, SECRET, sid, json!({"user": "eve"}), None);
    redis.set(&format!("sess:{sid}"), "{\"cookie\": {", 60);
    let resp = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(resp.status, 401);
    redis.set(&format!("sess:{sid}"), "[1,2]", 60);
    let resp = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        raw(gate.addr, "GET", "/public/", &[]).await.status,
        200,
        "the gate still serves"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_different_signed_session_cookies_count_as_none() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let mine = plant_session(
        &redis,
        SECRET,
        "MineMineMine0123456789abcdefABCD",
        json!({"user": "me"}),
        None,
    );
    let tossed = plant_session(
        &redis,
        SECRET,
        "TossedTossed0123456789abcdefABCD",
        json!({"user": "attacker"}),
        None,
    );
    let both = format!("{tossed}; {mine}");
    let resp = raw(gate.addr, "GET", "/account/", &[("cookie", &both)]).await;
    assert_eq!(
        resp.status, 401,
        "a tossed cookie must not pick the identity"
    );
    // The same cookie twice is fine.
    let twice = format!("{mine}; {mine}");
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("cookie", &twice)])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_cookie_header_gets_an_error_status_and_the_gate_survives() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    let huge = format!("connect.sid={}", "a".repeat(200_000));
    let stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let req = format!("GET /account/ HTTP/1.1\r\nhost: localhost\r\ncookie: {huge}\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = stream.into_split();
    let _ = w.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 64];
    let n = r.read(&mut buf).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        n == 0 || head.starts_with("HTTP/1.1 4"),
        "an oversized request is refused, not served: {head}"
    );
    assert_eq!(raw(gate.addr, "GET", "/public/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_session_cookie_keeps_the_bearer_secret_from_the_upstream() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app])
        .route("path = \"/vault/\"\nupstream = \"app\"\nauth = \"required\"\nstrip_session_cookie = true")
        .start();
    let mut c = gate.client();
    login(&mut c, "alice", &["reader"]).await;
    let pair = c.cookie.clone().unwrap();
    let cookie = format!("theme=dark; {pair}; lang=fr");
    let r = raw(gate.addr, "GET", "/vault/x", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("alice"));
    assert_eq!(
        r.upstream_header("cookie").as_deref(),
        Some("theme=dark; lang=fr"),
        "the other cookies stay"
    );
    let r = raw(gate.addr, "GET", "/vault/x", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("cookie"), None, "no empty Cookie line");
    // Other routes still pass it on.
    let r = raw(gate.addr, "GET", "/account/x", &[("cookie", &cookie)]).await;
    assert_eq!(
        r.upstream_header("cookie").as_deref(),
        Some(cookie.as_str())
    );
}
