//! Logins under a per-user cap (`session.max_per_user`): the user's live sessions are counted
//! through their index, and at the cap the oldest end or the login is refused.
//!
//! **One server, or the sentinels' master:** one script (`save_capped.lua`) reads the index,
//! drops entries whose session is gone, ends the oldest (deleting their keys) or refuses, and
//! writes the new session, all atomically. Logins of one user racing at the cap run one after
//! the other inside Redis: the cap holds exactly, at every moment.
//!
//! **A cluster:** the sessions and the index are in different slots, so a login is steps,
//! each atomic on its own slot, in an order that keeps the count honest:
//!
//! 1. The new session's key is written first, so that every session in an index has its key
//!    until it ends: an entry whose key is gone is dead for good.
//! 2. The index's entries are checked (one `EXISTS` per session, in its slot); dead ones are
//!    named to the next step, which drops them, so expired sessions never count.
//! 3. One script on the index's slot (`make_room.lua`) counts the rest and either refuses (the
//!    new key is deleted again) or takes the oldest out of the index and adds the new
//!    session. Two logins racing at the cap both pass here one after the other, and the
//!    second counts the first: the index never holds more than the cap.
//! 4. The ended sessions' keys are deleted, in their slots, before the login answers.
//!
//! What that guarantees: once a login has answered, its user holds at most the cap of live
//! sessions, however many logins raced. Between steps 3 and 4 a session being ended can
//! still serve a request already on its way (and a load then puts it back in the index, as a
//! dead entry once step 4 has run). A login that fails between the steps (the store stops
//! answering) answers 503; a session it was ending may outlive it until the user's next
//! login counts it again. A regenerate keeps the same order (the new id's key, then the
//! index, then the old key goes), and does not bring back a session the cap took out of the
//! index meanwhile.

use super::*;

impl RedisStore {
    /// [`SessionStore::save`] for a user under `cap`.
    pub(super) async fn save_capped(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: &str,
        cap: UserCap,
    ) -> Result<Saved, StoreError> {
        let refuse = match cap.when_full {
            WhenFull::Refuse => "refuse",
            WhenFull::EndOldest => "",
        };
        self.forget(sid);
        if self.is_cluster() {
            return self
                .save_capped_across_slots(sid, json, ttl, user, cap, refuse)
                .await;
        }
        let mut inv = self.scripts.save_capped.key(self.key(sid));
        inv.key(self.index(user))
            .arg(json)
            .arg(secs(ttl))
            .arg(epoch_ms(SystemTime::now()))
            .arg(sid)
            .arg(cap.max)
            .arg(refuse)
            .arg(&self.prefix);
        let mut conn = self.connection().await?;
        let answer: Vec<String> = self
            .bounded(async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(self.saved(answer))
    }

    async fn save_capped_across_slots(
        &self,
        sid: &str,
        json: &str,
        ttl: Duration,
        user: &str,
        cap: UserCap,
        refuse: &str,
    ) -> Result<Saved, StoreError> {
        let born = crate::record::SessionRecord::parse(json)
            .ok()
            .and_then(|r| r.born_ms())
            .unwrap_or_else(|| epoch_ms(SystemTime::now()));
        let key = self.key(sid);
        self.run::<()>(
            redis::cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("EX")
                .arg(secs(ttl))
                .to_owned(),
        )
        .await?;
        let index = self.index(user);
        let mut ids: Vec<String> = self
            .run(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1).to_owned())
            .await?;
        ids.retain(|id| !id.starts_with('!') && id != sid);
        let exists: Vec<i64> = self
            .each(
                ids.iter()
                    .map(|id| redis::cmd("EXISTS").arg(self.key(id)).to_owned())
                    .collect(),
            )
            .await?;
        let mut inv = self.scripts.make_room.key(&index);
        inv.arg(sid)
            .arg(born)
            .arg(cap.max)
            .arg(refuse)
            .arg(secs(ttl));
        for (id, n) in ids.iter().zip(exists) {
            if n == 0 {
                inv.arg(id);
            }
        }
        let mut conn = self.connection().await?;
        let answer: Vec<String> = self
            .bounded(async move { inv.invoke_async(&mut conn).await })
            .await?;
        let saved = match answer.first().map(String::as_str) {
            // Revoked after it began: the load would refuse it; it never counted.
            Some("revoked") => {
                self.run::<i64>(redis::cmd("DEL").arg(&key).to_owned())
                    .await?;
                return Ok(Saved::stored());
            }
            _ => self.saved(answer),
        };
        match &saved {
            Saved::Refused => {
                self.run::<i64>(redis::cmd("DEL").arg(&key).to_owned())
                    .await?;
            }
            Saved::Stored { ended } if !ended.is_empty() => {
                let dels = ended
                    .iter()
                    .map(|id| redis::cmd("DEL").arg(self.key(id)).to_owned())
                    .collect();
                self.each::<i64>(dels).await?;
                for id in ended {
                    self.forget(id);
                }
            }
            Saved::Stored { .. } => {}
        }
        Ok(saved)
    }

    /// The scripts' answer: `{'stored', ended…}` or `{'refused'}`; ended sessions leave the
    /// local cache at once (other gates hear of their deletion from Redis).
    fn saved(&self, mut answer: Vec<String>) -> Saved {
        if answer.first().map(String::as_str) == Some("refused") {
            return Saved::Refused;
        }
        let ended = answer.split_off(1.min(answer.len()));
        for id in &ended {
            self.forget(id);
        }
        Saved::Stored { ended }
    }
}
