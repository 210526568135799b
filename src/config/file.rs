//! `proxy.toml` exactly as an operator writes it.
//!
//! A long file of uniform definitions (one struct per table, one documented field per key,
//! their defaults), kept together so that the whole file format reads in one place.
//!
//! These structs only describe the file: every key has a default here, unknown keys are
//! rejected, and values that need no context (durations, enums) are parsed by serde so that
//! their errors carry a line. Everything that needs the whole file (an upstream a route names,
//! a secret read from the environment) is checked in [`super::runtime`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The default listener: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// express-session's default cookie name, so a gate in front of an express fleet needs no setting.
pub const DEFAULT_COOKIE_NAME: &str = "connect.sid";
/// connect-redis's default key prefix.
pub const DEFAULT_PREFIX: &str = "sess:";
/// connect-redis's default TTL for sessions whose cookie has no max-age (one day).
pub const DEFAULT_TTL: Duration = Duration::from_secs(86_400);
/// A Redis answer slower than this is an outage, not a slow request: the client gets a 503
/// instead of waiting with a held connection.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// What a 503 tells clients to wait before retrying when the store is down.
pub const DEFAULT_RETRY_AFTER: Duration = crate::store::DEFAULT_RETRY_AFTER;
/// How long shutdown lets in-flight requests finish; Pingora's own default is 300 s.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// How often each upstream server's TCP port is probed.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A request head (request line and headers) larger than this is answered 431. Browsers send
/// a few KiB; 32 KiB leaves room for large cookies and tokens.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// More request headers than this is answered 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// A request head not complete this long after its first byte is answered 408.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pingora's keep-alive timeout for a new HTTP/1 connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// About 1 GiB of idle connections at the ~90 KB each one costs.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Pingora's (and nginx's `http2_max_concurrent_streams`) default.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub session: SessionSection,
    #[serde(default)]
    pub redis: RedisSection,
    #[serde(default)]
    pub postgres: PostgresSection,
    #[serde(default)]
    pub identity: IdentitySection,
    pub admin: Option<AdminSection>,
    pub forward_auth: Option<ForwardAuthSection>,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub memory: MemorySection,
    #[serde(default)]
    pub upstream: Vec<Spanned<UpstreamSection>>,
    #[serde(default)]
    pub route: Vec<Spanned<RouteSection>>,
    #[serde(default)]
    pub log: LogSection,
}

/// Logs: the access log on stdout, the diagnostic log on stderr.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// One line per request on stdout.
    pub access: AccessLogSetting,
    /// The diagnostic log's format.
    pub format: LogFormatSetting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogSetting {
    Json,
    Text,
    #[default]
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatSetting {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Plain HTTP listeners.
    pub listen: Vec<Spanned<String>>,
    /// HTTPS listeners; `Secure` cookies follow automatically on these.
    pub tls: Option<TlsSection>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Removed: `trusted_proxies` replaces it. Kept here only to say so.
    pub trust_forwarded_proto: Option<Spanned<bool>>,
    /// Networks (CIDRs) of the proxies in front of the gate, whose `X-Forwarded-*` headers
    /// are believed. None by default: every peer is the client itself.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// What a state-changing request another origin made with the session cookie gets:
    /// refused with 403 (`refuse`), let through and logged (`report`), or not checked
    /// (`allow`). A route's `cross_origin` overrides it.
    pub cross_origin: CrossOriginSetting,
    /// Origins (`https://partner.example`) whose requests always pass the cross-origin check.
    pub trusted_origins: Vec<Spanned<String>>,
    /// The unix socket a new process (`sessiongate --upgrade`) takes the listeners from.
    pub upgrade_socket: Option<Spanned<String>>,
    /// Route paths match case-insensitively, because most web frameworks route that way and a
    /// case-sensitive rule would let `/ACCOUNT/` past a rule for `/account/`.
    pub case_sensitive_paths: bool,
    /// `;` parameters in path segments (`/account;jsessionid=x/`), which servlet containers
    /// strip before routing: refused with 400 (`reject`), removed (`strip`), or passed to the
    /// upstream (`keep`). Routes always match on the path without them.
    pub path_parameters: PathParameters,
    /// `%25` followed by two hex digits (`%252e`), which an upstream that decodes twice reads
    /// as another byte (`.`): refused with 400 (`reject`) or let through (`allow`).
    pub double_encoding: DoubleEncoding,
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// After SIGTERM, how long the gate goes on accepting requests with `/readyz` answering
    /// 503, before it stops accepting and starts the grace period.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// The largest request head (request line and headers, in bytes); larger ones get 431.
    pub max_header_bytes: usize,
    /// The most headers a request may have; more get 431.
    pub max_headers: usize,
    /// How long a request head may take to arrive, from its first byte; slower ones get 408
    /// (HTTP/1). An HTTP/2 header block that takes longer closes its connection.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a client connection may wait between requests (HTTP/1) or without a stream
    /// (HTTP/2) before it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The most client connections open at once; more are closed as they come.
    pub max_connections: usize,
    /// The most concurrent streams of one HTTP/2 connection.
    pub h2_max_streams: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathParameters {
    #[default]
    Reject,
    Strip,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CrossOriginSetting {
    #[default]
    Refuse,
    Report,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DoubleEncoding {
    #[default]
    Reject,
    Allow,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: vec![Spanned::new(0..0, DEFAULT_LISTEN.to_string())],
            tls: None,
            threads: 1,
            trust_forwarded_proto: None,
            trusted_proxies: Vec::new(),
            cross_origin: CrossOriginSetting::Refuse,
            trusted_origins: Vec::new(),
            upgrade_socket: None,
            case_sensitive_paths: false,
            path_parameters: PathParameters::Reject,
            double_encoding: DoubleEncoding::Reject,
            grace_period: DEFAULT_GRACE_PERIOD,
            drain_delay: Duration::ZERO,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            h2_max_streams: DEFAULT_H2_MAX_STREAMS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Vec<Spanned<String>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    Redis,
    Postgres,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    #[serde(default = "default_cookie_name")]
    pub cookie_name: Spanned<String>,
    /// `env:NAME`, `file:/path` or the secret itself; the first signs, all verify.
    pub secrets: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "default_store")]
    pub store: StoreKind,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "yes")]
    pub rolling: bool,
    /// Push the TTL forward on every authenticated request even when `rolling` is off, as
    /// express-session with `resave: false` and connect-redis do (their `disableTouch` is `touch = false`).
    #[serde(default = "yes")]
    pub touch: bool,
    /// How long a session lives without requests when its cookie has no max-age (connect-redis
    /// `ttl`). A cookie max-age is the idle timeout of its sessions, as in express-session.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Ends a session this long after it was created, however active it is.
    #[serde(default, with = "humantime_serde")]
    pub absolute_timeout: Option<Duration>,
    /// Push a session's TTL forward only when it has fallen by more than this since the last
    /// push. Defaults to 0 (every request, as express-session) without the local cache and
    /// to 1 minute with it, because every TTL change invalidates cached copies.
    #[serde(default, with = "humantime_serde")]
    pub touch_interval: Option<Duration>,
    /// The longest life an upstream may ask for with `X-Session-Max-Age` (remember me).
    #[serde(default = "default_remember_max", with = "humantime_serde")]
    pub remember_max: Duration,
    /// Top-level session field that names the user, for the per-user index behind "log out
    /// everywhere" and the admin API.
    #[serde(default = "default_user_field")]
    pub user_field: String,
    /// Key prefix of the per-user session indexes in the store.
    #[serde(default = "default_index_prefix")]
    pub index_prefix: String,
    /// At most this many live sessions per user (Spring Security's `maximumSessions`); none
    /// by default.
    pub max_per_user: Option<Spanned<i64>>,
    /// What a login past `max_per_user` does: end the user's oldest session, or refuse.
    pub max_per_user_action: Option<Spanned<MaxPerUserAction>>,
    /// Record the client's user agent and IP address in the session at login, for the admin
    /// API's session list.
    #[serde(default = "yes")]
    pub record_client: bool,
    /// A POST to this path is answered by the gate: the session is destroyed, the cookie expired.
    pub logout_path: Option<Spanned<String>>,
    /// Where the logout answer redirects (303); without it the answer is 204.
    pub logout_redirect: Option<Spanned<String>>,
    /// Query parameter that carries the return path on a login redirect.
    #[serde(default = "default_return_param")]
    pub return_param: String,
    #[serde(default)]
    pub cookie: CookieSection,
    /// Accept the signed session token from a request header too, for clients without cookies.
    pub token: Option<TokenSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// The request header that carries `<scheme> <token>`.
    #[serde(default = "default_token_header")]
    pub header: Spanned<String>,
    #[serde(default = "default_token_scheme")]
    pub scheme: String,
}

/// `max_per_user_action = "end_oldest" | "refuse"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxPerUserAction {
    EndOldest,
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteSetting {
    Lax,
    Strict,
    None,
    /// Send no SameSite attribute (express-session's default).
    Off,
}

/// `secure = true | false | "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SecureSetting {
    Fixed(bool),
    Named(SecureNamed),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureNamed {
    Auto,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieSection {
    pub path: String,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: SecureSetting,
    pub same_site: SameSiteSetting,
    /// Without it the cookie lasts for the browser session and the store keeps `default_ttl`.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

impl Default for CookieSection {
    fn default() -> Self {
        Self {
            path: "/".into(),
            domain: None,
            http_only: true,
            secure: SecureSetting::Named(SecureNamed::Auto),
            same_site: SameSiteSetting::Lax,
            max_age: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://[:password@]host:port/db`, `rediss://…` or `redis+unix:///path/to/socket`.
    pub url: Spanned<String>,
    /// Bound on every store operation, connection set-up included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The `Retry-After` a 503 carries while the store is unreachable.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// PEM CA certificate(s) for `rediss://` servers with a private CA; the system roots
    /// otherwise.
    pub ca_file: Option<Spanned<String>>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, `rediss://…`, ACL user and password
    /// in the URLs); `url` is not used then.
    pub cluster: Option<Spanned<Vec<String>>>,
    /// Redis Sentinel: the sentinels name the master; `url` gives the data nodes'
    /// credentials, database and TLS (its host is not used).
    pub sentinel: Option<Spanned<SentinelSection>>,
}

/// `[redis] sentinel = { master = "mymaster", nodes = ["redis://host:26379"], password = … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelSection {
    /// The name the sentinels monitor the master under.
    pub master: String,
    /// The sentinels' URLs.
    pub nodes: Vec<String>,
    /// The sentinels' own password: `env:NAME`, `file:/path` or the password itself.
    pub password: Option<String>,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: Spanned::new(0..0, "redis://127.0.0.1:6379/0".into()),
            timeout: DEFAULT_REDIS_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
            ca_file: None,
            cluster: None,
            sentinel: None,
        }
    }
}

/// The PostgreSQL store (`store = "postgres"`): connect-pg-simple's table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSection {
    /// `postgres://user@host:port/db`, TLS with `?sslmode=require` (verified with the system
    /// roots or `ca_file`).
    pub url: Spanned<String>,
    /// The password: `env:NAME`, `file:/path` or the password itself; overrides one in `url`.
    pub password: Option<Spanned<String>>,
    /// PEM CA certificate(s) for a server with a private CA.
    pub ca_file: Option<Spanned<String>>,
    /// connect-pg-simple's `schemaName`.
    pub schema: Spanned<String>,
    /// connect-pg-simple's `tableName`.
    pub table: Spanned<String>,
    /// connect-pg-simple's `createTableIfMissing`: run its `table.sql` when the table is missing.
    pub create_table: bool,
    /// Create the expression index on `session.user_field` that per-user lookups use.
    pub create_user_index: bool,
    /// Create the trigger that notifies gates of deletes and `sess` updates (the local
    /// cache's invalidations).
    pub create_notify_trigger: bool,
    /// How often expired rows are deleted (randomised to 50-150 %); `"0s"`: never.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Connections kept at most.
    pub pool_size: Spanned<usize>,
    /// Bound on every store operation, connecting included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The `Retry-After` a 503 carries while the store is unreachable.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            url: Spanned::new(0..0, "postgres://postgres@127.0.0.1:5432/postgres".into()),
            password: None,
            ca_file: None,
            schema: Spanned::new(0..0, "public".into()),
            table: Spanned::new(0..0, "session".into()),
            create_table: false,
            create_user_index: false,
            create_notify_trigger: false,
            prune_interval: crate::store::DEFAULT_PRUNE_INTERVAL,
            pool_size: Spanned::new(0..0, crate::store::DEFAULT_POOL_SIZE),
            timeout: DEFAULT_REDIS_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

/// The local session cache in front of Redis or PostgreSQL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// On by default with the Redis store; it only serves while Redis's invalidation stream
    /// (client-side caching, `CLIENT TRACKING`) is connected.
    pub enabled: bool,
    /// Memory bound: what the cached sessions hold (parsed record, id, the cache's own
    /// bookkeeping), as measured.
    pub max_bytes: u64,
    /// The longest an entry is served without asking Redis, even with no invalidation.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: DEFAULT_CACHE_BYTES,
            ttl: DEFAULT_CACHE_TTL,
        }
    }
}

/// The embedded store (`store = "memory"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Memory bound: what the sessions held weigh (JSON, parsed record, ids, indexes). When
    /// full, new sessions are refused (503 `store_full`); none is ever evicted.
    pub max_bytes: u64,
}

impl Default for MemorySection {
    fn default() -> Self {
        Self {
            max_bytes: crate::store::DEFAULT_MEMORY_BYTES,
        }
    }
}

/// 16 MiB: some 5 000 typical sessions (a small login session weighs about 3 KB parsed).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// A safety net only: invalidations normally arrive within a millisecond.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// With the cache on, TTL pushes are throttled to this, because each one invalidates every
/// gate's copy of the session.
pub const DEFAULT_CACHED_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Forward-auth: the decision for an edge that proxies itself (nginx `auth_request`, Caddy,
/// Traefik, HAProxy, Envoy), on a listener of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthSection {
    pub listen: Vec<Spanned<String>>,
    /// Networks (CIDRs) or addresses of the edges whose reports of the original request are
    /// believed; every other caller gets 403.
    pub trusted: Vec<Spanned<String>>,
}

/// The admin API: its own listener, never the public one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_listen")]
    pub listen: Spanned<String>,
    /// `env:NAME` or `file:/path` (or the token itself); requests need `Authorization: Bearer <token>`.
    pub token: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Header name -> JSON pointer into the session (`/user`, `/profile/email`).
    pub headers: BTreeMap<String, Spanned<String>>,
    /// More header names that are removed from every client request and never injected.
    pub strip: Vec<Spanned<String>>,
    /// A signed JWT per proxied request.
    pub assertion: Option<Spanned<AssertionSection>>,
}

/// `[identity.assertion]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionSection {
    #[serde(default = "default_assertion_header")]
    pub header: Spanned<String>,
    /// `file:/path` of a PKCS#8 PEM private key (or `env:NAME`).
    pub key: Option<Spanned<String>>,
    /// During rotation: the first signs, all are published.
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
    pub issuer: Spanned<String>,
    #[serde(default = "default_assertion_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Claim name -> JSON pointer into the session.
    #[serde(default)]
    pub claims: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub bind_request: bool,
}

fn default_assertion_header() -> Spanned<String> {
    Spanned::new(0..0, "X-Session-Assertion".into())
}

fn default_assertion_ttl() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub name: Spanned<String>,
    pub servers: Vec<Spanned<String>>,
    /// Connect to these servers over TLS.
    #[serde(default)]
    pub tls: bool,
    /// SNI and certificate name for TLS upstreams.
    #[serde(default)]
    pub sni: String,
    #[serde(default = "yes")]
    pub health_check: bool,
    /// Also how often host names in `servers` are resolved again.
    #[serde(default = "default_health_check_interval", with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Establishing a connection to a server.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Waiting for the server to answer (each read of the response).
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Each write of the request to the server.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long an idle pooled connection to a server is kept.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSetting {
    Required,
    Optional,
    Public,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Segment-aware prefix: `/account/` matches `/account`, `/account/` and `/account/x`.
    pub path: Spanned<String>,
    /// Exact host or `*.example.com`; any host when absent.
    pub host: Option<Spanned<String>>,
    /// Methods this route answers; all when absent.
    pub methods: Option<Vec<Spanned<String>>>,
    /// The pool requests go to; a route may go without one only where the gate does not
    /// proxy (no `server.listen`, no TLS listener): forward-auth alone.
    pub upstream: Option<Spanned<String>>,
    pub auth: AuthSetting,
    /// Send unauthenticated GET/HEAD requests here instead of answering 401.
    pub login_redirect: Option<Spanned<String>>,
    /// The upstream may answer `X-Session-Issue` / `X-Session-Destroy`.
    #[serde(default)]
    pub issue_sessions: bool,
    /// Pass `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override` to this route's
    /// upstream (they are removed everywhere else). The overriding method must be one this
    /// same route serves.
    #[serde(default)]
    pub method_override: bool,
    /// Remove the session cookie from requests to this route's upstream (other cookies
    /// stay): the upstream never holds the bearer secret.
    #[serde(default)]
    pub strip_session_cookie: bool,
    /// The `aud` of `[identity.assertion]` tokens on this route; the upstream's name if unset.
    pub audience: Option<Spanned<String>>,
    /// This route's cross-origin policy; `server.cross_origin` if unset.
    pub cross_origin: Option<CrossOriginSetting>,
}

fn yes() -> bool {
    true
}
fn default_cookie_name() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_COOKIE_NAME.into())
}
fn default_store() -> StoreKind {
    StoreKind::Memory
}
fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}
fn default_ttl() -> Duration {
    DEFAULT_TTL
}
fn default_remember_max() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_user_field() -> String {
    "user".into()
}
fn default_index_prefix() -> String {
    "sessidx:".into()
}
fn default_token_header() -> Spanned<String> {
    Spanned::new(0..0, "authorization".into())
}
fn default_token_scheme() -> String {
    "Session".into()
}
fn default_admin_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".into())
}
fn default_return_param() -> String {
    "return_to".into()
}
fn default_health_check_interval() -> Duration {
    DEFAULT_HEALTH_CHECK_INTERVAL
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
