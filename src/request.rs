//! What a request is routed on, read once and checked before any route is chosen: the
//! request target's form, the method, the host (an absolute-form authority, else `Host`), the
//! canonical path ([`crate::path`]), and the credentials in the token header. Whatever an
//! upstream could read differently is refused here with a [`RequestError`].

use http::{header, Method};
use pingora::http::RequestHeader;

use crate::error::RequestError;
use crate::path::{NormalPath, PathPolicy, RequestTarget};
use crate::routes::{is_case_variant, parse_host, HostError};
use crate::sessions::{Sessions, TokenHeader};

/// What a request is routed on, checked and canonical.
pub struct Target {
    pub path: NormalPath,
    pub query: Option<String>,
    /// An absolute-form target's authority.
    pub authority: Option<String>,
    /// The host to route on: lower case, without port.
    pub host: Option<String>,
}

impl Target {
    /// Whether `raw`, a request target, is already the origin form the upstream gets: the
    /// canonical path and the query as the client sent it.
    pub fn is_origin_form(&self, raw: &[u8]) -> bool {
        let path = self.path.upstream.as_bytes();
        match &self.query {
            None => raw == path,
            Some(q) => {
                raw.len() == path.len() + 1 + q.len()
                    && raw.starts_with(path)
                    && raw[path.len()] == b'?'
                    && raw.ends_with(q.as_bytes())
            }
        }
    }

    /// Checks what the gate routes on and returns it canonical; `None` for `OPTIONS *`.
    pub fn read(
        req: &RequestHeader,
        policy: &PathPolicy,
        sessions: &Sessions,
    ) -> Result<Option<Target>, RequestError> {
        if is_case_variant(&req.method) {
            return Err(RequestError::MethodCase(req.method.to_string()));
        }
        let RequestTarget::Path {
            path,
            query,
            authority,
        } = RequestTarget::parse(req.method == Method::OPTIONS, req.raw_path())?
        else {
            return Ok(None);
        };
        let path = policy.normalize(path)?;

        // The host routed on is the host the upstream sees: an absolute-form target's
        // authority replaces `Host` (RFC 9112 section 3.2.2), and goes upstream as `Host`.
        let mut hosts = req.headers.get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(HostError::Repeated.into());
        }
        let authority = authority.or_else(|| req.uri.authority().map(|a| a.as_str()));
        let host = match (authority, host_header) {
            (Some(a), _) => parse_host(a)?,
            (None, Some(h)) => parse_host(h.to_str().map_err(|_| HostError::Invalid)?)?,
            (None, None) if req.version == http::Version::HTTP_11 => {
                return Err(HostError::Missing.into())
            }
            (None, None) => None,
        };

        if sessions.token_header(req) == TokenHeader::Mixed {
            return Err(RequestError::MixedCredentials);
        }
        Ok(Some(Target {
            path,
            query: query.map(str::to_owned),
            authority: authority.map(str::to_owned),
            host,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str, query: Option<&str>) -> Target {
        Target {
            path: NormalPath {
                matched: path.into(),
                upstream: path.into(),
            },
            query: query.map(Into::into),
            authority: None,
            host: None,
        }
    }

    #[test]
    fn origin_form_is_the_canonical_path_and_the_query_as_sent() {
        assert!(target("/a/b", None).is_origin_form(b"/a/b"));
        assert!(!target("/a/b", None).is_origin_form(b"/a//b"));
        assert!(!target("/a/b", None).is_origin_form(b"/a/b?"));
        assert!(target("/a/b", Some("x=1")).is_origin_form(b"/a/b?x=1"));
        assert!(target("/a/b", Some("")).is_origin_form(b"/a/b?"));
        assert!(!target("/a/b", Some("x=1")).is_origin_form(b"/a/b/?x=1"));
        assert!(!target("/a/b", Some("x=1")).is_origin_form(b"/a/bx?x=1"));
        assert!(!target("/a/b", Some("x=1")).is_origin_form(b"http://h/a/b?x=1"));
    }
}
