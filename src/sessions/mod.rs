//! The session service: everything the gate does with sessions, shared by the proxy and the
//! admin API. Here: finding the credential (cookie or token header), loading and touching,
//! issuing, updating, regenerating and destroying; cookies and tokens are written here too,
//! so both speak the same format. [`actions`] carries out an upstream's directives;
//! [`users`] lists and revokes a user's sessions.
//!
//! Longer than most modules: it is the one place that turns a request's credential into a
//! loaded session and back into a cookie, and splitting the load from the cookie it rolls
//! would scatter one flow.

mod actions;
mod users;

pub use self::actions::{ApplyError, Delivery, Grant};
pub use self::users::{Listed, RevokeError};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header;
use pingora::http::RequestHeader;
use serde_json::{Map, Value};

use crate::cookie::{self, CookiePolicy};
use crate::record::{epoch_ms, id_prefix, new_session_id, ClientInfo, ExpiryPolicy, SessionRecord};
use crate::signing::Signer;
use crate::store::{Saved, Store, StoreError, UserCap};
use http::HeaderName;

/// The `[session]` settings the service runs on.
#[derive(Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    /// Raw secret bytes; the first signs. Never printed (see the Debug impl).
    pub secrets: Vec<Vec<u8>>,
    pub prefix: String,
    pub rolling: bool,
    pub touch: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Option<Duration>,
    pub touch_interval: Duration,
    pub remember_max: Duration,
    pub user_field: String,
    pub index_prefix: String,
    pub record_client: bool,
    pub token: Option<TokenSettings>,
    pub logout_path: Option<String>,
    pub logout_redirect: Option<String>,
    pub return_param: String,
    pub cookie: CookiePolicy,
    /// `session.max_per_user` and its action: at most this many live sessions per user.
    pub max_per_user: Option<UserCap>,
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("cookie_name", &self.cookie_name)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("prefix", &self.prefix)
            .field("rolling", &self.rolling)
            .field("touch", &self.touch)
            .field("idle_timeout", &self.idle_timeout)
            .field("logout_path", &self.logout_path)
            .field("cookie", &self.cookie)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub header: HeaderName,
    /// Compared case-insensitively, followed by one space.
    pub scheme: String,
}

/// How the client presented its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    /// The token header, for clients without cookies.
    Token,
}

/// What a request's token header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHeader<'r> {
    Absent,
    /// Only credentials of other schemes (the upstream's own `Bearer`, say): untouched.
    Foreign,
    /// Exactly one credential, a session token (not yet verified).
    Session(&'r str),
    /// A session token beside other credentials: refused with 400.
    Mixed,
}

/// A session made at login.
#[derive(Debug)]
pub struct Issued {
    pub sid: String,
    pub record: SessionRecord,
    /// The user's sessions `max_per_user` ended to make room, oldest first.
    pub ended: Vec<String>,
}

/// A verified session id from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub sid: String,
    pub via: Via,
    /// Signed with the current secret (else a retired one: re-sign it).
    pub current: bool,
}

/// A verified, loaded session.
#[derive(Debug)]
pub struct Active {
    pub sid: String,
    /// Shared with the local cache: cloning is a reference count.
    pub record: Arc<SessionRecord>,
    pub via: Via,
    /// The client should get a fresh cookie: the TTL was pushed on this request, or the
    /// cookie was signed with a retired secret.
    pub roll: bool,
    /// Served by the local cache, without asking the store.
    pub cached: bool,
}

/// Where a request's session came from, or why it has none: the access log's and the
/// metrics' `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No session cookie or token at all.
    Missing,
    /// A session cookie or token that does not verify (or two different ones).
    Invalid,
    /// A verified id the store does not hold (expired, ended, or never stored).
    Expired,
    /// Served by the local cache.
    Cache,
    /// Read from the store.
    Store,
}

pub struct Sessions {
    pub settings: SessionSettings,
    signer: Signer,
    store: Arc<dyn Store>,
    policy: ExpiryPolicy,
    sweeps: Arc<users::Sweeps>,
}

/// The longest a session can live under these settings: the idle timeout, the longest
/// "remember me", the cookie's max-age and the absolute timeout, whichever is longest. A
/// revocation marker lives this long, so it outlives every session it may have to refuse.
pub fn max_life(s: &SessionSettings) -> Duration {
    [
        Some(s.idle_timeout),
        Some(s.remember_max),
        s.cookie.max_age,
        s.absolute_timeout,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(s.idle_timeout)
}

impl Sessions {
    pub fn new(settings: SessionSettings, store: Arc<dyn Store>) -> Self {
        let policy = ExpiryPolicy {
            idle_timeout: settings.idle_timeout,
            absolute_timeout: settings.absolute_timeout,
            touch_interval: settings.touch_interval,
            user_field: settings.user_field.clone(),
            push: settings.rolling || settings.touch,
            max_life: max_life(&settings),
        };
        Self {
            signer: Signer::new(&settings.secrets),
            store,
            policy,
            sweeps: Arc::default(),
            settings,
        }
    }

    /// The same service on another client of the same store (the admin API's own): the
    /// settings, and the log-out-everywhere sweeps under way, are shared.
    pub fn on_store(&self, store: Arc<dyn Store>) -> Sessions {
        Sessions {
            settings: self.settings.clone(),
            signer: self.signer.clone(),
            store,
            policy: self.policy.clone(),
            sweeps: self.sweeps.clone(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The verified session id the request carries: the token header first, then the cookie.
    /// Two different validly signed session cookies (one tossed in from a sibling domain)
    /// count as none.
    pub fn credential(&self, req: &RequestHeader) -> Option<Credential> {
        if let Some(c) = self.token_of(req) {
            return Some(c);
        }
        let mut found: Option<Credential> = None;
        for h in req.headers.get_all(header::COOKIE) {
            let Ok(h) = h.to_str() else { continue };
            for value in cookie::values(h, &self.settings.cookie_name) {
                let Some(decoded) = cookie::decode_value(value) else {
                    continue;
                };
                let Some(v) = self.signer.verify(&decoded) else {
                    continue;
                };
                match &found {
                    None => {
                        found = Some(Credential {
                            sid: v.sid.to_owned(),
                            via: Via::Cookie,
                            current: v.current,
                        })
                    }
                    Some(f) if f.sid == v.sid => {}
                    Some(_) => {
                        tracing::warn!("request carries two different signed session cookies; treating it as no session");
                        return None;
                    }
                }
            }
        }
        found
    }

    fn token_of(&self, req: &RequestHeader) -> Option<Credential> {
        let TokenHeader::Session(token) = self.token_header(req) else {
            return None;
        };
        let decoded = cookie::decode_value(token)?;
        let v = self.signer.verify(&decoded)?;
        Some(Credential {
            sid: v.sid.to_owned(),
            via: Via::Token,
            current: v.current,
        })
    }

    /// What the token header (say `Authorization`) of a request holds, over every value it
    /// has and every comma-separated credential in them: a session token is only ever read
    /// when it is the one credential there, so that no order of headers decides which one
    /// the gate reads and which one the upstream does.
    pub fn token_header<'r>(&self, req: &'r RequestHeader) -> TokenHeader<'r> {
        let Some(t) = self.settings.token.as_ref() else {
            return TokenHeader::Absent;
        };
        let mut credentials = 0;
        let mut token = None;
        for value in req.headers.get_all(&t.header) {
            let Ok(value) = value.to_str() else {
                credentials += 1;
                continue;
            };
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                credentials += 1;
                if let Some((scheme, rest)) = part.split_once(' ') {
                    if scheme.eq_ignore_ascii_case(&t.scheme) {
                        token = Some(rest.trim());
                    }
                }
            }
        }
        match (token, credentials) {
            (None, 0) => TokenHeader::Absent,
            (None, _) => TokenHeader::Foreign,
            (Some(token), 1) => TokenHeader::Session(token),
            (Some(_), _) => TokenHeader::Mixed,
        }
    }

    /// The token header, when the request carries a session token in it: the header is the
    /// gate's business then, and never reaches the upstream.
    pub fn carries_token(&self, req: &RequestHeader) -> Option<&http::HeaderName> {
        match self.token_header(req) {
            TokenHeader::Session(_) | TokenHeader::Mixed => {
                self.settings.token.as_ref().map(|t| &t.header)
            }
            TokenHeader::Absent | TokenHeader::Foreign => None,
        }
    }

    /// Loads the request's session, pushing its TTL forward in the same round trip when
    /// rolling or touching.
    pub async fn load(&self, req: &RequestHeader) -> Result<Option<Active>, StoreError> {
        match self.credential(req) {
            Some(c) => self.load_credential(c).await,
            None => Ok(None),
        }
    }

    /// [`load`](Self::load), saying where the session came from or why there is none.
    pub async fn lookup(
        &self,
        req: &RequestHeader,
    ) -> Result<(Option<Active>, Lookup), StoreError> {
        let Some(c) = self.credential(req) else {
            let why = if self.presents_credential(req) {
                Lookup::Invalid
            } else {
                Lookup::Missing
            };
            return Ok((None, why));
        };
        Ok(match self.load_credential(c).await? {
            Some(a) if a.cached => (Some(a), Lookup::Cache),
            Some(a) => (Some(a), Lookup::Store),
            None => (None, Lookup::Expired),
        })
    }

    /// Whether the request carries a session cookie or token at all, valid or not.
    fn presents_credential(&self, req: &RequestHeader) -> bool {
        let name = &self.settings.cookie_name;
        self.carries_token(req).is_some()
            || req.headers.get_all(header::COOKIE).iter().any(|h| {
                h.to_str()
                    .is_ok_and(|h| cookie::values(h, name).next().is_some())
            })
    }

    /// Whether the store answers, within its timeout: the readiness probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    async fn load_credential(&self, c: Credential) -> Result<Option<Active>, StoreError> {
        let Some(loaded) = self.store.load(&c.sid, Some(&self.policy)).await? else {
            return Ok(None);
        };
        let record = loaded.record;
        // The store already enforces the absolute timeout; this covers a record loaded without
        // a touch.
        if record.touch_ttl(&self.policy, SystemTime::now()).is_none() {
            self.store
                .destroy(&c.sid, self.user_of(&record).as_deref())
                .await?;
            return Ok(None);
        }
        Ok(Some(Active {
            sid: c.sid,
            record,
            via: c.via,
            roll: loaded.touched || !c.current,
            cached: loaded.cached,
        }))
    }

    pub fn user_of(&self, record: &SessionRecord) -> Option<String> {
        record.user(&self.settings.user_field)
    }

    /// Creates a session holding `fields` (no fixation: the caller has dropped the old one).
    /// `max_age` asks for a persistent cookie of that life (remember me), capped by
    /// `remember_max`. Under `max_per_user`, the user's oldest sessions end to make room, or
    /// the login is refused ([`ApplyError::TooManySessions`]).
    pub async fn issue(
        &self,
        fields: Map<String, Value>,
        max_age: Option<Duration>,
        client: &ClientInfo,
        secure: bool,
    ) -> Result<Issued, ApplyError> {
        let sid = new_session_id();
        let now = SystemTime::now();
        let max_age = max_age
            .map(|m| m.min(self.settings.remember_max))
            .or(self.settings.cookie.max_age);
        let mut record =
            SessionRecord::with_max_age(fields, &self.settings.cookie, max_age, secure, now);
        let client = if self.settings.record_client {
            client.clone()
        } else {
            ClientInfo::default()
        };
        record.set_meta(now, &client);
        let ttl = record
            .touch_ttl(&self.policy, now)
            .unwrap_or(self.policy.idle_timeout);
        let saved = self
            .store
            .save(
                &sid,
                &record.to_json(),
                ttl,
                self.user_of(&record).as_deref(),
                self.settings.max_per_user,
            )
            .await?;
        let Saved::Stored { ended } = saved else {
            tracing::info!("login refused: the user holds session.max_per_user sessions");
            return Err(ApplyError::TooManySessions);
        };
        for old in &ended {
            tracing::info!(
                sid = id_prefix(old),
                "session ended: its user logged in past session.max_per_user"
            );
        }
        tracing::debug!(sid = id_prefix(&sid), "session issued");
        Ok(Issued { sid, record, ended })
    }

    pub async fn destroy(
        &self,
        sid: &str,
        record: Option<&SessionRecord>,
    ) -> Result<(), StoreError> {
        self.store
            .destroy(sid, record.and_then(|r| self.user_of(r)).as_deref())
            .await
    }

    /// Merges `patch` into the stored session atomically; concurrent updates both land. An
    /// update that changes the session's user moves it to the new user's index, so that log
    /// out everywhere reaches it.
    pub async fn update(
        &self,
        sid: &str,
        patch: Map<String, Value>,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let names_user = patch.contains_key(&self.settings.user_field);
        let before = std::sync::Mutex::new(None);
        let json = self
            .store
            .update(sid, &|json| {
                let mut s = SessionRecord::parse(json).ok()?;
                *before.lock().unwrap_or_else(|p| p.into_inner()) = self.user_of(&s);
                s.merge(patch.clone());
                Some(s.to_json())
            })
            .await?;
        let updated = json
            .and_then(|j| SessionRecord::parse(&j).ok())
            .map(Arc::new);
        if let (true, Some(record)) = (names_user, &updated) {
            let old = before.into_inner().unwrap_or_else(|p| p.into_inner());
            let new = self.user_of(record);
            if old != new {
                let born = record
                    .born_ms()
                    .unwrap_or_else(|| epoch_ms(SystemTime::now()));
                let ttl = self.remaining_life(record).unwrap_or(self.policy.max_life);
                self.store
                    .reindex(sid, old.as_deref(), new.as_deref(), born, ttl)
                    .await?;
            }
        }
        Ok(updated)
    }

    /// A new id for the same session; the old id stops working at once.
    pub async fn regenerate(
        &self,
        sid: &str,
        record: &SessionRecord,
    ) -> Result<Option<String>, StoreError> {
        let new = new_session_id();
        let moved = self
            .store
            .rename(sid, &new, self.user_of(record).as_deref())
            .await?;
        Ok(moved.then_some(new))
    }

    /// The TTL, and so the cookie life, a session has from now.
    pub fn remaining_life(&self, record: &SessionRecord) -> Option<Duration> {
        record.touch_ttl(&self.policy, SystemTime::now())
    }

    /// `Set-Cookie` for a session, with the attributes it was created with. A persistent
    /// cookie never outlives the absolute timeout.
    pub fn set_cookie(&self, sid: &str, record: &SessionRecord, secure: bool) -> String {
        let mut attrs = record.cookie_attributes(&self.settings.cookie, secure);
        if let (Some(max_age), Some(left)) = (attrs.max_age, self.remaining_life(record)) {
            attrs.max_age = Some(max_age.min(left));
        }
        cookie::set_cookie(
            &self.settings.cookie_name,
            &self.token(sid),
            &attrs,
            SystemTime::now(),
        )
    }

    /// `Set-Cookie` that ends the cookie, with the path and domain it was set with (those of
    /// the session's record when known) so that the browser really drops it.
    pub fn expire_cookie(&self, record: Option<&SessionRecord>, secure: bool) -> String {
        let attrs = match record {
            Some(r) => r.cookie_attributes(&self.settings.cookie, secure),
            None => {
                let c = &self.settings.cookie;
                cookie::Attributes {
                    path: c.path.clone(),
                    domain: c.domain.clone(),
                    http_only: c.http_only,
                    secure,
                    same_site: c.same_site,
                    max_age: None,
                }
            }
        };
        cookie::expire_cookie(&self.settings.cookie_name, &attrs)
    }

    /// The signed, encoded session token: the cookie value, also handed to header clients.
    pub fn token(&self, sid: &str) -> String {
        cookie::encode_value(&self.signer.sign(sid))
    }
}
