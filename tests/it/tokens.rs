//! Clients without cookies: the same signed session token in a request header.

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn a_header_token_client_logs_in_is_served_and_is_revoked() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .admin(ADMIN)
            .table("[session.token]\nheader = \"authorization\"\nscheme = \"Session\"")
            .cookie(r#"max_age = "10m""#),
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
    assert_eq!(login.status, 200);
    assert!(
        login.set_cookie("connect.sid").is_none(),
        "a token client gets no cookie"
    );
    let token = login
        .header("x-session-token")
        .expect("the token it asked for")
        .to_string();
    assert!(
        login.upstream_header("x-session-token").is_none(),
        "the request header never reached the upstream"
    );

    let auth = format!("Session {token}");
    let r = raw(gate.addr, "GET", "/account/", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("app-user"));
    assert!(
        r.upstream_header("authorization").is_none(),
        "the token is the gate's, not the upstream's"
    );
    assert!(
        r.set_cookie("connect.sid").is_none(),
        "no rolling cookie for a header client"
    );
    let sid = express_unsign(SECRET, &format!("connect.sid={token}")).unwrap();
    redis.expire(&format!("sess:{sid}"), 30);
    raw(gate.addr, "GET", "/account/", &[("authorization", &auth)]).await;
    assert!(
        redis.ttl(&format!("sess:{sid}")) > 590,
        "rolling applies to tokens too"
    );

    // Other Authorization schemes pass through untouched and authenticate nothing.
    let r = raw(
        gate.addr,
        "GET",
        "/maybe/",
        &[("authorization", "Bearer upstream-api-key")],
    )
    .await;
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some("Bearer upstream-api-key")
    );
    assert_eq!(r.upstream_header("x-user"), None);
    // Never from a query string.
    for q in ["token", "session", "sid", "connect.sid"] {
        let r = raw(gate.addr, "GET", &format!("/account/?{q}={token}"), &[]).await;
        assert_eq!(r.status, 401, "{q}");
    }
    // A tampered token is no session.
    let tampered = format!("Session {}", token.replace('.', ".x"));
    assert_eq!(
        raw(
            gate.addr,
            "GET",
            "/account/",
            &[("authorization", &tampered)]
        )
        .await
        .status,
        401
    );

    // Revoked like a cookie client.
    let r = raw(
        gate.admin.unwrap(),
        "DELETE",
        "/users/app-user/sessions",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(r.json()["revoked"], 1);
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("authorization", &auth)])
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refused_when_not_configured() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let token = c
        .cookie
        .as_ref()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let r = raw(
        gate.addr,
        "GET",
        "/account/",
        &[("authorization", &format!("Session {token}"))],
    )
    .await;
    assert_eq!(r.status, 401);
}
