//! Forward-auth: the gate's decision for an edge that proxies the request itself (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`, HAProxy, Envoy `ext_authz`),
//! on a listener of its own.
//!
//! The edge asks about a request it holds by sending the gate its headers and a report of
//! the original method and target. Only an edge in `trusted` is believed: any other caller is
//! answered 403 whatever it reports, never judged on its own request line instead. The
//! reported request is built back into a request head ([`Original`]) and goes through the
//! very decision the proxy takes ([`crate::decide`]): the same canonical path, the same
//! routes, the same 400s for ambiguous input, the same sessions.
//!
//! | endpoint | edge | original request from |
//! |---|---|---|
//! | `/auth/request` | nginx `auth_request` | `X-Original-Method`, `X-Original-URL` (absolute) |
//! | `/auth/forward` | Traefik, Caddy, HAProxy | `X-Forwarded-Method`, `-Proto`, `-Host` (else `Host`), `-Uri` |
//! | `/auth/envoy/...` | Envoy `ext_authz` (`http_service`) | the path after the prefix, `Host`, the method |
//!
//! The answers:
//! - **200** when the route lets the request pass (public and optional routes too), with
//!   every configured identity header present (empty without an identity, so that an edge
//!   copying them overwrites a client's copy), the assertion header likewise, and a rolling
//!   `Set-Cookie` for the edge to relay.
//! - **No session** on a required route: a page load (GET or HEAD a browser shows) goes to
//!   the route's `login_redirect` with the way back, as a 302 with `Location`; nginx, which
//!   takes only 2xx, 401 and 403 from its subrequest, gets 401 with that `Location` (its
//!   `error_page` turns it into the redirect). Anything else is a 401 JSON answer.
//! - **Store down:** 503 with `Retry-After`, never 401, and no cookie is cleared.
//! - Every other refusal as the proxy renders it.
//!
//! Forward-auth never sees bodies: where a `_method` field in the body could move the
//! request to another route (the proxy scans such bodies), the request is refused with 403.
//! The gate's logout path is not special here (the edge forwards it like any path); sessions
//! are issued and ended by the proxy, the app (on the shared store) or the admin API.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{header, HeaderName, HeaderValue, Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;

use crate::access_log::{AccessLog, Auth, Entry};
use crate::assertion::{request_url, Binding};
use crate::decide::{Arrival, Decided, Decider, Front, Verdict};
use crate::error::RequestError;
use crate::forwarded::{ClientView, TrustedProxies};
use crate::metrics::Metrics;
use crate::request_id;
use crate::respond::Reply;
use crate::runtime::Runtime;
use crate::sessions::Via;

/// The `[forward_auth]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthSettings {
    pub listen: Vec<String>,
    /// The edges whose reports of the original request are believed.
    pub trusted: TrustedProxies,
}

/// Where Envoy's `ext_authz` `path_prefix` points: the original path follows it.
const ENVOY_PREFIX: &str = "/auth/envoy";

/// Which edge asks, by the endpoint it asked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Nginx,
    Forwarded,
    Envoy,
}

impl Edge {
    fn as_str(self) -> &'static str {
        match self {
            Edge::Nginx => "nginx",
            Edge::Forwarded => "forwarded",
            Edge::Envoy => "envoy",
        }
    }

    fn of(path: &[u8]) -> Option<Edge> {
        match path {
            b"/auth/request" => Some(Edge::Nginx),
            b"/auth/forward" => Some(Edge::Forwarded),
            p if p.starts_with(ENVOY_PREFIX.as_bytes())
                && (p.len() == ENVOY_PREFIX.len() || p[ENVOY_PREFIX.len()] == b'/') =>
            {
                Some(Edge::Envoy)
            }
            _ => None,
        }
    }
}

/// The request an edge reports, rebuilt as a request head.
pub struct Original {
    pub head: RequestHeader,
    /// The client reached the edge over HTTPS.
    pub https: bool,
}

impl Original {
    /// The original request `edge` reports in `req`; a 400 when the report is missing,
    /// repeated or malformed.
    fn read(edge: Edge, req: &RequestHeader, view: &ClientView) -> Result<Original, RequestError> {
        let (method, target, host, https) = match edge {
            Edge::Nginx => {
                let method = one(req, "x-original-method")?;
                let url = one(req, "x-original-url")?;
                let (https, authority, target) = split_url(url)?;
                (method, target, Some(authority), https)
            }
            Edge::Forwarded => {
                let method = one(req, "x-forwarded-method")?;
                let target = one(req, "x-forwarded-uri")?;
                let host = match req.headers.get_all("x-forwarded-host").iter().count() {
                    0 => None,
                    _ => Some(one(req, "x-forwarded-host")?),
                };
                (method, target, host, view.https)
            }
            Edge::Envoy => {
                let path = req.raw_path();
                let rest = &path[ENVOY_PREFIX.len()..];
                let target = if rest.is_empty() { &b"/"[..] } else { rest };
                (req.method.as_str().as_bytes(), target, None, view.https)
            }
        };
        let method = Method::from_bytes(method)
            .map_err(|_| RequestError::Client("the original method is not a method".into()))?;
        if target.first() != Some(&b'/') && target != b"*" {
            return Err(RequestError::Client(
                "the original target is not a path".into(),
            ));
        }
        let mut head = RequestHeader::build(method, target, Some(req.headers.len()))
            .map_err(|_| RequestError::Client("the original target cannot be read".into()))?;
        for (name, value) in req.headers.iter() {
            if !reported(name) {
                head.append_header(name.clone(), value.clone())
                    .map_err(|_| RequestError::Client("a header cannot be read".into()))?;
            }
        }
        if let Some(host) = host {
            let host = HeaderValue::from_bytes(host)
                .map_err(|_| RequestError::Client("the original host cannot be read".into()))?;
            head.insert_header(header::HOST, host)
                .map_err(|_| RequestError::Client("the original host cannot be read".into()))?;
        }
        Ok(Original { head, https })
    }
}

/// Headers of the edge's request that describe the edge's request, not the original one.
fn reported(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "upgrade"
            | "x-original-method"
            | "x-original-url"
            | "x-forwarded-method"
            | "x-forwarded-uri"
            | "x-forwarded-host"
    )
}

/// The one value of `name`: a report that is missing or given twice is refused.
fn one<'r>(req: &'r RequestHeader, name: &str) -> Result<&'r [u8], RequestError> {
    let mut values = req.headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if !v.is_empty() => Ok(v.as_bytes()),
        (None, _) => Err(RequestError::Client(format!(
            "the edge did not report {name}"
        ))),
        _ => Err(RequestError::Client(format!(
            "{name} is empty or given more than once"
        ))),
    }
}

/// `http[s]://authority/target` into (https, authority, target).
fn split_url(url: &[u8]) -> Result<(bool, &[u8], &[u8]), RequestError> {
    let bad = || RequestError::Client("X-Original-URL is not an absolute http(s) URL".into());
    let (https, rest) = if url.len() > 7 && url[..7].eq_ignore_ascii_case(b"http://") {
        (false, &url[7..])
    } else if url.len() > 8 && url[..8].eq_ignore_ascii_case(b"https://") {
        (true, &url[8..])
    } else {
        return Err(bad());
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad());
    }
    match target.first() {
        None => Ok((https, authority, b"/")),
        Some(b'/') => Ok((https, authority, target)),
        // `http://host?x` has the path `/`; the gate refuses what it cannot read as one path.
        Some(_) => Err(bad()),
    }
}

/// The forward-auth listener's application.
pub struct ForwardAuth {
    current: Arc<ArcSwap<Runtime>>,
    trusted: TrustedProxies,
    decider: Arc<Decider>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
}

impl ForwardAuth {
    pub fn new(
        current: Arc<ArcSwap<Runtime>>,
        settings: &ForwardAuthSettings,
        decider: Arc<Decider>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        Self {
            current,
            trusted: settings.trusted.clone(),
            decider,
            metrics,
            access_log,
        }
    }

    /// The answer for one edge request, and what the access log says of it.
    async fn answer(&self, req: &RequestHeader, peer: Option<IpAddr>, log: &mut Logged) -> Reply {
        let rt = self.current.load_full();
        if !peer.is_some_and(|p| self.trusted.contains(p)) {
            let who = peer.map_or_else(|| "an unknown peer".into(), |p| p.to_string());
            return self.refuse(&rt, log, RequestError::UntrustedCaller(who));
        }
        if let Some(id) = request_id::from_trusted(req) {
            log.request_id = id;
        }
        let Some(edge) = Edge::of(req.raw_path().split(|&b| b == b'?').next().unwrap_or(b""))
        else {
            return self.refuse(&rt, log, RequestError::NoRoute);
        };
        log.edge = Some(edge);
        let view = ClientView::read(req, peer, false, &self.trusted);
        log.client = view.ip;
        let original = match Original::read(edge, req, &view) {
            Ok(o) => o,
            Err(e) => return self.refuse(&rt, log, e),
        };
        log.method = original.head.method.as_str().to_owned();
        let verdict = self
            .decider
            .decide(
                &rt,
                &original.head,
                Front::ForwardAuth,
                Arrival {
                    https: original.https,
                    request_id: &log.request_id,
                },
                &mut log.decided,
            )
            .await;
        match verdict {
            Verdict::Pass { active, .. } => {
                let route = rt
                    .routes
                    .get(log.decided.route.expect("a passing request has a route"));
                let mut reply = Reply::new(200).header("cache-control", "no-store");
                let (values, refused) = rt
                    .identity
                    .values(active.as_ref().map(|a| a.record.as_ref()));
                if refused > 0 {
                    self.metrics.identity_refused.inc_by(refused as u64);
                }
                for (name, value) in values {
                    reply = reply
                        .named_header(name.clone(), value.unwrap_or(HeaderValue::from_static("")));
                }
                if let Some(assertions) = &rt.assertions {
                    let host = original
                        .head
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let token = active.as_ref().and_then(|a| {
                        let url =
                            request_url(original.https, &host, log.decided.path().unwrap_or("/"));
                        let binding = Binding {
                            method: original.head.method.as_str(),
                            url: &url,
                        };
                        self.decider.assertion(&rt, route, a, &binding)
                    });
                    let value = token.map_or(HeaderValue::from_static(""), |(_, v)| v);
                    reply = reply.named_header(assertions.settings.header.clone(), value);
                }
                if let Some(a) = &active {
                    if rt.sessions.settings.rolling && a.roll && a.via == Via::Cookie {
                        let secure = rt.sessions.settings.cookie.secure.applies(original.https);
                        reply = reply.header(
                            "set-cookie",
                            rt.sessions.set_cookie(&a.sid, &a.record, secure),
                        );
                    }
                }
                reply
            }
            Verdict::Login(Some(location)) => {
                let status = if edge == Edge::Nginx { 401 } else { 302 };
                Reply::new(status)
                    .header("location", location)
                    .header("cache-control", "no-store")
            }
            Verdict::Login(None) => self.refuse(&rt, log, RequestError::Unauthenticated),
            Verdict::Refuse(e) => self.refuse(&rt, log, e),
            // Neither is asked of forward-auth: `OPTIONS *` names no route, and the logout
            // path is routed like any other.
            Verdict::Server | Verdict::Logout => self.refuse(&rt, log, RequestError::NoRoute),
        }
    }

    fn refuse(&self, rt: &Runtime, log: &Logged, e: RequestError) -> Reply {
        e.log(&log.request_id);
        self.decider.refused(&e);
        Reply::error(&e, rt)
    }
}

/// What one edge request leaves for the access log and the metrics.
struct Logged {
    request_id: String,
    client: Option<IpAddr>,
    /// The original method, once it was read (else the edge's own).
    method: String,
    /// The endpoint asked, when it is one.
    edge: Option<Edge>,
    decided: Decided,
}

#[async_trait]
impl ServeHttp for ForwardAuth {
    async fn response(&self, http: &mut ServerSession) -> Response<Vec<u8>> {
        let start = Instant::now();
        let req = http.req_header();
        let peer = http.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let mut log = Logged {
            request_id: request_id::generate(),
            client: peer,
            method: req.method.as_str().to_owned(),
            edge: None,
            decided: Decided::default(),
        };
        let reply = self.answer(req, peer, &mut log).await;
        let reply = reply.header(request_id::HEADER, log.request_id.clone());
        let head = req.method == Method::HEAD;
        let mut response = reply.into_response();
        // Envoy asks with the original method: a HEAD answer says how long the body would
        // be, and sends none.
        if head {
            response.body_mut().clear();
        }
        self.logged(&log, &response, start);
        response
    }
}

impl ForwardAuth {
    fn logged(&self, log: &Logged, response: &Response<Vec<u8>>, start: Instant) {
        let took = start.elapsed();
        let status = response.status().as_u16();
        let rt = self.current.load();
        let route = log.decided.route.map(|i| rt.routes.get(i));
        let route_label = route.map(|r| {
            if r.prefix.is_empty() {
                "/"
            } else {
                r.prefix.as_str()
            }
        });
        let auth = log.decided.auth;
        self.metrics.request(
            route_label.unwrap_or("none"),
            status,
            auth.map_or("none", Auth::as_str),
            took,
        );
        let edge = log.edge.map_or("none", Edge::as_str);
        self.metrics
            .forward_auth
            .with_label_values(&[edge, status.to_string().as_str()])
            .inc();
        if !self.access_log.enabled() {
            return;
        }
        self.access_log.write(&Entry {
            time: SystemTime::now(),
            request_id: &log.request_id,
            client: log.client,
            method: &log.method,
            path: log.decided.path(),
            route: route_label,
            status,
            upstream: None,
            duration_ms: took,
            upstream_ms: None,
            auth,
            session: log.decided.session_prefix.as_deref(),
            bytes: response.body().len(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_matched_whole() {
        assert_eq!(Edge::of(b"/auth/request"), Some(Edge::Nginx));
        assert_eq!(Edge::of(b"/auth/forward"), Some(Edge::Forwarded));
        assert_eq!(Edge::of(b"/auth/envoy"), Some(Edge::Envoy));
        assert_eq!(Edge::of(b"/auth/envoy/account"), Some(Edge::Envoy));
        assert_eq!(Edge::of(b"/auth/envoyx/account"), None);
        assert_eq!(Edge::of(b"/auth/request/"), None);
        assert_eq!(Edge::of(b"/"), None);
    }

    #[test]
    fn absolute_urls_split_into_scheme_authority_and_target() {
        let ok = |u: &str| {
            split_url(u.as_bytes()).map(|(s, a, t)| {
                (
                    s,
                    String::from_utf8(a.to_vec()).unwrap(),
                    String::from_utf8(t.to_vec()).unwrap(),
                )
            })
        };
        assert_eq!(
            ok("https://app.example/account?x=1").unwrap(),
            (true, "app.example".into(), "/account?x=1".into())
        );
        assert_eq!(
            ok("HTTP://app.example:8080").unwrap(),
            (false, "app.example:8080".into(), "/".into())
        );
        assert!(ok("/account").is_err());
        assert!(ok("ftp://app.example/").is_err());
        assert!(ok("http:///account").is_err());
        assert!(ok("http://app.example?x").is_err());
    }

    #[test]
    fn a_report_given_twice_is_refused() {
        let mut req = RequestHeader::build("GET", b"/auth/forward", None).unwrap();
        req.append_header("x-forwarded-uri", "/public").unwrap();
        req.append_header("x-forwarded-uri", "/admin").unwrap();
        assert!(one(&req, "x-forwarded-uri").is_err());
        assert!(one(&req, "x-forwarded-method").is_err());
    }
}
