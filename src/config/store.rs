//! `[redis]`, `[postgres]` and `[cache]`: where shared sessions live, and the local cache in
//! front of them; `[memory]`: the embedded store's bound.

use std::time::Duration;

use super::file;
use super::source::resolve_secret;
use super::source::In;
use super::ConfigError;
use crate::store::{
    redact_pg_url, redact_url, CacheSettings, MemorySettings, PostgresSettings, RedisSettings,
    SentinelSettings,
};

impl TryFrom<In<'_, file::RedisSection>> for RedisSettings {
    type Error = ConfigError;

    fn try_from(In { at: r, src, env }: In<'_, file::RedisSection>) -> Result<Self, ConfigError> {
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
        let cluster = r.cluster.as_ref().map(|c| c.get_ref().clone());
        let sentinel = match &r.sentinel {
            None => None,
            Some(s) => {
                let at = s.span();
                let s = s.get_ref();
                if r.cluster.is_some() {
                    return Err(src.err(
                        "redis.sentinel",
                        at,
                        "give `cluster` or `sentinel`, not both",
                    ));
                }
                if s.master.is_empty() || s.nodes.is_empty() {
                    return Err(src.err(
                        "redis.sentinel",
                        at,
                        "needs `master` (the name the sentinels monitor) and at least one of `nodes`",
                    ));
                }
                for node in &s.nodes {
                    if redis::IntoConnectionInfo::into_connection_info(node.as_str()).is_err() {
                        return Err(src.err(
                            "redis.sentinel",
                            at.clone(),
                            format!("`{}` is not a Redis URL", redact_url(node)),
                        ));
                    }
                }
                let password = match &s.password {
                    None => None,
                    Some(spec) => {
                        let bytes = resolve_secret(spec, env)
                            .map_err(|m| src.err("redis.sentinel", at.clone(), m))?;
                        Some(String::from_utf8(bytes).map_err(|_| {
                            src.err("redis.sentinel", at.clone(), "the password is not UTF-8")
                        })?)
                    }
                };
                Some(SentinelSettings {
                    master: s.master.clone(),
                    nodes: s.nodes.clone(),
                    password,
                })
            }
        };
        let settings = RedisSettings {
            url: r.url.get_ref().clone(),
            sentinel,
            cluster: cluster.clone().unwrap_or_default(),
            timeout: r.timeout,
            retry_after: r.retry_after,
            ca_pem,
        };
        if let (Some(c), Some(seeds)) = (&r.cluster, &cluster) {
            if seeds.is_empty() {
                return Err(src.err("redis.cluster", c.span(), "needs at least one seed node"));
            }
            for seed in seeds {
                let ok = seed.starts_with("redis://") || seed.starts_with("rediss://");
                if !ok || redis::IntoConnectionInfo::into_connection_info(seed.as_str()).is_err() {
                    return Err(src.err(
                        "redis.cluster",
                        c.span(),
                        format!("`{}` is not a redis:// or rediss:// URL", redact_url(seed)),
                    ));
                }
            }
            if let Err(e) = settings.cluster_client(redis::ProtocolVersion::RESP2) {
                return Err(src.err(
                    "redis.cluster",
                    c.span(),
                    format!("not a usable Redis Cluster: {e}"),
                ));
            }
            return Ok(settings);
        }
        if let Err(e) = settings.client() {
            return Err(src.err(
                "redis.url",
                r.url.span(),
                format!("not a usable Redis URL: {e}"),
            ));
        }
        Ok(settings)
    }
}

impl TryFrom<In<'_, file::PostgresSection>> for PostgresSettings {
    type Error = ConfigError;

    /// `user_field` is `session.user_field`, set by the caller.
    fn try_from(
        In { at: p, src, env }: In<'_, file::PostgresSection>,
    ) -> Result<Self, ConfigError> {
        if p.timeout.is_zero() {
            return Err(src.err("postgres.timeout", 0..0, "must be more than 0"));
        }
        if *p.pool_size.get_ref() == 0 {
            return Err(src.err(
                "postgres.pool_size",
                p.pool_size.span(),
                "must be at least 1",
            ));
        }
        for (key, name) in [("postgres.schema", &p.schema), ("postgres.table", &p.table)] {
            // PostgreSQL cuts identifiers at 63 bytes; NUL cannot be in one.
            let n = name.get_ref();
            if n.is_empty() || n.len() > 63 || n.contains('\0') {
                return Err(src.err(
                    key,
                    name.span(),
                    "must be a PostgreSQL name of 1 to 63 bytes",
                ));
            }
        }
        let url = p.url.get_ref();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(src.err(
                "postgres.url",
                p.url.span(),
                format!("`{}` is not a postgres:// URL", redact_pg_url(url)),
            ));
        }
        if url.contains("password=") {
            return Err(src.err(
                "postgres.url",
                p.url.span(),
                "give the password with `password` (env: or file:), not in the URL's query",
            ));
        }
        let ca_pem = match &p.ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path.get_ref()).map_err(|e| {
                src.err(
                    "postgres.ca_file",
                    path.span(),
                    format!("cannot read `{}`: {e}", path.get_ref()),
                )
            })?),
        };
        let password = match &p.password {
            None => None,
            Some(spec) => {
                let bytes = resolve_secret(spec.get_ref(), env)
                    .map_err(|m| src.err("postgres.password", spec.span(), m))?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    src.err(
                        "postgres.password",
                        spec.span(),
                        "the password is not UTF-8",
                    )
                })?)
            }
        };
        let settings = PostgresSettings {
            url: url.clone(),
            password,
            ca_pem,
            schema: p.schema.get_ref().clone(),
            table: p.table.get_ref().clone(),
            create_table: p.create_table,
            create_user_index: p.create_user_index,
            create_notify_trigger: p.create_notify_trigger,
            prune_interval: p.prune_interval,
            pool_size: *p.pool_size.get_ref(),
            timeout: p.timeout,
            retry_after: p.retry_after,
            user_field: String::new(),
        };
        if let Err(e) = settings.pg_config() {
            return Err(src.err(
                "postgres.url",
                p.url.span(),
                format!("not a usable PostgreSQL URL: {e}"),
            ));
        }
        if let Some(ca) = &p.ca_file {
            if let Err(e) = settings.tls() {
                return Err(src.err("postgres.ca_file", ca.span(), e));
            }
        }
        Ok(settings)
    }
}

impl TryFrom<In<'_, file::CacheSection>> for CacheSettings {
    type Error = ConfigError;

    fn try_from(In { at: c, src, .. }: In<'_, file::CacheSection>) -> Result<Self, ConfigError> {
        if c.max_bytes < 4096 {
            return Err(src.err("cache.max_bytes", 0..0, "must be at least 4096"));
        }
        if c.ttl < Duration::from_millis(100) {
            return Err(src.err("cache.ttl", 0..0, "must be at least 100ms"));
        }
        Ok(CacheSettings {
            max_bytes: c.max_bytes,
            ttl: c.ttl,
        })
    }
}

impl TryFrom<In<'_, file::MemorySection>> for MemorySettings {
    type Error = ConfigError;

    fn try_from(In { at: m, src, .. }: In<'_, file::MemorySection>) -> Result<Self, ConfigError> {
        if m.max_bytes < 65536 {
            return Err(src.err("memory.max_bytes", 0..0, "must be at least 65536"));
        }
        Ok(MemorySettings {
            max_bytes: m.max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::StoreSettings;

    fn parse(redis: &str) -> Result<crate::Config, String> {
        let toml = format!(
            "[session]\nsecrets = [\"a test secret of some length\"]\nstore = \"redis\"\n[redis]\n{redis}\n[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\nauth = \"public\"\n"
        );
        crate::Config::parse(&toml, "test.toml", &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_is_given_by_its_seed_nodes() {
        let c =
            parse(r#"cluster = ["rediss://u:pw@10.0.0.1:6379", "rediss://u:pw@10.0.0.2:6380"]"#)
                .unwrap();
        let StoreSettings::Redis(r) = &c.store else {
            panic!("redis")
        };
        assert_eq!(r.cluster.len(), 2);
        assert!(!format!("{r:?}").contains("pw"), "{r:?}");
        for bad in [
            "cluster = []",
            r#"cluster = ["redis+unix:///tmp/r.sock"]"#,
            r#"cluster = ["10.0.0.1:6379"]"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("redis.cluster"), "{bad}: {e}");
        }
    }

    #[test]
    fn sentinels_name_the_master_and_their_password_is_a_secret() {
        let toml = r#"sentinel = { master = "mymaster", nodes = ["redis://10.0.0.1:26379"], password = "env:SENTINEL_PW" }"#;
        let text = format!(
            "[session]\nsecrets = [\"a test secret of some length\"]\nstore = \"redis\"\n[redis]\n{toml}\n[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\nauth = \"public\"\n"
        );
        let env = |name: &str| (name == "SENTINEL_PW").then(|| "s3cret".to_owned());
        let c = crate::Config::parse(&text, "test.toml", &env).unwrap();
        let StoreSettings::Redis(r) = &c.store else {
            panic!("redis")
        };
        let s = r.sentinel.as_ref().unwrap();
        assert_eq!(
            (s.master.as_str(), s.password.as_deref()),
            ("mymaster", Some("s3cret"))
        );
        assert!(!format!("{r:?}").contains("s3cret"));
        let e = parse(r#"sentinel = { master = "m", nodes = [] }"#).unwrap_err();
        assert!(e.contains("redis.sentinel"), "{e}");
        let e = parse(
            r#"cluster = ["redis://10.0.0.1:6379"]
sentinel = { master = "m", nodes = ["redis://10.0.0.1:26379"] }"#,
        )
        .unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn postgres_takes_connect_pg_simples_names_and_a_secret_password() {
        let parse = |pg: &str| {
            let toml = format!(
                "[session]\nsecrets = [\"a test secret of some length\"]\nstore = \"postgres\"\nuser_field = \"uid\"\n[postgres]\n{pg}\n[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\nauth = \"public\"\n"
            );
            let env = |name: &str| (name == "PGPW").then(|| "s3cret".to_owned());
            crate::Config::parse(&toml, "test.toml", &env).map_err(|e| e.to_string())
        };
        let c = parse("url = \"postgres://gate@db:5432/app?sslmode=require\"\npassword = \"env:PGPW\"\nprune_interval = \"0s\"").unwrap();
        let StoreSettings::Postgres(p) = &c.store else {
            panic!("postgres")
        };
        assert_eq!(
            (p.schema.as_str(), p.table.as_str(), p.user_field.as_str()),
            ("public", "session", "uid")
        );
        assert_eq!(p.password.as_deref(), Some("s3cret"));
        assert!(p.prune_interval.is_zero() && !p.create_table);
        assert!(c.cache.is_some(), "the cache is on with PostgreSQL too");
        assert!(!format!("{p:?}").contains("s3cret"));
        for (bad, key) in [
            ("url = \"redis://db\"", "test.toml:6: postgres.url"),
            (
                "url = \"postgres://db/app?sslmode=bogus\"",
                "test.toml:6: postgres.url",
            ),
            ("pool_size = 0", "test.toml:6: postgres.pool_size"),
            (
                "url = \"postgres://db/app?password=x\"",
                "test.toml:6: postgres.url",
            ),
            ("table = \"\"", "test.toml:6: postgres.table"),
            ("password = \"env:NOPE\"", "test.toml:6: postgres.password"),
            ("tablename = \"s\"", "postgres"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn the_embedded_store_is_bounded_by_default_and_as_configured() {
        let parse = |tail: &str| {
            let toml = format!(
                "[session]\nsecrets = [\"a test secret of some length\"]\n{tail}\n[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\nauth = \"public\"\n"
            );
            crate::Config::parse(&toml, "test.toml", &|_| None).map_err(|e| e.to_string())
        };
        let memory = |c: crate::Config| match c.store {
            StoreSettings::Memory(m) => m.max_bytes,
            _ => panic!("memory"),
        };
        assert_eq!(memory(parse("").unwrap()), 256 << 20);
        let c = parse("[memory]\nmax_bytes = 1048576").unwrap();
        assert!(
            c.describe().contains("memory bound 1048576 bytes"),
            "{}",
            c.describe()
        );
        assert_eq!(memory(c), 1 << 20);
        let e = parse("[memory]\nmax_bytes = 100").unwrap_err();
        assert!(e.contains("test.toml:4: memory.max_bytes"), "{e}");
        assert!(parse("[memory]\nmax_entries = 1").is_err());
    }
}
