//! Set-up and correctness checks around the measured windows: a tiny blocking HTTP/1.1 client,
//! the login that gives every authenticated row its cookie, the check that an authenticated
//! row really authenticates, and the cache invalidation delay.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sessiongate_testkit::ProcessGuard;

use crate::processes::{start_gate, BenchRedis, Cache, GateSpec};
use crate::USER;

pub struct Probe {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Probe {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn probe(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Probe> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    // `Host: 127.0.0.1:<port>` unless the caller names one (a host route).
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        let _ = write!(req, "Host: 127.0.0.1:{port}\r\n");
    }
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    let _ = r.read_to_end(&mut body);
    Ok(Probe {
        status,
        headers,
        body,
    })
}

/// Waits until `path` answers 200 (a proxy's health checks have found the upstream).
pub fn wait_for_200(proc: &mut ProcessGuard, port: u16, path: &str, within: Duration) {
    proc.wait_until(&format!("answer 200 on {path}"), within, || {
        probe(port, "GET", path, &[]).is_ok_and(|p| p.status == 200)
    });
}

/// The authenticated route really authenticates: no cookie 401, the cookie 200 with the
/// identity injected (and a forged one replaced).
pub fn check_authenticates(name: &str, port: u16, cookie: &str) {
    let anon = probe(port, "GET", "/api/data", &[("X-User", "mallory")]).unwrap();
    assert_eq!(
        anon.status, 401,
        "{name}: a request without the cookie must get 401"
    );
    let authed = probe(
        port,
        "GET",
        "/api/data",
        &[("Cookie", cookie), ("X-User", "mallory")],
    )
    .unwrap();
    assert_eq!(authed.status, 200, "{name}: the cookie must get 200");
    assert_eq!(
        authed.header("x-seen-user"),
        Some(USER),
        "{name}: the upstream must see X-User from the session"
    );
    let forged = probe(
        port,
        "GET",
        "/api/data",
        &[("Cookie", "connect.sid=s%3Aforged.AAAA")],
    )
    .unwrap();
    assert_eq!(forged.status, 401, "{name}: a forged cookie must get 401");
}

/// The upstream got an assertion for `alice` with the session's roles: with `bind_request`
/// bound to the request (`htm`, `htu`) and a new token per request; without, the cached token
/// again. Read the way the upstream would find it, not verified (tests/it/assertion.rs
/// verifies signatures with the JWKS).
pub fn check_assertion(name: &str, port: u16, cookie: &str, bound: bool) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let token = || {
        let p = probe(
            port,
            "GET",
            "/api/data",
            &[("Cookie", cookie), ("X-Echo-Assertion", "1")],
        )
        .unwrap();
        assert_eq!(p.status, 200, "{name}: the cookie must get 200");
        p.header("x-seen-assertion")
            .unwrap_or_else(|| panic!("{name}: the upstream got no assertion"))
            .to_string()
    };
    let (first, second) = (token(), token());
    let parts: Vec<&str> = first.split('.').collect();
    assert_eq!(parts.len(), 3, "{name}: a JWS in compact form");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url claims"))
            .expect("JSON claims");
    assert_eq!(claims["sub"], USER, "{name}: {claims}");
    assert_eq!(claims["aud"], "app", "{name}: {claims}");
    assert_eq!(
        claims["roles"],
        serde_json::json!(["admin", "reader"]),
        "{name}: {claims}"
    );
    if bound {
        assert_eq!(claims["htm"], "GET", "{name}: {claims}");
        assert!(
            claims["htu"]
                .as_str()
                .is_some_and(|u| u.ends_with("/api/data")),
            "{name}: {claims}"
        );
        assert_ne!(
            first, second,
            "{name}: a bound assertion is signed per request"
        );
    } else {
        assert!(claims.get("htm").is_none(), "{name}: {claims}");
        assert_eq!(first, second, "{name}: an unbound assertion is reused");
    }
}

/// Logs `alice` in through the gate (the upstream answers `X-Session-Issue`): the session is
/// stored exactly as the gate stores every session. Returns the `Cookie` header value.
pub fn login(port: u16) -> String {
    let p = probe(port, "POST", "/login", &[]).expect("login");
    assert_eq!(p.status, 200, "login through the gate");
    let set_cookie = p
        .headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("connect.sid="))
        .map(|(_, v)| v.clone())
        .expect("the gate set the session cookie at login");
    set_cookie.split(';').next().unwrap().to_string()
}

/// How soon a session ended elsewhere (deleted in Redis, as an express app's `destroy()` or
/// another gate does) stops being served from a gate's local cache: the session is served
/// from the cache, deleted, and the gate polled until it answers 401. Each figure is an
/// upper bound: it includes one HTTP request to the gate on a fresh connection.
pub fn invalidation_delay(spec: &GateSpec<'_>, redis: &mut BenchRedis, rounds: usize) -> String {
    let (gate, port) = start_gate(spec, "gate-invalidation", Cache::On);
    let mut delays = Vec::with_capacity(rounds);
    let mut cached_rounds = 0;
    for _ in 0..rounds {
        let cookie = login(port);
        let value = cookie.split_once('=').unwrap().1;
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .unwrap()
            .into_owned();
        let sid = decoded
            .strip_prefix("s:")
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .0
            .to_string();
        // Warm the cache, and check that it serves: no Redis command for the last requests.
        for _ in 0..3 {
            assert_eq!(
                probe(port, "GET", "/api/data", &[("Cookie", &cookie)])
                    .unwrap()
                    .status,
                200
            );
        }
        let before: u64 = redis.command_calls().values().sum();
        assert_eq!(
            probe(port, "GET", "/api/data", &[("Cookie", &cookie)])
                .unwrap()
                .status,
            200
        );
        if redis.command_calls().values().sum::<u64>() == before {
            cached_rounds += 1;
        }
        let start = Instant::now();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("sess:{sid}"))
            .query(&mut redis.con)
            .unwrap();
        loop {
            if probe(port, "GET", "/api/data", &[("Cookie", &cookie)])
                .unwrap()
                .status
                == 401
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the gate kept serving a deleted session"
            );
        }
        delays.push(start.elapsed());
    }
    drop(gate);
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let line = format!(
        "Revocation reaching a gate's local cache ({rounds} sessions, {cached_rounds} of them served from the cache before the delete): \
         median {:.3} ms, p90 {:.3} ms, max {:.3} ms from the Redis `DEL` to the gate's first 401 \
         (each an upper bound: it includes one HTTP request on a new connection).",
        ms(delays[rounds / 2]),
        ms(delays[rounds * 9 / 10]),
        ms(delays[rounds - 1]),
    );
    eprintln!("load bench: {line}");
    line
}
