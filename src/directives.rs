//! What an upstream may tell the gate about the session, in response headers, parsed into one
//! [`Action`] whose precedence is decided here and nowhere else. These headers are the gate's
//! own: they are removed from every response before the client sees it, and obeyed only on
//! routes with `issue_sessions`.

use std::time::Duration;

use pingora::http::ResponseHeader;
use serde_json::{Map, Value};

/// Create a session from this JSON object (login).
pub const ISSUE: &str = "x-session-issue";
/// With `X-Session-Issue`: a persistent cookie of this life ("remember me"), in seconds or
/// like `30d`, capped by `session.remember_max`.
pub const MAX_AGE: &str = "x-session-max-age";
/// Merge this JSON object's top-level fields into the current session.
pub const UPDATE: &str = "x-session-update";
/// Move the current session to a new id, keeping its data.
pub const REGENERATE: &str = "x-session-regenerate";
/// `1`: end this session. `all`: end every session of its user, on every gate.
pub const DESTROY: &str = "x-session-destroy";
/// Request: `request` asks for the session token in the response. Response: the token.
pub const TOKEN: &str = "x-session-token";

/// Every header name above: clients never send them, upstream responses never leak them.
pub const HEADERS: &[&str] = &[ISSUE, MAX_AGE, UPDATE, REGENERATE, DESTROY, TOKEN];

/// Which sessions a destroy ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The session the request carried.
    This,
    /// Every session of its user, on every gate: log out everywhere.
    AllOfUser,
}

/// What an upstream asked for, with precedence already decided: a destroy wins over an issue,
/// and an issue over changes to the current session. Carried out by
/// [`Sessions::apply`](crate::sessions::Sessions::apply).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Destroy(Scope),
    /// Log in: a new session holding `fields`, replacing the one the request carried.
    Issue {
        fields: Map<String, Value>,
        /// A persistent cookie of this life (remember me).
        max_age: Option<Duration>,
    },
    /// Change the current session: a new id, then merged fields.
    Modify {
        regenerate: bool,
        patch: Option<Map<String, Value>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DirectiveError {
    #[error("{0} is not a JSON object")]
    NotObject(&'static str),
    #[error("X-Session-Max-Age is not a duration")]
    BadMaxAge,
    #[error("X-Session-Destroy must be 1 or all")]
    BadDestroy,
}

/// Removes the gate's headers from a response without reading them (a route that may not
/// send directives); whether there were any.
pub fn remove(resp: &mut ResponseHeader) -> bool {
    if !present(resp) {
        return false;
    }
    let mut any = false;
    for h in HEADERS {
        any |= resp.remove_header(*h).is_some();
    }
    any
}

/// Whether the response has any of the gate's headers: one pass over its names (stored in
/// lower case), most of which do not even share the prefix.
fn present(resp: &ResponseHeader) -> bool {
    resp.headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("x-session-") && HEADERS.contains(&name)
    })
}

/// Removes the gate's headers from an upstream response and reads them into one action.
/// `Ok(None)` when there were none (or they asked for nothing). Every header is checked,
/// even one that precedence makes moot: a malformed directive is an upstream bug to surface.
pub fn take(resp: &mut ResponseHeader) -> Result<Option<Action>, DirectiveError> {
    if !present(resp) {
        return Ok(None);
    }
    let mut taken: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for h in HEADERS {
        if let Some(v) = resp.remove_header(*h) {
            taken.push((h, v.as_bytes().to_vec()));
        }
    }
    let get = |name: &str| {
        taken
            .iter()
            .find(|(h, _)| *h == name)
            .map(|(_, v)| v.as_slice())
    };
    let object = |name: &'static str| -> Result<Option<Map<String, Value>>, DirectiveError> {
        match get(name) {
            None => Ok(None),
            Some(v) => match serde_json::from_slice::<Value>(v) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                _ => Err(DirectiveError::NotObject(name)),
            },
        }
    };
    let max_age = match get(MAX_AGE) {
        None => None,
        Some(v) => Some(parse_duration(v).ok_or(DirectiveError::BadMaxAge)?),
    };
    let destroy = match get(DESTROY).map(|v| v.trim_ascii()) {
        None => None,
        Some(b"1" | b"true") => Some(Scope::This),
        Some(v) if v.eq_ignore_ascii_case(b"all") => Some(Scope::AllOfUser),
        Some(_) => return Err(DirectiveError::BadDestroy),
    };
    let issue = object(ISSUE)?;
    let patch = object(UPDATE)?;
    let regenerate = get(REGENERATE).is_some_and(|v| matches!(v.trim_ascii(), b"1" | b"true"));
    Ok(match (destroy, issue) {
        (Some(scope), _) => Some(Action::Destroy(scope)),
        (None, Some(fields)) => Some(Action::Issue { fields, max_age }),
        (None, None) if regenerate || patch.is_some() => Some(Action::Modify { regenerate, patch }),
        (None, None) => None,
    })
}

/// `86400` (seconds) or `30d`, `12h`.
fn parse_duration(v: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).ok()?,
    };
    (d >= Duration::from_secs(1)).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn reads_and_removes_every_directive_and_decides_precedence() {
        let mut r = resp(&[
            ("X-Session-Issue", r#"{"user":"a"}"#),
            ("X-Session-Max-Age", "30d"),
            ("X-Session-Update", r#"{"theme":"dark"}"#),
            ("X-Session-Regenerate", "1"),
            ("X-Session-Destroy", "all"),
            ("X-Other", "kept"),
        ]);
        assert_eq!(
            take(&mut r).unwrap(),
            Some(Action::Destroy(Scope::AllOfUser))
        );
        assert_eq!(r.headers.len(), 1);

        let mut r = resp(&[
            ("X-Session-Issue", r#"{"user":"a"}"#),
            ("X-Session-Max-Age", "30d"),
            ("X-Session-Update", r#"{"theme":"dark"}"#),
        ]);
        let Some(Action::Issue { fields, max_age }) = take(&mut r).unwrap() else {
            panic!("an issue wins over an update");
        };
        assert_eq!(fields["user"], "a");
        assert_eq!(max_age, Some(Duration::from_secs(30 * 86400)));

        let mut r = resp(&[
            ("X-Session-Update", r#"{"theme":"dark"}"#),
            ("X-Session-Regenerate", "true"),
        ]);
        let Some(Action::Modify { regenerate, patch }) = take(&mut r).unwrap() else {
            panic!("a modification");
        };
        assert!(regenerate);
        assert_eq!(patch.unwrap()["theme"], "dark");
        assert_eq!(
            take(&mut resp(&[("X-Session-Regenerate", "0")])).unwrap(),
            None
        );
    }

    #[test]
    fn remove_takes_every_directive_and_nothing_else() {
        // The one-pass check reads the shared prefix first.
        assert!(HEADERS.iter().all(|h| h.starts_with("x-session-")));
        let mut r = resp(&[("X-Other", "kept"), ("X-Session", "kept too")]);
        assert!(!remove(&mut r));
        assert_eq!(r.headers.len(), 2);
        let mut r = resp(&[
            ("X-Other", "kept"),
            ("x-session-TOKEN", "t"),
            ("X-Session-Destroy", "1"),
        ]);
        assert!(remove(&mut r));
        let left: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-other"]);
    }

    #[test]
    fn malformed_directives_are_errors_and_still_removed() {
        let mut r = resp(&[("X-Session-Issue", "[1]")]);
        assert!(matches!(
            take(&mut r),
            Err(DirectiveError::NotObject(ISSUE))
        ));
        assert!(r.headers.is_empty());
        assert!(matches!(
            take(&mut resp(&[("X-Session-Max-Age", "soon")])),
            Err(DirectiveError::BadMaxAge)
        ));
        assert!(matches!(
            take(&mut resp(&[("X-Session-Destroy", "maybe")])),
            Err(DirectiveError::BadDestroy)
        ));
        assert!(matches!(
            take(&mut resp(&[
                ("X-Session-Destroy", "1"),
                ("X-Session-Update", "[]")
            ])),
            Err(DirectiveError::NotObject(UPDATE))
        ));
        assert!(take(&mut resp(&[("X-Other", "1")])).unwrap().is_none());
    }
}
