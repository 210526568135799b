//! Method overrides: what makes an upstream treat a request as another method than the one
//! the gate routed on. A route decides on the method, so an override the gate does not see
//! moves a request to a rule the gate never applied (`POST /api/items/7?_method=DELETE`
//! through a public POST route reaches express's `method-override` as a DELETE that the gate
//! answers with 401). Three places carry one:
//!
//! - **headers** (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`): removed
//!   on every route without `method_override` ([`crate::identity`] strips them);
//! - **the `_method` query key** (express `method-override('_method')`, Symfony and Laravel):
//!   a 400 `bad_method` on every route without `method_override`;
//! - **the `_method` field of a form body** (express `method-override` with a body getter,
//!   Rails' `Rack::MethodOverride`, Laravel): the body is scanned as it streams to the
//!   upstream, wherever the request's method decides its route (another route, or none,
//!   serves another method on the same host and path). There a `_method` field is a 400 on a
//!   route without `method_override`; elsewhere no method can move the request, and bodies
//!   are not read.
//!
//! On a route with `method_override`, each override (header, query or body) must name, in
//! upper case, a method that this same route serves: the override never moves a request to
//! another rule. Frameworks upper-case what they read, so only the upper-case spelling is
//! unambiguous; other spellings are refused.
//!
//! Keys are read as the most lenient of those frameworks reads them: percent-decoded, `+` as
//! a space, any case, leading spaces dropped, and `.`/space as `_` (PHP's variable-name
//! mangling, which Laravel inherits); `_method[...]` (bracket arrays, read by `qs` and Rack) is
//! `_method` too. `&` and `;` both separate pairs (Rack 2 split on either). A POST without a
//! `Content-Type` is scanned as a urlencoded form, as Rack parses it. A compressed form body
//! cannot be scanned as it streams and is refused there (415): body-parser inflates it.
//!
//! The body scanner is written here rather than taken from a multipart crate: the proxy sees
//! the body one chunk at a time and must decide on each chunk before it is forwarded, in
//! constant memory, while crates such as `multer` want to own the body stream. A refusal
//! mid-body ends the request before the chunk that carries the field reaches the upstream,
//! so no upstream ever parses a whole body with the field (body parsers act on complete
//! bodies only); the client gets the 400.

use http::{header, Method};
use pingora::http::RequestHeader;

use crate::error::RequestError;
use crate::routes::RouteTable;

/// The override headers, in canonical form (lower case, `-`).
pub const HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The parameter name the frameworks read.
const KEY: &[u8] = b"_method";
/// A key longer than this (decoded, after leading spaces) cannot be `_method` or
/// `_method[...]` worth reading: `_method[` and a short index.
const MAX_KEY: usize = 32;
/// The longest override value read: longer ones are no method and are refused.
const MAX_VALUE: usize = 32;
/// A multipart part's headers must fit in this.
const MAX_PART_HEAD: usize = 8 * 1024;

/// Where on the request path an override was found: for the log.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    Header,
    Query,
    Body,
}

impl Carrier {
    fn as_str(self) -> &'static str {
        match self {
            Carrier::Header => "header",
            Carrier::Query => "`_method` query key",
            Carrier::Body => "`_method` body field",
        }
    }
}

/// The route a request was matched to, and what it was matched on: what an override is
/// checked against.
pub struct Routed<'a> {
    pub routes: &'a RouteTable,
    pub index: usize,
    pub host: Option<&'a str>,
    /// The canonical path routes matched.
    pub path: &'a str,
}

impl Routed<'_> {
    /// Refuses an override of `carrier` naming `value`, unless the route allows overrides and
    /// serves that very method.
    fn check(&self, carrier: Carrier, value: Option<&[u8]>) -> Result<Method, RequestError> {
        let route = self.routes.get(self.index);
        if !route.method_override {
            return Err(RequestError::MethodOverride(format!(
                "a {} on a route without method_override",
                carrier.as_str()
            )));
        }
        let method = value
            .filter(|v| !v.is_empty() && v.iter().all(|b| b.is_ascii_uppercase()))
            .and_then(|v| Method::from_bytes(v).ok())
            .ok_or_else(|| {
                RequestError::MethodOverride(format!(
                    "the {} is not an upper-case method",
                    carrier.as_str()
                ))
            })?;
        if self.routes.find(self.host, &method, self.path) != Some(self.index) {
            return Err(RequestError::MethodOverride(format!(
                "the {} names `{method}`, which another route serves",
                carrier.as_str()
            )));
        }
        Ok(method)
    }

    /// Checks the override headers and the query's `_method` keys, and returns the method
    /// they make of the request, if any: the one that is not safe (GET, HEAD, OPTIONS) when
    /// they name several, as the upstream may act on it.
    pub fn check_head(
        &self,
        req: &RequestHeader,
        query: Option<&str>,
    ) -> Result<Option<Method>, RequestError> {
        let mut made: Option<Method> = None;
        let mut keep = |m: Method| {
            let safe = |m: &Method| matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS);
            if made.as_ref().is_none_or(|old| safe(old) && !safe(&m)) {
                made = Some(m);
            }
        };
        if let Some(query) = query {
            let mut form = UrlEncoded::default();
            let mut found = form.feed(query.as_bytes());
            found.extend(form.finish());
            for f in found {
                keep(self.check(Carrier::Query, f.value.as_deref())?);
            }
        }
        // Without `method_override` the headers are stripped on the way upstream.
        if !self.routes.get(self.index).method_override {
            return Ok(made);
        }
        for (name, value) in &req.headers {
            // Header names are lower case; a lenient backend reads `_` as `-`.
            if HEADERS.contains(&name.as_str().replace('_', "-").as_str()) {
                keep(self.check(Carrier::Header, Some(value.as_bytes()))?);
            }
        }
        Ok(made)
    }

    /// A scanner for the request's body when a `_method` field in it could move the request
    /// to another route: `Ok(None)` when none can (every method is served by this route, or
    /// the body is no form). A compressed form there is refused.
    pub fn body_scan(&self, req: &RequestHeader) -> Result<Option<BodyScan>, RequestError> {
        // No type and not a POST: no form, whichever route the method goes to (the common
        // case, decided without a route lookup).
        if req.method != Method::POST && !req.headers.contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        if self
            .routes
            .same_route_for_every_method(self.host, self.path, self.index)
        {
            return Ok(None);
        }
        let mut types = req.headers.get_all(header::CONTENT_TYPE).iter();
        let kind = match (types.next(), types.next()) {
            (_, Some(_)) => {
                return Err(RequestError::Client("more than one Content-Type".into()));
            }
            // Rack reads a POST without a type as a urlencoded form.
            (None, None) if req.method == Method::POST => {
                Some(Form::UrlEncoded(UrlEncoded::default()))
            }
            (None, None) => None,
            (Some(t), None) => Form::for_type(t.as_bytes()),
        };
        let Some(form) = kind else {
            return Ok(None);
        };
        let encoded = req
            .headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Err(RequestError::FormEncoding);
        }
        Ok(Some(BodyScan { form }))
    }
}

/// Scans a form body for `_method`, chunk by chunk, in bounded memory.
pub struct BodyScan {
    form: Form,
}

impl BodyScan {
    /// Feeds the next chunk (`end`: the body's last); refuses, per [`Routed`], the first
    /// `_method` field found.
    pub fn feed(&mut self, chunk: &[u8], end: bool, at: &Routed) -> Result<(), RequestError> {
        let found = match &mut self.form {
            Form::UrlEncoded(f) => {
                let mut found = f.feed(chunk);
                if end {
                    found.extend(f.finish());
                }
                found
            }
            Form::Multipart(m) => m.feed(chunk),
        };
        for f in found {
            at.check(Carrier::Body, f.value.as_deref())?;
        }
        Ok(())
    }
}

enum Form {
    UrlEncoded(UrlEncoded),
    Multipart(Multipart),
}

impl Form {
    /// The scanner for a `Content-Type`; `None` for types no framework reads a form from.
    fn for_type(value: &[u8]) -> Option<Form> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(';');
        let media = parts.next()?.trim();
        if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Some(Form::UrlEncoded(UrlEncoded::default()));
        }
        if !media.eq_ignore_ascii_case("multipart/form-data") {
            return None;
        }
        let boundary = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_owned())
        });
        // Without a boundary no parser reads a field.
        let boundary = boundary.filter(|b| !b.is_empty())?;
        Some(Form::Multipart(Multipart::new(boundary.as_bytes())))
    }
}

/// A `_method` field (or key) found, with its value when it was short enough to read.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    value: Option<Vec<u8>>,
}

/// Whether a decoded key names `_method` as the frameworks read keys (see the module docs).
fn is_method_key(key: &[u8]) -> bool {
    key == KEY || (key.len() > KEY.len() && key.starts_with(KEY) && key[KEY.len()] == b'[')
}

/// One byte of a key, as the most lenient reader sees it.
fn key_byte(b: u8) -> u8 {
    match b {
        b' ' | b'.' => b'_',
        other => other.to_ascii_lowercase(),
    }
}

/// A streaming `application/x-www-form-urlencoded` reader that only looks for `_method`.
#[derive(Default)]
struct UrlEncoded {
    key: Vec<u8>,
    /// The key outgrew [`MAX_KEY`]: not `_method`.
    key_long: bool,
    /// In the value of a `_method` pair, with what was read of it (`None`: too long).
    value: Option<Option<Vec<u8>>>,
    in_value: bool,
    /// A `%` and the hex digits after it, awaiting the rest.
    pct: Vec<u8>,
}

impl UrlEncoded {
    /// Reads `chunk`; the `_method` pairs it completes.
    fn feed(&mut self, chunk: &[u8]) -> Vec<Found> {
        chunk.iter().filter_map(|&raw| self.byte(raw)).collect()
    }

    /// The end of the body: a pair still open is complete.
    fn finish(&mut self) -> Option<Found> {
        let pending = std::mem::take(&mut self.pct);
        for b in pending {
            self.decoded(b);
        }
        self.end_pair()
    }

    fn byte(&mut self, raw: u8) -> Option<Found> {
        if !self.pct.is_empty() {
            self.pct.push(raw);
            if !raw.is_ascii_hexdigit() {
                // Not an escape: every decoder keeps the text as it is.
                let pending = std::mem::take(&mut self.pct);
                let mut found = None;
                for (i, b) in pending.into_iter().enumerate() {
                    // The byte that broke the escape is read raw (it may be `&`).
                    if i == 0 {
                        self.decoded(b);
                    } else if let Some(f) = self.raw(b) {
                        found = Some(f);
                    }
                }
                return found;
            }
            if self.pct.len() == 3 {
                let hex = std::str::from_utf8(&self.pct[1..]).expect("hex digits");
                let b = u8::from_str_radix(hex, 16).expect("two hex digits");
                self.pct.clear();
                self.decoded(b);
            }
            return None;
        }
        self.raw(raw)
    }

    /// A byte as sent: separators, `+` and `%` mean something.
    fn raw(&mut self, raw: u8) -> Option<Found> {
        match raw {
            b'&' | b';' => self.end_pair(),
            b'=' if !self.in_value => {
                self.in_value = true;
                if !self.key_long && is_method_key(&self.key) {
                    self.value = Some(Some(Vec::new()));
                }
                None
            }
            b'%' => {
                self.pct.push(raw);
                None
            }
            b'+' => {
                self.decoded(b' ');
                None
            }
            other => {
                self.decoded(other);
                None
            }
        }
    }

    /// A byte of the key or value, decoded.
    fn decoded(&mut self, b: u8) {
        if self.in_value {
            if let Some(Some(v)) = &mut self.value {
                if v.len() < MAX_VALUE {
                    v.push(b);
                } else {
                    self.value = Some(None);
                }
            }
            return;
        }
        if self.key.is_empty() && b == b' ' {
            return;
        }
        if self.key.len() < MAX_KEY {
            self.key.push(key_byte(b));
        } else {
            self.key_long = true;
        }
    }

    fn end_pair(&mut self) -> Option<Found> {
        let found = match self.value.take() {
            Some(value) => Some(Found { value }),
            // A bare `_method` (no `=`) is an empty value to qs and PHP.
            None if !self.in_value && !self.key_long && is_method_key(&self.key) => Some(Found {
                value: Some(Vec::new()),
            }),
            None => None,
        };
        self.key.clear();
        self.key_long = false;
        self.in_value = false;
        found
    }
}

/// A streaming `multipart/form-data` reader that only looks for a part named `_method`.
struct Multipart {
    /// `\r\n--boundary`: what ends a part.
    delimiter: Vec<u8>,
    state: PartState,
    /// Bytes not yet decided on; never more than a part head or a delimiter's length.
    pending: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
enum PartState {
    /// Before the first delimiter (which may start the body without its `\r\n`).
    Preamble,
    /// After a delimiter, up to the end of its line (`--` closes the body).
    DelimiterLine,
    /// A part's headers, up to the blank line.
    Head,
    /// A part that is not `_method`: skipped to the next delimiter.
    Body,
    /// The `_method` part's content.
    Value,
    /// After the closing delimiter.
    Epilogue,
}

impl Multipart {
    fn new(boundary: &[u8]) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        Self {
            delimiter,
            // The body's first line may be the delimiter itself: read it as if a CRLF came
            // before.
            pending: b"\r\n".to_vec(),
            state: PartState::Preamble,
        }
    }

    /// Reads `chunk`; the `_method` parts it completes.
    fn feed(&mut self, chunk: &[u8]) -> Vec<Found> {
        let mut found = Vec::new();
        if self.state == PartState::Epilogue {
            return found;
        }
        self.pending.extend_from_slice(chunk);
        loop {
            match self.state {
                PartState::Preamble | PartState::Body | PartState::Value => {
                    match find(&self.pending, &self.delimiter) {
                        Some(at) => {
                            let value = (self.state == PartState::Value)
                                .then(|| self.pending[..at].to_vec());
                            self.pending.drain(..at + self.delimiter.len());
                            self.state = PartState::DelimiterLine;
                            if let Some(v) = value {
                                found.push(Found {
                                    value: (v.len() <= MAX_VALUE).then_some(v),
                                });
                            }
                        }
                        None => {
                            if self.state == PartState::Value
                                && self.pending.len() > MAX_VALUE + self.delimiter.len()
                            {
                                // Too long for a method: refused as such, and skipped.
                                found.push(Found { value: None });
                                self.state = PartState::Body;
                                continue;
                            }
                            // Keep what may begin a delimiter split across chunks.
                            let keep = self.delimiter.len() - 1;
                            if self.state != PartState::Value && self.pending.len() > keep {
                                self.pending.drain(..self.pending.len() - keep);
                            }
                            return found;
                        }
                    }
                }
                PartState::DelimiterLine => {
                    let Some(at) = find(&self.pending, b"\r\n") else {
                        if self.pending.starts_with(b"--") {
                            self.state = PartState::Epilogue;
                        }
                        return found;
                    };
                    self.state = if self.pending.starts_with(b"--") {
                        PartState::Epilogue
                    } else {
                        PartState::Head
                    };
                    self.pending.drain(..at + 2);
                    if self.state == PartState::Epilogue {
                        self.pending.clear();
                        return found;
                    }
                }
                PartState::Head => {
                    // A part without headers, or headers up to the blank line.
                    let (head_len, skip) = if self.pending.starts_with(b"\r\n") {
                        (0, 2)
                    } else if let Some(at) = find(&self.pending, b"\r\n\r\n") {
                        (at, 4)
                    } else {
                        if self.pending.len() > MAX_PART_HEAD {
                            // A part head longer than frameworks read: refused rather than
                            // passed unread.
                            found.push(Found { value: None });
                            self.state = PartState::Epilogue;
                            self.pending.clear();
                        }
                        return found;
                    };
                    let named = part_name(&self.pending[..head_len]);
                    self.pending.drain(..head_len + skip);
                    self.state = match named {
                        Some(name) if is_method_key(&name) => PartState::Value,
                        _ => PartState::Body,
                    };
                }
                PartState::Epilogue => return found,
            }
        }
    }
}

/// The `name` (or RFC 5987 `name*`) of a part's `Content-Disposition`, read as a key.
fn part_name(head: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(head);
    let disposition = text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(value)
    })?;
    let mut name = None;
    for param in disposition.split(';').skip(1) {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("name*") {
            // charset'language'percent-encoded
            let encoded = v.splitn(3, '\'').nth(2).unwrap_or(v);
            return Some(key_of(
                &percent_encoding::percent_decode_str(encoded).collect::<Vec<_>>(),
            ));
        }
        if k.eq_ignore_ascii_case("name") {
            let unquoted = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(q) => unescape(q),
                None => v.to_owned(),
            };
            name = Some(key_of(unquoted.as_bytes()));
        }
    }
    name
}

/// A decoded name read as a key: leading spaces dropped, mangled as PHP does.
fn key_of(name: &[u8]) -> Vec<u8> {
    let start = name.iter().position(|b| *b != b' ').unwrap_or(name.len());
    name[start..].iter().map(|b| key_byte(*b)).collect()
}

/// A quoted-string's content without its backslash escapes.
fn unescape(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(chunks: &[&str]) -> Vec<Option<String>> {
        let mut f = UrlEncoded::default();
        let mut out = Vec::new();
        for c in chunks {
            for &b in c.as_bytes() {
                if let Some(found) = f.byte(b) {
                    out.push(found.value.map(|v| String::from_utf8(v).unwrap()));
                }
            }
        }
        if let Some(found) = f.finish() {
            out.push(found.value.map(|v| String::from_utf8(v).unwrap()));
        }
        out
    }

    #[test]
    fn urlencoded_keys_are_read_as_the_most_lenient_framework_reads_them() {
        let one = |s: &str| url(&[s]);
        assert_eq!(one("_method=DELETE"), [Some("DELETE".into())]);
        assert_eq!(one("a=1&_METHOD=put&b=2"), [Some("put".into())]);
        assert_eq!(one("%5Fmethod=DELETE"), [Some("DELETE".into())]);
        assert_eq!(one("%5fMeThOd=DEL%45TE"), [Some("DELETE".into())]);
        assert_eq!(one("+_method=DELETE"), [Some("DELETE".into())]);
        assert_eq!(one(".method=DELETE"), [Some("DELETE".into())]);
        assert!(
            one(" method=DELETE").is_empty(),
            "a leading space is dropped, not mangled"
        );
        assert_eq!(one("_method[]=DELETE"), [Some("DELETE".into())]);
        assert_eq!(one("_method[0]=DELETE"), [Some("DELETE".into())]);
        assert_eq!(one("a=1;_method=PATCH"), [Some("PATCH".into())]);
        assert_eq!(one("_method"), [Some(String::new())]);
        assert_eq!(
            one("_method=PUT&_method=DELETE"),
            [Some("PUT".into()), Some("DELETE".into())]
        );
        assert_eq!(one(&format!("_method={}", "X".repeat(40))), [None]);
        for none in [
            "method=DELETE",
            "_methods=DELETE",
            "x_method=DELETE",
            "a=_method",
            "",
        ] {
            assert!(one(none).is_empty(), "{none}");
        }
        // An escape that is not one is kept as text.
        assert!(one("%zz_method=DELETE").is_empty());
        assert_eq!(one("a=%&_method=X"), [Some("X".into())]);
    }

    #[test]
    fn urlencoded_keys_split_across_chunks_are_found() {
        assert_eq!(
            url(&["a=1&_me", "thod=DEL", "ETE"]),
            [Some("DELETE".into())]
        );
        assert_eq!(url(&["%", "5", "Fmethod=PUT"]), [Some("PUT".into())]);
        assert_eq!(url(&["_method=PU", "T&x=1"]), [Some("PUT".into())]);
    }

    fn multipart(body: &str, chunk: usize) -> Option<Found> {
        let mut m = Multipart::new(b"XyZ");
        let mut found = Vec::new();
        for c in body.as_bytes().chunks(chunk.max(1)) {
            found.extend(m.feed(c));
        }
        found.into_iter().next()
    }

    #[test]
    fn multipart_parts_named_method_are_found_in_any_chunking() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n\
                    --XyZ--\r\n";
        for chunk in [1, 2, 3, 7, 16, 1000] {
            assert_eq!(
                multipart(body, chunk),
                Some(Found {
                    value: Some(b"DELETE".to_vec())
                }),
                "chunks of {chunk}"
            );
        }
        let spellings = [
            "name=_method",
            "name=\"_METHOD\"",
            "name=\"_meth\\od\"",
            "name*=utf-8''%5Fmethod",
            "filename=\"a\"; name=\"_method[]\"",
        ];
        for s in spellings {
            let body = format!(
                "preamble\r\n--XyZ\r\ncontent-disposition: form-data; {s}\r\n\r\nPUT\r\n--XyZ--"
            );
            assert!(multipart(&body, 5).is_some(), "{s}");
        }
        let other = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"_method\"\r\n\r\n\
                     _method=DELETE\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--XyZ--\r\n";
        assert_eq!(
            multipart(other, 4),
            None,
            "a file named _method is no field"
        );
        let long = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n{}\r\n--XyZ--",
            "A".repeat(100)
        );
        assert_eq!(multipart(&long, 9), Some(Found { value: None }));
        let huge_head = format!("--XyZ\r\nX-Pad: {}\r\n", "a".repeat(MAX_PART_HEAD + 10));
        assert_eq!(multipart(&huge_head, 512), Some(Found { value: None }));
    }
}
