//! The session service: everything the gate does with sessions, shared by the proxy and the
//! admin API. Finding the credential (cookie or token header), loading and touching,
//! issuing, updating, regenerating and destroying, and listing and revoking a user's
//! sessions. Cookies and tokens are written here too, so both speak the same format.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header;
use pingora::http::RequestHeader;
use serde_json::{Map, Value};

use crate::config::runtime::SessionSettings;
use crate::cookie;
use crate::session::{epoch_ms, id_prefix, new_session_id, ClientInfo, ExpiryPolicy, Session};
use crate::signing::Signer;
use crate::store::{SessionStore, StoreError};

/// How the client presented its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    /// The token header, for clients without cookies.
    Token,
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
pub struct Active {
    pub sid: String,
    /// Shared with the local cache: cloning is a reference count.
    pub record: Arc<Session>,
    pub via: Via,
    /// The client should get a fresh cookie: the TTL was pushed on this request, or the
    /// cookie was signed with a retired secret.
    pub roll: bool,
}

/// A session as the admin API lists it: never the whole id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub id_prefix: String,
    /// Milliseconds since the epoch; absent for sessions other writers made.
    pub created: Option<u64>,
    /// The last request that pushed the TTL, worked out from the TTL left (rolling sessions).
    pub last_seen: Option<u64>,
    pub expires: Option<u64>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no session of this user starts with `{0}`")]
    NotFound(String),
    #[error("more than one session of this user starts with `{0}`; give more characters")]
    Ambiguous(String),
}

pub struct Sessions {
    pub settings: SessionSettings,
    signer: Signer,
    store: Arc<dyn SessionStore>,
    policy: ExpiryPolicy,
}

impl Sessions {
    pub fn new(settings: SessionSettings, store: Arc<dyn SessionStore>) -> Self {
        let policy = ExpiryPolicy {
            idle_timeout: settings.idle_timeout,
            absolute_timeout: settings.absolute_timeout,
            touch_interval: settings.touch_interval,
            user_field: settings.user_field.clone(),
        };
        Self {
            signer: Signer::new(&settings.secrets),
            store,
            policy,
            settings,
        }
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
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
        let t = self.settings.token.as_ref()?;
        let value = req.headers.get(&t.header)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case(&t.scheme) {
            return None;
        }
        let decoded = cookie::decode_value(token.trim())?;
        let v = self.signer.verify(&decoded)?;
        Some(Credential {
            sid: v.sid.to_owned(),
            via: Via::Token,
            current: v.current,
        })
    }

    /// Whether this request's token header carries a session token (rather than the
    /// upstream's own use of, say, `Authorization`).
    pub fn carries_token(&self, req: &RequestHeader) -> Option<&http::HeaderName> {
        let t = self.settings.token.as_ref()?;
        let value = req.headers.get(&t.header)?.to_str().ok()?;
        let (scheme, _) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case(&t.scheme).then_some(&t.header)
    }

    /// Loads the request's session, pushing its TTL forward in the same round trip when
    /// rolling or touching.
    pub async fn load(&self, req: &RequestHeader) -> Result<Option<Active>, StoreError> {
        let Some(c) = self.credential(req) else {
            return Ok(None);
        };
        let touch = (self.settings.rolling || self.settings.touch).then_some(&self.policy);
        let Some(loaded) = self.store.load(&c.sid, touch).await? else {
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
        }))
    }

    pub fn user_of(&self, record: &Session) -> Option<String> {
        record.user(&self.settings.user_field)
    }

    /// Creates a session holding `fields` (no fixation: the caller has dropped the old one).
    /// `max_age` asks for a persistent cookie of that life (remember me), capped by
    /// `remember_max`.
    pub async fn issue(
        &self,
        fields: Map<String, Value>,
        max_age: Option<Duration>,
        client: &ClientInfo,
        secure: bool,
    ) -> Result<(String, Session), StoreError> {
        let sid = new_session_id();
        let now = SystemTime::now();
        let max_age = max_age
            .map(|m| m.min(self.settings.remember_max))
            .or(self.settings.cookie.max_age);
        let mut record = Session::with_max_age(fields, &self.settings.cookie, max_age, secure, now);
        let client = if self.settings.record_client {
            client.clone()
        } else {
            ClientInfo::default()
        };
        record.set_meta(now, &client);
        let ttl = record
            .touch_ttl(&self.policy, now)
            .unwrap_or(self.policy.idle_timeout);
        self.store
            .save(
                &sid,
                &record.to_json(),
                ttl,
                self.user_of(&record).as_deref(),
            )
            .await?;
        tracing::debug!(sid = id_prefix(&sid), "session issued");
        Ok((sid, record))
    }

    pub async fn destroy(&self, sid: &str, record: Option<&Session>) -> Result<(), StoreError> {
        self.store
            .destroy(sid, record.and_then(|r| self.user_of(r)).as_deref())
            .await
    }

    /// Merges `patch` into the stored session atomically; concurrent updates both land.
    pub async fn update(
        &self,
        sid: &str,
        patch: Map<String, Value>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let json = self
            .store
            .update(sid, &|json| {
                let mut s = Session::parse(json).ok()?;
                s.merge(patch.clone());
                Some(s.to_json())
            })
            .await?;
        Ok(json.and_then(|j| Session::parse(&j).ok()).map(Arc::new))
    }

    /// A new id for the same session; the old id stops working at once.
    pub async fn regenerate(
        &self,
        sid: &str,
        record: &Session,
    ) -> Result<Option<String>, StoreError> {
        let new = new_session_id();
        let moved = self
            .store
            .rename(sid, &new, self.user_of(record).as_deref())
            .await?;
        Ok(moved.then_some(new))
    }

    /// "Log out everywhere": every session of the user, on every gate sharing the store.
    pub async fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        let ids = self.store.revoke_user(user).await?;
        tracing::info!(user_sessions = ids.len(), "revoked all sessions of a user");
        Ok(ids.len())
    }

    pub async fn list_user(&self, user: &str) -> Result<Vec<Listed>, StoreError> {
        let now = epoch_ms(SystemTime::now());
        let mut out: Vec<Listed> = self
            .store
            .user_sessions(user)
            .await?
            .into_iter()
            .map(|s| {
                let record = Session::parse(&s.json).ok();
                let expires = s.ttl.map(|t| now + t.as_millis() as u64);
                let idle = record
                    .as_ref()
                    .map(|r| r.ttl(self.policy.idle_timeout).as_millis() as u64);
                let last_seen = match (expires, idle, self.settings.rolling || self.settings.touch)
                {
                    (Some(e), Some(i), true) => Some(e.saturating_sub(i).min(now)),
                    _ => None,
                };
                let client = record.as_ref().map(Session::client).unwrap_or_default();
                Listed {
                    id_prefix: id_prefix(&s.sid).to_owned(),
                    created: record.as_ref().and_then(Session::created_ms),
                    last_seen,
                    expires,
                    user_agent: client.user_agent,
                    ip: client.ip,
                }
            })
            .collect();
        out.sort_by_key(|l| l.created);
        Ok(out)
    }

    /// Revokes the one session of `user` whose id starts with `prefix`.
    pub async fn revoke_one(&self, user: &str, prefix: &str) -> Result<(), RevokeError> {
        let sessions = self.store.user_sessions(user).await?;
        let mut matching = sessions
            .iter()
            .filter(|s| !prefix.is_empty() && s.sid.starts_with(prefix));
        let (Some(one), None) = (matching.next(), matching.next()) else {
            let n = sessions
                .iter()
                .filter(|s| !prefix.is_empty() && s.sid.starts_with(prefix))
                .count();
            return Err(if n == 0 {
                RevokeError::NotFound(prefix.into())
            } else {
                RevokeError::Ambiguous(prefix.into())
            });
        };
        self.store.destroy(&one.sid, Some(user)).await?;
        Ok(())
    }

    /// The TTL, and so the cookie life, a session has from now.
    pub fn remaining_life(&self, record: &Session) -> Option<Duration> {
        record.touch_ttl(&self.policy, SystemTime::now())
    }

    /// `Set-Cookie` for a session, with the attributes it was created with. A persistent
    /// cookie never outlives the absolute timeout.
    pub fn set_cookie(&self, sid: &str, record: &Session, secure: bool) -> String {
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
    pub fn expire_cookie(&self, record: Option<&Session>, secure: bool) -> String {
        let attrs = match record {
            Some(r) => r.cookie_attributes(&self.settings.cookie, secure),
            None => {
                let c = &self.settings.cookie;
                cookie::Attributes {
                    path: c.path.clone(),
                    domain: c.domain.clone(),
                    http_only: c.http_only,
                    secure,
                    same_site: c.same_site.map(str::to_owned),
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
