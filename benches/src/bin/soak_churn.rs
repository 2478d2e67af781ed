//! `soak-churn`: the churn of the soak (issue 16 item 7, `benches/soak.sh`): a pool of
//! resident SDK clients on a running gateway, and for `--duration` seconds, all at once
//! at steady rates: clients replaced (a close and a new device's connect), group leaves
//! and joins across `--groups` groups, unicast pushes and group publishes through the
//! HTTP push API, echo requests (business 1) over the sessions, and kicks
//! (`POST /v1/kick`, the kicked slot gets a new client).
//!
//! ```text
//! target/release/soak-churn --resident 2500 --duration 1800
//! ```
//!
//! Prints `ready resident=N` once the pool is connected and joined, a `progress {json}`
//! line every 60 s, then closes every client and prints `totals {json}` (operations done
//! and errors). Exit status 1 if the pool could not connect.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use longconn_client::{Client, ClientConfig, StaticToken};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
struct Args {
    /// The gateway's TCP endpoint.
    #[arg(long, default_value = "tcp://127.0.0.1:7100")]
    tcp: String,
    /// The gateway's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:7101/ws")]
    ws: String,
    /// The gateway's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:7180")]
    http: String,
    /// Resident clients (the pool size, kept while churning).
    #[arg(long, default_value_t = 2500)]
    resident: usize,
    /// Share of the clients on WebSocket (the rest on TCP).
    #[arg(long, default_value_t = 0.3)]
    ws_share: f64,
    /// Clients replaced per second (each: one disconnect and one connect).
    #[arg(long, default_value_t = 50.0)]
    churn: f64,
    /// Groups.
    #[arg(long, default_value_t = 100)]
    groups: usize,
    /// Group moves per second (each: a leave and a join).
    #[arg(long, default_value_t = 50.0)]
    moves: f64,
    /// Unicast pushes per second (device pushes through the HTTP API, in batches).
    #[arg(long, default_value_t = 1000.0)]
    pushes: f64,
    /// Group publishes per second (HTTP API).
    #[arg(long, default_value_t = 20.0)]
    publishes: f64,
    /// Echo requests per second over the sessions (business 1).
    #[arg(long, default_value_t = 500.0)]
    requests: f64,
    /// Kicks per second (HTTP API).
    #[arg(long, default_value_t = 1.0)]
    kicks: f64,
    /// How long to churn, seconds.
    #[arg(long, default_value_t = 1800)]
    duration: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 60)]
    progress: u64,
}

const APP: &str = "demo";
const ECHO: u32 = 1;
/// 48 bytes of `x`, base64.
const PAYLOAD_B64: &str = "eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4";
/// Requests and HTTP calls in flight at most; more are counted as skipped.
const IN_FLIGHT: usize = 4096;

/// One resident client.
struct Member {
    device: String,
    client: Client,
    group: Mutex<usize>,
    /// Connected and joined; operations pick only ready members.
    ready: AtomicBool,
}

#[derive(Default)]
struct Totals {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    joins: AtomicU64,
    leaves: AtomicU64,
    group_errors: AtomicU64,
    requests: AtomicU64,
    request_errors: AtomicU64,
    push_calls: AtomicU64,
    pushes: AtomicU64,
    pushes_queued: AtomicU64,
    pushes_offline: AtomicU64,
    pushes_dropped: AtomicU64,
    publishes: AtomicU64,
    publish_deliveries: AtomicU64,
    kicks: AtomicU64,
    kicks_hit: AtomicU64,
    http_errors: AtomicU64,
    received_pushes: AtomicU64,
    skipped: AtomicU64,
}

impl Totals {
    fn json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "connects": g(&self.connects),
            "connect_failures": g(&self.connect_failures),
            "disconnects": g(&self.disconnects),
            "joins": g(&self.joins),
            "leaves": g(&self.leaves),
            "group_errors": g(&self.group_errors),
            "requests": g(&self.requests),
            "request_errors": g(&self.request_errors),
            "push_calls": g(&self.push_calls),
            "pushes": g(&self.pushes),
            "pushes_queued": g(&self.pushes_queued),
            "pushes_offline": g(&self.pushes_offline),
            "pushes_dropped": g(&self.pushes_dropped),
            "publishes": g(&self.publishes),
            "publish_deliveries": g(&self.publish_deliveries),
            "kicks": g(&self.kicks),
            "kicks_hit": g(&self.kicks_hit),
            "http_errors": g(&self.http_errors),
            "received_pushes": g(&self.received_pushes),
            "skipped": g(&self.skipped),
        })
    }
}

struct Soak {
    args: Args,
    keys: TokenKeys,
    exp: u64,
    slots: Mutex<Vec<Option<Arc<Member>>>>,
    /// Device numbers: every connect is a new device.
    next_device: AtomicUsize,
    totals: Totals,
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
    stop: AtomicBool,
}

fn group_name(n: usize) -> String {
    format!("soak-{n}")
}

impl Soak {
    /// A new client in `slot`; the one it replaces is closed.
    fn replace(self: &Arc<Self>, slot: usize) {
        let n = self.next_device.fetch_add(1, Ordering::Relaxed);
        let device = format!("soak-{n}");
        let ws = fastrand::f64() < self.args.ws_share;
        let url = if ws { &self.args.ws } else { &self.args.tcp };
        let token = Bytes::from(self.keys.mint(APP, &device, self.exp));
        let config = ClientConfig::new(url, APP, &device, Arc::new(StaticToken(token)))
            .expect("client config");
        let client = Client::connect(config);
        if let Some(mut pushes) = client.pushes() {
            let soak = Arc::clone(self);
            tokio::spawn(async move {
                while pushes.recv().await.is_some() {
                    soak.totals.received_pushes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let member = Arc::new(Member {
            device,
            client,
            group: Mutex::new(fastrand::usize(..self.args.groups)),
            ready: AtomicBool::new(false),
        });
        let old = self.slots.lock().unwrap()[slot].replace(Arc::clone(&member));
        self.totals.connects.fetch_add(1, Ordering::Relaxed);
        let soak = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(old) = old {
                old.ready.store(false, Ordering::Relaxed);
                old.client.close().await;
                soak.totals.disconnects.fetch_add(1, Ordering::Relaxed);
            }
            if member
                .client
                .wait_connected(Duration::from_secs(20))
                .await
                .is_err()
            {
                soak.totals.connect_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let group = *member.group.lock().unwrap();
            match member.client.join(&group_name(group)).await {
                Ok(()) => {
                    soak.totals.joins.fetch_add(1, Ordering::Relaxed);
                    member.ready.store(true, Ordering::Relaxed);
                }
                Err(_) => {
                    soak.totals.group_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    /// A ready member picked at random (a few tries), and its slot.
    fn pick(&self) -> Option<(usize, Arc<Member>)> {
        let slots = self.slots.lock().unwrap();
        for _ in 0..8 {
            let i = fastrand::usize(..slots.len());
            if let Some(m) = &slots[i]
                && m.ready.load(Ordering::Relaxed)
            {
                return Some((i, Arc::clone(m)));
            }
        }
        None
    }

    fn ready_count(&self) -> usize {
        self.slots
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|m| m.ready.load(Ordering::Relaxed))
            .count()
    }

    /// A permit for one operation in flight, or `None` (counted as skipped).
    fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.in_flight).try_acquire_owned().ok();
        if permit.is_none() {
            self.totals.skipped.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// POST `body` to `path`; the JSON reply, or `None` (counted in `http_errors`).
    async fn post(&self, path: &str, body: serde_json::Value) -> Option<serde_json::Value> {
        let reply = self
            .http
            .post(format!("{}{path}", self.args.http))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        let ok = match reply {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        let value = ok.and_then(|t| serde_json::from_str(&t).ok());
        if value.is_none() {
            self.totals.http_errors.fetch_add(1, Ordering::Relaxed);
        }
        value
    }
}

/// Calls `op(n)` with the operations due every 20 ms, so that `rate` per second are
/// done on average, until the soak stops.
async fn paced<F: FnMut(u64)>(soak: &Soak, rate: f64, mut op: F) {
    if rate <= 0.0 {
        return;
    }
    let start = Instant::now();
    let mut done = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !soak.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if due > done {
            op(due - done);
            done = due;
        }
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = runtime.block_on(run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(args: Args) -> bool {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + args.duration
        + 7200;
    let resident = args.resident;
    let soak = Arc::new(Soak {
        keys: TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap()),
        exp,
        slots: Mutex::new(vec![None; resident]),
        next_device: AtomicUsize::new(0),
        totals: Totals::default(),
        http: reqwest::Client::new(),
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        stop: AtomicBool::new(false),
        args,
    });

    // The pool, at 1,000 connects per second.
    let started = Instant::now();
    for slot in 0..resident {
        soak.replace(slot);
        if slot % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    while soak.ready_count() < resident {
        if started.elapsed() > Duration::from_secs(120) {
            eprintln!(
                "the pool did not connect: {}/{resident} ready; {}",
                soak.ready_count(),
                soak.totals.json()
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "ready resident={resident} in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut loops = Vec::new();
    let s = Arc::clone(&soak);
    loops.push(tokio::spawn(async move {
        let rate = s.args.churn;
        paced(&s, rate, |n| {
            for _ in 0..n {
                s.replace(fastrand::usize(..resident));
            }
        })
        .await;
    }));
    let s = Arc::clone(&soak);
    loops.push(tokio::spawn(async move {
        let rate = s.args.moves;
        paced(&s, rate, |n| {
            for _ in 0..n {
                let (Some((_, m)), Some(permit)) = (s.pick(), s.permit()) else {
                    continue;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _permit = permit;
                    let from = *m.group.lock().unwrap();
                    let to = fastrand::usize(..s.args.groups);
                    match m.client.leave(&group_name(from)).await {
                        Ok(()) => s.totals.leaves.fetch_add(1, Ordering::Relaxed),
                        Err(_) => s.totals.group_errors.fetch_add(1, Ordering::Relaxed),
                    };
                    match m.client.join(&group_name(to)).await {
                        Ok(()) => {
                            *m.group.lock().unwrap() = to;
                            s.totals.joins.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => s.totals.group_errors.fetch_add(1, Ordering::Relaxed),
                    };
                });
            }
        })
        .await;
    }));
    let s = Arc::clone(&soak);
    loops.push(tokio::spawn(async move {
        let rate = s.args.requests;
        let payload = Bytes::from_static(&[b'r'; 64]);
        paced(&s, rate, |n| {
            for _ in 0..n {
                let (Some((_, m)), Some(permit)) = (s.pick(), s.permit()) else {
                    continue;
                };
                let (s, payload) = (Arc::clone(&s), payload.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match m.client.request(ECHO, payload.clone()).await {
                        Ok(r) if r.payload == payload => {
                            s.totals.requests.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => s.totals.request_errors.fetch_add(1, Ordering::Relaxed),
                    };
                });
            }
        })
        .await;
    }));
    let s = Arc::clone(&soak);
    loops.push(tokio::spawn(async move {
        let rate = s.args.pushes;
        paced(&s, rate, |n| {
            let devices: Vec<String> = (0..n)
                .filter_map(|_| s.pick().map(|(_, m)| m.device.clone()))
                .collect();
            if devices.is_empty() {
                return;
            }
            let Some(permit) = s.permit() else { return };
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let _permit = permit;
                let count = devices.len() as u64;
                let body = serde_json::json!({
                    "app": APP, "business": 2, "devices": devices, "payload_b64": PAYLOAD_B64,
                });
                s.totals.push_calls.fetch_add(1, Ordering::Relaxed);
                s.totals.pushes.fetch_add(count, Ordering::Relaxed);
                if let Some(r) = s.post("/v1/push/devices", body).await {
                    let len = |k: &str| r[k].as_array().map_or(0, |a| a.len() as u64);
                    let queued = r["queued"].as_u64().unwrap_or(0);
                    s.totals.pushes_queued.fetch_add(queued, Ordering::Relaxed);
                    s.totals
                        .pushes_offline
                        .fetch_add(len("offline"), Ordering::Relaxed);
                    s.totals
                        .pushes_dropped
                        .fetch_add(len("dropped"), Ordering::Relaxed);
                }
            });
        })
        .await;
    }));
    let s = Arc::clone(&soak);
    loops.push(tokio::spawn(async move {
        let rate = s.args.publishes;
        paced(&s, rate, |n| {
            for _ in 0..n {
                let Some(permit) = s.permit() else { continue };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _permit = permit;
                    let group = group_name(fastrand::usize(..s.args.groups));
                    let body = serde_json::json!({"business": 3, "payload_b64": PAYLOAD_B64});
                    s.totals.publishes.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = s.post(&format!("/v1/push/groups/{group}"), body).await {
                        let queued = r["queued"].as_u64().unwrap_or(0);
                        s.totals
                            .publish_deliveries
                            .fetch_add(queued, Ordering::Relaxed);
                    }
                });
            }
        })
        .await;
    }));
    let s = Arc::clone(&soak);
    loops.push(tokio::spawn(async move {
        let rate = s.args.kicks;
        paced(&s, rate, |n| {
            for _ in 0..n {
                let (Some((slot, m)), Some(permit)) = (s.pick(), s.permit()) else {
                    continue;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _permit = permit;
                    m.ready.store(false, Ordering::Relaxed);
                    let body =
                        serde_json::json!({"app": APP, "device": m.device, "reason": "soak"});
                    s.totals.kicks.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = s.post("/v1/kick", body).await
                        && r["kicked"] == true
                    {
                        s.totals.kicks_hit.fetch_add(1, Ordering::Relaxed);
                    }
                    // The kicked client stops for good: its slot gets a new one (if
                    // the churn has not replaced it meanwhile).
                    let current = s.slots.lock().unwrap()[slot].clone();
                    if current.is_some_and(|c| Arc::ptr_eq(&c, &m)) {
                        s.replace(slot);
                    }
                });
            }
        })
        .await;
    }));

    let churn_start = Instant::now();
    let end = churn_start + Duration::from_secs(soak.args.duration);
    let mut next_progress = churn_start + Duration::from_secs(soak.args.progress);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(soak.args.progress);
            println!(
                "progress {}",
                serde_json::json!({
                    "t": churn_start.elapsed().as_secs(),
                    "ready": soak.ready_count(),
                    "totals": soak.totals.json(),
                })
            );
        }
    }
    soak.stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    // Wait for the operations in flight, then close the pool.
    let _all = soak
        .in_flight
        .acquire_many(IN_FLIGHT as u32)
        .await
        .expect("semaphore");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let members: Vec<Arc<Member>> = soak
        .slots
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    let mut closing = Vec::new();
    for m in members {
        let s = Arc::clone(&soak);
        closing.push(tokio::spawn(async move {
            m.client.close().await;
            s.totals.disconnects.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for c in closing {
        let _ = c.await;
    }
    println!(
        "totals {}",
        serde_json::json!({
            "churn_seconds": churn_start.elapsed().as_secs_f64(),
            "totals": soak.totals.json(),
        })
    );
    true
}
