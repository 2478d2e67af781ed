//! The per-connection driver: one task that moves frames between a [`Connection`] and its
//! [`Session`], applies queued commands and pushes, and answers session events.
//!
//! All protocol decisions stay in the session; this file only does I/O, timers and
//! hand-offs to the authenticator, the router, the group layer and the route store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{Instrument, debug, debug_span};

use crate::Shared;
use crate::auth::LoginRequest;
use crate::hub::{ConnHandle, DeviceKey};
use crate::router::{BackendRequest, ConnectionEvent};
use longconn_core::ConnectionError;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::protocol::{Code, Text};
use longconn_core::session::{
    CloseReason, Command, Event, PushOutcome, Session, TokenExpiry, TransportEnd,
};

/// Registers `conn` in the hub and returns the future that drives it until its session
/// closes, then removes it from the hub.
///
/// The caller has taken one `max_connections` permit for it and forgotten it, and
/// counted it against `counted_ip` with the admission limits (`Shared::admission`,
/// `Shared::limits`): the driver gives both back when it is dropped, so the task holds
/// nothing beside the driver.
///
/// The set-up is synchronous on purpose: an `async fn` keeps its arguments inside its
/// future for its whole life, and `conn` would then cost every idle connection its size
/// a second time.
pub(crate) fn drive<C: Connection>(
    conn: C,
    shared: Arc<Shared>,
    counted_ip: Option<std::net::IpAddr>,
) -> impl Future<Output = ()> + Send {
    let conn_id = shared.hub.next_conn_id();
    let kind = conn.kind();
    let handle = ConnHandle::for_transport(
        conn_id,
        shared.session_config.max_queued_pushes(),
        shared.session_config.slow_consumer_policy(),
        kind,
    );
    let span = debug_span!(
        "conn",
        id = conn_id,
        protocol = kind.as_str(),
        peer = ?conn.peer_addr(),
        device = tracing::field::Empty,
    );
    shared.metrics.transport(kind).connects.increment(1);
    shared.hub.insert(handle.clone());
    // Shutdown cancels the token before it walks the hub, so a connection inserted
    // concurrently is either walked or sees the token here.
    if shared.shutting_down.is_cancelled() {
        handle.begin_drain(Duration::ZERO);
    }
    let io = conn.join();
    let driver = Driver {
        session: Session::new(shared.session_config.clone(), now()),
        io,
        handle,
        shared,
        identity: None,
        bound: false,
        drained: false,
        extras: None,
        counted_ip,
    };
    let driven = DriverTask::Running(driver);
    // The span (32 B) is kept only when it records: with `debug` off (production)
    // every connection would carry a disabled one; with it on, the instrumented
    // future is boxed, so the common case pays nothing for it.
    let driven = if span.is_disabled() {
        futures::future::Either::Left(driven)
    } else {
        futures::future::Either::Right(Box::pin(driven.instrument(span)))
    };
    DRIVER_FUTURE_BYTES.store(std::mem::size_of_val(&driven), Ordering::Relaxed);
    driven
}

/// Sizes of the last connection's futures, for the memory tests: the driver's, and the
/// whole task's (handshake, admission and driver) of the last accepted connection.
static DRIVER_FUTURE_BYTES: AtomicUsize = AtomicUsize::new(0);
static TASK_FUTURE_BYTES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn record_task_size(bytes: usize) {
    TASK_FUTURE_BYTES.store(bytes, Ordering::Relaxed);
}

/// Bytes of the last connection's driver future, and of the last accepted connection's
/// whole task future (its handshake, admission and driver); 0 before the first. An idle
/// connection's task holds this future plus tokio's task header (rounded up to 128
/// bytes), so this is what the idle-memory tests bound (`benches/tests/idle_census.rs`).
#[doc(hidden)]
pub fn future_sizes() -> (usize, usize) {
    (
        DRIVER_FUTURE_BYTES.load(Ordering::Relaxed),
        TASK_FUTURE_BYTES.load(Ordering::Relaxed),
    )
}

struct Driver<J> {
    session: Session,
    /// The connection, reading and writing ([`Connection::join`]).
    io: J,
    handle: ConnHandle,
    shared: Arc<Shared>,
    /// (app, device) from `Login`, copied out of the read buffer.
    identity: Option<DeviceKey>,
    /// Whether the hub maps `identity` to this connection.
    bound: bool,
    /// Whether the session has entered `Draining` (its writes count as drain flushes).
    drained: bool,
    /// What only a busy connection has (its tasks, a join being answered, a
    /// recovery); `None`, one pointer, while it has none of them.
    extras: Option<Box<Extras>>,
    /// The source IP this connection is counted against (given back on drop).
    counted_ip: Option<std::net::IpAddr>,
}

impl<J> Drop for Driver<J> {
    /// Gives the connection's admission back: its `max_connections` permit and its
    /// IP's count (see [`drive`]).
    fn drop(&mut self) {
        self.shared.admission.add_permits(1);
        if let Some(ip) = self.counted_ip {
            self.shared.limits.release(ip);
        }
    }
}

/// The state of a connection's rarer work, boxed while any of it is in progress
/// ([`Driver::release_extras`]).
#[derive(Default)]
struct Extras {
    /// The connection's auth and request tasks. Dropping the set aborts them, so a
    /// departed connection releases its backend permits at once.
    tasks: Option<tokio::task::JoinSet<()>>,
    /// Groups just recovered: live pushes already replayed are dropped.
    recovering: Option<crate::recovery::Recovering>,
    /// A join whose answer waits for the group's history ([`Driver::poll_join`]).
    pending_join: Option<PendingJoin>,
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.tasks.is_none() && self.recovering.is_none() && self.pending_join.is_none()
    }
}

/// The connection's task, written by hand rather than as an `async` block (whose state
/// and awaits would sit beside the driver in every idle connection's task): while the
/// session runs it is the driver itself; once the session has closed, the driver moves
/// into the boxed future that departs and closes the transport ([`Driver::finish`]).
enum DriverTask<J> {
    Running(Driver<J>),
    Closing(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

// Nothing of the driver is ever pinned (the connection is polled through `&mut`), so the
// task may move.
impl<J> Unpin for DriverTask<J> {}

impl<J: FrameReader + FrameWriter> Future for DriverTask<J> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.get_mut();
        loop {
            match task {
                DriverTask::Running(driver) => {
                    let reason = ready!(driver.poll_run(cx));
                    if let DriverTask::Running(mut driver) =
                        std::mem::replace(task, DriverTask::Done)
                    {
                        *task =
                            DriverTask::Closing(Box::pin(
                                async move { driver.finish(reason).await },
                            ));
                    }
                }
                DriverTask::Closing(closing) => {
                    ready!(closing.as_mut().poll(cx));
                    *task = DriverTask::Done;
                    return Poll::Ready(());
                }
                DriverTask::Done => panic!("a connection's task polled after it ended"),
            }
        }
    }
}

/// A join being answered: the `JoinGroup`'s id, group and asked position, and the read
/// of the group's history that the answer waits for.
struct PendingJoin {
    id: u32,
    group: Text,
    since: Option<longconn_core::protocol::Position>,
    recovery: std::pin::Pin<Box<dyn Future<Output = crate::JoinRecovery> + Send>>,
}

/// The session's clock: tokio's, so paused-time tests control it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl<J: FrameReader + FrameWriter> Driver<J> {
    /// After the session closed: aborts the connection's tasks, leaves the hub, its
    /// groups and the route store before the last frames are flushed (so nothing is
    /// routed to it while it lingers), then closes the transport within the linger.
    async fn finish(&mut self, reason: CloseReason) {
        // Abort what is still in flight for this connection: its answers have nowhere
        // to go, and a request task holds a backend permit until it ends. Waiting for
        // the aborts means no task of this connection outlives its driver.
        if let Some(mut tasks) = self.extras.as_mut().and_then(|e| e.tasks.take()) {
            tasks.shutdown().await;
        }
        self.discard_inbox();
        self.depart(reason);
        if !matches!(
            reason,
            CloseReason::TransportEnded | CloseReason::TransportFailed
        ) {
            let linger = self.shared.close_linger;
            let _ = tokio::time::timeout(linger, self.io.close(reason)).await;
        }
        debug!(
            reason = crate::metrics::reason_label(reason),
            detail = ?reason,
            "connection closed"
        );
    }

    /// Takes the closed connection out of its groups, the hub and the route store, and
    /// reports the close to subscribed backends.
    fn depart(&mut self, reason: CloseReason) {
        let conn_id = self.handle.id();
        // The inbox is closed by now, so a concurrent server-side join either finished
        // before this or sees the connection closed and undoes itself.
        self.shared.groups.leave_all(conn_id);
        self.shared.acks.closed(conn_id);
        let device = self.bound.then_some(()).and(self.identity.as_ref());
        let metrics = self.shared.metrics.transport(self.handle.transport());
        metrics.disconnects[crate::metrics::reason_index(reason)].increment(1);
        if self.bound {
            metrics.online.decrement(1.0);
        }
        self.shared.hub.remove(conn_id, device);
        if let Some(device) = device {
            self.shared.routes.unregister(device.clone(), conn_id);
            if self.shared.router.has_subscribers() {
                self.shared.router.publish(ConnectionEvent::Disconnected {
                    conn_id,
                    device: device.clone(),
                    reason,
                });
            }
        }
    }

    /// Runs the session until it closes, as one poll function (no future is kept
    /// between polls, so an idle connection holds only the driver): queued commands and
    /// pushes, session events and deadlines first, then the wait for whichever comes
    /// first of a wake-up through the handle, the end of a flush, or a frame.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        loop {
            if self.joining() {
                // A join's answer waits for the group's history; nothing else of this
                // connection moves meanwhile (its order is kept).
                ready!(self.poll_join(cx));
                self.handle_events();
                continue;
            }
            self.take_inbox();
            self.handle_events();
            if self.joining() {
                continue;
            }
            self.write_transmits();
            if self.session.is_closed() {
                return Poll::Ready(
                    self.session
                        .close_reason()
                        .unwrap_or(CloseReason::TransportFailed),
                );
            }
            self.session.release_idle_memory();
            self.reap_tasks();
            self.release_extras();
            // The session's deadlines: one passed is handled now (each call handles one
            // and moves or clears it, so this loop ends); the next is registered with
            // the server's timers, which wake this task through its handle.
            if let Some(at) = self.session.poll_timeout() {
                let now = now();
                if at <= now {
                    self.session.handle_timeout(now);
                    continue;
                }
                self.arm(at, now);
            }
            // Each poll below registers this task's waker where it returns `Pending`.
            if self.handle.poll_woken(cx).is_ready() {
                continue;
            }
            if self.io.has_pending_writes() {
                if let Poll::Ready(flushed) = self.io.poll_flush(cx) {
                    if flushed.is_err() {
                        self.session.handle_transport_end(TransportEnd::Failed);
                    } else {
                        self.finish_drain_if_flushed();
                    }
                    continue;
                }
            } else if self.finish_drain_if_flushed() {
                // Written out by other means than this flush (a WebSocket reader
                // writes its answers through the same buffer).
                continue;
            }
            let received = ready!(self.io.poll_recv(cx));
            self.on_received(received);
        }
    }

    /// Makes sure the server's timers wake this driver at `at`: an entry still pending
    /// at or before `at` will (the driver then registers the next deadline); otherwise
    /// `at` is registered.
    fn arm(&mut self, at: Instant, now: Instant) {
        let timers = &self.shared.timers;
        let (at, now) = (timers.ticks(at), timers.ticks(now));
        let armed = self.handle.armed();
        if armed > now && armed <= at {
            return;
        }
        timers.wake_at_ticks(at, self.handle.id());
        self.handle.set_armed(at);
    }

    fn on_received(&mut self, received: Result<Option<longconn_core::Frame>, ConnectionError>) {
        match received {
            Ok(Some(frame)) => {
                let metrics = self.shared.metrics.transport(self.handle.transport());
                metrics.frames_in.increment(1);
                metrics
                    .bytes_in
                    .increment(frame.encoded_len().unwrap_or(0) as u64);
                self.session.handle_frame(now(), frame);
            }
            Ok(None) => self.session.handle_transport_end(TransportEnd::Eof),
            Err(ConnectionError::Decode(err)) => {
                debug!(error = %err, "bad frame from peer");
                self.session.handle_decode_error(&err);
            }
            Err(err) => {
                // A reset or a vanished peer is routine at scale: not a warning.
                debug!(conn = self.handle.id(), error = %err, "transport failed");
                self.session.handle_transport_end(TransportEnd::Failed);
            }
        }
    }

    /// Applies queued commands, then moves queued pushes into the session while the
    /// transport keeps up (nothing left unflushed).
    fn take_inbox(&mut self) {
        let now = now();
        let mut inbox = self.handle.inbox();
        let Some(queues) = inbox.queues_if_any() else {
            return;
        };
        while let Some(command) = queues.commands.pop_front() {
            self.session.handle_command(now, command);
        }
        if self.io.has_pending_writes() {
            return;
        }
        let mut drained = 0;
        let mut written = 0;
        if let Some(oldest) = queues.oldest.take() {
            let waited = now.saturating_duration_since(oldest);
            self.shared
                .metrics
                .push_queue_seconds
                .record(waited.as_secs_f64());
        }
        while let Some(push) = queues.pushes.pop_front() {
            drained += 1;
            if let Some(extras) = &mut self.extras
                && let Some(recovering) = &mut extras.recovering
            {
                if recovering.is_replayed(&push) {
                    continue;
                }
                if recovering.is_empty() {
                    extras.recovering = None;
                }
            }
            match self.session.push(push.into()) {
                PushOutcome::Queued => written += 1,
                PushOutcome::Dropped | PushOutcome::NotActive => self.handle.count_dropped(1),
                PushOutcome::Disconnected => break,
            }
        }
        if written > 0 {
            let metrics = self.shared.metrics.transport(self.handle.transport());
            metrics.pushes_written.increment(written);
        }
        inbox.release_idle_memory(drained);
    }

    /// Marks the inbox closed so late pushes report `NotActive`, and counts what it held.
    fn discard_inbox(&mut self) {
        let mut inbox = self.handle.inbox();
        self.handle.close_inbox(&inbox);
        let left = inbox.pushes_len() as u64;
        if let Some(queues) = inbox.queues_if_any() {
            queues.pushes.clear();
            queues.commands.clear();
        }
        inbox.release_idle_memory(0);
        drop(inbox);
        self.handle.count_dropped(left);
        self.shared.stats.record_close(left);
    }

    fn write_transmits(&mut self) {
        self.drained |= self.session.state() == longconn_core::State::Draining;
        // Counted locally and added once per call: the counters are shared by every
        // connection, so one atomic add per frame would contend across threads.
        let (mut frames, mut bytes) = (0u64, 0u64);
        while let Some(transmit) = self.session.poll_transmit() {
            bytes += match &transmit {
                longconn_core::session::Transmit::Encoded(bytes) => bytes.len(),
                longconn_core::session::Transmit::Frame(frame) => frame.encoded_len().unwrap_or(0),
            } as u64;
            frames += 1;
            if self.drained {
                self.shared
                    .stats
                    .drain_flushed
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Err(err) = self.io.send(transmit) {
                // Only an oversized application frame can fail to encode; drop it.
                tracing::warn!(conn = self.handle.id(), error = %err, "frame not sent");
            }
        }
        if frames > 0 {
            let metrics = self.shared.metrics.transport(self.handle.transport());
            metrics.frames_out.increment(frames);
            metrics.bytes_out.increment(bytes);
        }
    }

    /// A draining session whose output is all written has nothing left to do: close it.
    /// Returns whether it did.
    fn finish_drain_if_flushed(&mut self) -> bool {
        let done = self.session.state() == longconn_core::State::Draining
            && !self.session.has_transmit()
            && self.handle.inbox().pushes_len() == 0;
        if done {
            self.session.handle_command(
                now(),
                Command::Close {
                    code: Code::GoingAway,
                },
            );
        }
        done
    }

    fn handle_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Authenticate {
                    app,
                    device,
                    token,
                    meta,
                } => {
                    self.identity = Some(DeviceKey::new(app.as_str(), device.as_str()));
                    tracing::Span::current().record("device", device.as_str());
                    let login = LoginRequest {
                        app,
                        device,
                        token,
                        meta,
                    };
                    self.spawn_auth(login, None);
                }
                Event::LoggedIn { .. } => self.on_logged_in(),
                Event::RefreshToken { id, token } => {
                    if let Some(identity) = &self.identity {
                        let login = LoginRequest {
                            app: Text::from(identity.app()),
                            device: Text::from(identity.device()),
                            token,
                            meta: Default::default(),
                        };
                        self.spawn_auth(login, Some(id));
                    }
                }
                Event::Request {
                    id,
                    business,
                    meta,
                    payload,
                } => self.spawn_request(id, business, meta, payload),
                Event::JoinGroup { id, group, since } => {
                    let Some(identity) = &self.identity else {
                        continue;
                    };
                    let groups = &self.shared.groups;
                    match groups.join(&self.handle, identity, group.as_str()) {
                        Ok(()) => {
                            // Answered by `poll_join` once the history is read; the
                            // events after it wait (their order is kept).
                            let join = self.read_history(id, group, since);
                            self.extras().pending_join = Some(join);
                            return;
                        }
                        Err(code) => {
                            self.session
                                .handle_command(now(), Command::GroupRejected { id, code });
                        }
                    }
                }
                Event::LeaveGroup { id, group } => {
                    let command = match self.shared.groups.leave(self.handle.id(), group.as_str()) {
                        Ok(()) => Command::GroupLeft { id, group },
                        Err(code) => Command::GroupRejected { id, code },
                    };
                    self.session.handle_command(now(), command);
                }
                Event::PushAcked { id } => self.shared.acks.acked(self.handle.id(), id),
                Event::PeerError { .. } => {}
                Event::QualityReport { network, report } => {
                    self.shared.quality.record(network, &report);
                }
                // Logged once, with its metrics label, when the driver ends.
                Event::Closed(_) => {}
            }
        }
    }

    /// Starts reading a joined group's history from `since` (or only its position).
    fn read_history(
        &self,
        id: u32,
        group: Text,
        since: Option<longconn_core::protocol::Position>,
    ) -> PendingJoin {
        let asked = since.map(|p| crate::GroupPosition {
            epoch: p.epoch,
            offset: p.seq,
        });
        let shared = self.shared.clone();
        let name = group.clone();
        PendingJoin {
            id,
            group,
            since,
            recovery: Box::pin(async move { shared.groups.recover(name.as_str(), asked).await }),
        }
    }

    /// Answers a successful join once its history is read: `JoinAck` with the group's
    /// position and, for a rejoin from `since`, whether it was recovered; then the
    /// recovered pushes, before any live one (live copies at or below the ack's
    /// position are dropped: see [`crate::recovery`]).
    fn poll_join(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(extras) = &mut self.extras else {
            return Poll::Ready(());
        };
        let Some(join) = &mut extras.pending_join else {
            return Poll::Ready(());
        };
        let recovery = ready!(join.recovery.as_mut().poll(cx));
        let Some(PendingJoin {
            id, group, since, ..
        }) = extras.pending_join.take()
        else {
            return Poll::Ready(());
        };
        let position = recovery
            .position
            .map(|p| longconn_core::protocol::Position {
                epoch: p.epoch,
                seq: p.offset,
            });
        let recovered = since.map(|_| recovery.recovered);
        let replay = recovered == Some(true);
        self.session.handle_command(
            now(),
            Command::GroupJoined {
                id,
                group: group.clone(),
                position,
                recovered,
            },
        );
        if !replay {
            return Poll::Ready(());
        }
        for frame in recovery.frames {
            if self
                .session
                .push(longconn_core::session::Transmit::Encoded(frame))
                != PushOutcome::Queued
            {
                self.handle.count_dropped(1);
            }
        }
        if let Some(top) = position {
            self.extras()
                .recovering
                .get_or_insert_with(Default::default)
                .watch(group.detach(), top);
        }
        Poll::Ready(())
    }

    /// Maps the device to this connection (kicking the one it replaces), registers its
    /// route and tells subscribed backends.
    fn on_logged_in(&mut self) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let conn_id = self.handle.id();
        if let Some(old) = self.shared.hub.bind_device(identity.clone(), conn_id) {
            old.kick(Code::Replaced, Text::from_static("logged in elsewhere"));
        }
        self.bound = true;
        let metrics = self.shared.metrics.transport(self.handle.transport());
        metrics.logins_ok.increment(1);
        metrics.online.increment(1.0);
        self.shared.routes.register(identity.clone(), conn_id);
        if self.shared.router.has_subscribers() {
            self.shared.router.publish(ConnectionEvent::Connected {
                conn_id,
                device: identity,
                protocol: self.handle.transport(),
            });
        }
    }

    /// Checks a login (`refresh_id == None`) or a token refresh on a task of its own and
    /// queues the result as a command.
    /// Runs `task` as one of this connection's tasks (aborted when it departs).
    fn spawn_owned(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.reap_tasks();
        self.extras()
            .tasks
            .get_or_insert_with(Default::default)
            .spawn(task);
    }

    /// Runs `task` (a login check or a request) to its command at once when it needs no
    /// waiting, as the echo backend and the token authenticator do: the command goes
    /// straight to the session, without a task, a wake-up or a trip through the inbox.
    /// Otherwise the task, already polled once, goes on as one of the connection's
    /// tasks and queues its command when done.
    fn complete_or_spawn(&mut self, task: impl Future<Output = Command> + Send + 'static) {
        let mut task = Box::pin(task);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match task.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(command) => {
                self.session.handle_command(now(), command);
            }
            std::task::Poll::Pending => {
                let handle = self.handle.clone();
                self.spawn_owned(async move {
                    handle.command(task.await);
                });
            }
        }
    }

    /// Forgets finished tasks; drops the set once it is empty.
    fn reap_tasks(&mut self) {
        let Some(extras) = &mut self.extras else {
            return;
        };
        if let Some(tasks) = &mut extras.tasks {
            while tasks.try_join_next().is_some() {}
            if tasks.is_empty() {
                extras.tasks = None;
            }
        }
    }

    /// The box of rarer state, made on first use.
    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Drops the box of rarer state once nothing is in it.
    fn release_extras(&mut self) {
        if self.extras.as_ref().is_some_and(|e| e.is_empty()) {
            self.extras = None;
        }
    }

    /// Whether a join's answer is waiting for the group's history.
    fn joining(&self) -> bool {
        self.extras
            .as_ref()
            .is_some_and(|e| e.pending_join.is_some())
    }

    fn spawn_auth(&mut self, login: LoginRequest, refresh_id: Option<u32>) {
        let authenticator = self.shared.authenticator.clone();
        let conn_id = self.handle.id();
        let shared = self.shared.clone();
        let kind = self.handle.transport();
        self.complete_or_spawn(async move {
            let now_unix = unix_now();
            let started = now();
            let result = authenticator.authenticate(&login, now_unix.as_secs()).await;
            if refresh_id.is_none() {
                let took = now().saturating_duration_since(started);
                shared.metrics.login_seconds.record(took.as_secs_f64());
                if result.is_err() {
                    shared.metrics.transport(kind).logins_rejected.increment(1);
                }
            }
            let expiry = |grant: crate::auth::AuthGrant| {
                grant.expires_unix_s.map(|exp_s| {
                    let left = Duration::from_secs(exp_s).saturating_sub(now_unix);
                    TokenExpiry {
                        at: now() + left,
                        unix_ms: exp_s.saturating_mul(1000),
                    }
                })
            };
            match (refresh_id, result) {
                (None, Ok(grant)) => Command::AuthAccepted {
                    conn_id,
                    expiry: expiry(grant),
                },
                (None, Err(code)) => Command::AuthRejected { code },
                (Some(id), Ok(grant)) => Command::RefreshAccepted {
                    id,
                    expiry: expiry(grant),
                },
                (Some(id), Err(code)) => Command::RefreshRejected { id, code },
            }
        });
    }

    fn spawn_request(
        &mut self,
        id: u32,
        business: u32,
        meta: longconn_core::Metadata,
        payload: bytes::Bytes,
    ) {
        let Some(device) = self.identity.clone() else {
            return;
        };
        let request = BackendRequest {
            conn_id: self.handle.id(),
            device,
            business,
            meta,
            payload,
        };
        let shared = self.shared.clone();
        let conn = self.handle.id();
        self.complete_or_spawn(async move {
            match shared.router.dispatch(request).await {
                Ok(reply) => Command::Respond {
                    id,
                    business,
                    meta: reply.meta,
                    payload: reply.payload,
                },
                Err(err) => {
                    if matches!(err.code, Code::BackendError | Code::BackendTimeout) {
                        tracing::warn!(conn, business, code = ?err.code, message = %err.message.as_str(), "upstream request failed");
                    } else {
                        debug!(conn, business, code = ?err.code, "upstream request refused");
                    }
                    Command::RequestFailed {
                        id,
                        code: err.code,
                        message: err.message,
                    }
                }
            }
        });
    }
}
