//! Connection limits on both protocols: an HTTP/2 connection whose header block does not
//! complete within `server.header_timeout` is closed, as is one idle for
//! `server.idle_timeout`; `server.h2_max_streams` is what the gate advertises; and past
//! `server.max_connections` new connections are closed and counted. Raw HTTP/2 frames over
//! the real TLS listener, so that the tests control every byte.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Liveness bound: far past every timeout these gates are given, and far short of forever.
const PATIENCE: Duration = Duration::from_secs(20);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The gate with a TLS listener (and `server` lines), its address once it listens.
fn tls_gate(app: &Upstream, pki: &TestPki, server: &str) -> (Gate, SocketAddr) {
    let tls_addr = free_addr();
    let gate = standard(GateBuilder::new().admin(ADMIN), &[app])
        .server(&format!(
            "{server}\n[server.tls]\nlisten = [\"{tls_addr}\"]\ncert = \"{}\"\nkey = \"{}\"",
            pki.path("cert.pem"),
            pki.path("key.pem")
        ))
        .start();
    wait_for("the TLS listener", PATIENCE, || {
        std::net::TcpStream::connect(tls_addr).ok()
    });
    (gate, tls_addr)
}

const ADMIN: &str = "connections-admin-token";

/// Waits until `ready` says so (bounded by [`PATIENCE`]).
async fn eventually<F, Fut>(what: &str, _patience: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !ready().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads frames until the server's SETTINGS: its parameters, by identifier.
async fn server_settings(io: &mut (impl AsyncRead + Unpin)) -> Vec<(u16, u32)> {
    loop {
        let mut head = [0u8; 9];
        io.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        io.read_exact(&mut payload).await.unwrap();
        if head[3] == 0x4 && head[4] & 0x1 == 0 {
            return payload
                .chunks(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
    }
}

/// Reads and drops whatever comes until the gate closes the connection.
async fn closed(io: &mut (impl AsyncRead + Unpin), what: &str) {
    let mut sink = [0u8; 4096];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: the gate still holds the connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_http2_header_block_is_closed_at_the_header_timeout() {
    let pki = TestPki::new();
    let app = Upstream::start("app").await;
    // The idle timeout is longer than the patience: only the header timeout can close it.
    let (_gate, addr) = tls_gate(
        &app,
        &pki,
        "header_timeout = \"1s\"\nidle_timeout = \"600s\"\nh2_max_streams = 7",
    );
    let mut tls = tls_stream(addr, &pki, &[b"h2"]).await;
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    let settings = server_settings(&mut tls).await;
    assert!(
        settings.contains(&(0x3, 7)),
        "SETTINGS_MAX_CONCURRENT_STREAMS is h2_max_streams: {settings:?}"
    );
    // HEADERS for stream 1 (`:method GET`, indexed), without END_HEADERS, and nothing more.
    tls.write_all(&frame(0x1, 0, 1, &[0x82])).await.unwrap();
    closed(&mut tls, "an unfinished header block").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_at_the_idle_timeout() {
    let pki = TestPki::new();
    let app = Upstream::start("app").await;
    let (_gate, addr) = tls_gate(&app, &pki, "idle_timeout = \"2s\"");
    let tls = tls_stream(addr, &pki, &[b"h2"]).await;
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("https://localhost/public/x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    // Nothing more: the gate ends the connection, and hyper's driver with it.
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(
        ended.is_ok(),
        "the gate still holds an idle HTTP/2 connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_max_connections_are_closed_and_counted() {
    let pki = TestPki::new();
    let app = Upstream::start("app").await;
    let (gate, tls_addr) = tls_gate(&app, &pki, "max_connections = 2");
    // Let the listener checks of the start-up close before counting.
    let open =
        || async { admin_metric(gate.admin.unwrap(), ADMIN, "sessiongate_connections").await };
    eventually("no connection open", PATIENCE, || async {
        open().await == 0
    })
    .await;
    // One of each protocol, both idle.
    let mut h1 = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let mut h2 = tls_stream(tls_addr, &pki, &[b"h2"]).await;
    h2.write_all(PREFACE).await.unwrap();
    h2.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    server_settings(&mut h2).await;
    eventually("two connections open", PATIENCE, || async {
        open().await == 2
    })
    .await;

    let mut third = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    closed(&mut third, "a third connection").await;
    assert_eq!(
        admin_metric(
            gate.admin.unwrap(),
            ADMIN,
            "sessiongate_connections_refused_total"
        )
        .await,
        1
    );

    // A place freed is a place taken again.
    h1.shutdown().await.unwrap();
    let mut sink = [0u8; 16];
    let _ = h1.read(&mut sink).await;
    drop(h1);
    eventually("one connection open", PATIENCE, || async {
        open().await == 1
    })
    .await;
    let r = raw(gate.addr, "GET", "/public/x", &[]).await;
    assert_eq!(r.status, 200);
}
