//! [`RedisGroupLog`]: one `(epoch, offset)` per publish, cluster-wide.

use std::time::Duration;

use async_trait::async_trait;
use longconn_server::{GroupLog, GroupLogError, GroupPosition};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Pipeline, Script};

use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::script::{push_evalsha, query_scripted};
use crate::{Error, Result, ttl_millis};

/// KEYS[1]: the group's hash. ARGV[1]: a fresh epoch, used only if the counter starts
/// here. ARGV[2]: idle TTL in ms (0: none). Returns {epoch, offset}.
///
/// `HINCRBY o` is the group's counter; the epoch `e` lives in the same hash, so the two
/// are created, and lost, together: a counter that starts again at 1 always comes with
/// a new epoch, and an `(epoch, offset)` pair is never handed out twice.
const NEXT_POSITION: &str = r"
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
local e = false
if o ~= 1 then
  e = redis.call('HGET', KEYS[1], 'e')
end
if not e then
  -- A new counter (or a hash without its epoch: start over in a new epoch).
  e = ARGV[1]
  o = 1
  redis.call('HSET', KEYS[1], 'e', e, 'o', 1)
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {e, o}
";

/// A [`GroupLog`] on Redis: every node asks the same counter, so a publish has one
/// position whichever node makes it.
///
/// Per group, one hash `{prefix}g:{group}` with fields `e` (epoch, decimal) and `o` (the
/// last offset handed out). One `next_position` is one `EVALSHA` (one round trip): an
/// `HINCRBY` of `o`, and when that creates the counter, a new random epoch (non-zero,
/// below 2^53, drawn by the caller). A group not published to for the idle TTL (default
/// [`RedisGroupLog::DEFAULT_IDLE_TTL`]) is dropped and its next publish starts a new epoch; so
/// does every group when Redis loses its data (restart without persistence, flush).
/// [`GroupLog::forget`] is ignored: the log is shared.
#[derive(Clone)]
pub struct RedisGroupLog<C = ConnectionManager> {
    conn: C,
    keys: Keys,
    idle_ttl_ms: u64,
    script: Script,
}

impl<C> std::fmt::Debug for RedisGroupLog<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGroupLog")
            .field("keys", &self.keys)
            .field("idle_ttl_ms", &self.idle_ttl_ms)
            .finish_non_exhaustive()
    }
}

/// A random epoch: non-zero and below 2^53 (exact as a JSON number).
fn new_epoch() -> u64 {
    (fastrand::u64(..) >> 11).max(1)
}

impl RedisGroupLog {
    /// How long a group's log outlives its last publish unless set: 24 hours.
    pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);
}

impl<C> RedisGroupLog<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A log on `conn` with the default prefix and idle TTL.
    pub fn new(conn: C) -> RedisGroupLog<C> {
        RedisGroupLog {
            conn,
            keys: Keys::new(DEFAULT_PREFIX),
            idle_ttl_ms: RedisGroupLog::DEFAULT_IDLE_TTL.as_millis() as u64,
            script: Script::new(NEXT_POSITION),
        }
    }

    /// Sets how long a group's log outlives its last publish (at least 1 ms), or `None`
    /// to keep every group's log until Redis loses it.
    pub fn with_idle_ttl(mut self, ttl: Option<Duration>) -> Result<RedisGroupLog<C>> {
        self.idle_ttl_ms = match ttl {
            Some(ttl) => ttl_millis(ttl, "group log idle ttl must be at least 1 ms")?,
            None => 0,
        };
        Ok(self)
    }

    /// Sets the key prefix (default [`DEFAULT_PREFIX`]).
    pub fn with_prefix(mut self, prefix: &str) -> RedisGroupLog<C> {
        self.keys = Keys::new(prefix);
        self
    }

    /// The position of the next publish to `group`: one round trip.
    ///
    /// # Cancel safety
    /// Not cancel safe in the log's sense: a cancelled call may have taken an offset,
    /// which then is a gap no publish fills.
    pub async fn next(&self, group: &str) -> Result<GroupPosition> {
        let key = self.keys.group_log(group);
        let mut pipe = Pipeline::with_capacity(1);
        push_evalsha(&mut pipe, &self.script, key.as_bytes())
            .arg(new_epoch())
            .arg(self.idle_ttl_ms);
        let mut conn = self.conn.clone();
        // A `NOSCRIPT` answer ran nothing, so the retry cannot take a second offset.
        let ((epoch, offset),): ((String, u64),) =
            query_scripted(&mut conn, &self.script, &pipe).await?;
        let epoch = epoch
            .parse::<u64>()
            .ok()
            .filter(|&e| e != 0 && e < 1 << 53)
            .ok_or_else(|| Error::Malformed {
                key: key.clone(),
                reason: format!("epoch {epoch:?} is not a number in 1..2^53"),
            })?;
        Ok(GroupPosition { epoch, offset })
    }
}

#[async_trait]
impl<C> GroupLog for RedisGroupLog<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn next_position(&self, group: &str) -> Result<GroupPosition, GroupLogError> {
        self.next(group)
            .await
            .map_err(|err| GroupLogError(Box::new(err)))
    }
}
