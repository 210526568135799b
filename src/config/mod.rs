//! Configuration: `proxy.toml` is parsed into [`file`] structs, then validated once at start-up
//! into the [`runtime`] types the proxy uses. Every error names the key and the line.

pub mod describe;
pub mod file;
pub mod runtime;

use std::path::{Path, PathBuf};

pub use runtime::{
    Config, CookieSettings, RedisSettings, RouteSettings, Secure, StoreSettings, UpstreamSettings,
};

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
        runtime::validate(parsed, &runtime::Source { text: src, file }, env)
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
