//! [`Timers`]: one timer task per server for every connection's session deadline (login,
//! idle, drain, token expiry), in place of a tokio `Sleep` inside each connection's task.
//!
//! A `Sleep` is 112 bytes of every idle connection's future, for a deadline that moves
//! on every received frame and almost never fires. Here a connection registers
//! (deadline, connection id) in one min-heap (16 bytes an entry) and keeps only the
//! deadline it registered; the timer task sleeps until the earliest entry and wakes the
//! connections whose deadlines have passed through their [`crate::ConnHandle`] (the same
//! wake a queued push uses). Deadlines are registered lazily: a later deadline waits
//! for the registered one to fire and is registered then, so a connection that receives
//! a frame per heartbeat touches the heap once per idle timeout, not once per frame;
//! only an earlier deadline (a drain, a token expiry) adds an entry at once. Entries of
//! departed connections and superseded ones are dropped when they fire, or by a
//! compaction once they outnumber the live connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::hub::Hub;
use crate::shard::lock;

/// Heap entries below which no compaction is tried.
const COMPACT_MIN: usize = 4096;

/// The server's connection deadlines and the task that fires them.
#[derive(Debug)]
pub(crate) struct Timers {
    state: Arc<State>,
    /// The timer task, started on the first registration; taken by [`Timers::finish`].
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct State {
    hub: Arc<Hub>,
    /// Deadlines are stored as nanoseconds after this instant (8 bytes, not 16).
    base: Instant,
    heap: Mutex<Heap>,
    /// Wakes the task for an entry earlier than the one it sleeps for, or to stop.
    notify: Notify,
}

#[derive(Debug, Default)]
struct Heap {
    /// (deadline in ns after `base`, connection id), earliest first.
    entries: BinaryHeap<Reverse<(u64, u64)>>,
    /// Size at which the next compaction is considered.
    compact_at: usize,
    stopped: bool,
}

impl Timers {
    pub(crate) fn new(hub: Arc<Hub>) -> Timers {
        Timers {
            state: Arc::new(State {
                hub,
                base: tokio::time::Instant::now().into_std(),
                heap: Mutex::new(Heap::default()),
                notify: Notify::new(),
            }),
            task: Mutex::new(None),
        }
    }

    /// Wakes connection `conn_id` (its handle's [`crate::ConnHandle::wake`]) at `at` or
    /// soon after. Called from the server's runtime (the first call starts the task).
    #[cfg(test)]
    pub(crate) fn wake_at(&self, at: Instant, conn_id: u64) {
        self.wake_at_ticks(self.ticks(at), conn_id);
    }

    /// Wakes connection `conn_id` at `when` (in [`Timers::ticks`]) or soon after.
    /// Called from the server's runtime (the first call starts the task).
    pub(crate) fn wake_at_ticks(&self, when: u64, conn_id: u64) {
        let earliest = {
            let mut heap = lock(&self.state.heap);
            if heap.stopped {
                return;
            }
            let earliest = heap.entries.peek().is_none_or(|e| when < e.0.0);
            heap.entries.push(Reverse((when, conn_id)));
            earliest
        };
        let mut task = lock(&self.task);
        if task.is_none() {
            *task = Some(tokio::spawn(run(self.state.clone())));
        } else if earliest {
            self.state.notify.notify_one();
        }
    }

    /// `at` as these timers store it: nanoseconds after their start, 8 bytes (a
    /// connection keeps its registered deadline this way).
    pub(crate) fn ticks(&self, at: Instant) -> u64 {
        self.state.ticks(at)
    }

    /// Entries held (live, superseded and departed connections'), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state.heap).entries.len()
    }

    /// Stops the task and waits for it to end. Called by shutdown after the last
    /// connection departed.
    pub(crate) async fn finish(&self) {
        lock(&self.state.heap).stopped = true;
        self.state.notify.notify_one();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Timers {
    /// A server dropped without a shutdown stops its task too.
    fn drop(&mut self) {
        lock(&self.state.heap).stopped = true;
        self.state.notify.notify_one();
    }
}

impl State {
    fn ticks(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    fn instant(&self, ticks: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.base + Duration::from_nanos(ticks))
    }
}

/// The timer task: wakes the connections whose deadlines have passed, then sleeps until
/// the next one (or until an earlier one is registered).
async fn run(state: Arc<State>) {
    let mut due = Vec::new();
    loop {
        let next = {
            let mut heap = lock(&state.heap);
            if heap.stopped {
                return;
            }
            // Entries at or before the clock's reading: a woken connection reads the
            // clock after this, so it finds its deadline passed.
            let now = state.ticks(tokio::time::Instant::now().into_std());
            while let Some(&Reverse((when, conn_id))) = heap.entries.peek() {
                if when > now {
                    break;
                }
                heap.entries.pop();
                due.push(conn_id);
            }
            let next = heap.entries.peek().map(|e| e.0.0);
            if heap.entries.len() >= heap.compact_at.max(COMPACT_MIN) {
                if heap.entries.len() > 2 * state.hub.len() {
                    // Mostly departed connections' entries (a churn of short
                    // connections): keep those of live ones.
                    let hub = &state.hub;
                    heap.entries.retain(|e| hub.get(e.0.1).is_some());
                }
                heap.compact_at = 2 * heap.entries.len();
            }
            next
        };
        for conn_id in due.drain(..) {
            if let Some(handle) = state.hub.get(conn_id) {
                handle.wake();
            }
        }
        match next {
            Some(when) => {
                tokio::select! {
                    () = tokio::time::sleep_until(state.instant(when)) => {}
                    () = state.notify.notified() => {}
                }
            }
            None => state.notify.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnHandle;
    use longconn_core::config::SlowConsumerPolicy;
    use std::task::{Context, Poll};

    fn woken(handle: &ConnHandle) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        handle.poll_woken(&mut cx) == Poll::Ready(())
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_each_connection_at_its_deadline_in_order() {
        let hub = Arc::new(Hub::new(1));
        let timers = Timers::new(hub.clone());
        let a = ConnHandle::new(hub.next_conn_id(), 8, SlowConsumerPolicy::DropNewest);
        let b = ConnHandle::new(hub.next_conn_id(), 8, SlowConsumerPolicy::DropNewest);
        hub.insert(a.clone());
        hub.insert(b.clone());
        let start = tokio::time::Instant::now().into_std();
        timers.wake_at(start + Duration::from_secs(10), a.id());
        timers.wake_at(start + Duration::from_secs(5), b.id());
        assert!(!woken(&a) && !woken(&b));
        tokio::time::sleep(Duration::from_millis(4_999)).await;
        assert!(!woken(&a) && !woken(&b));
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(!woken(&a) && woken(&b), "b at 5 s");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(woken(&a), "a at 10 s");
        assert_eq!(timers.len(), 0);
        // A departed connection's entry fires into nothing.
        timers.wake_at(start + Duration::from_secs(20), b.id());
        hub.remove(b.id(), None);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(timers.len(), 0);
        timers.finish().await;
        // After the stop nothing is registered.
        timers.wake_at(start + Duration::from_secs(50), a.id());
        assert_eq!(timers.len(), 0);
    }
}
