//! [`RedisHistory`]: per-group bounded history in Redis Streams, shared by every node.
//!
//! One stream per group, `{prefix}h:{group}`; each publication is one entry with fields
//! `e` (the group's epoch), `s` (its offset) and `f` (the encoded `Push` frame), added
//! with `XADD ... MAXLEN ~ max_len` by the node that published it (after it took the
//! position from the shared group log). With a rule's `max_age`, reads start at the
//! entry id `now - max_age` (ids are the append time in ms) and the stream expires
//! `max_age` after its last append; without one it expires after
//! [`RedisHistory::DEFAULT_IDLE_TTL`]. A read checks that the offsets it returns are
//! consecutive and in the last epoch: a hole (a failed append, a trimmed range, an epoch
//! change) answers "not recovered", never a replay with a gap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_group::{GroupHistory, HistoryConfig, Recovery};
use longconn_server::GroupPosition;
use redis::Value;
use redis::aio::{ConnectionLike, ConnectionManager};
use tracing::warn;

use crate::keys::{DEFAULT_PREFIX, Keys};

/// Group history in Redis Streams; see the module documentation.
#[derive(Clone)]
pub struct RedisHistory<C = ConnectionManager> {
    conn: C,
    keys: Keys,
    config: HistoryConfig,
}

impl<C> std::fmt::Debug for RedisHistory<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisHistory {
    /// How long a group's stream outlives its last append when its rule has no
    /// `max_age`: 24 hours.
    pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<C> RedisHistory<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A history on `conn` with `config`'s rules and the default key prefix.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when a rule is out of range.
    pub fn new(conn: C, config: HistoryConfig) -> crate::Result<RedisHistory<C>> {
        config.validate().map_err(|e| crate::Error::Config(e.0))?;
        Ok(RedisHistory {
            conn,
            keys: Keys::new(DEFAULT_PREFIX),
            config,
        })
    }

    /// Sets the key prefix (default [`DEFAULT_PREFIX`]); the same on every node.
    pub fn with_prefix(mut self, prefix: &str) -> RedisHistory<C> {
        self.keys = Keys::new(prefix);
        self
    }

    fn key(&self, group: &str) -> String {
        self.keys.history(group)
    }

    async fn entries(&self, group: &str, from_ms: Option<u64>) -> redis::RedisResult<Vec<Kept>> {
        let mut conn = self.conn.clone();
        let start = from_ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string());
        let raw: Vec<(String, Vec<(String, Value)>)> = redis::cmd("XRANGE")
            .arg(self.key(group))
            .arg(start)
            .arg("+")
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(_, fields)| Kept::parse(fields))
            .collect())
    }
}

/// One stream entry.
struct Kept {
    epoch: u64,
    offset: u64,
    frame: Bytes,
}

impl Kept {
    fn parse(fields: Vec<(String, Value)>) -> Option<Kept> {
        let (mut epoch, mut offset, mut frame) = (None, None, None);
        for (name, value) in fields {
            let Value::BulkString(bytes) = value else {
                continue;
            };
            match name.as_str() {
                "e" => epoch = std::str::from_utf8(&bytes).ok()?.parse().ok(),
                "s" => offset = std::str::from_utf8(&bytes).ok()?.parse().ok(),
                "f" => frame = Some(Bytes::from(bytes)),
                _ => {}
            }
        }
        Some(Kept {
            epoch: epoch?,
            offset: offset?,
            frame: frame?,
        })
    }
}

#[async_trait::async_trait]
impl<C> GroupHistory for RedisHistory<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn enabled(&self, group: &str) -> bool {
        self.config.rule(group).is_some()
    }

    async fn append(&self, group: &str, position: GroupPosition, frame: Bytes) {
        let Some(rule) = self.config.rule(group) else {
            return;
        };
        let ttl = rule.max_age.unwrap_or(RedisHistory::DEFAULT_IDLE_TTL);
        let key = self.key(group);
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(rule.max_len)
            .arg("*")
            .arg("e")
            .arg(position.epoch)
            .arg("s")
            .arg(position.offset)
            .arg("f")
            .arg(frame.as_ref())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore();
        let mut conn = self.conn.clone();
        if let Err(err) = pipe.query_async::<()>(&mut conn).await {
            // The hole this leaves makes later reads across it "not recovered".
            warn!(error = %err, group, "group history append failed");
        }
    }

    async fn since(&self, group: &str, since: Option<GroupPosition>) -> Recovery {
        let Some(rule) = self.config.rule(group) else {
            return Recovery::default();
        };
        let from = rule
            .max_age
            .map(|age| now_ms().saturating_sub(age.as_millis() as u64));
        let entries = match self.entries(group, from).await {
            Ok(entries) => entries,
            Err(err) => {
                warn!(error = %err, group, "group history unreadable");
                return Recovery::default();
            }
        };
        let Some(last) = entries.last() else {
            return Recovery::default();
        };
        let top = GroupPosition {
            epoch: last.epoch,
            offset: last.offset,
        };
        let answer = |recovered, frames| Recovery {
            top: Some(top),
            recovered,
            frames,
        };
        let Some(since) = since else {
            return answer(false, Vec::new());
        };
        if since.epoch != top.epoch || since.offset > top.offset {
            return answer(false, Vec::new());
        }
        // The entries after `since`, which must be since+1, since+2, ... top.
        let missed: Vec<&Kept> = entries
            .iter()
            .filter(|k| k.epoch == top.epoch && k.offset > since.offset)
            .collect();
        let consecutive = missed
            .iter()
            .enumerate()
            .all(|(i, k)| k.offset == since.offset + 1 + i as u64);
        if !consecutive || missed.len() as u64 != top.offset - since.offset {
            return answer(false, Vec::new());
        }
        answer(true, missed.iter().map(|k| k.frame.clone()).collect())
    }
}
