//! sessiongate's test kit: what the integration tests (`tests/it`) and the benches
//! (`benches/`) both need to stand up real servers around the gate, written once.
//!
//! - [`ProcessGuard`]: a child process that is killed when dropped and when its parent dies
//!   (PR_SET_PDEATHSIG), with its output kept for failure messages;
//! - [`Redis`]: a private `redis-server` on a unix socket or a loopback TCP port;
//! - [`RedisCluster`]: a private Redis Cluster, three masters and three replicas on loopback;
//! - [`RedisSentinel`]: a master, its replica and a sentinel watching them, on loopback;
//! - [`Upstream`] and [`serve`]: HTTP/1.1 upstreams on hyper (the echo upstream of the tests,
//!   or any fixed answer, as the load bench's upstream process gives);
//! - [`free_addr`], [`free_port`], [`wait_for_port`], [`wait_for`], [`wait_until`]: ports and
//!   polling with a deadline.
//!
//! Nothing here knows the gate: its config, cookies, clients and TLS material stay in the
//! test harness (`tests/it/harness.rs`) and in the benches.

pub mod ports;
pub mod postgres_server;
pub mod process;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod upstream;
pub mod wait;

pub use ports::{free_addr, free_port, port_open, wait_for_port};
pub use postgres_server::Postgres;
pub use process::{on_path, status_kib, ProcessGuard};
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::RedisSentinel;
pub use redis_server::Redis;
pub use upstream::{echo, serve, Upstream};
pub use wait::{wait_for, wait_until};
