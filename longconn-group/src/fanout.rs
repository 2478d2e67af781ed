//! The bounded fan-out pool: a fixed number of worker tasks, each with a bounded queue of
//! chunks, shared by every large group's publish (the seed's "goroutine reuse"). A
//! publisher that outruns the workers waits for queue space: backpressure lands on the
//! publisher, never on a member.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use longconn_core::{PushOutcome, Transmit};
use longconn_server::ConnHandle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Chunks waiting per worker before a publisher waits.
const WORKER_QUEUE: usize = 64;

/// What became of one fan-out's pushes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) queued: usize,
    pub(crate) dropped: usize,
    /// Of `dropped`: refused by a full queue (drop-newest policy).
    pub(crate) full: usize,
    /// Of `dropped`: the member was disconnected as a slow consumer.
    pub(crate) slow: usize,
}

impl Tally {
    fn count(&mut self, outcome: PushOutcome) {
        match outcome {
            PushOutcome::Queued => self.queued += 1,
            PushOutcome::Dropped => {
                self.dropped += 1;
                self.full += 1;
            }
            PushOutcome::Disconnected => {
                self.dropped += 1;
                self.slow += 1;
            }
            PushOutcome::NotActive => self.dropped += 1,
        }
    }
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.queued += other.queued;
        self.dropped += other.dropped;
        self.full += other.full;
        self.slow += other.slow;
    }
}

/// Pushes `frame` to each member without waiting. A full queue is handled by that
/// member's slow-consumer policy; a member that closed meanwhile counts as dropped.
pub(crate) fn push_all(members: &[ConnHandle], frame: &Bytes) -> Tally {
    let mut tally = Tally::default();
    let stamp = longconn_server::metrics::queue_stamp();
    for member in members {
        tally.count(member.push_stamped(Transmit::Encoded(frame.clone()), stamp));
    }
    tally
}

/// As [`push_all`], without waking anyone; the caller wakes the members afterwards
/// ([`wake_all`]).
pub(crate) fn push_all_quiet(members: &[ConnHandle], frame: &Bytes) -> Tally {
    let mut tally = Tally::default();
    let stamp = longconn_server::metrics::queue_stamp();
    for member in members {
        tally.count(member.push_quiet_stamped(Transmit::Encoded(frame.clone()), stamp));
    }
    tally
}

/// Wakes every member's driver (after [`push_all_quiet`]).
pub(crate) fn wake_all(members: &[ConnHandle]) {
    for member in members {
        member.wake();
    }
}

/// Wakes every member's driver (after [`push_all_quiet`]) from `shards` tasks spawned
/// on `runtime`, each waking one contiguous share of `members`: a runtime with several
/// worker threads then starts each share's drivers on the worker that woke them (its
/// local run queue) instead of all on one. The caller does not wait for them.
pub(crate) fn wake_sharded(
    runtime: &tokio::runtime::Handle,
    members: &Arc<[ConnHandle]>,
    shards: usize,
) {
    let shards = shards.clamp(1, members.len().max(1));
    let per = members.len().div_ceil(shards).max(1);
    for start in (0..members.len()).step_by(per) {
        let woken = members.clone();
        let end = (start + per).min(members.len());
        runtime.spawn(async move { wake_all(&woken[start..end]) });
    }
}

struct Chunk {
    members: Arc<[ConnHandle]>,
    range: Range<usize>,
    frame: Bytes,
    done: oneshot::Sender<Tally>,
}

/// The worker pool. Workers start on first use (so the registry can be built outside a
/// runtime) and stop at [`FanoutPool::close`] or when the pool is dropped.
#[derive(Debug)]
pub(crate) struct FanoutPool {
    workers: usize,
    queues: OnceLock<Vec<mpsc::Sender<Chunk>>>,
    next: AtomicUsize,
    stop: CancellationToken,
    /// The workers, each resolving to the chunks it finished after `stop`.
    tasks: Mutex<Vec<JoinHandle<u64>>>,
}

impl FanoutPool {
    pub(crate) fn new(workers: usize) -> FanoutPool {
        FanoutPool {
            workers,
            queues: OnceLock::new(),
            next: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Stops the workers after they finish every queued chunk; returns how many chunks
    /// they finished after the stop. Later fan-outs are pushed inline by the publisher.
    pub(crate) async fn close(&self) -> u64 {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut drained = 0;
        for task in tasks {
            drained += task.await.unwrap_or(0);
        }
        drained
    }

    /// Pushes `frame` to every member, `chunk` members per job, spread over the workers,
    /// and waits until all are done.
    pub(crate) async fn push_all(
        &self,
        members: Arc<[ConnHandle]>,
        frame: Bytes,
        chunk: usize,
    ) -> Tally {
        let queues = self.queues.get_or_init(|| {
            (0..self.workers)
                .map(|_| {
                    let (tx, rx) = mpsc::channel(WORKER_QUEUE);
                    let task = tokio::spawn(work(rx, self.stop.clone()));
                    self.tasks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(task);
                    tx
                })
                .collect()
        });
        let mut tally = Tally::default();
        let mut pending = Vec::with_capacity(members.len().div_ceil(chunk));
        for start in (0..members.len()).step_by(chunk) {
            let range = start..(start + chunk).min(members.len());
            let (done, result) = oneshot::channel();
            let worker = self.next.fetch_add(1, Ordering::Relaxed) % queues.len();
            let job = Chunk {
                members: members.clone(),
                range: range.clone(),
                frame: frame.clone(),
                done,
            };
            match queues[worker].send(job).await {
                Ok(()) => pending.push((range.len(), result)),
                // The worker is gone (the runtime is shutting down): push inline.
                Err(_) => tally += push_all(&members[range], &frame),
            }
        }
        for (len, result) in pending {
            // A worker that died mid-chunk delivered an unknown part of it: count it all
            // as dropped.
            tally += result.await.unwrap_or(Tally {
                dropped: len,
                ..Tally::default()
            });
        }
        tally
    }
}

/// One worker: chunks in order until the pool stops, then what is still queued.
async fn work(mut chunks: mpsc::Receiver<Chunk>, stop: CancellationToken) -> u64 {
    let run = |chunk: Chunk| {
        let tally = push_all(&chunk.members[chunk.range], &chunk.frame);
        let _ = chunk.done.send(tally);
    };
    loop {
        tokio::select! {
            chunk = chunks.recv() => match chunk {
                Some(chunk) => run(chunk),
                None => return 0,
            },
            () = stop.cancelled() => break,
        }
    }
    chunks.close();
    let mut drained = 0;
    while let Some(chunk) = chunks.recv().await {
        run(chunk);
        drained += 1;
    }
    drained
}
