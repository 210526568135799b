//! Cross-origin request forgery stopped at the edge: every rule of `server.cross_origin`
//! with raw requests, each refused one shown never to reach the upstream (the echo counts
//! what it answers), counted and access-logged; `report`, per-route overrides,
//! `server.trusted_origins`, the scheme behind a trusted proxy, and the gate's own logout.

use crate::harness::*;

const ADMIN: &str = "admin-token-0123456789";
const REFUSALS: &str = r#"sessiongate_refusals_total{reason="cross_origin"}"#;
const REPORTED: &str = "sessiongate_cross_origin_reported_total";

/// The standard routes on a counting echo, with `extra` server lines, logged in as alice.
async fn logged_in(server: &[&str]) -> (Upstream, Gate, AccessLines, String) {
    let app = Upstream::start("app").await;
    let mut b = GateBuilder::new().admin(ADMIN).log(r#"access = "json""#);
    for l in server {
        b = b.server(l);
    }
    let (gate, log) = standard(b, &[&app])
        .route(
            "path = \"/hooks/\"\nupstream = \"app\"\nauth = \"optional\"\ncross_origin = \"allow\"",
        )
        .start_logged();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let cookie = c.cookie.clone().unwrap();
    (app, gate, log, cookie)
}

/// Sends `method path` with the cookie and `headers`; asserts whether it reached the upstream.
async fn send(
    app: &Upstream,
    gate: &Gate,
    cookie: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let before = app.hits();
    let mut h = headers.to_vec();
    h.push(("cookie", cookie));
    let r = raw(gate.addr, method, path, &h).await;
    let reached = app.hits() > before;
    assert_eq!(
        reached,
        r.status != 403,
        "{method} {path} {headers:?}: {} {} (reached the upstream: {reached})",
        r.status,
        r.body
    );
    r
}

fn assert_refused(r: &Response, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.body);
    assert_eq!(r.json()["error"], "cross_origin", "{what}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_changing_request_from_another_origin_with_the_cookie_never_reaches_the_upstream() {
    let (app, gate, log, cookie) = logged_in(&[]).await;
    let admin = gate.admin.unwrap();
    let foreign: &[(&str, &[(&str, &str)])] = &[
        ("another site", &[("sec-fetch-site", "cross-site")]),
        (
            "another origin of this site",
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "http://localhost:8081"),
            ],
        ),
        (
            "an unknown Sec-Fetch-Site",
            &[("sec-fetch-site", "same-ish")],
        ),
        (
            "an Origin on another host",
            &[("origin", "http://evil.example")],
        ),
        (
            "an Origin on another port",
            &[("origin", "http://localhost:8080")],
        ),
        (
            "an Origin with another scheme",
            &[("origin", "https://localhost")],
        ),
        ("Origin: null", &[("origin", "null")]),
        ("a malformed Origin", &[("origin", "localhost")]),
    ];
    let mut n = 0;
    for (what, headers) in foreign {
        for (method, path) in [
            ("POST", "/account/x"),
            ("PUT", "/maybe/x"),
            ("DELETE", "/account/x"),
            ("PATCH", "/public/x"),
            ("POST", "/login"),
        ] {
            let r = send(&app, &gate, &cookie, method, path, headers).await;
            assert_refused(&r, &format!("{what}: {method} {path}"));
            n += 1;
        }
    }
    // Counted, and access-logged with their status (the login's line comes first).
    assert_eq!(admin_metric(admin, ADMIN, REFUSALS).await, n);
    let lines = log.wait_json(1 + n as usize);
    let refused: Vec<_> = lines.iter().filter(|l| l["status"] == 403).collect();
    assert_eq!(refused.len(), n as usize);
    assert!(!log.text().contains(cookie.split('=').nth(1).unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn same_origin_and_headerless_requests_pass() {
    let (app, gate, _log, cookie) = logged_in(&[]).await;
    for headers in [
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://localhost"),
        ][..],
        // The user typed the address or used a bookmark.
        &[("sec-fetch-site", "none")],
        // Sec-Fetch-Site decides when present, even with an Origin that says otherwise.
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://other.example"),
        ],
        &[("origin", "http://localhost")],
        &[("origin", "http://LOCALHOST:80")],
        // A non-browser client, an old browser: nothing to judge by.
        &[],
    ] {
        let r = send(&app, &gate, &cookie, "POST", "/account/x", headers).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
        assert_eq!(r.json()["headers"]["x-user"][0], "alice");
    }
    // The port is part of the origin: an Origin naming the request's own port passes.
    let host = gate.addr.to_string();
    let origin = format!("http://{host}");
    let h = [("host", host.as_str()), ("origin", origin.as_str())];
    assert_eq!(
        send(&app, &gate, &cookie, "POST", "/account/x", &h)
            .await
            .status,
        200
    );
    let h = [("host", "[::1]:8080"), ("origin", "http://[0:0::1]:8080")];
    assert_eq!(
        send(&app, &gate, &cookie, "POST", "/account/x", &h)
            .await
            .status,
        200
    );
    let h = [("host", "[::1]:8080"), ("origin", "http://[::2]:8080")];
    assert_refused(
        &send(&app, &gate, &cookie, "POST", "/account/x", &h).await,
        "IPv6",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn safe_methods_pass_from_anywhere() {
    let (app, gate, _log, cookie) = logged_in(&[]).await;
    let h = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "http://evil.example"),
    ];
    for method in ["GET", "HEAD", "OPTIONS"] {
        let r = send(&app, &gate, &cookie, method, "/account/x", &h).await;
        assert_eq!(r.status, 200, "{method}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_session_cookie_are_not_checked() {
    let app = Upstream::start("app").await;
    let gate = standard(
        GateBuilder::new()
            .table("[session.token]\nheader = \"authorization\"\nscheme = \"Session\""),
        &[&app],
    )
    .start();
    let h = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "http://evil.example"),
    ];
    let before = app.hits();
    let r = raw(gate.addr, "POST", "/public/x", &h).await;
    assert_eq!(r.status, 200);
    // Another cookie is not the session cookie.
    let mut h2 = h.to_vec();
    h2.push(("cookie", "theme=dark"));
    assert_eq!(raw(gate.addr, "POST", "/public/x", &h2).await.status, 200);
    assert_eq!(app.hits(), before + 2);

    // A session token in a header is no ambient credential: no page can make a browser send it.
    let login = raw(
        gate.addr,
        "POST",
        "/login?issue=%7B%22user%22%3A%22bob%22%7D",
        &[("x-session-token", "request")],
    )
    .await;
    let token = login.header("x-session-token").unwrap().to_owned();
    let auth = format!("Session {token}");
    let mut h3 = h.to_vec();
    h3.push(("authorization", &auth));
    let r = raw(gate.addr, "POST", "/account/x", &h3).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-user"][0], "bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_origin_always_passes_and_only_that_origin() {
    let (app, gate, _log, cookie) =
        logged_in(&[r#"trusted_origins = ["https://partner.example", "http://127.0.0.2:9000"]"#])
            .await;
    for headers in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://partner.example"),
        ][..],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://PARTNER.example:443"),
        ],
        &[("origin", "http://127.0.0.2:9000")],
    ] {
        let r = send(&app, &gate, &cookie, "POST", "/account/x", headers).await;
        assert_eq!(r.status, 200, "{headers:?}");
    }
    for headers in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://partner.example"),
        ][..],
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://partner.example:8443"),
        ],
        &[("origin", "https://www.partner.example")],
        &[("origin", "http://127.0.0.2:9001")],
    ] {
        let r = send(&app, &gate, &cookie, "POST", "/account/x", headers).await;
        assert_refused(&r, &format!("{headers:?}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_handshakes_from_another_origin_are_refused_whatever_sec_fetch_site_says() {
    let (app, gate, _log, cookie) = logged_in(&[]).await;
    let ws = |origin: &'static str, site: &'static str| {
        let mut h = vec![
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-fetch-site", site),
        ];
        if !origin.is_empty() {
            h.push(("origin", origin));
        }
        h
    };
    for (origin, site) in [
        ("http://evil.example", "cross-site"),
        ("http://evil.example", "same-origin"),
        ("http://localhost:8081", "same-site"),
        ("null", "none"),
    ] {
        let r = send(
            &app,
            &gate,
            &cookie,
            "GET",
            "/account/ws",
            &ws(origin, site),
        )
        .await;
        assert_refused(&r, &format!("{origin} {site}"));
    }
    // The app's own page, and a client that sends no Origin, reach the upstream.
    for (origin, site) in [("http://localhost", "same-origin"), ("", "none")] {
        let r = send(
            &app,
            &gate,
            &cookie,
            "GET",
            "/account/ws",
            &ws(origin, site),
        )
        .await;
        assert_ne!(r.status, 403, "{origin} {site}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn report_lets_foreign_requests_through_and_counts_them() {
    let (app, gate, _log, cookie) = logged_in(&[r#"cross_origin = "report""#]).await;
    let admin = gate.admin.unwrap();
    let h = [("sec-fetch-site", "cross-site")];
    for _ in 0..3 {
        let r = send(&app, &gate, &cookie, "POST", "/account/x", &h).await;
        assert_eq!(r.status, 200);
    }
    // Same-origin ones are not counted.
    let same = [("sec-fetch-site", "same-origin")];
    send(&app, &gate, &cookie, "POST", "/account/x", &same).await;
    assert_eq!(admin_metric(admin, ADMIN, REPORTED).await, 3);
    assert_eq!(admin_metric(admin, ADMIN, REFUSALS).await, 0);
    // The logout stays same-origin whatever the policy.
    let r = send(&app, &gate, &cookie, "POST", "/logout", &h).await;
    assert_refused(&r, "logout");
    assert_eq!(admin_metric(admin, ADMIN, REFUSALS).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_overrides_the_servers_policy_both_ways() {
    // Refuse everywhere but /hooks/ (allow).
    let (app, gate, _log, cookie) = logged_in(&[]).await;
    let h = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "http://evil.example"),
    ];
    assert_eq!(
        send(&app, &gate, &cookie, "POST", "/hooks/x", &h)
            .await
            .status,
        200
    );
    assert_refused(
        &send(&app, &gate, &cookie, "POST", "/maybe/x", &h).await,
        "/maybe/",
    );
    drop(gate);

    // Allow everywhere but one route that refuses.
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().server(r#"cross_origin = "allow""#), &[&app])
        .route("path = \"/account/settings\"\nupstream = \"app\"\nauth = \"required\"\ncross_origin = \"refuse\"")
        .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let cookie = c.cookie.clone().unwrap();
    assert_eq!(
        send(&app, &gate, &cookie, "POST", "/account/x", &h)
            .await
            .status,
        200
    );
    let r = send(&app, &gate, &cookie, "POST", "/account/settings", &h).await;
    assert_refused(&r, "/account/settings");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_requests_scheme_is_the_gates_view_of_tls_or_a_trusted_proxys() {
    let (app, gate, _log, cookie) = logged_in(&[r#"trusted_proxies = ["127.0.0.1"]"#]).await;
    let https = [
        ("origin", "https://localhost"),
        ("x-forwarded-proto", "https"),
    ];
    assert_eq!(
        send(&app, &gate, &cookie, "POST", "/account/x", &https)
            .await
            .status,
        200
    );
    let http = [
        ("origin", "http://localhost"),
        ("x-forwarded-proto", "https"),
    ];
    assert_refused(
        &send(&app, &gate, &cookie, "POST", "/account/x", &http).await,
        "http",
    );
    drop(gate);

    // From a peer that is not a trusted proxy, X-Forwarded-Proto is not believed.
    let (app, gate, _log, cookie) = logged_in(&[]).await;
    assert_refused(
        &send(&app, &gate, &cookie, "POST", "/account/x", &https).await,
        "an untrusted X-Forwarded-Proto",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gates_logout_refuses_other_origins_of_the_same_site_too() {
    let (app, gate, _log, cookie) = logged_in(&[r#"cross_origin = "allow""#]).await;
    for h in [
        &[("sec-fetch-site", "same-site")][..],
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "http://localhost:3000")],
    ] {
        assert_refused(
            &send(&app, &gate, &cookie, "POST", "/logout", h).await,
            "logout",
        );
    }
    // Still logged in; then a same-origin logout ends it.
    let r = send(&app, &gate, &cookie, "GET", "/account/", &[]).await;
    assert_eq!(r.json()["headers"]["x-user"][0], "alice");
    let r = raw(
        gate.addr,
        "POST",
        "/logout",
        &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(r.status, 204);
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 401);
}

#[test]
fn trusted_origins_and_policies_are_checked_at_load_with_key_and_line() {
    let base = standard(GateBuilder::new(), &[]).toml("127.0.0.1:1".parse().unwrap());
    let cases = [
        (
            "trusted_origins = [\"https://ok.example\", \"https://partner.example/app\"]",
            "test.toml:4: server.trusted_origins[1]: `https://partner.example/app` is not an origin",
        ),
        ("trusted_origins = [\"null\"]", "test.toml:4: server.trusted_origins[0]: `null` is not an origin"),
        ("trusted_origins = [\"partner.example\"]", "server.trusted_origins[0]"),
        ("cross_origin = \"warn\"", "test.toml:4: server.cross_origin: unknown variant `warn`"),
    ];
    for (line, expected) in cases {
        let toml = base.replacen(
            "grace_period = \"0s\"\n",
            &format!("grace_period = \"0s\"\n{line}\n"),
            1,
        );
        let e = sessiongate::Config::parse(&toml, "test.toml", &|_| None)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "expected `{expected}` in `{e}`");
    }
    let toml = base.replacen(
        "auth = \"public\"\nissue_sessions = true",
        "auth = \"public\"\nissue_sessions = true\ncross_origin = \"sometimes\"",
        1,
    );
    let e = sessiongate::Config::parse(&toml, "test.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("route[0].cross_origin: unknown variant `sometimes`"),
        "{e}"
    );
}

/// On a route with `method_override`, a GET the upstream will act on as a DELETE is judged as
/// the DELETE it becomes.
#[tokio::test(flavor = "multi_thread")]
async fn an_overridden_method_is_judged_as_the_method_it_becomes() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app])
        .route(
            "path = \"/items/\"\nupstream = \"app\"\nauth = \"required\"\nmethod_override = true",
        )
        .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let cookie = c.cookie.clone().unwrap();
    let foreign = ("sec-fetch-site", "cross-site");
    for (path, extra) in [
        ("/items/7", ("x-http-method-override", "DELETE")),
        ("/items/7?_method=DELETE", ("accept", "*/*")),
    ] {
        let r = send(&app, &gate, &cookie, "GET", path, &[foreign, extra]).await;
        assert_refused(&r, path);
    }
    // A GET that stays a GET passes, from anywhere.
    let r = send(&app, &gate, &cookie, "GET", "/items/7", &[foreign]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(
        &app,
        &gate,
        &cookie,
        "GET",
        "/items/7?_method=HEAD",
        &[foreign],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Forward-auth takes the same decision: an edge reporting a forged request gets the 403 to
/// pass on.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_refuses_what_another_origin_sent() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().forward_auth(&["127.0.0.1"]), &[&app]).start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let cookie = c.cookie.clone().unwrap();
    let fa = gate.forward_auth.unwrap();
    let report = |origin: &'static str| {
        let cookie = cookie.clone();
        async move {
            raw(
                fa,
                "GET",
                "/auth/forward",
                &[
                    ("x-forwarded-method", "POST"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "app.example"),
                    ("x-forwarded-uri", "/account/settings"),
                    ("origin", origin),
                    ("cookie", &cookie),
                ],
            )
            .await
        }
    };
    let r = report("https://evil.example").await;
    assert_refused(&r, "a forged POST reported by the edge");
    let r = report("https://app.example").await;
    assert_eq!(r.status, 200, "the site's own page: {}", r.body);
    let r = report("http://app.example").await;
    assert_refused(&r, "another scheme is another origin");
}
