//! What requests are served with: a [`Runtime`] is everything a request needs from the
//! config (routes, pools, the session service with its secrets, cookie policy and timeouts,
//! identity headers and assertions, the path policy, the trusted proxies). The fronts hold the
//! current one in an `ArcSwap`; each request takes it once, at its start, and keeps it to its
//! end, so a reload ([`crate::reload`]) never changes a request halfway.

use std::sync::Arc;

use crate::assertion::Assertions;
use crate::cross_origin::CrossOrigin;
use crate::forwarded::TrustedProxies;
use crate::identity::Identity;
use crate::metrics::SeriesCache;
use crate::path::PathPolicy;
use crate::routes::RouteTable;
use crate::sessions::Sessions;
use crate::upstreams::Pool;

/// Everything one request is served with.
pub struct Runtime {
    pub routes: RouteTable,
    pub pools: Vec<Arc<Pool>>,
    pub sessions: Sessions,
    pub identity: Identity,
    /// `[identity.assertion]`, with its cache of unbound tokens.
    pub assertions: Option<Assertions>,
    pub path_policy: PathPolicy,
    pub trusted_proxies: TrustedProxies,
    /// `server.cross_origin` and `server.trusted_origins` (a route may override the policy).
    pub cross_origin: CrossOrigin,
    /// What a 503 tells clients to wait, in seconds.
    pub retry_after_secs: String,
    /// The metric series of these routes and pools, resolved once each.
    pub series: SeriesCache,
}
