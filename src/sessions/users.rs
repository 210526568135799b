//! A user's sessions, for the admin API, the CLI and log out everywhere: listing them without
//! ever showing a whole id, revoking one by an id prefix, revoking all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::Sessions;
use crate::record::{epoch_ms, id_prefix, SessionRecord};
use crate::store::{Revocation, StoreError};

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
    #[error("give at least {MIN_ID_PREFIX} characters of the session id")]
    TooShort,
}

/// The users whose sweep runs in this gate, each with the revocation to sweep for next, if
/// one arrived meanwhile.
#[derive(Default)]
pub(super) struct Sweeps {
    running: Mutex<HashMap<String, Option<Revocation>>>,
}

impl Sweeps {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Revocation>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `true`: start a sweep for `user`. `false`: one is running; it sweeps once more for
    /// `revocation` when done.
    fn start(&self, user: &str, revocation: &Revocation) -> bool {
        let mut running = self.lock();
        match running.get_mut(user) {
            Some(next) => {
                *next = Some(revocation.clone());
                false
            }
            None => {
                running.insert(user.to_owned(), None);
                true
            }
        }
    }

    /// The revocation to sweep for next, or `None`: the sweep of `user` is over.
    fn next(&self, user: &str) -> Option<Revocation> {
        let mut running = self.lock();
        let next = running.get_mut(user).and_then(Option::take);
        if next.is_none() {
            running.remove(user);
        }
        next
    }
}

/// The shortest session id prefix that names one session: shorter ones (the empty one
/// above all) are refused, so that no spelling of a request revokes more than it named.
pub const MIN_ID_PREFIX: usize = 4;

impl Sessions {
    /// "Log out everywhere": every session of the user, on every gate sharing the store,
    /// including those express apps wrote that no gate has seen (the sweep, awaited here: for
    /// the admin API and the CLI). Returns how many sessions ended.
    pub async fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        let revocation = self.store.revoke_user(user, self.policy.max_life).await?;
        let swept = self
            .store
            .sweep_user(user, &self.settings.user_field, &revocation)
            .await?;
        let n = revocation.ids.len() + swept.len();
        tracing::info!(user_sessions = n, "revoked all sessions of a user");
        Ok(n)
    }

    /// The same for a request (`X-Session-Destroy: all`): the revocation takes effect before
    /// this returns, and the sweep for sessions no gate has seen (a SCAN of the store) runs in
    /// the background, off the request path; until it is done those are refused. Sweeps of
    /// one user never overlap in a gate: revocations that arrive while one runs are folded
    /// into one more sweep, with the latest revocation, so that a user who keeps asking costs
    /// at most two scans at a time, not one per request.
    pub async fn revoke_user_from_request(&self, user: &str) -> Result<(), StoreError> {
        let revocation = self.store.revoke_user(user, self.policy.max_life).await?;
        if !self.sweeps.start(user, &revocation) {
            return Ok(());
        }
        let (store, sweeps) = (self.store.clone(), self.sweeps.clone());
        let (user, field) = (user.to_owned(), self.settings.user_field.clone());
        tokio::spawn(async move {
            let mut next = Some(revocation);
            while let Some(revocation) = next {
                match store.sweep_user(&user, &field, &revocation).await {
                    Ok(swept) => tracing::info!(
                        user_sessions = revocation.ids.len() + swept.len(),
                        "revoked all sessions of a user"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "the sweep after a revocation failed; sessions no gate has seen may remain")
                    }
                }
                next = sweeps.next(&user);
            }
        });
        Ok(())
    }

    pub async fn list_user(&self, user: &str) -> Result<Vec<Listed>, StoreError> {
        let now = epoch_ms(SystemTime::now());
        let mut out: Vec<Listed> = self
            .store
            .user_sessions(user)
            .await?
            .into_iter()
            .map(|s| {
                let record = SessionRecord::parse(&s.json).ok();
                let expires = s.ttl.map(|t| now + t.as_millis() as u64);
                let idle = record
                    .as_ref()
                    .map(|r| r.ttl(self.policy.idle_timeout).as_millis() as u64);
                let last_seen = match (expires, idle, self.settings.rolling || self.settings.touch)
                {
                    (Some(e), Some(i), true) => Some(e.saturating_sub(i).min(now)),
                    _ => None,
                };
                let client = record
                    .as_ref()
                    .map(SessionRecord::client)
                    .unwrap_or_default();
                Listed {
                    id_prefix: id_prefix(&s.sid).to_owned(),
                    created: record.as_ref().and_then(SessionRecord::created_ms),
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
        if prefix.chars().count() < MIN_ID_PREFIX {
            return Err(RevokeError::TooShort);
        }
        let sessions = self.store.user_sessions(user).await?;
        let mut matching = sessions.iter().filter(|s| s.sid.starts_with(prefix));
        let (Some(one), None) = (matching.next(), matching.next()) else {
            let n = sessions
                .iter()
                .filter(|s| s.sid.starts_with(prefix))
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

    /// How many sessions the store holds.
    pub async fn count(&self) -> Result<usize, StoreError> {
        self.store.count().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Revocation {
        Revocation {
            ids: Vec::new(),
            at_ms: ms,
        }
    }

    #[test]
    fn sweeps_of_one_user_are_folded_into_one_more_with_the_latest_revocation() {
        let sweeps = Sweeps::default();
        assert!(sweeps.start("alice", &at(1)));
        assert!(
            sweeps.start("bob", &at(1)),
            "other users sweep on their own"
        );
        assert!(!sweeps.start("alice", &at(2)));
        assert!(!sweeps.start("alice", &at(3)));
        assert_eq!(sweeps.next("alice"), Some(at(3)));
        assert_eq!(sweeps.next("alice"), None, "over");
        assert!(sweeps.start("alice", &at(4)), "a new one starts afresh");
    }
}
