//! Writes that are more than one command: an update (a WATCH loop on one node; a
//! compare-and-swap script on a cluster, where WATCH would need the key's own node), and a
//! rename whose two ids are in different slots of a cluster.

use super::*;

impl RedisStore {
    /// An update on a cluster (where WATCH would need a connection of its own to the key's
    /// node): read, rewrite, and swap only if the record is still what was read.
    pub(super) async fn update_by_swap(
        &self,
        key: &str,
        f: Rewrite<'_>,
    ) -> Result<Option<String>, StoreError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(old) = self
                .run::<Option<String>>(redis::cmd("GET").arg(key).to_owned())
                .await?
            else {
                return Ok(None);
            };
            let Some(new) = f(&old) else {
                return Ok(None);
            };
            let mut inv = self.scripts.swap.key(key);
            inv.arg(&old).arg(&new);
            let mut conn = self.connection().await?;
            match inv.invoke_async::<i64>(&mut conn).await? {
                1 => return Ok(Some(new)),
                -1 => return Ok(None),
                _ => continue,
            }
        }
        Err(StoreError::Contended)
    }

    /// A rename on a cluster, where the two ids are in different slots: copy the record with
    /// its TTL to the new id (only if free), move it in its user's index, then delete the old
    /// id. In that order every session in an index keeps its key until it ends (what the
    /// per-user cap's count relies on), and a session that left the index since it was
    /// loaded (ended by a logout, a revocation or the cap) is not brought back under a new id:
    /// the copy is deleted again and the rename reports the session gone.
    pub(super) async fn rename_across_slots(
        &self,
        old: &str,
        new: &str,
        user: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(self.key(old))
            .cmd("PTTL")
            .arg(self.key(old));
        let mut conn = self.connection().await?;
        let (json, pttl): (Option<String>, i64) = self
            .bounded(async move { pipe.query_async(&mut conn).await })
            .await?;
        let Some(json) = json else { return Ok(false) };
        self.forget(old);
        let mut set = redis::cmd("SET");
        set.arg(self.key(new)).arg(&json).arg("NX");
        if pttl > 0 {
            set.arg("PX").arg(pttl);
        }
        let created: Option<String> = self.run(set).await?;
        if created.is_none() {
            return Ok(false);
        }
        let mut moved = true;
        if let Some(u) = user {
            let ttl = if pttl > 0 { pttl as u64 / 1000 + 1 } else { 1 };
            let mut inv = self.scripts.move_in_index.key(self.index(u));
            inv.arg(old).arg(new).arg(ttl);
            let mut conn = self.connection().await?;
            moved = self
                .bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
                .await?
                == 1;
        }
        if !moved {
            self.run::<i64>(redis::cmd("DEL").arg(self.key(new)).to_owned())
                .await?;
        }
        self.run::<i64>(redis::cmd("DEL").arg(self.key(old)).to_owned())
            .await?;
        Ok(moved)
    }

    /// One optimistic read-modify-write; `None` when another writer got there first.
    pub(super) async fn update_once(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        key: &str,
        f: Rewrite<'_>,
    ) -> redis::RedisResult<Option<Option<String>>> {
        redis::cmd("WATCH").arg(key).query_async::<()>(conn).await?;
        let Some(old) = redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(conn)
            .await?
        else {
            redis::cmd("UNWATCH").query_async::<()>(conn).await?;
            return Ok(Some(None));
        };
        let Some(new) = f(&old) else {
            redis::cmd("UNWATCH").query_async::<()>(conn).await?;
            return Ok(Some(None));
        };
        let done: Option<()> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key)
            .arg(&new)
            .arg("KEEPTTL")
            .ignore()
            .query_async(conn)
            .await?;
        // A nil EXEC means another writer got there first: try again on the new record.
        Ok(done.map(|_| Some(new)))
    }
}
