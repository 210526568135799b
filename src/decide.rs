//! The request decision, the same for every front: the proxy ([`crate::proxy`]) asks it of
//! the request a client sent, forward-auth ([`crate::forward_auth`]) of the request an edge
//! reports. In order:
//!
//! 1. the request target, method, Host and credentials, checked and canonical
//!    ([`crate::request::Target`]): 400 on anything an upstream could read differently;
//! 2. the gate's logout path (the proxy only: it is answered by the gate itself);
//! 3. the route (404 when none), and every carrier of a method override checked against it
//!    ([`crate::method_override`]);
//! 4. what another origin sent with the session cookie, refused (403,
//!    [`crate::cross_origin`]);
//! 5. on routes that are not public, the credential verified and the session loaded (and
//!    touched): a store that fails is a 503, never a logout;
//! 6. no session where one is needed: where a page load logs in, or 401.
//!
//! What it decides is a [`Verdict`]; what it learned on the way (the canonical target, the
//! route, how the session was settled) is in [`Decided`] whatever the verdict, for the
//! front's answer and its access log. The fronts keep only transport: reading the request
//! off their listener, and writing the answer.

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;

use crate::access_log::Auth;
use crate::assertion::{Binding, Refused};
use crate::cross_origin;
use crate::error::RequestError;
use crate::method_override::{BodyScan, Routed};
use crate::metrics::Metrics;
use crate::record::id_prefix;
use crate::request::Target;
use crate::routes::{AuthMode, Route};
use crate::runtime::Runtime;
use crate::sessions::Active;
use crate::store::{OutageLog, StoreError};

/// Who asks for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The proxy, for a request it will forward itself.
    Proxy,
    /// Forward-auth, for an edge that forwards the request: the gate never sees its body.
    ForwardAuth,
}

/// How the request reached the front, as the front saw it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The client used HTTPS (to the gate, to a trusted proxy, or to the edge).
    pub https: bool,
    /// The request's id, for what the decision logs.
    pub request_id: &'a str,
}

/// What the decision is: what the front does with the request.
pub enum Verdict {
    /// `OPTIONS *`, a question about the server itself.
    Server,
    /// The gate's logout path, asked as it may be (a POST from the same site): the front ends
    /// the session ([`Decider::lookup`]) and answers.
    Logout,
    /// The request may go on, with its session when it has one.
    Pass {
        active: Option<Active>,
        /// Where a `_method` body field could move the request: the scan its body needs.
        body_scan: Option<BodyScan>,
    },
    /// No session on a route that needs one: the login page a page load is sent to (with the
    /// way back), or `None` for a 401.
    Login(Option<String>),
    /// Refused, with why.
    Refuse(RequestError),
}

/// What the decision learned about a request, whatever its verdict.
#[derive(Default)]
pub struct Decided {
    /// The canonical target, once it was read.
    pub target: Option<Target>,
    /// The route, once one was chosen.
    pub route: Option<usize>,
    /// How the session was settled; `None` before a route was chosen.
    pub auth: Option<Auth>,
    /// The first characters of the session id the request carried (never the whole id).
    pub session_prefix: Option<String>,
}

impl Decided {
    /// The path the upstream gets (and the access log shows), once the target was read.
    pub fn path(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.path.upstream.as_str())
    }

    /// The path with the query as the client sent it: the way back after a login.
    pub fn path_and_query(&self) -> Option<String> {
        let t = self.target.as_ref()?;
        Some(match &t.query {
            Some(q) => format!("{}?{q}", t.path.upstream),
            None => t.path.upstream.clone(),
        })
    }
}

/// Takes the decision, and keeps what outlives one request: the store's outage log and the
/// store metrics.
pub struct Decider {
    metrics: Arc<Metrics>,
    outage: OutageLog,
    /// `sessiongate_store_duration_seconds{op="load"}` and `{op="write"}`, each resolved at
    /// its first use.
    store_load: std::sync::OnceLock<prometheus::Histogram>,
    store_write: std::sync::OnceLock<prometheus::Histogram>,
}

impl Decider {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            store_load: Default::default(),
            store_write: Default::default(),
            metrics,
            outage: OutageLog::default(),
        }
    }

    /// Decides what becomes of `req` under `rt`, noting in `d` what it learned.
    pub async fn decide(
        &self,
        rt: &Runtime,
        req: &RequestHeader,
        front: Front,
        arrival: Arrival<'_>,
        d: &mut Decided,
    ) -> Verdict {
        let target = match Target::read(req, &rt.path_policy, &rt.sessions) {
            Ok(Some(t)) => t,
            Ok(None) => return Verdict::Server,
            Err(e) => return Verdict::Refuse(e),
        };
        let target = d.target.insert(target);
        let logout = rt.sessions.settings.logout_path.as_deref();
        if front == Front::Proxy && logout == Some(target.path.matched.as_str()) {
            if req.method != Method::POST {
                return Verdict::Refuse(RequestError::LogoutMethod);
            }
            // Same origin only, whatever `cross_origin` says: no other page logs a user out.
            let asked = cross_origin::Request::read(
                req,
                target.authority.as_deref(),
                arrival.https,
                &rt.sessions.settings.cookie_name,
            );
            if let Err(why) = rt.cross_origin.logout(&asked) {
                return Verdict::Refuse(RequestError::CrossOrigin(why));
            }
            return Verdict::Logout;
        }
        let host = target.host.as_deref();
        let path = target.path.matched.as_str();
        let Some(index) = rt.routes.find(host, &req.method, path) else {
            return Verdict::Refuse(RequestError::NoRoute);
        };
        let routed = Routed {
            routes: &rt.routes,
            index,
            host,
            path,
        };
        let (overridden, body_scan) = match routed
            .check_head(req, target.query.as_deref())
            .and_then(|o| Ok((o, routed.body_scan(req)?)))
        {
            Ok(checked) => checked,
            Err(e) => return Verdict::Refuse(e),
        };
        let route = rt.routes.get(index);
        d.route = Some(index);
        // What another origin sent with the session cookie, judged as the method the
        // upstream will act on (an override's, on a route that lets it through).
        let asked = cross_origin::Request::read_as(
            req,
            overridden.as_ref().unwrap_or(&req.method),
            target.authority.as_deref(),
            arrival.https,
            &rt.sessions.settings.cookie_name,
        );
        if let Err(why) = rt.cross_origin.guard(
            route.cross_origin,
            &asked,
            arrival.request_id,
            &self.metrics.cross_origin_reported,
        ) {
            return Verdict::Refuse(RequestError::CrossOrigin(why));
        }
        // An edge forwards the body without the gate: where a field in it could move the
        // request to another route, nothing checks it.
        if front == Front::ForwardAuth && body_scan.is_some() {
            return Verdict::Refuse(RequestError::BodyUnseen);
        }
        if route.auth == AuthMode::Public {
            d.auth = Some(Auth::Public);
            return Verdict::Pass {
                active: None,
                body_scan,
            };
        }

        let loaded = match self.lookup(rt, req, d).await {
            Ok(loaded) => loaded,
            Err(e) => return Verdict::Refuse(e.into()),
        };
        // `required` means a user: a session an app keeps for an anonymous visitor (a cart,
        // express's saveUninitialized) is not a login.
        let loaded = loaded.filter(|a| {
            route.auth != AuthMode::Required || rt.sessions.user_of(&a.record).is_some()
        });
        match loaded {
            Some(active) => Verdict::Pass {
                active: Some(active),
                body_scan,
            },
            None if route.auth == AuthMode::Optional => Verdict::Pass {
                active: None,
                body_scan,
            },
            None => Verdict::Login(login_location(rt, route, req, d)),
        }
    }

    /// Loads the request's session, noting in `d` how it was settled.
    pub async fn lookup(
        &self,
        rt: &Runtime,
        req: &RequestHeader,
        d: &mut Decided,
    ) -> Result<Option<Active>, StoreError> {
        let began = Instant::now();
        let found = rt.sessions.lookup(req).await;
        match &found {
            Ok((active, lookup)) => {
                self.outage.succeeded();
                let auth = Auth::from(*lookup);
                if matches!(auth, Auth::Store | Auth::Expired) {
                    self.observe_store("load", began);
                }
                d.auth = Some(auth);
                d.session_prefix = active.as_ref().map(|a| id_prefix(&a.sid).to_owned());
            }
            Err(_) => {
                self.observe_store("load", began);
                d.auth = Some(Auth::StoreError);
            }
        }
        found.map(|(active, _)| active)
    }

    /// Times a store operation of kind `op` (`load`, `write`).
    pub fn observe_store(&self, op: &str, began: Instant) {
        let took = began.elapsed().as_secs_f64();
        let resolved = match op {
            "load" => &self.store_load,
            "write" => &self.store_write,
            other => {
                let h = self.metrics.store_duration.with_label_values(&[other]);
                return h.observe(took);
            }
        };
        resolved
            .get_or_init(|| self.metrics.store_duration.with_label_values(&[op]))
            .observe(took);
    }

    /// Notes a refusal the request ended with: store outages are logged once per burst and
    /// counted, every refusal counted by its reason.
    pub fn refused(&self, e: &RequestError) {
        if let RequestError::Store(store) = e {
            self.outage.failed(store);
            Metrics::inc(&self.metrics.store_errors);
        }
        if let Some(reason) = e.refusal() {
            self.metrics.refusals.with_label_values(&[reason]).inc();
        }
    }
}

impl Decider {
    /// The signed assertion of `active`'s identity for `route` (`[identity.assertion]`), bound
    /// to `request` when `bind_request` is on; `None` when assertions are off or the session
    /// names no user. A session that cannot be asserted is logged and counted.
    pub fn assertion(
        &self,
        rt: &Runtime,
        route: &Route,
        active: &Active,
        request: &Binding<'_>,
    ) -> Option<(HeaderName, HeaderValue)> {
        let assertions = rt.assertions.as_ref()?;
        match assertions.assertion(
            &active.sid,
            &active.record,
            &rt.sessions.settings.user_field,
            &route.audience,
            request,
        ) {
            Ok(token) => Some((
                assertions.settings.header.clone(),
                HeaderValue::from_str(&token).expect("a JWT is ASCII"),
            )),
            // A session without a user (an anonymous one on an optional route) has no one to
            // assert.
            Err(Refused::NoUser) => None,
            Err(why) => {
                self.metrics.identity_refused.inc();
                tracing::warn!(reason = ?why, "no assertion for this session; header not sent");
                None
            }
        }
    }
}

/// Where an unauthenticated page load logs in, with the way back (`return_to`): only on a
/// route with `login_redirect`, and only for a GET or HEAD that a browser would show (its
/// `Accept` admits HTML, or it has none). An API client gets its 401.
fn login_location(rt: &Runtime, route: &Route, req: &RequestHeader, d: &Decided) -> Option<String> {
    let login = route.login_redirect.as_ref()?;
    if !(req.method == Method::GET || req.method == Method::HEAD) || !accepts_html(req) {
        return None;
    }
    // The way back is the canonical path: always local, never `//host`.
    let back = d.path_and_query()?;
    let sep = if login.contains('?') { '&' } else { '?' };
    Some(format!(
        "{login}{sep}{}={}",
        rt.sessions.settings.return_param,
        crate::cookie::encode_value(&back)
    ))
}

/// Whether a response in HTML would do: no `Accept`, or one naming HTML or anything.
fn accepts_html(req: &RequestHeader) -> bool {
    let mut accepts = req.headers.get_all(header::ACCEPT).iter().peekable();
    if accepts.peek().is_none() {
        return true;
    }
    accepts.any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|item| {
                let media = item.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("text/html")
                    || media.eq_ignore_ascii_case("application/xhtml+xml")
                    || media == "*/*"
                    || media.eq_ignore_ascii_case("text/*")
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(accept: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(a) = accept {
            r.insert_header("accept", a).unwrap();
        }
        r
    }

    #[test]
    fn a_page_load_is_one_that_html_would_answer() {
        assert!(accepts_html(&req(None)));
        assert!(accepts_html(&req(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ))));
        assert!(accepts_html(&req(Some("*/*"))));
        assert!(!accepts_html(&req(Some("application/json"))));
        assert!(!accepts_html(&req(Some("application/json, text/plain"))));
    }
}
