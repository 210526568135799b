//! Reading the session cookie from a request and writing `Set-Cookie`, byte-compatible with
//! express-session (the `cookie` package: values encoded like `encodeURIComponent`).

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }

    /// express-session's `cookie.sameSite` as a record stores it: a name in any case, or
    /// `true` for Strict.
    pub fn from_record(v: &serde_json::Value) -> Option<SameSite> {
        match v {
            serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "lax" => Some(SameSite::Lax),
                "strict" => Some(SameSite::Strict),
                "none" => Some(SameSite::None),
                _ => None,
            },
            serde_json::Value::Bool(true) => Some(SameSite::Strict),
            _ => None,
        }
    }
}

/// When cookies get `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secure {
    Always,
    Never,
    /// Only when the client reached the gate over TLS.
    Auto,
}

impl Secure {
    /// Whether a cookie for a client that reached the gate (or its edge) over HTTPS or not
    /// gets `Secure`.
    pub fn applies(self, https: bool) -> bool {
        match self {
            Secure::Always => true,
            Secure::Never => false,
            Secure::Auto => https,
        }
    }
}

/// The `[session.cookie]` settings: the attributes of cookies the gate makes.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    pub path: String,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: Secure,
    pub same_site: Option<SameSite>,
    pub max_age: Option<Duration>,
}

/// What `encodeURIComponent` leaves alone.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

pub fn encode_value(v: &str) -> String {
    utf8_percent_encode(v, URI_COMPONENT).to_string()
}

/// Decodes a cookie value as the `cookie` package does (quotes stripped, percent-decoded);
/// `None` when the encoding is broken.
pub fn decode_value(v: &str) -> Option<String> {
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    percent_decode_str(v)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Every value of cookie `name` in one `Cookie` header, in order.
pub fn values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// A `Cookie` header without cookie `name`; `None` when it holds no such cookie. The other
/// pairs are kept as they were sent, joined with `; `.
pub fn without(header: &str, name: &str) -> Option<String> {
    let named = |pair: &str| pair.split_once('=').is_some_and(|(k, _)| k.trim() == name);
    if !header.split(';').any(named) {
        return None;
    }
    let kept: Vec<&str> = header
        .split(';')
        .filter(|p| !named(p))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    Some(kept.join("; "))
}

/// The attributes of a session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub path: String,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<SameSite>,
    /// `None` makes a browser-session cookie.
    pub max_age: Option<Duration>,
}

/// `Set-Cookie` for a live session; `value` is already encoded.
pub fn set_cookie(name: &str, value: &str, attrs: &Attributes, now: SystemTime) -> String {
    let mut out = format!("{name}={value}");
    let _ = write!(out, "; Path={}", attrs.path);
    if let Some(d) = &attrs.domain {
        let _ = write!(out, "; Domain={d}");
    }
    if let Some(max_age) = attrs.max_age {
        let _ = write!(
            out,
            "; Max-Age={}; Expires={}",
            max_age.as_secs(),
            httpdate::fmt_http_date(now + max_age)
        );
    }
    push_flags(&mut out, attrs);
    out
}

/// `Set-Cookie` that makes the browser drop the cookie at once.
pub fn expire_cookie(name: &str, attrs: &Attributes) -> String {
    let mut out = format!("{name}=; Path={}", attrs.path);
    if let Some(d) = &attrs.domain {
        let _ = write!(out, "; Domain={d}");
    }
    out.push_str("; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    push_flags(&mut out, attrs);
    out
}

fn push_flags(out: &mut String, attrs: &Attributes) {
    if attrs.http_only {
        out.push_str("; HttpOnly");
    }
    if attrs.secure {
        out.push_str("; Secure");
    }
    if let Some(s) = attrs.same_site {
        let _ = write!(out, "; SameSite={}", s.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_removed_and_the_others_kept() {
        assert_eq!(
            without("a=1; connect.sid=s%3Ax.y; b=2", "connect.sid").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(without("connect.sid=x", "connect.sid").as_deref(), Some(""));
        assert_eq!(
            without("connect.sid=x;connect.sid=y; c=3", "connect.sid").as_deref(),
            Some("c=3")
        );
        assert_eq!(without("a=1; connect.sidx=2", "connect.sid"), None);
    }

    #[test]
    fn finds_every_value_of_a_name() {
        let h = "a=1; connect.sid=s%3Ax.y;other=2;  connect.sid = second ";
        assert_eq!(
            values(h, "connect.sid").collect::<Vec<_>>(),
            ["s%3Ax.y", "second"]
        );
        assert_eq!(values("novalue; x", "x").count(), 0);
    }

    #[test]
    fn decodes_like_the_cookie_package() {
        assert_eq!(decode_value("s%3Aabc.d%2Be").as_deref(), Some("s:abc.d+e"));
        assert_eq!(decode_value("\"s%3Aabc\"").as_deref(), Some("s:abc"));
        assert_eq!(decode_value("%FF"), None);
    }

    #[test]
    fn writes_express_style_attributes() {
        let attrs = Attributes {
            path: "/".into(),
            domain: None,
            http_only: true,
            secure: true,
            same_site: Some(SameSite::Lax),
            max_age: Some(Duration::from_secs(60)),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            set_cookie("sid", "v", &attrs, now),
            "sid=v; Path=/; Max-Age=60; Expires=Sun, 09 Sep 2001 01:47:40 GMT; HttpOnly; Secure; SameSite=Lax"
        );
        let session = Attributes {
            max_age: None,
            secure: false,
            same_site: None,
            ..attrs.clone()
        };
        assert_eq!(
            set_cookie("sid", "v", &session, now),
            "sid=v; Path=/; HttpOnly"
        );
        assert!(expire_cookie("sid", &attrs)
            .starts_with("sid=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970"));
    }
}
