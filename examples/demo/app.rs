//! The demo app: a small web app that knows nothing about sessions. Its login form answers
//! with `X-Session-Issue` (and `X-Session-Max-Age` for "remember me"); its account page shows
//! the identity headers the gate injected and opens a WebSocket (`/account/live`) that greets
//! the user the gate named; its settings form updates the session or ends them all. The gate
//! in front of it does everything else (see `proxy.toml`). `main.rs` runs it on
//! 127.0.0.1:3000; the browser tests (`tests/it/browser.rs`) run this same file on a port of
//! their own.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Serves the app on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(app))
                .with_upgrades()
                .await;
        });
    }
}

async fn app(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let user = header(&req, "x-user");
    if req.uri().path() == "/account/live" {
        return Ok(live(req, user));
    }
    let roles = header(&req, "x-user-roles");
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let resp = match (method.as_str(), path.as_str()) {
        ("GET", "/") => page(
            "Home",
            &match &user {
                Some(u) => format!("<p>Signed in as <b>{}</b>. <a href=\"/account/\">Your account</a></p>{}", esc(u), LOGOUT),
                None => "<p>Not signed in. <a href=\"/account/\">Your account</a> needs a session; <a href=\"/login\">sign in</a>.</p>".into(),
            },
        ),
        ("GET", "/login") => page(
            "Sign in",
            &format!(
                "<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"return_to\" value=\"{}\">\
                 <label>User <input name=\"user\" value=\"alice\"></label> \
                 <label>Roles <input name=\"roles\" value=\"reader,editor\"></label> \
                 <label><input type=\"checkbox\" name=\"remember\" value=\"30d\"> Remember me</label> <button>Sign in</button></form>",
                esc(&param(&query, "return_to").unwrap_or_default())
            ),
        ),
        ("POST", "/login") => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let form = String::from_utf8_lossy(&body).to_string();
            let name = param(&form, "user").filter(|u| !u.is_empty()).unwrap_or_else(|| "alice".into());
            let roles: Vec<String> = param(&form, "roles").unwrap_or_default().split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
            // Only local paths: `//host` or `/\host` would send the user off-site.
            let back = param(&form, "return_to")
                .filter(|p| p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\"))
                .unwrap_or_else(|| "/account/".into());
            let session = serde_json::json!({ "user": name, "roles": roles });
            let mut resp = Response::builder()
                .status(303)
                .header("location", back)
                .header("x-session-issue", session.to_string());
            // "Remember me": a persistent cookie of this life (the gate caps it).
            if let Some(life) = param(&form, "remember").filter(|r| !r.is_empty()) {
                resp = resp.header("x-session-max-age", life);
            }
            resp.body(Full::new(Bytes::new())).unwrap()
        }
        ("POST", "/account/settings") => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let form = String::from_utf8_lossy(&body).to_string();
            let everywhere = param(&form, "everywhere").is_some();
            let back = if everywhere { "/" } else { "/account/" };
            let mut resp = Response::builder().status(303).header("location", back);
            if everywhere {
                // Log out everywhere: every session of this user, on every gate.
                resp = resp.header("x-session-destroy", "all");
            } else if let Some(theme) = param(&form, "theme") {
                resp = resp.header("x-session-update", serde_json::json!({ "theme": theme }).to_string());
            }
            resp.body(Full::new(Bytes::new())).unwrap()
        }
        ("GET", p) if p.starts_with("/account") => page(
            "Your account",
            &format!(
                "<p>This page is protected by the gate. The app received these headers:</p>\
                 <table><tr><td>X-User</td><td><b>{}</b></td></tr><tr><td>X-User-Roles</td><td><b>{}</b></td></tr></table>{}{}",
                esc(user.as_deref().unwrap_or("-")),
                esc(roles.as_deref().unwrap_or("-")),
                LIVE,
                LOGOUT
            ),
        ),
        ("GET", p) if p.starts_with("/api/") => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::json!({ "user": user, "roles": roles }).to_string())))
            .unwrap(),
        _ => Response::builder().status(404).body(Full::new(Bytes::from("not found"))).unwrap(),
    };
    Ok(resp)
}

/// The account page's WebSocket: the gate let the handshake through with the session, so
/// the app knows who is on the other end.
const LIVE: &str = "<p>Live: <span id=\"live\">connecting…</span></p><script>\
const live = document.getElementById(\"live\");\
const ws = new WebSocket((location.protocol === \"https:\" ? \"wss://\" : \"ws://\") + location.host + \"/account/live\");\
ws.onmessage = (e) => { live.textContent = e.data; };\
ws.onerror = () => { live.textContent = \"refused\"; };\
</script>";

/// `GET /account/live`: a WebSocket that says whom the gate let in, then echoes.
fn live(mut req: Request<hyper::body::Incoming>, user: Option<String>) -> Response<Full<Bytes>> {
    let upgrade = header(&req, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").filter(|_| upgrade) else {
        return Response::builder()
            .status(426)
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::from("a WebSocket endpoint")))
            .unwrap();
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = upgraded.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
        let hello = format!("connected as {}", user.as_deref().unwrap_or("nobody"));
        if ws.send(Message::text(hello)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

const LOGOUT: &str = "<form method=\"post\" action=\"/account/settings\"><input name=\"theme\" value=\"dark\"> <button>Save theme</button></form>\
<form method=\"post\" action=\"/logout\"><button>Sign out</button></form>\
<form method=\"post\" action=\"/account/settings\"><input type=\"hidden\" name=\"everywhere\" value=\"1\"><button>Sign out everywhere</button></form>";

fn page(title: &str, body: &str) -> Response<Full<Bytes>> {
    let html = format!("<!doctype html><title>{title}</title><h1>{title}</h1>{body}");
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(html)))
        .unwrap()
}

fn header(req: &Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
