//! Limits on HTTP/1 request heads, applied before Pingora reads them.
//!
//! Pingora's HTTP/1 server reads a request head up to a fixed 1 MiB and 256 headers, with a
//! timeout on each read but none on the whole head: a client that trickles a huge head holds
//! a growing buffer and its connection for minutes, and a hundred such clients cost well over
//! a hundred MiB. So the gate reads each head itself, here: it must fit in
//! `server.max_header_bytes` and `server.max_headers` (else `431`), and be complete within
//! `server.header_timeout` of its first byte (else `408`). Both answers close the connection,
//! carry a new `X-Request-Id`, and are counted and access-logged like any answer (route and
//! auth `none`, no path): a spike of them is visible.
//!
//! A head that passes goes to the proxy as a pipelined prefix: Pingora parses bytes it is
//! handed before it reads the stream, so nothing is read twice and the proxy is unchanged.
//! On a keep-alive connection every later head goes through the same limits, and an idle
//! connection is closed quietly after `server.idle_timeout`. Pipelined requests (sent before
//! the previous answer) are answered in order: the bytes read past a request whose length is
//! known (no body, or a `Content-Length`) are kept as the start of the next head. Past a
//! chunked body, Pingora closes the connection after the answer instead, and the client
//! sends the rest again. HTTP/2 (TLS with ALPN `h2`) has
//! its own framing, and goes to the proxy through [`crate::connections::H2Watch`], which puts
//! the header timeout on its header blocks. Every connection, of either protocol, first takes
//! a place under `server.max_connections` ([`crate::connections`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::prelude::timeout;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use crate::access_log::{AccessLog, Entry};
use crate::connections::{ConnectionLimits, Connections, H2Watch};
use crate::error::RequestError;
use crate::metrics::Metrics;
use crate::request_id;

/// Bounds on HTTP/1 request heads: `server.max_header_bytes`, `max_headers`, `header_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line and headers, in bytes.
    pub max_bytes: usize,
    pub max_headers: usize,
    /// From the head's first byte to its last.
    pub timeout: Duration,
}

/// The largest head Pingora parses: a prefix longer than this is refused unread
/// (`MAX_HEADER_SIZE` in pingora-core's `protocols/http/v1/common.rs`).
pub const PINGORA_MAX_HEADER_BYTES: usize = 1_048_575;
/// The most headers Pingora parses (`MAX_HEADERS`, same file).
pub const PINGORA_MAX_HEADERS: usize = 256;
/// The first read's buffer; it grows up to the limit only as a head needs it.
const INITIAL_BUFFER: usize = 4096;
/// After a `431`/`408`, what the client still sends is read and dropped for this long (and
/// up to [`LINGER_BYTES`]) before the close, so that the close does not turn into a reset that
/// destroys the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;
/// Bound on writing a rejection to a client that does not read.
const REJECT_WRITE: Duration = Duration::from_secs(1);

/// The HTTP/1 application behind the gate's listeners: [`HeadLimits`] in front of `A`.
pub struct Limited<A> {
    app: Arc<A>,
    limits: HeadLimits,
    /// How long a connection may wait for the first byte of a head (`server.idle_timeout`):
    /// a new connection, and between requests (where Pingora has no such bound).
    idle: Duration,
    connections: Arc<Connections>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
}

impl<A> Limited<A> {
    /// Refused heads are counted in `metrics` and written to `access_log`, as the proxy's
    /// answers are.
    pub fn new(
        app: A,
        limits: HeadLimits,
        connections: &ConnectionLimits,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        Self {
            app: Arc::new(app),
            limits,
            idle: connections.idle_timeout,
            connections: Arc::new(Connections::new(
                connections.max_connections,
                metrics.clone(),
            )),
            metrics,
            access_log,
        }
    }

    /// Answers a refused head, then counts and logs it.
    async fn refuse(&self, mut stream: Stream, refused: Refused) {
        let request_id = request_id::generate();
        refused.error.log(&request_id);
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let bytes = reject(&mut stream, &refused.error, &request_id).await;
        let took = refused.began.elapsed();
        let status = refused.error.status();
        self.metrics.request("none", status, "none", took);
        self.access_log.write(&Entry {
            time: SystemTime::now(),
            request_id: &request_id,
            client,
            method: refused.method.as_deref().unwrap_or("-"),
            path: None,
            route: None,
            status,
            upstream: None,
            duration_ms: took,
            upstream_ms: None,
            auth: None,
            session: None,
            bytes,
        });
        if bytes > 0 {
            linger(&mut stream).await;
        }
    }
}

/// What reading a head came to.
enum Head {
    /// A complete head within the limits, perhaps followed by the start of a body; and what
    /// was read past the end of that request (a pipelined next one).
    Ready(BytesMut, Option<BytesMut>),
    /// Nothing came (idle, closed, shutting down): close quietly.
    Closed,
    Reject(Refused),
}

/// A head refused with `error` ([`RequestError::HeadTooLarge`] or
/// [`RequestError::HeadTimeout`]).
struct Refused {
    error: RequestError,
    /// When its first byte came.
    began: Instant,
    /// The request line's method, when it got that far and reads as one.
    method: Option<String>,
}

impl Refused {
    fn new(error: RequestError, began: Instant, head: &[u8]) -> Self {
        let method = head
            .iter()
            .position(|b| *b == b' ')
            .map(|n| &head[..n])
            .filter(|m| (1..=16).contains(&m.len()) && m.iter().all(u8::is_ascii_alphabetic))
            .map(|m| String::from_utf8_lossy(m).into_owned());
        Self {
            error,
            began,
            method,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_admitted) = self.connections.admit() else {
            tracing::debug!("server.max_connections are open; a new connection was closed");
            return None;
        };
        let options = self.app.server_options();
        let h2c_or_custom = options.is_some_and(|o| o.h2c || o.force_custom);
        match stream.selected_alpn_proto() {
            None if !h2c_or_custom => {}
            Some(ALPN::H1) => {}
            // HTTP/2: Pingora's own handling, with the header timeout on its header blocks.
            Some(ALPN::H2) => {
                let watched: Stream = Box::new(H2Watch::new(stream, self.limits.timeout));
                self.app.process_new(watched, shutdown).await;
                return None;
            }
            // The rest: Pingora's own handling, as without this wrapper.
            _ => return self.app.process_new(stream, shutdown).await,
        }
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut carried: Option<BytesMut> = None;
        loop {
            let reused = persistent.is_some();
            let prefix = match read_head(
                &mut stream,
                &self.limits,
                self.idle,
                shutdown,
                carried.take(),
                reused,
            )
            .await
            {
                Head::Ready(prefix, next) => {
                    carried = next;
                    prefix
                }
                Head::Closed => return None,
                Head::Reject(refused) => {
                    self.refuse(stream, refused).await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                // A connection's first request: what Pingora's own HTTP/1 server sets.
                None => {
                    let down = *shutdown.borrow();
                    session.set_keepalive((!down).then_some(self.idle.as_secs()));
                    session.set_keepalive_reuses_remaining(
                        options.and_then(|o| o.keepalive_request_limit),
                    );
                }
                // What the previous request left: keep-alive, reuses, the connection context.
                // It carries a pipelined prefix only when pipelining is on, which the gate
                // never turns on (Pingora then closes a connection with bytes read past a
                // request instead of reusing it), so ours is the only prefix.
                Some(p) => p.apply_to_session(&mut session),
            }
            session.set_pipelined_prefix(prefix);
            let reused = self.app.process_new_http(session, shutdown).await?;
            (stream, persistent) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// Reads one head within the limits: see the module's comment.
/// `reused`: the connection served a request already. An idle reused connection is closed
/// when the gate shuts down; a new one is not, because its client is about to send (it may
/// have been accepted a moment before the listener closed, or handed over in an upgrade).
async fn read_head(
    stream: &mut Stream,
    limits: &HeadLimits,
    idle: Duration,
    shutdown: &ShutdownWatch,
    carried: Option<BytesMut>,
    reused: bool,
) -> Head {
    let mut buf = match carried {
        // A pipelined request's bytes, read with the previous one.
        Some(bytes) if !bytes.is_empty() => bytes,
        _ => {
            let mut buf = BytesMut::with_capacity(INITIAL_BUFFER.min(limits.max_bytes));
            let read = timeout(idle, read_some(stream, &mut buf, limits.max_bytes));
            let first = if reused {
                tokio::select! {
                    biased;
                    read = read => read,
                    _ = shutting_down(shutdown) => return Head::Closed,
                }
            } else {
                // A new connection's first head is awaited like any head: within
                // header_timeout once it starts, within the idle time before.
                read.await
            };
            if !matches!(first, Ok(Ok(n)) if n > 0) {
                return Head::Closed;
            }
            buf
        }
    };
    let began = Instant::now();
    let deadline = began + limits.timeout;
    let refuse = |error, buf: &BytesMut| Head::Reject(Refused::new(error, began, buf));
    let mut fresh = 0;
    loop {
        // A head can only end, or gain a header, with a new line.
        if buf[fresh..].contains(&b'\n') {
            match scan(&buf, limits.max_headers) {
                Scan::Complete(Some(len)) if buf.len() > len => {
                    let next = buf.split_off(len);
                    return Head::Ready(buf, Some(next));
                }
                Scan::Complete(_) => return Head::Ready(buf, None),
                Scan::TooManyHeaders => return refuse(RequestError::HeadTooLarge, &buf),
                Scan::Partial => {}
            }
        }
        if buf.len() >= limits.max_bytes {
            return refuse(RequestError::HeadTooLarge, &buf);
        }
        fresh = buf.len();
        match timeout_at(deadline, read_some(stream, &mut buf, limits.max_bytes)).await {
            Err(_) => return refuse(RequestError::HeadTimeout, &buf),
            // The client gave up halfway: nobody to answer.
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads what is there, never past `cap` bytes in all.
async fn read_some(stream: &mut Stream, buf: &mut BytesMut, cap: usize) -> std::io::Result<usize> {
    let room = cap.saturating_sub(buf.len());
    if buf.capacity() == buf.len() {
        buf.reserve(room.min(INITIAL_BUFFER));
    }
    stream.read_buf(&mut (&mut *buf).limit(room)).await
}

async fn shutting_down(shutdown: &ShutdownWatch) {
    let mut watch = shutdown.clone();
    if watch.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// A whole head; with the length of the whole request (head and body) when it is known.
    Complete(Option<usize>),
    Partial,
    TooManyHeaders,
}

/// Whether `buf` starts with a whole head, parsed as Pingora parses it (httparse).
fn scan(buf: &[u8], max_headers: usize) -> Scan {
    // httparse fills the slots it uses: nothing is written to the rest (8 KiB per head).
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; PINGORA_MAX_HEADERS];
    let max = max_headers.min(PINGORA_MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut headers[..max]) {
        Ok(httparse::Status::Complete(head)) => Scan::Complete(request_length(head, req.headers)),
        Ok(httparse::Status::Partial) => Scan::Partial,
        Err(httparse::Error::TooManyHeaders) => Scan::TooManyHeaders,
        // A head httparse refuses: Pingora answers it (400), or first escapes bytes a request
        // line may not hold. Either way it needs the whole head, so find its end by its blank
        // line, and count its lines against the limit.
        Err(_) => {
            let end = [&b"\r\n\r\n"[..], b"\n\n"]
                .iter()
                .filter_map(|sep| find(buf, sep).map(|i| i + sep.len()))
                .min();
            match end {
                None => Scan::Partial,
                Some(end) => {
                    let lines = buf[..end].iter().filter(|&&b| b == b'\n').count();
                    // Less the request line and the blank line.
                    if lines.saturating_sub(2) > max {
                        Scan::TooManyHeaders
                    } else {
                        Scan::Complete(None)
                    }
                }
            }
        }
    }
}

/// The length of a request with a `head` bytes long head: the head plus its `Content-Length`
/// (none: no body). `None` when it cannot be known from the head (chunked, or lengths that
/// disagree, which Pingora refuses anyway).
fn request_length(head: usize, headers: &[httparse::Header<'_>]) -> Option<usize> {
    let mut length: Option<usize> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    head.checked_add(length.unwrap_or(0))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Answers `error` and shuts the connection's sending side; the body bytes sent.
async fn reject(stream: &mut Stream, error: &RequestError, request_id: &str) -> usize {
    let status = http::StatusCode::from_u16(error.status()).expect("a valid status");
    let body = error.body();
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
         {}: {request_id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        request_id::HEADER,
        body.len()
    );
    let sent = timeout(REJECT_WRITE, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
    if matches!(sent, Ok(Ok(()))) {
        body.len()
    } else {
        0
    }
}

/// Reads and drops what the client still sends, for a while: see [`LINGER`].
async fn linger(stream: &mut Stream) {
    let mut sink = [0u8; 4096];
    let mut dropped = 0;
    let _ = timeout(LINGER, async {
        while dropped < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_whole_heads_and_counts_headers() {
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHost: a\r\n", 10), Scan::Partial);
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 10),
            Scan::Complete(Some(27))
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\nHost: a\n\nbody", 10),
            Scan::Complete(Some(24))
        );
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(scan(three, 3), Scan::Complete(Some(three.len())));
        assert_eq!(scan(three, 2), Scan::TooManyHeaders);
        // Unfinished, and already over the count.
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC:", 1),
            Scan::TooManyHeaders
        );
    }

    #[test]
    fn a_request_is_as_long_as_its_head_and_content_length() {
        let post = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET /";
        assert_eq!(scan(post, 10), Scan::Complete(Some(post.len() - 5)));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(chunked, 10), Scan::Complete(None));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(scan(two, 10), Scan::Complete(None));
    }

    #[test]
    fn heads_httparse_refuses_are_left_whole_to_pingora() {
        // A space in the target: Pingora escapes it; it needs the whole head for that.
        assert_eq!(scan(b"GET /a b HTTP/1.1\r\nHost: a\r\n", 10), Scan::Partial);
        assert_eq!(
            scan(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 10),
            Scan::Complete(None)
        );
        assert_eq!(
            scan(b"GET /a b HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 1),
            Scan::TooManyHeaders
        );
    }
}
