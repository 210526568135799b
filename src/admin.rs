//! The admin API, on a listener of its own (loopback by default), never on the public one.
//! Every request needs `Authorization: Bearer <token>`, compared in constant time, except the
//! health probes ([`crate::probes`]), which carry no secret.
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | 200 `{"status":"ok"}` while the process serves (no token) |
//! | `GET /.well-known/jwks.json` | the public keys of `[identity.assertion]`, each with its `kid` (no token); 404 without assertions |
//! | `GET /readyz` | 200 when ready for traffic; 503 while the store is down or draining (no token) |
//! | `GET /sessions/count` | `{"count": n}` |
//! | `GET /metrics` | Prometheus text: requests, latencies, sessions, upstream health, cache ([`crate::metrics`]) |
//! | `GET /users/{user}/sessions` | `{"user": …, "sessions": [{id_prefix, created, last_seen, expires, user_agent, ip}]}` |
//! | `DELETE /users/{user}/sessions` | `{"revoked": n}`: log the user out everywhere |
//! | `DELETE /users/{user}/sessions/{id_prefix}` | `{"revoked": 1}`; 400 under 4 characters, 404 none, 409 ambiguous |
//!
//! Whole session ids are never shown: a prefix names a session among its user's.

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::probes::{self, Draining, StoreCheck};
use crate::sessions::{RevokeError, Sessions};
use crate::store::StoreError;
use crate::upstreams::Pool;

/// The `[admin]` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: String,
    pub token: Vec<u8>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

pub struct AdminApi {
    /// The session service of the running config, on the admin API's own store client.
    sessions: Box<dyn Fn() -> Sessions + Send + Sync>,
    metrics: Arc<Metrics>,
    /// The running config's pools, for their servers' health in the metrics.
    pools: Box<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>,
    draining: Arc<Draining>,
    /// The store's last readiness answer, shared by every probe.
    store_check: StoreCheck,
    /// The running config's JWKS (`[identity.assertion]`), if any.
    jwks: Box<dyn Fn() -> Option<Arc<[u8]>> + Send + Sync>,
    /// SHA-256 of the token, so that the comparison takes the same time whatever its length.
    token_hash: [u8; 32],
}

impl AdminApi {
    pub fn new(
        sessions: Box<dyn Fn() -> Sessions + Send + Sync>,
        token: &[u8],
        metrics: Arc<Metrics>,
        pools: Box<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>,
        draining: Arc<Draining>,
        jwks: Box<dyn Fn() -> Option<Arc<[u8]>> + Send + Sync>,
    ) -> Self {
        Self {
            jwks,
            sessions,
            metrics,
            pools,
            draining,
            store_check: StoreCheck::default(),
            token_hash: Sha256::digest(token).into(),
        }
    }

    fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(token).into();
        hash.ct_eq(&self.token_hash).into()
    }

    async fn route(&self, method: &Method, path: &str) -> (StatusCode, Value) {
        // Only the leading slash goes: `/users/u/sessions/` has an empty fourth segment (an
        // empty id prefix), and must not read as `/users/u/sessions`.
        // Each segment decoded exactly: a user id names the index it names in the store (a
        // string as it is, an integer as its exact decimal), so a segment that is not UTF-8
        // once decoded names no one, rather than the user its replacement characters spell.
        let segments: Option<Vec<String>> = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            })
            .collect();
        let Some(segments) = segments else {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": "bad_path", "message": "a path segment is not UTF-8 once percent-decoded" }),
            );
        };
        if segments.len() >= 3 && segments[0] == "users" && segments[1].is_empty() {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": "bad_user", "message": "name a user" }),
            );
        }
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let sessions = (self.sessions)();
        let result = match (method, segs.as_slice()) {
            (&Method::GET, ["sessions", "count"]) => {
                sessions.count().await.map(|n| json!({ "count": n }))
            }
            (&Method::GET, ["users", user, "sessions"]) => sessions
                .list_user(user)
                .await
                .map(|s| json!({ "user": user, "sessions": s })),
            (&Method::DELETE, ["users", user, "sessions"]) => {
                sessions.revoke_user(user).await.map(|n| {
                    self.metrics.sessions_revoked.inc_by(n as u64);
                    json!({ "revoked": n })
                })
            }
            (&Method::DELETE, ["users", user, "sessions", prefix]) => {
                return match sessions.revoke_one(user, prefix).await {
                    Ok(()) => {
                        self.metrics.sessions_revoked.inc();
                        (StatusCode::OK, json!({ "revoked": 1 }))
                    }
                    Err(RevokeError::Store(e)) => store_failed(&e),
                    Err(e @ RevokeError::NotFound(_)) => (
                        StatusCode::NOT_FOUND,
                        json!({ "error": "not_found", "message": e.to_string() }),
                    ),
                    Err(e @ RevokeError::Ambiguous(_)) => (
                        StatusCode::CONFLICT,
                        json!({ "error": "ambiguous", "message": e.to_string() }),
                    ),
                    Err(e @ RevokeError::TooShort) => (
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "bad_prefix", "message": e.to_string() }),
                    ),
                };
            }
            _ => {
                return (
                    StatusCode::NOT_FOUND,
                    json!({ "error": "not_found", "message": "no such admin endpoint" }),
                )
            }
        };
        match result {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => store_failed(&e),
        }
    }
}

fn store_failed(e: &StoreError) -> (StatusCode, Value) {
    tracing::error!(error = %e, "admin request failed on the store");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": "store_unavailable", "message": e.to_string() }),
    )
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, http: &mut ServerSession) -> Response<Vec<u8>> {
        let req = http.req_header();
        if req.method == Method::GET && req.uri.path() == "/.well-known/jwks.json" {
            // Public keys only: no token, and caches may keep it a little while (a rotation
            // publishes the next key before it signs).
            return match (self.jwks)() {
                Some(body) => Response::builder()
                    .header("content-type", "application/jwk-set+json")
                    .header("cache-control", "public, max-age=300")
                    .header("content-length", body.len())
                    .body(body.to_vec())
                    .expect("static headers are valid"),
                None => json_response(
                    StatusCode::NOT_FOUND,
                    json!({ "error": "not_found", "message": "no [identity.assertion] is configured" }),
                ),
            };
        }
        if req.method == Method::GET {
            let probe = match req.uri.path() {
                "/healthz" => Some((200, json!({ "status": "ok" }))),
                "/readyz" => Some(
                    probes::readiness(&self.draining, &self.store_check, &(self.sessions)()).await,
                ),
                _ => None,
            };
            if let Some((status, body)) = probe {
                return json_response(StatusCode::from_u16(status).expect("a valid status"), body);
            }
        }
        let authorized = self.authorized(
            req.headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        );
        if authorized && req.method == Method::GET && req.uri.path() == "/metrics" {
            let body = self.metrics.render(&(self.pools)()).into_bytes();
            return Response::builder()
                .header("content-type", "text/plain; version=0.0.4")
                .header("content-length", body.len())
                .body(body)
                .expect("static headers are valid");
        }
        let (status, body) = if !authorized {
            (
                StatusCode::UNAUTHORIZED,
                json!({ "error": "unauthorized", "message": "a valid bearer token is required" }),
            )
        } else {
            let (method, path) = (req.method.clone(), req.uri.path().to_string());
            self.route(&method, &path).await
        };
        let mut resp = json_response(status, body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("content-length", body.len())
        .body(body)
        .expect("static headers are valid")
}
