//! Identity headers: what the upstream may believe about the user.
//!
//! Every request, on every route, first loses any header a client could use to pose as a
//! user: the configured identity headers in every spelling (case, and `_` for `-`, which CGI,
//! WSGI and PHP backends read as the same name) and the gate's internal headers. Only then,
//! on authenticated requests, are the real values injected from the session.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde_json::Value;

use crate::record::SessionRecord;

/// The `[identity]` settings.
#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// Injected header -> JSON pointer into the session.
    pub headers: Vec<(HeaderName, String)>,
    /// Extra header names removed from client requests, in canonical form.
    pub strip: Vec<String>,
}

/// Headers that only the gate and its upstreams may speak: clients never get to send them.
const INTERNAL_HEADERS: &[&str] = crate::directives::HEADERS;

/// Forwarding headers (`X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded`, `X-Real-IP`): the
/// gate writes its own ([`crate::forwarded`]), so no client spelling may reach an upstream.
/// express with `trust proxy`, and many frameworks like it, believe them.
const FORWARDED_HOST_HEADERS: &[&str] = crate::forwarded::HEADERS;

/// Headers that make an upstream treat a request as another method than the one routed on;
/// removed unless the route has `method_override = true` ([`crate::method_override`]).
const METHOD_OVERRIDE_HEADERS: &[&str] = crate::method_override::HEADERS;

/// Lower case, `_` read as `-`: the name as a lenient backend would see it.
pub fn canonical_header_name(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

pub fn is_internal(name: &str) -> bool {
    let c = canonical_header_name(name);
    INTERNAL_HEADERS.contains(&c.as_str())
}

/// Whether `name` (as sent) spells `canonical` under the lenient reading.
fn spells(name: &[u8], canonical: &[u8]) -> bool {
    name.len() == canonical.len()
        && name.iter().zip(canonical).all(|(&a, &b)| {
            (if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            }) == b
        })
}

#[derive(Debug)]
pub struct Identity {
    /// Canonical names removed from every client request.
    strip: Vec<String>,
    inject: Vec<(HeaderName, String)>,
}

impl Identity {
    pub fn new(settings: &IdentitySettings) -> Self {
        let mut strip: Vec<String> = INTERNAL_HEADERS
            .iter()
            .chain(FORWARDED_HOST_HEADERS)
            .map(|s| s.to_string())
            .collect();
        strip.extend(
            settings
                .headers
                .iter()
                .map(|(h, _)| canonical_header_name(h.as_str())),
        );
        strip.extend(settings.strip.iter().cloned());
        strip.sort();
        strip.dedup();
        Self {
            strip,
            inject: settings.headers.clone(),
        }
    }

    /// Removes every spelling of every identity, internal and forwarded-host header, and of
    /// the method-override headers unless the route lets them through.
    pub fn strip_request(&self, req: &mut RequestHeader, keep_method_override: bool) {
        let doomed: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|name| {
                let name = name.as_str().as_bytes();
                self.strip.iter().any(|c| spells(name, c.as_bytes()))
                    || (!keep_method_override
                        && METHOD_OVERRIDE_HEADERS
                            .iter()
                            .any(|c| spells(name, c.as_bytes())))
            })
            .cloned()
            .collect();
        for name in doomed {
            req.remove_header(&name);
        }
    }

    /// Adds the configured headers from the session. Values that are absent, objects, or that
    /// hold control characters are not sent.
    pub fn inject(&self, session: &SessionRecord, req: &mut RequestHeader) {
        for (name, pointer) in &self.inject {
            let Some(value) = session.pointer(pointer).and_then(render) else {
                continue;
            };
            match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(v) if !value.bytes().any(|b| b.is_ascii_control()) => {
                    let _ = req.insert_header(name.clone(), v);
                }
                _ => {
                    tracing::warn!(header = %name, "session value holds control characters; header not sent")
                }
            }
        }
    }
}

/// A session value as header text: strings as they are, numbers and booleans as text, arrays
/// comma-joined; `None` for null, objects and nested arrays.
pub fn render(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Array(_) | Value::Object(_) => None,
                other => render(other),
            })
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join(",")),
        Value::Null | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity() -> Identity {
        Identity::new(&IdentitySettings {
            headers: vec![
                (HeaderName::from_static("x-user"), "/user".into()),
                (HeaderName::from_static("x-user-roles"), "/roles".into()),
                (HeaderName::from_static("x-user-id"), "/id".into()),
            ],
            strip: vec!["x-forwarded-user".into()],
        })
    }

    #[test]
    fn strips_every_spelling() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in [
            ("X-User", "a"),
            ("x_user", "b"),
            ("X_USER_ROLES", "c"),
            ("x-forwarded_user", "d"),
            ("X-Session-Issue", "{}"),
            ("X-Forwarded-Host", "evil.example"),
            ("forwarded", "host=evil.example"),
            ("x_forwarded_host", "evil.example"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("X_Method_Override", "DELETE"),
            ("x-keep", "e"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        let mut kept = req.clone();
        identity().strip_request(&mut req, false);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
        identity().strip_request(&mut kept, true);
        let mut left: Vec<&str> = kept.headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "x-http-method",
                "x-http-method-override",
                "x-keep",
                "x_method_override"
            ]
        );
    }

    #[test]
    fn injects_rendered_values_and_refuses_control_characters() {
        let session = SessionRecord::parse(
            &json!({"user": "alice\r\nX-Admin: 1", "roles": ["a", "b", 3], "id": 42}).to_string(),
        )
        .unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        identity().inject(&session, &mut req);
        assert!(req.headers.get("x-user").is_none());
        assert_eq!(req.headers.get("x-user-roles").unwrap(), "a,b,3");
        assert_eq!(req.headers.get("x-user-id").unwrap(), "42");
    }

    #[test]
    fn renders_values() {
        assert_eq!(render(&json!(true)).as_deref(), Some("true"));
        assert_eq!(render(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(render(&json!(null)), None);
        assert_eq!(render(&json!({"a": 1})), None);
        assert_eq!(render(&json!([["x"]])), None);
    }
}
