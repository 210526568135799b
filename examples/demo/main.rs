//! The demo: a small web app on 127.0.0.1:3000 that knows nothing about sessions, and the gate
//! in front of it on 127.0.0.1:8080 with `proxy.toml`, on the embedded store.
//!
//! ```text
//! scripts/demo                    # installs what is missing, then runs this
//! cargo run --example demo        # then open http://127.0.0.1:8080/
//! cargo run --example demo -- --once   # the walk-through only, then exit
//! ```
//!
//! The app's login form answers with `X-Session-Issue`; its account page shows the identity
//! headers the gate injected; logout is the gate's own `POST /logout`. Once the gate listens,
//! the demo walks through that itself, as a client: refused without a session, log in, the
//! identity headers the app received, log out, refused again.

mod app;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sessiongate::{Config, GateServer};

const APP_ADDR: &str = "127.0.0.1:3000";

fn main() -> anyhow::Result<()> {
    let once = std::env::args().any(|a| a == "--once");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SESSIONGATE_LOG")
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .init();
    let secret = std::env::var("SESSION_SECRET").unwrap_or_else(|_| {
        tracing::warn!(
            "SESSION_SECRET is not set: using a random one, so sessions end when the demo stops"
        );
        sessiongate::new_session_id()
    });
    let config = Config::parse(
        &std::fs::read_to_string("proxy.toml")?,
        "proxy.toml",
        &|name| (name == "SESSION_SECRET").then(|| secret.clone()),
    )?;

    std::thread::spawn(|| {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async {
                let listener = tokio::net::TcpListener::bind(APP_ADDR)
                    .await
                    .expect("port 3000 is free");
                app::serve(listener).await
            })
    });
    tracing::info!(
        "demo app on http://{APP_ADDR}; open http://{}/",
        config.listen[0]
    );
    let gate = config.listen[0].clone();
    std::thread::spawn(move || {
        let ok = match walk_through(&gate) {
            Ok(()) => {
                println!("\ndemo: the gate keeps running: open http://{gate}/ (Ctrl-C stops it)\n");
                true
            }
            Err(e) => {
                eprintln!("demo: the walk-through failed: {e:#}");
                false
            }
        };
        if once {
            std::process::exit(if ok { 0 } else { 1 });
        }
    });
    GateServer::new(config)?.run();
    Ok(())
}

/// What a person would do in a browser, as a client of the gate: each step printed with what
/// the gate answered.
fn walk_through(gate: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while TcpStream::connect(gate).is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the gate never listened on {gate}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("\ndemo: a walk-through against the gate on http://{gate}/\n");

    let r = request(gate, "GET", "/api/me", None, None)?;
    println!("1. GET /api/me without a session");
    println!("   -> {} {}  (the app was never asked)", r.status, r.body);
    anyhow::ensure!(r.status == 401, "expected 401");

    let r = request(
        gate,
        "POST",
        "/login",
        None,
        Some("user=alice&roles=reader,editor"),
    )?;
    let set_cookie = r.header("set-cookie").unwrap_or_default();
    let pair = set_cookie.split(';').next().unwrap_or_default().to_string();
    println!("2. POST /login user=alice roles=reader,editor (the app answers X-Session-Issue)");
    println!(
        "   -> {} to {}, and the gate sets the signed cookie: {}…; {}",
        r.status,
        r.header("location").unwrap_or_default(),
        &pair[..pair.len().min(28)],
        set_cookie.split_once("; ").map_or("", |(_, attrs)| attrs)
    );
    anyhow::ensure!(
        pair.starts_with("connect.sid=s%3A"),
        "expected a session cookie"
    );

    let r = request(gate, "GET", "/api/me", Some(&pair), None)?;
    println!("3. GET /api/me with the cookie: the gate injects the identity headers");
    println!("   -> {} the app received {}", r.status, r.body);
    anyhow::ensure!(
        r.status == 200 && r.body.contains("alice"),
        "expected alice"
    );

    let r = request(gate, "POST", "/logout", Some(&pair), None)?;
    println!("4. POST /logout (answered by the gate itself)");
    println!(
        "   -> {} to {}, the session is destroyed and the cookie expired: {}",
        r.status,
        r.header("location").unwrap_or_default(),
        r.header("set-cookie")
            .unwrap_or_default()
            .split("; ")
            .find(|a| a.starts_with("Expires="))
            .unwrap_or_default()
    );

    let r = request(gate, "GET", "/api/me", Some(&pair), None)?;
    println!("5. GET /api/me with the old cookie");
    println!("   -> {} {}", r.status, r.body);
    anyhow::ensure!(r.status == 401, "expected 401 after logout");
    Ok(())
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection.
fn request(
    gate: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> anyhow::Result<Answer> {
    let mut s = TcpStream::connect(gate)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {gate}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req += &format!("Cookie: {c}\r\n");
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        req += "Content-Type: application/x-www-form-urlencoded\r\n";
    }
    req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.trim().to_string(),
    })
}
