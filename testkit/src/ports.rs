//! Loopback ports. Every server a test or a bench starts listens on a port of its own, so
//! that tests run in parallel and never meet a server the developer runs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::wait::wait_until;

/// A free loopback address. The listener is dropped before use, which is racy in theory and
/// fine in practice on a machine that is not handing out thousands of ports a second.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
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
