//! What an operator sees: one access-log line per request (with its request id, route,
//! status, upstream, durations and auth outcome, never a whole session id), request ids
//! shared by the client, the upstream and the log, request metrics on `/metrics`, and the
//! health probes (readiness follows the store and the drain).
//!
//! Longer than most modules: each test makes a mix of requests and checks every line or
//! counter they produced, field by field.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const TOKEN: &str = "admin-token-0123456789";

/// One request made, and what its access-log line must say.
struct Made {
    id: String,
    status: u16,
    auth: Option<&'static str>,
    route: Option<&'static str>,
}

fn made(
    r: &Response,
    status: u16,
    auth: Option<&'static str>,
    route: Option<&'static str>,
) -> Made {
    assert_eq!(r.status, status, "{}", r.body);
    Made {
        id: r
            .header("x-request-id")
            .expect("every answer has an id")
            .to_string(),
        status,
        auth,
        route,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_has_one_line_per_request_with_its_fields() {
    let mut redis = Redis::start();
    let app = Upstream::start("app").await;
    let down = free_addr();
    let (gate, log) = standard(
        GateBuilder::new().redis(&redis).log(r#"access = "json""#),
        &[&app],
    )
    .upstream_addrs("down", &[down])
    .route("path = \"/down/\"\nupstream = \"down\"\nauth = \"public\"")
    .start_logged();

    let mut c = gate.client();
    let mut all = Vec::new();
    let r = login(&mut c, "alice", &[]).await;
    all.push(made(&r, 200, Some("public"), Some("/login")));
    let sid = sid_of(&c);
    let cookie = c.cookie.clone().unwrap();

    let r = c.get("/account/").await;
    // The upstream got the id the client got back.
    assert_eq!(
        r.upstream_header("x-request-id").as_deref(),
        r.header("x-request-id")
    );
    all.push(made(&r, 200, Some("store"), Some("/account")));
    let r = raw(gate.addr, "GET", "/account/", &[]).await;
    all.push(made(&r, 401, Some("missing"), Some("/account")));
    let r = raw(
        gate.addr,
        "GET",
        "/account/",
        &[("cookie", "connect.sid=s%3Aforged.signature")],
    )
    .await;
    all.push(made(&r, 401, Some("invalid"), Some("/account")));
    let gone = format!(
        "connect.sid={}",
        express_sign(SECRET, "NeverStoredSession0123456789abcd")
    );
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &gone)]).await;
    all.push(made(&r, 401, Some("expired"), Some("/account")));
    let r = raw(gate.addr, "GET", "/down/x", &[]).await;
    all.push(made(&r, 502, Some("public"), Some("/down")));
    let r = raw(gate.addr, "GET", "/a%2fb", &[]).await;
    all.push(made(&r, 400, None, None));
    redis.stop();
    let r = raw(gate.addr, "GET", "/account/", &[("cookie", &cookie)]).await;
    all.push(made(&r, 503, Some("store_error"), Some("/account")));

    let lines = log.wait_json(all.len());
    assert_eq!(
        lines.len(),
        all.len(),
        "one line per request:\n{}",
        log.text()
    );
    let by_id: BTreeMap<String, &Value> = lines
        .iter()
        .map(|l| (l["request_id"].as_str().unwrap().to_string(), l))
        .collect();
    for m in &all {
        let l = by_id
            .get(&m.id)
            .unwrap_or_else(|| panic!("no line for {}:\n{}", m.id, log.text()));
        assert_eq!(l["status"], m.status, "{l}");
        assert_eq!(l["auth"], json!(m.auth), "{l}");
        assert_eq!(l["route"], json!(m.route), "{l}");
        assert_eq!(l["client"], "127.0.0.1", "{l}");
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0, "{l}");
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
        assert!(l["bytes"].as_u64().unwrap() > 0, "{l}");
        for key in [
            "method",
            "path",
            "upstream",
            "upstream_ms",
            "session",
            "request_id",
        ] {
            assert!(l.get(key).is_some(), "{key} in {l}");
        }
    }
    let line = |i: usize| by_id[&all[i].id];
    assert_eq!(line(0)["method"], "POST");
    assert_eq!(line(0)["path"], "/login");
    assert_eq!(line(0)["upstream"], app.addr.to_string());
    assert!(line(0)["upstream_ms"].as_f64().is_some());
    assert_eq!(line(1)["session"], &sid[..6]);
    assert_eq!(line(1)["path"], "/account/");
    assert_eq!(
        line(2)["upstream"],
        Value::Null,
        "a 401 reaches no upstream"
    );
    assert_eq!(line(2)["session"], Value::Null);
    assert_eq!(line(5)["upstream"], down.to_string());
    assert!(line(5)["upstream_ms"].as_f64().is_some());
    assert_eq!(
        line(6)["path"],
        Value::Null,
        "a refused target is not logged"
    );
    assert_eq!(line(7)["session"], Value::Null, "the store never answered");

    // Never a whole session id, a cookie or a signature.
    let text = log.text();
    assert!(!text.contains(&sid), "{text}");
    assert!(!text.contains("s%3A"), "{text}");
    assert!(!text.contains("forged"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_access_lines_read_left_to_right() {
    let app = Upstream::start("app").await;
    let (gate, log) =
        standard(GateBuilder::new().log(r#"access = "text""#), &[&app]).start_logged();
    let r = raw(gate.addr, "GET", "/public/page?token=secret", &[]).await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap();
    let lines = log.wait(1);
    let l = &lines[0];
    assert!(
        l.contains(&format!(
            " {id} 127.0.0.1 \"GET /public/page\" 200 route=/public upstream={} ",
            app.addr
        )),
        "{l}"
    );
    assert!(l.contains(" auth=public session=- bytes="), "{l}");
    assert!(!l.contains("secret"), "queries are never logged: {l}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_replaced_from_clients_and_kept_from_trusted_proxies() {
    let app = Upstream::start("app").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // A client's id is replaced; W3C trace context passes untouched.
    let gate = standard(GateBuilder::new(), &[&app]).start();
    let r = raw(
        gate.addr,
        "GET",
        "/public/x",
        &[
            ("x-request-id", "chosen-by-the-client"),
            ("traceparent", traceparent),
        ],
    )
    .await;
    let id = r.header("x-request-id").unwrap().to_string();
    assert_ne!(id, "chosen-by-the-client");
    assert_eq!(id.len(), 32);
    assert_eq!(r.upstream_header("x-request-id"), Some(id));
    assert_eq!(
        r.upstream_header("traceparent").as_deref(),
        Some(traceparent)
    );
    // The gate's own answers carry one too.
    let r = raw(gate.addr, "GET", "/account/", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-request-id").map(str::len), Some(32));

    // Behind a trusted proxy, its well-formed id is the request's.
    let trusted = standard(
        GateBuilder::new().server(r#"trusted_proxies = ["127.0.0.1/32"]"#),
        &[&app],
    )
    .start();
    let r = raw(
        trusted.addr,
        "GET",
        "/public/x",
        &[("x-request-id", "lb-7f3a-42")],
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("lb-7f3a-42"));
    assert_eq!(
        r.upstream_header("x-request-id").as_deref(),
        Some("lb-7f3a-42")
    );
    let r = raw(
        trusted.addr,
        "GET",
        "/public/x",
        &[("x-request-id", "not well formed")],
    )
    .await;
    assert_ne!(r.header("x-request-id"), Some("not well formed"));
    assert_eq!(r.header("x-request-id").map(str::len), Some(32));
}

/// `/metrics` as `(name, sorted labels) -> value`.
async fn metrics(admin: SocketAddr) -> BTreeMap<String, f64> {
    let r = raw(
        admin,
        "GET",
        "/metrics",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// A series key as the text format writes it (labels sorted by name).
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_requests_made() {
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().admin(TOKEN), &[&app]).start();
    let admin = gate.admin.unwrap();
    let mut alice = gate.client();
    login(&mut alice, "alice", &[]).await;
    let mut laptop = gate.client();
    login(&mut laptop, "alice", &[]).await;
    for _ in 0..3 {
        assert_eq!(alice.get("/account/").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(raw(gate.addr, "GET", "/account/", &[]).await.status, 401);
    }
    assert_eq!(alice.post("/logout").await.status, 204);
    let r = raw(
        admin,
        "DELETE",
        "/users/alice/sessions",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(r.json()["revoked"], 1);

    let requests = |route: &str, status: &str, auth: &str| {
        series(
            "sessiongate_requests_total",
            &[("route", route), ("status", status), ("auth", auth)],
        )
    };
    let expected = [
        (requests("/login", "200", "public"), 2.0),
        (requests("/account", "200", "store"), 3.0),
        (requests("/account", "401", "missing"), 2.0),
        (requests("none", "204", "store"), 1.0),
    ];
    // Requests are counted once answered: wait (bounded) for the last one.
    let m = wait_metrics(admin, |m| expected.iter().all(|(k, v)| m.get(k) == Some(v))).await;
    assert_eq!(m["sessiongate_sessions_issued_total"], 2.0);
    assert_eq!(m["sessiongate_sessions_destroyed_total"], 1.0);
    assert_eq!(m["sessiongate_sessions_revoked_total"], 1.0);
    assert_eq!(
        m[&series(
            "sessiongate_request_duration_seconds_count",
            &[("route", "/account")]
        )],
        5.0
    );
    assert_eq!(
        m[&series(
            "sessiongate_upstream_duration_seconds_count",
            &[("upstream", "app")]
        )],
        5.0,
        "two logins and three account pages reached the upstream"
    );
    assert!(
        m[&series(
            "sessiongate_store_duration_seconds_count",
            &[("op", "load")]
        )] >= 4.0
    );
    assert!(
        m[&series(
            "sessiongate_store_duration_seconds_count",
            &[("op", "write")]
        )] >= 2.0
    );
    assert_eq!(
        m[&series(
            "sessiongate_upstream_server_up",
            &[("upstream", "app"), ("server", &app.addr.to_string())]
        )],
        1.0
    );
    // The cache's metrics are still there (the embedded store has no cache: zero).
    assert_eq!(m["sessiongate_cache_hits_total"], 0.0);
}

async fn wait_metrics(
    admin: SocketAddr,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let mut last = BTreeMap::new();
    for _ in 0..500 {
        last = metrics(admin).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the metrics never showed the requests made: {last:#?}");
}

/// Waits (bounded) until `path` on the admin listener answers `status`, with no token (the
/// listener may not be up yet).
async fn until_probe(admin: SocketAddr, path: &str, status: u16) -> Response {
    let mut last = 0;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(admin).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let r = raw(admin, "GET", path, &[]).await;
        if r.status == status {
            return r;
        }
        last = r.status;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never answered {status} (last {last})");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_store_and_liveness_needs_no_token() {
    let mut redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis).admin(TOKEN), &[&app]).start();
    let admin = gate.admin.unwrap();
    let r = raw(admin, "GET", "/healthz", &[]).await;
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    let r = raw(admin, "GET", "/readyz", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["store"], "ok");
    // The probes open nothing else: the rest still needs the token.
    assert_eq!(raw(admin, "GET", "/metrics", &[]).await.status, 401);

    redis.stop();
    let r = until_probe(admin, "/readyz", 503).await;
    assert_eq!(r.json()["status"], "store_unavailable");
    assert_eq!(raw(admin, "GET", "/healthz", &[]).await.status, 200);
    redis.restart();
    until_probe(admin, "/readyz", 200).await;
}

/// Calls of `cmd` the Redis server has answered.
fn redis_calls(redis: &Redis, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_readiness_probes_costs_the_store_one_ping_a_second() {
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new().redis(&redis).admin(TOKEN), &[&app]).start();
    let admin = gate.admin.unwrap();
    assert_eq!(raw(admin, "GET", "/readyz", &[]).await.status, 200);
    let before = redis_calls(&redis, "ping");
    let began = std::time::Instant::now();
    let probes = (0..100).map(|_| raw(admin, "GET", "/readyz", &[]));
    for r in futures_util::future::join_all(probes).await {
        assert_eq!(r.status, 200);
    }
    for _ in 0..100 {
        assert_eq!(raw(admin, "GET", "/readyz", &[]).await.status, 200);
    }
    let pings = redis_calls(&redis, "ping") - before;
    // One a second at most (one more for a second that began before the flood).
    let seconds = began.elapsed().as_secs() + 2;
    assert!(
        pings <= seconds,
        "{pings} pings for 200 probes in under {seconds} s"
    );
}

/// The gate binary on a config file, stdout and stderr in files; killed on drop.
struct GateProcess {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl GateProcess {
    fn start(config: &Path, dir: &Path) -> Self {
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .arg("--config")
            .arg(config)
            .env("SESSIONGATE_LOG", "info")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("the sessiongate binary runs");
        GateProcess { child, out, err }
    }

    fn read(path: &Path) -> String {
        let mut s = String::new();
        std::fs::File::open(path)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_drain_turns_readiness_off_while_requests_are_still_served() {
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let addr = free_addr();
    let toml = standard(
        GateBuilder::new()
            .admin(TOKEN)
            .server(r#"drain_delay = "60s""#)
            .log(r#"access = "json""#)
            .log(r#"format = "json""#),
        &[&app],
    )
    .toml(addr);
    let admin: SocketAddr = toml
        .split("[admin]\nlisten = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(&config, toml).unwrap();
    let gate = GateProcess::start(&config, dir.path());
    wait_for("the gate", Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).ok()
    });
    let r = until_probe(admin, "/readyz", 200).await;
    assert_eq!(r.json()["draining"], false);

    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(gate.child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let r = until_probe(admin, "/readyz", 503).await;
    assert_eq!(r.json()["status"], "draining");
    // Draining is not stopping: requests are served until the delay is over.
    let r = raw(addr, "GET", "/public/x", &[]).await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(raw(admin, "GET", "/healthz", &[]).await.status, 200);

    // The access log on stdout and the diagnostic log on stderr are both JSON lines.
    let line = wait_for("the access-log line", Duration::from_secs(20), || {
        GateProcess::read(&gate.out)
            .lines()
            .find(|l| l.contains(&id))
            .map(str::to_owned)
    });
    let l: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (l["status"].clone(), l["route"].clone()),
        (json!(200), json!("/public"))
    );
    let err = GateProcess::read(&gate.err);
    let draining = err
        .lines()
        .find(|l| l.contains("draining"))
        .unwrap_or_else(|| panic!("no drain in the log:\n{err}"));
    let d: Value = serde_json::from_str(draining).unwrap_or_else(|e| panic!("{e}: {draining}"));
    assert_eq!(d["level"], "INFO", "{d}");
}
