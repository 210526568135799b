//! Where config errors point: the file, the key and its line. Every section is built from an
//! [`In`]: the file's section, and the [`Source`] its errors are reported against.

use std::net::SocketAddr;
use std::ops::Range;

use http::HeaderName;
use toml::Spanned;

use super::{line_of, ConfigError};

/// The config text, for turning spans and keys into lines.
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub file: &'a str,
}

/// What each section's `TryFrom` is built from: its part of the file, the source to report
/// errors against, and where `env:` secrets come from.
pub(super) struct In<'a, T: ?Sized> {
    pub at: &'a T,
    pub src: &'a Source<'a>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl<T: ?Sized> Clone for In<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for In<'_, T> {}

impl<'a, T: ?Sized> In<'a, T> {
    /// The same source and environment, for another part of the file.
    pub fn with<U: ?Sized>(&self, at: &'a U) -> In<'a, U> {
        In {
            at,
            src: self.src,
            env: self.env,
        }
    }
}

impl Source<'_> {
    pub fn err(
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

pub(super) fn parse_listen(
    src: &Source,
    key: &str,
    addr: &Spanned<String>,
) -> Result<String, ConfigError> {
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

pub(super) fn readable_file(
    src: &Source,
    key: &str,
    path: &Spanned<String>,
) -> Result<String, ConfigError> {
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

/// `env:NAME`, `file:/path` (trailing newline trimmed) or the secret itself.
pub(super) fn resolve_secret(
    spec: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, String> {
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

/// A redirect target the operator wrote: a local path or an absolute http(s) URL.
pub(super) fn redirect_target(
    src: &Source,
    key: &str,
    r: &Spanned<String>,
) -> Result<String, ConfigError> {
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

pub(super) fn header_name(
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
