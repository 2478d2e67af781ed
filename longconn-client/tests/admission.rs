//! The SDK against a server's admission limits: over the accept rate the gateway answers
//! `Close {try_later}` with a delay and the client waits it before reconnecting; over
//! the per-IP limit it answers `Close {source_limit}`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_client::{Client, ClientConfig, ConnState, StaticToken};
use longconn_core::{TokenKey, TokenKeys};
use longconn_server::{Router, Server, ServerConfig};
use longconn_transport::tcp::TcpAcceptor;

const APP: &str = "admission";

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"admission-secret-0123456").unwrap())
}

fn client(port: u16, device: &str) -> Client {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = Arc::new(StaticToken(Bytes::from(keys().mint(APP, device, exp))));
    let url = format!("tcp://127.0.0.1:{port}");
    Client::connect(ClientConfig::new(&url, APP, device, token).unwrap())
}

fn server(config: ServerConfig) -> (Server, u16) {
    let server = Server::new(config, Arc::new(keys()), Arc::new(Router::echo()));
    let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false).unwrap();
    let port = longconn_server::Listener::local_addr(&acceptor)
        .unwrap()
        .port();
    server.serve(acceptor);
    (server, port)
}

/// The largest reconnect delay the client has announced so far.
async fn watch_delays(client: &Client, until: Duration) -> (bool, Duration) {
    let mut state = client.state();
    let mut longest = Duration::ZERO;
    let deadline = tokio::time::Instant::now() + until;
    loop {
        match &*state.borrow_and_update() {
            ConnState::Connected { .. } => return (true, longest),
            ConnState::Reconnecting { delay, .. } => longest = longest.max(*delay),
            _ => {}
        }
        if tokio::time::timeout_at(deadline, state.changed())
            .await
            .is_err()
        {
            return (false, longest);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_accept_rate_the_client_waits_the_gateways_delay() {
    let (server, port) = server(
        ServerConfig::builder()
            .max_accept_rate(Some(2))
            .build()
            .unwrap(),
    );
    let started = Instant::now();
    let first = [client(port, "a"), client(port, "b")];
    for c in &first {
        c.wait_connected(Duration::from_secs(5)).await.unwrap();
    }
    // The burst (2) is used up: the third is told to come back one interval (500 ms)
    // after the bucket has room, and waits at least that.
    let third = client(port, "c");
    let (connected, delay) = watch_delays(&third, Duration::from_secs(10)).await;
    assert!(connected, "the refused client comes back");
    assert!(
        delay >= Duration::from_millis(400),
        "the client honoured the gateway's delay: {delay:?}"
    );
    assert!(third.quality().connect_attempts >= 2);
    assert!(
        third.quality().try_later_closes >= 1,
        "the refusal is counted: {:?}",
        third.quality()
    );
    assert_eq!(first[0].quality().try_later_closes, 0);
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_per_ip_limit_the_client_is_refused_until_a_slot_frees() {
    let (server, port) = server(
        ServerConfig::builder()
            .max_connections_per_ip(Some(1))
            .build()
            .unwrap(),
    );
    let first = client(port, "a");
    first.wait_connected(Duration::from_secs(5)).await.unwrap();
    let second = client(port, "b");
    let (connected, _) = watch_delays(&second, Duration::from_millis(1500)).await;
    assert!(!connected, "one connection per IP");
    assert!(
        second.quality().connect_attempts >= 2,
        "refused and retried"
    );
    assert!(matches!(
        *first.state().borrow(),
        ConnState::Connected { .. }
    ));
    assert_eq!(
        second.quality().try_later_closes,
        0,
        "source_limit is not try_later"
    );
    first.close().await;
    second
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("the freed slot is taken");
    server.shutdown(Duration::from_secs(1)).await;
}
