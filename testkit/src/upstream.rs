//! HTTP upstreams for the gate to proxy to. The tests need one that tells them exactly what
//! reached it (the echo); the load bench needs one that answers a small fixed body as fast as
//! one thread can. Both are the same hyper HTTP/1.1 keep-alive server with a different
//! answer, so the server loop is written once ([`serve`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;

/// Serves HTTP/1.1 with keep-alive on `listener` until the task running it is dropped or
/// aborted, answering every request with `answer(&request)` (request bodies are not read).
pub async fn serve<F>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An upstream in this process, on a free loopback port, counting the requests it answers.
/// [`Upstream::start`] is the echo: every answer is JSON describing what it received; query
/// parameters script it: `issue=<json>` (sent as `X-Session-Issue`), `destroy=1|all`,
/// `update=<json>`, `regenerate=1`, `max_age=<duration>`, `set_cookie=<value>`.
///
/// Start it inside a tokio runtime; dropping it stops it.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// The echo upstream, which names itself `name` in its answers.
    pub async fn start(name: &str) -> Self {
        let n = name.to_string();
        Self::answering(name, move |req| echo(&n, req)).await
    }

    /// An upstream answering every request with `answer`.
    pub async fn answering<F>(name: &str, answer: F) -> Self
    where
        F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let task = tokio::spawn(serve(listener, move |req| {
            h.fetch_add(1, Ordering::SeqCst);
            answer(req)
        }));
        Upstream {
            addr,
            name: name.into(),
            hits,
            task,
        }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The echo's answer: 200, `{"upstream", "method", "path", "headers"}` (every value of every
/// header, in order), plus the headers its query asks for (see [`Upstream`]).
pub fn echo(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into());
    }
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let body = json!({
        "upstream": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "headers": headers,
    });
    let mut resp = Response::builder()
        .status(200)
        .header("content-type", "application/json");
    if let Some(issue) = query.get("issue") {
        resp = resp.header("X-Session-Issue", issue.as_str());
    }
    // The rest of the session directives, passed through as given.
    for (param, header) in [
        ("destroy", "X-Session-Destroy"),
        ("update", "X-Session-Update"),
        ("regenerate", "X-Session-Regenerate"),
        ("max_age", "X-Session-Max-Age"),
    ] {
        if let Some(v) = query.get(param) {
            resp = resp.header(header, v.as_str());
        }
    }
    if let Some(c) = query.get("set_cookie") {
        resp = resp.header("set-cookie", c.as_str());
    }
    resp.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_echo_tells_what_it_received_and_counts() {
        let up = Upstream::start("app").await;
        let mut s = tokio::net::TcpStream::connect(up.addr).await.unwrap();
        s.write_all(
            b"GET /a?issue=%7B%22user%22%3A1%7D HTTP/1.1\r\nHost: x\r\nX-User: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("x-session-issue: {\"user\":1}\r\n"), "{out}");
        let body = out.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["upstream"], "app");
        assert_eq!(v["path"], "/a?issue=%7B%22user%22%3A1%7D");
        assert_eq!(v["headers"]["x-user"], json!(["a"]));
        assert_eq!(up.hits(), 1);
    }
}
