//! The group layer inside a real server: membership over the wire, fan-out to thousands
//! of members, and slow members.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_client::{Client, ClientConfig, ClientError, StaticToken};
use longconn_core::connection::memory::{MemoryClient, pair};
use longconn_core::{Code, Frame, SessionConfig, SlowConsumerPolicy, TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_server::{DeviceKey, PushMessage, Server, ServerConfig};

const APP: &str = "group-test";
const STEP: Duration = Duration::from_secs(10);

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"group-test-secret-0123").unwrap())
}

fn token(device: &str) -> Bytes {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Bytes::from(keys().mint(APP, device, exp))
}

fn server(groups: GroupConfig, session: SessionConfig) -> (Server, Arc<GroupRegistry>) {
    let registry = Arc::new(GroupRegistry::with_authorizer(
        groups,
        |_device: &DeviceKey, group: &str| !group.starts_with("private:"),
    ));
    let config = ServerConfig::builder().session(session).build().unwrap();
    let server = Server::builder(config, Arc::new(keys()))
        .groups(registry.clone())
        .build();
    (server, registry)
}

/// A raw in-memory client with the test's timeouts.
struct MemClient(MemoryClient);

impl MemClient {
    async fn login(server: &Server, device: &str, capacity: usize) -> MemClient {
        let (client, served) = pair(capacity, 65_536);
        assert!(server.serve_connection(served));
        let mut client = MemoryClient::new(client);
        let logged_in = client.login(APP, device, token(device)).await.unwrap();
        assert!(logged_in.is_ok(), "{logged_in:?}");
        MemClient(client)
    }

    async fn send(&mut self, frame: Frame) {
        self.0.send(frame).await.unwrap();
    }

    async fn next(&mut self) -> Frame {
        tokio::time::timeout(STEP, self.0.recv())
            .await
            .expect("a frame in time")
            .unwrap()
            .expect("connection open")
    }

    async fn join(&mut self, group: &str) {
        self.send(Frame::JoinGroup {
            id: 7,
            group: group.into(),
            since: None,
        })
        .await;
        let ack = self.next().await;
        assert!(matches!(ack, Frame::JoinAck { id: 7, .. }), "{ack:?}");
    }

    /// The next push's (group, seq, payload), skipping anything else.
    async fn next_push(&mut self) -> (String, u64, Bytes) {
        loop {
            if let Frame::Push {
                group: Some(group),
                seq: Some(seq),
                payload,
                ..
            } = self.next().await
            {
                return (group.as_str().to_owned(), seq, payload);
            }
        }
    }
}

fn sdk_client(addr: std::net::SocketAddr, device: &str) -> Client {
    let url = format!("tcp://{addr}");
    let mut config =
        ClientConfig::new(&url, APP, device, Arc::new(StaticToken(token(device)))).unwrap();
    config.request_timeout = STEP;
    config.backoff.base = Duration::from_millis(20);
    config.backoff.cap = Duration::from_millis(100);
    Client::connect(config)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_close_and_rejoin_over_tcp() {
    let groups_config = GroupConfig::builder()
        .max_groups_per_connection(3)
        .build()
        .unwrap();
    let (server, registry) = server(groups_config, SessionConfig::default());
    let acceptor =
        longconn_transport::tcp::TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false)
            .unwrap();
    let addr = longconn_server::Listener::local_addr(&acceptor).unwrap();
    server.serve(acceptor);

    let a = sdk_client(addr, "a");
    let b = sdk_client(addr, "b");
    let a_id = a.wait_connected(STEP).await.unwrap();
    b.wait_connected(STEP).await.unwrap();
    let mut a_pushes = a.pushes().unwrap();
    let mut b_pushes = b.pushes().unwrap();

    a.join("room").await.unwrap();
    a.join("room").await.unwrap(); // twice is fine
    a.join("lobby").await.unwrap();
    b.join("room").await.unwrap();
    assert_eq!(registry.members("room"), 2);
    assert_eq!(registry.members("lobby"), 1);

    // Refusals carry their documented codes.
    let forbidden = a.join("private:x").await.unwrap_err();
    assert!(
        matches!(
            forbidden,
            ClientError::Failed {
                code: Code::GroupForbidden,
                ..
            }
        ),
        "{forbidden:?}"
    );
    a.join("third").await.unwrap();
    let limit = a.join("fourth").await.unwrap_err();
    assert!(
        matches!(
            limit,
            ClientError::Failed {
                code: Code::GroupLimit,
                ..
            }
        ),
        "{limit:?}"
    );

    // After leaving, `a` gets lobby pushes but no room pushes.
    a.leave("room").await.unwrap();
    assert_eq!(registry.members("room"), 1);
    let msg = PushMessage::new(5, &b"r"[..]);
    let room = registry.publish("room", &msg).await.unwrap();
    assert_eq!((room.members, room.queued, room.seq), (1, 1, 1));
    registry
        .publish("lobby", &PushMessage::new(5, &b"l"[..]))
        .await
        .unwrap();
    let first_for_a = tokio::time::timeout(STEP, a_pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_for_a.group.as_deref(), Some("lobby"));
    let first_for_b = tokio::time::timeout(STEP, b_pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first_for_b.group.as_deref(), first_for_b.seq),
        (Some("room"), Some(1))
    );

    // A lost connection leaves every group; the SDK joins them again on reconnect.
    server.hub().get(a_id).unwrap().close(Code::GoingAway);
    eventually("a's groups were left at close", || {
        registry.groups_of(a_id).is_empty()
    })
    .await;
    eventually("a rejoined lobby and third after reconnecting", || {
        registry.members("lobby") == 1 && registry.members("third") == 1
    })
    .await;
    let a_new = server.hub().find_device(APP, "a").unwrap().id();
    assert_ne!(a_new, a_id);
    let mut rejoined = registry.groups_of(a_new);
    rejoined.sort();
    assert_eq!(rejoined, ["lobby", "third"]);

    a.close().await;
    b.close().await;
    eventually("every group is gone once everyone closed", || {
        registry.group_count() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn fan_out_reaches_thousands_of_members_exactly_once_in_order() {
    const MEMBERS: usize = 3_000;
    const MESSAGES: u64 = 5;
    // Small chunks, so the worker pool does most of the work.
    let config = GroupConfig::builder().fanout_chunk(256).build().unwrap();
    let (server, registry) = server(config, SessionConfig::default());
    let mut clients = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let mut client = MemClient::login(&server, &format!("m{i}"), 64).await;
        client.join("stadium").await;
        clients.push(client);
    }
    assert_eq!(registry.members("stadium"), MEMBERS);
    for n in 1..=MESSAGES {
        let message = PushMessage::new(9, Bytes::from(format!("goal {n}")));
        let report = registry.publish("stadium", &message).await.unwrap();
        assert_eq!(
            (report.members, report.queued, report.dropped, report.seq),
            (MEMBERS, MEMBERS, 0, n)
        );
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..MESSAGES {
                    got.push(client.next_push().await);
                }
                (got, client)
            })
        })
        .collect();
    for reader in readers {
        let (got, mut client) = reader.await.unwrap();
        let seqs: Vec<u64> = got.iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>());
        assert!(got.iter().all(|(g, _, _)| g == "stadium"));
        assert_eq!(got[4].2, Bytes::from_static(b"goal 5"));
        // Nothing more arrives: exactly once.
        client
            .send(Frame::Ping {
                id: 99,
                payload: Bytes::new(),
            })
            .await;
        assert!(matches!(client.next().await, Frame::Pong { id: 99, .. }));
    }
    // Shutdown stops the fan-out workers with everything else: no task is left.
    server.shutdown(STEP).await;
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(alive, 0, "tasks alive after shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_slow_member_loses_its_own_pushes_and_stalls_nobody() {
    const MEMBERS: usize = 200;
    const MESSAGES: u64 = 40;
    for policy in [
        SlowConsumerPolicy::DropNewest,
        SlowConsumerPolicy::Disconnect,
    ] {
        let session = SessionConfig::builder()
            .max_queued_pushes(8)
            .slow_consumer_policy(policy)
            .build()
            .unwrap();
        let config = GroupConfig::builder().fanout_chunk(32).build().unwrap();
        let (server, registry) = server(config, session);
        // The slow member's pipe holds 2 frames and it never reads.
        let mut slow = MemClient::login(&server, "slow", 2).await;
        slow.join("feed").await;
        let slow_id = server.hub().find_device(APP, "slow").unwrap().id();
        let mut members = Vec::new();
        for i in 0..MEMBERS {
            let mut client = MemClient::login(&server, &format!("fast{i}"), 256).await;
            client.join("feed").await;
            members.push(client);
        }
        let mut dropped = 0;
        for _ in 0..MESSAGES {
            let report = registry
                .publish("feed", &PushMessage::new(1, &b"tick"[..]))
                .await
                .unwrap();
            assert!(report.queued >= MEMBERS, "{policy:?}: {report:?}");
            dropped += report.dropped;
            // A paced publisher: the fast members' drivers keep up, the slow one cannot.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            dropped > 0,
            "{policy:?}: the slow member's queue never filled"
        );
        let slow_handle = server.hub().get(slow_id);
        match policy {
            SlowConsumerPolicy::DropNewest => {
                let handle = slow_handle.expect("still connected");
                assert!(handle.dropped_pushes() > 0);
                assert_eq!(registry.members("feed"), MEMBERS + 1);
            }
            SlowConsumerPolicy::Disconnect => {
                eventually(
                    "the slow member was disconnected and left the group",
                    || registry.members("feed") == MEMBERS,
                )
                .await;
                // What it had in its pipe, then the kick.
                let mut frames = Vec::new();
                while let Ok(Ok(Some(frame))) = tokio::time::timeout(STEP, slow.0.recv()).await {
                    frames.push(frame);
                }
                assert!(
                    frames.iter().any(|f| matches!(
                        f,
                        Frame::Kick {
                            code: Code::SlowConsumer,
                            ..
                        }
                    )),
                    "{frames:?}"
                );
            }
        }
        for member in &mut members {
            for seq in 1..=MESSAGES {
                assert_eq!(member.next_push().await.1, seq, "{policy:?}");
            }
        }
    }
}
