//! The request path through the gate, top to bottom:
//!
//! 1. `request_filter`: normalise the path (400 on ambiguous spellings), answer the logout
//!    path, pick the route (404 when none), and for non-public routes verify the cookie and
//!    load the session (touching it when rolling). Store down: 503. No session on a
//!    required route: 401 or a login redirect.
//! 2. `upstream_peer`: the next healthy server of the route's pool.
//! 3. `upstream_request_filter`: strip client-sent identity and internal headers (every
//!    route), inject identity from the session, forward the normalised path.
//! 4. `upstream_response_filter`: act on `X-Session-Issue` / `X-Session-Destroy` from routes
//!    allowed to send them, and never let those headers reach the client.
//! 5. `response_filter`: `Set-Cookie` for issued, destroyed and rolling sessions.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::{header, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use serde_json::{Map, Value};

use crate::config::file::AuthMode;
use crate::config::runtime::SessionSettings;
use crate::config::{Config, Secure};
use crate::cookie;
use crate::identity::{Identity, DESTROY_HEADER, ISSUE_HEADER};
use crate::path::{normalize_path, NormalPath};
use crate::respond::Reply;
use crate::routes::{host_without_port, RouteTable};
use crate::session::{id_prefix, new_session_id, Session as Record};
use crate::signing::Signer;
use crate::store::{OutageLog, SessionStore, StoreError};
use crate::upstreams::Pool;

pub struct Gate {
    routes: RouteTable,
    pools: Vec<Pool>,
    signer: Signer,
    store: Arc<dyn SessionStore>,
    outage: OutageLog,
    identity: Identity,
    session: SessionSettings,
    trust_forwarded_proto: bool,
    retry_after_secs: String,
}

/// What one request has learned on its way through the gate.
#[derive(Default)]
pub struct RequestCtx {
    route: Option<usize>,
    path: Option<NormalPath>,
    /// The client reached the gate over TLS (or a trusted proxy said so).
    https: bool,
    /// The verified session, until the upstream replaces or destroys it.
    active: Option<Active>,
    set_cookies: Vec<String>,
}

struct Active {
    sid: String,
    record: Record,
}

impl Gate {
    pub fn new(config: Config, pools: Vec<Pool>, store: Arc<dyn SessionStore>) -> Self {
        Self {
            routes: RouteTable::new(config.routes, config.case_sensitive_paths),
            pools,
            signer: Signer::new(&config.session.secrets),
            store,
            outage: OutageLog::default(),
            identity: Identity::new(&config.identity),
            retry_after_secs: config.store.retry_after().as_secs().max(1).to_string(),
            session: config.session,
            trust_forwarded_proto: config.trust_forwarded_proto,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.https = self.client_https(session);
        let req = session.req_header();
        let path = match normalize_path(req.uri.path()) {
            Ok(p) => p,
            Err(e) => {
                return Reply::error(400, "bad_path", &e.to_string())
                    .send(session)
                    .await
            }
        };
        if self.session.logout_path.as_deref() == Some(path.decoded.as_str()) {
            return self.logout(session, ctx).await;
        }
        let host = request_host(req).map(host_without_port);
        let Some(index) = self
            .routes
            .find(host.as_deref(), &req.method, &path.decoded)
        else {
            return Reply::error(404, "no_route", "no route serves this path")
                .send(session)
                .await;
        };
        let route = self.routes.get(index);
        ctx.route = Some(index);
        ctx.path = Some(path);
        if route.auth == AuthMode::Public {
            return Ok(false);
        }

        match self.load_session(session.req_header()).await {
            Ok(Some(active)) => {
                ctx.active = Some(active);
                Ok(false)
            }
            Ok(None) if route.auth == AuthMode::Optional => Ok(false),
            Ok(None) => self.unauthenticated(session, ctx).await,
            Err(e) => self.store_unavailable(session, &e).await,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = self
            .routes
            .get(ctx.route.expect("routed in request_filter"));
        let pool = &self.pools[route.upstream];
        pool.peer().map(Box::new).ok_or_else(|| {
            Error::explain(
                ErrorType::HTTPStatus(502),
                format!("no healthy server in upstream `{}`", pool.name),
            )
        })
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.identity.strip_request(upstream);
        if let Some(active) = &ctx.active {
            self.identity.inject(&active.record, upstream);
        }
        // The upstream serves exactly the path the route matched.
        let path = ctx.path.as_ref().expect("routed in request_filter");
        let target = match upstream.uri.query() {
            Some(q) => format!("{}?{q}", path.encoded),
            None => path.encoded.clone(),
        };
        upstream.set_uri(
            target
                .parse()
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "unrepresentable path"))?,
        );

        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let xff = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {}", addr.ip()),
                None => addr.ip().to_string(),
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header(
            "x-forwarded-proto",
            if ctx.https { "https" } else { "http" },
        )?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let issue = upstream.headers.get(ISSUE_HEADER).cloned();
        let destroy = upstream.headers.contains_key(DESTROY_HEADER);
        for name in crate::identity::internal_headers() {
            upstream.remove_header(*name);
        }
        if issue.is_none() && !destroy {
            return Ok(());
        }
        let route = self
            .routes
            .get(ctx.route.expect("routed in request_filter"));
        if !route.issue_sessions {
            tracing::warn!(
                route = route.prefix,
                "upstream sent a session header on a route without issue_sessions; ignored"
            );
            return Ok(());
        }

        // Whatever session the request carried ends here: a login never keeps a session id
        // the client chose (no fixation), a logout ends it.
        let old = ctx
            .active
            .take()
            .map(|a| a.sid)
            .or_else(|| self.session_id(session.req_header()));
        if let Some(old) = old {
            self.store
                .destroy(&old)
                .await
                .map_err(|e| self.store_error(&e))?;
        }
        let Some(issue) = issue else {
            ctx.set_cookies.push(cookie::expire_cookie(
                &self.session.cookie_name,
                &self.default_attributes(ctx),
            ));
            return Ok(());
        };

        let fields = match serde_json::from_slice::<Value>(issue.as_bytes()) {
            Ok(Value::Object(fields)) => fields,
            _ => {
                tracing::error!(
                    route = route.prefix,
                    "upstream sent an X-Session-Issue that is not a JSON object"
                );
                return Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "X-Session-Issue is not a JSON object",
                ));
            }
        };
        self.issue(fields, ctx).await
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for c in ctx.set_cookies.drain(..) {
            resp.append_header(header::SET_COOKIE, c)?;
        }
        if let Some(active) = &ctx.active {
            if self.session.rolling && !self.sets_session_cookie(resp) {
                let attrs = active
                    .record
                    .cookie_attributes(&self.session.cookie, self.secure(ctx));
                let value = cookie::encode_value(&self.signer.sign(&active.sid));
                let c = cookie::set_cookie(
                    &self.session.cookie_name,
                    &value,
                    &attrs,
                    SystemTime::now(),
                );
                resp.append_header(header::SET_COOKIE, c)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => 502,
                pingora::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0 {
            let mut reply = Reply::error(code, error_code(code), &error_message(code, e));
            if code == 503 {
                reply = reply.header("retry-after", self.retry_after_secs.clone());
            }
            if let Err(err) = reply.send(session).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

impl Gate {
    /// The verified session id from the request's cookies. Two different validly signed
    /// session cookies (a cookie tossed in from a sibling domain) count as none.
    fn session_id(&self, req: &RequestHeader) -> Option<String> {
        let mut found: Option<String> = None;
        for h in req.headers.get_all(header::COOKIE) {
            let Ok(h) = h.to_str() else { continue };
            for value in cookie::values(h, &self.session.cookie_name) {
                let Some(decoded) = cookie::decode_value(value) else {
                    continue;
                };
                let Some(sid) = self.signer.unsign(&decoded) else {
                    continue;
                };
                match &found {
                    None => found = Some(sid.to_owned()),
                    Some(f) if f == sid => {}
                    Some(_) => {
                        tracing::warn!("request carries two different signed session cookies; treating it as no session");
                        return None;
                    }
                }
            }
        }
        found
    }

    /// Verifies the cookie and loads the session, pushing its TTL forward in the same round
    /// trip when rolling or touching.
    async fn load_session(&self, req: &RequestHeader) -> Result<Option<Active>, StoreError> {
        let Some(sid) = self.session_id(req) else {
            return Ok(None);
        };
        // The TTL a touch assumes: right for every session this gate issued. Sessions written
        // with another max-age get a second, corrective EXPIRE below.
        let assumed = self
            .session
            .cookie
            .max_age
            .unwrap_or(self.session.default_ttl);
        let touch = (self.session.rolling || self.session.touch).then_some(assumed);
        let loaded = self.store.load(&sid, touch).await;
        let json = match loaded {
            Ok(json) => {
                self.outage.succeeded();
                json
            }
            Err(e) => return Err(e),
        };
        let Some(json) = json else { return Ok(None) };
        let record = match Record::parse(&json) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(sid = id_prefix(&sid), error = %e, "unreadable session record; treating it as no session");
                return Ok(None);
            }
        };
        if let Some(assumed) = touch {
            let own = record.ttl(self.session.default_ttl);
            if own.as_secs() != assumed.as_secs() {
                self.store.expire(&sid, own).await?;
            }
        }
        Ok(Some(Active { sid, record }))
    }

    async fn issue(&self, fields: Map<String, Value>, ctx: &mut RequestCtx) -> Result<()> {
        let sid = new_session_id();
        let secure = self.secure(ctx);
        let record = Record::new(fields, &self.session.cookie, secure, SystemTime::now());
        self.store
            .save(
                &sid,
                &record.to_json(),
                record.ttl(self.session.default_ttl),
            )
            .await
            .map_err(|e| self.store_error(&e))?;
        let attrs = record.cookie_attributes(&self.session.cookie, secure);
        let value = cookie::encode_value(&self.signer.sign(&sid));
        ctx.set_cookies.push(cookie::set_cookie(
            &self.session.cookie_name,
            &value,
            &attrs,
            SystemTime::now(),
        ));
        tracing::debug!(sid = id_prefix(&sid), "session issued");
        Ok(())
    }

    /// The gate's own logout: POST only, same-origin only, so that no cross-site page can log
    /// a user out.
    async fn logout(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        if req.method != Method::POST {
            return Reply::error(405, "method_not_allowed", "log out with POST")
                .header("allow", "POST")
                .send(session)
                .await;
        }
        if cross_site(req) {
            return Reply::error(403, "cross_site", "logout must come from this site")
                .send(session)
                .await;
        }
        if let Some(sid) = self.session_id(req) {
            if let Err(e) = self.store.destroy(&sid).await {
                return self.store_unavailable(session, &e).await;
            }
        }
        let expired =
            cookie::expire_cookie(&self.session.cookie_name, &self.default_attributes(ctx));
        let reply = match &self.session.logout_redirect {
            Some(to) => Reply::new(303).header("location", to.clone()),
            None => Reply::new(204),
        };
        reply
            .header("set-cookie", expired)
            .header("cache-control", "no-store")
            .send(session)
            .await
    }

    /// No session on a required route: a login redirect for page loads, 401 otherwise.
    async fn unauthenticated(&self, session: &mut Session, ctx: &RequestCtx) -> Result<bool> {
        let route = self.routes.get(ctx.route.expect("routed"));
        let req = session.req_header();
        let page_load = req.method == Method::GET || req.method == Method::HEAD;
        match (&route.login_redirect, page_load) {
            (Some(login), true) => {
                // The return path is the normalised one: always local, never `//host`.
                let path = &ctx.path.as_ref().expect("routed").encoded;
                let back = match req.uri.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                let sep = if login.contains('?') { '&' } else { '?' };
                let location = format!(
                    "{login}{sep}{}={}",
                    self.session.return_param,
                    cookie::encode_value(&back)
                );
                Reply::new(302)
                    .header("location", location)
                    .header("cache-control", "no-store")
                    .send(session)
                    .await
            }
            _ => {
                Reply::error(401, "unauthenticated", "a valid session is required")
                    .send(session)
                    .await
            }
        }
    }

    async fn store_unavailable(&self, session: &mut Session, e: &StoreError) -> Result<bool> {
        self.outage.failed(e);
        Reply::error(
            503,
            "store_unavailable",
            "the session store is unavailable; retry shortly",
        )
        .header("retry-after", self.retry_after_secs.clone())
        .send(session)
        .await
    }

    /// A store failure in the response phase: the 503 is written by `fail_to_proxy`.
    fn store_error(&self, e: &StoreError) -> Box<Error> {
        self.outage.failed(e);
        Error::explain(ErrorType::HTTPStatus(503), "session store unavailable")
    }

    fn client_https(&self, session: &Session) -> bool {
        session.digest().is_some_and(|d| d.ssl_digest.is_some())
            || (self.trust_forwarded_proto
                && session
                    .req_header()
                    .headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")))
    }

    fn secure(&self, ctx: &RequestCtx) -> bool {
        match self.session.cookie.secure {
            Secure::Always => true,
            Secure::Never => false,
            Secure::Auto => ctx.https,
        }
    }

    fn default_attributes(&self, ctx: &RequestCtx) -> cookie::Attributes {
        let c = &self.session.cookie;
        cookie::Attributes {
            path: c.path.clone(),
            domain: c.domain.clone(),
            http_only: c.http_only,
            secure: self.secure(ctx),
            same_site: c.same_site.map(str::to_owned),
            max_age: c.max_age,
        }
    }

    /// Whether the upstream already sets the session cookie (an express app behind the gate
    /// rolling its own session): then its cookie is the one the client gets.
    fn sets_session_cookie(&self, resp: &ResponseHeader) -> bool {
        let name = self.session.cookie_name.as_bytes();
        resp.headers.get_all(header::SET_COOKIE).iter().any(|v| {
            let v = v.as_bytes();
            v.len() > name.len() && v.starts_with(name) && v[name.len()] == b'='
        })
    }
}

fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
}

/// A state-changing request sent by another site: `Sec-Fetch-Site: cross-site`, or an
/// `Origin` whose host is not the one the request was sent to.
fn cross_site(req: &RequestHeader) -> bool {
    if req
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
    match (
        req.headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok()),
        request_host(req),
    ) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn error_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        502 => "bad_gateway",
        503 => "store_unavailable",
        504 => "upstream_timeout",
        _ => "error",
    }
}

fn error_message(status: u16, e: &Error) -> String {
    match status {
        502 | 503 => e
            .context
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "upstream failed".into()),
        _ => "the request could not be served".into(),
    }
}
