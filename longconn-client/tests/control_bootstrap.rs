//! A client bootstrapped from a control layer (longconn-control, in process) against
//! an in-process gateway: the first endpoint is down, the client falls back to the
//! second; a control layer that only offers dead endpoints is asked again after
//! repeated failures and the client follows its new answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use longconn_client::{Client, ClientConfig, ClientError, ConnState};
use longconn_control::{AccessRequest, Control, ControlConfig, DEFAULT_CONFIG_TOML};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};
use longconn_server::{Listener, Router, Server, ServerConfig};
use longconn_transport::tcp::TcpAcceptor;
use tokio::sync::oneshot;

/// A gateway (echo backend, development key) on a free port: its `host:port`.
fn gateway() -> (Server, String) {
    let keys =
        TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap());
    let server = Server::new(
        ServerConfig::default(),
        Arc::new(keys),
        Arc::new(Router::echo()),
    );
    let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false).unwrap();
    let addr = acceptor.local_addr().unwrap().to_string();
    server.serve(acceptor);
    (server, addr)
}

/// A loopback port nobody listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// Control config text: the embedded defaults with these `[[nodes]]` and fast
/// reconnects.
fn config(nodes: &[(u16, &str)]) -> String {
    let start = DEFAULT_CONFIG_TOML.find("[[nodes]]").unwrap();
    let end = DEFAULT_CONFIG_TOML
        .find("# The answer for every device")
        .unwrap();
    let mut text = DEFAULT_CONFIG_TOML[..start].to_owned();
    for (id, tcp) in nodes {
        text.push_str(&format!(
            "[[nodes]]\nid = {id}\naddrs = {{ tcp = \"{tcp}\" }}\n"
        ));
    }
    text.push_str(&DEFAULT_CONFIG_TOML[end..]);
    text.replace("reconnect_base_ms = 1000", "reconnect_base_ms = 20")
        .replace("reconnect_cap_ms = 30000", "reconnect_cap_ms = 100")
        .replace(
            "transports = [\"tcp\", \"ws\", \"quic\"]",
            "transports = [\"tcp\"]",
        )
}

/// Serves `control` on a free port until the sender is used or dropped.
async fn serve_control(control: &Control) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let control = control.clone();
    tokio::spawn(async move {
        control
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    (url, stop)
}

/// A device id whose access answer lists `first` first (the order is per device).
fn device_with_first(control: &Control, first: &str) -> String {
    (0..1_000)
        .map(|i| format!("phone-{i}"))
        .find(|device| {
            let req = AccessRequest {
                app: "demo".into(),
                device: device.clone(),
                platform: std::env::consts::OS.into(),
                app_version: "0.0.0".into(),
                sdk_version: env!("CARGO_PKG_VERSION").into(),
                network: Default::default(),
                quality: Default::default(),
            };
            control.access(&req, 1).unwrap().endpoints[0].address == first
        })
        .expect("some device ranks the node first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_first_endpoint_being_down() {
    let (_server, live) = gateway();
    let dead = closed_port();
    let control =
        Control::new(ControlConfig::load(&config(&[(1, &dead), (2, &live)]), 1, "test").unwrap());
    let device = device_with_first(&control, &dead);
    let (url, stop) = serve_control(&control).await;

    let client = Client::connect(ClientConfig::from_control(&url, "demo", &device).unwrap());
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let answer = client.access_answer().expect("bootstrapped");
    assert_eq!(
        answer.endpoints[0].url,
        format!("tcp://{dead}"),
        "first endpoint was the dead one"
    );
    assert_eq!(answer.endpoints[1].url, format!("tcp://{live}"));
    assert_eq!(answer.bucket, "default");
    let echoed = client
        .request(1, Bytes::from_static(b"via control"))
        .await
        .unwrap();
    assert_eq!(echoed.payload, "via control");
    let quality = client.quality();
    assert!(
        quality.connect_attempts >= 1 && quality.connect_successes == 1,
        "{quality:?}"
    );
    client.close().await;
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_the_control_layer_again_after_repeated_failures() {
    let (_server, live) = gateway();
    let dead = closed_port();
    let control = Control::new(ControlConfig::load(&config(&[(1, &dead)]), 1, "test").unwrap());
    let (url, stop) = serve_control(&control).await;
    let client = Client::connect(ClientConfig::from_control(&url, "demo", "phone-x").unwrap());
    // Let it fail against the dead-only answer for a while.
    let mut state = client.state();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(
            *state.borrow_and_update(),
            ConnState::Reconnecting { attempt: 3.., .. }
        ) {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the client retries");
    assert!(!matches!(
        *client.state().borrow(),
        ConnState::Connected { .. }
    ));
    // Operations move the device to the live node; the client finds out by asking again.
    control
        .reload_text(&config(&[(2, &live)]), "moved")
        .unwrap();
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let answer = client.access_answer().unwrap();
    assert_eq!(answer.endpoints[0].url, format!("tcp://{live}"));
    client.close().await;
    let _ = stop.send(());
}

#[tokio::test]
async fn an_unreachable_control_layer_is_a_typed_error_once_attempts_run_out() {
    let mut config =
        ClientConfig::from_control(&format!("http://{}", closed_port()), "demo", "d").unwrap();
    config.backoff.base = Duration::from_millis(5);
    config.backoff.max_attempts = Some(2);
    let client = Client::connect(config);
    let mut state = client.state();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(*state.borrow_and_update(), ConnState::Disconnected { .. }) {
            state.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(client.stop_error(), Some(ClientError::Control(_))),
        "{:?}",
        client.stop_error()
    );
    assert!(matches!(
        ClientConfig::from_control("tcp://x:1", "a", "d"),
        Err(ClientError::BadEndpoint { .. })
    ));
}
