//! One canonical path per request, so that no spelling of a path reaches a different rule
//! than the upstream will serve, and the upstream receives exactly the path that was matched.
//!
//! Upstreams disagree about paths: servlet containers (Jetty, Tomcat, Undertow, Spring)
//! strip `;` path parameters from every segment, some frameworks decode twice, Werkzeug and
//! Jetty 9.4 serve request targets that are not origin-form. The gate therefore:
//!
//! - accepts only origin-form (`/…`), absolute-form (`http(s)://authority/…`) and
//!   `OPTIONS *` request targets ([`RequestTarget::parse`]);
//! - refuses, by default, any `;` path parameter (raw or `%3B`), any `%25` that a second
//!   decoding would turn into another byte (`%252e` is `.` to an upstream that decodes
//!   twice, `%2561` is `a`), and every encoded separator;
//! - matches routes on the fully decoded path with every segment's `;…` parameters removed
//!   and dot segments resolved ([`NormalPath::matched`]);
//! - sends the upstream that path re-encoded ([`NormalPath::upstream`]), never the client's
//!   bytes, and never a raw `;` made from a client's `%3B`.

use percent_encoding::{percent_encode, AsciiSet, CONTROLS};
use pingora::protocols::http::authority::{raw_target_authority, RawTargetAuthority};

/// What `server.path_parameters` does with `;` parameters in path segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parameters {
    /// A path with parameters is a 400.
    #[default]
    Reject,
    /// Parameters are removed; the upstream gets the path without them.
    Strip,
    /// Parameters reach the upstream; routes still match on the path without them.
    Keep,
}

/// How request paths are read: the `[server]` settings that shape canonicalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    pub parameters: Parameters,
    /// Refuse `%25` followed by two hex digits (`%252e`, `%252f`, `%2561`, …).
    pub reject_double_encoding: bool,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            parameters: Parameters::Reject,
            reject_double_encoding: true,
        }
    }
}

/// A path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Fully decoded, parameters removed, dot segments resolved, single slashes: what routes
    /// match against.
    pub matched: String,
    /// The path the upstream receives: `matched` re-encoded with only the bytes a path
    /// segment cannot hold escaped (plus, with `path_parameters = "keep"`, the parameters).
    pub upstream: String,
}

/// Why a request target was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not origin-form, absolute-form or OPTIONS *")]
    TargetForm,
    #[error("an absolute-form target must use http or https")]
    TargetScheme,
    #[error("a request target must not carry a fragment")]
    Fragment,
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("an encoded `/`, `\\` or NUL is ambiguous in a path")]
    EncodedSeparator,
    #[error("a double-encoded byte (`%25` and two hex digits) is ambiguous in a path")]
    DoubleEncoding,
    #[error("`;` path parameters are refused (server.path_parameters)")]
    Parameters,
    #[error("a backslash is ambiguous in a path")]
    Backslash,
    #[error("control characters are not allowed in a path")]
    Control,
    #[error("`%` must be followed by two hex digits")]
    BadPercent,
    #[error("the decoded path is not UTF-8")]
    NotUtf8,
    #[error("a dot or empty segment with kept parameters (`..;x`) is ambiguous")]
    DotParameter,
}

/// A request target, split into the parts the gate routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestTarget<'a> {
    /// `/path?query`, or the path of an absolute-form target with its authority.
    Path {
        path: &'a str,
        query: Option<&'a str>,
        /// The authority of an absolute-form target (it overrides `Host`).
        authority: Option<&'a str>,
    },
    /// `OPTIONS *`: a question about the server, not about a resource.
    Asterisk,
}

impl<'a> RequestTarget<'a> {
    /// Classifies the raw request target; anything that is not origin-form, absolute-form
    /// with an http(s) scheme, or `*` with OPTIONS is refused.
    pub fn parse(is_options: bool, raw: &'a [u8]) -> Result<Self, PathError> {
        let raw = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
        if raw.contains('#') {
            return Err(PathError::Fragment);
        }
        if raw == "*" && is_options {
            return Ok(RequestTarget::Asterisk);
        }
        let (path_and_query, authority) = if raw.starts_with('/') {
            (raw, None)
        } else {
            match raw_target_authority(raw.as_bytes()) {
                RawTargetAuthority::Absolute {
                    scheme,
                    authority,
                    path_and_query,
                } => {
                    if !(scheme.eq_ignore_ascii_case(b"http")
                        || scheme.eq_ignore_ascii_case(b"https"))
                    {
                        return Err(PathError::TargetScheme);
                    }
                    // Both are suffixes of a `str` split on ASCII bytes.
                    let authority = &raw[scheme.len() + 3..scheme.len() + 3 + authority.len()];
                    let pq = &raw[raw.len() - path_and_query.len()..];
                    (pq, Some(authority))
                }
                _ => return Err(PathError::TargetForm),
            }
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        Ok(RequestTarget::Path {
            path,
            query,
            authority,
        })
    }
}

/// Bytes escaped in the canonical encoded path: everything outside RFC 3986 `pchar` and `/`,
/// and `;`, which only ever separates parameters on the way to the upstream.
const SEGMENT_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl PathPolicy {
    /// Canonicalises an origin-form path (without its query).
    pub fn normalize(&self, raw: &str) -> Result<NormalPath, PathError> {
        // Most request paths are already canonical: no escapes, parameters, dot segments or
        // empty segments.
        if already_canonical(raw) {
            return Ok(NormalPath {
                matched: raw.to_owned(),
                upstream: raw.to_owned(),
            });
        }
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        if self.reject_double_encoding && double_encoded(raw.as_bytes()) {
            return Err(PathError::DoubleEncoding);
        }

        // Segments as (route-matching name, upstream spelling). `%2F` is refused, so raw and
        // decoded segments are the same segments.
        let mut segments: Vec<(String, String)> = Vec::new();
        let mut trailing_slash = false;
        for raw_seg in raw.split('/').skip(1) {
            trailing_slash = false;
            // Pieces split on raw `;`: the first is the segment's name, the rest parameters.
            let pieces = raw_seg
                .split(';')
                .map(decode)
                .collect::<Result<Vec<String>, PathError>>()?;
            let has_params = pieces.len() > 1 || pieces[0].contains(';');
            if has_params && self.parameters == Parameters::Reject {
                return Err(PathError::Parameters);
            }
            // Fully decoded, then stripped: a `%3B` ends the name as a raw `;` would for an
            // upstream that decodes before it strips.
            let name = pieces[0].split(';').next().unwrap_or_default();
            match name {
                // Kept parameters on a dot or empty segment: upstreams disagree on what
                // `/..;x/` and `/;x/` name.
                "" | "." | ".." if has_params && self.parameters == Parameters::Keep => {
                    return Err(PathError::DotParameter);
                }
                "" | "." => trailing_slash = true,
                ".." => {
                    segments.pop();
                    trailing_slash = true;
                }
                _ => {
                    let upstream = match self.parameters {
                        Parameters::Keep => pieces
                            .iter()
                            .map(|p| percent_encode(p.as_bytes(), SEGMENT_ESCAPE).to_string())
                            .collect::<Vec<_>>()
                            .join(";"),
                        _ => percent_encode(name.as_bytes(), SEGMENT_ESCAPE).to_string(),
                    };
                    segments.push((name.to_owned(), upstream));
                }
            }
        }

        let mut matched = String::with_capacity(raw.len());
        let mut upstream = String::with_capacity(raw.len());
        for (name, spelled) in &segments {
            matched.push('/');
            matched.push_str(name);
            upstream.push('/');
            upstream.push_str(spelled);
        }
        if segments.is_empty() || trailing_slash {
            matched.push('/');
            upstream.push('/');
        }
        Ok(NormalPath { matched, upstream })
    }
}

/// The strict default policy, for paths an operator writes in the config.
pub fn normalize_path(raw: &str) -> Result<NormalPath, PathError> {
    PathPolicy::default().normalize(raw)
}

/// Percent-decodes one segment piece, refusing what no canonical path may hold.
fn decode(piece: &str) -> Result<String, PathError> {
    let bytes = piece.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let v = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| Some((hex_value(h[0])? << 4) | hex_value(h[1])?))
                    .ok_or(PathError::BadPercent)?;
                if matches!(v, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if v.is_ascii_control() {
                    return Err(PathError::Control);
                }
                out.push(v);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b.is_ascii_control() => return Err(PathError::Control),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

/// `%25` followed by two hex digits: an escape that a second decoding turns into another
/// byte. The separators (`%252e`, `%252f`, `%255c`, `%253b`, `%2500`) change which resource
/// is meant, and so can any other byte (`%2561ccount` is `account` to an upstream that
/// decodes twice, `%61ccount` to the gate), so the whole class is refused, as Spring
/// Security's StrictHttpFirewall refuses `%25`. A `%25` not followed by hex stays a `%`.
fn double_encoded(raw: &[u8]) -> bool {
    raw.windows(5).any(|w| {
        w[..3].eq_ignore_ascii_case(b"%25") && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit()
    })
}

/// A path that decoding and resolving would leave as it is, spelled the way its canonical
/// encoding spells it: only `pchar` bytes other than `%` and `;`, no empty segment but a
/// trailing one, no dot segment.
fn already_canonical(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b);
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." || !seg.bytes().all(plain) {
            return false;
        }
    }
    true
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|v| v as u8)
}

#[cfg(test)]
mod tests;
