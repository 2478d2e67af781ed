//! Recovery after a reconnect (issue 18) on one node with memory history: a member that
//! loses its connection gets exactly what it missed, in order, then live pushes; a
//! trimmed history or a restarted node answers "not recovered".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_client::{Backoff, Client, ClientConfig, ClientError, ConnState, Push, StaticToken};
use longconn_core::{Code, SessionConfig, TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry, HistoryConfig, HistoryRule, MemoryHistory};
use longconn_server::{PushMessage, Server, ServerConfig};
use tokio::sync::mpsc;

const APP: &str = "recovery-test";
const STEP: Duration = Duration::from_secs(10);

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"recovery-test-secret-0123").unwrap())
}

fn token(device: &str) -> Bytes {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Bytes::from(keys().mint(APP, device, exp))
}

/// A node whose "room" groups keep their last `max_len` publications in memory.
fn node(max_len: usize) -> (Server, Arc<GroupRegistry>) {
    node_with(max_len, SessionConfig::default())
}

fn node_with(max_len: usize, session: SessionConfig) -> (Server, Arc<GroupRegistry>) {
    let history = MemoryHistory::new(HistoryConfig {
        rules: vec![HistoryRule {
            prefix: "room".into(),
            max_len,
            max_age: Some(Duration::from_secs(60)),
        }],
        ..HistoryConfig::default()
    })
    .unwrap();
    let registry =
        Arc::new(GroupRegistry::new(GroupConfig::default()).with_history(Arc::new(history)));
    let config = ServerConfig::builder().session(session).build().unwrap();
    let server = Server::builder(config, Arc::new(keys()))
        .groups(registry.clone())
        .build();
    (server, registry)
}

/// The node the client dials (swapped to restart it) and whether the network is down.
struct Net {
    node: Mutex<(Server, Arc<GroupRegistry>)>,
    down: AtomicBool,
}

impl Net {
    fn new(max_len: usize) -> Arc<Net> {
        Net::on(node(max_len))
    }

    fn on(node: (Server, Arc<GroupRegistry>)) -> Arc<Net> {
        Arc::new(Net {
            node: Mutex::new(node),
            down: AtomicBool::new(false),
        })
    }

    fn server(&self) -> Server {
        self.node.lock().unwrap().0.clone()
    }

    fn registry(&self) -> Arc<GroupRegistry> {
        self.node.lock().unwrap().1.clone()
    }

    /// Cuts the network: the member's connection is closed and no dial succeeds.
    fn cut(&self, device: &str) {
        self.down.store(true, Ordering::SeqCst);
        let conn = self.server().hub().find_device(APP, device).unwrap();
        conn.close(Code::GoingAway);
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

fn member(net: &Arc<Net>, device: &str) -> Client {
    let mut config = ClientConfig::new(
        "tcp://in-memory:1",
        APP,
        device,
        Arc::new(StaticToken(token(device))),
    )
    .unwrap();
    config.request_timeout = STEP;
    config.backoff = Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        max_attempts: None,
    };
    let net = net.clone();
    Client::connect_in_memory(config, move || {
        let net = net.clone();
        async move {
            if net.down.load(Ordering::SeqCst) {
                return Err(ClientError::Transport("network down".into()));
            }
            let (client_side, server_side) = longconn_core::connection::memory::pair(64, 65_536);
            if net.server().serve_connection(server_side) {
                Ok(client_side)
            } else {
                Err(ClientError::Transport("refused".into()))
            }
        }
    })
}

async fn next_push(pushes: &mut mpsc::Receiver<Push>) -> Push {
    tokio::time::timeout(STEP, pushes.recv())
        .await
        .expect("a push in time")
        .expect("client open")
}

async fn publish(registry: &GroupRegistry, group: &str, body: String) -> (u64, u64) {
    let report = registry
        .publish(group, &PushMessage::new(1, Bytes::from(body)))
        .await
        .unwrap();
    (report.epoch, report.seq)
}

/// Waits until the client is disconnected.
async fn disconnected(client: &Client) {
    let mut state = client.state();
    tokio::time::timeout(
        STEP,
        state.wait_for(|s| !matches!(s, ConnState::Connected { .. })),
    )
    .await
    .expect("disconnected in time")
    .unwrap();
}

/// Waits for the `n`th rejoin of `group` and returns whether it was recovered.
async fn rejoined(client: &Client, group: &str, n: u64) -> bool {
    let mut rejoins = client.rejoins();
    let seen = tokio::time::timeout(
        STEP,
        rejoins.wait_for(|r| r.get(group).is_some_and(|r| r.count >= n)),
    )
    .await
    .expect("rejoined in time")
    .unwrap();
    seen[group].recovered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_offline_for_two_seconds_gets_all_100_missed_pushes_in_order() {
    let net = Net::new(1000);
    let m = member(&net, "m");
    m.wait_connected(STEP).await.unwrap();
    let mut pushes = m.pushes().unwrap();
    m.join("room-1").await.unwrap();
    assert_eq!(m.recovered("room-1"), None, "not rejoined yet");
    let (epoch, first) = publish(&net.registry(), "room-1", "m0".into()).await;
    assert_eq!(next_push(&mut pushes).await.payload, "m0");

    net.cut("m");
    disconnected(&m).await;
    // 100 publishes over ~3 s: the network is back after 2 s, so the last third races
    // the reconnect and the rejoin.
    let registry = net.registry();
    let publisher = tokio::spawn(async move {
        for i in 1..=100 {
            publish(&registry, "room-1", format!("m{i}")).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.restore();
    assert!(
        rejoined(&m, "room-1", 1).await,
        "recovered from the history"
    );
    publisher.await.unwrap();
    publish(&net.registry(), "room-1", "live".into()).await;

    for i in 1..=100u64 {
        let push = next_push(&mut pushes).await;
        assert_eq!(
            push.payload,
            format!("m{i}"),
            "push {i}: no gap, no duplicate"
        );
        assert_eq!((push.epoch, push.seq), (Some(epoch), Some(first + i)));
    }
    let live = next_push(&mut pushes).await;
    assert_eq!(live.payload, "live");
    assert_eq!(live.seq, Some(first + 101));
    assert!(pushes.try_recv().is_err(), "nothing more");
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_history_is_not_recovered() {
    let net = Net::new(10);
    let m = member(&net, "m");
    m.wait_connected(STEP).await.unwrap();
    let mut pushes = m.pushes().unwrap();
    m.join("room-2").await.unwrap();
    publish(&net.registry(), "room-2", "m0".into()).await;
    assert_eq!(next_push(&mut pushes).await.payload, "m0");

    net.cut("m");
    disconnected(&m).await;
    for i in 1..=30 {
        publish(&net.registry(), "room-2", format!("m{i}")).await;
    }
    net.restore();
    assert!(
        !rejoined(&m, "room-2", 1).await,
        "20 of the 30 missed pushes are trimmed: resync"
    );
    publish(&net.registry(), "room-2", "live".into()).await;
    assert_eq!(
        next_push(&mut pushes).await.payload,
        "live",
        "nothing is replayed when not recovered"
    );

    // Nothing missed on the next drop: recovered (with nothing to replay).
    net.cut("m");
    disconnected(&m).await;
    net.restore();
    assert!(rejoined(&m, "room-2", 2).await);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_a_new_epoch_and_does_not_recover() {
    let net = Net::new(1000);
    let m = member(&net, "m");
    m.wait_connected(STEP).await.unwrap();
    let mut pushes = m.pushes().unwrap();
    m.join("room-3").await.unwrap();
    let (old_epoch, _) = publish(&net.registry(), "room-3", "before".into()).await;
    assert_eq!(next_push(&mut pushes).await.payload, "before");

    // The node restarts: its memory history and its group log are gone.
    net.cut("m");
    disconnected(&m).await;
    let old = std::mem::replace(&mut *net.node.lock().unwrap(), node(1000));
    old.0.shutdown(Duration::from_millis(100)).await;
    net.restore();
    assert!(!rejoined(&m, "room-3", 1).await, "new node, new epoch");
    let (new_epoch, seq) = publish(&net.registry(), "room-3", "after".into()).await;
    assert_ne!(new_epoch, old_epoch);
    let push = next_push(&mut pushes).await;
    assert_eq!(push.payload, "after");
    assert_eq!((push.epoch, push.seq), (Some(new_epoch), Some(seq)));
    m.close().await;
}

/// Publishes `body`, waiting while the group is saturated (a refused publish takes no
/// position).
async fn publish_retrying(registry: &GroupRegistry, group: &str, body: String) {
    loop {
        match registry
            .publish(group, &PushMessage::new(1, Bytes::from(body.clone())))
            .await
        {
            Ok(_) => return,
            Err(longconn_group::Error::Saturated { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("publish: {e}"),
        }
    }
}

/// Publishes race the rejoin (the member is added, the history read and the live pushes
/// queued at the same time): every push still arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_racing_a_burst_of_publishes_sees_each_push_once_in_order() {
    let session = SessionConfig::builder()
        .max_queued_pushes(8192)
        .build()
        .unwrap();
    let net = Net::on(node_with(5000, session));
    let m = member(&net, "m");
    m.wait_connected(STEP).await.unwrap();
    let mut pushes = m.pushes().unwrap();
    m.join("room-4").await.unwrap();
    let (_, first) = publish(&net.registry(), "room-4", "m0".into()).await;
    assert_eq!(next_push(&mut pushes).await.payload, "m0");

    net.cut("m");
    disconnected(&m).await;
    for i in 1..=200 {
        publish(&net.registry(), "room-4", format!("m{i}")).await;
    }
    let registry = net.registry();
    // 900 pushes and the end marker in all: fewer than the client's push buffer (1,024)
    // holds, so none is dropped at the client however late the collector reads.
    let publisher = tokio::spawn(async move {
        for i in 201..=900 {
            publish_retrying(&registry, "room-4", format!("m{i}")).await;
            tokio::task::yield_now().await;
        }
        publish_retrying(&registry, "room-4", "end".into()).await;
    });
    net.restore();
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let push = next_push(&mut pushes).await;
            if push.payload == "end" {
                return got;
            }
            got.push((push.seq.unwrap(), push.payload));
        }
    });
    assert!(rejoined(&m, "room-4", 1).await);
    publisher.await.unwrap();
    let got = collector.await.unwrap();
    let missing: Vec<u64> = (first + 1..=first + 900)
        .filter(|s| !got.iter().any(|(g, _)| g == s))
        .map(|s| s - first)
        .collect();
    assert_eq!(
        got.len(),
        900,
        "every missed and live push once; missing {missing:?}, rejoin {:?}",
        m.rejoins().borrow().get("room-4").map(|r| format!("{r:?}"))
    );
    for (i, (seq, payload)) in got.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!(
            (*seq, payload.clone()),
            (first + i, Bytes::from(format!("m{i}")))
        );
    }
    m.close().await;
}

/// The group layer with a publish forced into the window between a rejoin's join and
/// its history read (the race the live-push filter is for).
#[derive(Debug)]
struct RacingGroups {
    inner: Arc<GroupRegistry>,
    race: AtomicBool,
}

impl longconn_server::GroupMembership for RacingGroups {
    fn join(
        &self,
        conn: &longconn_server::ConnHandle,
        device: &longconn_server::DeviceKey,
        group: &str,
    ) -> Result<(), Code> {
        longconn_server::GroupMembership::join(&*self.inner, conn, device, group)
    }

    fn leave(&self, conn_id: u64, group: &str) -> Result<(), Code> {
        longconn_server::GroupMembership::leave(&*self.inner, conn_id, group)
    }

    fn leave_all(&self, conn_id: u64) {
        longconn_server::GroupMembership::leave_all(&*self.inner, conn_id);
    }

    fn recover<'a>(
        &'a self,
        group: &'a str,
        since: Option<longconn_server::GroupPosition>,
    ) -> std::pin::Pin<Box<dyn Future<Output = longconn_server::JoinRecovery> + Send + 'a>> {
        Box::pin(async move {
            if self.race.swap(false, Ordering::SeqCst) {
                // Kept in the history and pushed live to the member just added.
                let message = PushMessage::new(1, Bytes::from_static(b"raced"));
                self.inner.publish(group, &message).await.unwrap();
            }
            longconn_server::GroupMembership::recover(&*self.inner, group, since).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_between_the_join_and_the_history_read_arrives_once() {
    let (_, registry) = node(1000);
    let groups = Arc::new(RacingGroups {
        inner: registry.clone(),
        race: AtomicBool::new(false),
    });
    let server = Server::builder(ServerConfig::default(), Arc::new(keys()))
        .groups(groups.clone())
        .build();
    let net = Net::on((server, registry.clone()));
    let m = member(&net, "m");
    m.wait_connected(STEP).await.unwrap();
    let mut pushes = m.pushes().unwrap();
    m.join("room-5").await.unwrap();
    publish(&registry, "room-5", "m0".into()).await;
    assert_eq!(next_push(&mut pushes).await.payload, "m0");

    net.cut("m");
    disconnected(&m).await;
    publish(&registry, "room-5", "m1".into()).await;
    groups.race.store(true, Ordering::SeqCst);
    net.restore();
    assert!(rejoined(&m, "room-5", 1).await);
    assert!(!groups.race.load(Ordering::SeqCst), "the race ran");
    publish(&registry, "room-5", "m2".into()).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_push(&mut pushes).await.payload);
    }
    assert_eq!(got, ["m1", "raced", "m2"], "replayed, raced once, live");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), pushes.recv())
            .await
            .is_err(),
        "no duplicate"
    );
    m.close().await;
}
