//! The answers the gate gives itself, without an upstream: JSON errors, redirects, logout.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::error::RequestError;

/// A response the gate writes itself.
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
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
    /// ([`RequestError::body`]), machine-readable first, for API clients.
    pub fn error(e: &RequestError) -> Self {
        Self::new(e.status())
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(e.body())
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
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
