//! The forwarding router: rules map a request's business id to a [`Backend`], each
//! behind its own timeout and concurrency limit; subscribed backends also receive
//! [`ConnectionEvent`]s (connected, disconnected with the close reason).
//!
//! ```text
//! Request{business} ──► Router::dispatch ──► exact id? ──► range? ──► default? ──► unknown_business
//!                                                 │ (a permit of the backend's limit, else busy)
//!                                                 ▼
//!                                   Backend::call  (within its timeout, else backend_timeout)
//! ```

use crate::metrics::{RequestOutcome, RouterMetrics};
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::hub::DeviceKey;
use longconn_core::connection::TransportKind;
use longconn_core::protocol::{Code, Metadata, Text};
use longconn_core::session::CloseReason;

/// An upstream request with the common parameters the backend needs.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// The connection it came from.
    pub conn_id: u64,
    /// (app id, device id) of the logged-in client.
    pub device: DeviceKey,
    /// Business id that selected the backend.
    pub business: u32,
    /// Request metadata.
    pub meta: Metadata,
    /// Opaque payload.
    pub payload: Bytes,
}

/// A backend's successful answer, sent to the client as `Response`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendReply {
    /// Response metadata.
    pub meta: Metadata,
    /// Response payload.
    pub payload: Bytes,
}

/// A failed request, sent to the client as `Error { id, code, message }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// Wire code: `unknown_business` (300), `backend_timeout` (301), `backend_error`
    /// (302) or `busy` (303).
    pub code: Code,
    /// Detail for the client.
    pub message: Text,
}

impl BackendError {
    /// A `backend_error` (302) with this message: what a backend returns when it fails.
    pub fn failed(message: impl Into<String>) -> BackendError {
        BackendError {
            code: Code::BackendError,
            message: Text::from(message.into()),
        }
    }
}

/// A change in a logged-in connection's state, for backends subscribed with
/// [`RouterBuilder::subscribe`]. Connections that never log in produce none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The connection logged in.
    Connected {
        /// Connection id.
        conn_id: u64,
        /// Who logged in.
        device: DeviceKey,
        /// The transport it came over.
        protocol: TransportKind,
    },
    /// A logged-in connection closed.
    Disconnected {
        /// Connection id.
        conn_id: u64,
        /// Who it was.
        device: DeviceKey,
        /// Why it closed.
        reason: CloseReason,
    },
}

/// Where requests for some business ids go: in-process code, an HTTP callback, an RPC
/// client. One `call` runs per request, on a task of its own, so a backend may be as slow
/// as its timeout allows without holding up the connection.
///
/// The shape is tower's `Service::call` without `poll_ready` (readiness is the router's
/// concurrency limit); [`ServiceBackend`] adapts any tower service.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Answers one request. The router applies the timeout and the concurrency limit;
    /// the backend only does the work.
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError>;

    /// Receives a connection event, if this backend is subscribed to them. Events come
    /// one at a time, in order, from a queue of their own; the default ignores them.
    async fn connection_event(&self, event: ConnectionEvent) {
        let _ = event;
    }
}

/// Business id of the built-in echo backend in [`Router::echo`].
pub const ECHO_BUSINESS: u32 = 1;

/// Answers every request with the request's own payload and metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoBackend;

#[async_trait]
impl Backend for EchoBackend {
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        Ok(BackendReply {
            meta: request.meta,
            payload: request.payload,
        })
    }
}

/// A backend made from an async closure: `FnBackend::new(|req| async move { ... })`.
pub struct FnBackend<F> {
    f: F,
}

impl<F> FnBackend<F> {
    /// Wraps `f`, called once per request.
    pub fn new<Fut>(f: F) -> FnBackend<F>
    where
        F: Fn(BackendRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<BackendReply, BackendError>> + Send + 'static,
    {
        FnBackend { f }
    }
}

impl<F> std::fmt::Debug for FnBackend<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnBackend")
    }
}

#[async_trait]
impl<F, Fut> Backend for FnBackend<F>
where
    F: Fn(BackendRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<BackendReply, BackendError>> + Send + 'static,
{
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        (self.f)(request).await
    }
}

/// A backend made from a [`tower_service::Service`], so tower middleware stacks (and
/// anything else written against tower) can serve business ids. The service is cloned
/// per call, as tower services usually are, and asked for readiness before each call.
#[derive(Debug, Clone)]
pub struct ServiceBackend<S> {
    service: S,
}

impl<S> ServiceBackend<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> ServiceBackend<S> {
        ServiceBackend { service }
    }
}

#[async_trait]
impl<S> Backend for ServiceBackend<S>
where
    S: tower_service::Service<BackendRequest, Response = BackendReply, Error = BackendError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        let mut service = self.service.clone();
        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
        service.call(request).await
    }
}

/// Per-backend limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendLimits {
    /// How long one call may take before the client gets `backend_timeout`. Default 5 s;
    /// at least 1 ms.
    pub timeout: Duration,
    /// Calls in flight at once; one more gets `busy` at once rather than waiting.
    /// Default 1,024; at least 1.
    pub max_concurrency: usize,
}

impl Default for BackendLimits {
    fn default() -> Self {
        BackendLimits {
            timeout: Duration::from_secs(5),
            max_concurrency: 1024,
        }
    }
}

/// Connection events waiting for one subscriber before new ones are dropped (and
/// counted in [`Router::dropped_events`]).
pub const EVENT_QUEUE: usize = 4096;

/// A registered backend with its limits.
struct Slot {
    name: Arc<str>,
    backend: Arc<dyn Backend>,
    timeout: Duration,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Routes requests by business id. Build with [`Router::builder`]; cheap to share.
#[derive(Debug)]
pub struct Router {
    exact: HashMap<u32, Arc<Slot>>,
    /// Sorted by start; never overlapping.
    ranges: Vec<(RangeInclusive<u32>, Arc<Slot>)>,
    default: Option<Arc<Slot>>,
    subscribers: Vec<mpsc::Sender<ConnectionEvent>>,
    dropped_events: AtomicU64,
    delivery: Delivery,
    metrics: RouterMetrics,
}

/// The router's event-delivery tasks, owned so shutdown can let them finish.
#[derive(Debug, Default)]
struct Delivery {
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Events still queued after `stop`, not yet delivered.
    backlog: Arc<AtomicU64>,
}

impl Router {
    /// A builder with no backends and no rules.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// The reference gateway's default: [`EchoBackend`] on business
    /// [`ECHO_BUSINESS`], nothing else.
    pub fn echo() -> Router {
        Router::builder()
            .backend("echo", EchoBackend, BackendLimits::default())
            .route(ECHO_BUSINESS, "echo")
            .build()
            .expect("the echo router is valid")
    }

    /// The backend serving `business`: an exact rule, else a range, else the default.
    fn slot(&self, business: u32) -> Option<&Arc<Slot>> {
        if let Some(slot) = self.exact.get(&business) {
            return Some(slot);
        }
        // Ranges are sorted and disjoint: the last one starting at or before `business`
        // is the only candidate.
        let after = self.ranges.partition_point(|(r, _)| *r.start() <= business);
        after
            .checked_sub(1)
            .map(|i| &self.ranges[i])
            .filter(|(r, _)| r.contains(&business))
            .map(|(_, slot)| slot)
            .or(self.default.as_ref())
    }

    /// The name of the backend that serves `business`, if any.
    pub fn backend_for(&self, business: u32) -> Option<&str> {
        self.slot(business).map(|slot| &*slot.name)
    }

    /// Sends one request to its backend, within the backend's limits.
    pub async fn dispatch(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        let metrics = self.metrics.business(request.business);
        let Some(slot) = self.slot(request.business) else {
            metrics.record(RequestOutcome::NoRoute, None);
            return Err(BackendError {
                code: Code::UnknownBusiness,
                message: Text::from(format!("no backend for business {}", request.business)),
            });
        };
        let Ok(_permit) = slot.permits.clone().try_acquire_owned() else {
            metrics.record(RequestOutcome::Rejected, None);
            return Err(BackendError {
                code: Code::Busy,
                message: Text::from(format!(
                    "backend `{}` is at its concurrency limit",
                    slot.name
                )),
            });
        };
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(slot.timeout, slot.backend.call(request)).await;
        let took = Some(started.elapsed());
        match answered {
            Ok(Ok(reply)) => {
                metrics.record(RequestOutcome::Ok, took);
                Ok(reply)
            }
            Ok(Err(err)) => {
                metrics.record(RequestOutcome::BackendError, took);
                Err(err)
            }
            Err(_) => {
                metrics.record(RequestOutcome::Timeout, took);
                Err(BackendError {
                    code: Code::BackendTimeout,
                    message: Text::from(format!(
                        "backend `{}` did not answer within {} ms",
                        slot.name,
                        slot.timeout.as_millis()
                    )),
                })
            }
        }
    }

    /// Queues `event` for every subscribed backend without waiting. A subscriber whose
    /// queue is full ([`EVENT_QUEUE`]) misses the event, and it is counted.
    pub fn publish(&self, event: ConnectionEvent) {
        for subscriber in &self.subscribers {
            if subscriber.try_send(event.clone()).is_err() {
                let dropped = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    warn!(dropped, "connection event queue full; events dropped");
                }
            }
        }
    }

    /// Whether any backend is subscribed to connection events.
    pub fn has_subscribers(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// Connection events dropped because a subscriber's queue was full (or the router
    /// had finished).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Lets every subscriber's task deliver what is queued, then stops them; tasks still
    /// busy after `deadline` are aborted and their backlog counted. Returns the events
    /// dropped over the router's life ([`Router::dropped_events`] plus that backlog).
    /// Events published afterwards are dropped and counted. [`crate::Server::shutdown`]
    /// calls it once its connections are gone (so their `Disconnected` events are in).
    pub async fn finish_events(&self, deadline: Duration) -> u64 {
        self.delivery.stop.cancel();
        let tasks = std::mem::take(&mut *crate::shard::lock(&self.delivery.tasks));
        let until = tokio::time::Instant::now() + deadline;
        for mut task in tasks {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                task.abort();
                // An aborted task ends at its next await; wait for that, so no task
                // outlives shutdown.
                let _ = task.await;
                debug!("connection-event delivery aborted at the shutdown deadline");
            }
        }
        self.dropped_events() + self.delivery.backlog.load(Ordering::Relaxed)
    }
}

/// Builder for [`Router`]: register named backends, then map business ids to them.
#[derive(Default)]
pub struct RouterBuilder {
    backends: Vec<Arc<Slot>>,
    exact: Vec<(u32, String)>,
    ranges: Vec<(RangeInclusive<u32>, String)>,
    default: Option<String>,
    subscribe: Vec<String>,
    invalid: Option<&'static str>,
    metric_businesses: Vec<u32>,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("backends", &self.backends)
            .field("exact", &self.exact)
            .field("ranges", &self.ranges)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl RouterBuilder {
    /// Registers `backend` under `name` with its own limits. Several rules may name the
    /// same backend; they share its concurrency limit.
    pub fn backend(
        self,
        name: &str,
        backend: impl Backend,
        limits: BackendLimits,
    ) -> RouterBuilder {
        self.shared_backend(name, Arc::new(backend), limits)
    }

    /// [`RouterBuilder::backend`] for a backend that is already shared.
    pub fn shared_backend(
        mut self,
        name: &str,
        backend: Arc<dyn Backend>,
        limits: BackendLimits,
    ) -> RouterBuilder {
        if limits.max_concurrency == 0 || limits.max_concurrency > Semaphore::MAX_PERMITS {
            self.invalid
                .get_or_insert("max_concurrency must be at least 1");
        }
        if limits.timeout < Duration::from_millis(1) {
            self.invalid.get_or_insert("timeout must be at least 1 ms");
        }
        if self.backends.iter().any(|b| &*b.name == name) {
            self.invalid
                .get_or_insert("two backends have the same name");
        }
        self.backends.push(Arc::new(Slot {
            name: name.into(),
            backend,
            timeout: limits.timeout,
            permits: Arc::new(Semaphore::new(
                limits.max_concurrency.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }));
        self
    }

    /// Business ids labelled on their own in `longconn_upstream_requests_total` and
    /// `longconn_upstream_request_duration_seconds`, besides those with an exact rule
    /// (which always are). Requests for any other id count as `business="other"`, so the
    /// label stays bounded whatever ids clients send.
    pub fn metric_businesses(mut self, ids: impl IntoIterator<Item = u32>) -> RouterBuilder {
        self.metric_businesses.extend(ids);
        self
    }

    /// Sends business id `business` to backend `name`. Exact rules win over ranges.
    pub fn route(mut self, business: u32, name: &str) -> RouterBuilder {
        self.exact.push((business, name.to_owned()));
        self
    }

    /// Sends every business id in `range` to backend `name`. Ranges must not overlap.
    pub fn route_range(mut self, range: RangeInclusive<u32>, name: &str) -> RouterBuilder {
        self.ranges.push((range, name.to_owned()));
        self
    }

    /// Sends business ids no other rule matches to backend `name`.
    pub fn default_route(mut self, name: &str) -> RouterBuilder {
        self.default = Some(name.to_owned());
        self
    }

    /// Delivers [`ConnectionEvent`]s to backend `name`.
    pub fn subscribe(mut self, name: &str) -> RouterBuilder {
        self.subscribe.push(name.to_owned());
        self
    }

    /// Checks the rules and starts one event queue per subscriber. Subscribers need a
    /// tokio runtime: build inside one.
    ///
    /// # Errors
    /// [`Error::Config`] for a rule naming an unknown backend, two rules for one
    /// id, overlapping or empty ranges, out-of-range limits, or subscribers without a
    /// runtime.
    pub fn build(self) -> Result<Router> {
        let invalid = |reason| {
            Error::Config(longconn_core::ConfigError {
                field: "router",
                reason,
            })
        };
        if let Some(reason) = self.invalid {
            return Err(invalid(reason));
        }
        let find = |name: &str| {
            self.backends
                .iter()
                .find(|b| &*b.name == name)
                .cloned()
                .ok_or(invalid("a rule names a backend that was not registered"))
        };
        let mut exact = HashMap::new();
        for (business, name) in &self.exact {
            if exact.insert(*business, find(name)?).is_some() {
                return Err(invalid("two rules for one business id"));
            }
        }
        let mut ranges = Vec::new();
        for (range, name) in &self.ranges {
            if range.is_empty() {
                return Err(invalid("empty business range"));
            }
            ranges.push((range.clone(), find(name)?));
        }
        ranges.sort_by_key(|(r, _)| *r.start());
        if ranges.windows(2).any(|w| w[0].0.end() >= w[1].0.start()) {
            return Err(invalid("business ranges overlap"));
        }
        let default = self.default.as_deref().map(find).transpose()?;
        let mut subscribers = Vec::new();
        let delivery = Delivery::default();
        for name in &self.subscribe {
            let slot = find(name)?;
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| invalid("connection-event subscribers need a tokio runtime"))?;
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            let task = deliver_events(slot, rx, delivery.stop.clone(), delivery.backlog.clone());
            crate::shard::lock(&delivery.tasks).push(runtime.spawn(task));
            subscribers.push(tx);
        }
        Ok(Router {
            exact,
            ranges,
            default,
            subscribers,
            dropped_events: AtomicU64::new(0),
            delivery,
            metrics: RouterMetrics::new(
                self.exact
                    .iter()
                    .map(|(b, _)| *b)
                    .chain(self.metric_businesses.iter().copied()),
            ),
        })
    }
}

/// One subscriber's queue: events in order, each within the backend's timeout. Ends
/// when the router is dropped, or after `stop`, once the queue is empty.
async fn deliver_events(
    slot: Arc<Slot>,
    mut events: mpsc::Receiver<ConnectionEvent>,
    stop: CancellationToken,
    backlog: Arc<AtomicU64>,
) {
    let deliver = async |event| {
        let delivered =
            tokio::time::timeout(slot.timeout, slot.backend.connection_event(event)).await;
        if delivered.is_err() {
            debug!(backend = &*slot.name, "connection event timed out");
        }
    };
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => deliver(event).await,
                None => return,
            },
            () = stop.cancelled() => break,
        }
    }
    events.close();
    backlog.fetch_add(events.len() as u64, Ordering::Relaxed);
    while let Some(event) = events.recv().await {
        deliver(event).await;
        backlog.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(business: u32) -> BackendRequest {
        BackendRequest {
            conn_id: 1,
            device: DeviceKey::new("app", "dev"),
            business,
            meta: Metadata::new(),
            payload: Bytes::from_static(b"x"),
        }
    }

    fn named(name: &'static str) -> impl Backend {
        FnBackend::new(move |_req| async move {
            Ok(BackendReply {
                meta: Metadata::new(),
                payload: Bytes::from_static(name.as_bytes()),
            })
        })
    }

    fn rules() -> Router {
        Router::builder()
            .backend("a", named("a"), BackendLimits::default())
            .backend("b", named("b"), BackendLimits::default())
            .backend("c", named("c"), BackendLimits::default())
            .route(150, "a")
            .route_range(100..=199, "b")
            .route_range(300..=300, "a")
            .default_route("c")
            .build()
            .unwrap()
    }

    /// A tower service that uppercases the payload.
    #[derive(Clone)]
    struct Upper;

    impl tower_service::Service<BackendRequest> for Upper {
        type Response = BackendReply;
        type Error = BackendError;
        type Future = std::future::Ready<Result<BackendReply, BackendError>>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BackendError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: BackendRequest) -> Self::Future {
            std::future::ready(Ok(BackendReply {
                meta: request.meta,
                payload: Bytes::from(request.payload.to_ascii_uppercase()),
            }))
        }
    }

    #[tokio::test]
    async fn tower_services_serve_as_backends() {
        let router = Router::builder()
            .backend(
                "upper",
                ServiceBackend::new(Upper),
                BackendLimits::default(),
            )
            .default_route("upper")
            .build()
            .unwrap();
        let reply = router.dispatch(request(42)).await.unwrap();
        assert_eq!(reply.payload, Bytes::from_static(b"X"));
    }

    #[test]
    fn exact_beats_range_beats_default() {
        let router = rules();
        assert_eq!(router.backend_for(150), Some("a"));
        assert_eq!(router.backend_for(100), Some("b"));
        assert_eq!(router.backend_for(199), Some("b"));
        assert_eq!(router.backend_for(300), Some("a"));
        assert_eq!(router.backend_for(99), Some("c"));
        assert_eq!(router.backend_for(200), Some("c"));
        assert_eq!(Router::echo().backend_for(2), None);
    }

    #[test]
    fn bad_rules_are_refused() {
        let base = || Router::builder().backend("a", EchoBackend, BackendLimits::default());
        for (builder, why) in [
            (base().route(1, "zzz"), "unknown backend"),
            (base().route(1, "a").route(1, "a"), "duplicate id"),
            (
                base().route_range(1..=10, "a").route_range(10..=20, "a"),
                "overlap",
            ),
            (
                base().route_range(RangeInclusive::new(5, 1), "a"),
                "empty range",
            ),
            (
                base().backend("a", EchoBackend, BackendLimits::default()),
                "duplicate name",
            ),
            (
                base().backend(
                    "z",
                    EchoBackend,
                    BackendLimits {
                        max_concurrency: 0,
                        ..Default::default()
                    },
                ),
                "zero concurrency",
            ),
        ] {
            assert!(
                matches!(builder.build(), Err(Error::Config(_))),
                "{why} accepted"
            );
        }
    }

    #[tokio::test]
    async fn dispatch_answers_unknown_busy_and_timeout() {
        let slow = FnBackend::new(|_req| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(BackendReply::default())
        });
        let router = Arc::new(
            Router::builder()
                .backend(
                    "slow",
                    slow,
                    BackendLimits {
                        timeout: Duration::from_millis(50),
                        max_concurrency: 1,
                    },
                )
                .route(7, "slow")
                .backend("echo", EchoBackend, BackendLimits::default())
                .route(1, "echo")
                .build()
                .unwrap(),
        );
        let echoed = router.dispatch(request(1)).await.unwrap();
        assert_eq!(echoed.payload, Bytes::from_static(b"x"));
        let unknown = router.dispatch(request(2)).await.unwrap_err();
        assert_eq!(unknown.code, Code::UnknownBusiness);

        let first = tokio::spawn({
            let router = router.clone();
            async move { router.dispatch(request(7)).await }
        });
        tokio::task::yield_now().await;
        let busy = router.dispatch(request(7)).await.unwrap_err();
        assert_eq!(busy.code, Code::Busy, "{busy:?}");
        let timed_out = first.await.unwrap().unwrap_err();
        assert_eq!(timed_out.code, Code::BackendTimeout);
        // The permit came back with the timeout.
        let again = router.dispatch(request(7)).await.unwrap_err();
        assert_eq!(again.code, Code::BackendTimeout);
    }
}
