//! The admin API, on a listener of its own (loopback by default), never on the public one.
//! Every request needs `Authorization: Bearer <token>`, compared in constant time.
//!
//! | request | answer |
//! |---|---|
//! | `GET /sessions/count` | `{"count": n}` |
//! | `GET /metrics` | Prometheus text: cache hits, misses, invalidations, store errors |
//! | `GET /users/{user}/sessions` | `{"user": …, "sessions": [{id_prefix, created, last_seen, expires, user_agent, ip}]}` |
//! | `DELETE /users/{user}/sessions` | `{"revoked": n}`: log the user out everywhere |
//! | `DELETE /users/{user}/sessions/{id_prefix}` | `{"revoked": 1}`; 404 none, 409 ambiguous |
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
use crate::sessions::{RevokeError, Sessions};
use crate::store::StoreError;

pub struct AdminApi {
    sessions: Sessions,
    metrics: Arc<Metrics>,
    /// SHA-256 of the token, so that the comparison takes the same time whatever its length.
    token_hash: [u8; 32],
}

impl AdminApi {
    pub fn new(sessions: Sessions, token: &[u8], metrics: Arc<Metrics>) -> Self {
        Self {
            sessions,
            metrics,
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
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let result = match (method, segs.as_slice()) {
            (&Method::GET, ["sessions", "count"]) => self
                .sessions
                .store()
                .count()
                .await
                .map(|n| json!({ "count": n })),
            (&Method::GET, ["users", user, "sessions"]) => self
                .sessions
                .list_user(user)
                .await
                .map(|s| json!({ "user": user, "sessions": s })),
            (&Method::DELETE, ["users", user, "sessions"]) => self
                .sessions
                .revoke_user(user)
                .await
                .map(|n| json!({ "revoked": n })),
            (&Method::DELETE, ["users", user, "sessions", prefix]) => {
                return match self.sessions.revoke_one(user, prefix).await {
                    Ok(()) => (StatusCode::OK, json!({ "revoked": 1 })),
                    Err(RevokeError::Store(e)) => store_failed(&e),
                    Err(e @ RevokeError::NotFound(_)) => (
                        StatusCode::NOT_FOUND,
                        json!({ "error": "not_found", "message": e.to_string() }),
                    ),
                    Err(e @ RevokeError::Ambiguous(_)) => (
                        StatusCode::CONFLICT,
                        json!({ "error": "ambiguous", "message": e.to_string() }),
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
        let authorized = self.authorized(
            req.headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        );
        if authorized && req.method == Method::GET && req.uri.path() == "/metrics" {
            let body = self.metrics.render().into_bytes();
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
        let body = body.to_string().into_bytes();
        let mut resp = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .header("content-length", body.len());
        if status == StatusCode::UNAUTHORIZED {
            resp = resp.header("www-authenticate", "Bearer");
        }
        resp.body(body).expect("static headers are valid")
    }
}
