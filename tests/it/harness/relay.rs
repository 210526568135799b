//! A TCP relay in front of a harness Redis whose connections can be frozen: they stop
//! forwarding bytes in both directions yet stay open, with no FIN and no RST. That is what a
//! frozen Redis or a blackholed network path looks like to the gate, and what closing or
//! killing a real `redis-server` cannot produce.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::Redis;

/// Listens on 127.0.0.1; every accepted connection is relayed to the Redis unix socket.
pub struct FreezableRelay {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Link {
    /// The client sent `CLIENT TRACKING` on this connection.
    tracking: AtomicBool,
    frozen: AtomicBool,
}

impl FreezableRelay {
    pub async fn start(redis: &Redis) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = redis.socket();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let registry = links.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when the relay is dropped) aborts every pump with it.
            let mut pumps = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::UnixStream::connect(&socket).await else {
                    continue;
                };
                let link = Arc::new(Link::default());
                registry.lock().unwrap().push(link.clone());
                let (client_rx, client_tx) = client.into_split();
                let (server_rx, server_tx) = server.into_split();
                pumps.spawn(pump(client_rx, server_tx, link.clone(), true));
                pumps.spawn(pump(server_rx, client_tx, link, false));
                while pumps.try_join_next().is_some() {}
            }
        });
        FreezableRelay { addr, links, task }
    }

    /// `redis://` URL of the relay, for `GateBuilder::redis_url`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Freezes every connection that has sent `CLIENT TRACKING` so far; returns how many.
    /// Connections made later are relayed as usual.
    pub fn freeze_tracking(&self) -> usize {
        let links = self.links.lock().unwrap();
        let tracking = links.iter().filter(|l| l.tracking.load(Ordering::SeqCst));
        tracking
            .inspect(|l| l.frozen.store(true, Ordering::SeqCst))
            .count()
    }
}

impl Drop for FreezableRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction. On a frozen link it stops where it is, holding both sockets open:
/// whatever it read is not forwarded, and an end of stream is not passed on either.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    link: Arc<Link>,
    sniff: bool,
) {
    const WORD: &[u8] = b"TRACKING";
    let mut buf = vec![0u8; 16 * 1024];
    // The last bytes of the previous read, so that a word split across reads is still seen.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let read = from.read(&mut buf).await;
        if link.frozen.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if sniff {
            carry.extend_from_slice(&buf[..n]);
            if carry
                .windows(WORD.len())
                .any(|w| w.eq_ignore_ascii_case(WORD))
            {
                link.tracking.store(true, Ordering::SeqCst);
            }
            carry.drain(..carry.len().saturating_sub(WORD.len() - 1));
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
