//! Protocols beyond one HTTP/1.1 exchange: HTTP/2 to clients on TLS listeners (ALPN `h2`),
//! and WebSocket upgrades, which are authenticated like any request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as WsResponse};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::harness::*;

/// An HTTP/2 connection to the gate's TLS listener, offering only `h2`.
async fn h2_client(
    addr: std::net::SocketAddr,
    pki: &TestPki,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = tls_stream(addr, pki, &[b"h2"]).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the gate chose h2"
    );
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_through_the_tls_listener() {
    let pki = TestPki::new();
    let app = Upstream::start("app").await;
    let tls_addr = free_addr();
    let _gate = standard(GateBuilder::new(), &[&app])
        .server(&format!(
            "[server.tls]\nlisten = [\"{tls_addr}\"]\ncert = \"{}\"\nkey = \"{}\"",
            pki.path("cert.pem"),
            pki.path("key.pem")
        ))
        .start();
    wait_for(
        "the TLS listener",
        std::time::Duration::from_secs(20),
        || std::net::TcpStream::connect(tls_addr).ok(),
    );
    let mut h2 = h2_client(tls_addr, &pki).await;
    let send = |method: &str, path: &str, cookie: Option<&str>| {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.body(Full::new(Bytes::new())).unwrap()
    };

    let login = h2
        .send_request(send(
            "POST",
            "/login?issue=%7B%22user%22%3A%22alice%22%7D",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(login.version(), hyper::Version::HTTP_2);
    let set = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("; Secure"), "{set}");
    let pair = set.split(';').next().unwrap().to_string();

    // Several streams on the one connection, each authenticated.
    let without = h2
        .send_request(send("GET", "/account/", None))
        .await
        .unwrap();
    assert_eq!(without.status(), 401);
    let r = h2
        .send_request(send("GET", "/account/x", Some(&pair)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), hyper::Version::HTTP_2);
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["x-user"][0], "alice");
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(seen["path"], "/account/x");

    // HTTP/2 clients split cookies into fields; the HTTP/1.1 upstream gets one line.
    let mut req = send("GET", "/account/x", Some(&pair));
    req.headers_mut()
        .append("cookie", "theme=dark".parse().unwrap());
    req.headers_mut()
        .append("cookie", "lang=fr".parse().unwrap());
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200, "the session is read from the split fields");
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        seen["headers"]["cookie"],
        serde_json::json!([format!("{pair}; theme=dark; lang=fr")]),
        "one Cookie line, joined with `; `"
    );
}

/// A WebSocket upstream that answers every text message with `<X-User it saw>: <message>`,
/// and counts the upgrade requests that reached it.
async fn ws_upstream() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrades = Arc::new(AtomicUsize::new(0));
    let count = upgrades.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let user = Arc::new(Mutex::new(String::new()));
                let seen = user.clone();
                // tungstenite's callback type returns its (large) error response by value.
                #[allow(clippy::result_large_err)]
                let callback = move |req: &Request, resp: WsResponse| {
                    count.fetch_add(1, Ordering::SeqCst);
                    *seen.lock().unwrap() = req
                        .headers()
                        .get("x-user")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    Ok(resp)
                };
                // Health checks connect and close: no handshake, no count.
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            let who = user.lock().unwrap().clone();
                            if ws.send(Message::text(format!("{who}: {t}"))).await.is_err() {
                                return;
                            }
                        }
                        Message::Close(_) => return,
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, upgrades, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_are_authenticated_like_any_request() {
    let (ws_addr, upgrades, _task) = ws_upstream().await;
    let app = Upstream::start("app").await;
    let gate = standard(GateBuilder::new(), &[&app])
        .upstream_addrs("ws", &[ws_addr])
        .route("path = \"/ws/\"\nupstream = \"ws\"\nauth = \"required\"")
        .start();
    let mut c = gate.client();
    login(&mut c, "alice", &[]).await;
    let cookie = c.cookie.clone().unwrap();

    // Without a session: 401, and the upgrade never reaches the upstream.
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let req = "ws://localhost/ws/echo".into_client_request().unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!(
            "an unauthenticated upgrade went through: {:?}",
            other.map(|_| ())
        ),
    }
    assert_eq!(upgrades.load(Ordering::SeqCst), 0);

    // With one: a round trip of frames through the gate, as the session's user.
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let mut req = "ws://localhost/ws/echo".into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    // A client cannot claim to be someone else over a WebSocket either.
    req.headers_mut()
        .insert("x-user", "mallory".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "again"] {
        ws.send(Message::text(text)).await.unwrap();
        let answer = ws.next().await.unwrap().unwrap();
        assert_eq!(answer, Message::text(format!("alice: {text}")));
    }
    ws.close(None).await.unwrap();
    assert_eq!(upgrades.load(Ordering::SeqCst), 1);
}
