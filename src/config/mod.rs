//! Configuration: `proxy.toml` is parsed into the [`file`] structs (serde, unknown keys
//! rejected), then each section is built into the settings type its module owns, with one
//! `TryFrom` per section, as ripgrep turns its low-level arguments into high-level ones:
//! [`server`] (`[server]`, `[admin]`), [`session`] (`[session]` and its tables), [`store`]
//! (`[redis]`, `[cache]`), [`routes`] (`[identity]`, `[[upstream]]`, `[[route]]`), [`log`]
//! (`[log]`). [`Config`]
//! assembles them and makes the checks that span sections. Every error names the key and the
//! line ([`source`]). Nothing outside this module reads the file's types.

pub(crate) mod describe;
pub(crate) mod file;
mod log;
mod routes;
mod server;
mod session;
mod source;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use self::routes::RouteInput;
use self::server::{config_listeners, listen_overlaps, Server};
use self::source::{In, Source};
use crate::access_log::LogSettings;
use crate::admin::AdminSettings;
use crate::connections::ConnectionLimits;
use crate::cross_origin::CrossOrigin;
use crate::forward_auth::ForwardAuthSettings;
use crate::forwarded::TrustedProxies;
use crate::head::HeadLimits;
use crate::identity::IdentitySettings;
use crate::path::{normalize_path, PathPolicy};
use crate::routes::Route;
use crate::sessions::SessionSettings;
use crate::store::{CacheSettings, PostgresSettings, StoreSettings};
use crate::upstreams::UpstreamSettings;

/// The validated configuration the gate runs on. Nothing here is deserialized directly:
/// every value came through a section's `TryFrom`, the only place config errors are raised.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<String>,
    pub tls: Option<TlsSettings>,
    pub threads: usize,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// `server.cross_origin` and `server.trusted_origins`.
    pub cross_origin: CrossOrigin,
    /// Where `--upgrade` takes the listening sockets from.
    pub upgrade_socket: Option<String>,
    pub case_sensitive_paths: bool,
    pub path_policy: PathPolicy,
    pub grace_period: Duration,
    /// After SIGTERM: serving on, `/readyz` 503, before the grace period.
    pub drain_delay: Duration,
    pub head: HeadLimits,
    /// Client connection limits, both protocols.
    pub connections: ConnectionLimits,
    pub session: SessionSettings,
    pub store: StoreSettings,
    pub identity: IdentitySettings,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<Route>,
    pub admin: Option<AdminSettings>,
    /// `[forward_auth]`: its listener and the edges it believes.
    pub forward_auth: Option<ForwardAuthSettings>,
    /// `None` when off, or when the store is the embedded one (which needs no cache).
    pub cache: Option<CacheSettings>,
    pub log: LogSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub listen: Vec<String>,
    pub cert: String,
    pub key: String,
}

/// A configuration error, always pointing at the key (and line, when the key is in the file).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}{}: {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file, resolving `env:` secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&src, &path.display().to_string(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// Parses and validates config text. `env` resolves `env:NAME` secrets, so that tests and
    /// embedders need not touch the process environment.
    pub fn parse(
        src: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let parsed = parse_file(src, file)?;
        Config::assemble(&parsed, &Source { text: src, file }, env)
    }

    /// Builds every section and checks what spans sections: the admin API's own listener,
    /// the cache's touch interval, the upstreams routes name.
    fn assemble(
        f: &file::FileConfig,
        src: &Source,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let at = In { at: f, src, env };
        let server = Server::try_from(at.with(&f.server))?;
        let mut session = SessionSettings::try_from(at.with(&f.session))?;
        let store = match f.session.store {
            file::StoreKind::Memory => StoreSettings::Memory(at.with(&f.memory).try_into()?),
            file::StoreKind::Redis => StoreSettings::Redis(at.with(&f.redis).try_into()?),
            file::StoreKind::Postgres => {
                let mut p = PostgresSettings::try_from(at.with(&f.postgres))?;
                p.user_field = session.user_field.clone();
                StoreSettings::Postgres(p)
            }
        };
        let cache = match (&store, f.cache.enabled) {
            (StoreSettings::Redis(_) | StoreSettings::Postgres(_), true) => {
                if f.session.touch_interval.is_none() {
                    session.touch_interval = file::DEFAULT_CACHED_TOUCH_INTERVAL;
                }
                Some(CacheSettings::try_from(at.with(&f.cache))?)
            }
            _ => None,
        };
        let identity = IdentitySettings::try_from(at.with(&f.identity))?;
        let log = LogSettings::try_from(at.with(&f.log))?;
        let upstreams = Vec::<UpstreamSettings>::try_from(at.with(f.upstream.as_slice()))?;
        let forward_auth = match &f.forward_auth {
            None => None,
            Some(fa) => Some(ForwardAuthSettings::try_from(at.with(fa))?),
        };
        let proxying = !server.listen.is_empty() || server.tls.is_some();
        if !proxying && forward_auth.is_none() {
            return Err(src.err(
                "server.listen",
                0..0,
                "at least one listener is needed (or [forward_auth] listen, to answer an edge)",
            ));
        }
        let routes = Vec::<Route>::try_from(at.with(&RouteInput {
            routes: &f.route,
            upstreams: &upstreams,
            proxying,
            asserting: identity.assertion.is_some(),
        }))?;
        let admin = match &f.admin {
            None => None,
            Some(a) => {
                let admin = AdminSettings::try_from(at.with(a))?;
                if admin
                    .listen
                    .parse()
                    .is_ok_and(|l| listen_overlaps(&l, &config_listeners(&f.server)))
                {
                    return Err(src.err(
                        "admin.listen",
                        a.listen.span(),
                        "the admin API needs a listener of its own",
                    ));
                }
                Some(admin)
            }
        };
        if let (Some(fa), Some(fs)) = (&forward_auth, &f.forward_auth) {
            let mut taken = config_listeners(&f.server);
            taken.extend(
                admin
                    .iter()
                    .filter_map(|a| a.listen.parse::<std::net::SocketAddr>().ok()),
            );
            for (i, (addr, raw)) in fa.listen.iter().zip(&fs.listen).enumerate() {
                if addr.parse().is_ok_and(|l| listen_overlaps(&l, &taken)) {
                    return Err(src.err(
                        format!("forward_auth.listen[{i}]"),
                        raw.span(),
                        "forward-auth needs a listener of its own",
                    ));
                }
            }
        }
        Ok(Config {
            listen: server.listen,
            tls: server.tls,
            threads: server.threads,
            trusted_proxies: server.trusted_proxies,
            cross_origin: server.cross_origin,
            upgrade_socket: server.upgrade_socket,
            case_sensitive_paths: server.case_sensitive_paths,
            path_policy: server.path_policy,
            grace_period: server.grace_period,
            drain_delay: server.drain_delay,
            head: server.head,
            connections: server.connections,
            session,
            store,
            identity,
            upstreams,
            routes,
            admin,
            forward_auth,
            cache,
            log,
        })
    }
}

fn parse_file(src: &str, file: &str) -> Result<file::FileConfig, ConfigError> {
    let de = toml::Deserializer::parse(src).map_err(|e| toml_error(src, file, "(syntax)", &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // `toml::Spanned` shows up in serde's path as a private field: drop it.
        let key = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let key = if key == "." {
            "(top level)".into()
        } else {
            key
        };
        toml_error(src, file, &key, e.inner())
    })
}

fn toml_error(src: &str, file: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError::Invalid {
        file: file.into(),
        line: e.span().map(|s| line_of(src, s.start)),
        key: key.into(),
        message: e.message().trim().to_string(),
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod properties {
    //! Whatever an operator writes, `check` and start-up answer with a config or an error that
    //! names the file: never a panic.
    use super::*;
    use proptest::prelude::*;

    /// A valid file; each `{}` is a value the property may replace.
    const BASE: &[(&str, &str)] = &[
        ("[server]\nlisten", "[\"127.0.0.1:0\"]"),
        ("threads", "1"),
        ("grace_period", "\"1s\""),
        ("path_parameters", "\"reject\""),
        ("double_encoding", "\"reject\""),
        ("case_sensitive_paths", "false"),
        ("\n[session]\nsecrets", "[\"a long enough secret\"]"),
        ("cookie_name", "\"connect.sid\""),
        ("idle_timeout", "\"1h\""),
        ("absolute_timeout", "\"1d\""),
        ("store", "\"memory\""),
        ("prefix", "\"sess:\""),
        ("user_field", "\"user\""),
        ("logout_path", "\"/logout\""),
        ("logout_redirect", "\"/\""),
        ("\n[session.cookie]\nsame_site", "\"lax\""),
        ("secure", "\"auto\""),
        ("max_age", "\"1h\""),
        ("\n[identity.headers]\n\"X-User\"", "\"/user\""),
        ("\n[[upstream]]\nname", "\"app\""),
        ("servers", "[\"127.0.0.1:1\"]"),
        ("health_check_interval", "\"1s\""),
        ("\n[[route]]\npath", "\"/\""),
        ("upstream", "\"app\""),
        ("auth", "\"required\""),
        ("methods", "[\"GET\"]"),
        ("host", "\"example.com\""),
        ("login_redirect", "\"/login\""),
        ("method_override", "false"),
    ];

    fn render(values: &[String]) -> String {
        BASE.iter()
            .zip(values)
            .map(|((key, _), value)| format!("{key} = {value}\n"))
            .collect()
    }

    /// A TOML value of any type: strings with any characters, numbers, booleans, arrays.
    fn toml_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            ".*".prop_map(|s| toml::Value::String(s).to_string()),
            "[a-z0-9./:*;%_ -]{0,12}".prop_map(|s| toml::Value::String(s).to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            Just("1.5".to_string()),
        ];
        prop_oneof![
            3 => leaf.clone(),
            1 => prop::collection::vec(leaf, 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
        ]
    }

    #[test]
    fn the_base_file_is_valid() {
        let values: Vec<String> = BASE.iter().map(|(_, v)| v.to_string()).collect();
        Config::parse(&render(&values), "test.toml", &|_| None).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_value_of_any_key_is_a_config_or_an_error_naming_the_file(
            // `servers` (index 20) is left valid: a random host name would be looked up in DNS.
            index in (0..BASE.len()).prop_filter("no DNS", |i| *i != 20),
            value in toml_value(),
            second in (0..BASE.len()).prop_filter("no DNS", |i| *i != 20),
            other in toml_value(),
        ) {
            let mut values: Vec<String> = BASE.iter().map(|(_, v)| v.to_string()).collect();
            values[index] = value;
            values[second] = other;
            if let Err(e) = Config::parse(&render(&values), "test.toml", &|_| None) {
                prop_assert!(e.to_string().starts_with("test.toml"), "{}", e);
            }
        }

        #[test]
        fn any_text_is_a_config_or_an_error(text in ".*") {
            let _ = Config::parse(&text, "test.toml", &|_| None);
        }
    }
}
