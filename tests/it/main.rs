//! Integration tests: one binary (each extra `tests/*.rs` would link Pingora again), a module
//! per capability, all on the harness's real Redis, real upstreams and the real gate.

mod harness;
mod interop_harness;

mod admin;
mod cache;
mod config;
mod cookies;
mod identity;
mod interop;
mod lifecycle;
mod outage;
mod revocation;
mod rolling;
mod routing;
mod shared_state;
mod timeouts;
mod tls;
mod tokens;
mod updates;
