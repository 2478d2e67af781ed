//! The group log seam: who numbers group publishes.
//!
//! Every publish to a group takes a [`GroupPosition`] `(epoch, offset)` from the
//! [`GroupLog`] before it is encoded; the position travels in the `Push` frame (`EPOCH`
//! and `SEQ` fields), so a client can tell a gap from a restart. The contract every
//! implementation keeps:
//!
//! - Within one epoch, the offsets handed out for a group are 1, 2, 3, ... with no gap
//!   and no repeat, whichever node asks (a shared implementation hands them out from one
//!   counter per group, e.g. Redis `INCR`).
//! - A new epoch means the offsets restarted: a client compares offsets only when the
//!   epochs are equal. Epochs are opaque non-zero numbers below 2^53 (exact as JSON
//!   numbers); they are compared for equality, never ordered.
//! - `next_position` may wait (a network round trip). Callers hold the group's publish
//!   lock while they wait, so one node's publishes to one group keep their order.
//! - A failed call hands out nothing: the publish fails and is not sent.
//!
//! The default, [`LocalGroupLog`], keeps the counters in this process: right for a
//! single node, and for groups whose members are all on one node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::shard::ShardedMap;

/// Where one publish sits in its group's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GroupPosition {
    /// The log's epoch: offsets compare only within one epoch. Non-zero.
    pub epoch: u64,
    /// The publish's offset in the epoch, from 1.
    pub offset: u64,
}

/// A group log could not hand out a position (unreachable, timed out).
#[derive(Debug, thiserror::Error)]
#[error("group log: {0}")]
pub struct GroupLogError(pub Box<dyn std::error::Error + Send + Sync>);

/// Hands out group positions; see the module documentation for the contract.
#[async_trait]
pub trait GroupLog: Send + Sync + std::fmt::Debug + 'static {
    /// The position of the next publish to `group`.
    async fn next_position(&self, group: &str) -> Result<GroupPosition, GroupLogError>;

    /// A hint that this node has no members of `group` left. A local log may forget the
    /// group (its next publish starts a new epoch); a shared log ignores it.
    fn forget(&self, group: &str) {
        let _ = group;
    }
}

/// The in-process [`GroupLog`]: one counter per group, and a fresh epoch each time a
/// group is first published to after its creation (or after [`GroupLog::forget`]), so a
/// group that emptied and came back, or a restarted node, never repeats
/// `(epoch, offset)` pairs.
#[derive(Debug)]
pub struct LocalGroupLog {
    /// Mixed with a counter to make each group incarnation's epoch.
    start: u64,
    incarnations: AtomicU64,
    groups: ShardedMap<Arc<str>, GroupPosition>,
}

impl LocalGroupLog {
    /// An empty log; its epochs derive from the start time.
    pub fn new() -> LocalGroupLog {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        LocalGroupLog {
            start,
            incarnations: AtomicU64::new(0),
            groups: ShardedMap::new(),
        }
    }

    /// Groups it holds a counter for.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether it holds no counter.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn new_epoch(&self) -> u64 {
        let n = self.incarnations.fetch_add(1, Ordering::Relaxed);
        // splitmix64 of (start time, incarnation): distinct inputs give distinct,
        // well-spread outputs, so epochs of different starts do not collide in practice.
        let mut z = self
            .start
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // 53 bits, so the epoch is exact in JSON (a double) for HTTP and browser clients.
        ((z ^ (z >> 31)) >> 11).max(1)
    }

    /// [`GroupLog::next_position`] without the future: the local log never waits.
    pub fn next(&self, group: &str) -> GroupPosition {
        let mut shard = self.groups.shard(group);
        if let Some(position) = shard.get_mut(group) {
            position.offset += 1;
            return *position;
        }
        let position = GroupPosition {
            epoch: self.new_epoch(),
            offset: 1,
        };
        shard.insert(group.into(), position);
        position
    }
}

impl Default for LocalGroupLog {
    fn default() -> Self {
        LocalGroupLog::new()
    }
}

#[async_trait]
impl GroupLog for LocalGroupLog {
    async fn next_position(&self, group: &str) -> Result<GroupPosition, GroupLogError> {
        Ok(self.next(group))
    }

    fn forget(&self, group: &str) {
        self.groups.shard(group).remove(group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_from_one_per_group_within_an_epoch() {
        let log = LocalGroupLog::new();
        let a: Vec<_> = (0..3).map(|_| log.next("a")).collect();
        let b = log.next("b");
        assert_eq!(
            a.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(a.iter().all(|p| p.epoch == a[0].epoch && p.epoch != 0));
        assert_eq!(b.offset, 1);
        assert_ne!(b.epoch, a[0].epoch, "each group has its own epoch");
    }

    #[test]
    fn a_forgotten_group_comes_back_in_a_new_epoch() {
        let log = LocalGroupLog::new();
        let first = log.next("room");
        log.next("room");
        log.forget("room");
        assert!(log.is_empty());
        let again = log.next("room");
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, first.epoch);
    }

    #[test]
    fn two_logs_do_not_share_epochs() {
        let one = LocalGroupLog::new();
        let two = LocalGroupLog::new();
        assert_ne!(one.next("g").epoch, two.next("g").epoch);
    }
}
