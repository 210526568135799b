//! Loopback ports. Every server a test or a bench starts listens on a port of its own, so
//! that tests run in parallel and never meet a server the developer runs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::wait::wait_until;

/// Ports handed out by [`free_addr`]: below Linux's ephemeral range (32768–60999), so that no
/// `bind(0)` listener and no outgoing connection of this or another process is ever given one
/// between the check here and the server's own bind.
const RANGE: std::ops::Range<u32> = 20_000..32_000;

/// The next port to try; each process starts at an offset of its own.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A free loopback address for a server that binds it later: each port is handed out once per
/// process, from a range the kernel never assigns by itself, and only if nothing listens on it
/// now. Servers that can bind port 0 themselves should.
pub fn free_addr() -> SocketAddr {
    let span = RANGE.end - RANGE.start;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = RANGE.start + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("a bound listener has an address");
        }
    }
    panic!("no free loopback port in {RANGE:?}")
}

/// The port of [`free_addr`].
pub fn free_port() -> u16 {
    free_addr().port()
}

/// Something accepts connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Waits until something accepts connections on 127.0.0.1:`port`. For a child process, prefer
/// [`crate::ProcessGuard::wait_for_port`], which also notices that it exited.
pub fn wait_for_port(port: u16, timeout: Duration) {
    wait_until(&format!("a listener on 127.0.0.1:{port}"), timeout, || {
        port_open(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_closed_until_bound() {
        let port = free_port();
        assert!(!port_open(port));
        let _l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        wait_for_port(port, Duration::from_secs(1));
    }
}
