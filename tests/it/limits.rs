//! Request head limits: a head too large or with too many headers gets 431 without reaching
//! an upstream, a head that does not arrive in time gets 408, and ordinary requests (one or
//! several on a keep-alive connection) are untouched. Raw bytes on TCP, so that the tests
//! control every byte of a head.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Generous bound on every exchange: the waits below are for answers, never for a time.
const PATIENCE: Duration = Duration::from_secs(20);

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// A GET of `path` with `headers` (and `Host`), padded with an `X-Fill` header so that the
/// head is exactly `size` bytes when `size` is given.
fn request(path: &str, headers: &[String], size: Option<usize>) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        head += &format!("{h}\r\n");
    }
    if let Some(size) = size {
        let bare = head.len() + "X-Fill: \r\n\r\n".len();
        assert!(size >= bare, "{size} bytes cannot hold this head");
        head += &format!("X-Fill: {}\r\n", "a".repeat(size - bare));
    }
    head += "\r\n";
    assert!(size.is_none_or(|s| s == head.len()));
    head.into_bytes()
}

/// Reads one response (its body has a Content-Length); `None` when the gate closed instead.
async fn answer(s: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if s.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    while buf.len() < end + length {
        if s.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
    let body = String::from_utf8_lossy(&buf[end..end + length]).into_owned();
    Some(Answer { status, head, body })
}

/// Sends `bytes` on a new connection and reads one answer.
async fn once(addr: SocketAddr, bytes: &[u8]) -> Answer {
    tokio::time::timeout(PATIENCE, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        answer(&mut s).await.expect("an answer")
    })
    .await
    .expect("answered in time")
}

/// An answer the gate gave itself, after which it closes the connection.
fn assert_refused(a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status, status, "{}{}", a.head, a.body);
    assert!(
        a.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        a.head
    );
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(body["error"], error, "{}", a.body);
}

fn gate(app: &Upstream, server: &[&str]) -> Gate {
    let mut b = standard(GateBuilder::new(), &[app]);
    for line in server {
        b = b.server(line);
    }
    b.start()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_the_size_limit_gets_431_and_never_reaches_the_upstream() {
    let app = Upstream::start("app").await;
    let gate = gate(&app, &[]);
    // The default limit is 32 KiB; Pingora alone would take up to 1 MiB.
    let a = once(gate.addr, &request("/public/", &[], Some(40 * 1024))).await;
    assert_refused(&a, 431, "header_too_large");
    assert_eq!(app.hits(), 0, "the upstream never saw it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_of_exactly_the_limit_passes_and_one_byte_more_does_not() {
    let app = Upstream::start("app").await;
    let gate = gate(&app, &["max_header_bytes = 2048"]);
    let a = once(gate.addr, &request("/public/", &[], Some(2048))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(app.hits(), 1);
    let a = once(gate.addr, &request("/public/", &[], Some(2049))).await;
    assert_refused(&a, 431, "header_too_large");
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn more_headers_than_the_limit_get_431() {
    let app = Upstream::start("app").await;
    // Fewer than the default 100: the test upstream (hyper) takes no more than 100 itself,
    // and the gate adds a few on the way.
    let gate = gate(&app, &["max_headers = 20"]);
    // `Host` is one of them: 20 in all pass, 21 do not.
    let headers: Vec<String> = (0..20).map(|i| format!("X-H{i}: {i}")).collect();
    let a = once(gate.addr, &request("/public/", &headers[..19], None)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = once(gate.addr, &request("/public/", &headers, None)).await;
    assert_refused(&a, 431, "header_too_large");
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_head_gets_408_after_header_timeout() {
    let app = Upstream::start("app").await;
    let gate = gate(&app, &[r#"header_timeout = "500ms""#]);

    // A head that stops halfway.
    let a = once(gate.addr, b"GET /public/ HTTP/1.1\r\nHost: localhost\r\n").await;
    assert_refused(&a, 408, "request_timeout");

    // A head that keeps coming, a byte at a time, so that no single read ever times out.
    let a = tokio::time::timeout(PATIENCE, async {
        let mut s = TcpStream::connect(gate.addr).await.unwrap();
        s.write_all(b"GET /public/ HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        let (mut rx, mut tx) = s.into_split();
        let trickle = tokio::spawn(async move {
            while tx.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let mut bytes = Vec::new();
        let _ = rx.read_to_end(&mut bytes).await;
        trickle.abort();
        String::from_utf8_lossy(&bytes).into_owned()
    })
    .await
    .expect("the gate ended the slow head");
    assert!(a.starts_with("HTTP/1.1 408 "), "{a}");
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_requests_work_and_each_head_is_limited() {
    let app = Upstream::start("app").await;
    let gate = gate(&app, &[]);
    tokio::time::timeout(PATIENCE, async {
        let mut s = TcpStream::connect(gate.addr).await.unwrap();
        // A body sent in the same write as its head travels with the head to the proxy.
        let mut first = request("/public/0", &["Content-Length: 5".into()], None);
        first.extend_from_slice(b"hello");
        s.write_all(&first).await.unwrap();
        let a = answer(&mut s).await.expect("an answer");
        assert_eq!(a.status, 200, "{}", a.body);
        s.write_all(&request("/public/1", &[], None)).await.unwrap();
        let a = answer(&mut s)
            .await
            .expect("an answer on the same connection");
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body.contains("/public/1"), "{}", a.body);
        // A later head on the same connection meets the same limits.
        s.write_all(&request("/public/2", &[], Some(40 * 1024)))
            .await
            .unwrap();
        let a = answer(&mut s).await.expect("an answer");
        assert_refused(&a, 431, "header_too_large");
        assert!(answer(&mut s).await.is_none(), "and the connection closes");
    })
    .await
    .expect("answered in time");
    assert_eq!(app.hits(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_heads_are_counted_and_access_logged() {
    const ADMIN: &str = "admin-token-0123456789";
    let app = Upstream::start("app").await;
    let (gate, log) = standard(
        GateBuilder::new()
            .admin(ADMIN)
            .log(r#"access = "json""#)
            .server("max_header_bytes = 2048")
            .server(r#"header_timeout = "300ms""#),
        &[&app],
    )
    .start_logged();
    let big = once(gate.addr, &request("/public/", &[], Some(4096))).await;
    assert_refused(&big, 431, "header_too_large");
    let slow = once(gate.addr, b"POST /public/ HTTP/1.1\r\nHost: localhost\r\n").await;
    assert_refused(&slow, 408, "request_timeout");

    let lines = log.wait_json(2);
    for (line, answer, status, method) in [
        (&lines[0], &big, 431, "GET"),
        (&lines[1], &slow, 408, "POST"),
    ] {
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["method"], method, "{line}");
        assert!(line["path"].is_null() && line["route"].is_null() && line["auth"].is_null());
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["bytes"].as_u64(), Some(answer.body.len() as u64));
        let id = answer
            .head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("the answer carries a request id");
        assert_eq!(line["request_id"], id.trim(), "{line}");
    }
    let admin = gate.admin.unwrap();
    for status in ["431", "408"] {
        let name = format!(
            "sessiongate_requests_total{{auth=\"none\",route=\"none\",status=\"{status}\"}}"
        );
        assert_eq!(admin_metric(admin, ADMIN, &name).await, 1, "{name}");
    }
    assert_eq!(app.hits(), 0);
}
