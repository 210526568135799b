//! Wire compatibility with the real express-session + connect-redis stack, in a mixed fleet:
//! an express 5 app (`tests/interop/express/app.js`, `rolling: true`, `resave: false`,
//! `saveUninitialized: false`, a secret array, a custom cookie name and key prefix) and a
//! Python backend behind the gate, all on one Redis.
//!
//! Sessions made on either side work on the other, both roll the same TTL and cookie without
//! resetting each other's cookie settings, rotated secrets are shared, and logout on either
//! side ends the session for both.
//!
//! Longer than other modules on purpose: it is one capability (the wire format), and each
//! test sets up the same mixed fleet ([`Stack`]) and walks one cookie setting or lifecycle
//! step through both sides; split across files, the fleet's set-up would be what repeats.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::harness::*;
use crate::interop_harness::*;

/// The settings a mixed fleet shares, handed to each side in its own terms: `proxy.toml` keys
/// for the gate, express-session and connect-redis options for the app.
#[derive(Clone)]
struct Shared {
    cookie_name: &'static str,
    prefix: &'static str,
    secrets: Vec<&'static str>,
    max_age_ms: Option<u64>,
}

impl Shared {
    /// A ten-minute cookie, one secret.
    fn new(cookie_name: &'static str, prefix: &'static str) -> Self {
        Shared {
            cookie_name,
            prefix,
            secrets: vec![SECRET],
            max_age_ms: Some(600_000),
        }
    }

    /// express-session `name`, `secret`, `cookie.maxAge`; connect-redis `prefix`.
    fn express(&self, redis: &Redis) -> ExpressBuilder {
        Express::builder(redis)
            .secrets(&self.secrets)
            .cookie_name(self.cookie_name)
            .prefix(self.prefix)
            .max_age_ms(self.max_age_ms)
    }

    /// `session.cookie_name`, `session.secrets`, `session.prefix`, `session.cookie.max_age`.
    fn gate(&self, redis: &Redis) -> GateBuilder {
        let mut g = GateBuilder::new()
            .redis(redis)
            .secrets(&self.secrets)
            .session(&format!("cookie_name = {:?}", self.cookie_name))
            .session(&format!("prefix = {:?}", self.prefix))
            .session(r#"logout_path = "/signout""#)
            .identity(r#""X-Theme" = "/theme""#);
        if let Some(ms) = self.max_age_ms {
            g = g.cookie(&format!(r#"max_age = "{ms}ms""#));
        }
        g
    }

    fn key(&self, sid: &str) -> String {
        format!("{}{sid}", self.prefix)
    }

    /// The session id in a client's cookie, signed with any of the secrets.
    fn sid(&self, c: &Client) -> String {
        let pair = c.cookie.as_deref().expect("a session cookie");
        self.secrets
            .iter()
            .find_map(|s| express_unsign(s, pair))
            .unwrap_or_else(|| panic!("not signed with the shared secrets: {pair}"))
    }
}

/// The mixed fleet behind one gate:
/// - `/login` (public) → express: express-session's own login (`regenerate`, then fields);
/// - `/issue` (public, `issue_sessions`) → an echo upstream: a login at the edge;
/// - `/whoami`, `/write` (required) and `/logout` (optional) → express;
/// - `/api/` (required) → the Python backend;
/// - `POST /signout`: the gate's own logout.
fn fleet_routes(
    g: GateBuilder,
    express: SocketAddr,
    python: SocketAddr,
    issuer: &Upstream,
) -> GateBuilder {
    g.upstream_addrs("express", &[express])
        .upstream_addrs("python", &[python])
        .upstream("issuer", &[issuer])
        .route("path = \"/login\"\nupstream = \"express\"\nauth = \"public\"")
        .route("path = \"/issue\"\nupstream = \"issuer\"\nauth = \"public\"\nissue_sessions = true")
        .route("path = \"/whoami\"\nupstream = \"express\"\nauth = \"required\"")
        .route("path = \"/write\"\nupstream = \"express\"\nauth = \"required\"")
        .route("path = \"/logout\"\nupstream = \"express\"\nauth = \"optional\"")
        .route("path = \"/api/\"\nupstream = \"python\"\nauth = \"required\"")
}

/// One gate in front of one express app, one Python backend and the issuing echo upstream.
/// The gate is declared first, so it stops before its upstreams do.
struct Stack {
    gate: Gate,
    express: Express,
    _python: Python,
    _issuer: Upstream,
}

impl Stack {
    async fn start(redis: &Redis, shared: &Shared) -> Self {
        Self::start_with(shared.express(redis), shared.gate(redis)).await
    }

    async fn start_with(express: ExpressBuilder, gate: GateBuilder) -> Self {
        let express = express.start();
        let python = Python::start("python");
        let issuer = Upstream::start("issuer").await;
        let gate = fleet_routes(gate, express.addr, python.addr, &issuer).start();
        Stack {
            gate,
            express,
            _python: python,
            _issuer: issuer,
        }
    }
}

/// Logs in at express (`req.session.regenerate`, then `user` and `roles`).
async fn express_login(c: &mut Client, user: &str, roles: &str) -> Response {
    let r = c.post(&format!("/login?user={user}&roles={roles}")).await;
    assert_eq!(r.status, 200, "express login: {}", r.body);
    assert_eq!(r.json()["backend"], "express", "{}", r.body);
    assert!(c.cookie.is_some(), "express set the session cookie");
    r
}

/// Logs in at the edge: the echo upstream answers `X-Session-Issue` and the gate issues.
async fn gate_login(c: &mut Client, user: &str, roles: &[&str]) -> Response {
    let issue = json!({"user": user, "roles": roles}).to_string();
    let q = percent_encoding::utf8_percent_encode(&issue, percent_encoding::NON_ALPHANUMERIC);
    let r = c.post(&format!("/issue?issue={q}")).await;
    assert_eq!(r.status, 200, "gate login: {}", r.body);
    assert_eq!(r.json()["upstream"], "issuer");
    assert!(c.cookie.is_some(), "the gate set the session cookie");
    r
}

fn record(redis: &Redis, key: &str) -> Value {
    let raw = redis
        .get(key)
        .unwrap_or_else(|| panic!("no session at {key}"));
    serde_json::from_str(&raw).unwrap()
}

/// The stored `cookie` object without `expires`, which moves with every save.
/// A record's cookie settings, without `expires`, and with `originalMaxAge` in whole
/// milliseconds rounded up to the second, as both sides read it: express-session computes it
/// as `expires - Date.now()`, so a ten-minute cookie is stored as 599999 whenever the clock
/// ticks between its two reads.
fn cookie_settings(record: &Value) -> Value {
    let mut c = record["cookie"].clone();
    let c_obj = c.as_object_mut().expect("a cookie object");
    c_obj.remove("expires");
    if let Some(ms) = c_obj.get("originalMaxAge").and_then(Value::as_u64) {
        c_obj.insert("originalMaxAge".into(), json!(ms.div_ceil(1000) * 1000));
    }
    c
}

fn assert_ttl(redis: &Redis, key: &str, secs: i64) {
    let ttl = redis.ttl(key);
    assert!(
        (secs - 5..=secs).contains(&ttl),
        "TTL of {key} is {ttl}, expected about {secs}"
    );
}

/// An attribute of a `Set-Cookie` (case-insensitive name); `Some("")` for a flag.
fn attr<'a>(set_cookie: &'a str, name: &str) -> Option<&'a str> {
    set_cookie.split(';').skip(1).map(str::trim).find_map(|a| {
        let (k, v) = a.split_once('=').unwrap_or((a, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// Asserts that `Expires` is about `secs` from now.
fn assert_expires_in(set_cookie: &str, secs: i64) {
    let e = attr(set_cookie, "Expires").unwrap_or_else(|| panic!("no Expires: {set_cookie}"));
    let at = httpdate::parse_http_date(e).unwrap();
    let left = match at.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    assert!(
        (secs - 5..=secs).contains(&left),
        "Expires is {left}s away, expected about {secs}s: {set_cookie}"
    );
}

/// The one `Set-Cookie` for the session cookie: never one from each side.
fn only_session_cookie<'a>(r: &'a Response, name: &str) -> &'a str {
    let all: Vec<&str> = r
        .all("set-cookie")
        .into_iter()
        .filter(|c| c.starts_with(&format!("{name}=")))
        .collect();
    assert_eq!(all.len(), 1, "one session Set-Cookie: {all:?}");
    all[0]
}

/// express-session writes `Expires` only; the gate writes `Max-Age` too. Which side set it.
fn set_by_express(set_cookie: &str) -> bool {
    attr(set_cookie, "Max-Age").is_none()
}

// ---------------------------------------------------------------------------------------
// 2. Both directions

#[tokio::test(flavor = "multi_thread")]
async fn an_express_session_is_accepted_by_the_gate_and_becomes_identity() {
    let redis = Redis::start();
    let shared = Shared::new("fleet.sid", "fleet-a:");
    let s = Stack::start(&redis, &shared).await;
    let mut c = s.gate.client();
    assert_eq!(c.get("/api/").await.status, 401, "no session yet");

    let r = express_login(&mut c, "alice", "admin,ops").await;
    let set = r.set_cookie(shared.cookie_name).unwrap();
    assert!(
        set_by_express(set),
        "express's own cookie reached the client: {set}"
    );
    let sid = shared.sid(&c);
    let stored = record(&redis, &shared.key(&sid));
    assert_eq!(stored["user"], "alice");
    assert_eq!(stored["roles"], json!(["admin", "ops"]));
    assert!(
        redis.keys("sess:*").is_empty(),
        "the prefix is the configured one"
    );

    // To the Python backend: the express session's fields are the identity, whatever the
    // client claims.
    let r = c.send("GET", "/api/me", &[("x-user", "mallory")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["backend"], "python");
    assert_eq!(body["headers"]["x-user"], "alice");
    assert_eq!(body["headers"]["x-user-roles"], "admin,ops");

    // To express through the gate: its own session, and the gate's identity headers.
    let r = c.get("/whoami").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["user"], "alice");
    assert_eq!(body["sessionId"], sid.as_str());
    assert_eq!(body["headers"]["x-user"], "alice");

    // The cookie as a browser sends it, among others.
    let pair = c.cookie.clone().unwrap();
    let header = format!("theme=dark; {pair}; other=1");
    let r = raw(s.gate.addr, "GET", "/api/", &[("cookie", &header)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-user"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gate_session_is_read_by_express_and_its_writes_reach_the_gate() {
    let redis = Redis::start();
    let shared = Shared::new("fleet.sid", "fleet-b:");
    let s = Stack::start(&redis, &shared).await;
    let mut c = s.gate.client();
    gate_login(&mut c, "bob", &["reader"]).await;
    let sid = shared.sid(&c);
    let key = shared.key(&sid);
    assert_eq!(record(&redis, &key)["user"], "bob");

    // express reads the gate's session: through the gate, and directly.
    let r = c.get("/whoami").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["user"], "bob", "req.session.user: {body}");
    assert_eq!(body["roles"], json!(["reader"]));
    assert_eq!(body["sessionId"], sid.as_str());
    assert_eq!(body["session"]["cookie"]["originalMaxAge"], 600_000);
    let mut direct = s.express.client_like(&c);
    let body = direct.get("/whoami").await.json();
    assert_eq!(body["user"], "bob");
    assert!(
        body["headers"]["x-user"].is_null(),
        "no gate, no identity header"
    );

    // express writes; the next request through the gate sees it.
    let r = c.post("/write?key=theme&value=dark").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = record(&redis, &key);
    assert_eq!(stored["theme"], "dark");
    assert_eq!(stored["user"], "bob");
    let r = c.get("/api/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-user"], "bob");
    assert_eq!(r.json()["headers"]["x-theme"], "dark");

    // A write made at express directly, too.
    let r = direct.post("/write?key=theme&value=light").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        direct.cookie, c.cookie,
        "express kept the gate's session id"
    );
    let r = c.get("/api/").await;
    assert_eq!(r.json()["headers"]["x-theme"], "light");
    assert_eq!(r.json()["headers"]["x-user"], "bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_at_express_ends_the_session_for_both() {
    let redis = Redis::start();
    let shared = Shared::new("fleet.sid", "fleet-c:");
    let s = Stack::start(&redis, &shared).await;

    // A gate session, logged out by express through the gate.
    let mut c = s.gate.client();
    gate_login(&mut c, "carol", &[]).await;
    let old = c.cookie.clone().unwrap();
    let sid = shared.sid(&c);
    assert_eq!(c.get("/api/").await.status, 200);
    let r = c.post("/logout").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["backend"], "express");
    let cleared = only_session_cookie(&r, shared.cookie_name);
    assert!(
        cleared.starts_with(&format!("{}=;", shared.cookie_name)),
        "express's clearCookie, and no rolled cookie from the gate: {cleared}"
    );
    assert!(c.cookie.is_none());
    assert!(redis.get(&shared.key(&sid)).is_none(), "destroyed in Redis");
    for path in ["/api/", "/whoami"] {
        let r = raw(s.gate.addr, "GET", path, &[("cookie", &old)]).await;
        assert_eq!(r.status, 401, "the gate refuses the old cookie on {path}");
    }
    let body = raw(s.express.addr, "GET", "/whoami", &[("cookie", &old)])
        .await
        .json();
    assert!(body["user"].is_null(), "express has no user either: {body}");
    assert_ne!(body["sessionId"], sid.as_str());

    // An express session, logged out at express directly.
    let mut e = s.express.client();
    express_login(&mut e, "cathy", "x").await;
    let old = e.cookie.clone().unwrap();
    let key = shared.key(&shared.sid(&e));
    assert_eq!(
        raw(s.gate.addr, "GET", "/api/", &[("cookie", &old)])
            .await
            .status,
        200
    );
    assert_eq!(e.post("/logout").await.status, 200);
    assert!(redis.get(&key).is_none());
    assert_eq!(
        raw(s.gate.addr, "GET", "/api/", &[("cookie", &old)])
            .await
            .status,
        401
    );
    assert!(
        redis.keys(&format!("{}*", shared.prefix)).is_empty(),
        "nothing recreated the sessions (saveUninitialized: false)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_at_the_gate_ends_the_session_for_both() {
    let redis = Redis::start();
    let shared = Shared::new("fleet.sid", "fleet-d:");
    let s = Stack::start(&redis, &shared).await;

    // An express session, logged out by the gate's own logout.
    let mut c = s.gate.client();
    express_login(&mut c, "dave", "").await;
    let old = c.cookie.clone().unwrap();
    let sid = shared.sid(&c);
    assert_eq!(c.get("/whoami").await.json()["user"], "dave");
    let r = c
        .send("POST", "/signout", &[("origin", "http://localhost")])
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        attr(only_session_cookie(&r, shared.cookie_name), "Max-Age"),
        Some("0")
    );
    assert!(c.cookie.is_none());
    assert!(redis.get(&shared.key(&sid)).is_none(), "destroyed in Redis");
    let body = raw(s.express.addr, "GET", "/whoami", &[("cookie", &old)])
        .await
        .json();
    assert!(body["user"].is_null(), "express has no user: {body}");
    assert_eq!(
        raw(s.gate.addr, "GET", "/api/", &[("cookie", &old)])
            .await
            .status,
        401
    );
    assert_eq!(
        raw(s.gate.addr, "GET", "/whoami", &[("cookie", &old)])
            .await
            .status,
        401
    );

    // A gate session after express wrote to it, logged out at the edge (X-Session-Destroy
    // is the other way; the gate's own path is enough here).
    let mut c = s.gate.client();
    gate_login(&mut c, "dora", &[]).await;
    assert_eq!(c.post("/write?key=theme&value=dark").await.status, 200);
    let old = c.cookie.clone().unwrap();
    let r = c.post("/signout").await;
    assert_eq!(r.status, 204);
    let body = raw(s.express.addr, "GET", "/whoami", &[("cookie", &old)])
        .await
        .json();
    assert!(body["user"].is_null(), "{body}");
    assert!(redis.keys(&format!("{}*", shared.prefix)).is_empty());
}

// ---------------------------------------------------------------------------------------
// 3. Rolling and TTL

#[tokio::test(flavor = "multi_thread")]
async fn rolling_an_express_session_keeps_its_ttl_and_cookie_settings() {
    let redis = Redis::start();
    let shared = Shared::new("roll.sid", "roll-a:");
    // Different SameSite on each side on purpose: each session keeps the one it was made with.
    let s = Stack::start_with(
        shared.express(&redis).same_site("strict"),
        shared.gate(&redis),
    )
    .await;
    let mut c = s.gate.client();
    let r = express_login(&mut c, "erin", "a").await;
    let pair = c.cookie.clone().unwrap();
    let set = r.set_cookie(shared.cookie_name).unwrap();
    assert_expires_in(set, 600);
    assert_eq!(attr(set, "SameSite"), Some("Strict"));
    let key = shared.key(&shared.sid(&c));
    let before_raw = redis.get(&key).unwrap();
    let before = record(&redis, &key);
    assert_eq!(
        cookie_settings(&before),
        json!({"originalMaxAge": 600_000, "secure": false, "httpOnly": true, "path": "/", "sameSite": "strict"})
    );
    assert_ttl(&redis, &key, 600);

    // Through the gate to the Python backend: the gate rolls the TTL and the cookie.
    redis.expire(&key, 30);
    let r = c.get("/api/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-user"], "erin");
    assert_ttl(&redis, &key, 600);
    // The first time a gate sees a session it stamps when (`sessiongate.seen`, what log out
    // everywhere compares against), appending the member and keeping every other byte.
    let stamped = redis.get(&key).unwrap();
    let seen = &stamped[before_raw.len() - 1..];
    assert!(
        stamped.starts_with(&before_raw[..before_raw.len() - 1])
            && seen.starts_with(r#","sessiongate":{"seen":"#),
        "{stamped}"
    );
    let before_raw = stamped;
    redis.expire(&key, 30);
    assert_eq!(c.get("/api/").await.status, 200);
    assert_eq!(
        redis.get(&key).unwrap(),
        before_raw,
        "a touch does not rewrite the record"
    );
    let set = only_session_cookie(&r, shared.cookie_name);
    assert_eq!(attr(set, "Max-Age"), Some("600"), "{set}");
    assert_expires_in(set, 600);
    assert_eq!(attr(set, "Path"), Some("/"));
    assert!(attr(set, "HttpOnly").is_some(), "{set}");
    assert!(attr(set, "Secure").is_none(), "{set}");
    assert_eq!(
        attr(set, "SameSite"),
        Some("Strict"),
        "express's SameSite, not the gate's Lax: {set}"
    );
    assert_eq!(c.cookie.as_deref(), Some(pair.as_str()));

    // Through the gate to express: express rolls (EXPIRE, no rewrite) and its cookie is the
    // only one.
    redis.expire(&key, 30);
    let r = c.get("/whoami").await;
    assert_eq!(r.json()["user"], "erin");
    assert_ttl(&redis, &key, 600);
    assert_eq!(redis.get(&key).unwrap(), before_raw);
    let set = only_session_cookie(&r, shared.cookie_name);
    assert!(set_by_express(set), "{set}");
    assert_expires_in(set, 600);
    assert_eq!(attr(set, "SameSite"), Some("Strict"));

    // express on its own.
    let mut direct = s.express.client_like(&c);
    redis.expire(&key, 30);
    assert_eq!(direct.get("/whoami").await.json()["user"], "erin");
    assert_ttl(&redis, &key, 600);

    // express writes: the record is saved again with the same cookie settings.
    assert_eq!(c.post("/write?key=theme&value=dark").await.status, 200);
    let after = record(&redis, &key);
    assert_eq!(after["theme"], "dark");
    assert_eq!(cookie_settings(&after), cookie_settings(&before));
    assert!(
        after["cookie"]["expires"].as_str() > before["cookie"]["expires"].as_str(),
        "express saved a fresh expiry"
    );
    assert_ttl(&redis, &key, 600);

    // ...and the gate reads and rolls it as before.
    redis.expire(&key, 30);
    let r = c.get("/api/").await;
    assert_eq!(r.json()["headers"]["x-user"], "erin");
    assert_eq!(r.json()["headers"]["x-theme"], "dark");
    assert_ttl(&redis, &key, 600);
    let set = only_session_cookie(&r, shared.cookie_name);
    assert_eq!(attr(set, "Max-Age"), Some("600"));
    assert_eq!(attr(set, "SameSite"), Some("Strict"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_a_gate_session_keeps_its_ttl_and_cookie_settings() {
    let redis = Redis::start();
    let shared = Shared::new("roll.sid", "roll-b:");
    let s = Stack::start_with(
        shared.express(&redis).same_site("strict"),
        shared.gate(&redis),
    )
    .await;
    let mut c = s.gate.client();
    let r = gate_login(&mut c, "frank", &["ops"]).await;
    let pair = c.cookie.clone().unwrap();
    let set = r.set_cookie(shared.cookie_name).unwrap();
    assert_eq!(attr(set, "Max-Age"), Some("600"));
    assert_expires_in(set, 600);
    assert_eq!(attr(set, "SameSite"), Some("Lax"));
    let key = shared.key(&shared.sid(&c));
    let before_raw = redis.get(&key).unwrap();
    let before = record(&redis, &key);
    assert_eq!(
        cookie_settings(&before),
        json!({"originalMaxAge": 600_000, "httpOnly": true, "path": "/", "sameSite": "lax"})
    );
    assert_ttl(&redis, &key, 600);

    // express reads it through the gate, rolls it, and keeps the gate's cookie settings.
    redis.expire(&key, 30);
    let r = c.get("/whoami").await;
    let body = r.json();
    assert_eq!(body["user"], "frank");
    assert_eq!(body["session"]["cookie"]["sameSite"], "lax");
    assert_ttl(&redis, &key, 600);
    assert_eq!(
        redis.get(&key).unwrap(),
        before_raw,
        "resave: false: no rewrite"
    );
    let set = only_session_cookie(&r, shared.cookie_name);
    assert!(set_by_express(set), "{set}");
    assert_expires_in(set, 600);
    assert_eq!(attr(set, "Path"), Some("/"));
    assert!(attr(set, "HttpOnly").is_some());
    assert_eq!(
        attr(set, "SameSite"),
        Some("Lax"),
        "the gate's SameSite, not express's Strict: {set}"
    );
    assert_eq!(c.cookie.as_deref(), Some(pair.as_str()));

    // express on its own touches with the session's own max-age.
    let mut direct = s.express.client_like(&c);
    redis.expire(&key, 30);
    assert_eq!(direct.get("/whoami").await.json()["user"], "frank");
    assert_ttl(&redis, &key, 600);

    // express writes: the gate's cookie settings and fields survive the save.
    assert_eq!(c.post("/write?key=theme&value=dark").await.status, 200);
    let after = record(&redis, &key);
    assert_eq!(after["theme"], "dark");
    assert_eq!(cookie_settings(&after), cookie_settings(&before));
    for (k, v) in before.as_object().unwrap() {
        if k != "cookie" {
            assert_eq!(&after[k], v, "field {k} survives express's save");
        }
    }
    assert_ttl(&redis, &key, 600);

    // The gate still injects identity and re-sends its own cookie settings.
    redis.expire(&key, 30);
    let r = c.get("/api/").await;
    assert_eq!(r.json()["headers"]["x-user"], "frank");
    assert_eq!(r.json()["headers"]["x-user-roles"], "ops");
    assert_eq!(r.json()["headers"]["x-theme"], "dark");
    assert_ttl(&redis, &key, 600);
    let set = only_session_cookie(&r, shared.cookie_name);
    assert_eq!(attr(set, "Max-Age"), Some("600"));
    assert_expires_in(set, 600);
    assert_eq!(attr(set, "SameSite"), Some("Lax"));
    assert!(attr(set, "HttpOnly").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_side_keeps_the_max_age_a_session_was_made_with() {
    let redis = Redis::start();
    // express makes two-hour cookies, the gate ten-minute ones.
    let shared = Shared::new("age.sid", "age:");
    let s = Stack::start_with(
        shared.express(&redis).max_age_ms(Some(7_200_000)),
        shared.gate(&redis),
    )
    .await;

    let mut e = s.gate.client();
    express_login(&mut e, "gail", "").await;
    let key = shared.key(&shared.sid(&e));
    assert_ttl(&redis, &key, 7200);
    redis.expire(&key, 30);
    let r = e.get("/api/").await;
    assert_eq!(r.status, 200);
    assert_ttl(&redis, &key, 7200);
    let set = only_session_cookie(&r, shared.cookie_name);
    assert_eq!(attr(set, "Max-Age"), Some("7200"), "{set}");
    assert_expires_in(set, 7200);

    let mut g = s.gate.client();
    gate_login(&mut g, "gus", &[]).await;
    let key = shared.key(&shared.sid(&g));
    assert_ttl(&redis, &key, 600);
    redis.expire(&key, 30);
    let r = g.get("/whoami").await;
    assert_eq!(r.json()["user"], "gus");
    assert_ttl(&redis, &key, 600);
    let set = only_session_cookie(&r, shared.cookie_name);
    assert!(set_by_express(set));
    assert_expires_in(set, 600);
    // express alone, too.
    redis.expire(&key, 30);
    let r = s.express.client_like(&g).get("/whoami").await;
    assert_ttl(&redis, &key, 600);
    assert_expires_in(r.set_cookie(shared.cookie_name).unwrap(), 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_session_cookies_use_the_store_ttl_on_both_sides() {
    let redis = Redis::start();
    // No cookie max-age anywhere: connect-redis `ttl` and the gate's default are both a day.
    let shared = Shared {
        max_age_ms: None,
        ..Shared::new("browser.sid", "browser:")
    };
    let s = Stack::start(&redis, &shared).await;

    let mut e = s.gate.client();
    let r = express_login(&mut e, "hal", "").await;
    assert!(attr(r.set_cookie(shared.cookie_name).unwrap(), "Expires").is_none());
    let key = shared.key(&shared.sid(&e));
    let stored = record(&redis, &key);
    assert!(stored["cookie"]["originalMaxAge"].is_null());
    assert!(stored["cookie"]["expires"].is_null());
    assert_ttl(&redis, &key, 86_400);
    redis.expire(&key, 30);
    let r = e.get("/api/").await;
    assert_eq!(r.status, 200);
    assert_ttl(&redis, &key, 86_400);
    let set = only_session_cookie(&r, shared.cookie_name);
    assert!(
        attr(set, "Max-Age").is_none() && attr(set, "Expires").is_none(),
        "{set}"
    );

    let mut g = s.gate.client();
    gate_login(&mut g, "hugo", &[]).await;
    let key = shared.key(&shared.sid(&g));
    assert!(record(&redis, &key)["cookie"]["originalMaxAge"].is_null());
    redis.expire(&key, 30);
    let r = s.express.client_like(&g).get("/whoami").await;
    assert_eq!(r.json()["user"], "hugo");
    assert_ttl(&redis, &key, 86_400);
    let set = r.set_cookie(shared.cookie_name).unwrap();
    assert!(attr(set, "Expires").is_none(), "{set}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_adds_no_same_site_to_an_express_cookie_that_has_none() {
    let redis = Redis::start();
    // express without cookie.sameSite (its default) records no sameSite, and sends none.
    let shared = Shared::new("plain.sid", "plain:");
    let s = Stack::start(&redis, &shared).await;
    let mut c = s.gate.client();
    let r = express_login(&mut c, "ida", "").await;
    let set = r.set_cookie(shared.cookie_name).unwrap();
    assert!(attr(set, "SameSite").is_none(), "{set}");
    let key = shared.key(&shared.sid(&c));
    assert!(record(&redis, &key)["cookie"].get("sameSite").is_none());

    let r = c.get("/api/").await;
    assert_eq!(r.status, 200);
    let set = only_session_cookie(&r, shared.cookie_name);
    assert!(
        attr(set, "SameSite").is_none(),
        "the gate re-sends express's cookie as express would, with no SameSite: {set}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Secret rotation

#[tokio::test(flavor = "multi_thread")]
async fn after_a_rotation_both_sides_accept_each_others_old_cookies() {
    const NEW: &str = "interop secret, new";
    const OLD: &str = "interop secret, old";
    let redis = Redis::start();
    let before = Shared {
        secrets: vec![OLD],
        ..Shared::new("rot.sid", "rot:")
    };
    let after = Shared {
        secrets: vec![NEW, OLD],
        ..before.clone()
    };

    // Before the rotation both sides sign with OLD.
    let old_fleet = Stack::start(&redis, &before).await;
    let mut by_express = old_fleet.gate.client();
    express_login(&mut by_express, "jane", "a").await;
    let mut by_gate = old_fleet.gate.client();
    gate_login(&mut by_gate, "joe", &["b"]).await;
    let express_old = by_express.cookie.clone().unwrap();
    let gate_old = by_gate.cookie.clone().unwrap();
    let (jane, joe) = (before.sid(&by_express), before.sid(&by_gate));
    assert!(express_unsign(OLD, &express_old).is_some());
    assert!(express_unsign(OLD, &gate_old).is_some());
    drop(old_fleet);

    // After it both sides have [NEW, OLD].
    let s = Stack::start(&redis, &after).await;

    // express's old cookie at the gate: accepted, and re-signed with NEW.
    let mut c = s.gate.client();
    c.cookie = Some(express_old.clone());
    let r = c.get("/api/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-user"], "jane");
    let pair = c.cookie.clone().unwrap();
    assert_ne!(pair, express_old);
    assert_eq!(express_unsign(NEW, &pair), Some(jane.clone()));

    // The gate's old cookie at express: accepted, and re-signed with NEW.
    let mut d = s.express.client();
    d.cookie = Some(gate_old.clone());
    let r = d.get("/whoami").await;
    assert_eq!(r.json()["user"], "joe", "{}", r.body);
    let pair = d.cookie.clone().unwrap();
    assert_eq!(express_unsign(NEW, &pair), Some(joe.clone()));
    // ...and each side's own old cookie still works on the other through the gate.
    let r = raw(s.gate.addr, "GET", "/whoami", &[("cookie", &gate_old)]).await;
    assert_eq!(r.json()["user"], "joe");

    // New logins are signed with NEW on both sides and accepted by the other.
    let mut e = s.gate.client();
    express_login(&mut e, "kim", "").await;
    let pair = e.cookie.clone().unwrap();
    assert!(express_unsign(NEW, &pair).is_some() && express_unsign(OLD, &pair).is_none());
    assert_eq!(e.get("/api/").await.json()["headers"]["x-user"], "kim");
    let mut g = s.gate.client();
    gate_login(&mut g, "ken", &[]).await;
    let pair = g.cookie.clone().unwrap();
    assert!(express_unsign(NEW, &pair).is_some() && express_unsign(OLD, &pair).is_none());
    let r = raw(s.express.addr, "GET", "/whoami", &[("cookie", &pair)]).await;
    assert_eq!(r.json()["user"], "ken");

    // A secret neither side has any more signs nothing.
    let retired = format!(
        "{}={}",
        after.cookie_name,
        express_sign("interop secret, retired", &jane)
    );
    assert_eq!(
        raw(s.gate.addr, "GET", "/api/", &[("cookie", &retired)])
            .await
            .status,
        401
    );
    let r = raw(s.express.addr, "GET", "/whoami", &[("cookie", &retired)]).await;
    assert!(r.json()["user"].is_null(), "{}", r.body);
}

// ---------------------------------------------------------------------------------------
// 5. A mixed fleet

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_fleet_serves_the_same_user_alternately_without_sticky_routing() {
    let redis = Redis::start();
    let shared = Shared::new("mixed.sid", "mixed:");
    let node = shared.express(&redis).backend("node").start();
    let python = Python::start("python");
    let issuer = Upstream::start("issuer").await;
    let gate = shared
        .gate(&redis)
        .upstream_addrs("node-only", &[node.addr])
        .upstream_addrs("fleet", &[node.addr, python.addr])
        .upstream("issuer", &[&issuer])
        .route("path = \"/login\"\nupstream = \"node-only\"\nauth = \"public\"")
        .route("path = \"/issue\"\nupstream = \"issuer\"\nauth = \"public\"\nissue_sessions = true")
        .route("path = \"/whoami\"\nupstream = \"fleet\"\nauth = \"required\"")
        .start();

    for (who, by_express) in [("liz", true), ("lou", false)] {
        let mut c = gate.client();
        if by_express {
            c.post(&format!("/login?user={who}&roles=r")).await;
            assert!(c.cookie.is_some(), "express logged {who} in");
        } else {
            gate_login(&mut c, who, &["r"]).await;
        }
        let pair = c.cookie.clone().unwrap();
        let sid = shared.sid(&c);
        let mut served = vec![];
        for _ in 0..6 {
            let r = c.get("/whoami").await;
            assert_eq!(r.status, 200, "{}", r.body);
            let body = r.json();
            let backend = body["backend"].as_str().unwrap().to_string();
            assert_eq!(body["headers"]["x-user"], who, "{backend} sees {who}");
            assert_eq!(body["headers"]["x-user-roles"], "r");
            let set = only_session_cookie(&r, shared.cookie_name);
            if backend == "node" {
                assert_eq!(body["user"], who, "express's own req.session.user");
                assert_eq!(body["sessionId"], sid.as_str());
                assert!(set_by_express(set), "express rolled: {set}");
            } else {
                assert_eq!(backend, "python");
                assert!(!set_by_express(set), "the gate rolled: {set}");
            }
            served.push(backend);
        }
        assert!(
            served.windows(2).all(|w| w[0] != w[1]),
            "round robin alternates node and python: {served:?}"
        );
        assert_eq!(
            c.cookie.as_deref(),
            Some(pair.as_str()),
            "one session throughout"
        );
    }
}
