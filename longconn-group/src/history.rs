//! Per-group bounded history, for recovery after a reconnect (issue 18).
//!
//! A group whose name matches a [`HistoryRule`] keeps its last publications (the
//! encoded `Push` frames with their positions): at most `max_len` of them and none older
//! than `max_age`. A client that rejoins with the last position it saw gets the pushes
//! it missed, in order, if they are all still kept and the epoch did not change
//! ([`GroupHistory::since`]); otherwise it is told "not recovered" and resyncs.
//!
//! [`GroupHistory`] is the seam: [`MemoryHistory`] keeps the frames in this process
//! (right for one node); a shared implementation (Redis Streams) can plug in behind the
//! same trait. Off by default: with no rule, nothing is kept.
//!
//! Memory bound of [`MemoryHistory`]: at most `max_groups` groups, each with at most its
//! rule's `max_len` frames (each at most the group layer's `max_frame_size`), so at
//! worst `max_groups * max(max_len) * max_frame_size` bytes, plus ~48 bytes per kept
//! frame. A group past `max_groups` keeps no history (its joins are never recovered).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use longconn_server::{GroupPosition, ShardedMap};
use std::sync::Arc;

/// Most publications one rule may keep per group.
pub const MAX_HISTORY_LEN: usize = 100_000;

/// Which groups keep history, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// Groups whose name starts with this prefix (`""`: every group).
    pub prefix: String,
    /// Most publications kept per group (1..=[`MAX_HISTORY_LEN`]).
    pub max_len: usize,
    /// Oldest publication kept, by the time it was appended; `None`: no age limit.
    pub max_age: Option<Duration>,
}

/// History settings: the rules (first matching prefix wins) and the global bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Rules in order; the first whose prefix matches a group applies. Empty: off.
    pub rules: Vec<HistoryRule>,
    /// Most groups with history kept at once (default 10,000).
    pub max_groups: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            rules: Vec::new(),
            max_groups: 10_000,
        }
    }
}

/// A history setting out of its documented range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid group history config: {0}")]
pub struct HistoryConfigError(pub &'static str);

impl HistoryConfig {
    /// Checks every rule and the bound.
    ///
    /// # Errors
    /// [`HistoryConfigError`] naming the value out of range.
    pub fn validate(&self) -> Result<(), HistoryConfigError> {
        if self.max_groups == 0 {
            return Err(HistoryConfigError("max_groups must be at least 1"));
        }
        for rule in &self.rules {
            if !(1..=MAX_HISTORY_LEN).contains(&rule.max_len) {
                return Err(HistoryConfigError("max_len must be 1..=100000"));
            }
            if rule.max_age == Some(Duration::ZERO) {
                return Err(HistoryConfigError("max_age must be positive"));
            }
        }
        Ok(())
    }

    /// The rule for `group`, if any.
    pub fn rule(&self, group: &str) -> Option<&HistoryRule> {
        self.rules.iter().find(|r| group.starts_with(&r.prefix))
    }
}

/// What a rejoin from a position gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// The group's last position (the `JoinAck`'s `EPOCH`/`SEQ`); `None` while nothing
    /// was published with history on.
    pub top: Option<GroupPosition>,
    /// Whether `frames` are exactly the pushes after the asked position (none missing).
    pub recovered: bool,
    /// The missed pushes, encoded, oldest first (empty unless `recovered`).
    pub frames: Vec<Bytes>,
}

/// Keeps recent publications per group; see the module documentation.
///
/// `append` and `since` may wait (a shared store is a network round trip away): the
/// publish waits for `append` under the group's publish lock, the joining connection
/// waits for `since` before it reads further frames. An implementation that fails to
/// keep a publication must answer later `since` calls from positions before it with
/// "not recovered" (never a replay with a hole).
#[async_trait::async_trait]
pub trait GroupHistory: Send + Sync + std::fmt::Debug + 'static {
    /// Whether `group` keeps history (a publish to it is numbered and kept even with no
    /// member on this node, and its log counter is not forgotten).
    fn enabled(&self, group: &str) -> bool;

    /// Keeps the publication at `position` (its encoded `Push` frame). Called under the
    /// group's publish lock, in position order, before the push reaches any member.
    async fn append(&self, group: &str, position: GroupPosition, frame: Bytes);

    /// The pushes after `since` (`None`: a first join, nothing to replay) and the
    /// group's last position. Called after the member was added, so a publish is either
    /// in the answer or reaches the member live (or both: the caller drops the live
    /// copies at or below `top`).
    async fn since(&self, group: &str, since: Option<GroupPosition>) -> Recovery;
}

/// No history: nothing is kept, no rejoin is recovered.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHistory;

#[async_trait::async_trait]
impl GroupHistory for NoHistory {
    fn enabled(&self, _group: &str) -> bool {
        false
    }

    async fn append(&self, _group: &str, _position: GroupPosition, _frame: Bytes) {}

    async fn since(&self, _group: &str, _since: Option<GroupPosition>) -> Recovery {
        Recovery::default()
    }
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

#[derive(Debug)]
struct Kept {
    epoch: u64,
    /// Offset of the last publication appended (kept or trimmed).
    last: u64,
    entries: VecDeque<Entry>,
}

/// [`GroupHistory`] in this process's memory; bounded as the module documentation says.
#[derive(Debug)]
pub struct MemoryHistory {
    config: HistoryConfig,
    groups: ShardedMap<Arc<str>, Kept>,
}

impl MemoryHistory {
    /// A history with these rules.
    ///
    /// # Errors
    /// [`HistoryConfigError`] when a value is out of range.
    pub fn new(config: HistoryConfig) -> Result<MemoryHistory, HistoryConfigError> {
        config.validate()?;
        Ok(MemoryHistory {
            config,
            groups: ShardedMap::new(),
        })
    }

    /// Groups with history kept.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    fn trim(entries: &mut VecDeque<Entry>, rule: &HistoryRule, now: Instant) {
        while entries.len() > rule.max_len {
            entries.pop_front();
        }
        if let Some(age) = rule.max_age {
            while entries
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.at) > age)
            {
                entries.pop_front();
            }
        }
    }
}

impl MemoryHistory {
    /// [`GroupHistory::append`] without the future: memory never waits.
    pub fn keep(&self, group: &str, position: GroupPosition, frame: Bytes) {
        let Some(rule) = self.config.rule(group) else {
            return;
        };
        let now = Instant::now();
        let full = self.groups.len() >= self.config.max_groups;
        let mut shard = self.groups.shard(group);
        let kept = match shard.get_mut(group) {
            Some(kept) => kept,
            None if full => return,
            None => shard.entry(group.into()).or_insert(Kept {
                epoch: position.epoch,
                last: 0,
                entries: VecDeque::new(),
            }),
        };
        if kept.epoch != position.epoch {
            kept.epoch = position.epoch;
            kept.entries.clear();
        }
        kept.last = position.offset;
        kept.entries.push_back(Entry {
            offset: position.offset,
            at: now,
            frame,
        });
        MemoryHistory::trim(&mut kept.entries, rule, now);
    }

    /// [`GroupHistory::since`] without the future.
    pub fn read(&self, group: &str, since: Option<GroupPosition>) -> Recovery {
        let Some(rule) = self.config.rule(group) else {
            return Recovery::default();
        };
        let mut shard = self.groups.shard(group);
        let Some(kept) = shard.get_mut(group) else {
            return Recovery::default();
        };
        MemoryHistory::trim(&mut kept.entries, rule, Instant::now());
        let top = Some(GroupPosition {
            epoch: kept.epoch,
            offset: kept.last,
        });
        let Some(since) = since else {
            return Recovery {
                top,
                recovered: false,
                frames: Vec::new(),
            };
        };
        let not_recovered = Recovery {
            top,
            recovered: false,
            frames: Vec::new(),
        };
        if since.epoch != kept.epoch || since.offset > kept.last {
            return not_recovered;
        }
        if since.offset == kept.last {
            return Recovery {
                top,
                recovered: true,
                frames: Vec::new(),
            };
        }
        // The first missed offset must still be kept.
        match kept.entries.front() {
            Some(first) if first.offset <= since.offset + 1 => {}
            _ => return not_recovered,
        }
        let frames = kept
            .entries
            .iter()
            .filter(|e| e.offset > since.offset)
            .map(|e| e.frame.clone())
            .collect();
        Recovery {
            top,
            recovered: true,
            frames,
        }
    }
}

#[async_trait::async_trait]
impl GroupHistory for MemoryHistory {
    fn enabled(&self, group: &str) -> bool {
        self.config.rule(group).is_some()
    }

    async fn append(&self, group: &str, position: GroupPosition, frame: Bytes) {
        self.keep(group, position, frame);
    }

    async fn since(&self, group: &str, since: Option<GroupPosition>) -> Recovery {
        self.read(group, since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(max_len: usize, max_age: Option<Duration>) -> MemoryHistory {
        MemoryHistory::new(HistoryConfig {
            rules: vec![HistoryRule {
                prefix: "room".into(),
                max_len,
                max_age,
            }],
            max_groups: 2,
        })
        .unwrap()
    }

    fn pos(epoch: u64, offset: u64) -> GroupPosition {
        GroupPosition { epoch, offset }
    }

    fn fill(h: &MemoryHistory, group: &str, epoch: u64, n: u64) {
        for i in 1..=n {
            h.keep(group, pos(epoch, i), Bytes::from(format!("m{i}")));
        }
    }

    #[test]
    fn replays_exactly_the_missed_publications_in_order() {
        let h = history(10, None);
        fill(&h, "room-1", 7, 5);
        let r = h.read("room-1", Some(pos(7, 2)));
        assert!(r.recovered);
        assert_eq!(r.top, Some(pos(7, 5)));
        assert_eq!(r.frames, vec!["m3", "m4", "m5"]);
        let r = h.read("room-1", Some(pos(7, 5)));
        assert!(r.recovered && r.frames.is_empty());
        let r = h.read("room-1", None);
        assert!(!r.recovered && r.frames.is_empty());
        assert_eq!(r.top, Some(pos(7, 5)));
    }

    #[test]
    fn trimmed_or_other_epoch_or_ahead_is_not_recovered() {
        let h = history(3, None);
        fill(&h, "room-1", 7, 10);
        assert!(
            !h.read("room-1", Some(pos(7, 6))).recovered,
            "8 is the oldest kept"
        );
        assert_eq!(
            h.read("room-1", Some(pos(7, 7))).frames,
            vec!["m8", "m9", "m10"]
        );
        assert!(
            !h.read("room-1", Some(pos(8, 9))).recovered,
            "epoch changed"
        );
        assert!(
            !h.read("room-1", Some(pos(7, 11))).recovered,
            "ahead of the log"
        );
        // A new epoch drops what the old one kept.
        h.keep("room-1", pos(9, 1), Bytes::from_static(b"n1"));
        let r = h.read("room-1", Some(pos(9, 0)));
        assert!(r.recovered);
        assert_eq!(r.frames, vec!["n1"]);
    }

    #[test]
    fn old_publications_age_out() {
        let h = history(100, Some(Duration::from_millis(30)));
        fill(&h, "room-1", 1, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.read("room-1", Some(pos(1, 1))).recovered);
        assert!(
            h.read("room-1", Some(pos(1, 2))).recovered,
            "nothing missed"
        );
    }

    #[test]
    fn off_for_unmatched_groups_and_bounded_in_groups() {
        let h = history(10, None);
        assert!(!h.enabled("chat"));
        fill(&h, "chat", 1, 3);
        assert_eq!(h.group_count(), 0);
        fill(&h, "room-a", 1, 1);
        fill(&h, "room-b", 1, 1);
        fill(&h, "room-c", 1, 1);
        assert_eq!(h.group_count(), 2, "max_groups");
        assert!(!h.read("room-c", Some(pos(1, 0))).recovered);
        assert!(
            MemoryHistory::new(HistoryConfig {
                rules: vec![HistoryRule {
                    prefix: String::new(),
                    max_len: 0,
                    max_age: None
                }],
                ..HistoryConfig::default()
            })
            .is_err()
        );
    }
}
