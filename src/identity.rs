//! Identity headers: what the upstream may believe about the user.
//!
//! Every request, on every route, first loses any header a client could use to pose as a
//! user: the configured identity headers in every spelling (case, and `_` for `-`, which CGI,
//! WSGI and PHP backends read as the same name) and the gate's internal headers. Only then,
//! on authenticated requests, are the real values injected from the session.
//!
//! **A value reaches the upstream exactly, or not at all.** HTTP parsers trim a value's
//! leading and trailing whitespace (so `"alice "` would read as `alice`), many split on
//! commas (so `["reader,admin"]` would read as two roles), and read bytes past ASCII as
//! Latin-1. So a value is sent as a list of items joined by `,`: a string, number or boolean
//! is one item, an array its items. Each item's text (a string as it is; an integer as its
//! exact decimal; another number as its shortest round-trip decimal; `true`/`false`) is
//! percent-encoded (`%XX` of its UTF-8 bytes) wherever a parser would lose or split it: `%`
//! itself, `,`, control characters, bytes past ASCII, and a space that starts or ends it.
//! Everything else is sent as it is, so `alice`, `42` and `a,b` (from `["a", "b"]`) read as
//! before. An upstream splits on `,` and percent-decodes each item to get exactly the
//! session's texts. What cannot be sent that way is refused, logged and counted (no header):
//! objects, nested arrays, `[""]` (it would read as the empty list), and integers outside
//! JavaScript's safe range (which name no user either: [`crate::record::render_user`]).
//! `null` or a missing member sends nothing.
//!
//! The JSON type is the app's schema, not the header's: the number `42` and the string `"42"`
//! both read as `42`, as they name one user in the per-user index.

use http::{HeaderName, HeaderValue};
use pingora::http::{IntoCaseHeaderName, RequestHeader};
use serde_json::Value;

use crate::record::SessionRecord;

/// The `[identity]` settings.
#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// Injected header -> JSON pointer into the session.
    pub headers: Vec<(HeaderName, String)>,
    /// Extra header names removed from client requests, in canonical form.
    pub strip: Vec<String>,
    /// `[identity.assertion]`: its header is stripped from clients like the others.
    pub assertion: Option<crate::assertion::AssertionSettings>,
}

/// Headers that only the gate and its upstreams may speak: clients never get to send them.
const INTERNAL_HEADERS: &[&str] = crate::directives::HEADERS;

/// Forwarding headers (`X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded`, `X-Real-IP`): the
/// gate writes its own ([`crate::forwarded`]), so no client spelling may reach an upstream.
/// express with `trust proxy`, and many frameworks like it, believe them.
const FORWARDED_HOST_HEADERS: &[&str] = crate::forwarded::HEADERS;

/// Headers that make an upstream treat a request as another method than the one routed on;
/// removed unless the route has `method_override = true` ([`crate::method_override`]).
const METHOD_OVERRIDE_HEADERS: &[&str] = crate::method_override::HEADERS;

/// Lower case, `_` read as `-`: the name as a lenient backend would see it.
pub fn canonical_header_name(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

pub fn is_internal(name: &str) -> bool {
    let c = canonical_header_name(name);
    INTERNAL_HEADERS.contains(&c.as_str())
}

/// What stripping does with a header name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doom {
    /// Removed from every client request.
    Always,
    /// Removed unless the route has `method_override = true`.
    MethodOverride,
}

/// Names shorter than this are read into a buffer on the stack and filtered by length;
/// longer ones (rare, but a config may name one) take a slower path.
const SHORT_NAME: usize = 64;

#[derive(Debug)]
pub struct Identity {
    /// Canonical names removed from client requests, each with when. Built at start-up, so
    /// that the request path reads each header name once, with one lookup.
    strip: std::collections::HashMap<Box<[u8]>, Doom>,
    /// Bit `n` set: some stripped name is `n` bytes long (most header names are not, and
    /// need no lookup at all).
    lengths: u64,
    /// Some stripped name is `SHORT_NAME` bytes long or longer.
    long_names: bool,
    /// Injected header, its name as written upstream, JSON pointer into the session.
    inject: Vec<(HeaderName, bytes::Bytes, String)>,
}

impl Identity {
    pub fn new(settings: &IdentitySettings) -> Self {
        let mut always: Vec<String> = INTERNAL_HEADERS
            .iter()
            .chain(FORWARDED_HOST_HEADERS)
            .map(|s| s.to_string())
            .collect();
        always.extend(
            settings
                .headers
                .iter()
                .map(|(h, _)| canonical_header_name(h.as_str())),
        );
        always.extend(settings.strip.iter().cloned());
        // The assertion's header, and the default one whatever the config names, so that no
        // client copy ever reaches an upstream.
        always.push(crate::assertion::DEFAULT_HEADER.to_string());
        if let Some(a) = &settings.assertion {
            always.push(canonical_header_name(a.header.as_str()));
        }
        let mut strip: std::collections::HashMap<Box<[u8]>, Doom> =
            std::collections::HashMap::new();
        for name in METHOD_OVERRIDE_HEADERS {
            strip.insert(
                canonical_header_name(name).into_bytes().into(),
                Doom::MethodOverride,
            );
        }
        // A name that is both is always stripped.
        for name in always {
            strip.insert(
                canonical_header_name(&name).into_bytes().into(),
                Doom::Always,
            );
        }
        let mut lengths = 0u64;
        let mut long_names = false;
        for name in strip.keys() {
            if name.len() < SHORT_NAME {
                lengths |= 1 << name.len();
            } else {
                long_names = true;
            }
        }
        Self {
            strip,
            lengths,
            long_names,
            inject: settings
                .headers
                .iter()
                .map(|(name, pointer)| {
                    let spelled = name.clone().into_case_header_name();
                    let spelled = bytes::Bytes::copy_from_slice(spelled.as_slice());
                    (name.clone(), spelled, pointer.clone())
                })
                .collect(),
        }
    }

    /// What becomes of a header `name` as a client sent it: read as a lenient backend reads
    /// it (lower case, `_` for `-`).
    fn doom(&self, name: &[u8]) -> Option<Doom> {
        let lenient = |b: &u8| {
            if *b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            }
        };
        if name.len() >= SHORT_NAME {
            if !self.long_names {
                return None;
            }
            let canonical: Vec<u8> = name.iter().map(lenient).collect();
            return self.strip.get(canonical.as_slice()).copied();
        }
        if self.lengths & (1 << name.len()) == 0 {
            return None;
        }
        let mut buf = [0u8; SHORT_NAME];
        let canonical = &mut buf[..name.len()];
        for (out, b) in canonical.iter_mut().zip(name) {
            *out = lenient(b);
        }
        self.strip.get(&*canonical).copied()
    }

    /// Removes every spelling of every identity, internal and forwarded-host header, and of
    /// the method-override headers unless the route lets them through: one pass over the
    /// request's headers, and nothing allocated when there is nothing to remove.
    pub fn strip_request(&self, req: &mut RequestHeader, keep_method_override: bool) {
        // `Vec::new` allocates nothing until a header is found to remove.
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in req.headers.keys() {
            let remove = match self.doom(name.as_str().as_bytes()) {
                Some(Doom::Always) => true,
                Some(Doom::MethodOverride) => !keep_method_override,
                None => false,
            };
            // `keys` names each header once, however many values it has.
            if remove {
                doomed.push(name.clone());
            }
        }
        for name in doomed {
            req.remove_header(&name);
        }
    }

    /// Adds the configured headers from the session, encoded (see the module's comment).
    /// Returns how many values could not be represented and were not sent (each logged).
    pub fn inject(&self, session: &SessionRecord, req: &mut RequestHeader) -> usize {
        let mut refused = 0;
        for (name, spelled, pointer) in &self.inject {
            match value(name, pointer, Some(session)) {
                // The name as written on the wire, made at start-up: a reference count here.
                Ok(Some(value)) => {
                    let _ = req.insert_header(spelled.clone(), value);
                }
                Ok(None) => {}
                Err(()) => refused += 1,
            }
        }
        refused
    }

    /// Every configured header with the session's value for it, `None` where the session has
    /// none (or there is no session, or its value cannot be sent: those are logged and
    /// counted in the second part).
    pub fn values(
        &self,
        session: Option<&SessionRecord>,
    ) -> (Vec<(&HeaderName, Option<HeaderValue>)>, usize) {
        let mut refused = 0;
        let values = self
            .inject
            .iter()
            .map(|(name, _, pointer)| match value(name, pointer, session) {
                Ok(v) => (name, v),
                Err(()) => {
                    refused += 1;
                    (name, None)
                }
            })
            .collect();
        (values, refused)
    }
}

/// The session's value at `pointer` as the value of header `name`: `None` where it has none,
/// `Err` where it cannot be sent (logged).
fn value(
    name: &HeaderName,
    pointer: &str,
    session: Option<&SessionRecord>,
) -> Result<Option<HeaderValue>, ()> {
    let value = match session.and_then(|s| s.pointer(pointer)) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    match render(value) {
        // The rendered text becomes the value's bytes, uncopied.
        Ok(text) => Ok(Some(
            HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
                .expect("encoded as visible ASCII"),
        )),
        Err(why) => {
            tracing::warn!(header = %name, reason = why.0, "session value cannot be sent as an identity header; header not sent");
            Err(())
        }
    }
}

/// Why a session value has no header form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unrepresentable(pub &'static str);

/// A session value as header text: see the module's comment.
pub fn render(v: &Value) -> Result<String, Unrepresentable> {
    let mut out = String::new();
    match v {
        Value::Array(items) => {
            if let [Value::String(s)] = items.as_slice() {
                if s.is_empty() {
                    return Err(Unrepresentable("a list of one empty string"));
                }
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if matches!(item, Value::Array(_)) {
                    return Err(Unrepresentable("a nested array"));
                }
                encode_item(&item_text(item)?, &mut out);
            }
        }
        scalar => encode_item(&item_text(scalar)?, &mut out),
    }
    Ok(out)
}

/// One item's text, before encoding.
fn item_text(v: &Value) -> Result<std::borrow::Cow<'_, str>, Unrepresentable> {
    match v {
        Value::String(s) => Ok(s.as_str().into()),
        Value::Bool(b) => Ok(if *b { "true" } else { "false" }.into()),
        Value::Number(n) => match crate::record::safe_integer(n) {
            Some(i) => Ok(i.to_string().into()),
            None if n.as_f64().is_some_and(|f| f.fract() != 0.0) => Ok(n.to_string().into()),
            None => Err(Unrepresentable(
                "an integer outside JavaScript's safe range (2^53 - 1)",
            )),
        },
        Value::Null => Err(Unrepresentable("null in a list")),
        Value::Object(_) => Err(Unrepresentable("an object")),
        Value::Array(_) => Err(Unrepresentable("a nested array")),
    }
}

/// Appends `text`, percent-encoding what a header parser would lose or split.
fn encode_item(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        let plain = match b {
            b'%' | b',' => false,
            b' ' => i != 0 && i != last,
            0x21..=0x7e => true,
            _ => false,
        };
        if plain {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity() -> Identity {
        Identity::new(&IdentitySettings {
            headers: vec![
                (HeaderName::from_static("x-user"), "/user".into()),
                (HeaderName::from_static("x-user-roles"), "/roles".into()),
                (HeaderName::from_static("x-user-id"), "/id".into()),
            ],
            strip: vec!["x-forwarded-user".into()],
            assertion: None,
        })
    }

    #[test]
    fn strips_every_spelling() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in [
            ("X-User", "a"),
            ("x_user", "b"),
            ("X_USER_ROLES", "c"),
            ("x-forwarded_user", "d"),
            ("X-Session-Issue", "{}"),
            ("X-Forwarded-Host", "evil.example"),
            ("forwarded", "host=evil.example"),
            ("x_forwarded_host", "evil.example"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("X_Method_Override", "DELETE"),
            ("x_session_ASSERTION", "forged"),
            ("x-keep", "e"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        let mut kept = req.clone();
        identity().strip_request(&mut req, false);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
        identity().strip_request(&mut kept, true);
        let mut left: Vec<&str> = kept.headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "x-http-method",
                "x-http-method-override",
                "x-keep",
                "x_method_override"
            ]
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The strip as a scan: every header name compared with every stripped name under
        /// the lenient reading. The one-pass strip must remove exactly what this removes.
        fn scanned(identity: &Identity, req: &RequestHeader, keep: bool) -> Vec<String> {
            let canonical = |n: &str| canonical_header_name(n);
            let always: Vec<String> = identity
                .strip
                .iter()
                .filter(|(_, d)| **d == Doom::Always)
                .map(|(n, _)| String::from_utf8(n.to_vec()).unwrap())
                .collect();
            let mut left: Vec<String> = req
                .headers
                .keys()
                .map(|k| k.as_str().to_owned())
                .filter(|k| {
                    let c = canonical(k);
                    !(always.contains(&c)
                        || (!keep && METHOD_OVERRIDE_HEADERS.contains(&c.as_str())))
                })
                .collect();
            left.sort();
            left
        }

        /// Names that are stripped, in other spellings, and names that are not.
        fn name() -> impl Strategy<Value = String> {
            let base = prop::sample::select(vec![
                "x-user",
                "x-user-roles",
                "x-user-id",
                "x-forwarded-for",
                "x-forwarded-host",
                "forwarded",
                "x-real-ip",
                "x-http-method-override",
                "x-method-override",
                "x-session-assertion",
                "x-session-issue",
                "x-users",
                "x-use",
                "accept",
                "cookie",
                "x-request-id",
            ]);
            (base, prop::collection::vec(any::<bool>(), 24), any::<u8>()).prop_map(
                |(b, flips, tail)| {
                    let mut n: String = b
                        .chars()
                        .zip(flips.iter().cycle())
                        .map(|(c, &f)| match (c, f) {
                            ('-', true) => '_',
                            (c, true) => c.to_ascii_uppercase(),
                            (c, false) => c,
                        })
                        .collect();
                    if tail % 7 == 0 {
                        n.push('x');
                    }
                    n
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn the_one_pass_strip_removes_what_a_scan_of_every_name_removes(
                names in prop::collection::vec(name(), 0..12),
                keep in any::<bool>(),
            ) {
                let id = identity();
                let mut req = RequestHeader::build("GET", b"/", None).unwrap();
                for n in &names {
                    req.append_header(n.clone(), "v").unwrap();
                }
                let expected = scanned(&id, &req, keep);
                id.strip_request(&mut req, keep);
                let mut left: Vec<String> =
                    req.headers.keys().map(|k| k.as_str().to_owned()).collect();
                left.sort();
                prop_assert_eq!(left, expected);
            }
        }
    }

    #[test]
    fn names_of_any_length_are_stripped() {
        let long = format!("x-{}", "a".repeat(80));
        let id = Identity::new(&IdentitySettings {
            headers: vec![(HeaderName::from_static("x-user"), "/user".into())],
            strip: vec![long.clone()],
            assertion: None,
        });
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header(long.replace('-', "_").to_uppercase(), "forged")
            .unwrap();
        req.append_header(format!("x-{}", "b".repeat(80)), "kept")
            .unwrap();
        req.append_header("x-keep", "kept").unwrap();
        id.strip_request(&mut req, false);
        assert_eq!(req.headers.len(), 2, "{:?}", req.headers);
        assert!(req.headers.get(long.as_str()).is_none());
    }

    #[test]
    fn injects_encoded_values_and_counts_what_cannot_be_sent() {
        let session = SessionRecord::parse(
            &json!({"user": "alice\r\nX-Admin: 1", "roles": ["a", "b", 3], "id": {"x": 1}})
                .to_string(),
        )
        .unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(identity().inject(&session, &mut req), 1, "the object");
        assert_eq!(req.headers.get("x-user").unwrap(), "alice%0D%0AX-Admin: 1");
        assert_eq!(req.headers.get("x-user-roles").unwrap(), "a,b,3");
        assert!(req.headers.get("x-user-id").is_none());
        assert!(req.headers.get("x-admin").is_none());
    }

    #[test]
    fn renders_values_so_that_no_two_texts_read_alike() {
        let r = |v: Value| render(&v).ok();
        assert_eq!(r(json!("alice")).as_deref(), Some("alice"));
        assert_eq!(r(json!("alice ")).as_deref(), Some("alice%20"));
        assert_eq!(r(json!("  alice")).as_deref(), Some("%20 alice"));
        assert_eq!(r(json!("Alice Smith")).as_deref(), Some("Alice Smith"));
        assert_eq!(r(json!("100%")).as_deref(), Some("100%25"));
        assert_eq!(r(json!("José")).as_deref(), Some("Jos%C3%A9"));
        assert_eq!(r(json!("a\tb")).as_deref(), Some("a%09b"));
        assert_eq!(
            r(json!(["reader,admin"])).as_deref(),
            Some("reader%2Cadmin")
        );
        assert_eq!(
            r(json!(["reader", "admin"])).as_deref(),
            Some("reader,admin")
        );
        assert_eq!(r(json!([" a", "b "])).as_deref(), Some("%20a,b%20"));
        assert_eq!(r(json!(["a", ""])).as_deref(), Some("a,"));
        assert_eq!(r(json!([])).as_deref(), Some(""));
        assert_eq!(r(json!(true)).as_deref(), Some("true"));
        assert_eq!(r(json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(r(json!(42.0)).as_deref(), Some("42"));
        assert_eq!(
            r(json!(9007199254740991u64)).as_deref(),
            Some("9007199254740991")
        );
        assert_eq!(r(json!(1234567890123456789u64)), None);
        assert_eq!(r(json!(1e20)), None);
        assert_eq!(r(json!([""])), None, "would read as the empty list");
        assert_eq!(r(json!({"a": 1})), None);
        assert_eq!(r(json!([["x"]])), None);
        assert_eq!(r(json!([null])), None);
    }
}
