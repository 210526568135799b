//! The route table: which upstream serves a request and what it demands of the session.
//! Matching is on host, method and the normalised path (see [`crate::path`]); the longest
//! path prefix wins, then a route that names a host, then one that names methods.

use std::collections::HashMap;

use http::Method;

/// What a route demands of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A session with a user, else 401 or a login redirect.
    Required,
    /// Identity when there is a session; none otherwise.
    Optional,
    /// No session lookup at all.
    Public,
}

/// One `[[route]]`, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Normalised prefix, without a trailing slash (`""` for the root route).
    pub prefix: String,
    pub host: Option<HostPattern>,
    pub methods: Option<Vec<Method>>,
    /// Index into the config's upstreams (and the gate's pools); `None` only where the gate
    /// does not proxy (forward-auth alone).
    pub upstream: Option<usize>,
    pub auth: AuthMode,
    pub login_redirect: Option<String>,
    pub issue_sessions: bool,
    pub method_override: bool,
    /// The session cookie is removed from the upstream request.
    pub strip_session_cookie: bool,
    /// The assertion's `aud` on this route (the upstream's name unless configured).
    pub audience: String,
    /// The route's own cross-origin policy; `server.cross_origin` when `None`.
    pub cross_origin: Option<crate::cross_origin::Policy>,
}

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

    /// `host` must already be lower case, without port. (The table looks hosts up by name and
    /// suffix; this is the definition it is tested against.)
    #[cfg(test)]
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// Why a `Host` (or an absolute-form authority) was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("more than one Host header")]
    Repeated,
    #[error("the host is not a DNS name, an IPv4 address or a bracketed IPv6 address")]
    Invalid,
    #[error("the port is not a number from 0 to 65535")]
    Port,
    #[error("an HTTP/1.1 request needs a Host header")]
    Missing,
}

/// Checks a `Host` value (`name[:port]`, `[v6][:port]`) and returns the host to route on:
/// lower case, without port or trailing dot. `Ok(None)` for an empty value, which HTTP allows
/// for a target without authority.
pub fn parse_host(value: &str) -> Result<Option<String>, HostError> {
    if value.is_empty() {
        return Ok(None);
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(HostError::Invalid);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(HostError::Invalid)?),
        };
        (&value[..v6.len() + 2], port)
    } else {
        match value.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err(HostError::Port),
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostError::Port);
        }
        if p.parse::<u32>().map_or(true, |n| n > 65535) {
            return Err(HostError::Port);
        }
    }
    if !host.starts_with('[') {
        let name = host.strip_suffix('.').unwrap_or(host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(HostError::Invalid);
        }
    }
    Ok(Some(host.trim_end_matches('.').to_ascii_lowercase()))
}

/// The standard methods ([RFC 9110 section 9] and PATCH), which are case-sensitive: `post`
/// is not POST, but some upstreams (Werkzeug, for one) read it as POST.
const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A method that spells a standard method in another case (`post`, `Delete`).
pub fn is_case_variant(method: &Method) -> bool {
    let m = method.as_str();
    STANDARD_METHODS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(m) && *s != m)
}

/// The route table. A request is served by the most specific route that matches it: the
/// longest path prefix, then a route with a host before one without, then one with methods
/// before one without, then the first in the config. Matching costs a hash lookup per segment
/// of the path (and per label of the host), whatever the number of routes: the routes are
/// grouped by prefix, and each group by host.
#[derive(Debug)]
pub struct RouteTable {
    /// The groups of routes that share a prefix (folded to lower case unless matching is
    /// case-sensitive), by the hash of that prefix.
    groups: HashMap<u64, Vec<Group>>,
    routes: Vec<Route>,
    case_sensitive: bool,
    /// One method of each kind the table tells apart: every method a route lists (HEAD with
    /// GET), and one that no route lists, which stands for all the others.
    distinct_methods: Vec<Method>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>, case_sensitive: bool) -> Self {
        let mut groups: HashMap<u64, Vec<Group>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let key = fold(&r.prefix, case_sensitive);
            let bucket = groups.entry(prefix_hash(&key)).or_default();
            let group = match bucket.iter().position(|g| g.key == key) {
                Some(at) => &mut bucket[at],
                None => {
                    bucket.push(Group {
                        key,
                        ..Group::default()
                    });
                    bucket.last_mut().expect("just pushed")
                }
            };
            let lists = match &r.host {
                None => &mut group.any_host,
                Some(HostPattern::Exact(h)) => group.exact.entry(h.clone()).or_default(),
                Some(HostPattern::Subdomains(s)) => group.subdomains.entry(s.clone()).or_default(),
            };
            // Indices go in ascending: the first that matches in a list is the config's first.
            match r.methods {
                Some(_) => lists.with_methods.push(i),
                None => lists.all_methods.push(i),
            }
        }
        let mut distinct_methods: Vec<Method> = routes
            .iter()
            .flat_map(|r| r.methods.iter().flatten().cloned())
            .collect();
        if distinct_methods.contains(&Method::GET) {
            distinct_methods.push(Method::HEAD);
        }
        distinct_methods.push(Method::from_bytes(b"SESSIONGATE-UNLISTED").expect("a method token"));
        distinct_methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        distinct_methods.dedup();
        Self {
            groups,
            routes,
            case_sensitive,
            distinct_methods,
        }
    }

    /// Whether every method of a request to `host` and `path` is served by route `index`:
    /// then no method override can move the request to another rule.
    pub fn same_route_for_every_method(
        &self,
        host: Option<&str>,
        path: &str,
        index: usize,
    ) -> bool {
        self.distinct_methods
            .iter()
            .all(|m| self.find(host, m, path) == Some(index))
    }

    pub fn get(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The index of the route serving this request. `host` is lower case without port;
    /// `path` is a normalised decoded path.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        // Every prefix that can match, longest first: the whole path, then the path up to
        // each `/` from the right (the last being "", the root's prefix).
        let ends = std::iter::once(path.len()).chain(
            path.bytes()
                .enumerate()
                .rev()
                .filter(|&(_, b)| b == b'/')
                .map(|(i, _)| i),
        );
        for end in ends {
            let candidate = &path[..end];
            let Some(bucket) = self.groups.get(&self.hash_of(candidate)) else {
                continue;
            };
            for group in bucket {
                if !self.path_matches(&group.key, path) || group.key.len() != end {
                    continue;
                }
                if let Some(i) = self.in_group(group, host, method) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The route of `group` (all of one prefix) for this host and method: one with a host
    /// before one without, one with methods before one without, the config's first.
    fn in_group(&self, group: &Group, host: Option<&str>, method: &Method) -> Option<usize> {
        let allowed = |i: &usize| {
            self.routes[*i]
                .methods
                .as_ref()
                .is_none_or(|ms| allows(ms, method))
        };
        // Every list of this host: its exact name, then each `*.` suffix of it.
        let host_lists = || {
            let exact = host.and_then(|h| group.exact.get(h));
            let suffixes = host.into_iter().flat_map(|h| {
                h.bytes()
                    .enumerate()
                    .filter(|&(i, b)| b == b'.' && i > 0)
                    .filter_map(move |(i, _)| group.subdomains.get(&h[i..]))
            });
            exact.into_iter().chain(suffixes)
        };
        let first_of = |pick: fn(&Lists) -> &Vec<usize>| {
            host_lists()
                .filter_map(|l| pick(l).iter().find(|i| allowed(i)).copied())
                .min()
        };
        first_of(|l| &l.with_methods)
            .or_else(|| first_of(|l| &l.all_methods))
            .or_else(|| {
                group
                    .any_host
                    .with_methods
                    .iter()
                    .find(|i| allowed(i))
                    .copied()
            })
            .or_else(|| group.any_host.all_methods.first().copied())
    }

    /// The hash a prefix is grouped by: of its lower-case form unless matching is
    /// case-sensitive, computed without making that form.
    fn hash_of(&self, prefix: &str) -> u64 {
        if self.case_sensitive {
            fnv1a(prefix.bytes())
        } else {
            fnv1a(prefix.bytes().map(|b| b.to_ascii_lowercase()))
        }
    }

    /// The first matching route by a scan of every route in order of specificity: what
    /// [`find`](Self::find) must always answer, for the property test.
    #[cfg(test)]
    fn find_by_scan(&self, host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        let mut order: Vec<usize> = (0..self.routes.len()).collect();
        order.sort_by_key(|&i| {
            let r = &self.routes[i];
            std::cmp::Reverse((r.prefix.len(), r.host.is_some(), r.methods.is_some()))
        });
        order.into_iter().find(|&i| {
            let r = &self.routes[i];
            self.path_matches(&r.prefix, path)
                && r.host
                    .as_ref()
                    .is_none_or(|p| host.is_some_and(|h| p.matches(h)))
                && r.methods.as_ref().is_none_or(|ms| allows(ms, method))
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

/// Routes that share one prefix.
#[derive(Debug, Default)]
struct Group {
    /// The prefix, folded as the table matches.
    key: String,
    /// Routes for one exact host, by host.
    exact: HashMap<String, Lists>,
    /// Routes for `*.suffix`, by the suffix with its dot (`.example.com`).
    subdomains: HashMap<String, Lists>,
    /// Routes for any host.
    any_host: Lists,
}

/// Route indices, ascending, with methods and without.
#[derive(Debug, Default)]
struct Lists {
    with_methods: Vec<usize>,
    all_methods: Vec<usize>,
}

/// The prefix as the table compares it.
fn fold(prefix: &str, case_sensitive: bool) -> String {
    if case_sensitive {
        prefix.to_owned()
    } else {
        prefix.to_ascii_lowercase()
    }
}

/// The hash of a folded prefix: the same as [`RouteTable::hash_of`] gives the unfolded one.
fn prefix_hash(folded: &str) -> u64 {
    fnv1a(folded.bytes())
}

/// FNV-1a: a prefix's bucket. Only the config's prefixes make buckets, so a path chosen to
/// collide finds one bucket, whose few groups are compared byte for byte.
fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// HEAD is a GET without the body: wherever GET is allowed, HEAD is too (else a HEAD would
/// fall through to a less specific route than the GET it stands for).
fn allows(methods: &[Method], method: &Method) -> bool {
    methods.contains(method) || (method == Method::HEAD && methods.contains(&Method::GET))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, host: Option<&str>, methods: Option<Vec<Method>>) -> Route {
        Route {
            prefix: prefix.trim_end_matches('/').into(),
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            methods,
            upstream: Some(0),
            auth: AuthMode::Public,
            login_redirect: None,
            issue_sessions: false,
            method_override: false,
            strip_session_cookie: false,
            audience: "app".into(),
            cross_origin: None,
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
        let host = |v| parse_host(v).map(|h| h.unwrap());
        assert_eq!(host("Example.COM:8080").as_deref(), Ok("example.com"));
        assert_eq!(host("example.com.").as_deref(), Ok("example.com"));
        assert_eq!(host("[::1]:80").as_deref(), Ok("[::1]"));
        assert_eq!(host("10.0.0.1").as_deref(), Ok("10.0.0.1"));
        assert_eq!(parse_host(""), Ok(None));
        for bad in ["a:1:2", "example.com:80:80", "a:", "a:99999", "a:x"] {
            assert_eq!(parse_host(bad), Err(HostError::Port), "{bad}");
        }
        for bad in [
            "a b", "a/b", "a@b", ".", "a..b", "[::1", "[x]", "[::1]x", "a%2eb", "é.com",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn head_goes_where_get_goes() {
        let t = RouteTable::new(
            vec![
                route("/", None, None),
                route("/export/", None, Some(vec![Method::GET])),
            ],
            false,
        );
        assert_eq!(t.find(None, &Method::HEAD, "/export/x"), Some(1));
        assert_eq!(t.find(None, &Method::POST, "/export/x"), Some(0));
    }

    #[test]
    fn the_method_decides_the_route_where_routes_differ_by_method() {
        let t = table(false);
        // `/api/` POST is route 4; other methods fall to the root route.
        assert!(!t.same_route_for_every_method(None, "/api/x", 4));
        assert!(!t.same_route_for_every_method(None, "/api/x", 0));
        assert!(t.same_route_for_every_method(None, "/account/x", 1));
        assert!(t.same_route_for_every_method(Some("a.example.com"), "/api/x", 3));
        let only_post = RouteTable::new(
            vec![route("/forms/", None, Some(vec![Method::POST]))],
            false,
        );
        assert!(
            !only_post.same_route_for_every_method(None, "/forms/a", 0),
            "a method no route serves is a method that moves the request (to a 404)"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const SEGMENTS: &[&str] = &["a", "A", "b", "api", "Api", "x.y"];
        const HOSTS: &[&str] = &[
            "example.com",
            "a.example.com",
            "b.a.example.com",
            "other.org",
        ];
        const PATTERNS: &[&str] = &[
            "example.com",
            "*.example.com",
            "a.example.com",
            "*.a.example.com",
            "other.org",
        ];
        const METHODS: &[&str] = &["GET", "POST", "DELETE", "HEAD", "PROPFIND"];

        fn path(max: usize) -> impl Strategy<Value = String> {
            (
                prop::collection::vec(prop::sample::select(SEGMENTS), 0..max),
                any::<bool>(),
            )
                .prop_map(|(segs, slash)| {
                    let mut p = format!("/{}", segs.join("/"));
                    if slash && p.len() > 1 {
                        p.push('/');
                    }
                    p
                })
        }

        fn table_routes() -> impl Strategy<Value = Vec<Route>> {
            let one = (
                path(4),
                prop::option::of(prop::sample::select(PATTERNS)),
                prop::option::of(prop::collection::vec(prop::sample::select(METHODS), 1..3)),
            )
                .prop_map(|(p, host, methods)| {
                    let methods = methods.map(|ms| {
                        ms.iter()
                            .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                            .collect()
                    });
                    route(&p, host, methods)
                });
            prop::collection::vec(one, 1..40)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn the_table_answers_as_a_scan_of_every_route(
                routes in table_routes(),
                case_sensitive in any::<bool>(),
                requests in prop::collection::vec(
                    (prop::option::of(prop::sample::select(HOSTS)), prop::sample::select(METHODS), path(6)),
                    1..30,
                ),
            ) {
                let t = RouteTable::new(routes, case_sensitive);
                for (host, method, path) in requests {
                    let method = Method::from_bytes(method.as_bytes()).unwrap();
                    prop_assert_eq!(
                        t.find(host, &method, &path),
                        t.find_by_scan(host, &method, &path),
                        "{:?} {} {}", host, method, path
                    );
                }
            }
        }
    }

    #[test]
    fn case_variants_of_standard_methods_are_recognised() {
        for m in ["post", "Delete", "gEt", "head"] {
            assert!(
                is_case_variant(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["POST", "PROPFIND", "purge"] {
            assert!(
                !is_case_variant(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
    }
}
