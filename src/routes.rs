//! The route table: which upstream serves a request and what it demands of the session.
//! Matching is on host, method and the normalised path (see [`crate::path`]); the longest
//! path prefix wins, then a route that names a host, then one that names methods.

use http::Method;

use crate::config::RouteSettings;

/// `example.com` or `*.example.com` (any subdomain, not the apex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Holds the suffix with its leading dot: `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        match lower.strip_prefix("*.") {
            Some(rest) if valid(rest) => Ok(HostPattern::Subdomains(format!(".{rest}"))),
            None if valid(&lower) => Ok(HostPattern::Exact(lower)),
            _ => Err(format!("`{s}` is not a host name or *.domain pattern")),
        }
    }

    /// `host` must already be lower case, without port.
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// Lower-cases a `Host` header value and drops its port and trailing dot.
pub fn host_without_port(host: &str) -> String {
    let h = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[derive(Debug)]
pub struct RouteTable {
    /// Indices into the config's routes, most specific first.
    order: Vec<usize>,
    routes: Vec<RouteSettings>,
    case_sensitive: bool,
}

impl RouteTable {
    pub fn new(routes: Vec<RouteSettings>, case_sensitive: bool) -> Self {
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| {
            let r = &routes[i];
            std::cmp::Reverse((r.prefix.len(), r.host.is_some(), r.methods.is_some()))
        });
        Self {
            order,
            routes,
            case_sensitive,
        }
    }

    pub fn get(&self, index: usize) -> &RouteSettings {
        &self.routes[index]
    }

    /// The index of the route serving this request. `host` is lower case without port;
    /// `path` is a normalised decoded path.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let r = &self.routes[i];
            self.path_matches(&r.prefix, path)
                && r.host
                    .as_ref()
                    .is_none_or(|p| host.is_some_and(|h| p.matches(h)))
                && r.methods.as_ref().is_none_or(|ms| ms.contains(method))
        })
    }

    /// Segment-aware prefix match: `/account` matches `/account`, `/account/` and
    /// `/account/x`, never `/accountant`.
    fn path_matches(&self, prefix: &str, path: &str) -> bool {
        let Some(head) = path.get(..prefix.len()) else {
            return false;
        };
        let same = if self.case_sensitive {
            head == prefix
        } else {
            head.eq_ignore_ascii_case(prefix)
        };
        same && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::AuthMode;

    fn route(prefix: &str, host: Option<&str>, methods: Option<Vec<Method>>) -> RouteSettings {
        RouteSettings {
            prefix: prefix.trim_end_matches('/').into(),
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            methods,
            upstream: 0,
            auth: AuthMode::Public,
            login_redirect: None,
            issue_sessions: false,
        }
    }

    fn table(case_sensitive: bool) -> RouteTable {
        RouteTable::new(
            vec![
                route("/", None, None),
                route("/account/", None, None),
                route("/account/public/", None, None),
                route("/api/", Some("*.example.com"), None),
                route("/api/", None, Some(vec![Method::POST])),
            ],
            case_sensitive,
        )
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table(false);
        assert_eq!(t.find(None, &Method::GET, "/account"), Some(1));
        assert_eq!(t.find(None, &Method::GET, "/account/x"), Some(1));
        assert_eq!(t.find(None, &Method::GET, "/accountant"), Some(0));
        assert_eq!(t.find(None, &Method::GET, "/account/public/a"), Some(2));
        assert_eq!(t.find(None, &Method::GET, "/"), Some(0));
    }

    #[test]
    fn case_insensitive_by_default() {
        assert_eq!(table(false).find(None, &Method::GET, "/ACCOUNT/x"), Some(1));
        assert_eq!(table(true).find(None, &Method::GET, "/ACCOUNT/x"), Some(0));
    }

    #[test]
    fn host_then_methods_break_ties() {
        let t = table(false);
        assert_eq!(
            t.find(Some("a.example.com"), &Method::GET, "/api/x"),
            Some(3)
        );
        assert_eq!(
            t.find(Some("example.com"), &Method::POST, "/api/x"),
            Some(4)
        );
        assert_eq!(t.find(Some("example.com"), &Method::GET, "/api/x"), Some(0));
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(host_without_port("Example.COM:8080"), "example.com");
        assert_eq!(host_without_port("example.com."), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }
}
