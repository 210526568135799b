//! The answers the gate gives itself, without an upstream: JSON errors, redirects, logout.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::error::RequestError;
use crate::runtime::Runtime;

/// A response the gate writes itself.
pub struct Reply {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<String>,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    /// A refusal: its status, and `{"error": code, "message": message}`
    /// ([`RequestError::body`]), machine-readable first, for API clients; with `Retry-After`
    /// when the store is down or full, `Allow` for a logout with another method.
    pub fn error(e: &RequestError, rt: &Runtime) -> Self {
        let reply = Self::new(e.status())
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(e.body());
        match e {
            RequestError::Store(_) | RequestError::StoreFull(_) => {
                reply.header("retry-after", rt.retry_after_secs.clone())
            }
            RequestError::LogoutMethod => reply.header("allow", "POST"),
            _ => reply,
        }
    }

    /// The reply as a response for a listener of Pingora's HTTP apps (forward-auth).
    pub fn into_response(self) -> Response<Vec<u8>> {
        let body = self.body.map(String::into_bytes).unwrap_or_default();
        let mut response = Response::new(Vec::new());
        *response.status_mut() =
            StatusCode::from_u16(self.status).expect("the gate's statuses are valid");
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *response.body_mut() = body;
        response
    }

    /// Adds a header; `name` is lower case. The gate makes every value it sends, so one
    /// that is not a valid field value is a bug: logged and left out, never sent.
    pub fn header(self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        match HeaderValue::try_from(value) {
            Ok(v) => self.named_header(HeaderName::from_static(name), v),
            Err(_) => {
                tracing::error!(
                    header = name,
                    "the gate made an invalid header value; not sent"
                );
                self
            }
        }
    }

    pub fn named_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn body(mut self, body: String) -> Self {
        self.body = Some(body);
        self
    }

    /// Writes the reply; `Ok(true)` is what `request_filter` returns for "answered".
    pub async fn send(self, session: &mut Session) -> Result<bool> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 1))?;
        for (name, value) in self.headers {
            resp.append_header(name, value)?;
        }
        let body = self.body.map(Bytes::from);
        resp.insert_header(
            "content-length",
            body.as_ref().map_or(0, |b| b.len()).to_string(),
        )?;
        // A HEAD answer says how long the body would be, and sends none.
        let body = body.filter(|_| session.req_header().method != http::Method::HEAD);
        session
            .write_response_header(Box::new(resp), body.is_none())
            .await?;
        if let Some(b) = body {
            session.write_response_body(Some(b), true).await?;
        }
        Ok(true)
    }
}
