//! The [`Hub`]: this node's live connections, by connection id and by (app, device).
//!
//! Both maps are sharded (`SHARDS` mutex-protected hash maps each) so that logins,
//! logouts and pushes on different connections rarely contend. A [`ConnHandle`] is the
//! only way other tasks reach a connection: it queues commands and pushes for the
//! connection's driver task and wakes it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::task::AtomicWaker;

pub use crate::device_key::DeviceKey;
use crate::shard::{ShardedMap, lock};
use longconn_core::config::SlowConsumerPolicy;
use longconn_core::connection::TransportKind;
use longconn_core::protocol::{Code, Text};
use longconn_core::session::{Command, PushOutcome, Transmit};

/// Bits of a connection id that hold the per-node counter; the node id sits above them.
pub const CONN_ID_COUNTER_BITS: u32 = 48;

/// Extracts the node id from a connection id: ids carry their node in the top 16 bits.
pub fn node_of(conn_id: u64) -> u16 {
    (conn_id >> CONN_ID_COUNTER_BITS) as u16
}

/// This node's connections. Cheap to share (`Arc<Hub>`).
#[derive(Debug)]
pub struct Hub {
    node_id: u16,
    next_counter: AtomicU64,
    /// Keyed by the handle's id (a set: 8 bytes an entry, not 16).
    conns: ShardedMap<ById, ()>,
    devices: ShardedMap<DeviceKey, u64>,
}

impl Hub {
    /// An empty hub for node `node_id`.
    pub fn new(node_id: u16) -> Hub {
        Hub {
            node_id,
            next_counter: AtomicU64::new(1),
            conns: ShardedMap::new(),
            devices: ShardedMap::new(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// A new connection id, unique on this node: the node id in the top 16 bits and a
    /// counter in the low 48, so [`node_of`] finds the owning node from any id.
    pub(crate) fn next_conn_id(&self) -> u64 {
        let counter =
            self.next_counter.fetch_add(1, Ordering::Relaxed) & ((1 << CONN_ID_COUNTER_BITS) - 1);
        (u64::from(self.node_id) << CONN_ID_COUNTER_BITS) | counter
    }

    /// Adds a connection (at accept time, before login).
    pub(crate) fn insert(&self, handle: ConnHandle) {
        self.conns.shard(&handle.id()).insert(ById(handle), ());
    }

    /// Removes a connection and, if it still owns it, its device entry.
    pub fn remove(&self, conn_id: u64, device: Option<&DeviceKey>) {
        self.conns.shard(&conn_id).remove(&conn_id);
        if let Some(key) = device {
            let mut shard = self.devices.shard(key);
            if shard.get(key) == Some(&conn_id) {
                shard.remove(key);
            }
        }
    }

    /// Records that `conn_id` is logged in as `device` = (app, device id). Returns the
    /// handle of the connection it replaces, which the caller kicks with `replaced`.
    pub(crate) fn bind_device(&self, device: DeviceKey, conn_id: u64) -> Option<ConnHandle> {
        let previous = self.devices.shard(&device).insert(device, conn_id);
        previous
            .filter(|&old| old != conn_id)
            .and_then(|old| self.get(old))
    }

    /// The connection with this id.
    pub fn get(&self, conn_id: u64) -> Option<ConnHandle> {
        let shard = self.conns.shard(&conn_id);
        shard
            .get_key_value(&conn_id)
            .map(|(handle, ())| handle.0.clone())
    }

    /// The connection logged in as (app, device).
    pub fn find_device(&self, app: &str, device: &str) -> Option<ConnHandle> {
        self.get(self.device_conn(app, device)?)
    }

    /// The id of the connection logged in as (app, device); allocates nothing.
    pub(crate) fn device_conn(&self, app: &str, device: &str) -> Option<u64> {
        DeviceKey::with_joined(app, device, |key| self.devices.shard(key).get(key).copied())
    }

    /// Number of connections (logged in or not).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there are no connections.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every connection (a snapshot taken shard by shard; used for shutdown).
    pub fn for_each(&self, mut f: impl FnMut(&ConnHandle)) {
        let mut handles = Vec::new();
        self.conns
            .for_each_shard(|shard| handles.extend(shard.keys().map(|h| h.0.clone())));
        // Called outside the shard locks, so `f` may use the hub.
        handles.iter().for_each(&mut f);
    }

    /// Every logged-in device with its connection id (one shard at a time; used to
    /// refresh routes).
    pub fn devices(&self) -> Vec<(DeviceKey, u64)> {
        let mut out = Vec::new();
        self.devices.for_each_shard(|shard| {
            out.extend(shard.iter().map(|(k, &v)| (k.clone(), v)));
        });
        out
    }
}

/// A connection handle in the hub's set, hashed and compared by its id (so the set is
/// looked up by id).
#[derive(Debug)]
struct ById(ConnHandle);

impl std::hash::Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for ById {}

impl std::borrow::Borrow<u64> for ById {
    fn borrow(&self) -> &u64 {
        &self.0.shared.id
    }
}

/// A push waiting in an inbox, kept small (40 bytes against 136 for a [`Transmit`]):
/// a fan-out queues one per member, and an idle member's queue is allocated afresh for
/// it.
#[derive(Debug)]
pub(crate) enum QueuedPush {
    Encoded(bytes::Bytes),
    Frame(Box<longconn_core::protocol::Frame>),
}

impl From<Transmit> for QueuedPush {
    fn from(transmit: Transmit) -> QueuedPush {
        match transmit {
            Transmit::Encoded(bytes) => QueuedPush::Encoded(bytes),
            Transmit::Frame(frame) => QueuedPush::Frame(Box::new(frame)),
        }
    }
}

impl From<QueuedPush> for Transmit {
    fn from(push: QueuedPush) -> Transmit {
        match push {
            QueuedPush::Encoded(bytes) => Transmit::Encoded(bytes),
            QueuedPush::Frame(frame) => Transmit::Frame(*frame),
        }
    }
}

/// What other tasks have queued for one connection's driver. The queues live in a box
/// made on the first command or push and dropped once they are empty again
/// ([`Inbox::release_idle_memory`]), so an idle connection's handle holds one pointer
/// instead of two empty queues and a timestamp (issue 17 item 3).
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queues: Option<Box<Queues>>,
}

/// An inbox's queues, boxed while in use.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    pub(crate) commands: VecDeque<Command>,
    pub(crate) pushes: VecDeque<QueuedPush>,
    /// When the oldest push in `pushes` was queued (for `longconn_push_queue_seconds`).
    pub(crate) oldest: Option<std::time::Instant>,
}

/// Pushes an emptied inbox keeps room for while its connection has a backlog (2.5 KiB).
pub(crate) const RETAINED_PUSHES: usize = 64;

impl Inbox {
    /// The queues, made on first use (by a producer).
    pub(crate) fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Box::default)
    }

    /// The queues if any were made (a consumer: nothing to take otherwise).
    pub(crate) fn queues_if_any(&mut self) -> Option<&mut Queues> {
        self.queues.as_deref_mut()
    }

    /// Pushes waiting.
    pub(crate) fn pushes_len(&self) -> usize {
        self.queues.as_ref().map_or(0, |q| q.pushes.len())
    }

    /// Drops the queues once they are empty, so an idle connection holds no queue
    /// memory; but after a drain of `drained` pushes that shows a backlog (at least a
    /// quarter of [`RETAINED_PUSHES`]), keeps the push queue's allocation up to
    /// [`RETAINED_PUSHES`] entries. Under a sustained group fan-out every publish
    /// round otherwise allocated each member's queue afresh and grew it by doubling
    /// (`malloc`, then `realloc` and a copy per doubling, ~6 % of an overloaded
    /// gateway's profile, issue 19). The first small drain afterwards releases it.
    pub(crate) fn release_idle_memory(&mut self, drained: usize) {
        let Some(queues) = self.queues.as_deref_mut() else {
            return;
        };
        if !queues.commands.is_empty() || !queues.pushes.is_empty() {
            return;
        }
        let backlog = drained >= RETAINED_PUSHES / 4;
        if !backlog {
            self.queues = None;
            return;
        }
        if queues.commands.capacity() > 0 {
            queues.commands = VecDeque::new();
        }
        if queues.pushes.capacity() > RETAINED_PUSHES {
            queues.pushes.shrink_to(RETAINED_PUSHES);
        }
    }

    /// Capacity of the push queue (0 when the queues are not allocated).
    #[cfg(test)]
    fn pushes_capacity(&self) -> usize {
        self.queues.as_ref().map_or(0, |q| q.pushes.capacity())
    }
}

#[derive(Debug)]
struct Shared {
    id: u64,
    /// `u32` (a queue that long is far past any sane limit) to keep the state small.
    max_queued_pushes: u32,
    policy: SlowConsumerPolicy,
    inbox: Mutex<Inbox>,
    /// Set by producers, cleared by the driver; `waker` is the driver's.
    woken: AtomicBool,
    /// Whether the inbox refuses pushes and commands (other than kick and close).
    /// Read and written only while holding `inbox`'s lock, which orders it; an atomic
    /// beside the other small fields rather than a `bool` inside the mutex, which would
    /// make this state 8 bytes (and one 16-byte allocation step) larger.
    closed: AtomicBool,
    waker: AtomicWaker,
    dropped_pushes: AtomicU64,
    /// The deadline the driver registered with the server's timers, in their ticks
    /// (0: none).
    armed: AtomicU64,
    /// The connection's transport (its metrics label), as a reference to one shared
    /// copy ([`interned`]): 8 bytes instead of 24, which keeps this state at 96 B.
    // `armed` and `kind` are kept here rather than in the driver: every byte of the
    // driver is in the connection's task, whose allocation grows in 128-byte steps
    // (at most 272 B of future keep it at 384 B); this state grows in 16-byte ones.
    kind: &'static TransportKind,
}

/// `kind` as a `'static` reference: the built-in transports are constants; any other
/// is allocated once for the process (transport labels are few and fixed), so each
/// connection's handle keeps a pointer instead of the 24-byte enum.
fn interned(kind: TransportKind) -> &'static TransportKind {
    static BUILT_IN: [TransportKind; 5] = [
        TransportKind::Memory,
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::WebSocket,
        TransportKind::Quic,
    ];
    if let Some(known) = BUILT_IN.iter().find(|k| **k == kind) {
        return known;
    }
    static OTHERS: Mutex<Vec<&'static TransportKind>> = Mutex::new(Vec::new());
    let mut others = lock(&OTHERS);
    if let Some(known) = others.iter().find(|k| ***k == kind) {
        return known;
    }
    let leaked: &'static TransportKind = Box::leak(Box::new(kind));
    others.push(leaked);
    leaked
}

/// A handle to one connection, for any task. Clones share the connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    shared: Arc<Shared>,
}

impl PartialEq for ConnHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl ConnHandle {
    /// A handle for connection `id` whose queue takes up to `max_queued_pushes` before
    /// `policy` applies. The runtime makes one per connection; tests, benchmarks and
    /// custom drivers make their own and empty the queue with [`ConnHandle::take_pushes`].
    pub fn new(id: u64, max_queued_pushes: usize, policy: SlowConsumerPolicy) -> ConnHandle {
        ConnHandle::for_transport(id, max_queued_pushes, policy, TransportKind::Memory)
    }

    /// [`ConnHandle::new`] for a connection on `kind` (the server's driver).
    pub(crate) fn for_transport(
        id: u64,
        max_queued_pushes: usize,
        policy: SlowConsumerPolicy,
        kind: TransportKind,
    ) -> ConnHandle {
        ConnHandle {
            shared: Arc::new(Shared {
                id,
                max_queued_pushes: u32::try_from(max_queued_pushes).unwrap_or(u32::MAX),
                policy,
                inbox: Mutex::new(Inbox::default()),
                woken: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                dropped_pushes: AtomicU64::new(0),
                armed: AtomicU64::new(0),
                kind: interned(kind),
            }),
        }
    }

    /// The connection id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The connection's transport (`Memory` for a handle made with [`ConnHandle::new`]).
    pub fn transport(&self) -> TransportKind {
        *self.shared.kind
    }

    /// The deadline registered with the server's timers, in their ticks (0: none); only
    /// the connection's driver reads and writes it.
    pub(crate) fn armed(&self) -> u64 {
        self.shared.armed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_armed(&self, ticks: u64) {
        self.shared.armed.store(ticks, Ordering::Relaxed);
    }

    /// Pushes discarded for this connection by its slow-consumer policy.
    pub fn dropped_pushes(&self) -> u64 {
        self.shared.dropped_pushes.load(Ordering::Relaxed)
    }

    /// Queues a push without waiting. At most `max_queued_pushes` wait here; past that
    /// the slow-consumer policy decides: drop this push, or disconnect the connection
    /// with `slow_consumer` (discarding what waits).
    pub fn push(&self, push: Transmit) -> PushOutcome {
        self.push_stamped(push, None)
    }

    /// As [`ConnHandle::push`], with the time a batch of pushes was queued, read once by
    /// the caller for the whole batch ([`crate::metrics::queue_stamp`]) instead of once per
    /// push. `None` reads the clock here when queue timing is on.
    pub fn push_stamped(&self, push: Transmit, stamp: Option<std::time::Instant>) -> PushOutcome {
        let outcome = self.push_quiet_stamped(push, stamp);
        if matches!(outcome, PushOutcome::Queued | PushOutcome::Disconnected) {
            self.wake();
        }
        outcome
    }

    /// As [`ConnHandle::push`], without waking the connection's driver: the caller
    /// calls [`ConnHandle::wake`] later when the outcome is `Queued` or `Disconnected`.
    /// A fan-out from another thread queues to every member first and then has one task
    /// on the connections' runtime wake them, so no driver is woken across threads.
    pub fn push_quiet(&self, push: Transmit) -> PushOutcome {
        self.push_quiet_stamped(push, None)
    }

    /// As [`ConnHandle::push_quiet`], with a batch's queueing time (see
    /// [`ConnHandle::push_stamped`]).
    pub fn push_quiet_stamped(
        &self,
        push: Transmit,
        stamp: Option<std::time::Instant>,
    ) -> PushOutcome {
        let mut inbox = self.inbox();
        if self.inbox_closed(&inbox) {
            return PushOutcome::NotActive;
        }
        if inbox.pushes_len() < self.shared.max_queued_pushes as usize {
            let queues = inbox.queues();
            if queues.pushes.is_empty() {
                queues.oldest = stamp.or_else(crate::metrics::queue_stamp);
            }
            queues.pushes.push_back(push.into());
            PushOutcome::Queued
        } else {
            match self.shared.policy {
                SlowConsumerPolicy::DropNewest => {
                    self.shared.dropped_pushes.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::queue_drops().increment(1);
                    PushOutcome::Dropped
                }
                SlowConsumerPolicy::Disconnect => {
                    let discarded = inbox.pushes_len() as u64 + 1;
                    self.shared
                        .dropped_pushes
                        .fetch_add(discarded, Ordering::Relaxed);
                    crate::metrics::queue_drops().increment(discarded);
                    self.close_inbox(&inbox);
                    let queues = inbox.queues();
                    queues.pushes.clear();
                    queues.commands.push_back(Command::Kick {
                        code: Code::SlowConsumer,
                        message: Text::from_static("outbound queue full"),
                    });
                    PushOutcome::Disconnected
                }
            }
        }
    }

    /// Disconnects the connection: the session sends `Kick { code, message }` and
    /// closes once it is flushed. Returns `false` if the connection has already
    /// finished. This is what the push API's kick and duplicate login use.
    pub fn kick(&self, code: Code, message: Text) -> bool {
        self.command(Command::Kick { code, message })
    }

    /// Closes the connection with `Close { code }` (no kick frame; for shutdown and
    /// tests of a lost connection). Returns `false` if it has already finished.
    pub fn close(&self, code: Code) -> bool {
        self.command(Command::Close { code })
    }

    /// Starts the session's drain (`GoAway { retry_after }`, then close when flushed).
    pub(crate) fn begin_drain(&self, retry_after: std::time::Duration) -> bool {
        self.command(Command::BeginDrain { retry_after })
    }

    /// Queues a command for the connection's session. Returns `false` if the connection
    /// has already finished. Crate-private: other crates use the verbs above, so no
    /// caller can inject a session answer (`AuthAccepted`, `Respond`, ...).
    pub(crate) fn command(&self, command: Command) -> bool {
        {
            let mut inbox = self.inbox();
            if self.inbox_closed(&inbox)
                && !matches!(command, Command::Kick { .. } | Command::Close { .. })
            {
                return false;
            }
            inbox.queues().commands.push_back(command);
        }
        self.wake();
        true
    }

    /// Whether the connection has finished (or is closing for its slow-consumer policy):
    /// pushes and commands other than kick and close are refused from then on.
    pub fn is_closed(&self) -> bool {
        let inbox = self.inbox();
        self.inbox_closed(&inbox)
    }

    pub(crate) fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        lock(&self.shared.inbox)
    }

    /// Whether the inbox is closed; the guard proves its lock is held.
    pub(crate) fn inbox_closed(&self, _locked: &std::sync::MutexGuard<'_, Inbox>) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Closes the inbox: late pushes report `NotActive`, commands other than kick and
    /// close are refused. The guard proves its lock is held.
    pub(crate) fn close_inbox(&self, _locked: &std::sync::MutexGuard<'_, Inbox>) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }

    /// Wakes the connection's driver to look at its queue (after
    /// [`ConnHandle::push_quiet`]). Cheap when it is already woken.
    pub fn wake(&self) {
        // Already woken and not yet seen by the driver: it will see everything queued
        // before this when it takes the flag, so the waker need not be touched again
        // (several publishes per driver run under a backlog: one wake per burst).
        if !self.shared.woken.swap(true, Ordering::AcqRel) {
            self.shared.waker.wake();
        }
    }

    /// Resolves when something was queued since the last call. Polling it holds no
    /// state beyond the waker registration, so an idle driver stays small.
    pub(crate) fn poll_woken(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.shared.waker.register(cx.waker());
        if self.shared.woken.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Pushes waiting in the queue for the driver (what a group's saturation check
    /// samples).
    pub fn queued_pushes(&self) -> usize {
        self.inbox().pushes_len()
    }

    /// Takes every queued push, oldest first (what a driver does on each wake-up).
    pub fn take_pushes(&self) -> Vec<Transmit> {
        let taken = match self.inbox().queues_if_any() {
            Some(queues) => std::mem::take(&mut queues.pushes),
            None => VecDeque::new(),
        };
        taken.into_iter().map(Transmit::from).collect()
    }

    pub(crate) fn count_dropped(&self, n: u64) {
        self.shared.dropped_pushes.fetch_add(n, Ordering::Relaxed);
        if n > 0 {
            crate::metrics::queue_drops().increment(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn frame() -> Transmit {
        Transmit::Encoded(bytes::Bytes::from_static(b"push"))
    }

    #[test]
    fn quiet_pushes_wake_only_when_told() {
        let handle = ConnHandle::new(1, 2, SlowConsumerPolicy::DropNewest);
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(handle.poll_woken(&mut cx).is_pending());

        assert_eq!(handle.push_quiet(frame()), PushOutcome::Queued);
        assert_eq!(handle.push_quiet(frame()), PushOutcome::Queued);
        assert_eq!(handle.push_quiet(frame()), PushOutcome::Dropped);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
        assert!(handle.poll_woken(&mut cx).is_pending());

        // One wake for the burst, and the driver sees everything queued.
        handle.wake();
        handle.wake();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert_eq!(handle.poll_woken(&mut cx), Poll::Ready(()));
        assert_eq!(handle.take_pushes().len(), 2);
        assert_eq!(handle.dropped_pushes(), 1);
    }

    #[test]
    fn push_wakes_unless_dropped() {
        let handle = ConnHandle::new(1, 1, SlowConsumerPolicy::DropNewest);
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(handle.poll_woken(&mut cx).is_pending());
        assert_eq!(handle.push(frame()), PushOutcome::Queued);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert_eq!(handle.poll_woken(&mut cx), Poll::Ready(()));
        assert_eq!(handle.push(frame()), PushOutcome::Dropped);
        assert!(handle.poll_woken(&mut cx).is_pending());
    }

    #[test]
    fn an_emptied_inbox_keeps_a_bounded_queue_only_after_a_backlog() {
        let handle = ConnHandle::new(1, 4096, SlowConsumerPolicy::DropNewest);
        let drain = |n: usize| {
            for _ in 0..n {
                handle.push_quiet(frame());
            }
            let mut inbox = handle.inbox();
            let drained = inbox.queues().pushes.drain(..).count();
            inbox.release_idle_memory(drained);
            inbox.pushes_capacity()
        };
        assert_eq!(drain(3), 0, "a few pushes: nothing kept");
        let kept = drain(RETAINED_PUSHES / 4);
        assert!(kept > 0 && kept <= RETAINED_PUSHES, "{kept}");
        let kept = drain(1000);
        assert!(
            kept > 0 && kept <= RETAINED_PUSHES,
            "shrunk to the bound: {kept}"
        );
        assert_eq!(drain(1), 0, "the first small drain releases it");
    }

    #[test]
    fn device_keys_split_back_into_app_and_device() {
        for (app, device) in [("app", "phone"), ("a:b", "c:d"), ("", "x"), ("12", "")] {
            let key = DeviceKey::new(app, device);
            assert_eq!((key.app(), key.device()), (app, device));
        }
        // The same characters split differently are different keys.
        assert_ne!(DeviceKey::new("ab", "c"), DeviceKey::new("a", "bc"));
        let long = "x".repeat(1000);
        let key = DeviceKey::new(&long, "d");
        assert_eq!((key.app(), key.device()), (long.as_str(), "d"));
        assert_eq!(size_of::<DeviceKey>(), 16);
    }

    #[test]
    fn a_handle_keeps_its_transport_as_one_shared_copy() {
        for kind in [
            TransportKind::Tcp,
            TransportKind::Quic,
            TransportKind::Other("carrier-pigeon"),
        ] {
            let a = ConnHandle::for_transport(1, 4, SlowConsumerPolicy::DropNewest, kind);
            let b = ConnHandle::for_transport(2, 4, SlowConsumerPolicy::DropNewest, kind);
            assert_eq!(a.transport(), kind);
            assert!(std::ptr::eq(a.shared.kind, b.shared.kind), "{kind:?}");
        }
        assert!(!std::ptr::eq(
            interned(TransportKind::Other("a")),
            interned(TransportKind::Other("b"))
        ));
        assert_eq!(
            ConnHandle::new(3, 4, SlowConsumerPolicy::DropNewest).transport(),
            TransportKind::Memory
        );
    }
}
