//! What can go wrong for a request, and what the client is told about it.
//!
//! Every refusal on the request path is one [`RequestError`] with a status, a public code and
//! a public message. The client sees only those; the detail a variant carries (which parse
//! rule failed, which pool had no server, the store's own error) goes to the log, in
//! [`RequestError::log`]. The gate's replies are written from here and nowhere else (see
//! `Gate::refuse` in [`crate::proxy`], and [`crate::head`] for heads refused before Pingora
//! reads them).

use pingora::{ErrorSource, ErrorType};

use crate::cross_origin::Foreign;
use crate::directives::DirectiveError;
use crate::path::PathError;
use crate::routes::HostError;
use crate::sessions::ApplyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("bad request target: {0}")]
    Path(#[from] PathError),
    #[error("bad host: {0}")]
    Host(#[from] HostError),
    #[error("method `{0}` is a case variant of a standard method")]
    MethodCase(String),
    #[error("method override refused: {0}")]
    MethodOverride(String),
    #[error("a compressed form body where a `_method` field could move the request")]
    FormEncoding,
    #[error("forward-auth: a `_method` field in the body the gate does not see could move this request to another route")]
    BodyUnseen,
    #[error("forward-auth asked by {0}, which is not in forward_auth.trusted")]
    UntrustedCaller(String),
    #[error("a session token comes with other Authorization credentials")]
    MixedCredentials,
    #[error("no route serves this request")]
    NoRoute,
    #[error("the logout path was asked with another method than POST")]
    LogoutMethod,
    /// A state-changing request another origin made with the session cookie (the gate's
    /// logout included): [`crate::cross_origin`].
    #[error("cross-origin request refused: {0}")]
    CrossOrigin(Foreign),
    #[error("no valid session")]
    Unauthenticated,
    #[error("login refused: the user already holds session.max_per_user sessions")]
    TooManySessions,
    #[error("session store unavailable: {0}")]
    Store(StoreError),
    /// The embedded store is at its bound: a new session (or a growing one) does not fit.
    #[error("{0}")]
    StoreFull(StoreError),
    #[error("malformed session directive from the upstream: {0}")]
    Directive(#[from] DirectiveError),
    #[error("no healthy server in upstream `{0}`")]
    NoHealthyUpstream(String),
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    #[error("the client sent a malformed request: {0}")]
    Client(String),
    #[error("the request head is over the size or header-count limit")]
    HeadTooLarge,
    #[error("the request head was not complete within the header timeout")]
    HeadTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for RequestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full(_) => Self::StoreFull(e),
            e => Self::Store(e),
        }
    }
}

impl From<ApplyError> for RequestError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Store(e) => e.into(),
            ApplyError::TooManySessions => Self::TooManySessions,
        }
    }
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Path(_)
            | Self::Host(_)
            | Self::MethodCase(_)
            | Self::MethodOverride(_)
            | Self::MixedCredentials
            | Self::Client(_) => 400,
            Self::Unauthenticated => 401,
            Self::CrossOrigin(_)
            | Self::TooManySessions
            | Self::BodyUnseen
            | Self::UntrustedCaller(_) => 403,
            Self::NoRoute => 404,
            Self::LogoutMethod => 405,
            Self::HeadTimeout => 408,
            Self::FormEncoding => 415,
            Self::HeadTooLarge => 431,
            Self::Internal(_) => 500,
            Self::Directive(_) | Self::NoHealthyUpstream(_) | Self::Upstream(_) => 502,
            Self::Store(_) | Self::StoreFull(_) => 503,
            Self::UpstreamTimeout(_) => 504,
        }
    }

    /// The machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Path(_) => "bad_path",
            Self::Host(_) => "bad_host",
            Self::MethodCase(_) | Self::MethodOverride(_) => "bad_method",
            Self::MixedCredentials => "bad_credentials",
            Self::Client(_) => "bad_request",
            Self::HeadTooLarge => "header_too_large",
            Self::HeadTimeout => "request_timeout",
            Self::FormEncoding => "unsupported_encoding",
            Self::Unauthenticated => "unauthenticated",
            Self::NoRoute => "no_route",
            Self::LogoutMethod => "method_not_allowed",
            Self::CrossOrigin(_) => "cross_origin",
            Self::TooManySessions => "too_many_sessions",
            Self::BodyUnseen => "body_unchecked",
            Self::UntrustedCaller(_) => "forbidden",
            Self::Internal(_) => "internal_error",
            Self::Directive(_) | Self::NoHealthyUpstream(_) | Self::Upstream(_) => "bad_gateway",
            Self::Store(_) => "store_unavailable",
            Self::StoreFull(_) => "store_full",
            Self::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    /// The human-readable message in the JSON body: generic, never the detail.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Path(_) => "the request path is not acceptable",
            Self::Host(_) => "the Host header is not acceptable",
            Self::MethodCase(_) | Self::MethodOverride(_) => "the request method is not acceptable",
            Self::MixedCredentials => {
                "a session token cannot be sent with other Authorization credentials"
            }
            Self::Client(_) => "the request could not be served",
            Self::HeadTooLarge => "the request head is too large",
            Self::FormEncoding => "send this form body without a Content-Encoding",
            Self::HeadTimeout => "the request head did not arrive in time",
            Self::Unauthenticated => "a valid session is required",
            Self::NoRoute => "no route serves this path",
            Self::LogoutMethod => "log out with POST",
            Self::CrossOrigin(_) => "this request must come from this site's own pages",
            Self::TooManySessions => {
                "this account has too many sessions; log out of another one first"
            }
            Self::BodyUnseen => "this request must come through the gate's proxy",
            Self::UntrustedCaller(_) => "forward-auth answers only its trusted edges",
            Self::Internal(_) => "the request could not be served",
            Self::Directive(_) | Self::NoHealthyUpstream(_) | Self::Upstream(_) => {
                "the upstream is unavailable"
            }
            Self::Store(_) => "the session store is unavailable; retry shortly",
            Self::StoreFull(_) => "the session store is full; retry later",
            Self::UpstreamTimeout(_) => "the upstream did not answer in time",
        }
    }

    /// The `reason` of `sessiongate_refusals_total` when this is the gate refusing for a limit
    /// or a rule of its own (not a failure, not a malformed request): its public code.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::StoreFull(_) | Self::TooManySessions | Self::CrossOrigin(_) => Some(self.code()),
            _ => None,
        }
    }

    /// The JSON body of the answer: `{"error": code, "message": message}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code(), "message": self.message() }).to_string()
    }

    /// What an error Pingora raised means for the client; `None` when the client is gone.
    pub fn from_pingora(e: &pingora::Error) -> Option<RequestError> {
        let detail = e.to_string();
        match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(400)) => Some(Self::Client(detail)),
            (_, ErrorType::HTTPStatus(502)) => Some(Self::Upstream(detail)),
            (_, ErrorType::HTTPStatus(504)) => Some(Self::UpstreamTimeout(detail)),
            (_, ErrorType::HTTPStatus(_)) => Some(Self::Internal(detail)),
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Self::UpstreamTimeout(detail)),
            (ErrorSource::Upstream, _) => Some(Self::Upstream(detail)),
            (
                ErrorSource::Downstream,
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, _) => Some(Self::Client(detail)),
            _ => Some(Self::Internal(detail)),
        }
    }

    /// Writes the detail to the log, at a level that fits whose fault it is, with the
    /// request's id (the access log's and the client's `X-Request-Id`). A full store is
    /// reported once when it fills (by the store) and counted per request, not logged per
    /// request at warning level: a login flood must not become a log flood.
    pub fn log(&self, request_id: &str) {
        if let Self::StoreFull(_) = self {
            tracing::debug!(request_id, status = self.status(), error = %self, "request refused");
            return;
        }
        match self.status() {
            _ if matches!(self, Self::UntrustedCaller(_)) => {
                tracing::warn!(request_id, status = self.status(), error = %self, "forward-auth request refused")
            }
            500..=599 => {
                tracing::warn!(request_id, status = self.status(), error = %self, "request failed")
            }
            _ => {
                tracing::debug!(request_id, status = self.status(), error = %self, "request refused")
            }
        }
    }
}
