//! Every browser flow in a real browser: headless Chromium against the demo app
//! (`examples/demo/app.rs`) behind the gate with the shipped `proxy.toml`, and attacker pages
//! on two other origins: the same host on another port (same-site but cross-origin:
//! `SameSite=Lax` still sends the cookie, so only the gate's check stops its requests) and
//! 127.0.0.2 (cross-site: the browser keeps the cookie off). Signing in through the form,
//! the cookie out of the page's reach, `return_to`, forged forms, `fetch` and WebSockets,
//! logout, and "remember me" across a browser restart.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fantoccini::Locator;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::harness::*;

#[path = "../../examples/demo/app.rs"]
mod demo_app;

/// The demo: its app on a port of its own, the gate in front of it with `proxy.toml` (the
/// addresses changed, the access log in JSON for the test to read).
struct Demo {
    _gate: Gate,
    log: AccessLines,
    _app: tokio::task::JoinHandle<()>,
    /// `http://127.0.0.1:PORT`, the app's origin as the browser sees it.
    origin: String,
}

impl Demo {
    async fn start() -> Demo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = listener.local_addr().unwrap();
        let app = tokio::spawn(demo_app::serve(listener));
        let addr = free_addr();
        let shipped = include_str!("../../proxy.toml");
        let toml = shipped
            .replace("\"127.0.0.1:8080\"", &format!("\"{addr}\""))
            .replace("\"127.0.0.1:3000\"", &format!("\"{app_addr}\""))
            .replace("access = \"text\"", "access = \"json\"");
        assert!(
            toml.contains(&addr.to_string()) && toml.contains(&app_addr.to_string()),
            "proxy.toml no longer has the demo's addresses"
        );
        let config = sessiongate::Config::parse(&toml, "proxy.toml", &|name| {
            (name == "SESSION_SECRET").then(|| SECRET.to_string())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let log = AccessLines::default();
        let server =
            sessiongate::GateServer::with_access_log(config.clone(), Box::new(log.clone()))
                .expect("gate starts");
        let gate = Gate::serve(server, &config, addr);
        Demo {
            origin: format!("http://{addr}"),
            _gate: gate,
            log,
            _app: app,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// The statuses the gate answered `method path` with, in order, once there are `n`.
    fn statuses(&self, method: &str, path: &str, n: usize) -> Vec<u64> {
        wait_for(
            &format!("{n} access-log lines for {method} {path}"),
            Duration::from_secs(20),
            || {
                let found: Vec<u64> = self
                    .log
                    .text()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|l| l["method"] == method && l["path"] == path)
                    .filter_map(|l| l["status"].as_u64())
                    .collect();
                (found.len() >= n).then_some(found)
            },
        )
    }
}

/// A page on another origin that forges requests to the demo: `/form` (a form that submits
/// itself), `/fetch` (`fetch` with `credentials: "include"`), `/ws` (a WebSocket). Each ends
/// by writing what happened in `document.title`.
struct Attacker {
    origin: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Attacker {
    async fn start(ip: &str, demo: &Demo) -> Attacker {
        let addr: SocketAddr = format!("{ip}:{}", free_port()).parse().unwrap();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let target = demo.origin.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let page = attack_page(req.uri().path(), &target);
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "text/html; charset=utf-8")
                                    .body(Full::new(Bytes::from(page)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Attacker {
            origin: format!("http://{addr}"),
            _task: task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

/// The attacker's pages; every forged request asks to end every session of the user
/// ("sign out everywhere"), which the victim would notice at once.
fn attack_page(path: &str, target: &str) -> String {
    let ws = target.replacen("http://", "ws://", 1);
    let body = match path {
        "/form" => format!(
            "<form id=\"f\" method=\"post\" action=\"{target}/account/settings\">\
             <input type=\"hidden\" name=\"everywhere\" value=\"1\"></form>\
             <script>document.getElementById(\"f\").submit();</script>"
        ),
        "/fetch" => format!(
            "<script>fetch(\"{target}/account/settings\", {{method: \"POST\", credentials: \"include\", \
             headers: {{\"content-type\": \"application/x-www-form-urlencoded\"}}, body: \"everywhere=1\"}})\
             .then((r) => {{ document.title = \"answered \" + r.status; }}, () => {{ document.title = \"failed\"; }});</script>"
        ),
        "/ws" => format!(
            "<script>const ws = new WebSocket(\"{ws}/account/live\");\
             ws.onmessage = (e) => {{ document.title = \"got: \" + e.data; }};\
             ws.onerror = () => {{ document.title = \"refused\"; }};</script>"
        ),
        _ => "<p>nothing here</p>".into(),
    };
    format!("<!doctype html><title></title><h1>Win a prize</h1>{body}")
}

/// Waits (bounded) until the browser's URL satisfies `f`, and returns it.
async fn wait_url(b: &Browser, what: &str, f: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        let url = b.url().await;
        if f(&url) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: the browser stayed at {}", b.url().await);
}

/// Waits (bounded) until the page's title is set, and returns it.
async fn wait_title(b: &Browser, what: &str) -> String {
    let v = b
        .wait_for_js(what, "return document.title ? document.title : null")
        .await;
    v.as_str().unwrap().to_owned()
}

/// Signs in through the demo's form as `user` (ticking "remember me" if asked) from the
/// login page, and waits for the page it returns to.
async fn sign_in_on_this_page(b: &Browser, user: &str, remember: bool) {
    let field = b
        .client
        .find(Locator::Css("input[name=user]"))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field.send_keys(user).await.unwrap();
    if remember {
        b.client
            .find(Locator::Css("input[name=remember]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    b.client
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(b, "signing in", |u| !u.contains("/login")).await;
}

async fn sign_in(b: &Browser, demo: &Demo, user: &str, remember: bool) {
    b.client.goto(&demo.url("/login")).await.unwrap();
    sign_in_on_this_page(b, user, remember).await;
    assert!(b.text().await.contains(user), "{}", b.text().await);
}

/// Whether the browser is signed in: the account page, not a redirect to the login.
async fn signed_in_as(b: &Browser, demo: &Demo) -> Option<String> {
    b.client.goto(&demo.url("/account/")).await.unwrap();
    let url = b.url().await;
    if url.contains("/login") {
        return None;
    }
    let user = b
        .client
        .find(Locator::XPath(
            "//td[text()='X-User']/following-sibling::td",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Some(user)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_signs_in_through_the_form_returns_to_the_page_asked_for_and_never_sees_the_cookie()
{
    let demo = Demo::start().await;
    let profile = tempfile::tempdir().unwrap();
    let b = Browser::start(profile.path()).await;

    // A protected page sends the browser to the login, which brings it back there.
    b.client
        .goto(&demo.url("/account/profile?tab=keys"))
        .await
        .unwrap();
    let url = b.url().await;
    assert_eq!(
        url,
        demo.url("/login?return_to=%2Faccount%2Fprofile%3Ftab%3Dkeys")
    );
    sign_in_on_this_page(&b, "carol", false).await;
    assert_eq!(b.url().await, demo.url("/account/profile?tab=keys"));
    assert_eq!(signed_in_as(&b, &demo).await.as_deref(), Some("carol"));

    // The account page's own WebSocket gets through, with the session.
    let live = b
        .wait_for_js(
            "the account page's WebSocket",
            "const t = document.getElementById('live').textContent; return t === 'connecting…' ? null : t;",
        )
        .await;
    assert_eq!(live, "connected as carol");

    // The cookie is HttpOnly: the browser holds it, the page's scripts cannot read it.
    let cookies = b.client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "connect.sid")
        .expect("the browser holds the session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert!(session.expires().is_none(), "a browser-session cookie");
    let seen = b
        .client
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert!(!seen.as_str().unwrap().contains("connect.sid"), "{seen}");

    // The README's picture of the account page.
    let png = b.client.screenshot().await.unwrap();
    let path = std::env::var("SESSIONGATE_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/account.png", env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{path}: {e}"));

    // Logging out (the gate's own POST /logout, from the page's form) ends the session.
    b.client
        .find(Locator::XPath("//button[text()='Sign out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&b, "signing out", |u| u == demo.url("/")).await;
    assert!(
        b.text().await.contains("Not signed in"),
        "{}",
        b.text().await
    );
    assert_eq!(signed_in_as(&b, &demo).await, None);
    assert_eq!(demo.statuses("POST", "/logout", 1), [303]);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attacker_pages_on_another_port_and_on_another_host_change_nothing() {
    let demo = Demo::start().await;
    let same_site = Attacker::start("127.0.0.1", &demo).await;
    let cross_site = Attacker::start("127.0.0.2", &demo).await;
    let profile = tempfile::tempdir().unwrap();
    let b = Browser::start(profile.path()).await;
    sign_in(&b, &demo, "dana", false).await;

    for (attacker, answer) in [
        // SameSite=Lax sends the cookie from another port of the same host: the gate refuses.
        (&same_site, "cross_origin"),
        // From another site the browser keeps the Lax cookie off: no session to use.
        (&cross_site, "unauthenticated"),
    ] {
        let what = |page: &str| format!("{}{page}", attacker.origin);
        b.client.goto(&attacker.url("/form")).await.unwrap();
        wait_url(&b, &what("/form"), |u| u == demo.url("/account/settings")).await;
        let text = b.text().await;
        assert!(text.contains(answer), "{}: {text}", what("/form"));
        assert_eq!(signed_in_as(&b, &demo).await.as_deref(), Some("dana"));

        b.client.goto(&attacker.url("/fetch")).await.unwrap();
        let title = wait_title(&b, &what("/fetch")).await;
        // No CORS headers: the page cannot even read the answer.
        assert_eq!(title, "failed", "{}", what("/fetch"));
        assert_eq!(signed_in_as(&b, &demo).await.as_deref(), Some("dana"));

        b.client.goto(&attacker.url("/ws")).await.unwrap();
        let title = wait_title(&b, &what("/ws")).await;
        assert_eq!(title, "refused", "{}", what("/ws"));
    }
    assert_eq!(signed_in_as(&b, &demo).await.as_deref(), Some("dana"));

    // What reached the gate: the same-site form and fetch refused by the gate's check (403),
    // the cross-site ones without the cookie (401); the same-site WebSocket refused (403),
    // the cross-site one sent to the login (302), while the account page's own got through.
    assert_eq!(
        demo.statuses("POST", "/account/settings", 4),
        [403, 403, 401, 401]
    );
    let live = demo.statuses("GET", "/account/live", 3);
    assert_eq!(live.iter().filter(|s| **s == 403).count(), 1, "{live:?}");
    assert_eq!(live.iter().filter(|s| **s == 302).count(), 1, "{live:?}");
    assert!(live.contains(&101), "{live:?}");

    // The very request the attackers forged, from the app's own page: it goes through.
    b.client
        .find(Locator::XPath("//button[text()='Sign out everywhere']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(&b, "signing out everywhere", |u| u == demo.url("/")).await;
    assert_eq!(signed_in_as(&b, &demo).await, None);
    assert_eq!(
        demo.statuses("POST", "/account/settings", 5),
        [403, 403, 401, 401, 303]
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remember_me_survives_a_browser_restart_and_a_plain_sign_in_does_not() {
    let demo = Demo::start().await;
    for (remember, survives) in [(true, true), (false, false)] {
        let profile = tempfile::tempdir().unwrap();
        let b = Browser::start(profile.path()).await;
        sign_in(&b, &demo, "erin", remember).await;
        let cookies = b.client.get_all_cookies().await.unwrap();
        let session = cookies.iter().find(|c| c.name() == "connect.sid").unwrap();
        assert_eq!(session.expires().is_some(), remember, "{session}");
        b.close().await;

        // The same profile: the same browser, started again.
        let b = Browser::start(profile.path()).await;
        let after = signed_in_as(&b, &demo).await;
        assert_eq!(
            after.as_deref(),
            survives.then_some("erin"),
            "remember me: {remember}"
        );
        b.close().await;
    }
}
