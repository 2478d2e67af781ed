//! The relay seam: delivery between access nodes.
//!
//! A device's route (from the [`crate::RouteStore`]) names the node holding its
//! connection. When that node is not this one, the push, kick or group message goes
//! through the [`Relay`]; the node at the other end hands it to its [`RelayInbox`].
//! Three kinds of message cross nodes:
//!
//! - **a batch of pushes** for one node ([`Relay::push_batch`]): one message per node
//!   per API call, however many targets it holds. The answer has one [`RelayResult`] per
//!   target, in order.
//! - **a group message** ([`Relay::publish_group`]): sent once to each other node that
//!   has members of the group (one message per node, not per member). It carries the
//!   [`GroupPosition`] the publishing node took from the [`crate::GroupLog`], already
//!   stamped into the encoded frame, so every node delivers the same `(epoch, seq)`; a
//!   receiving node never takes a position of its own.
//! - **a presence query** ([`Relay::group_members`]): sent once to each other node that
//!   has members of the group, asking for its local member count; the answers add up to
//!   the cluster-wide count ([`Server::group_presence`](crate::Server::group_presence)).
//!   A node that does not answer in time is counted in
//!   [`RemotePresence::unknown_nodes`], never given a guessed count.
//! - **a kick** ([`Relay::kick`]) of a connection or device on a node, with a wire code
//!   (`Code::Replaced` for a duplicate login on another node, `Code::Kicked` for an
//!   operator's kick). The server sends the first kind itself: when registering a login's
//!   route replaces a route to another node ([`crate::RouteStore::register_replacing`]),
//!   its route sync task kicks that connection, waiting at most
//!   [`crate::ServerConfig::relay_timeout`] (the route changes queued behind wait too).
//!
//! The contract every implementation keeps:
//!
//! - An answer is what the other node's [`RelayInbox`] returned: `Queued`, `Offline` or
//!   `Dropped` per target. A target whose node did not answer in time (down, partitioned,
//!   slow) is [`RelayResult::Unknown`]: the push may or may not have been queued there,
//!   and it is never counted as delivered. An implementation bounds its own wait; the
//!   callers also bound it ([`crate::ServerConfig::relay_timeout`]) and answer `Unknown`
//!   for everything when that runs out.
//! - A node that does not exist (no such node in the cluster's registry) is `Offline`:
//!   its routes are stale.
//! - The relay never retries a push on its own: `Unknown` goes back to the caller, who
//!   decides (a retried push may arrive twice).
//! - Messages from one node to another arrive in the order they were sent. A group's
//!   messages from different publishing nodes may interleave: a client orders them by
//!   `(epoch, seq)` (within one epoch, a lower `seq` than one already seen is late, not
//!   new).
//! - [`Relay::group_active`] and [`Relay::group_inactive`] are hints from this node's
//!   group layer: the first member of a group joined here, the last one left. They run
//!   on connection tasks under the group layer's locks, so they must not wait (queue
//!   them). A cluster relay keeps, per group, the set of nodes with members, and sends a
//!   group message to those nodes only.
//!
//! The default, [`LocalRelay`], is a single node's: there is no other node, so a route
//! to one is stale (`Offline`), a kick there finds nobody, and a group message reaches
//! no other node.

use crate::metrics::{PushMode, PushOutcomeLabel, PushTally};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use longconn_core::protocol::{Code, Text};
use longconn_core::session::{PushOutcome, Transmit};

use crate::Shared;
use crate::group_log::GroupPosition;
use crate::groups::GroupDelivery;

/// What became of one relayed push (or kick) on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayResult {
    /// Queued for the connection (for a kick: the kick was queued).
    Queued,
    /// No such connection or device on that node.
    Offline,
    /// The connection's queue was full: dropped by its slow-consumer policy.
    Dropped,
    /// The node did not answer in time: maybe queued, maybe not. Never counted as
    /// delivered.
    Unknown,
}

impl From<PushOutcome> for RelayResult {
    fn from(outcome: PushOutcome) -> RelayResult {
        match outcome {
            PushOutcome::Queued => RelayResult::Queued,
            PushOutcome::Dropped | PushOutcome::Disconnected => RelayResult::Dropped,
            PushOutcome::NotActive => RelayResult::Offline,
        }
    }
}

/// One target of a relayed batch: a device of the batch's app, with the connection id
/// its route named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    /// The device id.
    pub device: String,
    /// The connection id from its route; the receiving node falls back to the device's
    /// current connection if this one has gone.
    pub conn_id: u64,
}

/// The encoded `Push` frames of a relayed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFrames {
    /// One frame for every target (encoded once, as [`crate::Pusher::push_devices`]).
    Shared(Bytes),
    /// One frame per target, in the targets' order.
    Each(Vec<Bytes>),
}

impl BatchFrames {
    /// The frame for target `i`.
    pub fn get(&self, i: usize) -> Option<&Bytes> {
        match self {
            BatchFrames::Shared(frame) => Some(frame),
            BatchFrames::Each(frames) => frames.get(i),
        }
    }
}

/// Pushes for the connections of one node: one relay message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayBatch {
    /// The app every target belongs to.
    pub app: String,
    /// Who gets a push.
    pub targets: Vec<RelayTarget>,
    /// What they get: complete encoded `Push` frames, queued as they are.
    pub frames: BatchFrames,
}

/// A group publish for the other nodes with members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMessage {
    /// The group id.
    pub group: String,
    /// Where the publish sits in the group's log; the frame carries the same values.
    pub position: GroupPosition,
    /// The encoded `Push` frame (group, epoch and seq set), delivered as it is.
    pub frame: Bytes,
}

/// What the other nodes did with a group message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteGroupReport {
    /// Nodes that answered.
    pub nodes: usize,
    /// Nodes the message was sent to that did not answer in time: their members may or
    /// may not have it.
    pub unknown_nodes: usize,
    /// Their members' pushes, summed over the nodes that answered.
    pub delivery: GroupDelivery,
}

/// How many members of a group the other nodes hold ([`Relay::group_members`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemotePresence {
    /// Members, summed over the nodes that answered.
    pub members: usize,
    /// Other nodes that answered (each with its local member count).
    pub nodes: usize,
    /// Other nodes asked that did not answer in time: their members are not counted.
    pub unknown_nodes: usize,
    /// The relay could not tell which nodes hold members (the cluster's store could not
    /// be read, or the whole query ran out of
    /// [`crate::ServerConfig::relay_timeout`]): the counts above are incomplete and the
    /// number of nodes left out is not known.
    pub incomplete: bool,
}

impl std::ops::AddAssign for RemotePresence {
    fn add_assign(&mut self, other: RemotePresence) {
        self.members += other.members;
        self.nodes += other.nodes;
        self.unknown_nodes += other.unknown_nodes;
        self.incomplete |= other.incomplete;
    }
}

/// A group's presence across the cluster: this node's members plus the other nodes'
/// ([`crate::Server::group_presence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupPresence {
    /// Members connected to this node.
    pub local_members: usize,
    /// What the other nodes with members answered.
    pub remote: RemotePresence,
}

impl GroupPresence {
    /// Members on this node and on the other nodes that answered.
    pub fn members(&self) -> usize {
        self.local_members + self.remote.members
    }
}

/// Who a relayed kick is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickTarget {
    /// A connection, by id.
    Conn(u64),
    /// The connection logged in as (app, device).
    Device {
        /// App id.
        app: String,
        /// Device id.
        device: String,
    },
}

/// A kick for a connection on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KickRequest {
    /// Who.
    pub target: KickTarget,
    /// The wire code of the `Kick` frame: `Code::Replaced` for a duplicate login on
    /// another node, `Code::Kicked` for an operator.
    pub code: Code,
    /// The kick's message for the client.
    pub message: String,
}

/// Delivery to other access nodes; see the module documentation for the contract.
#[async_trait]
pub trait Relay: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `batch` to `node` in one message; one result per target, in order. A
    /// shorter answer counts the missing targets as [`RelayResult::Unknown`].
    async fn push_batch(&self, node: u16, batch: &RelayBatch) -> Vec<RelayResult>;

    /// Sends `message` once to each other node with members of its group.
    async fn publish_group(&self, message: &GroupMessage) -> RemoteGroupReport;

    /// Kicks a connection or device on `node`: `Queued` (the kick was queued there),
    /// `Offline` (nobody to kick) or `Unknown` (no answer).
    async fn kick(&self, node: u16, request: &KickRequest) -> RelayResult;

    /// Asks each other node with members of `group` for its local member count, every
    /// node at once, and sums the answers. A node that does not answer within the
    /// relay's own bound is counted in [`RemotePresence::unknown_nodes`]; a node that
    /// does not exist any more holds no members (not counted at all). Default: there is
    /// no other node.
    async fn group_members(&self, group: &str) -> RemotePresence {
        let _ = group;
        RemotePresence::default()
    }

    /// Hint: this node now has members of `group`. Must not wait.
    fn group_active(&self, group: &str) {
        let _ = group;
    }

    /// Hint: this node has no members of `group` left. Must not wait.
    fn group_inactive(&self, group: &str) {
        let _ = group;
    }
}

/// The single-node [`Relay`]: there are no other nodes. A route to one is stale, so its
/// targets are `Offline`; a kick there finds nobody; a group message reaches no node; a
/// presence query counts no remote member.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalRelay;

#[async_trait]
impl Relay for LocalRelay {
    async fn push_batch(&self, _node: u16, batch: &RelayBatch) -> Vec<RelayResult> {
        vec![RelayResult::Offline; batch.targets.len()]
    }

    async fn publish_group(&self, _message: &GroupMessage) -> RemoteGroupReport {
        RemoteGroupReport::default()
    }

    async fn kick(&self, _node: u16, _request: &KickRequest) -> RelayResult {
        RelayResult::Offline
    }

    async fn group_members(&self, _group: &str) -> RemotePresence {
        RemotePresence::default()
    }
}

/// `group`'s members here (from the server's group layer) and on the other nodes (through
/// the relay, bounded by [`crate::ServerConfig::relay_timeout`]; a query that runs out
/// of it is [`RemotePresence::incomplete`]).
pub(crate) async fn group_presence(shared: &Shared, group: &str) -> GroupPresence {
    let local_members = shared.groups.local_members(group);
    let remote = tokio::time::timeout(shared.relay_timeout, shared.relay.group_members(group))
        .await
        .unwrap_or(RemotePresence {
            incomplete: true,
            ..RemotePresence::default()
        });
    GroupPresence {
        local_members,
        remote,
    }
}

/// The receiving end of a relay on one node: a cluster layer calls it with every relay
/// message addressed to this node and sends the answer back. From
/// [`crate::Server::relay_inbox`]; cheap to clone.
///
/// Its methods never take a new group position and never relay further: a message is
/// delivered to this node's connections or reported `Offline`.
#[derive(Debug, Clone)]
pub struct RelayInbox {
    pub(crate) shared: Arc<Shared>,
}

impl RelayInbox {
    /// This node's id.
    pub fn node_id(&self) -> u16 {
        self.shared.hub.node_id()
    }

    /// Queues each push of `batch` for its connection here: by the route's connection
    /// id, else the device's current connection. One result per target (never
    /// `Unknown`).
    pub fn push_batch(&self, batch: &RelayBatch) -> Vec<RelayResult> {
        let hub = &self.shared.hub;
        let mut tally = PushTally::default();
        let stamp = crate::metrics::queue_stamp();
        let results = batch
            .targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let Some(frame) = batch.frames.get(i) else {
                    tally.add(PushOutcomeLabel::Offline);
                    return RelayResult::Offline;
                };
                let conn = hub
                    .get(target.conn_id)
                    .or_else(|| hub.find_device(&batch.app, &target.device));
                match conn {
                    Some(conn) => {
                        let outcome = conn.push_stamped(Transmit::Encoded(frame.clone()), stamp);
                        tally.add(PushOutcomeLabel::of(outcome));
                        RelayResult::from(outcome)
                    }
                    None => {
                        tally.add(PushOutcomeLabel::Offline);
                        RelayResult::Offline
                    }
                }
            })
            .collect();
        tally.flush(&self.shared.metrics.pushes, PushMode::CrossNode);
        results
    }

    /// Delivers a group message to this node's members of its group, with the position
    /// it carries, through the server's group layer.
    ///
    /// # Cancel safety
    /// As the group layer's fan-out: chunks already handed out are delivered.
    pub async fn publish_group(&self, message: &GroupMessage) -> GroupDelivery {
        self.shared
            .groups
            .deliver(&message.group, message.frame.clone())
            .await
    }

    /// This node's member count of `group`, from the server's group layer (what a
    /// presence query from another node is answered with).
    pub fn group_members(&self, group: &str) -> usize {
        self.shared.groups.local_members(group)
    }

    /// Kicks the connection or device here: `Queued` or `Offline`.
    pub fn kick(&self, request: &KickRequest) -> RelayResult {
        let conn = match &request.target {
            KickTarget::Conn(id) => self.shared.hub.get(*id),
            KickTarget::Device { app, device } => self.shared.hub.find_device(app, device),
        };
        let message = Text::from(request.message.as_str());
        match conn {
            Some(conn) if conn.kick(request.code, message) => RelayResult::Queued,
            _ => RelayResult::Offline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(frames: BatchFrames, n: usize) -> RelayBatch {
        RelayBatch {
            app: "app".into(),
            targets: (0..n)
                .map(|i| RelayTarget {
                    device: format!("d{i}"),
                    conn_id: (2 << 48) | i as u64,
                })
                .collect(),
            frames,
        }
    }

    #[test]
    fn batch_frames_are_shared_or_one_per_target() {
        let shared = BatchFrames::Shared(Bytes::from_static(b"f"));
        assert_eq!(shared.get(0), shared.get(99));
        let each = BatchFrames::Each(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(each.get(1), Some(&Bytes::from_static(b"b")));
        assert_eq!(each.get(2), None);
    }

    #[tokio::test]
    async fn the_local_relay_has_no_other_node() {
        let relay = LocalRelay;
        let frames = BatchFrames::Shared(Bytes::from_static(b"f"));
        assert_eq!(
            relay.push_batch(2, &batch(frames, 3)).await,
            vec![RelayResult::Offline; 3]
        );
        let message = GroupMessage {
            group: "g".into(),
            position: GroupPosition {
                epoch: 1,
                offset: 1,
            },
            frame: Bytes::new(),
        };
        assert_eq!(
            relay.publish_group(&message).await,
            RemoteGroupReport::default()
        );
        let kick = KickRequest {
            target: KickTarget::Conn(2 << 48),
            code: Code::Replaced,
            message: "elsewhere".into(),
        };
        assert_eq!(relay.kick(2, &kick).await, RelayResult::Offline);
        assert_eq!(relay.group_members("g").await, RemotePresence::default());
    }

    #[test]
    fn presence_adds_up_and_stays_incomplete_once_incomplete() {
        let mut remote = RemotePresence {
            members: 3,
            nodes: 1,
            unknown_nodes: 0,
            incomplete: false,
        };
        remote += RemotePresence {
            members: 2,
            nodes: 1,
            unknown_nodes: 1,
            incomplete: true,
        };
        assert_eq!(
            remote,
            RemotePresence {
                members: 5,
                nodes: 2,
                unknown_nodes: 1,
                incomplete: true
            }
        );
        let presence = GroupPresence {
            local_members: 4,
            remote,
        };
        assert_eq!(presence.members(), 9);
    }

    #[test]
    fn push_outcomes_map_to_relay_results() {
        assert_eq!(RelayResult::from(PushOutcome::Queued), RelayResult::Queued);
        assert_eq!(
            RelayResult::from(PushOutcome::Disconnected),
            RelayResult::Dropped
        );
        assert_eq!(
            RelayResult::from(PushOutcome::NotActive),
            RelayResult::Offline
        );
    }
}
