//! The seam between connection drivers and a group layer. `longconn-group`'s registry
//! implements [`GroupMembership`]; without one, the server refuses joins with
//! `group_forbidden` ([`NoGroups`]).
//!
//! Joins and leaves run on the connection's own task, synchronously, so a client's
//! `JoinGroup` then `LeaveGroup` are applied in the order sent, and a connection's
//! [`GroupMembership::leave_all`] runs after its last join.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::group_log::GroupPosition;
use crate::hub::{ConnHandle, DeviceKey};
use longconn_core::protocol::Code;

/// What one group push did on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupDelivery {
    /// Members it was sent to.
    pub members: usize,
    /// Pushes queued.
    pub queued: usize,
    /// Members whose queue was full, or that closed meanwhile.
    pub dropped: usize,
}

impl std::ops::AddAssign for GroupDelivery {
    fn add_assign(&mut self, other: GroupDelivery) {
        self.members += other.members;
        self.queued += other.queued;
        self.dropped += other.dropped;
    }
}

/// Group membership as the driver needs it. Implementations must be quick (no I/O): they
/// run on the connection's task.
pub trait GroupMembership: Send + Sync + std::fmt::Debug + 'static {
    /// Adds `conn` (logged in as `device`) to `group`. Joining a group twice succeeds.
    ///
    /// # Errors
    /// The wire code for the client: `group_limit`, `group_full` or `group_forbidden`.
    fn join(&self, conn: &ConnHandle, device: &DeviceKey, group: &str) -> Result<(), Code>;

    /// Removes connection `conn_id` from `group`. Leaving a group it is not in succeeds.
    fn leave(&self, conn_id: u64, group: &str) -> Result<(), Code>;

    /// Removes connection `conn_id` from every group (it closed).
    fn leave_all(&self, conn_id: u64);

    /// Stops the group layer's background work (fan-out workers) once shutdown has
    /// closed every connection, after it has finished what was queued. Resolves to the
    /// number of queued fan-out chunks finished after the stop. Default: nothing runs
    /// in the background.
    fn close(&self) -> Pin<Box<dyn Future<Output = u64> + Send + '_>> {
        Box::pin(std::future::ready(0))
    }

    /// How many connections on this node are members of `group` (what a presence query
    /// from another node is answered with). Must be quick: it runs on the relay's
    /// request handler. Default: no members.
    fn local_members(&self, group: &str) -> usize {
        let _ = group;
        0
    }

    /// Delivers an already numbered and encoded group push (`frame`: a `Push` frame
    /// with its group, epoch and seq set, relayed from the node that published it) to
    /// this node's members of `group`, without taking a new position, in order with
    /// this node's own publishes to the group. Default: no members.
    fn deliver(
        &self,
        group: &str,
        frame: Bytes,
    ) -> Pin<Box<dyn Future<Output = GroupDelivery> + Send + '_>> {
        let _ = (group, frame);
        Box::pin(std::future::ready(GroupDelivery::default()))
    }

    /// Called right after a successful [`GroupMembership::join`] (so a concurrent
    /// publish is either in the answer or reaches the member live): the group's last
    /// position and, when `since` is given and the group's history still holds every
    /// push after it in the same epoch, those pushes (encoded, oldest first). It may
    /// wait (a shared history); the connection reads no further frame meanwhile, so its
    /// frames keep their order. Default: no history.
    fn recover<'a>(
        &'a self,
        group: &'a str,
        since: Option<GroupPosition>,
    ) -> Pin<Box<dyn Future<Output = JoinRecovery> + Send + 'a>> {
        let _ = (group, since);
        Box::pin(std::future::ready(JoinRecovery::default()))
    }
}

/// What a join learns from the group's history ([`GroupMembership::recover`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinRecovery {
    /// The group's last position (sent in `JoinAck`); `None` without history.
    pub position: Option<GroupPosition>,
    /// Whether `frames` are exactly the pushes after the asked position.
    pub recovered: bool,
    /// The missed pushes, encoded `Push` frames, oldest first.
    pub frames: Vec<Bytes>,
}

/// No group layer: every join is refused with `group_forbidden`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGroups;

impl GroupMembership for NoGroups {
    fn join(&self, _conn: &ConnHandle, _device: &DeviceKey, _group: &str) -> Result<(), Code> {
        Err(Code::GroupForbidden)
    }

    fn leave(&self, _conn_id: u64, _group: &str) -> Result<(), Code> {
        Ok(())
    }

    fn leave_all(&self, _conn_id: u64) {}
}
