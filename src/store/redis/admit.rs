//! Admission on a cluster: the load script cannot reach the user's index (another slot), so
//! after it a second script on the index's slot checks the session against a revocation,
//! and a session no gate has seen is stamped on its own slot.

use super::*;

impl RedisStore {
    /// On a cluster, after the load script: the user's index checks the session against a
    /// revocation and keeps it (one script on the index's slot), then a session no gate has
    /// seen is stamped (on the session's slot). The order keeps revocation safe: the stamp
    /// takes the time from before the check, so a revocation that lands between the two
    /// still finds the session began before it. `false`: refused (and deleted).
    pub(super) async fn admit(
        &self,
        sid: &str,
        record: &crate::record::SessionRecord,
        policy: Option<&ExpiryPolicy>,
        answer: &LoadAnswer,
    ) -> Result<bool, StoreError> {
        let Some(policy) = policy else {
            return Ok(true);
        };
        let now = epoch_ms(SystemTime::now());
        let born = record.born_ms();
        if let Some(user) = record.user(&policy.user_field) {
            let ttl = answer
                .remaining()
                .map_or(secs(policy.max_life), |r| secs(r).max(1));
            let mut inv = self.scripts.admit.key(self.index(&user));
            inv.arg(sid)
                .arg(born.map_or(String::new(), |b| b.to_string()))
                .arg(now)
                .arg(ttl);
            let mut conn = self.connection().await?;
            let refused: i64 = self
                .bounded(async move { inv.invoke_async(&mut conn).await })
                .await?;
            if refused == 1 {
                self.forget(sid);
                self.run::<i64>(redis::cmd("DEL").arg(self.key(sid)).to_owned())
                    .await?;
                return Ok(false);
            }
        }
        if born.is_none() && record.as_value().get(META_FIELD).is_none() {
            let mut inv = self.scripts.stamp.key(self.key(sid));
            inv.arg(now);
            let mut conn = self.connection().await?;
            self.bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
                .await?;
        }
        Ok(true)
    }
}
