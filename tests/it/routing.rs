//! Routes: host, method and normalised path; the longest match wins; no spelling of a
//! protected path reaches it unauthenticated; the upstream gets the path that was matched.

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_a_protected_path_is_protected() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    for path in [
        "/account/",
        "/account",
        "/public/../account/",
        "/%61ccount/",
        "//account//",
        "/./account/./x",
        "/public/%2e%2e/account/",
        "/ACCOUNT/",
        "/Account/x",
        "/account/x?next=/public/",
    ] {
        let resp = raw(gate.addr, "GET", path, &[]).await;
        assert_eq!(resp.status, 401, "{path} must need a session");
    }
    assert_eq!(
        app.hits(),
        0,
        "no unauthenticated request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_encodings_are_refused() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    for path in [
        "/public/..%2faccount/",
        "/public/..%2Faccount/",
        "/public%5c..%5caccount/",
        "/public/%00",
        "/a%zz",
        "/public/..;/account/",
    ] {
        let resp = raw(gate.addr, "GET", path, &[]).await;
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(resp.json()["error"], "bad_path");
    }
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_gets_the_normalised_path_and_the_query() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let resp = c
        .get("/public/../account/%7Ealice//settings?tab=a%2Fb")
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/account/~alice/settings?tab=a%2Fb");
    let resp = c.get("/%61ccount/a%20b%23c").await;
    assert_eq!(resp.json()["path"], "/account/a%20b%23c");
}

#[tokio::test(flavor = "multi_thread")]
async fn required_optional_and_public_routes() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();

    let r = raw(gate.addr, "GET", "/account/", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"error": "unauthenticated", "message": "a valid session is required"})
    );

    let anon = raw(gate.addr, "GET", "/maybe/x", &[]).await;
    assert_eq!(anon.status, 200, "optional passes without a session");
    assert_eq!(anon.upstream_header("x-user"), None);

    let mut c = gate.client();
    login(&mut c, "alice", &["a", "b"]).await;
    let known = c.get("/maybe/x").await;
    assert_eq!(
        known.upstream_header("x-user").as_deref(),
        Some("alice"),
        "optional passes identity when there is one"
    );
    assert_eq!(c.get("/account/").await.status, 200);
    let public = c.get("/public/x").await;
    assert_eq!(
        public.upstream_header("x-user"),
        None,
        "public routes never look the session up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_redirect_carries_a_local_return_path() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app]).start();
    let r = raw(gate.addr, "GET", "/pages/report?id=7&x=%2F%2Fevil", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("/login?return_to=%2Fpages%2Freport%3Fid%3D7%26x%3D%252F%252Fevil")
    );
    // A path that starts with `//` or `/\` cannot become an off-site return path.
    let r = raw(gate.addr, "GET", "/pages//evil.example", &[]).await;
    assert_eq!(
        r.header("location"),
        Some("/login?return_to=%2Fpages%2Fevil.example")
    );
    // Non-page requests get 401, not a redirect that would drop their body.
    assert_eq!(
        raw(gate.addr, "POST", "/pages/report", &[]).await.status,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn longest_match_host_and_method() {
    let app = Upstream::start("app").await;
    let admin = Upstream::start("admin").await;
    let api = Upstream::start("api").await;
    let gate = GateBuilder::new()
        .upstream("app", &[&app])
        .upstream("admin", &[&admin])
        .upstream("api", &[&api])
        .route("path = \"/\"\nupstream = \"app\"\nauth = \"public\"")
        .route("path = \"/admin/\"\nupstream = \"admin\"\nauth = \"public\"\nhost = \"admin.example.com\"")
        .route("path = \"/data/\"\nupstream = \"api\"\nauth = \"public\"\nmethods = [\"POST\"]")
        .route("path = \"/data/open/\"\nupstream = \"admin\"\nauth = \"public\"")
        .start();
    let upstream_of = |r: Response| r.json()["upstream"].as_str().unwrap().to_string();
    assert_eq!(
        upstream_of(
            raw(
                gate.addr,
                "GET",
                "/admin/x",
                &[("host", "admin.example.com:8080")]
            )
            .await
        ),
        "admin"
    );
    assert_eq!(
        upstream_of(raw(gate.addr, "GET", "/admin/x", &[("host", "www.example.com")]).await),
        "app"
    );
    assert_eq!(
        upstream_of(raw(gate.addr, "POST", "/data/x", &[]).await),
        "api"
    );
    assert_eq!(
        upstream_of(raw(gate.addr, "GET", "/data/x", &[]).await),
        "app"
    );
    assert_eq!(
        upstream_of(raw(gate.addr, "POST", "/data/open/x", &[]).await),
        "admin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_404() {
    let app = Upstream::start("app").await;
    let gate = GateBuilder::new()
        .upstream("app", &[&app])
        .route("path = \"/only/\"\nupstream = \"app\"\nauth = \"public\"")
        .start();
    let r = raw(gate.addr, "GET", "/other", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no_route");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_without_a_user_is_not_a_login() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis), &[&app]).start();
    // What an express app stores for an anonymous visitor (a cart, saveUninitialized).
    let pair = plant_session(
        &redis,
        SECRET,
        "AnonymousCart0123456789abcdefABC",
        json!({"cart": [1, 2]}),
        None,
    );
    assert_eq!(
        raw(gate.addr, "GET", "/account/", &[("cookie", &pair)])
            .await
            .status,
        401
    );
    let r = raw(gate.addr, "GET", "/maybe/", &[("cookie", &pair)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user"), None);
}
