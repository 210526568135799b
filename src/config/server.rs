//! `[server]` and `[admin]`: listeners, TLS, request head limits, how paths are read.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use std::time::Duration;

use super::file;
use super::source::{parse_listen, readable_file, resolve_secret, In};
use super::{ConfigError, TlsSettings};
use crate::admin::AdminSettings;
use crate::connections::ConnectionLimits;
use crate::cross_origin::{CrossOrigin, Origin};
use crate::forward_auth::ForwardAuthSettings;
use crate::forwarded::TrustedProxies;
use crate::head::HeadLimits;
use crate::path::{Parameters, PathPolicy};

/// `[server]`, validated.
pub(super) struct Server {
    pub listen: Vec<String>,
    pub tls: Option<TlsSettings>,
    pub threads: usize,
    pub trusted_proxies: TrustedProxies,
    pub cross_origin: CrossOrigin,
    pub upgrade_socket: Option<String>,
    pub case_sensitive_paths: bool,
    pub path_policy: PathPolicy,
    pub grace_period: Duration,
    pub drain_delay: Duration,
    pub head: HeadLimits,
    pub connections: ConnectionLimits,
}

impl TryFrom<In<'_, file::ServerSection>> for Server {
    type Error = ConfigError;

    fn try_from(i: In<'_, file::ServerSection>) -> Result<Self, ConfigError> {
        let (s, src) = (i.at, i.src);
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
        if let Some(old) = &s.trust_forwarded_proto {
            return Err(src.err(
                "server.trust_forwarded_proto",
                old.span(),
                "removed: list the proxies in front of the gate in server.trusted_proxies \
                 (for example [\"10.0.0.0/8\"]); X-Forwarded-Proto is believed from them only",
            ));
        }
        let nets = parse_nets(src, "server.trusted_proxies", &s.trusted_proxies)?;
        let upgrade_socket = match &s.upgrade_socket {
            None => None,
            Some(p) if p.get_ref().is_empty() || !p.get_ref().starts_with('/') => {
                return Err(src.err(
                    "server.upgrade_socket",
                    p.span(),
                    "must be an absolute path, like /run/sessiongate/upgrade.sock",
                ));
            }
            Some(p) => Some(p.get_ref().clone()),
        };
        Ok(Server {
            listen,
            tls,
            threads: s.threads,
            trusted_proxies: TrustedProxies::new(nets),
            cross_origin: CrossOrigin::try_from(i)?,
            upgrade_socket,
            case_sensitive_paths: s.case_sensitive_paths,
            path_policy: PathPolicy {
                parameters: match s.path_parameters {
                    file::PathParameters::Reject => Parameters::Reject,
                    file::PathParameters::Strip => Parameters::Strip,
                    file::PathParameters::Keep => Parameters::Keep,
                },
                reject_double_encoding: s.double_encoding == file::DoubleEncoding::Reject,
            },
            grace_period: s.grace_period,
            drain_delay: s.drain_delay,
            head: HeadLimits::try_from(i)?,
            connections: ConnectionLimits::try_from(i)?,
        })
    }
}

impl TryFrom<In<'_, file::ServerSection>> for CrossOrigin {
    type Error = ConfigError;

    fn try_from(In { at: s, src, .. }: In<'_, file::ServerSection>) -> Result<Self, ConfigError> {
        let mut trusted = Vec::new();
        for (i, o) in s.trusted_origins.iter().enumerate() {
            let origin = Origin::parse(o.get_ref())
                .map_err(|m| src.err(format!("server.trusted_origins[{i}]"), o.span(), m))?;
            trusted.push(origin);
        }
        Ok(CrossOrigin {
            policy: super::routes::policy(s.cross_origin),
            trusted,
        })
    }
}

impl TryFrom<In<'_, file::ServerSection>> for HeadLimits {
    type Error = ConfigError;

    fn try_from(In { at: s, src, .. }: In<'_, file::ServerSection>) -> Result<Self, ConfigError> {
        use crate::head::{PINGORA_MAX_HEADERS, PINGORA_MAX_HEADER_BYTES};
        if !(1024..=PINGORA_MAX_HEADER_BYTES).contains(&s.max_header_bytes) {
            return Err(src.err(
                "server.max_header_bytes",
                0..0,
                format!(
                "must be from 1024 to {PINGORA_MAX_HEADER_BYTES} (the largest head Pingora reads)"
            ),
            ));
        }
        if !(1..=PINGORA_MAX_HEADERS).contains(&s.max_headers) {
            return Err(src.err(
                "server.max_headers",
                0..0,
                format!("must be from 1 to {PINGORA_MAX_HEADERS} (the most headers Pingora reads)"),
            ));
        }
        if s.header_timeout < Duration::from_millis(100) {
            return Err(src.err("server.header_timeout", 0..0, "must be at least 100ms"));
        }
        Ok(HeadLimits {
            max_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            timeout: s.header_timeout,
        })
    }
}

impl TryFrom<In<'_, file::ServerSection>> for ConnectionLimits {
    type Error = ConfigError;

    fn try_from(In { at: s, src, .. }: In<'_, file::ServerSection>) -> Result<Self, ConfigError> {
        if s.idle_timeout < Duration::from_secs(1) {
            return Err(src.err("server.idle_timeout", 0..0, "must be at least 1s"));
        }
        if s.max_connections == 0 {
            return Err(src.err("server.max_connections", 0..0, "must be at least 1"));
        }
        if !(1..=10_000).contains(&s.h2_max_streams) {
            return Err(src.err("server.h2_max_streams", 0..0, "must be from 1 to 10000"));
        }
        Ok(ConnectionLimits {
            max_connections: s.max_connections,
            idle_timeout: s.idle_timeout,
            h2_max_streams: s.h2_max_streams,
        })
    }
}

impl TryFrom<In<'_, file::AdminSection>> for AdminSettings {
    type Error = ConfigError;

    fn try_from(In { at: a, src, env }: In<'_, file::AdminSection>) -> Result<Self, ConfigError> {
        let listen = parse_listen(src, "admin.listen", &a.listen)?;
        let token = resolve_secret(a.token.get_ref(), env)
            .map_err(|m| src.err("admin.token", a.token.span(), m))?;
        if token.len() < 16 {
            return Err(src.err("admin.token", a.token.span(), "use at least 16 characters"));
        }
        Ok(AdminSettings { listen, token })
    }
}

/// A list of networks (`10.0.0.0/8`) or addresses (a network of one), at `key`.
fn parse_nets(
    src: &super::source::Source,
    key: &str,
    list: &[toml::Spanned<String>],
) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            let text = n.get_ref();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    src.err(
                        format!("{key}[{i}]"),
                        n.span(),
                        format!("`{text}` is not a network like 10.0.0.0/8 or an address"),
                    )
                })
        })
        .collect()
}

impl TryFrom<In<'_, file::ForwardAuthSection>> for ForwardAuthSettings {
    type Error = ConfigError;

    fn try_from(
        In { at: f, src, .. }: In<'_, file::ForwardAuthSection>,
    ) -> Result<Self, ConfigError> {
        if f.listen.is_empty() {
            return Err(src.err(
                "forward_auth.listen",
                0..0,
                "at least one listener is needed",
            ));
        }
        let listen = f
            .listen
            .iter()
            .enumerate()
            .map(|(i, a)| parse_listen(src, &format!("forward_auth.listen[{i}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        // Without it every caller would be refused: say so now, not on the first request.
        if f.trusted.is_empty() {
            return Err(src.err(
                "forward_auth.trusted",
                0..0,
                "name the edges whose original-request headers are believed, \
                 for example [\"127.0.0.1\"] or [\"10.0.0.0/8\"]",
            ));
        }
        let trusted = parse_nets(src, "forward_auth.trusted", &f.trusted)?;
        Ok(ForwardAuthSettings {
            listen,
            trusted: TrustedProxies::new(trusted),
        })
    }
}

/// Every listener the file names (plain and TLS), for the admin API's overlap check.
pub(super) fn config_listeners(s: &file::ServerSection) -> Vec<SocketAddr> {
    let tls = s.tls.iter().flat_map(|t| t.listen.iter());
    s.listen
        .iter()
        .chain(tls)
        .filter_map(|a| a.get_ref().parse().ok())
        .collect()
}

pub(super) fn listen_overlaps(a: &SocketAddr, others: &[SocketAddr]) -> bool {
    others.iter().any(|o| {
        o.port() == a.port()
            && (o.ip() == a.ip() || o.ip().is_unspecified() || a.ip().is_unspecified())
    })
}
