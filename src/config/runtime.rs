//! The validated configuration the gate runs on. Nothing here is deserialized directly: every
//! value came through [`validate`], which is the only place config errors are raised.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::file::{self, AuthMode, FileConfig, SameSite, SecureNamed, SecureSetting, StoreKind};
use super::{line_of, ConfigError};
use crate::identity::canonical_header_name;
use crate::path::normalize_path;
use crate::routes::HostPattern;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<String>,
    pub tls: Option<TlsSettings>,
    pub threads: usize,
    pub trust_forwarded_proto: bool,
    pub case_sensitive_paths: bool,
    pub grace_period: Duration,
    pub session: SessionSettings,
    pub store: StoreSettings,
    pub identity: IdentitySettings,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
    pub admin: Option<AdminSettings>,
    /// `None` when off, or when the store is the embedded one (which needs no cache).
    pub cache: Option<CacheSettings>,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub max_bytes: u64,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub listen: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    /// Raw secret bytes; the first signs. Never printed (see the Debug impl).
    pub secrets: Vec<Vec<u8>>,
    pub prefix: String,
    pub rolling: bool,
    pub touch: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Option<Duration>,
    pub touch_interval: Duration,
    pub remember_max: Duration,
    pub user_field: String,
    pub index_prefix: String,
    pub record_client: bool,
    pub token: Option<TokenSettings>,
    pub logout_path: Option<String>,
    pub logout_redirect: Option<String>,
    pub return_param: String,
    pub cookie: CookieSettings,
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("cookie_name", &self.cookie_name)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("prefix", &self.prefix)
            .field("rolling", &self.rolling)
            .field("touch", &self.touch)
            .field("idle_timeout", &self.idle_timeout)
            .field("logout_path", &self.logout_path)
            .field("cookie", &self.cookie)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub header: HeaderName,
    /// Compared case-insensitively, followed by one space.
    pub scheme: String,
}

#[derive(Clone)]
pub struct AdminSettings {
    pub listen: String,
    pub token: Vec<u8>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secure {
    Always,
    Never,
    /// Only when the client reached the gate over TLS.
    Auto,
}

#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub path: String,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: Secure,
    pub same_site: Option<&'static str>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum StoreSettings {
    Memory,
    Redis(RedisSettings),
}

#[derive(Clone)]
pub struct RedisSettings {
    pub url: String,
    pub timeout: Duration,
    pub retry_after: Duration,
    /// PEM roots for `rediss://`.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisSettings {
    /// A client for these settings: the URL, and the private CA when there is one.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        self.client_with(redis::ProtocolVersion::RESP2)
    }

    /// The same with RESP3, which the cache's invalidation stream needs for push messages.
    pub fn client_with(
        &self,
        protocol: redis::ProtocolVersion,
    ) -> redis::RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let info = self.url.as_str().into_connection_info()?;
        let redis_info = info.redis_settings().clone().set_protocol(protocol);
        let info = info.set_redis_settings(redis_info);
        match &self.ca_pem {
            None => redis::Client::open(info),
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl StoreSettings {
    /// How long a 503 asks clients to wait while the store is down.
    pub fn retry_after(&self) -> Duration {
        match self {
            StoreSettings::Memory => file::DEFAULT_RETRY_AFTER,
            StoreSettings::Redis(r) => r.retry_after,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// Injected header -> JSON pointer into the session.
    pub headers: Vec<(HeaderName, String)>,
    /// Extra header names removed from client requests, in canonical form.
    pub strip: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub servers: Vec<SocketAddr>,
    pub tls: bool,
    pub sni: String,
    pub health_check_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Normalised prefix, without a trailing slash (`""` for the root route).
    pub prefix: String,
    pub host: Option<HostPattern>,
    pub methods: Option<Vec<Method>>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub auth: AuthMode,
    pub login_redirect: Option<String>,
    pub issue_sessions: bool,
}

pub(super) struct Source<'a> {
    pub text: &'a str,
    pub file: &'a str,
}

impl Source<'_> {
    fn err(
        &self,
        key: impl Into<String>,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        let key = key.into();
        // A span of 0..0 marks a value without position (a default, or a plain field): look
        // the key up under its table header instead.
        let line = if span != (0..0) {
            Some(line_of(self.text, span.start))
        } else {
            find_key_line(self.text, &key)
        };
        ConfigError::Invalid {
            file: self.file.into(),
            line,
            key,
            message: message.into(),
        }
    }
}

/// Line of `key = …` under `[table]` for a dotted path like `session.cookie.max_age`.
fn find_key_line(text: &str, path: &str) -> Option<usize> {
    let (table, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut in_table = table.is_empty();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t.trim_matches(|c| c == '[' || c == ']').trim() == table;
        } else if in_table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(n + 1);
                }
            }
        }
    }
    None
}

/// Header names the gate must own or that would break framing if injected.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

pub(super) fn validate(
    f: FileConfig,
    src: &Source,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let s = &f.server;
    if s.listen.is_empty() && s.tls.is_none() {
        return Err(src.err("server.listen", 0..0, "at least one listener is needed"));
    }
    let listen = s
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| parse_listen(src, &format!("server.listen[{i}]"), a))
        .collect::<Result<Vec<_>, _>>()?;
    let tls = match &s.tls {
        None => None,
        Some(t) => Some(TlsSettings {
            listen: t
                .listen
                .iter()
                .enumerate()
                .map(|(i, a)| parse_listen(src, &format!("server.tls.listen[{i}]"), a))
                .collect::<Result<_, _>>()?,
            cert: readable_file(src, "server.tls.cert", &t.cert)?,
            key: readable_file(src, "server.tls.key", &t.key)?,
        }),
    };
    if s.threads == 0 {
        return Err(src.err("server.threads", 0..0, "must be at least 1"));
    }

    let mut session = validate_session(&f.session, src, env)?;
    let store = match f.session.store {
        StoreKind::Memory => StoreSettings::Memory,
        StoreKind::Redis => {
            let r = &f.redis;
            if r.timeout.is_zero() {
                return Err(src.err("redis.timeout", 0..0, "must be more than 0"));
            }
            let ca_pem = match &r.ca_file {
                None => None,
                Some(path) => Some(std::fs::read(path.get_ref()).map_err(|e| {
                    src.err(
                        "redis.ca_file",
                        path.span(),
                        format!("cannot read `{}`: {e}", path.get_ref()),
                    )
                })?),
            };
            let settings = RedisSettings {
                url: r.url.get_ref().clone(),
                timeout: r.timeout,
                retry_after: r.retry_after,
                ca_pem,
            };
            if let Err(e) = settings.client() {
                return Err(src.err(
                    "redis.url",
                    r.url.span(),
                    format!("not a usable Redis URL: {e}"),
                ));
            }
            StoreSettings::Redis(settings)
        }
    };
    let cache = match (&store, f.cache.enabled) {
        (StoreSettings::Redis(_), true) => {
            if f.cache.max_bytes < 4096 {
                return Err(src.err("cache.max_bytes", 0..0, "must be at least 4096"));
            }
            if f.cache.ttl < Duration::from_millis(100) {
                return Err(src.err("cache.ttl", 0..0, "must be at least 100ms"));
            }
            if f.session.touch_interval.is_none() {
                session.touch_interval = file::DEFAULT_CACHED_TOUCH_INTERVAL;
            }
            Some(CacheSettings {
                max_bytes: f.cache.max_bytes,
                ttl: f.cache.ttl,
            })
        }
        _ => None,
    };
    let identity = validate_identity(&f.identity, src)?;
    let upstreams = validate_upstreams(&f.upstream, src)?;
    let routes = validate_routes(&f.route, &upstreams, src)?;
    let admin = match &f.admin {
        None => None,
        Some(a) => {
            let listen = parse_listen(src, "admin.listen", &a.listen)?;
            if listen
                .parse::<SocketAddr>()
                .is_ok_and(|l| listen_overlaps(&l, &config_listeners(s)))
            {
                return Err(src.err(
                    "admin.listen",
                    a.listen.span(),
                    "the admin API needs a listener of its own",
                ));
            }
            let token = resolve_secret(a.token.get_ref(), env)
                .map_err(|m| src.err("admin.token", a.token.span(), m))?;
            if token.len() < 16 {
                return Err(src.err("admin.token", a.token.span(), "use at least 16 characters"));
            }
            Some(AdminSettings { listen, token })
        }
    };

    Ok(Config {
        listen,
        tls,
        threads: s.threads,
        trust_forwarded_proto: s.trust_forwarded_proto,
        case_sensitive_paths: s.case_sensitive_paths,
        grace_period: s.grace_period,
        session,
        store,
        identity,
        upstreams,
        routes,
        admin,
        cache,
    })
}

fn config_listeners(s: &file::ServerSection) -> Vec<SocketAddr> {
    let tls = s.tls.iter().flat_map(|t| t.listen.iter());
    s.listen
        .iter()
        .chain(tls)
        .filter_map(|a| a.get_ref().parse().ok())
        .collect()
}

fn listen_overlaps(a: &SocketAddr, others: &[SocketAddr]) -> bool {
    others.iter().any(|o| {
        o.port() == a.port()
            && (o.ip() == a.ip() || o.ip().is_unspecified() || a.ip().is_unspecified())
    })
}

fn parse_listen(src: &Source, key: &str, addr: &Spanned<String>) -> Result<String, ConfigError> {
    addr.get_ref()
        .parse::<SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|_| {
            src.err(
                key,
                addr.span(),
                format!("`{}` is not an address like 127.0.0.1:8080", addr.get_ref()),
            )
        })
}

fn readable_file(src: &Source, key: &str, path: &Spanned<String>) -> Result<String, ConfigError> {
    std::fs::metadata(path.get_ref())
        .map(|_| path.get_ref().clone())
        .map_err(|e| {
            src.err(
                key,
                path.span(),
                format!("cannot read `{}`: {e}", path.get_ref()),
            )
        })
}

fn validate_session(
    s: &file::SessionSection,
    src: &Source,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SessionSettings, ConfigError> {
    let name = s.cookie_name.get_ref();
    if name.is_empty() || !name.bytes().all(is_cookie_name_byte) {
        return Err(src.err(
            "session.cookie_name",
            s.cookie_name.span(),
            format!("`{name}` is not a valid cookie name"),
        ));
    }
    if s.secrets.get_ref().is_empty() {
        return Err(src.err(
            "session.secrets",
            s.secrets.span(),
            "at least one secret is needed",
        ));
    }
    let mut secrets = Vec::new();
    for (i, spec) in s.secrets.get_ref().iter().enumerate() {
        let key = format!("session.secrets[{i}]");
        let secret = resolve_secret(spec.get_ref(), env)
            .map_err(|m| src.err(key.as_str(), spec.span(), m))?;
        if secret.is_empty() {
            return Err(src.err(key, spec.span(), "the secret is empty"));
        }
        secrets.push(secret);
    }
    if s.idle_timeout < Duration::from_secs(1) {
        return Err(src.err("session.idle_timeout", 0..0, "must be at least 1s"));
    }
    if s.absolute_timeout
        .is_some_and(|a| a < Duration::from_secs(1))
    {
        return Err(src.err("session.absolute_timeout", 0..0, "must be at least 1s"));
    }
    if s.remember_max < Duration::from_secs(1) {
        return Err(src.err("session.remember_max", 0..0, "must be at least 1s"));
    }
    if s.user_field.is_empty()
        || s.user_field == "cookie"
        || s.user_field == crate::session::META_FIELD
    {
        return Err(src.err(
            "session.user_field",
            0..0,
            "name a top-level field of the session, like \"user\"",
        ));
    }
    if s.index_prefix.is_empty()
        || s.index_prefix.starts_with(&s.prefix)
        || s.prefix.starts_with(&s.index_prefix)
    {
        return Err(src.err(
            "session.index_prefix",
            0..0,
            "must differ from session.prefix without either being a prefix of the other, so indexes never look like sessions",
        ));
    }
    let token = match &s.token {
        None => None,
        Some(t) => {
            let header = HeaderName::from_bytes(t.header.get_ref().as_bytes()).map_err(|_| {
                src.err("session.token.header", t.header.span(), "not a header name")
            })?;
            if matches!(header.as_str(), "cookie" | "host")
                || crate::identity::is_internal(header.as_str())
            {
                return Err(src.err("session.token.header", t.header.span(), "reserved header"));
            }
            if t.scheme.is_empty()
                || !t
                    .scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(src.err("session.token.scheme", 0..0, "a word like \"Session\""));
            }
            Some(TokenSettings {
                header,
                scheme: t.scheme.clone(),
            })
        }
    };
    let logout_path = match &s.logout_path {
        None => None,
        Some(p) => {
            let n = normalize_path(p.get_ref())
                .map_err(|e| src.err("session.logout_path", p.span(), e.to_string()))?;
            if !p.get_ref().starts_with('/') {
                return Err(src.err("session.logout_path", p.span(), "must start with /"));
            }
            Some(n.decoded)
        }
    };
    let logout_redirect = s
        .logout_redirect
        .as_ref()
        .map(|r| redirect_target(src, "session.logout_redirect", r))
        .transpose()?;
    if s.return_param.is_empty()
        || !s
            .return_param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(src.err(
            "session.return_param",
            0..0,
            "use letters, digits, `_` or `-`",
        ));
    }

    let c = &s.cookie;
    if !c.path.starts_with('/') || c.path.bytes().any(|b| b.is_ascii_control() || b == b';') {
        return Err(src.err(
            "session.cookie.path",
            0..0,
            "must start with / and hold no `;`",
        ));
    }
    if let Some(d) = &c.domain {
        if d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(src.err(
                "session.cookie.domain",
                0..0,
                format!("`{d}` is not a domain name"),
            ));
        }
    }
    let secure = match c.secure {
        SecureSetting::Fixed(true) => Secure::Always,
        SecureSetting::Fixed(false) => Secure::Never,
        SecureSetting::Named(SecureNamed::Auto) => Secure::Auto,
    };
    let same_site = match c.same_site {
        SameSite::Lax => Some("Lax"),
        SameSite::Strict => Some("Strict"),
        SameSite::None => Some("None"),
        SameSite::Off => None,
    };
    if c.same_site == SameSite::None && secure != Secure::Always {
        return Err(src.err(
            "session.cookie.same_site",
            0..0,
            "\"none\" needs secure = true: browsers drop SameSite=None cookies that are not Secure",
        ));
    }
    if let Some(m) = c.max_age {
        if m < Duration::from_secs(1) {
            return Err(src.err("session.cookie.max_age", 0..0, "must be at least 1s"));
        }
    }
    Ok(SessionSettings {
        cookie_name: name.clone(),
        secrets,
        prefix: s.prefix.clone(),
        rolling: s.rolling,
        touch: s.touch,
        idle_timeout: s.idle_timeout,
        absolute_timeout: s.absolute_timeout,
        // Resolved against the cache settings by `validate`.
        touch_interval: s.touch_interval.unwrap_or_default(),
        remember_max: s.remember_max,
        user_field: s.user_field.clone(),
        index_prefix: s.index_prefix.clone(),
        record_client: s.record_client,
        token,
        logout_path,
        logout_redirect,
        return_param: s.return_param.clone(),
        cookie: CookieSettings {
            path: c.path.clone(),
            domain: c.domain.clone(),
            http_only: c.http_only,
            secure,
            same_site,
            max_age: c.max_age,
        },
    })
}

/// `env:NAME`, `file:/path` (trailing newline trimmed) or the secret itself.
fn resolve_secret(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<u8>, String> {
    if let Some(name) = spec.strip_prefix("env:") {
        env(name)
            .map(String::into_bytes)
            .ok_or_else(|| format!("environment variable {name} is not set"))
    } else if let Some(path) = spec.strip_prefix("file:") {
        let mut bytes =
            std::fs::read(path).map_err(|e| format!("cannot read secret file {path}: {e}"))?;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok(bytes)
    } else {
        tracing::warn!("a session secret is written inline in the config; prefer env: or file:");
        Ok(spec.as_bytes().to_vec())
    }
}

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// A redirect target the operator wrote: a local path or an absolute http(s) URL.
fn redirect_target(src: &Source, key: &str, r: &Spanned<String>) -> Result<String, ConfigError> {
    let v = r.get_ref();
    let local = v.starts_with('/') && !v.starts_with("//") && !v.starts_with("/\\");
    let absolute = v.starts_with("https://") || v.starts_with("http://");
    if !(local || absolute) || v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(src.err(
            key,
            r.span(),
            "must be a path like /login or an http(s) URL",
        ));
    }
    Ok(v.clone())
}

fn validate_identity(
    i: &file::IdentitySection,
    src: &Source,
) -> Result<IdentitySettings, ConfigError> {
    let mut out = IdentitySettings::default();
    for (name, pointer) in &i.headers {
        let key = format!("identity.headers.\"{name}\"");
        let header = header_name(src, &key, name, pointer.span())?;
        let p = pointer.get_ref();
        if !p.starts_with('/') {
            return Err(src.err(
                key,
                pointer.span(),
                "a JSON pointer starts with /, like \"/user\"",
            ));
        }
        out.headers.push((header, p.clone()));
    }
    for (i, name) in i.strip.iter().enumerate() {
        let key = format!("identity.strip[{i}]");
        header_name(src, &key, name.get_ref(), name.span())?;
        out.strip.push(canonical_header_name(name.get_ref()));
    }
    Ok(out)
}

fn header_name(
    src: &Source,
    key: &str,
    name: &str,
    span: Range<usize>,
) -> Result<HeaderName, ConfigError> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| src.err(key, span.clone(), format!("`{name}` is not a header name")))?;
    if RESERVED_HEADERS.contains(&header.as_str()) || crate::identity::is_internal(header.as_str())
    {
        return Err(src.err(
            key,
            span,
            format!("`{name}` is reserved by the gate or by HTTP"),
        ));
    }
    Ok(header)
}

fn validate_upstreams(
    ups: &[Spanned<file::UpstreamSection>],
    src: &Source,
) -> Result<Vec<UpstreamSettings>, ConfigError> {
    let mut out: Vec<UpstreamSettings> = Vec::new();
    for (i, u) in ups.iter().enumerate() {
        let span = u.span();
        let u = u.get_ref();
        let name = u.name.get_ref();
        if name.is_empty() {
            return Err(src.err(
                format!("upstream[{i}].name"),
                u.name.span(),
                "must not be empty",
            ));
        }
        if out.iter().any(|o| &o.name == name) {
            return Err(src.err(
                format!("upstream[{i}].name"),
                u.name.span(),
                format!("upstream `{name}` is defined twice"),
            ));
        }
        if u.servers.is_empty() {
            return Err(src.err(
                format!("upstream[{i}].servers"),
                span,
                "at least one server is needed",
            ));
        }
        let mut servers = Vec::new();
        for (j, s) in u.servers.iter().enumerate() {
            let key = format!("upstream[{i}].servers[{j}]");
            let addr = s
                .get_ref()
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    src.err(
                        key,
                        s.span(),
                        format!("`{}` is not a reachable host:port", s.get_ref()),
                    )
                })?;
            servers.push(addr);
        }
        if u.tls && u.sni.is_empty() {
            return Err(src.err(
                format!("upstream[{i}].sni"),
                span,
                "TLS upstreams need the server name to verify",
            ));
        }
        out.push(UpstreamSettings {
            name: name.clone(),
            servers,
            tls: u.tls,
            sni: u.sni.clone(),
            health_check_interval: u.health_check.then_some(u.health_check_interval),
        });
    }
    Ok(out)
}

fn validate_routes(
    routes: &[Spanned<file::RouteSection>],
    upstreams: &[UpstreamSettings],
    src: &Source,
) -> Result<Vec<RouteSettings>, ConfigError> {
    if routes.is_empty() {
        return Err(src.err("route", 0..0, "at least one [[route]] is needed"));
    }
    let mut out: Vec<RouteSettings> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let r = r.get_ref();
        let key = |k: &str| format!("route[{i}].{k}");
        let raw = r.path.get_ref();
        if !raw.starts_with('/') {
            return Err(src.err(key("path"), r.path.span(), "must start with /"));
        }
        let normal =
            normalize_path(raw).map_err(|e| src.err(key("path"), r.path.span(), e.to_string()))?;
        let prefix = normal.decoded.trim_end_matches('/').to_string();
        let host = r
            .host
            .as_ref()
            .map(|h| HostPattern::parse(h.get_ref()).map_err(|m| src.err(key("host"), h.span(), m)))
            .transpose()?;
        let methods = r
            .methods
            .as_ref()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()).map_err(
                            |_| {
                                src.err(
                                    key("methods"),
                                    m.span(),
                                    format!("`{}` is not an HTTP method", m.get_ref()),
                                )
                            },
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let upstream = upstreams
            .iter()
            .position(|u| &u.name == r.upstream.get_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                src.err(
                    key("upstream"),
                    r.upstream.span(),
                    format!(
                        "no [[upstream]] is named `{}` (defined: {})",
                        r.upstream.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
        let login_redirect = match &r.login_redirect {
            None => None,
            Some(l) if r.auth != AuthMode::Required => {
                return Err(src.err(
                    key("login_redirect"),
                    l.span(),
                    "only a route with auth = \"required\" redirects to a login",
                ));
            }
            Some(l) => Some(redirect_target(src, &key("login_redirect"), l)?),
        };
        let route = RouteSettings {
            prefix,
            host,
            methods,
            upstream,
            auth: r.auth,
            login_redirect,
            issue_sessions: r.issue_sessions,
        };
        if out
            .iter()
            .any(|o| o.prefix == route.prefix && o.host == route.host && o.methods == route.methods)
        {
            return Err(src.err(
                key("path"),
                r.path.span(),
                format!("another route already has path `{raw}` with the same host and methods"),
            ));
        }
        out.push(route);
    }
    Ok(out)
}

/// Hides the password of a Redis URL for logs and `check`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
