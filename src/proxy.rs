//! The request path through the gate, top to bottom:
//!
//! 1. `request_filter`: the request decision ([`crate::decide`], the same one forward-auth
//!    takes): the canonical target (400 on anything ambiguous), the logout path, the route
//!    (404 when none), and on routes that are not public the session, verified, loaded and
//!    touched. Store down: 503. No session on a required route: 401 or a login redirect.
//!    What the decision says is answered here; a request that passes goes on.
//! 2. `upstream_peer`: the next healthy server of the route's pool (any server when none is
//!    healthy; another one for the single retry of `fail_to_connect`/`error_while_proxy`).
//! 3. `upstream_request_filter`: strip client-sent identity, internal, forwarded-host and
//!    method-override headers and session tokens (every route), inject identity from the
//!    session, forward the canonical path and the host the route was matched on.
//! 4. `upstream_response_filter`: take the `X-Session-*` directives off the response, and on
//!    routes allowed to send them issue, update, regenerate or destroy the session.
//! 5. `response_filter`: `Set-Cookie` (or the token header) for issued, regenerated,
//!    destroyed and rolling sessions.
//! 6. `logging`: once per request, however it ended: the access-log line and the request
//!    metrics.
//!
//! Every request has an id ([`crate::request_id`]) from its start: sent upstream as
//! `X-Request-Id`, returned to the client on every answer (the gate's own too), logged.
//!
//! Every refusal is a [`RequestError`], answered by [`Gate::refuse`] (or, once Pingora has
//! taken over, by `fail_to_proxy`) through the same rendering.
//!
//! This file is longer than most on purpose: it is the whole request path, and reads as one
//! piece. What each phase decides lives elsewhere ([`crate::decide`] decides the request,
//! [`crate::sessions`] carries out session work, [`crate::error`] names every failure);
//! what stays here is the transport: headers in, headers out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use async_trait::async_trait;
use http::{header, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::access_log::{AccessLog, Auth, Entry};
use crate::assertion::Binding;
use crate::decide::{Arrival, Decided, Decider, Front, Verdict};
use crate::directives::{self, Action};
use crate::error::RequestError;
use crate::forwarded::ClientView;
use crate::method_override::{BodyScan, Routed};
use crate::metrics::Metrics;
use crate::record::ClientInfo;
use crate::request_id;
use crate::respond::Reply;
use crate::runtime::Runtime;
use crate::sessions::{Active, Delivery, Grant, Via};

pub struct Gate {
    /// What requests are served with; a reload swaps it, and each request keeps the one it
    /// started with.
    current: Arc<ArcSwap<Runtime>>,
    decider: Arc<Decider>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
}

/// What one request has learned on its way through the gate.
pub struct RequestCtx {
    /// The config this request is served with, from its start to its end.
    rt: Arc<Runtime>,
    /// When the request head had been read.
    start: Instant,
    /// `X-Request-Id`: a trusted proxy's, or a new one.
    request_id: String,
    /// What the decision learned: the canonical target, the route, how the session was
    /// settled.
    decided: Decided,
    /// The first connection attempt to an upstream, and the end of its answer.
    upstream_start: Option<Instant>,
    upstream_end: Option<Instant>,
    /// Where a `_method` body field could move the request: the scan of its body.
    body_scan: Option<BodyScan>,
    /// Why the request failed in a phase after `request_filter`, for `fail_to_proxy`.
    error: Option<RequestError>,
    /// The client as the gate sees it (through trusted proxies).
    client: Option<ClientView>,
    /// Servers of the pool already tried for this request.
    tried: Vec<SocketAddr>,
    /// Whether the one retry was spent.
    retried: bool,
    /// The upstream's response has begun: nothing may be retried any more.
    responded: bool,
    /// The verified session, until the upstream replaces or destroys it.
    active: Option<Active>,
    set_cookies: Vec<String>,
    /// A session token for a client that asked for one at login.
    token: Option<String>,
}

impl Gate {
    pub fn new(
        current: Arc<ArcSwap<Runtime>>,
        decider: Arc<Decider>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        Self {
            current,
            decider,
            metrics,
            access_log,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            rt: self.current.load_full(),
            start: Instant::now(),
            request_id: request_id::generate(),
            decided: Decided::default(),
            upstream_start: None,
            upstream_end: None,
            body_scan: None,
            error: None,
            client: None,
            tried: Vec::new(),
            retried: false,
            responded: false,
            active: None,
            set_cookies: Vec::new(),
            token: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = ctx.rt.clone();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if peer.is_some_and(|p| rt.trusted_proxies.contains(p)) {
            if let Some(id) = request_id::from_trusted(session.req_header()) {
                ctx.request_id = id;
            }
        }
        ctx.client = Some(ClientView::read(
            session.req_header(),
            peer,
            tls,
            &rt.trusted_proxies,
        ));
        let verdict = self
            .decider
            .decide(
                &rt,
                session.req_header(),
                Front::Proxy,
                Arrival {
                    https: ctx.client.as_ref().is_some_and(|c| c.https),
                    request_id: &ctx.request_id,
                },
                &mut ctx.decided,
            )
            .await;
        match verdict {
            Verdict::Pass { active, body_scan } => {
                ctx.active = active;
                ctx.body_scan = body_scan;
                Ok(false)
            }
            Verdict::Login(Some(location)) => {
                let reply = Reply::new(302)
                    .header("location", location)
                    .header("cache-control", "no-store");
                self.answer(session, ctx, reply).await
            }
            Verdict::Login(None) => {
                self.refuse(session, ctx, RequestError::Unauthenticated)
                    .await
            }
            Verdict::Refuse(e) => self.refuse(session, ctx, e).await,
            Verdict::Logout => self.logout(session, ctx).await,
            Verdict::Server => {
                // `OPTIONS *` asks about the server; the gate answers for it.
                let reply =
                    Reply::new(200).header("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH");
                self.answer(session, ctx, reply).await
            }
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let took = ctx.start.elapsed();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.decided.route.map(|i| ctx.rt.routes.get(i));
        let route_label = route.map(|r| {
            if r.prefix.is_empty() {
                "/"
            } else {
                r.prefix.as_str()
            }
        });
        let upstream_took = ctx.upstream_start.map(|s| {
            ctx.upstream_end
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(s)
        });
        let auth = ctx.decided.auth.map_or("none", Auth::as_str);
        match (ctx.decided.route, route_label) {
            (Some(index), Some(label)) => ctx.rt.series.route(&self.metrics, index, label).request(
                &self.metrics,
                status,
                auth,
                took,
            ),
            _ => self.metrics.request("none", status, auth, took),
        }
        if let (Some(upstream), Some(d)) = (route.and_then(|r| r.upstream), upstream_took) {
            ctx.rt
                .series
                .upstream(&self.metrics, upstream, &ctx.rt.pools[upstream].name)
                .observe(d.as_secs_f64());
        }
        if !self.access_log.enabled() {
            return;
        }
        let method = session.req_header().method.as_str().to_owned();
        self.access_log.write(&Entry {
            time: SystemTime::now(),
            request_id: &ctx.request_id,
            client: ctx.client.as_ref().and_then(|c| c.ip),
            method: &method,
            path: ctx.decided.path(),
            route: route_label,
            status,
            upstream: ctx.tried.last().copied(),
            duration_ms: took,
            upstream_ms: upstream_took,
            auth: ctx.decided.auth,
            session: ctx.decided.session_prefix.as_deref(),
            bytes: session.body_bytes_sent(),
        });
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let rt = ctx.rt.clone();
        ctx.upstream_start.get_or_insert_with(Instant::now);
        let route = rt
            .routes
            .get(ctx.decided.route.expect("routed in request_filter"));
        // The config gives every route an upstream while the gate proxies.
        let Some(pool) = route.upstream.map(|u| &rt.pools[u]) else {
            return Err(fail(
                ctx,
                RequestError::Internal("a route without an upstream on the proxy".into()),
            ));
        };
        let Some(peer) = pool.peer(&ctx.tried) else {
            return Err(fail(
                ctx,
                RequestError::NoHealthyUpstream(pool.name.clone()),
            ));
        };
        if let Some(addr) = peer._address.as_inet() {
            ctx.tried.push(*addr);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = ctx.rt.clone();
        let route = rt
            .routes
            .get(ctx.decided.route.expect("routed in request_filter"));
        rt.identity.strip_request(upstream, route.method_override);
        // HTTP/2 may split the cookie into several fields; an HTTP/1.1 upstream gets them as
        // one line, joined with `; ` (RFC 9113 section 8.2.3).
        if session.req_header().version == http::Version::HTTP_2 {
            join_cookie_fields(upstream)?;
        }
        if route.strip_session_cookie {
            strip_cookie(upstream, &rt.sessions.settings.cookie_name)?;
        }
        // A session token is the gate's business, not the upstream's.
        if let Some(h) = rt.sessions.carries_token(session.req_header()) {
            upstream.remove_header(h);
        }
        if let Some(active) = &ctx.active {
            let refused = rt.identity.inject(&active.record, upstream);
            if refused > 0 {
                self.metrics.identity_refused.inc_by(refused as u64);
            }
        }
        // The upstream serves exactly the path the route matched, as origin-form...
        let decided = ctx
            .decided
            .target
            .as_ref()
            .expect("routed in request_filter");
        if !decided.is_origin_form(upstream.raw_path()) {
            let target = ctx
                .decided
                .path_and_query()
                .expect("routed in request_filter");
            let uri = target.parse().map_err(|_| {
                fail(
                    ctx,
                    RequestError::Client("the query cannot be forwarded".into()),
                )
            })?;
            upstream.set_uri(uri);
        }
        let decided = ctx
            .decided
            .target
            .as_ref()
            .expect("routed in request_filter");
        // ...on the host it was matched on.
        if let Some(authority) = &decided.authority {
            upstream.insert_header(header::HOST, authority.as_str())?;
        }

        // The forwarding headers: the gate's view, or a trusted proxy's appended to. (A
        // header value's clone shares its bytes.)
        let host = upstream.headers.get(header::HOST).cloned();
        let https = ctx.client.as_ref().is_some_and(|c| c.https);
        if let Some(client) = &ctx.client {
            client.write(upstream, host.as_ref());
        }
        upstream.insert_header(request_id::HEADER, ctx.request_id.as_str())?;
        if let (Some(active), Some(_)) = (&ctx.active, &rt.assertions) {
            let host = host.as_ref().and_then(|h| h.to_str().ok());
            let url = crate::assertion::request_url(
                https,
                host.unwrap_or_default(),
                &decided.path.upstream,
            );
            let binding = Binding {
                method: upstream.method.as_str(),
                url: &url,
            };
            if let Some((name, value)) = self.decider.assertion(&rt, route, active, &binding) {
                upstream.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = ctx.rt.clone();
        ctx.responded = true;
        ctx.upstream_end = Some(Instant::now());
        let route = rt
            .routes
            .get(ctx.decided.route.expect("routed in request_filter"));
        if !route.issue_sessions {
            // Whatever the upstream meant, well-formed or not, this route may not say it.
            if directives::remove(upstream) {
                tracing::warn!(
                    route = route.prefix,
                    "upstream sent session directives on a route without issue_sessions; ignored"
                );
            }
            return Ok(());
        }
        let action = match directives::take(upstream) {
            Ok(None) => return Ok(()),
            Ok(Some(action)) => action,
            Err(e) => return Err(fail(ctx, e.into())),
        };
        let req = session.req_header();
        let to = Delivery {
            secure: self.secure(ctx),
            token: rt.sessions.wants_token(req),
            client: client_info(session, ctx.client.as_ref()),
        };
        let current = rt.sessions.current(ctx.active.take(), req);
        let counter = match &action {
            Action::Issue { .. } => Some(&self.metrics.sessions_issued),
            Action::Destroy(_) => Some(&self.metrics.sessions_destroyed),
            Action::Modify { .. } => None,
        };
        let began = Instant::now();
        let granted = rt.sessions.apply(action, current, &to).await;
        self.decider.observe_store("write", began);
        let granted = match granted {
            Ok(applied) => applied,
            Err(e) => return Err(fail(ctx, e.into())),
        };
        self.metrics
            .sessions_ended_by_cap
            .inc_by(granted.ended_by_cap as u64);
        match granted.grant {
            Grant::Keep(active) => ctx.active = active,
            Grant::Cookie(c) | Grant::Expire(c) => ctx.set_cookies.push(c),
            Grant::Token(t) => ctx.token = Some(t),
        }
        if let Some(counter) = counter {
            counter.inc();
        }
        Ok(())
    }

    /// Where the method decides the route, a form body is scanned for `_method` before each
    /// chunk goes on ([`crate::method_override`]).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(scan) = ctx.body_scan.as_mut() else {
            return Ok(());
        };
        let rt = ctx.rt.clone();
        let target = ctx
            .decided
            .target
            .as_ref()
            .expect("routed in request_filter");
        let routed = Routed {
            routes: &rt.routes,
            index: ctx.decided.route.expect("routed in request_filter"),
            host: target.host.as_deref(),
            path: &target.path.matched,
        };
        let chunk = body.as_deref().unwrap_or_default();
        if let Err(e) = scan.feed(chunk, end_of_stream, &routed) {
            ctx.body_scan = None;
            return Err(fail(ctx, e));
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream {
            ctx.upstream_end = Some(Instant::now());
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = ctx.rt.clone();
        resp.insert_header(request_id::HEADER, ctx.request_id.as_str())?;
        for c in ctx.set_cookies.drain(..) {
            resp.append_header(header::SET_COOKIE, c)?;
        }
        if let Some(token) = ctx.token.take() {
            resp.insert_header(directives::TOKEN, token)?;
        }
        if let Some(active) = &ctx.active {
            // A fresh cookie when the TTL moved (every request unless touches are
            // throttled: the cookie's expiry then follows the store's) or to re-sign it.
            if rt.sessions.settings.rolling
                && active.roll
                && active.via == Via::Cookie
                && !self.sets_session_cookie(&rt, resp)
            {
                resp.append_header(
                    header::SET_COOKIE,
                    rt.sessions
                        .set_cookie(&active.sid, &active.record, self.secure(ctx)),
                )?;
            }
        }
        Ok(())
    }

    /// Nothing reached the server: any request may go to another server of the pool, once.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if !ctx.retried {
            ctx.retried = true;
            e.set_retry(true);
        }
        e
    }

    /// The connection failed after the request went out: only a GET or HEAD that has no
    /// answer yet is sent again (once), and never after a timeout, which is the answer.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {peer}"));
        let method = &session.req_header().method;
        let lost = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        let retry = (method == Method::GET || method == Method::HEAD)
            && lost
            && !ctx.retried
            && !ctx.responded
            && !session.as_ref().retry_buffer_truncated();
        if retry {
            ctx.retried = true;
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let error = match ctx.error.take() {
            Some(error) => Some(error),
            None => RequestError::from_pingora(e),
        };
        let code = match error {
            Some(error) => {
                let code = error.status();
                let reply = self.reply(ctx, error);
                if let Err(err) = self.answer(session, ctx, reply).await {
                    tracing::debug!(error = %err, "could not send the error response");
                }
                code
            }
            // The client went away: nobody to answer.
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

impl Gate {
    /// The gate's own logout (the decision checked it is a POST from the same site): the
    /// session ended, its cookie expired.
    async fn logout(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = ctx.rt.clone();
        let found = self
            .decider
            .lookup(&rt, session.req_header(), &mut ctx.decided)
            .await;
        let record = match found {
            Ok(Some(a)) => {
                let began = Instant::now();
                let destroyed = rt.sessions.destroy(&a.sid, Some(&a.record)).await;
                self.decider.observe_store("write", began);
                if let Err(e) = destroyed {
                    return self.refuse(session, ctx, e.into()).await;
                }
                self.metrics.sessions_destroyed.inc();
                Some(a.record)
            }
            Ok(None) => None,
            Err(e) => return self.refuse(session, ctx, e.into()).await,
        };
        let expired = rt
            .sessions
            .expire_cookie(record.as_deref(), self.secure(ctx));
        let reply = match &rt.sessions.settings.logout_redirect {
            Some(to) => Reply::new(303).header("location", to.clone()),
            None => Reply::new(204),
        };
        let reply = reply
            .header("set-cookie", expired)
            .header("cache-control", "no-store");
        self.answer(session, ctx, reply).await
    }

    /// Answers a refused request: the one rendering of every [`RequestError`].
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        e: RequestError,
    ) -> Result<bool> {
        let reply = self.reply(ctx, e);
        self.answer(session, ctx, reply).await
    }

    /// Sends one of the gate's own answers, with the request's id.
    async fn answer(&self, session: &mut Session, ctx: &RequestCtx, reply: Reply) -> Result<bool> {
        reply
            .header(request_id::HEADER, ctx.request_id.clone())
            .send(session)
            .await
    }

    /// Logs the error's detail, counts store failures and refusals, and builds the client's
    /// answer.
    fn reply(&self, ctx: &RequestCtx, e: RequestError) -> Reply {
        e.log(&ctx.request_id);
        self.decider.refused(&e);
        Reply::error(&e, &ctx.rt)
    }

    fn secure(&self, ctx: &RequestCtx) -> bool {
        let https = ctx.client.as_ref().is_some_and(|c| c.https);
        ctx.rt.sessions.settings.cookie.secure.applies(https)
    }

    /// Whether the upstream already sets the session cookie (an express app behind the gate
    /// rolling its own session): then its cookie is the one the client gets.
    fn sets_session_cookie(&self, rt: &Runtime, resp: &ResponseHeader) -> bool {
        let name = rt.sessions.settings.cookie_name.as_bytes();
        resp.headers.get_all(header::SET_COOKIE).iter().any(|v| {
            let v = v.as_bytes();
            v.len() > name.len() && v.starts_with(name) && v[name.len()] == b'='
        })
    }
}

/// The client as the gate saw it: its user agent, and its address (the peer's, or behind
/// trusted proxies the one they reported), never a client-supplied `X-Forwarded-For`.
fn client_info(session: &Session, view: Option<&ClientView>) -> ClientInfo {
    ClientInfo {
        user_agent: session
            .req_header()
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ip: view.and_then(|v| v.ip).map(|ip| ip.to_string()),
    }
}

/// Removes cookie `name` from every `Cookie` header of `req`, keeping the other cookies.
fn strip_cookie(req: &mut RequestHeader, name: &str) -> Result<()> {
    let fields: Vec<String> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let mut changed = false;
    let mut kept = Vec::with_capacity(fields.len());
    for field in &fields {
        match crate::cookie::without(field, name) {
            Some(rest) => {
                changed = true;
                if !rest.is_empty() {
                    kept.push(rest);
                }
            }
            None => kept.push(field.clone()),
        }
    }
    if !changed {
        return Ok(());
    }
    req.remove_header(&header::COOKIE);
    for field in kept {
        req.append_header(header::COOKIE, field)?;
    }
    Ok(())
}

/// Joins every `cookie` field of `req` into one, with `; `.
fn join_cookie_fields(req: &mut RequestHeader) -> Result<()> {
    let mut fields = req.headers.get_all(header::COOKIE).iter();
    if fields.nth(1).is_none() {
        return Ok(());
    }
    let joined: Vec<&[u8]> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let joined = joined.join(&b"; "[..]);
    req.insert_header(header::COOKIE, joined)
}

/// Records why a phase after `request_filter` failed, for `fail_to_proxy` to answer.
fn fail(ctx: &mut RequestCtx, e: RequestError) -> Box<Error> {
    let status = e.status();
    ctx.error = Some(e);
    Error::explain(ErrorType::HTTPStatus(status), "request failed")
}
