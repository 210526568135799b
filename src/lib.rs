//! sessiongate: a reverse proxy on Pingora that enforces express-session compatible web
//! sessions at the edge, once, for every backend.
//!
//! A request's path (see [`proxy`] for the whole of it): the request target, host and path
//! are checked and made canonical ([`path`], [`routes`]) and a route is chosen; on protected
//! routes the signed cookie ([`signing`], [`cookie`]) names a session that the session
//! service ([`sessions`]) loads from the [`store`]; client-sent identity headers are always
//! stripped and the real ones injected ([`identity`]); the request goes to a server of the
//! route's pool ([`upstreams`]); on the way back the upstream's [`directives`] may issue,
//! change or destroy the session, and rolling sessions get a fresh cookie. What happens to a
//! request (route, cross-origin check, session, pass, login or refusal) is one decision,
//! [`decide`], which forward-auth ([`forward_auth`]) takes too for an edge that proxies the
//! request itself. Every refusal is one [`error::RequestError`]. The [`config`] is assembled from the settings types these
//! modules own; nothing but `config` reads the file's types.
//!
//! Modules are private to the crate. What the binary, the tests and the benches use is
//! re-exported below.

#![forbid(unsafe_code)]

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod assertion;
pub(crate) mod config;
pub(crate) mod connections;
pub(crate) mod cookie;
pub(crate) mod cross_origin;
pub(crate) mod decide;
pub(crate) mod directives;
pub(crate) mod error;
pub(crate) mod forward_auth;
pub(crate) mod forwarded;
pub(crate) mod head;
pub(crate) mod identity;
pub(crate) mod method_override;
pub(crate) mod metrics;
pub(crate) mod path;
pub(crate) mod probes;
pub(crate) mod proxy;
pub(crate) mod record;
pub(crate) mod reload;
pub(crate) mod request;
pub(crate) mod request_id;
pub(crate) mod respond;
pub(crate) mod routes;
pub(crate) mod runtime;
pub(crate) mod server;
pub(crate) mod sessions;
pub(crate) mod signing;
pub(crate) mod store;
pub(crate) mod upstreams;

pub use access_log::{AccessFormat, LogFormat, LogSettings, Sink as AccessLogSink};
pub use config::{Config, ConfigError};
pub use server::{offline_sessions, GateServer, OfflineError};
pub use sessions::{Listed, RevokeError, Sessions};
pub use store::StoreSettings;

/// The per-request building blocks the proxy calls, for the hot-path benches: the benches
/// measure these very functions, not copies of them.
pub mod hot_path {
    pub use crate::assertion::{AssertionSettings, Assertions, Binding, SigningKey};
    pub use crate::cookie::{decode_value, encode_value, values, CookiePolicy, SameSite, Secure};
    pub use crate::cross_origin::{
        check as cross_origin_check, CrossOrigin, Origin, Policy, Request as CrossOriginRequest,
        Verdict,
    };
    pub use crate::identity::{Identity, IdentitySettings};
    pub use crate::path::{normalize_path, PathPolicy};
    pub use crate::record::SessionRecord;
    pub use crate::routes::{AuthMode, HostPattern, Route, RouteTable};
    pub use crate::signing::Signer;
    pub use crate::store::MemoryStore;
}

/// What sessions cost in memory, as the cache and the embedded store count it: for the tests
/// that check those counts against a counting allocator, and for the benches.
pub mod footprint {
    use std::sync::Arc;
    use std::time::Duration;

    pub use crate::record::{alloc_bytes, sample_session, SessionRecord};
    pub use crate::store::{memory_entry_weight, MemorySettings, MemoryStore, SessionStore};

    /// The local cache itself (live, as with its invalidation stream connected), with the
    /// weigher and admission the gate uses.
    pub struct Cache(crate::store::SessionCache);

    impl Cache {
        pub fn new(max_bytes: u64) -> Self {
            let c = crate::store::SessionCache::new(
                &crate::store::CacheSettings {
                    max_bytes,
                    ttl: Duration::from_secs(300),
                },
                Arc::default(),
            );
            c.set_live(true);
            Self(c)
        }

        /// Caches `record` as a load from the store would.
        pub fn insert(&self, sid: &str, record: Arc<SessionRecord>) {
            let ttl = Duration::from_secs(300);
            self.0.insert(sid, record, ttl, ttl, self.0.generation());
        }

        pub fn contains(&self, sid: &str) -> bool {
            self.0.get(sid).is_some()
        }

        /// What the entries weigh together, by the cache's own count, once its pending work
        /// (admissions, evictions) is done.
        pub fn bytes(&self) -> u64 {
            self.0.settle();
            self.0.bytes()
        }

        pub fn entries(&self) -> u64 {
            self.0.settle();
            self.0.entry_count()
        }
    }

    /// What the cache counts for an entry of `record` under `sid`.
    pub fn cache_entry_weight(sid: &str, record: &SessionRecord) -> u64 {
        crate::store::cache_entry_weight(sid, record)
    }
}

/// What the demo example needs beyond the gate itself.
pub use record::new_session_id;
