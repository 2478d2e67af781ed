//! [`GroupRegistry`]: which of this node's connections are in which group, and
//! [`GroupRegistry::publish`].
//!
//! Locks are always taken in one order: the connection's membership shard, then the
//! group's shard, then the group's member list. Publishing takes only the last two, and
//! briefly: it works on a snapshot of the members (an `Arc<[ConnHandle]>` kept until the
//! membership changes), so joins and leaves never wait for a fan-out.
//!
//! In a cluster ([`GroupRegistry::with_relay`]), a publish also goes once to every other
//! node with members of the group, carrying its position; each of those nodes delivers
//! it to its own members through [`GroupMembership::deliver`] (the server's
//! `RelayInbox` calls it) without taking a position of its own.

use crate::metrics::group_metrics;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use longconn_core::{Code, Frame, Text};
use longconn_server::{
    ConnHandle, DeviceKey, GroupDelivery, GroupLog, GroupMembership, GroupMessage, GroupPosition,
    Hub, JoinRecovery, LocalGroupLog, PushMessage, Relay, RemoteGroupReport, ShardedMap,
};

use crate::config::GroupConfig;
use crate::error::{Error, Result};
use crate::fanout::{self, FanoutPool};
use crate::history::{GroupHistory, MemoryHistory, NoHistory};

/// Decides whether a client may join a group (client-initiated joins only; server-side
/// joins through [`GroupRegistry::join`] are trusted). Runs on the connection's task:
/// keep it quick and free of I/O.
pub trait JoinAuthorizer: Send + Sync + 'static {
    /// Whether `device` may join `group`.
    fn may_join(&self, device: &DeviceKey, group: &str) -> bool;
}

impl<F: Fn(&DeviceKey, &str) -> bool + Send + Sync + 'static> JoinAuthorizer for F {
    fn may_join(&self, device: &DeviceKey, group: &str) -> bool {
        self(device, group)
    }
}

/// Lets every client join every group (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl JoinAuthorizer for AllowAll {
    fn may_join(&self, _device: &DeviceKey, _group: &str) -> bool {
        true
    }
}

/// What one publish did: on this node, plus the other nodes that answered (with a
/// relay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Members when the push was sent.
    pub members: usize,
    /// Pushes queued.
    pub queued: usize,
    /// Members whose queue was full (or that closed meanwhile): `members - queued`.
    pub dropped: usize,
    /// Other nodes that delivered the publish to their members (and are counted above).
    pub remote_nodes: usize,
    /// Other nodes the publish was relayed to that did not answer in time: their
    /// members may or may not have it, and are not counted above.
    pub unknown_nodes: usize,
    /// The push's sequence number (offset) in its group's log epoch, from 1; 0 when the
    /// group has no members here, no relay is configured, and nothing was sent.
    pub seq: u64,
    /// The epoch of the group's log that `seq` counts in; 0 when nothing was sent.
    pub epoch: u64,
}

struct Group {
    id: Arc<str>,
    members: Mutex<Members>,
    /// Held for a whole publish, so one group's pushes reach every member in `seq` order.
    publishing: tokio::sync::Mutex<()>,
    /// This node's publishes to the group waiting for `publishing` or fanning out.
    pending: AtomicUsize,
}

/// Members whose queues a publish looks at to tell whether the group is saturated.
const BACKLOG_SAMPLE: usize = 8;

/// One publish counted in [`Group::pending`] until it is dropped (finished, failed or
/// cancelled).
struct PendingPublish<'a>(&'a AtomicUsize);

impl Drop for PendingPublish<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Members {
    list: Vec<ConnHandle>,
    /// Connection id -> position in `list`.
    index: HashMap<u64, usize>,
    /// `list` as of the last publish, until the membership changes.
    snapshot: Option<Arc<[ConnHandle]>>,
}

impl Group {
    fn new(id: &str) -> Group {
        Group {
            id: id.into(),
            members: Mutex::new(Members::default()),
            publishing: tokio::sync::Mutex::new(()),
            pending: AtomicUsize::new(0),
        }
    }

    /// Counts a publish in, unless `max` are pending already.
    fn admit(&self, max: usize) -> Option<PendingPublish<'_>> {
        let admitted = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        admitted.ok().map(|_| PendingPublish(&self.pending))
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn snapshot(&self) -> Arc<[ConnHandle]> {
        let mut members = self.members();
        if let Some(snapshot) = &members.snapshot {
            return snapshot.clone();
        }
        let snapshot: Arc<[ConnHandle]> = members.list.as_slice().into();
        members.snapshot = Some(snapshot.clone());
        snapshot
    }
}

impl Members {
    fn insert(&mut self, conn: &ConnHandle) {
        group_metrics().members.increment(1.0);
        self.index.insert(conn.id(), self.list.len());
        self.list.push(conn.clone());
        self.snapshot = None;
    }

    fn remove(&mut self, conn_id: u64) {
        if let Some(pos) = self.index.remove(&conn_id) {
            group_metrics().members.decrement(1.0);
            self.list.swap_remove(pos);
            if let Some(moved) = self.list.get(pos) {
                self.index.insert(moved.id(), pos);
            }
            self.snapshot = None;
        }
    }
}

/// This node's groups. Share it as an `Arc`: the server uses it as its
/// [`GroupMembership`], the push API publishes through it.
pub struct GroupRegistry {
    config: GroupConfig,
    authorizer: Arc<dyn JoinAuthorizer>,
    groups: ShardedMap<Arc<str>, Arc<Group>>,
    /// Connection id -> the groups it is in.
    memberships: ShardedMap<u64, Vec<Arc<Group>>>,
    pool: FanoutPool,
    /// Numbers each publish: (epoch, offset).
    log: Arc<dyn GroupLog>,
    /// Carries publishes to the other nodes with members, and hears which groups have
    /// members here. `None`: a single node.
    relay: Option<Arc<dyn Relay>>,
    /// The runtime the members' drivers run on, when publishes may come from another
    /// thread ([`GroupRegistry::wake_on`]).
    drivers: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Publishes refused with [`Error::Saturated`].
    saturated: AtomicU64,
    /// Recent publications of groups with history (recovery after a reconnect).
    history: Arc<dyn GroupHistory>,
    /// Puts the publishes of each group with history in one order, members here or not.
    kept_order: KeptOrder,
}

/// Orders the publishes of groups with history ([`GroupRegistry::publish`]), whether or
/// not the group has an entry here at the time: a group emptied and joined again gets a
/// new entry (and a new `publishing` lock), so the entry's lock alone does not order a
/// publish that started before the rejoin against one that started after it. Striped
/// by group id, so its memory is fixed; two groups on one stripe wait for each other's
/// publishes.
struct KeptOrder {
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::hash::RandomState,
}

impl KeptOrder {
    const STRIPES: usize = 64;

    fn new() -> KeptOrder {
        KeptOrder {
            stripes: (0..KeptOrder::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    async fn lock(&self, group: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher;
        let stripe = self.hasher.hash_one(group) as usize % KeptOrder::STRIPES;
        self.stripes[stripe].lock().await
    }
}

impl std::fmt::Debug for GroupRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRegistry")
            .field("config", &self.config)
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl GroupRegistry {
    /// A registry that lets every client join every group.
    pub fn new(config: GroupConfig) -> GroupRegistry {
        GroupRegistry::with_authorizer(config, AllowAll)
    }

    /// A registry whose client-initiated joins `authorizer` checks.
    pub fn with_authorizer(config: GroupConfig, authorizer: impl JoinAuthorizer) -> GroupRegistry {
        GroupRegistry {
            pool: FanoutPool::new(config.fanout_workers()),
            authorizer: Arc::new(authorizer),
            groups: ShardedMap::new(),
            memberships: ShardedMap::new(),
            log: Arc::new(LocalGroupLog::new()),
            kept_order: KeptOrder::new(),
            relay: None,
            drivers: std::sync::OnceLock::new(),
            saturated: AtomicU64::new(0),
            history: match MemoryHistory::new(config.history().clone()) {
                Ok(history) if !config.history().rules.is_empty() => Arc::new(history),
                _ => Arc::new(NoHistory),
            },
            config,
        }
    }

    /// Keeps recent publications in `history` (for the groups its rules match), so a
    /// client rejoining with its last position gets what it missed
    /// ([`GroupMembership::recover`]). Default: a [`MemoryHistory`] with the config's
    /// [`GroupConfig::history`] rules (none: off).
    pub fn with_history(mut self, history: Arc<dyn GroupHistory>) -> GroupRegistry {
        self.history = history;
        self
    }

    /// Publishes refused since start because their group's fan-out was saturated
    /// ([`Error::Saturated`]).
    pub fn saturated_publishes(&self) -> u64 {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Says that the members' drivers run on `runtime` while publishes may come from
    /// other threads (the gateway's HTTP API has a thread of its own). A publisher then
    /// queues the push to every member without waking any and spawns one task on
    /// `runtime` that wakes them all there: a wake-up across threads costs a scheduler
    /// injection and often a futex call that hands the core to the woken runtime, once
    /// per member, while a wake-up on the runtime itself is a push on its local queue.
    /// Set once; later calls are ignored.
    pub fn wake_on(&self, runtime: tokio::runtime::Handle) {
        let _ = self.drivers.set(runtime);
    }

    /// Takes publish positions from `log` instead of the in-process
    /// [`LocalGroupLog`] (a cluster shares one log, so every node numbers a publish the
    /// same way).
    pub fn with_group_log(mut self, log: Arc<dyn GroupLog>) -> GroupRegistry {
        self.log = log;
        self
    }

    /// Relays every publish to the other nodes with members of the group (the server's
    /// relay, so both reach the same cluster), and tells the relay which groups have
    /// members on this node ([`Relay::group_active`], [`Relay::group_inactive`]). Use a
    /// shared [`GroupLog`] with it, so every node's publishes are numbered in one log.
    pub fn with_relay(mut self, relay: Arc<dyn Relay>) -> GroupRegistry {
        self.relay = Some(relay);
        self
    }

    /// The limits in force.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Adds `conn` to `group` on the server's behalf (no authorizer; limits apply).
    /// Joining twice succeeds. The client is not told; pushes to the group carry its id.
    ///
    /// # Errors
    /// [`Error::GroupLimit`], [`Error::GroupFull`], [`Error::InvalidGroupId`], or
    /// [`Error::Closed`] if the connection closed before the join took effect.
    pub fn join(&self, conn: &ConnHandle, group: &str) -> Result<()> {
        self.check_id(group)?;
        self.insert_live(conn, group)
    }

    /// Inserts the membership, then undoes it if the connection has closed meanwhile:
    /// the driver closes the inbox before it calls `leave_all`, so a join that lands
    /// after that must clean up after itself.
    fn insert_live(&self, conn: &ConnHandle, group: &str) -> Result<()> {
        self.insert(conn, group)?;
        if conn.is_closed() {
            self.leave(conn.id(), group);
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Adds the connection logged in as (app, device) on `hub` to `group`.
    ///
    /// # Errors
    /// As [`GroupRegistry::join`], and [`Error::Closed`] if the device is not connected.
    pub fn join_device(&self, hub: &Hub, app: &str, device: &str, group: &str) -> Result<()> {
        let conn = hub.find_device(app, device).ok_or(Error::Closed)?;
        self.join(&conn, group)
    }

    /// Removes connection `conn_id` from `group`. Returns whether it was a member.
    pub fn leave(&self, conn_id: u64, group: &str) -> bool {
        let mut memberships = self.memberships.shard(&conn_id);
        let Some(groups) = memberships.get_mut(&conn_id) else {
            return false;
        };
        let Some(pos) = groups.iter().position(|g| &*g.id == group) else {
            return false;
        };
        let removed = groups.swap_remove(pos);
        if groups.is_empty() {
            memberships.remove(&conn_id);
        }
        self.remove_member(&removed, conn_id);
        true
    }

    /// Removes connection `conn_id` from all its groups. Returns how many it was in.
    pub fn leave_all(&self, conn_id: u64) -> usize {
        let groups = self.memberships.shard(&conn_id).remove(&conn_id);
        let groups = groups.unwrap_or_default();
        for group in &groups {
            self.remove_member(group, conn_id);
        }
        groups.len()
    }

    /// Members of `group` on this node (one shard lock and one group lock).
    pub fn members(&self, group: &str) -> usize {
        let group = self.groups.shard(group).get(group).cloned();
        group.map_or(0, |g| g.members().list.len())
    }

    /// Groups with at least one member on this node.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The groups connection `conn_id` is in.
    pub fn groups_of(&self, conn_id: u64) -> Vec<String> {
        self.memberships
            .shard(&conn_id)
            .get(&conn_id)
            .map(|groups| groups.iter().map(|g| g.id.to_string()).collect())
            .unwrap_or_default()
    }

    /// Pushes `message` to every member of `group` on this node: numbered with the
    /// next position of the group's log (`epoch`, `seq`), encoded once, each member's
    /// queue given a shared copy. Groups larger than [`GroupConfig::fanout_chunk`] are
    /// pushed in chunks by the worker pool. Publishes to one group are applied one after
    /// another, so members see `seq` in order.
    ///
    /// With a relay ([`GroupRegistry::with_relay`]), the same encoded push also goes,
    /// while the local fan-out runs, once to each other node with members (even when this
    /// node has none), and the report adds what those nodes answered within
    /// [`GroupConfig::relay_timeout`].
    ///
    /// # Errors
    /// [`Error::Encode`] if the push is larger than [`GroupConfig::max_frame_size`]
    /// (checked before a position is taken, so no number is wasted);
    /// [`Error::Log`] if the group log could not hand out a position (nothing is sent);
    /// [`Error::Saturated`] if the group already has
    /// [`GroupConfig::max_pending_publishes`] publishes waiting here, or its members'
    /// queues hold [`GroupConfig::max_group_backlog`] pushes (nothing is sent, no
    /// position is taken, and [`GroupRegistry::saturated_publishes`] counts it). So a
    /// publish never waits behind more than a bounded backlog: it is applied in
    /// bounded time or refused at once with a retry hint.
    ///
    /// # Cancel safety
    /// Not cancel safe in what it reports: if the future is dropped mid-fan-out (an HTTP
    /// caller hung up), chunks already handed to the pool are still delivered, the
    /// position stays used, the relayed message may or may not have been sent, and the
    /// report is lost. Nothing stalls.
    pub async fn publish(&self, group: &str, message: &PushMessage) -> Result<PublishReport> {
        let entry = self.groups.shard(group).get(group).cloned();
        let kept = self.history.enabled(group);
        if entry.is_none() && self.relay.is_none() && !kept {
            return Ok(PublishReport::default());
        }
        let mut frame = Frame::Push {
            id: 0,
            ack_required: false,
            business: message.business,
            group: Some(Text::from(group)),
            // Fixed-width fields: the size check below holds for the real position.
            seq: Some(0),
            epoch: Some(0),
            meta: message.meta.clone(),
            payload: message.payload.clone(),
        };
        let max = self.config.max_frame_size();
        let len = frame.encoded_len()?;
        if len > max {
            let len = len as u64;
            return Err(longconn_core::EncodeError::FrameTooLarge { len, max }.into());
        }
        // With no members here, only the log orders this node's publishes to the group.
        let (_pending, _in_order, members) = match &entry {
            Some(entry) => {
                let max_pending = self.config.max_pending_publishes();
                let pending = entry
                    .admit(max_pending)
                    .ok_or_else(|| self.refuse("too many publishes waiting for the group"))?;
                let in_order = entry.publishing.lock().await;
                let members = entry.snapshot();
                if self.backlogged(&members) {
                    return Err(self.refuse("members' queues hold max_group_backlog pushes"));
                }
                (Some(pending), Some(in_order), Some(members))
            }
            None => (None, None, None),
        };
        // Taken after the entry's lock (the same order in every publish).
        let _kept_order = match kept {
            true => Some(self.kept_order.lock(group).await),
            false => None,
        };
        let position = self.log.next_position(group).await?;
        if let Frame::Push { seq, epoch, .. } = &mut frame {
            *seq = Some(position.offset);
            *epoch = Some(position.epoch);
        }
        let frame = frame.to_bytes(max)?;
        let members = if kept {
            // Kept before the members are looked up again, in the registry (the group
            // may have been emptied and joined again since `entry` was read): a member
            // added after this lookup reads the history after its join, and finds this
            // push; one added before it gets the push live.
            self.history.append(group, position, frame.clone()).await;
            let current = self.groups.shard(group).get(group).cloned();
            current.map(|entry| entry.snapshot())
        } else {
            members
        };
        let relayed = async {
            let Some(relay) = &self.relay else {
                return RemoteGroupReport::default();
            };
            let message = GroupMessage {
                group: group.to_owned(),
                position,
                frame: frame.clone(),
            };
            let answered =
                tokio::time::timeout(self.config.relay_timeout(), relay.publish_group(&message))
                    .await;
            answered.unwrap_or_default()
        };
        let local = async {
            match members {
                Some(members) => self.fan_out(members, frame.clone()).await,
                None => GroupDelivery::default(),
            }
        };
        let (mut delivery, remote) = tokio::join!(local, relayed);
        if entry.is_none() && !kept {
            // No counter is kept for a group this node has no members of.
            self.log.forget(group);
        }
        delivery += remote.delivery;
        Ok(PublishReport {
            members: delivery.members,
            queued: delivery.queued,
            dropped: delivery.dropped,
            remote_nodes: remote.nodes,
            unknown_nodes: remote.unknown_nodes,
            seq: position.offset,
            epoch: position.epoch,
        })
    }

    /// An [`Error::Saturated`] for `reason`, counted.
    fn refuse(&self, reason: &'static str) -> Error {
        self.saturated.fetch_add(1, Ordering::Relaxed);
        Error::Saturated {
            reason,
            retry_after: self.config.saturated_retry_after(),
        }
    }

    /// Whether more than half of a sample of `members` (up to [`BACKLOG_SAMPLE`],
    /// spread over the list) each have [`GroupConfig::max_group_backlog`] pushes
    /// waiting: the group's fan-out is not being drained as fast as it is published.
    /// A sample, not every member, so the check costs a few lock round trips whatever
    /// the group's size.
    fn backlogged(&self, members: &[ConnHandle]) -> bool {
        let sample = members.len().min(BACKLOG_SAMPLE);
        if sample == 0 {
            return false;
        }
        let limit = self.config.max_group_backlog();
        let behind = (0..sample)
            .map(|k| &members[k * members.len() / sample])
            .filter(|member| member.queued_pushes() >= limit)
            .count();
        behind * 2 > sample
    }

    /// Pushes the encoded `frame` to `members`, inline or through the pool. The caller
    /// holds the group's publish lock.
    ///
    /// With one fan-out worker (one core) the publisher pushes inline whatever the
    /// group's size: a single worker task only adds a hop, and its chunks wait in the
    /// run queue behind every connection the previous publish woke (issue 19).
    ///
    /// When the drivers run on a runtime of their own ([`GroupRegistry::wake_on`], the
    /// gateway) the publisher queues to every member itself, without waking any, and
    /// hands the wake-ups to the drivers' runtime as one task per `fanout_chunk`
    /// members, at most `fanout_workers` of them, so each of its worker threads wakes
    /// (and then runs) a share of the members. The publish never waits for that
    /// runtime: with the pool, its chunk tasks waited in the run queue behind thousands
    /// of driver wakes and two cores published fewer times a second than one (issue 17,
    /// docs/BENCHMARKS.md "Two cores and the regression guard").
    async fn fan_out(&self, members: Arc<[ConnHandle]>, frame: Bytes) -> GroupDelivery {
        let chunk = self.config.fanout_chunk();
        let inline = members.len() <= chunk || self.config.fanout_workers() <= 1;
        let tally = if let Some(drivers) = self.drivers.get() {
            let tally = fanout::push_all_quiet(&members, &frame);
            let shards = members
                .len()
                .div_ceil(chunk)
                .clamp(1, self.config.fanout_workers().max(1));
            fanout::wake_sharded(drivers, &members, shards);
            tally
        } else if inline {
            fanout::push_all(&members, &frame)
        } else {
            self.pool.push_all(members.clone(), frame, chunk).await
        };
        group_metrics().record_fanout(&tally);
        GroupDelivery {
            members: members.len(),
            queued: tally.queued,
            dropped: tally.dropped,
        }
    }

    /// Delivers a publish relayed from another node (numbered and encoded there) to
    /// this node's members of `group`, in order with this node's own publishes to it.
    /// Takes no position, and is never refused for saturation (it is numbered already:
    /// refusing it would leave a gap); the publishing node's own bounds apply to it.
    /// What the server's `RelayInbox` calls, through [`GroupMembership::deliver`].
    ///
    /// # Cancel safety
    /// As [`GroupRegistry::publish`]: chunks already handed to the pool are delivered.
    pub async fn deliver_relayed(&self, group: &str, frame: Bytes) -> GroupDelivery {
        let Some(entry) = self.groups.shard(group).get(group).cloned() else {
            return GroupDelivery::default();
        };
        let _in_order = entry.publishing.lock().await;
        self.fan_out(entry.snapshot(), frame).await
    }

    fn check_id(&self, group: &str) -> Result<()> {
        if group.is_empty() {
            return Err(Error::InvalidGroupId { reason: "empty" });
        }
        if group.len() > self.config.max_group_id_len() {
            return Err(Error::InvalidGroupId {
                reason: "longer than max_group_id_len",
            });
        }
        Ok(())
    }

    /// Adds the membership under the lock order (membership shard, group shard, members).
    fn insert(&self, conn: &ConnHandle, group: &str) -> Result<()> {
        let conn_id = conn.id();
        let mut memberships = self.memberships.shard(&conn_id);
        let joined = memberships.get(&conn_id);
        if joined.is_some_and(|groups| groups.iter().any(|g| &*g.id == group)) {
            return Ok(());
        }
        let max_groups = self.config.max_groups_per_connection();
        if joined.is_some_and(|groups| groups.len() >= max_groups) {
            return Err(Error::GroupLimit { max: max_groups });
        }
        let entry = {
            let mut groups = self.groups.shard(group);
            let entry = match groups.get(group) {
                Some(entry) => entry.clone(),
                None => {
                    let entry = Arc::new(Group::new(group));
                    groups.insert(entry.id.clone(), entry.clone());
                    group_metrics().groups.increment(1.0);
                    if let Some(relay) = &self.relay {
                        relay.group_active(group);
                    }
                    entry
                }
            };
            let mut members = entry.members();
            let max_members = self.config.max_members_per_group();
            if members.list.len() >= max_members {
                return Err(Error::GroupFull { max: max_members });
            }
            members.insert(conn);
            drop(members);
            entry
        };
        memberships.entry(conn_id).or_default().push(entry);
        Ok(())
    }

    /// Removes one member; the group goes when its last member does.
    fn remove_member(&self, group: &Arc<Group>, conn_id: u64) {
        let mut groups = self.groups.shard(&*group.id);
        let mut members = group.members();
        members.remove(conn_id);
        if members.list.is_empty()
            && groups
                .get(&*group.id)
                .is_some_and(|current| Arc::ptr_eq(current, group))
        {
            groups.remove(&*group.id);
            group_metrics().groups.decrement(1.0);
            if !self.history.enabled(&group.id) {
                // A group with history keeps its epoch, so a rejoin can be recovered.
                self.log.forget(&group.id);
            }
            if let Some(relay) = &self.relay {
                relay.group_inactive(&group.id);
            }
        }
    }
}

impl GroupMembership for GroupRegistry {
    fn join(&self, conn: &ConnHandle, device: &DeviceKey, group: &str) -> Result<(), Code> {
        self.check_id(group).map_err(|e| e.code())?;
        if !self.authorizer.may_join(device, group) {
            return Err(Error::Forbidden.code());
        }
        self.insert_live(conn, group).map_err(|e| e.code())
    }

    fn leave(&self, conn_id: u64, group: &str) -> Result<(), Code> {
        GroupRegistry::leave(self, conn_id, group);
        Ok(())
    }

    fn leave_all(&self, conn_id: u64) {
        GroupRegistry::leave_all(self, conn_id);
    }

    fn local_members(&self, group: &str) -> usize {
        GroupRegistry::members(self, group)
    }

    fn recover<'a>(
        &'a self,
        group: &'a str,
        since: Option<GroupPosition>,
    ) -> Pin<Box<dyn Future<Output = JoinRecovery> + Send + 'a>> {
        Box::pin(async move {
            let found = self.history.since(group, since).await;
            JoinRecovery {
                position: found.top,
                recovered: found.recovered,
                frames: found.frames,
            }
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = u64> + Send + '_>> {
        Box::pin(self.pool.close())
    }

    fn deliver(
        &self,
        group: &str,
        frame: Bytes,
    ) -> Pin<Box<dyn Future<Output = GroupDelivery> + Send + '_>> {
        let group = group.to_owned();
        Box::pin(async move { self.deliver_relayed(&group, frame).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longconn_core::SlowConsumerPolicy;

    fn conn(id: u64) -> ConnHandle {
        ConnHandle::new(id, 4, SlowConsumerPolicy::DropNewest)
    }

    fn registry(config: GroupConfig) -> GroupRegistry {
        GroupRegistry::new(config)
    }

    #[test]
    fn join_leave_and_presence() {
        let groups = registry(GroupConfig::default());
        let (a, b) = (conn(1), conn(2));
        groups.join(&a, "room").unwrap();
        groups.join(&a, "room").unwrap(); // idempotent
        groups.join(&b, "room").unwrap();
        groups.join(&a, "lobby").unwrap();
        assert_eq!(groups.members("room"), 2);
        assert_eq!(groups.members("lobby"), 1);
        assert_eq!(groups.group_count(), 2);
        let mut of_a = groups.groups_of(1);
        of_a.sort();
        assert_eq!(of_a, ["lobby", "room"]);

        assert!(groups.leave(1, "room"));
        assert!(!groups.leave(1, "room"));
        assert_eq!(groups.members("room"), 1);
        assert_eq!(groups.leave_all(1), 1);
        assert_eq!(groups.group_count(), 1, "empty `lobby` is gone");
        assert_eq!(groups.leave_all(2), 1);
        assert_eq!(groups.group_count(), 0);
        assert_eq!(groups.members("room"), 0);
    }

    #[test]
    fn limits_are_enforced_with_their_codes() {
        let config = GroupConfig::builder()
            .max_groups_per_connection(2)
            .max_members_per_group(2)
            .max_group_id_len(8)
            .build()
            .unwrap();
        let groups = registry(config);
        let (a, b, c) = (conn(1), conn(2), conn(3));
        groups.join(&a, "g1").unwrap();
        groups.join(&a, "g2").unwrap();
        let err = groups.join(&a, "g3").unwrap_err();
        assert_eq!(err.code(), Code::GroupLimit);
        groups.join(&b, "g1").unwrap();
        assert_eq!(groups.join(&c, "g1").unwrap_err().code(), Code::GroupFull);
        assert_eq!(
            groups.join(&c, "").unwrap_err().code(),
            Code::GroupForbidden
        );
        assert_eq!(
            groups.join(&c, "much-too-long").unwrap_err().code(),
            Code::GroupForbidden
        );
        assert_eq!(groups.groups_of(3), Vec::<String>::new());
    }

    #[test]
    fn the_authorizer_decides_client_joins() {
        let groups = GroupRegistry::with_authorizer(
            GroupConfig::default(),
            |device: &DeviceKey, group: &str| group.starts_with(device.app()),
        );
        let a = conn(1);
        let device = DeviceKey::new("shop", "d1");
        assert_eq!(
            GroupMembership::join(&groups, &a, &device, "chat:1"),
            Err(Code::GroupForbidden)
        );
        assert_eq!(
            GroupMembership::join(&groups, &a, &device, "shop:1"),
            Ok(())
        );
        assert_eq!(groups.members("shop:1"), 1);
    }

    #[tokio::test]
    async fn a_join_racing_a_close_is_undone() {
        let groups = registry(GroupConfig::default());
        // A slow-consumer disconnect closes the inbox, as the driver does at close.
        let a = ConnHandle::new(1, 4, SlowConsumerPolicy::Disconnect);
        for _ in 0..5 {
            a.push(longconn_core::Transmit::Encoded(bytes::Bytes::new()));
        }
        assert!(a.is_closed());
        assert!(matches!(groups.join(&a, "room"), Err(Error::Closed)));
        assert_eq!(groups.members("room"), 0);
    }

    /// 100 members of "room"; member 6's queue (4 pushes) is full.
    fn room_of_100_with_member_6_full(groups: &GroupRegistry) -> Vec<ConnHandle> {
        let members: Vec<ConnHandle> = (1..=100).map(conn).collect();
        for m in &members {
            groups.join(m, "room").unwrap();
        }
        for _ in 0..4 {
            members[6].push(longconn_core::Transmit::Encoded(bytes::Bytes::new()));
        }
        members
    }

    /// One publish to [`room_of_100_with_member_6_full`]: queued to 99, dropped at 6.
    fn assert_one_publish_reached_all_but_member_6(report: &PublishReport, members: &[ConnHandle]) {
        assert_eq!(
            (report.members, report.queued, report.dropped),
            (100, 99, 1)
        );
        assert_eq!(members[0].take_pushes().len(), 1);
        assert_eq!(members[99].take_pushes().len(), 1);
        assert_eq!(members[6].take_pushes().len(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_publish_from_another_runtime_queues_to_all_and_wakes_them_on_theirs() {
        // One worker: the large group is pushed inline, with or without the pool.
        let config = GroupConfig::builder()
            .fanout_chunk(16)
            .fanout_workers(1)
            .build()
            .unwrap();
        let groups = Arc::new(registry(config));
        groups.wake_on(tokio::runtime::Handle::current());
        let members = room_of_100_with_member_6_full(&groups);
        // The publisher runs on a runtime of its own, as the gateway's HTTP API does.
        let publisher = groups.clone();
        let report = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(publisher.publish("room", &PushMessage::new(9, &b"hi"[..])))
        })
        .join()
        .unwrap()
        .unwrap();
        assert_one_publish_reached_all_but_member_6(&report, &members);
    }

    #[test]
    fn a_publish_with_two_workers_does_not_wait_for_the_drivers_runtime() {
        // Two workers and a group of several chunks: the publisher queues to every member
        // itself and leaves the wake-ups to the drivers' runtime, even while every worker
        // of that runtime is busy (issue 17: the pool's chunks waited behind the drivers).
        let drivers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let config = GroupConfig::builder()
            .fanout_chunk(16)
            .fanout_workers(2)
            .build()
            .unwrap();
        let groups = Arc::new(registry(config));
        groups.wake_on(drivers.handle().clone());
        let members = room_of_100_with_member_6_full(&groups);
        // Occupy both of the drivers' workers until the publish is done.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let (started, busy) = std::sync::mpsc::channel::<()>();
        for _ in 0..2 {
            let (released, started) = (released.clone(), started.clone());
            drivers.spawn(async move {
                let _ = started.send(());
                let _ = released.lock().unwrap().recv();
            });
        }
        busy.recv().unwrap();
        busy.recv().unwrap();
        let publisher = groups.clone();
        let (sent, report) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let report = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(publisher.publish("room", &PushMessage::new(9, &b"hi"[..])));
            let _ = sent.send(report);
        });
        let report = report
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the publish waited for the drivers' runtime")
            .unwrap();
        drop(release);
        assert_one_publish_reached_all_but_member_6(&report, &members);
    }

    #[tokio::test]
    async fn publish_numbers_encodes_once_and_counts_full_queues() {
        let config = GroupConfig::builder().fanout_chunk(16).build().unwrap();
        let groups = registry(config);
        let members: Vec<ConnHandle> = (1..=100).map(conn).collect();
        for m in &members {
            groups.join(m, "room").unwrap();
        }
        // Fill member 7's queue (capacity 4): its next push is dropped, nobody else's.
        for _ in 0..4 {
            members[6].push(longconn_core::Transmit::Encoded(bytes::Bytes::new()));
        }
        let message = PushMessage::new(9, &b"hello"[..]);
        let report = groups.publish("room", &message).await.unwrap();
        assert_eq!(
            report,
            PublishReport {
                members: 100,
                queued: 99,
                dropped: 1,
                remote_nodes: 0,
                unknown_nodes: 0,
                seq: 1,
                epoch: report.epoch,
            }
        );
        assert_ne!(report.epoch, 0);
        let second = groups.publish("room", &message).await.unwrap();
        assert_eq!((second.epoch, second.seq), (report.epoch, 2));
        let first_push = |m: &ConnHandle| m.take_pushes().into_iter().next();
        let a = first_push(&members[0]).unwrap();
        let b = first_push(&members[99]).unwrap();
        let (longconn_core::Transmit::Encoded(a), longconn_core::Transmit::Encoded(b)) = (a, b)
        else {
            panic!("group pushes are pre-encoded");
        };
        assert_eq!(a.as_ptr(), b.as_ptr(), "one encoding shared by all members");
        let frame = longconn_core::FrameCodec::new(1 << 16)
            .decode_message(a)
            .unwrap();
        assert!(matches!(
            frame,
            Frame::Push { business: 9, seq: Some(1), epoch: Some(e), group: Some(ref g), .. }
                if g.as_str() == "room" && e == report.epoch
        ));
        assert_eq!(
            groups.publish("nobody-here", &message).await.unwrap(),
            PublishReport::default()
        );
    }

    #[tokio::test]
    async fn a_saturated_group_is_refused_and_another_is_not() {
        let config = GroupConfig::builder()
            .max_group_backlog(3)
            .saturated_retry_after(std::time::Duration::from_millis(250))
            .build()
            .unwrap();
        let groups = registry(config);
        // Nobody drains `busy` (no driver); `calm`'s members are drained after each
        // publish.
        let busy: Vec<ConnHandle> = (1..=20).map(conn_with_room).collect();
        let calm: Vec<ConnHandle> = (101..=120).map(conn_with_room).collect();
        for m in &busy {
            groups.join(m, "busy").unwrap();
        }
        for m in &calm {
            groups.join(m, "calm").unwrap();
        }
        let message = PushMessage::new(1, &b"x"[..]);
        for seq in 1..=3 {
            let report = groups.publish("busy", &message).await.unwrap();
            assert_eq!((report.seq, report.queued), (seq, 20));
        }
        for _ in 0..5 {
            match groups.publish("busy", &message).await {
                Err(Error::Saturated { retry_after, .. }) => {
                    assert_eq!(retry_after, std::time::Duration::from_millis(250));
                }
                other => panic!("expected Saturated, got {other:?}"),
            }
            let report = groups.publish("calm", &message).await.unwrap();
            assert_eq!(report.queued, 20);
            calm.iter()
                .for_each(|m| assert_eq!(m.take_pushes().len(), 1));
        }
        assert_eq!(groups.saturated_publishes(), 5);
        assert_eq!(
            busy[0].queued_pushes(),
            3,
            "refused publishes queue nothing"
        );
        // Drained, the group takes publishes again, numbered without a gap.
        busy.iter().for_each(|m| drop(m.take_pushes()));
        let report = groups.publish("busy", &message).await.unwrap();
        assert_eq!((report.seq, report.queued), (4, 20));
    }

    #[tokio::test]
    async fn a_lone_slow_member_does_not_saturate_its_group() {
        let config = GroupConfig::builder().max_group_backlog(2).build().unwrap();
        let groups = registry(config);
        let members: Vec<ConnHandle> = (1..=20).map(conn_with_room).collect();
        for m in &members {
            groups.join(m, "room").unwrap();
        }
        let message = PushMessage::new(1, &b"x"[..]);
        for _ in 0..6 {
            groups.publish("room", &message).await.unwrap();
            // Everyone but the first member keeps up.
            members[1..].iter().for_each(|m| drop(m.take_pushes()));
        }
        assert_eq!(members[0].queued_pushes(), 6);
        assert_eq!(groups.saturated_publishes(), 0);
    }

    #[tokio::test]
    async fn publishes_past_max_pending_are_refused_at_once() {
        use futures::FutureExt;
        let config = GroupConfig::builder()
            .max_pending_publishes(2)
            .build()
            .unwrap();
        let groups = registry(config);
        let member = conn_with_room(1);
        groups.join(&member, "room").unwrap();
        let entry = groups.groups.shard("room").get("room").cloned().unwrap();
        let message = PushMessage::new(1, &b"x"[..]);
        // A publish in progress holds the group's order: later ones wait for it.
        let held = entry.publishing.lock().await;
        let mut first = std::pin::pin!(groups.publish("room", &message));
        let mut second = std::pin::pin!(groups.publish("room", &message));
        assert!(first.as_mut().now_or_never().is_none());
        assert!(second.as_mut().now_or_never().is_none());
        let third = groups.publish("room", &message).now_or_never();
        assert!(
            matches!(third, Some(Err(Error::Saturated { .. }))),
            "{third:?}"
        );
        drop(held);
        assert_eq!(first.await.unwrap().seq, 1);
        assert_eq!(second.await.unwrap().seq, 2);
        assert_eq!(entry.pending.load(Ordering::Relaxed), 0);
        assert_eq!(groups.publish("room", &message).await.unwrap().seq, 3);
        assert_eq!(groups.saturated_publishes(), 1);
    }

    fn conn_with_room(id: u64) -> ConnHandle {
        ConnHandle::new(id, 64, SlowConsumerPolicy::DropNewest)
    }
}
