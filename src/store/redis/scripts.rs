//! The Lua the store runs inside Redis, each script in its own `.lua` file, and the decoded
//! answer of the load script. Every script runs atomically on the server, so a read and its
//! touch, or a session and its index, never disagree.

use std::time::{Duration, SystemTime};

use redis::{Cmd, FromRedisValue, ParsingError, Script, Value};

use crate::record::{epoch_ms, ExpiryPolicy};

/// GET, refusing a session whose user was revoked after it began, stamping the first time a
/// gate sees it (`sessiongate.seen`) and keeping it in its user's index; with a policy that
/// pushes: the session's own TTL (cookie.originalMaxAge or the idle timeout), cut by the
/// absolute deadline (expired: DEL, nil); EXPIRE when the TTL has fallen by more than the
/// interval (never more than half the TTL), and the index with it (GT: indexes only grow).
/// Answers `{record, ttl left, own ttl, touched}`; the record is empty for a touch only
/// (`quiet`).
pub const LOAD_TOUCH: &str = include_str!("scripts/load_touch.lua");
/// SET a new session and add it to its user's index.
pub const SAVE: &str = include_str!("scripts/save.lua");
/// SET a new session and add it to its user's index under the user's cap, ending the
/// oldest or refusing (one server or the sentinels' master).
pub const SAVE_CAPPED: &str = include_str!("scripts/save_capped.lua");
/// On a cluster, the index's half of a capped login: drop dead entries, refuse or pick the
/// oldest to end, add the new session.
pub const MAKE_ROOM: &str = include_str!("scripts/make_room.lua");
/// RENAME a session to a new id and move it in its user's index.
pub const RENAME: &str = include_str!("scripts/rename.lua");
/// Mark a user revoked in their index and hand back the ids it held.
pub const REVOKE_USER: &str = include_str!("scripts/revoke_user.lua");
/// Delete one session if it is the revoked user's and began before the revocation.
pub const SWEEP: &str = include_str!("scripts/sweep.lua");
/// Add a session to a user's index.
pub const REINDEX: &str = include_str!("scripts/reindex.lua");
/// On a cluster, the index's half of a load: refuse a revoked session, or keep it indexed.
pub const ADMIT: &str = include_str!("scripts/admit.lua");
/// On a cluster, the session's half: stamp `sessiongate.seen` on a session no gate has seen.
pub const STAMP: &str = include_str!("scripts/stamp.lua");
/// Replace a record only if it is still what was read (updates on a cluster).
pub const SWAP: &str = include_str!("scripts/swap.lua");
/// Move a session in its user's index, unless it has left it (renames on a cluster).
pub const MOVE_IN_INDEX: &str = include_str!("scripts/move_in_index.lua");

/// The scripts, hashed once.
pub struct Scripts {
    pub load_touch: Script,
    pub save: Script,
    pub save_capped: Script,
    pub make_room: Script,
    pub rename: Script,
    pub revoke_user: Script,
    pub reindex: Script,
    pub admit: Script,
    pub stamp: Script,
    pub swap: Script,
    pub move_in_index: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            load_touch: Script::new(LOAD_TOUCH),
            save: Script::new(SAVE),
            save_capped: Script::new(SAVE_CAPPED),
            make_room: Script::new(MAKE_ROOM),
            rename: Script::new(RENAME),
            revoke_user: Script::new(REVOKE_USER),
            reindex: Script::new(REINDEX),
            admit: Script::new(ADMIT),
            stamp: Script::new(STAMP),
            swap: Script::new(SWAP),
            move_in_index: Script::new(MOVE_IN_INDEX),
        }
    }
}

/// What the load script answers for a session that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadAnswer {
    /// The record (empty for a touch only).
    pub json: String,
    /// Seconds before Redis drops the key; negative without a TTL.
    pub remaining: i64,
    /// The TTL a touch gives this session, in seconds (0 when the script did not work it out).
    pub own_ttl: i64,
    /// Its TTL was pushed by this call.
    pub touched: bool,
}

impl LoadAnswer {
    /// Time left, for the cache (`None` for a key without a TTL).
    pub fn remaining(&self) -> Option<Duration> {
        (self.remaining > 0).then(|| Duration::from_secs(self.remaining as u64))
    }
}

impl FromRedisValue for LoadAnswer {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (json, remaining, own_ttl, touched): (String, i64, i64, i64) =
            redis::from_redis_value(v)?;
        Ok(LoadAnswer {
            json,
            remaining,
            own_ttl,
            touched: touched == 1,
        })
    }
}

/// The load script for one session, by its hash (EVALSHA); `quiet` asks for the touch only.
/// Without a policy (or one that does not push) the TTL is left alone; revocations apply
/// either way when the policy names the user field.
pub fn load_command(
    scripts: &Scripts,
    prefix: &str,
    index_prefix: &str,
    sid: &str,
    policy: Option<&ExpiryPolicy>,
    quiet: bool,
    stamp: bool,
) -> Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(scripts.load_touch.get_hash())
        .arg(1)
        .arg(format!("{prefix}{sid}"));
    match policy {
        Some(p) if p.push => c
            .arg(secs(p.idle_timeout))
            .arg(p.touch_interval.as_secs())
            .arg(p.absolute_timeout.map_or(0, |a| a.as_secs())),
        _ => c.arg("").arg(0).arg(0),
    };
    c.arg(epoch_ms(SystemTime::now()));
    match policy {
        Some(p) => c.arg(&p.user_field).arg(index_prefix),
        None => c.arg("").arg(""),
    };
    c.arg(sid)
        .arg(if quiet { "quiet" } else { "" })
        .arg(policy.map_or(1, |p| secs(p.max_life)))
        .arg(if stamp { "" } else { "nostamp" });
    c
}

/// Whether Redis answered that it does not know a script (after a restart or a failover its
/// script cache is empty).
pub fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Whole seconds, rounded up, at least one: Redis TTLs are seconds and 0 would delete.
pub fn secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}
