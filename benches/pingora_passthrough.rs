//! A bare Pingora pass-through: the `pingora` row of the load bench, the limit the gate's
//! public route is measured against. A `ProxyHttp` that sends every request to one upstream,
//! with no routing, no session work and no header changes.
//!
//! Everything else is as the gate runs in the bench, so that the two rows differ by the gate's
//! own work only: the same Pingora (0.9.1, the same features), the workspace's release profile
//! (fat LTO, one codegen unit; the bench builds it with `cargo build --release`), mimalloc as
//! the gate binary's allocator, one worker thread (`threads = 1`), Pingora's own keep-alive
//! towards the client (60 s) and its upstream connection pool.
//!
//! Usage: `pingora-passthrough <listen address> <upstream address>`, e.g.
//! `pingora-passthrough 127.0.0.1:8080 127.0.0.1:3000`.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, Result, Server};
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

/// As in the gate binary (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: pingora-passthrough <listen address> <upstream address>");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream
        .parse()
        .unwrap_or_else(|e| panic!("upstream address {upstream:?}: {e}"));
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, PassThrough { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
