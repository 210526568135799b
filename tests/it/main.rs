//! Integration tests: one binary (each extra `tests/*.rs` would link Pingora again), a module
//! per capability, all on the harness's real Redis, real upstreams and the real gate.

mod harness;
mod interop_harness;

mod admin;
mod assertion;
mod attacks;
mod browser;
mod cache;
mod cluster;
mod config;
mod connections;
mod cookies;
mod cross_origin;
mod edge;
mod failover;
mod forward_auth;
mod identity;
mod interop;
mod lifecycle;
mod limits;
mod memory_bound;
mod observability;
mod outage;
mod postgres;
mod postgres_interop;
mod protocols;
mod revocation;
mod rolling;
mod routing;
mod sentinel;
mod shared_state;
mod timeouts;
mod tls;
mod tokens;
mod updates;
mod upgrades;
mod user_cap;
