//! The per-user view of the Redis store: a user's sessions through their index, revoking
//! them all at once, and counting sessions.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::conn::{masters, on_master, Conn, Master};
use super::scripts::{secs, SWEEP};
use super::RedisStore;
use crate::record::epoch_ms;
use crate::store::{Revocation, StoreError, StoredSession, UserIndex};

/// How long a sweep's mark keeps unseen sessions of the user refused without the sweep
/// pushing it again: a sweep that dies leaves no lasting mark.
const SWEEP_HOLD: Duration = Duration::from_secs(60);
/// Keys per SCAN step, each checked by one script call in one pipeline.
const SWEEP_BATCH: usize = 1000;

#[async_trait]
impl UserIndex for RedisStore {
    async fn user_sessions(&self, user: &str) -> Result<Vec<StoredSession>, StoreError> {
        let index = self.index(user);
        let mut ids: Vec<String> = self
            .run(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1).to_owned())
            .await?;
        // '!revoked' and '!sweep' are the revocation's marks, not sessions.
        ids.retain(|id| !id.starts_with('!'));
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(Option<String>, i64)> = if self.is_cluster() {
            // Sessions in many slots: each one's GET and PTTL together, all at once.
            let cmds = ids
                .iter()
                .map(|sid| {
                    redis::pipe()
                        .cmd("GET")
                        .arg(self.key(sid))
                        .cmd("PTTL")
                        .arg(self.key(sid))
                        .to_owned()
                })
                .collect::<Vec<_>>();
            let mut out = Vec::with_capacity(cmds.len());
            for pipe in cmds {
                let mut conn = self.connection().await?;
                out.push(
                    self.bounded(async move { pipe.query_async(&mut conn).await })
                        .await?,
                );
            }
            out
        } else {
            let mut pipe = redis::pipe();
            for sid in &ids {
                pipe.cmd("GET")
                    .arg(self.key(sid))
                    .cmd("PTTL")
                    .arg(self.key(sid));
            }
            let mut conn = self.connection().await?;
            self.bounded(async move { pipe.query_async(&mut conn).await })
                .await?
        };
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (sid, (json, ttl)) in ids.into_iter().zip(rows) {
            match json {
                Some(json) => live.push(StoredSession {
                    sid,
                    json,
                    ttl: (ttl >= 0).then(|| Duration::from_millis(ttl as u64)),
                }),
                None => dead.push(sid),
            }
        }
        if !dead.is_empty() {
            self.run::<i64>(redis::cmd("ZREM").arg(&index).arg(&dead).to_owned())
                .await?;
        }
        Ok(live)
    }

    async fn revoke_user(&self, user: &str, max_life: Duration) -> Result<Revocation, StoreError> {
        let at_ms = epoch_ms(SystemTime::now());
        let mut inv = self.scripts.revoke_user.key(self.index(user));
        inv.arg(at_ms)
            .arg(at_ms + SWEEP_HOLD.as_millis() as u64)
            .arg(secs(max_life));
        let mut conn = self.connection().await?;
        let ids = self
            .bounded(async move { inv.invoke_async::<Vec<String>>(&mut conn).await })
            .await?;
        // Marked first: from here the load script refuses them, so deleting them in a second
        // step is as good as deleting them inside the script.
        if !ids.is_empty() && self.is_cluster() {
            for sid in &ids {
                self.forget(sid);
            }
            let dels = ids
                .iter()
                .map(|sid| redis::cmd("DEL").arg(self.key(sid)).to_owned())
                .collect();
            self.each::<i64>(dels).await?;
        } else if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for sid in &ids {
                pipe.cmd("DEL").arg(self.key(sid)).ignore();
                self.forget(sid);
            }
            let mut conn = self.connection().await?;
            self.bounded(async move { pipe.query_async::<()>(&mut conn).await })
                .await?;
        }
        Ok(Revocation { ids, at_ms })
    }

    async fn sweep_user(
        &self,
        user: &str,
        user_field: &str,
        revocation: &Revocation,
    ) -> Result<Vec<String>, StoreError> {
        let index = self.index(user);
        let mut swept = Vec::new();
        for target in self.scan_targets().await? {
            let mut conn = self.connection().await?;
            let sha: String = self
                .on_target(
                    &target,
                    redis::cmd("SCRIPT").arg("LOAD").arg(SWEEP).to_owned(),
                )
                .await?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) =
                    self.on_target(&target, self.scan_step(cursor)).await?;
                if !keys.is_empty() {
                    let calls: Vec<redis::Cmd> = keys
                        .iter()
                        .map(|key| {
                            redis::cmd("EVALSHA")
                                .arg(&sha)
                                .arg(1)
                                .arg(key)
                                .arg(user_field)
                                .arg(user)
                                .arg(revocation.at_ms)
                                .to_owned()
                        })
                        .collect();
                    let deleted: Vec<i64> = if self.is_cluster() {
                        self.each(calls).await?
                    } else {
                        let mut pipe = redis::pipe();
                        for c in calls {
                            pipe.add_command(c);
                        }
                        self.bounded(pipe.query_async(&mut conn)).await?
                    };
                    for (key, d) in keys.iter().zip(deleted) {
                        if d == 1 {
                            let sid = &key[self.prefix.len()..];
                            self.forget(sid);
                            swept.push(sid.to_owned());
                        }
                    }
                    // The sweep is still running: keep the load refusing unseen sessions.
                    self.run::<i64>(
                        redis::cmd("ZADD")
                            .arg(&index)
                            .arg("XX")
                            .arg(epoch_ms(SystemTime::now()) + SWEEP_HOLD.as_millis() as u64)
                            .arg("!sweep")
                            .to_owned(),
                    )
                    .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        self.run::<i64>(redis::cmd("ZREM").arg(&index).arg("!sweep").to_owned())
            .await?;
        Ok(swept)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        // connect-redis's `length`: SCAN over the prefix, as KEYS would block the server; on
        // a cluster, over every master.
        let work = async {
            let mut n = 0usize;
            for target in self.scan_targets().await? {
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) =
                        self.on_target(&target, self.scan_step(cursor)).await?;
                    n += keys.len();
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(n)
        };
        // A count may scan a large keyspace: allow it more time than one request.
        self.within(self.timeout * 20, work).await
    }
}

impl RedisStore {
    /// Where a SCAN of the whole keyspace runs: the one server, or every master.
    async fn scan_targets(&self) -> Result<Vec<Option<Master>>, StoreError> {
        match self.connection().await? {
            Conn::One(_) | Conn::Sentinel(_) => Ok(vec![None]),
            Conn::Cluster(mut c) => Ok(self
                .bounded(masters(&mut c))
                .await?
                .into_iter()
                .map(Some)
                .collect()),
        }
    }

    /// Runs `cmd` on a scan target.
    async fn on_target<T: redis::FromRedisValue>(
        &self,
        target: &Option<Master>,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        match (target, self.connection().await?) {
            (Some(master), Conn::Cluster(mut c)) => {
                self.bounded(on_master(&mut c, master, cmd)).await
            }
            _ => self.run(cmd).await,
        }
    }

    /// One SCAN step over the session keys.
    fn scan_step(&self, cursor: u64) -> redis::Cmd {
        let pattern = format!("{}*", self.prefix.replace('*', "\\*").replace('?', "\\?"));
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SWEEP_BATCH)
            .to_owned()
    }
}
