//! Identity headers: client spoofs never reach an upstream, in any spelling, on any route;
//! real values are injected from the session.

use serde_json::json;

use crate::harness::*;

const SPOOFS: &[(&str, &str)] = &[
    ("X-User", "root"),
    ("x_user", "root"),
    ("X_USER", "root"),
    ("x-user-roles", "admin"),
    ("X_User_Roles", "admin"),
    ("X-Session-Issue", "{\"user\":\"root\"}"),
    ("x_session_destroy", "1"),
];

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();

    for path in ["/public/x", "/maybe/x"] {
        let r = raw(gate.addr, "GET", path, SPOOFS).await;
        assert_eq!(r.status, 200);
        let seen = r.json()["headers"].clone();
        for (name, _) in SPOOFS {
            assert!(
                seen.get(name.to_ascii_lowercase()).is_none(),
                "{name} reached the upstream on {path}: {seen}"
            );
        }
    }

    let mut c = gate.client();
    login(&mut c, "alice", &["reader"]).await;
    let r = c.send("GET", "/account/", SPOOFS).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-user").as_deref(),
        Some("alice"),
        "one value, the real one"
    );
    assert_eq!(r.upstream_header("x-user-roles").as_deref(), Some("reader"));
    let seen = r.json()["headers"].clone();
    for name in [
        "x_user",
        "x_user_roles",
        "x-session-issue",
        "x_session_destroy",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the upstream: {seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_values_become_header_text() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .redis(&redis)
            .identity(r#""X-User-Id" = "/id""#)
            .identity(r#""X-Admin" = "/admin""#)
            .identity(r#""X-Email" = "/profile/email""#)
            .identity(r#""X-Profile" = "/profile""#)
            .identity(r#""X-Missing" = "/nope""#),
        &[&app],
    )
    .start();
    let pair = plant_session(
        &redis,
        SECRET,
        "ValuesSession0123456789abcdefABC",
        json!({"user": "bob", "roles": ["a", "b", 3], "id": 42, "admin": false, "profile": {"email": "bob@example.com"}}),
        None,
    );
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user").as_deref(), Some("bob"));
    assert_eq!(r.upstream_header("x-user-roles").as_deref(), Some("a,b,3"));
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("42"));
    assert_eq!(r.upstream_header("x-admin").as_deref(), Some("false"));
    assert_eq!(
        r.upstream_header("x-email").as_deref(),
        Some("bob@example.com")
    );
    assert_eq!(r.upstream_header("x-profile"), None, "objects are not sent");
    assert_eq!(r.upstream_header("x-missing"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn values_with_control_characters_are_never_sent() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    let pair = plant_session(
        &redis,
        SECRET,
        "CrlfSession0123456789abcdefABCDE",
        json!({"user": "mallory\r\nX-Admin: true", "roles": ["ok\u{7}"]}),
        None,
    );
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user"), None);
    assert_eq!(r.upstream_header("x-user-roles"), None);
    assert_eq!(r.upstream_header("x-admin"), None);
}
