//! The load side of a phase: this process's share of the clients, driven through
//! `longconn-client`. Clients connect at the phase's rate, join their group, count what
//! they receive, and do the phase's activity between `Go` and `End`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use longconn_client::{Client, ClientConfig, ConnState, PushHandler, StaticToken, Trust};
use longconn_core::{TokenKey, TokenKeys};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cli::{Common, WorkerSlot};
use super::control::ControlAccess;
use super::link::{LoadLink, Notice, Order};
use super::peer::{Peer, Subscribed};
use super::scenario::{Churn, Phase};
use super::slow::SlowReport;
use super::stats::{Recorder, Report, progress_bar, unix_us};
use super::timeline::{Event, LiveTimeline};

/// Connects per second per process for phases without their own rate.
const DEFAULT_CONNECT_RATE: f64 = 2000.0;
/// How long one connect and login may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the load side of every phase shares.
#[derive(Debug)]
pub struct LoadCtx {
    /// Shared options.
    pub common: Common,
    /// This process's share.
    pub slot: WorkerSlot,
    /// Live counters.
    pub recorder: Arc<Recorder>,
    keys: TokenKeys,
    trust: Trust,
    /// When the last push arrived, µs since the epoch.
    last_receive_us: Arc<AtomicU64>,
    /// `--control`: the control layer every device asks first.
    access: Option<ControlAccess>,
    /// Logins, losses and `try_later` refusals per 100 ms (connect phases).
    timeline: Arc<LiveTimeline>,
}

/// One simulated device.
struct Member {
    index: u32,
    /// Its position in `--target`.
    target: usize,
    client: Arc<Client>,
    group: Option<String>,
    /// Its timeline watcher (connect phases), stopped when the member goes.
    _watch: Option<WatchGuard>,
}

/// Aborts a member's timeline watcher when dropped.
struct WatchGuard(tokio::task::AbortHandle);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts a client's logins, losses and `try_later` refusals into `timeline` until it
/// stops.
async fn watch_client(client: Arc<Client>, timeline: Arc<LiveTimeline>) {
    let mut state = client.state();
    let mut logged_in: Option<u64> = None;
    let mut try_later = 0u64;
    let ms = || unix_us() / 1000;
    loop {
        let now = state.borrow_and_update().clone();
        let refused = client.quality().try_later_closes;
        if refused > try_later {
            timeline.record(Event::TryLater, ms(), refused - try_later);
            try_later = refused;
        }
        match now {
            ConnState::Connected { conn_id } => {
                if logged_in != Some(conn_id) {
                    if logged_in.is_some() {
                        timeline.record(Event::Drop, ms(), 1);
                    }
                    timeline.record(Event::Login, ms(), 1);
                    logged_in = Some(conn_id);
                }
            }
            other => {
                if logged_in.take().is_some() {
                    timeline.record(Event::Drop, ms(), 1);
                }
                if matches!(other, ConnState::Disconnected { .. }) {
                    return;
                }
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

impl LoadCtx {
    /// The context for `common` as worker `slot`, counting per target.
    ///
    /// # Errors
    /// A bad token secret or CA file.
    pub fn new(common: Common, slot: WorkerSlot) -> Result<LoadCtx, String> {
        let recorder = Arc::new(Recorder::with_targets(common.target.len()));
        let (id, secret) = common.token_key();
        let keys =
            TokenKeys::new(TokenKey::new(&id, secret.as_bytes()).map_err(|e| e.to_string())?);
        let trust = match (&common.ca, common.insecure) {
            (Some(path), _) => Trust::from_pem_file(path).map_err(|e| e.to_string())?,
            (None, true) => Trust::InsecureSkipVerify,
            (None, false) => Trust::System,
        };
        let (common_control, common_app, common_trust) =
            (common.control.clone(), common.app.clone(), trust.clone());
        Ok(LoadCtx {
            common,
            slot,
            recorder,
            keys,
            trust,
            last_receive_us: Arc::new(AtomicU64::new(0)),
            access: match &common_control {
                Some(url) => Some(ControlAccess::new(url, &common_app, &common_trust)?),
                None => None,
            },
            timeline: Arc::new(LiveTimeline::default()),
        })
    }

    /// When the last push arrived, µs since the epoch.
    pub fn last_receive_us(&self) -> &AtomicU64 {
        &self.last_receive_us
    }

    /// The device id of global index `i`.
    pub fn device(&self, i: u32) -> String {
        format!("{}{i}", self.common.device_prefix)
    }

    /// A login token for `device`, valid for a day.
    pub(crate) fn token(&self, device: &str) -> Bytes {
        self.token_until(device, self.token_expiry())
    }

    /// A day from now, in Unix seconds: the expiry of the tokens minted now.
    pub(crate) fn token_expiry(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 24 * 3600
    }

    /// A login token for `device` that expires at `expires` (Unix seconds).
    pub(crate) fn token_until(&self, device: &str, expires: u64) -> Bytes {
        Bytes::from(self.keys.mint(&self.common.app, device, expires))
    }

    fn client_config(&self, index: u32) -> Result<ClientConfig, String> {
        let device = self.device(index);
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs()
            + 24 * 3600;
        let token = Bytes::from(self.keys.mint(&self.common.app, &device, exp));
        let mut config = ClientConfig::new(
            self.common.target.for_client(index).1,
            &self.common.app,
            &device,
            Arc::new(StaticToken(token)),
        )
        .map_err(|e| e.to_string())?;
        config.trust = self.trust.clone();
        config.connect_timeout = CONNECT_TIMEOUT;
        config.local_ip = self.common.source_ips.map(|ips| ips.pick(u64::from(index)));
        config.quality_report_interval = self.common.quality_report.map(Duration::from_secs);
        config.network = self.common.network.wire();
        Ok(config)
    }

    /// The device's config: through the control layer with `--control`.
    async fn config_for(&self, index: u32) -> Result<ClientConfig, String> {
        let Some(control) = &self.access else {
            return self.client_config(index);
        };
        let device = self.device(index);
        let access = control.access(&device).await?;
        let mut config = ClientConfig::new(
            &access.url,
            &self.common.app,
            &device,
            Arc::new(StaticToken(access.token)),
        )
        .map_err(|e| e.to_string())?;
        config.trust = self.trust.clone();
        config.connect_timeout = CONNECT_TIMEOUT;
        config.local_ip = self.common.source_ips.map(|ips| ips.pick(u64::from(index)));
        Ok(config)
    }

    /// Connects one device, counts it, starts its push counter and joins its group.
    async fn connect(&self, index: u32, group: Option<String>) -> Option<Member> {
        let rec = &self.recorder;
        let target = self.common.target.for_client(index).0;
        rec.bump(&rec.attempted, "loadgen_connects_attempted_total");
        let config = match self.config_for(index).await {
            Ok(mut config) => {
                config.on_push = Some(self.count_pushes(index, target));
                config
            }
            Err(err) => {
                tracing::warn!(error = %err, "client config");
                rec.bump(&rec.failed, "loadgen_connects_failed_total");
                return None;
            }
        };
        let started = Instant::now();
        let client = Client::connect(config);
        if client.wait_connected(CONNECT_TIMEOUT).await.is_err() {
            rec.bump(&rec.failed, "loadgen_connects_failed_total");
            client.close().await;
            return None;
        }
        rec.connect_latency
            .record(index as usize, started.elapsed().as_micros() as u64);
        rec.established_on(target);
        metrics::gauge!("loadgen_connected").increment(1.0);
        if let Some(group) = &group {
            if client.join(group).await.is_err() {
                rec.bump(&rec.errors, "loadgen_errors_total");
            }
        }
        let client = Arc::new(client);
        let watch = self.timeline.is_on().then(|| {
            WatchGuard(
                tokio::spawn(watch_client(client.clone(), self.timeline.clone())).abort_handle(),
            )
        });
        Some(Member {
            index,
            target,
            client,
            group,
            _watch: watch,
        })
    }

    /// A push handler that counts every push with its latency from the timestamp in the
    /// payload's first 8 bytes. It runs on the client's own task: no channel and no
    /// extra task per push, so the load side stays cheap.
    fn count_pushes(&self, index: u32, target: usize) -> PushHandler {
        let rec = self.recorder.clone();
        let last = self.last_receive_us.clone();
        Arc::new(move |push| {
            let now = unix_us();
            if let Some(sent) = push.payload.get(..8) {
                let sent = u64::from_be_bytes(sent.try_into().expect("8 bytes"));
                rec.latency.record(index as usize, now.saturating_sub(sent));
            }
            rec.received_on(target);
            last.fetch_max(now, Ordering::Relaxed);
        })
    }

    /// Runs this process's part of `phase`, talking to the driver over `link`.
    ///
    /// # Errors
    /// The link broke.
    pub async fn run_phase(
        self: &Arc<Self>,
        phase: &Phase,
        link: &mut LoadLink,
    ) -> Result<(), String> {
        if let Some((peer, _)) = Peer::from_target(self.common.target.first())? {
            return self.run_peer_phase(peer, phase, link).await;
        }
        if let Phase::Multicast { churn, .. } = phase {
            if churn.slow_members > 0 {
                return Err("--slow-members needs raw:// subscribers".into());
            }
        }
        if let Phase::Request { rate, .. } = phase {
            if *rate > 0.0 {
                return Err("request --rate (open loop) needs a raw:// target".into());
            }
        }
        let groups = match phase {
            Phase::Multicast { groups, .. } => Some(*groups),
            _ => None,
        };
        let rate = match phase {
            Phase::Connect { rate, .. } => *rate / f64::from(self.slot.count),
            _ => self
                .common
                .connect_rate
                .map_or(DEFAULT_CONNECT_RATE, |r| r / f64::from(self.slot.count)),
        };
        let ramp = Instant::now();
        if let Phase::Connect { .. } = phase {
            self.timeline.start(unix_us() / 1000);
        }
        let members = self.connect_all(phase.connections(), rate, groups).await;
        let ramp_s = ramp.elapsed().as_secs_f64();
        link.notify(Notice::Ready).await?;
        expect_order(link, Order::Go).await?;
        let go_us = unix_us();
        let go = Instant::now();
        let mut report_extra = (0u64, 0.0f64); // (expected, active seconds)
        // Pushes each member should receive (push phases).
        let per_member = match *phase {
            Phase::Unicast { messages, .. } | Phase::Multicast { messages, .. } => {
                u64::from(messages)
            }
            Phase::Connect { .. } | Phase::Request { .. } => 0,
        };
        match *phase {
            Phase::Connect { hold, .. } => {
                tokio::time::sleep(Duration::from_secs_f64(hold)).await;
                expect_order(link, Order::End).await?;
                // A connect phase's rate is logins per second of the ramp.
                report_extra.1 = ramp_s;
            }
            Phase::Request {
                requests, business, ..
            } => {
                let expected = self.run_requests(&members, requests, business).await;
                metrics::counter!("loadgen_expected_total").increment(expected);
                report_extra = (expected, go.elapsed().as_secs_f64());
                expect_order(link, Order::End).await?;
            }
            Phase::Unicast { messages, .. } => {
                expect_order(link, Order::End).await?;
                let expected = u64::from(messages) * members.len() as u64;
                metrics::counter!("loadgen_expected_total").increment(expected);
                self.drain(expected).await;
            }
            Phase::Multicast {
                messages, churn, ..
            } => {
                let members = Arc::new(members.into_iter().map(Mutex::new).collect::<Vec<_>>());
                let churning = self.churn(members.clone(), churn);
                expect_order(link, Order::End).await?;
                churning.abort();
                // Wait until the task is gone, and its share of `members` with it.
                let _ = churning.await;
                let expected = u64::from(messages) * members.len() as u64;
                metrics::counter!("loadgen_expected_total").increment(expected);
                self.drain(expected).await;
                let members = Arc::try_unwrap(members)
                    .map_err(|_| "churn still holds members")?
                    .into_iter()
                    .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
                    .collect();
                return self
                    .finish(members, go_us, report_extra, per_member, link)
                    .await;
            }
        }
        self.finish(members, go_us, report_extra, per_member, link)
            .await
    }

    /// A multicast phase against a peer broker (see [`super::peer`]).
    async fn run_peer_phase(
        self: &Arc<Self>,
        peer: Peer,
        phase: &Phase,
        link: &mut LoadLink,
    ) -> Result<(), String> {
        let mut addrs = Vec::with_capacity(self.common.target.len());
        for url in self.common.target.urls() {
            if let Some((_, addr)) = Peer::from_target(url)? {
                addrs.push(addr);
            }
        }
        if peer == Peer::Raw && matches!(phase, Phase::Connect { .. } | Phase::Request { .. }) {
            return super::rawload::run_raw_phase(self, &addrs, phase, link).await;
        }
        // Raw subscribers also take unicast (logged in, no group): the lean receive
        // side for measuring unicast without the SDK's cost on the load side.
        let (members, groups, messages, slow) = match *phase {
            Phase::Multicast {
                members,
                groups,
                messages,
                churn,
                ..
            } => (members, Some(groups), messages, churn.slow_members),
            Phase::Unicast {
                devices, messages, ..
            } if peer == Peer::Raw => (devices, None, messages, 0),
            _ => {
                return Err(format!(
                    "{} phases need a longconn target; peers take multicast only (raw:// also unicast, connect and request)",
                    phase.kind()
                ));
            }
        };
        if slow > 0 && peer != Peer::Raw {
            return Err("--slow-members needs raw:// subscribers".into());
        }
        let (release, released) = tokio::sync::watch::channel(false);
        let Subscribed {
            readers,
            slow: slow_members,
        } = self
            .subscribe_peers(peer, &addrs, members, groups, (slow, &released))
            .await;
        link.notify(Notice::Ready).await?;
        expect_order(link, Order::Go).await?;
        let go_us = unix_us();
        expect_order(link, Order::End).await?;
        self.drain(u64::from(messages) * readers.len() as u64).await;
        let connected_at_end = readers.iter().filter(|(_, r)| !r.is_finished()).count() as u64;
        for (_, reader) in &readers {
            reader.abort();
        }
        let mut slow_report = None;
        if slow > 0 {
            // Now the slow members read what reached them, and whether they were closed.
            let _ = release.send(true);
            let mut report = SlowReport::default();
            for task in slow_members {
                if let Ok(outcome) = task.await {
                    report.add(&outcome, go_us);
                }
            }
            slow_report = Some(report);
        }
        let mut report = self.take_report(go_us, connected_at_end, None);
        if slow_report.is_some() {
            // The reading members' own expectation: the driver counts the slow ones in
            // its publish answers, so it uses this one instead.
            report.counts.expected = u64::from(messages) * readers.len() as u64;
        }
        report.slow = slow_report.map(Box::new);
        for (target, _) in &readers {
            if let Some(t) = report.per_target.get_mut(*target) {
                t.expected += u64::from(messages);
            }
        }
        link.notify(Notice::Done(report)).await
    }

    /// The phase's report, leaving the counters empty for the next phase. The active
    /// time is `active_s`, or else from `Go` (`go_us`) to the last push received.
    pub(crate) fn take_report(
        &self,
        go_us: u64,
        connected_at_end: u64,
        active_s: Option<f64>,
    ) -> Report {
        let last_receive = self.last_receive_us.swap(0, Ordering::Relaxed);
        let mut report = self.recorder.take();
        for (t, url) in report.per_target.iter_mut().zip(self.common.target.urls()) {
            t.target.clone_from(url);
        }
        report.counts.connected_at_end = connected_at_end;
        report.access = self.access.as_ref().map(|a| Box::new(a.take()));
        report.active_s =
            active_s.unwrap_or_else(|| last_receive.saturating_sub(go_us) as f64 / 1e6);
        report
    }

    /// Counts who is still connected, closes everyone and sends the report; each
    /// member's target expects `per_member` pushes.
    async fn finish(
        &self,
        members: Vec<Member>,
        go_us: u64,
        (expected, active_s): (u64, f64),
        per_member: u64,
        link: &mut LoadLink,
    ) -> Result<(), String> {
        let mut expected_per_target = vec![0u64; self.common.target.len()];
        for member in &members {
            expected_per_target[member.target] += per_member;
        }
        let connected_at_end = members
            .iter()
            .filter(|m| matches!(*m.client.state().borrow(), ConnState::Connected { .. }))
            .count() as u64;
        let reconnects: u64 = members
            .iter()
            .map(|m| m.client.quality().connect_successes.saturating_sub(1))
            .sum();
        // The timeline ends before the members close (their closing is no loss).
        let timeline = self.timeline.take();
        let mut closing = JoinSet::new();
        for member in members {
            closing.spawn(async move { member.client.close().await });
            metrics::gauge!("loadgen_connected").decrement(1.0);
        }
        while closing.join_next().await.is_some() {}
        let mut report = self.take_report(
            go_us,
            connected_at_end,
            (active_s > 0.0).then_some(active_s),
        );
        report.counts.reconnects += reconnects;
        report.counts.expected = expected;
        report.timeline = timeline.map(Box::new);
        metrics::gauge!("loadgen_reach_ratio").set(report.counts.reach());
        for (t, expected) in report.per_target.iter_mut().zip(expected_per_target) {
            t.expected = expected;
        }
        link.notify(Notice::Done(report)).await
    }

    /// Connects this process's share of `total` at `rate` per second.
    async fn connect_all(
        self: &Arc<Self>,
        total: u32,
        rate: f64,
        groups: Option<u32>,
    ) -> Vec<Member> {
        let share: Vec<u32> = self.slot.share(total).collect();
        let progress = self.progress(share.len() as u64, "connecting");
        let mut schedule = ConnectSchedule::new(rate);
        let mut tasks = JoinSet::new();
        for index in share {
            let this = self.clone();
            schedule.next().await;
            let group = groups.map(|g| format!("{}g{}", self.common.device_prefix, index % g));
            tasks.spawn(async move { this.connect(index, group).await });
            progress.set_position(self.recorder.established.load(Ordering::Relaxed));
        }
        let mut members = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(member)) = done {
                members.push(member);
            }
            progress.set_position(members.len() as u64);
        }
        progress.finish_and_clear();
        members.sort_by_key(|m| m.index);
        members
    }

    /// Each member sends `requests` requests, one at a time; returns how many were sent.
    async fn run_requests(&self, members: &[Member], requests: u32, business: u32) -> u64 {
        let size = self.common.payload_size as usize;
        let mut tasks = JoinSet::new();
        for member in members {
            let client = member.client.clone();
            let rec = self.recorder.clone();
            let index = member.index as usize;
            tasks.spawn(async move {
                for n in 0..requests {
                    let payload = stamped(size, u64::from(n));
                    rec.bump(&rec.sent, "loadgen_sent_total");
                    let started = Instant::now();
                    match client.request(business, payload).await {
                        Ok(_) => {
                            rec.latency
                                .record(index, started.elapsed().as_micros() as u64);
                            rec.bump(&rec.received, "loadgen_received_total");
                        }
                        Err(_) => rec.bump(&rec.errors, "loadgen_errors_total"),
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        self.recorder.sent.load(Ordering::Relaxed)
    }

    /// Waits until `expected` pushes arrived, `--drain` seconds passed without any, or
    /// `--drain-limit` seconds passed in all.
    pub(crate) async fn drain(&self, expected: u64) {
        let quiet_for = Duration::from_secs_f64(self.common.drain);
        let limit = Instant::now() + Duration::from_secs_f64(self.common.drain_limit);
        let mut last_count = self.recorder.received.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        loop {
            let count = self.recorder.received.load(Ordering::Relaxed);
            if count >= expected || last_change.elapsed() >= quiet_for || Instant::now() >= limit {
                return;
            }
            if count != last_count {
                last_count = count;
                last_change = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaves and rejoins, and reconnects, random members at the churn's rates until
    /// aborted.
    fn churn(
        self: &Arc<Self>,
        members: Arc<Vec<Mutex<Member>>>,
        churn: Churn,
    ) -> tokio::task::JoinHandle<()> {
        let per_proc = f64::from(self.slot.count);
        let this = self.clone();
        tokio::spawn(async move {
            if members.is_empty() {
                return;
            }
            let tick = Duration::from_millis(100);
            let (mut leave_join, mut reconnect) = (0.0, 0.0);
            let mut rng = fastrand::Rng::new();
            loop {
                tokio::time::sleep(tick).await;
                leave_join += churn.leave_join_per_s / per_proc * tick.as_secs_f64();
                reconnect += churn.reconnect_per_s / per_proc * tick.as_secs_f64();
                while leave_join >= 1.0 {
                    leave_join -= 1.0;
                    let (client, group) = {
                        let m = members[rng.usize(..members.len())]
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        (m.client.clone(), m.group.clone())
                    };
                    if let Some(group) = group {
                        let _ = client.leave(&group).await;
                        let _ = client.join(&group).await;
                    }
                }
                while reconnect >= 1.0 {
                    reconnect -= 1.0;
                    let slot = &members[rng.usize(..members.len())];
                    let (index, group, old) = {
                        let m = slot.lock().unwrap_or_else(|p| p.into_inner());
                        (m.index, m.group.clone(), m.client.clone())
                    };
                    old.close().await;
                    this.recorder
                        .bump(&this.recorder.reconnects, "loadgen_reconnects_total");
                    // `connect` counts an attempt; churn reconnects are not new
                    // connections, so take it back out.
                    let fresh = this.connect(index, group).await;
                    this.recorder.attempted.fetch_sub(1, Ordering::Relaxed);
                    if let Some(fresh) = &fresh {
                        this.recorder.established.fetch_sub(1, Ordering::Relaxed);
                        if let Some(t) = this.recorder.targets.get(fresh.target) {
                            t.established.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    if let Some(fresh) = fresh {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                    }
                }
            }
        })
    }

    fn progress(&self, len: u64, what: &'static str) -> indicatif::ProgressBar {
        progress_bar(len, what, self.common.quiet || self.common.worker.is_some())
    }
}

/// A payload of `size` bytes: the send time (µs since the epoch) and `n`, big-endian,
/// then padding.
pub fn stamped(size: usize, n: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(16));
    buf.put_u64(unix_us());
    buf.put_u64(n);
    buf.resize(size.max(16), b'.');
    buf.freeze()
}

pub(crate) async fn expect_order(link: &mut LoadLink, want: Order) -> Result<(), String> {
    let got = link.order().await?;
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want:?} from the driver, got {got:?}"))
    }
}

/// Connects a connect loop starts, behind its schedule, between two yields.
const CONNECTS_PER_YIELD: u32 = 16;

/// The pace of a connect loop: the n-th connect is due `n / rate` seconds after the
/// first.
pub(crate) struct ConnectSchedule {
    start: Instant,
    interval: Duration,
    next: u32,
}

impl ConnectSchedule {
    /// A schedule of `per_s` connects per second, starting now.
    pub(crate) fn new(per_s: f64) -> ConnectSchedule {
        ConnectSchedule {
            start: Instant::now(),
            interval: Duration::from_secs_f64(1.0 / per_s.max(0.001)),
            next: 0,
        }
    }

    /// Waits until the next connect is due. Behind the schedule (this process cannot
    /// start connections as fast as asked) it yields every [`CONNECTS_PER_YIELD`]
    /// connects instead, so that the connections already started read their answers
    /// in between: their login latency is then the gateway's, not this loop's backlog
    /// (docs/BENCHMARKS.md "Login latency and the load side's schedule").
    pub(crate) async fn next(&mut self) {
        let due = self.start + self.interval * self.next;
        self.next += 1;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
        } else if self.next % CONNECTS_PER_YIELD == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// The n-th connect waits until n / rate after the first; a loop behind its
    /// schedule does not wait at all.
    #[tokio::test(start_paused = true)]
    async fn connects_are_paced_at_the_rate_and_a_late_loop_does_not_wait() {
        let mut schedule = ConnectSchedule::new(10.0);
        let start = Instant::now();
        for _ in 0..5 {
            schedule.next().await;
        }
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(399) && paced <= Duration::from_millis(401),
            "5 connects at 10/s took {paced:?}"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        // Behind: no wait, but the other tasks (the started logins) get to run
        // within CONNECTS_PER_YIELD connects.
        let ran = Arc::new(AtomicBool::new(false));
        let other = tokio::spawn({
            let ran = ran.clone();
            async move { ran.store(true, Ordering::Relaxed) }
        });
        let behind = Instant::now();
        for _ in 0..CONNECTS_PER_YIELD {
            schedule.next().await;
        }
        assert_eq!(behind.elapsed(), Duration::ZERO);
        assert!(ran.load(Ordering::Relaxed), "the loop never yielded");
        other.await.unwrap();
    }
}
