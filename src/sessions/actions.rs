//! What an upstream's [`Action`] does to the session the request carried, decided in one
//! place: the proxy hands over the action and the current session and gets back what the
//! client receives ([`Grant`]).

use super::{Active, Credential, Sessions};
use crate::directives::{Action, Scope};
use crate::record::{ClientInfo, SessionRecord};
use crate::store::StoreError;
use pingora::http::RequestHeader;

/// The session a request carried into an upstream's action.
pub enum Current {
    /// Loaded (and touched) on a protected route.
    Loaded(Active),
    /// Only verified, on a public route: loaded if the action needs it.
    Verified(Credential),
}

impl Current {
    pub fn sid(&self) -> &str {
        match self {
            Current::Loaded(a) => &a.sid,
            Current::Verified(c) => &c.sid,
        }
    }
}

/// How a new session reaches the client.
pub struct Delivery {
    /// The cookie gets `Secure`.
    pub secure: bool,
    /// As a token instead of a cookie.
    pub token: bool,
    pub client: ClientInfo,
}

/// An action carried out: what the client gets, and what it did to other sessions.
#[derive(Debug)]
pub struct Applied {
    pub grant: Grant,
    /// Sessions of the user that a login past `session.max_per_user` ended.
    pub ended_by_cap: usize,
}

impl From<Grant> for Applied {
    fn from(grant: Grant) -> Self {
        Applied {
            grant,
            ended_by_cap: 0,
        }
    }
}

/// Why an action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A login of a user who holds `session.max_per_user` sessions, under `"refuse"`.
    #[error("the user already holds session.max_per_user sessions")]
    TooManySessions,
}

/// What the client gets after an upstream's action.
#[derive(Debug)]
pub enum Grant {
    /// The session goes on, changed or not (or there is none); its cookie rolls as usual.
    Keep(Option<Active>),
    /// A new session, as this `Set-Cookie`…
    Cookie(String),
    /// …or as this token, for a client that asked for one.
    Token(String),
    /// The session ended: the `Set-Cookie` that ends it in the browser.
    Expire(String),
}

impl Sessions {
    /// The session a request carried, for an upstream's action: the one loaded on a protected
    /// route, else (on a public route) the verified credential.
    pub fn current(&self, loaded: Option<Active>, req: &RequestHeader) -> Option<Current> {
        loaded
            .map(Current::Loaded)
            .or_else(|| self.credential(req).map(Current::Verified))
    }

    async fn resolve(&self, current: Current) -> Result<Option<Active>, StoreError> {
        match current {
            Current::Loaded(active) => Ok(Some(active)),
            Current::Verified(c) => self.load_credential(c).await,
        }
    }

    /// Whether a new session goes to this client as a token rather than a cookie: it asked for
    /// one at login, or it already presents one.
    pub fn wants_token(&self, req: &RequestHeader) -> bool {
        self.settings.token.is_some()
            && (req
                .headers
                .get(crate::directives::TOKEN)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"request"))
                || self.carries_token(req).is_some())
    }

    /// Carries out an upstream's action on the session the request carried, and says what
    /// the client gets. A login never keeps the old session (no fixation); log out everywhere
    /// ends the current session with the rest of its user's.
    pub async fn apply(
        &self,
        action: Action,
        current: Option<Current>,
        to: &Delivery,
    ) -> Result<Applied, ApplyError> {
        match action {
            Action::Destroy(scope) => {
                let mut ended = None;
                if let Some(current) = current {
                    let sid = current.sid().to_owned();
                    ended = self.resolve(current).await?.map(|a| a.record);
                    let user = ended.as_deref().and_then(|r| self.user_of(r));
                    if let (Scope::AllOfUser, Some(user)) = (scope, user) {
                        self.revoke_user_from_request(&user).await?;
                    }
                    self.destroy(&sid, ended.as_deref()).await?;
                }
                Ok(Grant::Expire(self.expire_cookie(ended.as_deref(), to.secure)).into())
            }
            Action::Issue { fields, max_age } => {
                if let Some(current) = current {
                    let record = match &current {
                        Current::Loaded(a) => Some(a.record.clone()),
                        Current::Verified(_) => None,
                    };
                    // Before the new one is counted: a login that replaces the user's own
                    // session does not count it twice.
                    self.destroy(current.sid(), record.as_deref()).await?;
                }
                let issued = self.issue(fields, max_age, &to.client, to.secure).await?;
                Ok(Applied {
                    grant: self.hand_out(&issued.sid, &issued.record, to),
                    ended_by_cap: issued.ended.len(),
                })
            }
            Action::Modify { regenerate, patch } => {
                let Some(current) = current else {
                    tracing::warn!(
                        "upstream sent a session update for a request without a session; ignored"
                    );
                    return Ok(Grant::Keep(None).into());
                };
                let Some(mut active) = self.resolve(current).await? else {
                    return Ok(Grant::Keep(None).into());
                };
                let mut replaced = false;
                if regenerate {
                    match self.regenerate(&active.sid, &active.record).await? {
                        Some(new) => {
                            active.sid = new;
                            replaced = true;
                        }
                        None => return Ok(Grant::Keep(None).into()),
                    }
                }
                if let Some(patch) = patch {
                    if let Some(updated) = self.update(&active.sid, patch).await? {
                        active.record = updated;
                    }
                }
                // A regenerate moves the session to a new id with its beginning: not a new
                // login, so the cap does not count it again.
                Ok(if replaced {
                    self.hand_out(&active.sid, &active.record, to)
                } else {
                    Grant::Keep(Some(active))
                }
                .into())
            }
        }
    }

    /// Gives the client a new session: a cookie, or the token when it asked for one.
    fn hand_out(&self, sid: &str, record: &SessionRecord, to: &Delivery) -> Grant {
        if to.token {
            Grant::Token(self.token(sid))
        } else {
            Grant::Cookie(self.set_cookie(sid, record, to.secure))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The session orchestration on the embedded store, without sockets: what each action
    //! does to the store and what the client gets.
    use super::*;
    use crate::sessions::Via;
    use crate::store::MemoryStore;
    use serde_json::json;
    use serde_json::{Map, Value};
    use std::sync::Arc;

    fn sessions(token: bool) -> Sessions {
        let toml = format!(
            "[session]\nsecrets = [\"a test secret of some length\"]\n{}\n[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\nauth = \"public\"\n",
            if token {
                "[session.token]\nheader = \"authorization\"\nscheme = \"Session\"\n"
            } else {
                ""
            }
        );
        let config = crate::Config::parse(&toml, "test.toml", &|_| None).unwrap();
        Sessions::new(config.session, Arc::new(MemoryStore::new()))
    }

    fn to(token: bool) -> Delivery {
        Delivery {
            secure: false,
            token,
            client: ClientInfo::default(),
        }
    }

    fn fields(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Logs `user` in and returns the request that carries the new cookie, and the sid.
    async fn login(s: &Sessions, user: &str) -> (RequestHeader, String) {
        let action = Action::Issue {
            fields: fields(json!({ "user": user })),
            max_age: None,
        };
        let Grant::Cookie(set_cookie) = s.apply(action, None, &to(false)).await.unwrap().grant
        else {
            panic!("a cookie client gets a cookie");
        };
        let pair = set_cookie.split(';').next().unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("cookie", pair).unwrap();
        let sid = s.credential(&req).unwrap().sid;
        (req, sid)
    }

    async fn loaded(s: &Sessions, req: &RequestHeader) -> Option<Current> {
        let active = s.load(req).await.unwrap();
        s.current(active, req)
    }

    #[tokio::test]
    async fn issue_replaces_the_session_the_request_carried() {
        let s = sessions(false);
        let (req, old) = login(&s, "alice").await;
        let current = loaded(&s, &req).await;
        let action = Action::Issue {
            fields: fields(json!({"user": "alice"})),
            max_age: None,
        };
        let grant = s.apply(action, current, &to(false)).await.unwrap().grant;
        assert!(matches!(grant, Grant::Cookie(c) if c.starts_with("connect.sid=s%3A")));
        assert!(
            s.load(&req).await.unwrap().is_none(),
            "the old id {old} is gone"
        );
    }

    #[tokio::test]
    async fn a_token_client_gets_a_token_and_no_cookie() {
        let s = sessions(true);
        let action = Action::Issue {
            fields: fields(json!({"user": "bob"})),
            max_age: None,
        };
        let Grant::Token(token) = s.apply(action, None, &to(true)).await.unwrap().grant else {
            panic!("a token");
        };
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("authorization", format!("Session {token}"))
            .unwrap();
        assert_eq!(s.load(&req).await.unwrap().unwrap().via, Via::Token);
    }

    #[tokio::test]
    async fn destroy_ends_this_session_and_expires_the_cookie() {
        let s = sessions(false);
        let (req, _) = login(&s, "alice").await;
        let (other, _) = login(&s, "alice").await;
        let current = loaded(&s, &req).await;
        let grant = s
            .apply(Action::Destroy(Scope::This), current, &to(false))
            .await
            .unwrap()
            .grant;
        assert!(matches!(grant, Grant::Expire(c) if c.contains("Expires=Thu, 01 Jan 1970")));
        assert!(s.load(&req).await.unwrap().is_none());
        assert!(s.load(&other).await.unwrap().is_some(), "only this one");
    }

    #[tokio::test]
    async fn destroy_all_ends_every_session_of_the_user_including_this_one() {
        let s = sessions(false);
        let (req, _) = login(&s, "alice").await;
        let (laptop, _) = login(&s, "alice").await;
        let (bob, _) = login(&s, "bob").await;
        // A public route: the session is only verified, and loaded by the action.
        let current = s.current(None, &req);
        assert!(matches!(current, Some(Current::Verified(_))));
        s.apply(Action::Destroy(Scope::AllOfUser), current, &to(false))
            .await
            .unwrap();
        assert!(s.load(&req).await.unwrap().is_none());
        assert!(s.load(&laptop).await.unwrap().is_none());
        assert!(s.load(&bob).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn modify_merges_fields_and_keeps_the_id() {
        let s = sessions(false);
        let (req, sid) = login(&s, "alice").await;
        let current = loaded(&s, &req).await;
        let action = Action::Modify {
            regenerate: false,
            patch: Some(fields(json!({"theme": "dark"}))),
        };
        let Grant::Keep(Some(active)) = s.apply(action, current, &to(false)).await.unwrap().grant
        else {
            panic!("the session goes on");
        };
        assert_eq!(active.sid, sid);
        assert_eq!(active.record.pointer("/theme"), Some(&json!("dark")));
        let stored = s.load(&req).await.unwrap().unwrap();
        assert_eq!(stored.record.pointer("/user"), Some(&json!("alice")));
        assert_eq!(stored.record.pointer("/theme"), Some(&json!("dark")));
    }

    #[tokio::test]
    async fn regenerate_moves_the_session_to_a_new_id() {
        let s = sessions(false);
        let (req, sid) = login(&s, "alice").await;
        let current = loaded(&s, &req).await;
        let action = Action::Modify {
            regenerate: true,
            patch: Some(fields(json!({"step": 2}))),
        };
        let Grant::Cookie(c) = s.apply(action, current, &to(false)).await.unwrap().grant else {
            panic!("a new cookie for the new id");
        };
        assert!(
            s.load(&req).await.unwrap().is_none(),
            "the old id stops working"
        );
        let mut next = RequestHeader::build("GET", b"/", None).unwrap();
        next.insert_header("cookie", c.split(';').next().unwrap())
            .unwrap();
        let moved = s.load(&next).await.unwrap().unwrap();
        assert_ne!(moved.sid, sid);
        assert_eq!(moved.record.pointer("/user"), Some(&json!("alice")));
        assert_eq!(moved.record.pointer("/step"), Some(&json!(2)));
    }

    #[tokio::test]
    async fn modify_without_a_session_changes_nothing() {
        let s = sessions(false);
        let action = Action::Modify {
            regenerate: true,
            patch: Some(fields(json!({"x": 1}))),
        };
        assert!(matches!(
            s.apply(action, None, &to(false)).await.unwrap().grant,
            Grant::Keep(None)
        ));
        assert_eq!(s.store().count().await.unwrap(), 0);
    }
}
