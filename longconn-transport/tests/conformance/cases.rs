//! The conformance cases, each generic over the transport.

use std::time::Duration;

use bytes::Bytes;
use longconn_core::{
    Code, Frame, Metadata, PushOutcome, SlowConsumerPolicy, TokenKey, TokenKeys, Transmit,
};
use longconn_server::{ECHO_BUSINESS, node_of};

use crate::harness::*;

async fn setup<F: Fixture>(policy: SlowConsumerPolicy) -> (longconn_server::Server, F) {
    let server = server(policy, F::TIMERS);
    let fixture = F::start(&server).await;
    (server, fixture)
}

async fn client<F: Fixture>(fixture: &F) -> TestClient<F::Conn> {
    TestClient::new(fixture.connect().await)
}

pub async fn login_ok<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    let exp = unix_now() + 3600;
    let token = Bytes::from(keys().mint(APP, "dev-1", exp));
    match c.login("dev-1", token).await {
        Frame::LoginAck {
            id,
            conn_id,
            heartbeat_ms,
            expires_at_ms,
        } => {
            assert_eq!(id, 1, "LoginAck echoes the Login id");
            assert_eq!(node_of(conn_id), NODE_ID, "conn id carries the node id");
            assert_eq!(heartbeat_ms, F::TIMERS.heartbeat.as_millis() as u32);
            assert_eq!(expires_at_ms, Some(exp * 1000));
            let found = server
                .hub()
                .find_device(APP, "dev-1")
                .expect("device bound");
            assert_eq!(found.id(), conn_id);
        }
        other => panic!("expected LoginAck, got {other:?}"),
    }
}

pub async fn bad_tokens_are_refused<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let other_key = TokenKeys::new(TokenKey::new("test", b"some-other-secret-xyz").unwrap());
    let cases = [
        (
            "garbage",
            Bytes::from_static(b"not a token"),
            Code::InvalidToken,
        ),
        (
            "expired",
            Bytes::from(keys().mint(APP, "dev-1", unix_now() - 10)),
            Code::ExpiredToken,
        ),
        (
            "foreign key",
            Bytes::from(other_key.mint(APP, "dev-1", unix_now() + 60)),
            Code::InvalidToken,
        ),
        ("other device", token("dev-2"), Code::Forbidden),
    ];
    for (what, token, code) in cases {
        let mut c = client(&fixture).await;
        c.send(login_frame("dev-1", token)).await;
        match c.expect().await {
            Frame::Close { code: got, .. } => assert_eq!(got, code, "{what}"),
            other => panic!("{what}: expected Close, got {other:?}"),
        }
        c.expect_end().await;
    }
    assert!(server.hub().find_device(APP, "dev-1").is_none());
}

pub async fn heartbeat_keeps_the_session_alive<F: Fixture>() {
    let (_server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    // The heartbeats outlast the idle timeout.
    let timers = F::TIMERS;
    assert!(timers.heartbeat * timers.beats > timers.idle);
    for id in 1..=timers.beats {
        tokio::time::sleep(timers.heartbeat).await;
        let payload = Bytes::from(format!("beat {id}"));
        c.send(Frame::Ping {
            id,
            payload: payload.clone(),
        })
        .await;
        assert_eq!(c.expect().await, Frame::Pong { id, payload });
    }
}

pub async fn idle_session_is_closed<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    let started = tokio::time::Instant::now();
    c.expect_close(Code::IdleTimeout).await;
    assert!(started.elapsed() >= F::TIMERS.idle - Duration::from_millis(50));
    eventually("hub to forget the connection", || server.hub().is_empty()).await;
}

pub async fn missing_login_times_out<F: Fixture>() {
    let (_server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    let started = tokio::time::Instant::now();
    c.expect_close(Code::LoginTimeout).await;
    assert!(started.elapsed() >= F::TIMERS.login - Duration::from_millis(50));
}

pub async fn requests_are_echoed<F: Fixture>() {
    let (_server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    let meta = Metadata::from_pairs([("trace", "abc")]).unwrap();
    c.send(Frame::Request {
        id: 10,
        business: ECHO_BUSINESS,
        meta: meta.clone(),
        payload: Bytes::from_static(b"hello"),
    })
    .await;
    assert_eq!(
        c.expect().await,
        Frame::Response {
            id: 10,
            business: ECHO_BUSINESS,
            meta,
            payload: Bytes::from_static(b"hello"),
        }
    );
    c.send(Frame::Request {
        id: 11,
        business: 999,
        meta: Metadata::new(),
        payload: Bytes::new(),
    })
    .await;
    match c.expect().await {
        Frame::Error { id, code, .. } => {
            assert_eq!((id, code), (11, Code::UnknownBusiness));
        }
        other => panic!("expected Error, got {other:?}"),
    }
}

pub async fn pushes_arrive_in_order<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    let handle = server.hub().find_device(APP, "dev-1").unwrap();
    let acked = Frame::Push {
        id: 1,
        ack_required: true,
        business: 9,
        group: None,
        seq: Some(1),
        epoch: None,
        meta: Metadata::new(),
        payload: Bytes::from_static(b"first"),
    };
    assert_eq!(
        handle.push(Transmit::Frame(acked.clone())),
        PushOutcome::Queued
    );
    // A pre-encoded push, as a fan-out shares one encoding between connections.
    let shared = push_frame(2, Bytes::from_static(b"second"));
    let encoded = shared.to_bytes(MAX_FRAME).unwrap();
    assert_eq!(handle.push(Transmit::Encoded(encoded)), PushOutcome::Queued);
    assert_eq!(c.expect().await, acked);
    assert_eq!(c.expect().await, shared);
    c.send(Frame::PushAck { id: 1 }).await;
    // The session is still healthy after the ack.
    c.send(Frame::Ping {
        id: 3,
        payload: Bytes::new(),
    })
    .await;
    assert!(matches!(c.expect().await, Frame::Pong { id: 3, .. }));
}

pub async fn duplicate_login_kicks_the_older_session<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut first = client(&fixture).await;
    first.login_ok("dev-1").await;
    let mut second = client(&fixture).await;
    let second_id = second.login_ok("dev-1").await;
    match first.expect().await {
        Frame::Kick { code, .. } => assert_eq!(code, Code::Replaced),
        other => panic!("expected Kick(replaced), got {other:?}"),
    }
    first.expect_end().await;
    assert_eq!(
        server.hub().find_device(APP, "dev-1").unwrap().id(),
        second_id
    );
    second
        .send(Frame::Ping {
            id: 1,
            payload: Bytes::new(),
        })
        .await;
    assert!(matches!(second.expect().await, Frame::Pong { id: 1, .. }));
    // The kicked session's cleanup must not unbind the device from the new one.
    eventually("hub to drop the kicked connection", || {
        server.hub().len() == 1
    })
    .await;
    assert_eq!(
        server.hub().find_device(APP, "dev-1").unwrap().id(),
        second_id
    );
}

pub async fn oversized_frame_is_refused<F: Fixture>() {
    let (_server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    let big = Frame::Request {
        id: 2,
        business: ECHO_BUSINESS,
        meta: Metadata::new(),
        payload: Bytes::from(vec![7u8; MAX_FRAME]),
    };
    c.send_raw(big.to_bytes(4 * MAX_FRAME).unwrap()).await;
    c.expect_close(Code::FrameTooLarge).await;
}

pub async fn garbage_is_refused<F: Fixture>() {
    let (_server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.send_raw(Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await;
    c.expect_close(Code::BadMagic).await;
}

pub async fn graceful_shutdown_drains<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    let handle = server.hub().find_device(APP, "dev-1").unwrap();
    for id in 1..=5 {
        assert_eq!(
            handle.push(Transmit::Frame(push_frame(id, Bytes::from_static(b"x")))),
            PushOutcome::Queued
        );
    }
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(4)).await }
    });
    // Every queued push arrives, in order, before the Close; GoAway is a control frame
    // and may overtake pushes that were still queued when the drain began.
    let mut pushes = Vec::new();
    let mut go_away = false;
    loop {
        match c.expect().await {
            Frame::Push { id, .. } => pushes.push(id),
            Frame::GoAway { retry_after_ms, .. } => {
                assert!(!go_away, "one GoAway");
                assert_eq!(retry_after_ms, 1500);
                go_away = true;
            }
            Frame::Close { code, .. } => {
                assert_eq!(code, Code::GoingAway);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(go_away, "GoAway before Close");
    assert_eq!(pushes, [1, 2, 3, 4, 5]);
    c.expect_end().await;
    let report = shutdown.await.unwrap();
    assert_eq!(report.connections, 1);
    assert_eq!(report.forced, 0);
    assert_eq!(report.pushes_dropped, 0);
    assert!(
        report.frames_flushed >= 2,
        "GoAway and Close count: {report:?}"
    );
}

/// Pushes `payload`-sized frames to a client that does not read until the policy reacts.
async fn flood(handle: &longconn_server::ConnHandle) -> (u32, PushOutcome) {
    let payload = Bytes::from(vec![1u8; 8 * 1024]);
    for id in 1..=20_000u32 {
        let outcome = handle.push(Transmit::Frame(push_frame(id, payload.clone())));
        if outcome != PushOutcome::Queued {
            return (id, outcome);
        }
        // Let the driver move the push on, so the transport fills before the queue does.
        tokio::task::yield_now().await;
    }
    panic!("the transport never pushed back");
}

pub async fn slow_consumer_drop_newest<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::DropNewest).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    let handle = server.hub().find_device(APP, "dev-1").unwrap();
    let (sent, outcome) = flood(&handle).await;
    assert_eq!(outcome, PushOutcome::Dropped);
    assert!(handle.dropped_pushes() >= 1);
    // Everything accepted before the drop arrives, in order; the connection survives.
    let mut next = 1;
    while next < sent {
        match c.expect().await {
            Frame::Push { id, .. } => {
                assert_eq!(id, next, "pushes in order");
                next += 1;
            }
            other => panic!("expected a push, got {other:?}"),
        }
        if next as usize > sent as usize - MAX_QUEUED - 1 {
            break;
        }
    }
    c.send(Frame::Ping {
        id: 77,
        payload: Bytes::new(),
    })
    .await;
    loop {
        match c.expect().await {
            Frame::Push { .. } => {}
            Frame::Pong { id, .. } => {
                assert_eq!(id, 77);
                break;
            }
            other => panic!("expected pushes then Pong, got {other:?}"),
        }
    }
}

pub async fn slow_consumer_disconnect<F: Fixture>() {
    let (server, fixture) = setup::<F>(SlowConsumerPolicy::Disconnect).await;
    let mut c = client(&fixture).await;
    c.login_ok("dev-1").await;
    let handle = server.hub().find_device(APP, "dev-1").unwrap();
    let (_, outcome) = flood(&handle).await;
    assert_eq!(outcome, PushOutcome::Disconnected);
    assert_eq!(
        handle.push(Transmit::Frame(push_frame(0, Bytes::new()))),
        PushOutcome::NotActive
    );
    // The client reads what the transport held, then the Kick, then the end.
    loop {
        match c.recv().await {
            Some(Frame::Push { .. }) => {}
            Some(Frame::Kick { code, .. }) => {
                assert_eq!(code, Code::SlowConsumer);
                break;
            }
            other => panic!("expected pushes then Kick, got {other:?}"),
        }
    }
    c.expect_end().await;
    eventually("hub to forget the connection", || server.hub().is_empty()).await;
}
