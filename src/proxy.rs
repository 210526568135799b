//! The request path through the gate, top to bottom:
//!
//! 1. `request_filter`: normalise the path (400 on ambiguous spellings), answer the logout
//!    path, pick the route (404 when none), and for non-public routes verify the cookie or
//!    token and load the session, touching it. Store down: 503. No session on a required
//!    route: 401 or a login redirect.
//! 2. `upstream_peer`: the next healthy server of the route's pool.
//! 3. `upstream_request_filter`: strip client-sent identity and internal headers (every
//!    route), inject identity from the session, forward the normalised path.
//! 4. `upstream_response_filter`: take the `X-Session-*` directives off the response, and on
//!    routes allowed to send them issue, update, regenerate or destroy the session.
//! 5. `response_filter`: `Set-Cookie` (or the token header) for issued, regenerated,
//!    destroyed and rolling sessions.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::config::file::AuthMode;
use crate::config::{Config, Secure};
use crate::identity::Identity;
use crate::lifecycle::{self, Destroy, Directives};
use crate::metrics::Metrics;
use crate::path::{normalize_path, NormalPath};
use crate::respond::Reply;
use crate::routes::{host_without_port, RouteTable};
use crate::session::ClientInfo;
use crate::sessions::{Active, Sessions, Via};
use crate::store::{OutageLog, SessionStore, StoreError};
use crate::upstreams::Pool;

pub struct Gate {
    routes: RouteTable,
    pools: Vec<Pool>,
    sessions: Sessions,
    outage: OutageLog,
    metrics: Arc<Metrics>,
    identity: Identity,
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
    /// A session token for a client that asked for one at login.
    token: Option<String>,
}

impl Gate {
    pub fn new(
        config: Config,
        pools: Vec<Pool>,
        store: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            routes: RouteTable::new(config.routes, config.case_sensitive_paths),
            pools,
            retry_after_secs: config.store.retry_after().as_secs().max(1).to_string(),
            sessions: Sessions::new(config.session, store),
            outage: OutageLog::default(),
            metrics,
            identity: Identity::new(&config.identity),
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
        if self.sessions.settings.logout_path.as_deref() == Some(path.decoded.as_str()) {
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

        let loaded = match self.sessions.load(session.req_header()).await {
            Ok(loaded) => {
                self.outage.succeeded();
                loaded
            }
            Err(e) => return self.store_unavailable(session, &e).await,
        };
        // `required` means a user: a session an app keeps for an anonymous visitor (a cart,
        // express's saveUninitialized) is not a login.
        let loaded = loaded.filter(|a| {
            route.auth != AuthMode::Required || self.sessions.user_of(&a.record).is_some()
        });
        match loaded {
            Some(active) => {
                ctx.active = Some(active);
                Ok(false)
            }
            None if route.auth == AuthMode::Optional => Ok(false),
            None => self.unauthenticated(session, ctx).await,
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
        // A session token is the gate's business, not the upstream's.
        if let Some(h) = self.sessions.carries_token(session.req_header()) {
            upstream.remove_header(h);
        }
        if let Some(active) = &ctx.active {
            self.identity.inject(&active.record, upstream);
        }
        // The upstream serves exactly the path the route matched.
        let path = ctx.path.as_ref().expect("routed in request_filter");
        if upstream.uri.path() != path.encoded || upstream.uri.scheme().is_some() {
            let target = match upstream.uri.query() {
                Some(q) => format!("{}?{q}", path.encoded),
                None => path.encoded.clone(),
            };
            let uri = target
                .parse()
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "unrepresentable path"))?;
            upstream.set_uri(uri);
        }

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
        let route = self
            .routes
            .get(ctx.route.expect("routed in request_filter"));
        let directives = match Directives::take(upstream) {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if !route.issue_sessions => {
                tracing::warn!(
                    route = route.prefix,
                    "upstream sent session directives on a route without issue_sessions; ignored"
                );
                return Ok(());
            }
            Ok(Some(d)) => d,
            Err(e) => {
                tracing::error!(route = route.prefix, error = %e, "upstream sent a malformed session directive");
                return Err(Error::explain(ErrorType::HTTPStatus(502), e.to_string()));
            }
        };
        let client = client_info(session);
        self.apply(directives, session.req_header(), &client, ctx)
            .await
            .map_err(|e| self.store_error(&e))
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
        if let Some(token) = ctx.token.take() {
            resp.insert_header(lifecycle::TOKEN, token)?;
        }
        if let Some(active) = &ctx.active {
            // A fresh cookie when the TTL moved (every request unless touches are
            // throttled: the cookie's expiry then follows the store's) or to re-sign it.
            if self.sessions.settings.rolling
                && active.roll
                && active.via == Via::Cookie
                && !self.sets_session_cookie(resp)
            {
                resp.append_header(
                    header::SET_COOKIE,
                    self.sessions
                        .set_cookie(&active.sid, &active.record, self.secure(ctx)),
                )?;
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
    /// Carries out an upstream's session directives, in this order: log out everywhere or
    /// destroy; else issue (dropping the old session: no fixation); else regenerate, then
    /// update.
    async fn apply(
        &self,
        d: Directives,
        req: &RequestHeader,
        client: &ClientInfo,
        ctx: &mut RequestCtx,
    ) -> Result<(), StoreError> {
        let secure = self.secure(ctx);
        // The session the request carried, loaded or (on public routes) only verified.
        let current = match ctx.active.take() {
            Some(a) => Some((a.sid, Some(a.record), a.via, a.roll)),
            None => self
                .sessions
                .credential(req)
                .map(|c| (c.sid, None, c.via, !c.current)),
        };

        if let Some(kind) = d.destroy {
            if let Some((sid, record, _, _)) = &current {
                let user = match record {
                    Some(r) => self.sessions.user_of(r),
                    None => self
                        .sessions
                        .load(req)
                        .await?
                        .and_then(|a| self.sessions.user_of(&a.record)),
                };
                match (kind, user) {
                    (Destroy::AllOfUser, Some(user)) => {
                        self.sessions.revoke_user(&user).await?;
                    }
                    _ => self.sessions.destroy(sid, record.as_deref()).await?,
                }
            }
            let record = current.as_ref().and_then(|(_, r, _, _)| r.as_deref());
            ctx.set_cookies
                .push(self.sessions.expire_cookie(record, secure));
            return Ok(());
        }

        if let Some(fields) = d.issue {
            if let Some((sid, record, _, _)) = &current {
                self.sessions.destroy(sid, record.as_deref()).await?;
            }
            let (sid, record) = self
                .sessions
                .issue(fields, d.max_age, client, secure)
                .await?;
            self.hand_out(req, &sid, &record, ctx, secure);
            return Ok(());
        }

        let Some((mut sid, record, via, roll)) = current else {
            if d.update.is_some() || d.regenerate {
                tracing::warn!(
                    "upstream sent a session update for a request without a session; ignored"
                );
            }
            return Ok(());
        };
        let mut record = match record {
            Some(r) => r,
            None => match self.sessions.load(req).await? {
                Some(a) => a.record,
                None => return Ok(()),
            },
        };
        let mut replaced = false;
        if d.regenerate {
            match self.sessions.regenerate(&sid, &record).await? {
                Some(new) => {
                    sid = new;
                    replaced = true;
                }
                None => return Ok(()),
            }
        }
        if let Some(patch) = d.update {
            if let Some(updated) = self.sessions.update(&sid, patch).await? {
                record = updated;
            }
        }
        if replaced {
            self.hand_out(req, &sid, &record, ctx, secure);
        } else {
            ctx.active = Some(Active {
                sid,
                record,
                via,
                roll,
            });
        }
        Ok(())
    }

    /// Gives the client a new session: a cookie, or the token when it asked for one.
    fn hand_out(
        &self,
        req: &RequestHeader,
        sid: &str,
        record: &crate::session::Session,
        ctx: &mut RequestCtx,
        secure: bool,
    ) {
        let wants_token = self.sessions.settings.token.is_some()
            && (req
                .headers
                .get(lifecycle::TOKEN)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"request"))
                || self.sessions.carries_token(req).is_some());
        if wants_token {
            ctx.token = Some(self.sessions.token(sid));
        } else {
            ctx.set_cookies
                .push(self.sessions.set_cookie(sid, record, secure));
        }
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
        let record = match self.sessions.load(req).await {
            Ok(Some(a)) => {
                if let Err(e) = self.sessions.destroy(&a.sid, Some(&a.record)).await {
                    return self.store_unavailable(session, &e).await;
                }
                Some(a.record)
            }
            Ok(None) => None,
            Err(e) => return self.store_unavailable(session, &e).await,
        };
        let expired = self
            .sessions
            .expire_cookie(record.as_deref(), self.secure(ctx));
        let reply = match &self.sessions.settings.logout_redirect {
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
                    self.sessions.settings.return_param,
                    crate::cookie::encode_value(&back)
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
        Metrics::inc(&self.metrics.store_errors);
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
        Metrics::inc(&self.metrics.store_errors);
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
        match self.sessions.settings.cookie.secure {
            Secure::Always => true,
            Secure::Never => false,
            Secure::Auto => ctx.https,
        }
    }

    /// Whether the upstream already sets the session cookie (an express app behind the gate
    /// rolling its own session): then its cookie is the one the client gets.
    fn sets_session_cookie(&self, resp: &ResponseHeader) -> bool {
        let name = self.sessions.settings.cookie_name.as_bytes();
        resp.headers.get_all(header::SET_COOKIE).iter().any(|v| {
            let v = v.as_bytes();
            v.len() > name.len() && v.starts_with(name) && v[name.len()] == b'='
        })
    }
}

/// The client as the gate saw it: its user agent, and the address it connected from (not a
/// client-supplied X-Forwarded-For).
fn client_info(session: &Session) -> ClientInfo {
    ClientInfo {
        user_agent: session
            .req_header()
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string()),
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
