//! Integration tests: one binary (each extra `tests/*.rs` would link Pingora again), a module
//! per capability, all on the harness's real Redis, real upstreams and the real gate.

mod harness;

mod config;
mod cookies;
mod identity;
mod lifecycle;
mod outage;
mod rolling;
mod routing;
mod shared_state;
mod tls;
