//! Limits on client connections, for both protocols: how many may be open
//! (`server.max_connections`), how long one may sit idle (`server.idle_timeout`), and, for
//! HTTP/2, how many streams it may run at once (`server.h2_max_streams`) and how long a
//! header block may take (`server.header_timeout`, as for an HTTP/1 head).
//!
//! - **The cap.** A connection accepted beyond `max_connections` is closed at once, before a
//!   byte is read, and counted (`sessiongate_connections_refused_total`); those open are a
//!   gauge (`sessiongate_connections`). A TLS connection is counted once its handshake is
//!   done (Pingora does the handshake before the gate sees the connection).
//! - **Idle.** HTTP/1 waits at most `idle_timeout` for the first byte of a head
//!   ([`crate::head`]); HTTP/2 is closed after `idle_timeout` without an open stream
//!   (Pingora's `h2_idle_timeout`).
//! - **Streams.** `h2_max_streams` is advertised as `SETTINGS_MAX_CONCURRENT_STREAMS`, and the
//!   header list is bounded by `server.max_header_bytes`.
//! - **Header blocks.** The h2 crate buffers a header block (HEADERS then CONTINUATION
//!   frames) until its END_HEADERS flag, with no deadline, and an unfinished block is no
//!   stream yet, so no other timeout sees it. [`H2Watch`] reads the frame headers as the
//!   connection's bytes go by and fails the connection's reads when a block (from the first
//!   byte of its HEADERS frame to the end of the frame that ends it) is not complete within
//!   the header timeout: the connection is closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// `server.max_connections`, `server.idle_timeout`, `server.h2_max_streams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub h2_max_streams: u32,
}

/// The open connections of every listener of the proxy, against the cap.
pub struct Connections {
    open: AtomicUsize,
    max: usize,
    metrics: Arc<Metrics>,
}

impl Connections {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max,
            metrics,
        }
    }

    /// A place for one more connection, held until dropped; `None` at the cap (counted).
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.metrics.connections_refused.inc();
            return None;
        }
        self.metrics.connections.inc();
        Some(Admitted(self.clone()))
    }
}

/// One open connection, counted while it lives.
pub struct Admitted(Arc<Connections>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.connections.dec();
    }
}

/// The client connection preface of HTTP/2, before the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the reader stands in the client's byte stream.
#[derive(Debug)]
enum Frames {
    /// Bytes of the preface left to skip.
    Preface(usize),
    /// A frame header, as far as it came.
    Header {
        got: [u8; FRAME_HEADER_LEN],
        len: usize,
    },
    /// Payload bytes left of the current frame; `ends_block`: it carries END_HEADERS.
    Payload { left: usize, ends_block: bool },
}

/// An HTTP/2 client connection whose header blocks must complete within a deadline: see
/// the module's comment.
pub struct H2Watch {
    inner: Stream,
    timeout: Duration,
    frames: Frames,
    /// Set while a header block is open.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl H2Watch {
    pub fn new(inner: Stream, header_timeout: Duration) -> Self {
        Self {
            inner,
            timeout: header_timeout,
            frames: Frames::Preface(PREFACE_LEN),
            deadline: None,
        }
    }

    /// Follows the frames through bytes the client sent.
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.frames {
                Frames::Preface(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.frames = Frames::Header {
                            got: [0; FRAME_HEADER_LEN],
                            len: 0,
                        };
                    }
                }
                Frames::Header { got, len } => {
                    let n = (FRAME_HEADER_LEN - *len).min(bytes.len());
                    got[*len..*len + n].copy_from_slice(&bytes[..n]);
                    *len += n;
                    bytes = &bytes[n..];
                    if *len < FRAME_HEADER_LEN {
                        continue;
                    }
                    let length = u32::from_be_bytes([0, got[0], got[1], got[2]]) as usize;
                    let (kind, flags) = (got[3], got[4]);
                    let in_block = matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION);
                    if in_block && self.deadline.is_none() {
                        self.deadline = Some(Box::pin(tokio::time::sleep(self.timeout)));
                    }
                    let ends_block = in_block && flags & END_HEADERS != 0;
                    self.frames = Frames::Payload {
                        left: length,
                        ends_block,
                    };
                    if length == 0 {
                        self.frame_done();
                    }
                }
                Frames::Payload { left, .. } => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.frame_done();
                    }
                }
            }
        }
    }

    fn frame_done(&mut self) {
        if let Frames::Payload {
            ends_block: true, ..
        } = self.frames
        {
            self.deadline = None;
        }
        self.frames = Frames::Header {
            got: [0; FRAME_HEADER_LEN],
            len: 0,
        };
    }
}

impl std::fmt::Debug for H2Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Watch")
            .field("inner", &self.inner)
            .field("block_open", &self.deadline.is_some())
            .finish()
    }
}

impl AsyncRead for H2Watch {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!("an HTTP/2 header block was not complete within the header timeout; connection closed");
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "HTTP/2 header block not complete within server.header_timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let fresh = buf.filled()[before..].to_vec();
            let was_open = this.deadline.is_some();
            this.observe(&fresh);
            // A block that just opened: its deadline must be able to wake this task.
            if !was_open {
                if let Some(deadline) = this.deadline.as_mut() {
                    let _ = deadline.as_mut().poll(cx);
                }
            }
        }
        read
    }
}

impl AsyncWrite for H2Watch {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for H2Watch {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for H2Watch {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for H2Watch {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for H2Watch {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for H2Watch {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for H2Watch {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for H2Watch {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    fn watch() -> H2Watch {
        let (a, _b) = tokio::io::duplex(64);
        H2Watch::new(Box::new(a), Duration::from_secs(10))
    }

    #[tokio::test]
    async fn a_header_block_is_open_from_its_headers_frame_to_end_headers() {
        let mut w = watch();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        w.observe(&bytes);
        assert!(w.deadline.is_none());
        let headers = frame(HEADERS, 0, b"abc");
        w.observe(&headers[..4]);
        assert!(w.deadline.is_none(), "half a frame header is nothing yet");
        w.observe(&headers[4..]);
        assert!(
            w.deadline.is_some(),
            "HEADERS without END_HEADERS opens a block"
        );
        w.observe(&frame(CONTINUATION, 0, b"de"));
        assert!(w.deadline.is_some());
        let last = frame(CONTINUATION, END_HEADERS, b"fg");
        w.observe(&last[..10]);
        assert!(
            w.deadline.is_some(),
            "open until the ending frame's payload is in"
        );
        w.observe(&last[10..]);
        assert!(w.deadline.is_none());
        w.observe(&frame(HEADERS, END_HEADERS, b""));
        assert!(w.deadline.is_none(), "a one-frame block closes at once");
        w.observe(&frame(0x0, 0, &[1; 40])); // DATA
        assert!(w.deadline.is_none());
    }
}
