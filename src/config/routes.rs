//! `[identity]`, `[[upstream]]` and `[[route]]`: who the upstreams are told the user is,
//! where requests go, and what each route demands.

use std::net::IpAddr;
use std::time::Duration;

use http::Method;
use toml::Spanned;

use super::file::{self, AuthSetting};
use super::normalize_path;
use super::source::{header_name, redirect_target, resolve_secret, In};
use super::ConfigError;
use crate::assertion::{AssertionSettings, SigningKey};
use crate::cross_origin::Policy;
use crate::identity::{canonical_header_name, IdentitySettings};
use crate::routes::{AuthMode, HostPattern, Route};
use crate::upstreams::{ServerName, UpstreamSettings};

impl TryFrom<In<'_, file::IdentitySection>> for IdentitySettings {
    type Error = ConfigError;

    fn try_from(
        In { at: i, src, env }: In<'_, file::IdentitySection>,
    ) -> Result<Self, ConfigError> {
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
        if let Some(a) = &i.assertion {
            out.assertion = Some(assertion(src, env, a)?);
        }
        Ok(out)
    }
}

fn assertion(
    src: &super::source::Source,
    env: &dyn Fn(&str) -> Option<String>,
    a: &Spanned<file::AssertionSection>,
) -> Result<AssertionSettings, ConfigError> {
    let (span, a) = (a.span(), a.get_ref());
    let header = header_name(
        src,
        "identity.assertion.header",
        a.header.get_ref(),
        a.header.span(),
    )?;
    let specs: Vec<(String, &Spanned<String>)> = match (&a.key, a.keys.as_slice()) {
        (Some(k), []) => vec![("identity.assertion.key".into(), k)],
        (None, ks) if !ks.is_empty() => ks
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("identity.assertion.keys[{i}]"), k))
            .collect(),
        (Some(k), _) => {
            return Err(src.err(
                "identity.assertion.keys",
                k.span(),
                "set key or keys, not both",
            ))
        }
        (None, _) => {
            return Err(src.err(
                "identity.assertion.key",
                span,
                "a signing key is needed: key = \"file:/path/to/key.pem\"",
            ))
        }
    };
    let mut keys = Vec::new();
    for (key, spec) in specs {
        let pem = resolve_secret(spec.get_ref(), env)
            .map_err(|m| src.err(key.as_str(), spec.span(), m))?;
        let k = SigningKey::from_pem(&pem).map_err(|m| src.err(key.as_str(), spec.span(), m))?;
        keys.push(k);
    }
    if a.issuer.get_ref().is_empty() {
        return Err(src.err(
            "identity.assertion.issuer",
            a.issuer.span(),
            "must not be empty",
        ));
    }
    if a.ttl < Duration::from_secs(2) {
        return Err(src.err("identity.assertion.ttl", span, "must be at least 2s"));
    }
    let mut claims = Vec::new();
    for (name, pointer) in &a.claims {
        let key = format!("identity.assertion.claims.{name}");
        if RESERVED_CLAIMS.contains(&name.as_str()) {
            return Err(src.err(
                key,
                pointer.span(),
                format!("`{name}` is a claim the gate sets"),
            ));
        }
        if !pointer.get_ref().starts_with('/') {
            return Err(src.err(
                key,
                pointer.span(),
                "a JSON pointer starts with /, like \"/roles\"",
            ));
        }
        claims.push((name.clone(), pointer.get_ref().clone()));
    }
    Ok(AssertionSettings {
        header,
        keys,
        issuer: a.issuer.get_ref().clone(),
        ttl: a.ttl,
        claims,
        bind_request: a.bind_request,
    })
}

/// Claims the gate sets itself.
const RESERVED_CLAIMS: &[&str] = &[
    "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid_hash", "htm", "htu",
];

impl TryFrom<In<'_, [Spanned<file::UpstreamSection>]>> for Vec<UpstreamSettings> {
    type Error = ConfigError;

    fn try_from(
        In { at: ups, src, .. }: In<'_, [Spanned<file::UpstreamSection>]>,
    ) -> Result<Self, ConfigError> {
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
                let server = server_name(s.get_ref()).ok_or_else(|| {
                    src.err(
                        format!("upstream[{i}].servers[{j}]"),
                        s.span(),
                        format!("`{}` is not a host:port", s.get_ref()),
                    )
                })?;
                servers.push(server);
            }
            for (key, t) in [
                ("connect_timeout", u.connect_timeout),
                ("read_timeout", u.read_timeout),
                ("write_timeout", u.write_timeout),
                ("idle_timeout", u.idle_timeout),
            ] {
                if t < Duration::from_millis(10) {
                    return Err(src.err(
                        format!("upstream[{i}].{key}"),
                        span.clone(),
                        "must be at least 10ms",
                    ));
                }
            }
            if u.health_check_interval < Duration::from_millis(100) {
                return Err(src.err(
                    format!("upstream[{i}].health_check_interval"),
                    span.clone(),
                    "must be at least 100ms",
                ));
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
                refresh_interval: u.health_check_interval,
                connect_timeout: u.connect_timeout,
                read_timeout: u.read_timeout,
                write_timeout: u.write_timeout,
                idle_timeout: u.idle_timeout,
            });
        }
        Ok(out)
    }
}

/// The routes, with the upstreams they name.
pub(super) struct RouteInput<'a> {
    pub routes: &'a [Spanned<file::RouteSection>],
    pub upstreams: &'a [UpstreamSettings],
    /// The gate has a proxy listener: every route needs an upstream.
    pub proxying: bool,
    /// `[identity.assertion]` is on: every route needs an audience.
    pub asserting: bool,
}

impl TryFrom<In<'_, RouteInput<'_>>> for Vec<Route> {
    type Error = ConfigError;

    fn try_from(In { at: input, src, .. }: In<'_, RouteInput<'_>>) -> Result<Self, ConfigError> {
        let (routes, upstreams) = (input.routes, input.upstreams);
        if routes.is_empty() {
            return Err(src.err("route", 0..0, "at least one [[route]] is needed"));
        }
        let mut out: Vec<Route> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let r = r.get_ref();
            let key = |k: &str| format!("route[{i}].{k}");
            let raw = r.path.get_ref();
            if !raw.starts_with('/') {
                return Err(src.err(key("path"), r.path.span(), "must start with /"));
            }
            let normal = normalize_path(raw)
                .map_err(|e| src.err(key("path"), r.path.span(), e.to_string()))?;
            let prefix = normal.matched.trim_end_matches('/').to_string();
            let host = r
                .host
                .as_ref()
                .map(|h| {
                    HostPattern::parse(h.get_ref()).map_err(|m| src.err(key("host"), h.span(), m))
                })
                .transpose()?;
            let methods =
                r.methods
                    .as_ref()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| {
                                Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
                                    .map_err(|_| {
                                        src.err(
                                            key("methods"),
                                            m.span(),
                                            format!("`{}` is not an HTTP method", m.get_ref()),
                                        )
                                    })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
            let upstream = match &r.upstream {
                None if input.proxying => {
                    return Err(src.err(
                        key("upstream"),
                        0..0,
                        "every route needs an upstream while the gate proxies \
                         (server.listen or server.tls); only forward-auth alone goes without",
                    ));
                }
                None => None,
                Some(name) => Some(
                    upstreams
                        .iter()
                        .position(|u| &u.name == name.get_ref())
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                upstreams.iter().map(|u| u.name.as_str()).collect();
                            src.err(
                                key("upstream"),
                                name.span(),
                                format!(
                                    "no [[upstream]] is named `{}` (defined: {})",
                                    name.get_ref(),
                                    known.join(", ")
                                ),
                            )
                        })?,
                ),
            };
            let login_redirect = match &r.login_redirect {
                None => None,
                Some(l) if r.auth != AuthSetting::Required => {
                    return Err(src.err(
                        key("login_redirect"),
                        l.span(),
                        "only a route with auth = \"required\" redirects to a login",
                    ));
                }
                Some(l) => Some(redirect_target(src, &key("login_redirect"), l)?),
            };
            let route = Route {
                prefix,
                host,
                methods,
                upstream,
                auth: match r.auth {
                    AuthSetting::Required => AuthMode::Required,
                    AuthSetting::Optional => AuthMode::Optional,
                    AuthSetting::Public => AuthMode::Public,
                },
                login_redirect,
                issue_sessions: r.issue_sessions,
                method_override: r.method_override,
                strip_session_cookie: r.strip_session_cookie,
                audience: match &r.audience {
                    Some(a) if a.get_ref().is_empty() => {
                        return Err(src.err(key("audience"), a.span(), "must not be empty"));
                    }
                    Some(a) => a.get_ref().clone(),
                    None => match upstream {
                        Some(u) => input.upstreams[u].name.clone(),
                        None if input.asserting => {
                            return Err(src.err(
                                key("audience"),
                                0..0,
                                "a route without an upstream names the audience of its \
                                 [identity.assertion] tokens",
                            ));
                        }
                        None => String::new(),
                    },
                },
                cross_origin: r.cross_origin.map(policy),
            };
            if out.iter().any(|o| {
                o.prefix == route.prefix && o.host == route.host && o.methods == route.methods
            }) {
                return Err(src.err(
                    key("path"),
                    r.path.span(),
                    format!(
                        "another route already has path `{raw}` with the same host and methods"
                    ),
                ));
            }
            out.push(route);
        }
        Ok(out)
    }
}

/// `server.cross_origin` or a route's `cross_origin`.
pub(super) fn policy(s: file::CrossOriginSetting) -> Policy {
    match s {
        file::CrossOriginSetting::Refuse => Policy::Refuse,
        file::CrossOriginSetting::Report => Policy::Report,
        file::CrossOriginSetting::Allow => Policy::Allow,
    }
}

/// `host:port`, `a.b.c.d:port` or `[v6]:port`; the name is resolved later, again and again.
fn server_name(s: &str) -> Option<ServerName> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest.split_once("]:")?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            (v6, port)
        }
        None => s.rsplit_once(':')?,
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let name_ok = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }));
    name_ok.then(|| ServerName {
        host: host.to_owned(),
        port,
    })
}
