//! Upgrades and reload, on the real binary: SIGHUP re-reads `proxy.toml` (routes, secrets)
//! without dropping a connection, an invalid or restart-only change is refused while the old
//! config keeps serving, and `--upgrade` takes the listeners from a running gate under load
//! without failing one request.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The gate binary running on a config file, its stderr in a file; killed on drop.
struct GateProcess {
    child: Child,
    log: PathBuf,
}

impl GateProcess {
    fn start(config: &Path, dir: &Path, name: &str, upgrade: bool) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessiongate"));
        cmd.arg("--config").arg(config);
        if upgrade {
            cmd.arg("--upgrade");
        }
        let child = cmd
            .env("SESSIONGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the sessiongate binary runs");
        GateProcess { child, log }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn log(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    /// Waits (bounded) until the log holds `text`.
    fn wait_log(&self, text: &str) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "`{text}` never logged:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until `path` answers `status`.
async fn until_status(addr: SocketAddr, path: &str, status: u16) -> Response {
    let start = Instant::now();
    loop {
        let r = raw(addr, "GET", path, &[]).await;
        if r.status == status {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{path} never answered {status} (last {})",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const NEW_SECRET: &str = "the rotated-in secret, 2026";

#[tokio::test(flavor = "multi_thread")]
async fn sighup_adds_a_route_and_rotates_a_secret_without_a_restart() {
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let addr = free_addr();
    let builder = standard(GateBuilder::new(), &[&app]);
    std::fs::write(&config, builder.toml(addr)).unwrap();
    let gate = GateProcess::start(&config, dir.path(), "gate", false);
    wait_listening(addr);
    gate.wait_log("listening for SIGHUP");

    let mut c = Client::new(addr, "connect.sid");
    login(&mut c, "alice", &[]).await;
    assert_eq!(
        raw(addr, "GET", "/new/x", &[]).await.status,
        200,
        "/ serves it so far"
    );
    let old_cookie = c.cookie.clone().unwrap();

    // A keep-alive connection opened before the reload goes on working after it.
    let rotated = builder
        .secrets(&[NEW_SECRET, SECRET])
        .route("path = \"/new/\"\nupstream = \"app\"\nauth = \"required\"");
    std::fs::write(&config, rotated.toml(addr)).unwrap();
    gate.signal("HUP");
    gate.wait_log("config reloaded");
    until_status(addr, "/new/x", 401).await;

    // The old cookie still verifies (the old secret is second) and is re-signed with the new.
    let r = c.get("/account/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let resigned = r.set_cookie("connect.sid").expect("a re-signed cookie");
    let pair = resigned.split(';').next().unwrap();
    assert_ne!(pair, old_cookie);
    assert!(express_unsign(NEW_SECRET, pair).is_some(), "{pair}");
    // A new login is signed with the new secret.
    let mut d = Client::new(addr, "connect.sid");
    login(&mut d, "bob", &[]).await;
    assert!(express_unsign(NEW_SECRET, d.cookie.as_deref().unwrap()).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_reaches_the_admin_api() {
    const ADMIN: &str = "admin-token-0123456789";
    // On Redis, log out everywhere also sweeps the store by the user field.
    let redis = Redis::start();
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let addr = free_addr();
    let good = standard(
        GateBuilder::new()
            .redis(&redis)
            .admin(ADMIN)
            .session(r#"user_field = "user""#),
        &[&app],
    )
    .toml(addr);
    let admin: SocketAddr = sessiongate::Config::parse(&good, "proxy.toml", &|_| None)
        .unwrap()
        .admin
        .unwrap()
        .listen
        .parse()
        .unwrap();
    std::fs::write(&config, &good).unwrap();
    let gate = GateProcess::start(&config, dir.path(), "gate", false);
    wait_listening(addr);
    gate.wait_log("listening for SIGHUP");

    // A session whose user is `alice` by one field and `carol` by another.
    let mut c = Client::new(addr, "connect.sid");
    let r = c
        .post("/login?issue=%7B%22user%22%3A%22alice%22%2C%22uid%22%3A%22carol%22%7D")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let moved = good.replace(r#"user_field = "user""#, r#"user_field = "uid""#);
    assert_ne!(moved, good);
    std::fs::write(&config, moved).unwrap();
    gate.signal("HUP");
    gate.wait_log("config reloaded");

    // The admin API finds users by the field of the running config.
    let auth = format!("Bearer {ADMIN}");
    let r = raw(
        admin,
        "DELETE",
        "/users/carol/sessions",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.json()["revoked"], 1, "{}", r.body);
    assert_eq!(c.get("/account/").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_or_restart_only_reload_is_refused_and_the_old_config_serves() {
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let addr = free_addr();
    let builder = standard(GateBuilder::new(), &[&app]);
    let good = builder.toml(addr);
    std::fs::write(&config, &good).unwrap();
    let gate = GateProcess::start(&config, dir.path(), "gate", false);
    wait_listening(addr);
    gate.wait_log("listening for SIGHUP");

    // A route naming an upstream that does not exist.
    let bad = good.replacen(
        "upstream = \"app\"\nauth = \"required\"",
        "upstream = \"ap\"\nauth = \"required\"",
        1,
    );
    assert_ne!(bad, good);
    std::fs::write(&config, &bad).unwrap();
    gate.signal("HUP");
    gate.wait_log("config not reloaded");
    let log = gate.log();
    let line = log
        .lines()
        .find(|l| l.contains("config not reloaded"))
        .unwrap();
    assert!(
        line.contains("proxy.toml:") && line.contains("upstream: no [[upstream]] is named `ap`"),
        "{line}"
    );
    assert_eq!(raw(addr, "GET", "/account/", &[]).await.status, 401);
    assert_eq!(raw(addr, "GET", "/public/x", &[]).await.status, 200);

    // A new listener needs a new process.
    let moved = good.replace(&addr.to_string(), &free_addr().to_string());
    std::fs::write(&config, moved).unwrap();
    gate.signal("HUP");
    let start = Instant::now();
    while gate.log().matches("config not reloaded").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = gate.log();
    let line = log
        .lines()
        .filter(|l| l.contains("config not reloaded"))
        .nth(1)
        .unwrap();
    assert!(
        line.contains("server.listen") && line.contains("--upgrade"),
        "{line}"
    );
    assert_eq!(raw(addr, "GET", "/public/x", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_under_load_drops_no_request() {
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let addr = free_addr();
    let sock = dir.path().join("upgrade.sock");
    let toml = standard(
        GateBuilder::new().server(&format!("upgrade_socket = \"{}\"", sock.display())),
        &[&app],
    )
    .toml(addr)
    .replace("grace_period = \"0s\"", "grace_period = \"2s\"");
    std::fs::write(&config, toml).unwrap();
    let mut old = GateProcess::start(&config, dir.path(), "old", false);
    wait_listening(addr);

    // Steady load: one request after another, each on a new connection, counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match try_raw(addr, "GET", "/public/x").await {
                    Some(200) => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = GateProcess::start(&config, dir.path(), "new", true);
    // The new process waits for the sockets; the old one hands them over on SIGQUIT (and
    // retries for a few seconds if the new one is not listening for them yet).
    new.wait_log("sessiongate starting");
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    let start = Instant::now();
    while !old.exited() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the old gate never exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed\nold:\n{}\nnew:\n{}",
        ok + failed,
        old.log(),
        new.log()
    );
    assert!(ok > before, "the new gate served after the old one exited");
    assert!(new.log().contains("sessiongate starting"), "{}", new.log());
}

/// One request on a new connection; `None` when the connection failed.
async fn try_raw(addr: SocketAddr, method: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let r = parse_response(&buf);
    (r.status != 0).then_some(r.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_changes_the_jwks_and_the_signing_key() {
    use base64::Engine;
    const ADMIN: &str = "admin-token-0123456789";
    let app = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let addr = free_addr();
    let old = crate::assertion::key_file(&dir, "old.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let new = crate::assertion::key_file(&dir, "new.pem", &rcgen::PKCS_ED25519);
    let with_keys = |keys: &str| {
        standard(GateBuilder::new().admin(ADMIN), &[&app])
            .table(&format!(
                "[identity.assertion]\nissuer = \"https://gate.test\"\n{keys}"
            ))
            .toml(addr)
    };
    let first = with_keys(&format!("key = \"file:{old}\""));
    let admin: SocketAddr = sessiongate::Config::parse(&first, "proxy.toml", &|_| None)
        .unwrap()
        .admin
        .unwrap()
        .listen
        .parse()
        .unwrap();
    // The admin listener is part of the file: keep it when the keys change.
    let admin_line = format!("listen = \"{admin}\"");
    let pin = |toml: String| {
        let at = toml.find("[admin]\nlisten = ").unwrap();
        let end = toml[at + 8..].find('\n').unwrap() + at + 8;
        format!("{}{admin_line}{}", &toml[..at + 8], &toml[end..])
    };
    std::fs::write(&config, &first).unwrap();
    let gate = GateProcess::start(&config, dir.path(), "gate", false);
    wait_listening(addr);
    wait_listening(admin);
    gate.wait_log("listening for SIGHUP");

    let kids = |body: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let signed_with = |token: &str| -> String {
        let header = token.split('.').next().unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&header).unwrap();
        v["kid"].as_str().unwrap().to_owned()
    };
    let before = kids(&raw(admin, "GET", "/.well-known/jwks.json", &[]).await.body);
    assert_eq!(before.len(), 1);
    let mut c = Client::new(addr, "connect.sid");
    login(&mut c, "alice", &[]).await;
    let r = c.get("/account/").await;
    let token = r
        .upstream_header("x-session-assertion")
        .expect("an assertion");
    assert_eq!(signed_with(&token), before[0]);

    // Rotation: the new key signs, both are published.
    std::fs::write(
        &config,
        pin(with_keys(&format!(
            "keys = [\"file:{new}\", \"file:{old}\"]"
        ))),
    )
    .unwrap();
    gate.signal("HUP");
    gate.wait_log("config reloaded");
    let after = kids(&raw(admin, "GET", "/.well-known/jwks.json", &[]).await.body);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1], before[0], "the old key is still published");
    assert_ne!(after[0], before[0]);
    let r = c.get("/account/").await;
    let token = r
        .upstream_header("x-session-assertion")
        .expect("an assertion");
    assert_eq!(
        signed_with(&token),
        after[0],
        "the first key of `keys` signs"
    );
}
