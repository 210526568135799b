//! Cross-origin request forgery, stopped at the edge, without tokens.
//!
//! The session cookie is an ambient credential: the browser attaches it to any request to the
//! gate, whichever page made it. `SameSite=Lax` keeps it off cross-site subrequests, but not
//! off requests from the same site (a sibling subdomain, another port of the same host) nor
//! off top-level navigations. Browsers say where a request comes from: `Sec-Fetch-Site`
//! (every current browser) and `Origin` (on every non-GET request). As Go's
//! `http.CrossOriginProtection`, the gate reads them and refuses a state-changing request
//! that another origin made with the cookie:
//!
//! - GET, HEAD and OPTIONS pass (they must not change state);
//! - `Sec-Fetch-Site: same-origin` or `none` (the user typed the address) passes,
//!   `same-site`, `cross-site` and anything else is refused;
//! - without `Sec-Fetch-Site`, an `Origin` other than the request's own origin (scheme, host
//!   and port; `null` included) is refused, a matching one passes;
//! - with neither header (a non-browser client, an old browser) the request passes;
//! - an `Origin` in `server.trusted_origins` always passes;
//! - a WebSocket upgrade with a foreign `Origin` is refused whatever `Sec-Fetch-Site` says
//!   (cross-site WebSocket hijacking: the handshake is a GET).
//!
//! Only requests that carry the session cookie are checked: a session token in a header is
//! not ambient, a page cannot make the browser send it. [`check`] is the rule, a pure
//! function; [`CrossOrigin::guard`] applies the policy (`refuse`, `report`, `allow`) to it.

use std::fmt;

use http::{header, HeaderMap, Method};
use pingora::http::RequestHeader;
use prometheus::IntCounter;

/// `server.cross_origin` and a route's `cross_origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refuse foreign requests with 403 `cross_origin`.
    #[default]
    Refuse,
    /// Let them through, log and count them: to see what `refuse` would stop.
    Report,
    /// No check.
    Allow,
}

/// An origin: scheme, host and port (the scheme's default port when none is written), as
/// the `url` crate reads it: host names in lower case, IPv6 addresses canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(url::Origin);

impl Origin {
    /// An origin as a browser serializes it: `scheme://host[:port]`, http or https, nothing
    /// after the authority. `null` (an opaque origin) is not one.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad = || format!("`{text}` is not an origin like https://app.example.com[:port]");
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
            || rest.is_empty()
            || rest.contains(['/', '?', '#', '@', '\\'])
        {
            return Err(bad());
        }
        let url = url::Url::parse(text).map_err(|_| bad())?;
        match url.origin() {
            o @ url::Origin::Tuple(..) => Ok(Origin(o)),
            url::Origin::Opaque(_) => Err(bad()),
        }
    }

    /// The origin a request was sent to: its scheme, and the authority it was routed on.
    fn of_request(https: bool, authority: &str) -> Option<Origin> {
        let scheme = if https { "https" } else { "http" };
        Origin::parse(&format!("{scheme}://{authority}")).ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.ascii_serialization())
    }
}

/// `server.cross_origin` and `server.trusted_origins`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossOrigin {
    pub policy: Policy,
    pub trusted: Vec<Origin>,
}

/// What [`check`] needs of a request, whatever front end received it.
pub struct Request<'a> {
    pub method: &'a Method,
    /// `Sec-Fetch-Site`, `Origin` and `Upgrade` are read.
    pub headers: &'a HeaderMap,
    /// The authority the gate routes on (`host[:port]`): an absolute-form target's, else
    /// `Host`. `None` when the request named none.
    pub authority: Option<&'a str>,
    /// The client used HTTPS (to the gate, or to a trusted proxy in front of it).
    pub https: bool,
    /// The request carries the session cookie.
    pub ambient: bool,
}

/// Whether the method and headers leave anything to check: not for GET, HEAD and OPTIONS,
/// unless they are a WebSocket handshake.
fn may_change_state(method: &Method, headers: &HeaderMap) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || is_websocket(headers)
}

impl<'a> Request<'a> {
    /// Reads a proxied request: `authority` is an absolute-form target's (else `Host` is
    /// read), `cookie_name` the session cookie's name. The cookie is looked for only where
    /// [`check`] needs it (not for a safe method that is not a WebSocket handshake), so that
    /// page loads pay for nothing.
    pub fn read(
        req: &'a RequestHeader,
        authority: Option<&'a str>,
        https: bool,
        cookie_name: &str,
    ) -> Self {
        Self::read_as(req, &req.method, authority, https, cookie_name)
    }

    /// [`read`](Self::read), judging the request as `method`: the one a method override
    /// (on a route with `method_override`) makes of it.
    pub fn read_as(
        req: &'a RequestHeader,
        method: &'a Method,
        authority: Option<&'a str>,
        https: bool,
        cookie_name: &str,
    ) -> Self {
        let authority =
            authority.or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        let ambient = may_change_state(method, &req.headers)
            && req
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .any(|h| crate::cookie::values(h, cookie_name).next().is_some());
        Request {
            method,
            headers: &req.headers,
            authority,
            https,
            ambient,
        }
    }
}

/// What [`check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Foreign(Foreign),
}

/// Why a request is foreign: for the log, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// `Sec-Fetch-Site: cross-site`.
    CrossSite,
    /// `Sec-Fetch-Site: same-site`: another origin of the same site (a sibling subdomain,
    /// another port), which `SameSite` cookies do not keep out.
    SameSite,
    /// A `Sec-Fetch-Site` value no browser sends, or the header twice.
    BadFetchSite,
    /// No `Sec-Fetch-Site`, and an `Origin` that is not the request's own.
    OriginMismatch,
    /// `Origin: null`: a sandboxed frame, a `data:` page, a redirect across origins.
    NullOrigin,
    /// An `Origin` that is not one (or twice, or the request named no host to compare with).
    BadOrigin,
    /// A WebSocket handshake from another origin.
    WebSocket,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CrossSite => "Sec-Fetch-Site: cross-site",
            Self::SameSite => "Sec-Fetch-Site: same-site (another origin of this site)",
            Self::BadFetchSite => "an unknown or repeated Sec-Fetch-Site",
            Self::OriginMismatch => "an Origin other than the request's own",
            Self::NullOrigin => "Origin: null",
            Self::BadOrigin => "a malformed or repeated Origin",
            Self::WebSocket => "a WebSocket handshake from another origin",
        })
    }
}

/// How the request's `Origin` compares with its own origin.
enum OriginIs {
    Absent,
    Trusted,
    Same,
    Foreign(Foreign),
}

fn origin_of(req: &Request, trusted: &[Origin]) -> OriginIs {
    let mut values = req.headers.get_all(header::ORIGIN).iter();
    let Some(value) = values.next() else {
        return OriginIs::Absent;
    };
    if values.next().is_some() {
        return OriginIs::Foreign(Foreign::BadOrigin);
    }
    let Ok(text) = value.to_str() else {
        return OriginIs::Foreign(Foreign::BadOrigin);
    };
    if text == "null" {
        return OriginIs::Foreign(Foreign::NullOrigin);
    }
    let Ok(origin) = Origin::parse(text) else {
        return OriginIs::Foreign(Foreign::BadOrigin);
    };
    if trusted.contains(&origin) {
        return OriginIs::Trusted;
    }
    match req.authority.and_then(|a| Origin::of_request(req.https, a)) {
        Some(own) if own == origin => OriginIs::Same,
        Some(_) => OriginIs::Foreign(Foreign::OriginMismatch),
        None => OriginIs::Foreign(Foreign::BadOrigin),
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// The rule: whether a request that another origin may have made with the session cookie is
/// to be believed. Requests without the cookie always pass.
pub fn check(req: &Request, trusted: &[Origin]) -> Verdict {
    if !req.ambient || !may_change_state(req.method, req.headers) {
        return Verdict::Pass;
    }
    // The handshake is a GET, and browsers let any page open a WebSocket to any host with
    // the cookie: only the Origin tells.
    if is_websocket(req.headers) {
        return match origin_of(req, trusted) {
            OriginIs::Foreign(_) => Verdict::Foreign(Foreign::WebSocket),
            OriginIs::Absent | OriginIs::Trusted | OriginIs::Same => Verdict::Pass,
        };
    }
    // Sec-Fetch-Site first: what it lets through, a trusted Origin would too, and it needs
    // no Origin parsed.
    let mut sites = req.headers.get_all("sec-fetch-site").iter();
    let site = match (sites.next(), sites.next()) {
        (Some(_), Some(_)) => Some(Foreign::BadFetchSite),
        (Some(site), None) => match site.as_bytes() {
            b"same-origin" | b"none" => return Verdict::Pass,
            b"same-site" => Some(Foreign::SameSite),
            b"cross-site" => Some(Foreign::CrossSite),
            _ => Some(Foreign::BadFetchSite),
        },
        (None, _) => None,
    };
    match (origin_of(req, trusted), site) {
        (OriginIs::Trusted, _) => Verdict::Pass,
        (_, Some(why)) => Verdict::Foreign(why),
        (OriginIs::Foreign(why), None) => Verdict::Foreign(why),
        (OriginIs::Absent | OriginIs::Same, None) => Verdict::Pass,
    }
}

impl CrossOrigin {
    /// The gate's one call for a routed request, with the route's own policy if it has one:
    /// `Err` when the request is to be refused. A request `report` lets through is logged
    /// (with the request id and why, never the cookie) and counted in `reported`.
    pub fn guard(
        &self,
        route: Option<Policy>,
        req: &Request,
        request_id: &str,
        reported: &IntCounter,
    ) -> Result<(), Foreign> {
        let policy = route.unwrap_or(self.policy);
        if policy == Policy::Allow {
            return Ok(());
        }
        match check(req, &self.trusted) {
            Verdict::Pass => Ok(()),
            Verdict::Foreign(why) if policy == Policy::Refuse => Err(why),
            Verdict::Foreign(why) => {
                reported.inc();
                tracing::warn!(
                    request_id,
                    method = %req.method,
                    reason = %why,
                    "cross-origin request let through (cross_origin = \"report\")"
                );
                Ok(())
            }
        }
    }

    /// The gate's own logout: always same-origin (or a trusted origin), whatever the policy
    /// says, so that no other page can log a user out.
    pub fn logout(&self, req: &Request) -> Result<(), Foreign> {
        let req = Request {
            ambient: true,
            ..*req
        };
        match check(&req, &self.trusted) {
            Verdict::Pass => Ok(()),
            Verdict::Foreign(why) => Err(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(method: &str, headers: &[(&str, &str)], authority: &str, https: bool) -> Verdict {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let trusted = [Origin::parse("https://partner.example").unwrap()];
        check(
            &Request {
                method: &method,
                headers: &map,
                authority: Some(authority),
                https,
                ambient: true,
            },
            &trusted,
        )
    }

    const PASS: Verdict = Verdict::Pass;
    fn refused(why: Foreign) -> Verdict {
        Verdict::Foreign(why)
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        let o = |s| Origin::parse(s).unwrap();
        assert_eq!(
            o("https://App.Example.com"),
            o("https://app.example.com:443")
        );
        assert_eq!(o("http://127.0.0.1:80"), o("http://127.0.0.1"));
        assert_ne!(o("http://a.example"), o("https://a.example"));
        assert_ne!(o("http://a.example:8080"), o("http://a.example:8081"));
        assert_eq!(o("http://[::1]:8080"), o("http://[0:0::1]:8080"));
        assert_eq!(
            o("https://app.example.com:8443").to_string(),
            "https://app.example.com:8443"
        );
        for bad in [
            "null",
            "app.example.com",
            "ftp://a.example",
            "https://",
            "https://a.example/",
            "https://a.example/path",
            "https://user@a.example",
            "https://a.example?x",
            "https://a.example:99999",
            "https://[::1",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn safe_methods_pass_whatever_they_say() {
        for m in ["GET", "HEAD", "OPTIONS"] {
            let h = [
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ];
            assert_eq!(verdict(m, &h, "app.example", true), PASS, "{m}");
        }
    }

    #[test]
    fn sec_fetch_site_decides_when_present() {
        let v = |site| verdict("POST", &[("sec-fetch-site", site)], "app.example", true);
        assert_eq!(v("same-origin"), PASS);
        assert_eq!(v("none"), PASS);
        assert_eq!(v("same-site"), refused(Foreign::SameSite));
        assert_eq!(v("cross-site"), refused(Foreign::CrossSite));
        assert_eq!(v("Same-Origin"), refused(Foreign::BadFetchSite));
        assert_eq!(v("whatever"), refused(Foreign::BadFetchSite));
        // Sec-Fetch-Site wins over an Origin that looks like the request's own.
        let h = [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example"),
        ];
        assert_eq!(
            verdict("POST", &h, "app.example", true),
            refused(Foreign::CrossSite)
        );
        let h = [
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(
            verdict("POST", &h, "app.example", true),
            refused(Foreign::BadFetchSite)
        );
    }

    #[test]
    fn without_sec_fetch_site_the_origin_must_be_the_requests_own() {
        let v = |origin, authority, https| verdict("POST", &[("origin", origin)], authority, https);
        assert_eq!(v("https://app.example", "app.example", true), PASS);
        assert_eq!(v("https://APP.example", "app.EXAMPLE:443", true), PASS);
        assert_eq!(v("http://127.0.0.1:8080", "127.0.0.1:8080", false), PASS);
        assert_eq!(v("http://[::1]:8080", "[::1]:8080", false), PASS);
        let mismatch = refused(Foreign::OriginMismatch);
        assert_eq!(v("https://evil.example", "app.example", true), mismatch);
        assert_eq!(
            v("http://app.example", "app.example", true),
            mismatch,
            "scheme"
        );
        assert_eq!(
            v("https://app.example:8443", "app.example", true),
            mismatch,
            "port"
        );
        assert_eq!(
            v("http://127.0.0.1:8081", "127.0.0.1:8080", false),
            mismatch
        );
        assert_eq!(v("http://[::2]:8080", "[::1]:8080", false), mismatch);
        assert_eq!(v("null", "app.example", true), refused(Foreign::NullOrigin));
        assert_eq!(v("evil", "app.example", true), refused(Foreign::BadOrigin));
        assert_eq!(
            v("https://app.example/", "app.example", true),
            refused(Foreign::BadOrigin)
        );
    }

    #[test]
    fn neither_header_passes_and_a_trusted_origin_always_passes() {
        assert_eq!(verdict("POST", &[], "app.example", true), PASS);
        assert_eq!(verdict("DELETE", &[], "app.example", true), PASS);
        let h = [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://partner.example"),
        ];
        assert_eq!(verdict("POST", &h, "app.example", true), PASS);
        let h = [("origin", "https://partner.example:443")];
        assert_eq!(verdict("PUT", &h, "app.example", true), PASS);
        // The partner's other ports and schemes are other origins.
        let h = [("origin", "http://partner.example")];
        assert_eq!(
            verdict("PUT", &h, "app.example", true),
            refused(Foreign::OriginMismatch)
        );
    }

    #[test]
    fn websocket_handshakes_need_the_requests_own_origin() {
        let ws = |origin: Option<&str>, site| {
            let mut h = vec![
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-fetch-site", site),
            ];
            h.extend(origin.map(|o| ("origin", o)));
            verdict("GET", &h, "app.example", true)
        };
        assert_eq!(ws(Some("https://app.example"), "same-origin"), PASS);
        assert_eq!(ws(None, "same-origin"), PASS, "a non-browser client");
        assert_eq!(ws(Some("https://partner.example"), "cross-site"), PASS);
        // Whatever Sec-Fetch-Site says.
        assert_eq!(
            ws(Some("https://evil.example"), "same-origin"),
            refused(Foreign::WebSocket)
        );
        assert_eq!(
            ws(Some("https://evil.example"), "none"),
            refused(Foreign::WebSocket)
        );
        assert_eq!(ws(Some("null"), "same-origin"), refused(Foreign::WebSocket));
        let h = [("upgrade", "WebSocket"), ("origin", "http://app.example")];
        assert_eq!(
            verdict("GET", &h, "app.example", true),
            refused(Foreign::WebSocket)
        );
    }

    #[test]
    fn requests_without_the_cookie_are_not_checked() {
        let map = HeaderMap::from_iter([(
            http::HeaderName::from_static("sec-fetch-site"),
            http::HeaderValue::from_static("cross-site"),
        )]);
        let req = Request {
            method: &Method::POST,
            headers: &map,
            authority: Some("app.example"),
            https: true,
            ambient: false,
        };
        assert_eq!(check(&req, &[]), PASS);
        // The gate's logout is checked with or without it.
        let settings = CrossOrigin::default();
        assert_eq!(settings.logout(&req), Err(Foreign::CrossSite));
    }

    #[test]
    fn the_policy_decides_what_a_foreign_request_gets() {
        let map = HeaderMap::from_iter([(
            http::HeaderName::from_static("sec-fetch-site"),
            http::HeaderValue::from_static("same-site"),
        )]);
        let req = Request {
            method: &Method::POST,
            headers: &map,
            authority: Some("app.example"),
            https: true,
            ambient: true,
        };
        let reported = IntCounter::new("reported", "reported").unwrap();
        let refuse = CrossOrigin::default();
        assert_eq!(
            refuse.guard(None, &req, "r", &reported),
            Err(Foreign::SameSite)
        );
        assert_eq!(
            refuse.guard(Some(Policy::Report), &req, "r", &reported),
            Ok(())
        );
        assert_eq!(reported.get(), 1);
        assert_eq!(
            refuse.guard(Some(Policy::Allow), &req, "r", &reported),
            Ok(())
        );
        let report = CrossOrigin {
            policy: Policy::Report,
            trusted: vec![],
        };
        assert_eq!(report.guard(None, &req, "r", &reported), Ok(()));
        assert_eq!(
            report.guard(Some(Policy::Refuse), &req, "r", &reported),
            Err(Foreign::SameSite)
        );
        assert_eq!(reported.get(), 2);
        // The logout refuses whatever the policy.
        let allow = CrossOrigin {
            policy: Policy::Allow,
            trusted: vec![],
        };
        assert_eq!(allow.logout(&req), Err(Foreign::SameSite));
    }
}
