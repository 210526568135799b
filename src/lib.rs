//! sessiongate: a reverse proxy on Pingora that enforces express-session compatible web
//! sessions at the edge, once, for every backend.
//!
//! A request's path (see [`proxy`] for the whole of it): the path is normalised and routed;
//! on protected routes the signed cookie ([`signing`], [`cookie`]) names a session that is
//! loaded from the [`store`]; client-sent identity headers are always stripped and the real
//! ones injected ([`identity`]); the request goes to a server of the route's pool
//! ([`upstreams`]); on the way back the upstream may issue or destroy the session, and rolling
//! sessions get a fresh cookie.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod cookie;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod respond;
pub mod routes;
pub mod server;
pub mod session;
pub mod sessions;
pub mod signing;
pub mod store;
pub mod upstreams;

pub use config::Config;
pub use server::GateServer;
