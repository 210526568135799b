//! A session record in connect-redis's layout: one JSON object whose `cookie` member (first)
//! describes the cookie, followed by the application's fields. Also the expiry arithmetic
//! that express-session and connect-redis share.
//!
//! About half of the file is its tests: the layout must match express byte for byte.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::TryRngCore;
use serde_json::{Map, Value};

use crate::cookie::{Attributes, CookiePolicy, SameSite};

/// A fresh session id: 24 bytes from the operating system's CSPRNG (192 bits) as 32 URL-safe
/// base64 characters, the same shape as express-session's `uid-safe` ids.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The session member where the gate keeps what it knows about a session (creation time,
/// client). express apps carry it along untouched like any field they do not read.
pub const META_FIELD: &str = "sessiongate";

/// What the gate records about the client at login.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The expiry rules one gate applies to every session it loads.
#[derive(Debug, Clone)]
pub struct ExpiryPolicy {
    /// TTL of sessions without a cookie max-age.
    pub idle_timeout: Duration,
    pub absolute_timeout: Option<Duration>,
    /// Touch only when the TTL has fallen by more than this.
    pub touch_interval: Duration,
    /// Top-level field naming the user, for the per-user index.
    pub user_field: String,
    /// Push the TTL forward on loads (rolling or touching); without it a load only reads
    /// (and still applies revocations).
    pub push: bool,
    /// The longest any session can live: what a user's index and revocation marker are kept
    /// for when nothing shorter is known.
    pub max_life: Duration,
}

impl ExpiryPolicy {
    /// The touch interval for a session whose TTL is `ttl`: never more than half of it, so
    /// that an active session is always pushed before it runs out, however short its idle
    /// timeout against the configured interval.
    pub fn interval_for(&self, ttl: Duration) -> Duration {
        self.touch_interval.min(ttl / 2)
    }
}

/// The largest integer JavaScript (and Redis's Lua, whose numbers are doubles) holds exactly:
/// `Number.MAX_SAFE_INTEGER`, 2^53 - 1.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A user id as the per-user index and revocation marker name it, the same on every writer:
/// a non-empty string as it is; an integral number within JavaScript's safe range as its
/// exact decimal. A number beyond it (`1234567890123456789`) names no user: JavaScript and
/// Lua read it as a rounded double, so it would name one user to the request path and
/// another, shared with a neighbouring id, to the index, the revocation and the sweep. Such
/// ids must be stored as strings. Fractional and non-finite numbers, empty strings and other
/// types name no user either.
pub fn render_user(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => safe_integer(n).map(|i| i.to_string()),
        _ => None,
    }
}

/// A JSON number that is an integer JavaScript holds exactly.
pub fn safe_integer(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() <= MAX_SAFE_INTEGER as u64).then_some(i);
    }
    if n.as_u64().is_some() {
        return None;
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER).then_some(f as i64)
}

/// The first characters of a session id: enough to correlate log lines, never enough to use.
pub fn id_prefix(sid: &str) -> &str {
    sid.get(..6).unwrap_or("")
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the stored session is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("the stored session is not a JSON object")]
    NotObject,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    data: Map<String, Value>,
}

impl SessionRecord {
    pub fn parse(json: &str) -> Result<Self, SessionError> {
        match serde_json::from_str(json)? {
            Value::Object(data) => Ok(Self { data }),
            _ => Err(SessionError::NotObject),
        }
    }

    /// A new session holding `fields`, with the cookie described first as express-session
    /// does. A `cookie` member in `fields` is ignored: the gate owns the cookie.
    pub fn new(
        fields: Map<String, Value>,
        cookie: &CookiePolicy,
        secure: bool,
        now: SystemTime,
    ) -> Self {
        Self::with_max_age(fields, cookie, cookie.max_age, secure, now)
    }

    /// A new session whose cookie lives `max_age` (a browser-session cookie when `None`).
    pub fn with_max_age(
        fields: Map<String, Value>,
        cookie: &CookiePolicy,
        max_age: Option<Duration>,
        secure: bool,
        now: SystemTime,
    ) -> Self {
        let mut c = Map::new();
        match max_age {
            Some(max_age) => {
                c.insert(
                    "originalMaxAge".into(),
                    Value::from(max_age.as_millis() as u64),
                );
                c.insert(
                    "expires".into(),
                    Value::from(humantime::format_rfc3339_millis(now + max_age).to_string()),
                );
            }
            None => {
                c.insert("originalMaxAge".into(), Value::Null);
                c.insert("expires".into(), Value::Null);
            }
        }
        if secure {
            c.insert("secure".into(), Value::Bool(true));
        }
        c.insert("httpOnly".into(), Value::Bool(cookie.http_only));
        if let Some(d) = &cookie.domain {
            c.insert("domain".into(), Value::from(d.as_str()));
        }
        c.insert("path".into(), Value::from(cookie.path.as_str()));
        if let Some(s) = cookie.same_site {
            c.insert(
                "sameSite".into(),
                Value::from(s.as_str().to_ascii_lowercase()),
            );
        }
        let mut data = Map::with_capacity(fields.len() + 1);
        data.insert("cookie".into(), Value::Object(c));
        data.extend(fields.into_iter().filter(|(k, _)| k != "cookie"));
        Self { data }
    }

    /// Records when and for whom the session was made.
    pub fn set_meta(&mut self, now: SystemTime, client: &ClientInfo) {
        let mut m = Map::new();
        m.insert("created".into(), Value::from(epoch_ms(now)));
        if let Some(ua) = &client.user_agent {
            m.insert(
                "ua".into(),
                Value::from(ua.chars().take(256).collect::<String>()),
            );
        }
        if let Some(ip) = &client.ip {
            m.insert("ip".into(), Value::from(ip.as_str()));
        }
        self.data.insert(META_FIELD.into(), Value::Object(m));
    }

    fn meta(&self, key: &str) -> Option<&Value> {
        self.data.get(META_FIELD)?.get(key)
    }

    /// Creation time in ms since the epoch; `None` for sessions other writers made.
    pub fn created_ms(&self) -> Option<u64> {
        self.meta("created")?.as_f64().map(|v| v as u64)
    }

    pub fn client(&self) -> ClientInfo {
        ClientInfo {
            user_agent: self.meta("ua").and_then(Value::as_str).map(str::to_owned),
            ip: self.meta("ip").and_then(Value::as_str).map(str::to_owned),
        }
    }

    /// The user this session belongs to: a non-empty string, or an integral number, in
    /// `field`, rendered as [`render_user`] does (the same text the Lua scripts make).
    pub fn user(&self, field: &str) -> Option<String> {
        render_user(self.data.get(field)?)
    }

    /// When this session began as far as the gate knows: its creation time when a gate made
    /// it, else the first time a gate saw it (`sessiongate.seen`, stamped by the load
    /// script). `None` for a session no gate has seen yet.
    pub fn born_ms(&self) -> Option<u64> {
        self.created_ms()
            .or_else(|| self.meta("seen")?.as_f64().map(|v| v as u64))
    }

    /// Merges top-level fields from an upstream's update; the cookie and the gate's own
    /// record are not the upstream's to change. A `null` removes the field.
    pub fn merge(&mut self, patch: Map<String, Value>) {
        for (k, v) in patch {
            if k == "cookie" || k == META_FIELD {
                continue;
            }
            if v.is_null() {
                self.data.remove(&k);
            } else {
                self.data.insert(k, v);
            }
        }
    }

    /// The TTL a touch sets now: the idle timeout, cut short by the absolute deadline.
    /// `None` when the session is past its absolute timeout. Sessions without a creation
    /// time (made by other writers) only have the idle timeout.
    pub fn touch_ttl(&self, policy: &ExpiryPolicy, now: SystemTime) -> Option<Duration> {
        let idle = self.ttl(policy.idle_timeout);
        match (policy.absolute_timeout, self.created_ms()) {
            (Some(abs), Some(created)) => {
                let deadline = created + abs.as_millis() as u64;
                let left = deadline
                    .checked_sub(epoch_ms(now))
                    .filter(|ms| *ms >= 1000)?;
                Some(idle.min(Duration::from_millis(left)))
            }
            _ => Some(idle),
        }
    }

    /// What this record holds on the heap, in bytes, as the allocator hands them out: see
    /// [`heap_bytes`]. Besides [`std::mem::size_of::<SessionRecord>`], which its owner counts.
    pub fn heap_bytes(&self) -> usize {
        map_bytes(&self.data)
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.data.clone()).to_string()
    }

    pub fn as_value(&self) -> &Map<String, Value> {
        &self.data
    }

    /// A member by JSON pointer (`/user`, `/profile/email`).
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, tail) = rest
            .split_once('/')
            .map_or((rest, None), |(a, b)| (a, Some(b)));
        // Escapes are rare: a plain member name is looked up as it is, with no copy.
        let v = if first.contains('~') {
            self.data
                .get(&first.replace("~1", "/").replace("~0", "~"))?
        } else {
            self.data.get(first)?
        };
        match tail {
            None => Some(v),
            Some(t) => v.pointer(&format!("/{t}")),
        }
    }

    fn cookie(&self) -> Option<&Map<String, Value>> {
        self.data.get("cookie")?.as_object()
    }

    /// `cookie.originalMaxAge` in milliseconds; `None` for a browser-session cookie.
    pub fn original_max_age(&self) -> Option<u64> {
        self.cookie()?
            .get("originalMaxAge")?
            .as_f64()
            .filter(|m| *m > 0.0)
            .map(|m| m as u64)
    }

    /// The store TTL, as connect-redis computes it: `ceil(originalMaxAge / 1000)` seconds, or
    /// the store's default for browser-session cookies.
    pub fn ttl(&self, default_ttl: Duration) -> Duration {
        match self.original_max_age() {
            Some(ms) => Duration::from_secs(ms.div_ceil(1000)),
            None => default_ttl,
        }
    }

    /// The cookie attributes this session was created with, so that an express app's cookie
    /// settings are kept when the gate re-sends its cookie: what the record's `cookie` leaves
    /// out was not set (as express-session reads it). Only a record without a `cookie` object
    /// takes the gate's settings.
    pub fn cookie_attributes(&self, defaults: &CookiePolicy, secure: bool) -> Attributes {
        let Some(c) = self.cookie() else {
            return Attributes {
                path: defaults.path.clone(),
                domain: defaults.domain.clone(),
                http_only: defaults.http_only,
                secure,
                same_site: defaults.same_site,
                max_age: None,
            };
        };
        let c = Some(c);
        let text = |k: &str| {
            c.and_then(|c| c.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let flag = |k: &str| c.and_then(|c| c.get(k)).and_then(Value::as_bool);
        let same_site = c
            .and_then(|c| c.get("sameSite"))
            .and_then(SameSite::from_record);
        Attributes {
            path: text("path").unwrap_or_else(|| "/".to_string()),
            domain: text("domain"),
            // express-session's default when a record does not say.
            http_only: flag("httpOnly").unwrap_or(true),
            secure: flag("secure").unwrap_or(false) || secure,
            same_site,
            // Whole seconds, rounded up as for the TTL ([`Self::ttl`]): express-session
            // computes `originalMaxAge` as `expires - Date.now()`, so a two-hour cookie is
            // stored as 7199999 ms whenever the clock ticks between its two reads.
            max_age: self
                .original_max_age()
                .map(|ms| Duration::from_secs(ms.div_ceil(1000).max(1))),
        }
    }
}

/// A typical login session, for sizing bounds (`sessiongate check`, the memory tests and
/// benches): the cookie as `cookie` describes it, a 16-character user id in `user_field`, the
/// gate's record of a 100-character user agent and an IPv4 address, and `app_bytes` (about)
/// of application data as fields of 48-character strings (`"fNNN":"…"`, 56 bytes of JSON
/// each).
pub fn sample_session(cookie: &CookiePolicy, user_field: &str, app_bytes: usize) -> SessionRecord {
    let mut fields = Map::new();
    fields.insert(user_field.into(), Value::from("user-0123456789a"));
    for i in 0..app_bytes.div_ceil(56) {
        fields.insert(format!("f{i:03}"), Value::from(format!("{i:0>48}")));
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let mut r = SessionRecord::new(fields, cookie, false, now);
    r.set_meta(
        now,
        &ClientInfo {
            user_agent: Some(format!("Mozilla/5.0 (X11; Linux x86_64) {:0>67}", 1)),
            ip: Some("203.0.113.7".into()),
        },
    );
    r
}

/// What an allocation of `n` bytes really takes: mimalloc (the gate's allocator) serves it
/// from the smallest size class that fits, multiples of 8 bytes up to 64, then four classes
/// per power of two. (glibc's malloc rounds to 16 plus 8 of header: within a few percent.)
pub fn alloc_bytes(n: usize) -> usize {
    match n {
        0 => 0,
        1..=64 => n.next_multiple_of(8),
        _ => {
            let b = usize::BITS - 1 - (n - 1).leading_zeros();
            n.next_multiple_of(1 << (b - 2))
        }
    }
}

/// The heap behind a parsed JSON value, counted from its structure (serde_json keeps no
/// capacities to ask): a string is one allocation of its length (parsed strings are exact);
/// an array is a `Vec<Value>` grown by doubling from 4; an object (an `IndexMap` with
/// `preserve_order`) is a hashbrown table of `usize` indices (power-of-two buckets at most
/// 7/8 full, a control byte each plus a group of 16) and a `Vec` of `(hash, key, value)`
/// entries grown to the table's capacity. The counting-allocator test in
/// `tests/it/memory_bound.rs` checks this against what the allocator really hands out.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => alloc_bytes(s.len()),
        Value::Array(a) => {
            let cap = if a.is_empty() {
                0
            } else {
                a.len().next_power_of_two().max(4)
            };
            alloc_bytes(cap * std::mem::size_of::<Value>())
                + a.iter().map(value_bytes).sum::<usize>()
        }
        Value::Object(m) => map_bytes(m),
        _ => 0,
    }
}

fn map_bytes(m: &Map<String, Value>) -> usize {
    if m.is_empty() {
        return 0;
    }
    // hashbrown: 4 buckets hold 3, 8 hold 7, then 7/8 of a power of two.
    let buckets = if m.len() < 4 {
        4
    } else if m.len() < 8 {
        8
    } else {
        (m.len() * 8).div_ceil(7).next_power_of_two()
    };
    let capacity = if buckets < 8 {
        buckets - 1
    } else {
        buckets / 8 * 7
    };
    let table = alloc_bytes(buckets * std::mem::size_of::<usize>() + buckets + 16);
    let entry =
        std::mem::size_of::<usize>() + std::mem::size_of::<String>() + std::mem::size_of::<Value>();
    let entries = alloc_bytes(capacity * entry);
    table
        + entries
        + m.iter()
            .map(|(k, v)| alloc_bytes(k.len()) + value_bytes(v))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookie::Secure;

    fn settings(max_age: Option<Duration>) -> CookiePolicy {
        CookiePolicy {
            path: "/".into(),
            domain: None,
            http_only: true,
            secure: Secure::Auto,
            same_site: Some(SameSite::Lax),
            max_age,
        }
    }

    #[test]
    fn ids_are_32_url_safe_characters_and_differ() {
        let a = new_session_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, new_session_id());
    }

    #[test]
    fn new_sessions_use_the_connect_redis_layout() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_976_906_976);
        let fields = serde_json::json!({"user": "alice", "cookie": "ignored"});
        let s = SessionRecord::new(
            fields.as_object().unwrap().clone(),
            &settings(Some(Duration::from_secs(1800))),
            false,
            now,
        );
        assert_eq!(
            s.to_json(),
            r#"{"cookie":{"originalMaxAge":1800000,"expires":"2026-11-29T18:58:26.976Z","httpOnly":true,"path":"/","sameSite":"lax"},"user":"alice"}"#
        );
        assert_eq!(s.ttl(Duration::from_secs(86400)), Duration::from_secs(1800));
        let browser = SessionRecord::new(Map::new(), &settings(None), true, now);
        assert_eq!(
            browser.to_json(),
            r#"{"cookie":{"originalMaxAge":null,"expires":null,"secure":true,"httpOnly":true,"path":"/","sameSite":"lax"}}"#
        );
        assert_eq!(
            browser.ttl(Duration::from_secs(86400)),
            Duration::from_secs(86400)
        );
    }

    #[test]
    fn reads_an_express_session() {
        let s = SessionRecord::parse(r#"{"cookie":{"originalMaxAge":1500,"expires":"2026-11-23T18:28:26.976Z","httpOnly":false,"path":"/app","sameSite":"strict"},"user":"bob","profile":{"a/b":1}}"#).unwrap();
        assert_eq!(s.ttl(Duration::from_secs(9)), Duration::from_secs(2));
        assert_eq!(s.pointer("/user"), Some(&Value::from("bob")));
        assert_eq!(s.pointer("/profile/a~1b"), Some(&Value::from(1)));
        let escaped = SessionRecord::parse(r#"{"a/b":1,"x~y":2,"a~1b":3}"#).unwrap();
        assert_eq!(escaped.pointer("/a~1b"), Some(&Value::from(1)));
        assert_eq!(escaped.pointer("/x~0y"), Some(&Value::from(2)));
        assert_eq!(escaped.pointer("/a~01b"), Some(&Value::from(3)));
        assert_eq!(escaped.pointer("/a/b"), None);
        let a = s.cookie_attributes(&settings(None), false);
        assert_eq!(
            (a.path.as_str(), a.http_only, a.same_site),
            ("/app", false, Some(SameSite::Strict))
        );
        assert_eq!(
            a.max_age,
            Some(Duration::from_secs(2)),
            "the cookie lives as long as the TTL"
        );
        // express-session's two-hour cookie, when the clock ticked while it was made.
        let ticked = SessionRecord::parse(r#"{"cookie":{"originalMaxAge":7199999}}"#).unwrap();
        assert_eq!(
            ticked.cookie_attributes(&settings(None), false).max_age,
            Some(Duration::from_secs(7200))
        );
        let no_same_site = SessionRecord::parse(
            r#"{"cookie":{"originalMaxAge":null,"httpOnly":true,"path":"/"}}"#,
        )
        .unwrap();
        assert_eq!(
            no_same_site
                .cookie_attributes(&settings(None), false)
                .same_site,
            None,
            "not set means not set"
        );
        let no_cookie = SessionRecord::parse(r#"{"user":"x"}"#).unwrap();
        assert_eq!(
            no_cookie
                .cookie_attributes(&settings(None), false)
                .same_site,
            Some(SameSite::Lax)
        );
        assert!(SessionRecord::parse("[1]").is_err());
        assert!(SessionRecord::parse("{broken").is_err());
    }

    #[test]
    fn user_ids_are_strings_or_integers_javascript_holds_exactly() {
        let user = |j: &str| SessionRecord::parse(j).unwrap().user("user");
        assert_eq!(user(r#"{"user":"alice"}"#).as_deref(), Some("alice"));
        assert_eq!(user(r#"{"user":42}"#).as_deref(), Some("42"));
        assert_eq!(user(r#"{"user":-42}"#).as_deref(), Some("-42"));
        assert_eq!(user(r#"{"user":42.0}"#).as_deref(), Some("42"));
        assert_eq!(user(r#"{"user":4.2e1}"#).as_deref(), Some("42"));
        assert_eq!(
            user(r#"{"user":9007199254740991}"#).as_deref(),
            Some("9007199254740991")
        );
        // Past 2^53 - 1 two ids share one double: neither names a user.
        for unsafe_id in [
            "9007199254740992",
            "9007199254740993",
            "-9007199254740992",
            "1234567890123456789",
            "1234567890123456790",
            "18446744073709551615",
            "1e20",
            "9007199254740992.0",
        ] {
            assert_eq!(
                user(&format!(r#"{{"user":{unsafe_id}}}"#)),
                None,
                "{unsafe_id}"
            );
        }
        assert_eq!(
            user(r#"{"user":"1234567890123456789"}"#).as_deref(),
            Some("1234567890123456789"),
            "as a string it is exact"
        );
        assert_eq!(user(r#"{"user":1.5}"#), None);
        assert_eq!(user(r#"{"user":""}"#), None);
        assert_eq!(user(r#"{"user":true}"#), None);
    }

    #[test]
    fn a_session_is_born_when_created_or_first_seen() {
        let born = |j: &str| SessionRecord::parse(j).unwrap().born_ms();
        assert_eq!(born(r#"{"sessiongate":{"created":5,"seen":9}}"#), Some(5));
        assert_eq!(born(r#"{"sessiongate":{"seen":9}}"#), Some(9));
        assert_eq!(born(r#"{"user":"x"}"#), None);
    }
}
