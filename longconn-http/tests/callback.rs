//! The forwarding router end to end: rules, the HTTP callback backend against a real
//! local HTTP server, timeouts, errors, busy backends, and connection-state callbacks.

mod support;

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use longconn_client::ClientError;
use longconn_core::{CloseReason, Code, Metadata, TransportKind};
use longconn_http::{ApiLimits, HttpBackend, HttpBackendConfig};
use longconn_server::{
    Backend, BackendError, BackendLimits, BackendReply, BackendRequest, ConnectionEvent,
    EchoBackend, Router,
};
use support::{APP, STEP, Setup};
use tokio::sync::{Notify, mpsc};

/// Signalled each time `/slow` starts handling a call.
static SLOW_STARTED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// A local HTTP service standing in for a business backend. `/rpc` answers with the
/// payload reversed and echoes what it was told in headers; `/fail` answers 500; `/slow`
/// signals [`SLOW_STARTED`] and answers after 5 s; `/events` forwards each JSON event to
/// the test.
async fn business_service(events: mpsc::UnboundedSender<serde_json::Value>) -> String {
    let app = axum::Router::new()
        .route(
            "/rpc",
            post(|headers: HeaderMap, body: Bytes| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                let seen = format!(
                    "conn={}&app={}&device={}&business={}&in={}",
                    header("x-longconn-conn-id"),
                    header("x-longconn-app"),
                    header("x-longconn-device"),
                    header("x-longconn-business"),
                    urlencode(&header("x-longconn-meta")),
                );
                let mut reply: Vec<u8> = body.to_vec();
                reply.reverse();
                ([("x-longconn-meta", seen)], reply)
            }),
        )
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            post(|| async {
                SLOW_STARTED.notify_one();
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/events",
            post(move |body: Bytes| {
                let events = events.clone();
                async move {
                    let _ = events.send(serde_json::from_slice(&body).unwrap());
                    StatusCode::NO_CONTENT
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn urlencode(s: &str) -> String {
    longconn_http::callback::encode_meta(&Metadata::from_pairs([("v", s)]).unwrap())
        .trim_start_matches("v=")
        .to_owned()
}

/// Records connection events in-process.
struct Recorder(mpsc::UnboundedSender<ConnectionEvent>);

#[async_trait]
impl Backend for Recorder {
    async fn call(&self, _request: BackendRequest) -> Result<BackendReply, BackendError> {
        Err(BackendError::failed("recorder takes no requests"))
    }

    async fn connection_event(&self, event: ConnectionEvent) {
        let _ = self.0.send(event);
    }
}

fn failed_code(result: Result<longconn_client::Response, ClientError>) -> Code {
    match result {
        Err(ClientError::Failed { code, .. }) => code,
        other => panic!("expected an Error frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_send_requests_to_the_http_callback_and_map_failures_to_codes() {
    let (events_tx, _events) = mpsc::unbounded_channel();
    let service = business_service(events_tx).await;
    let backend =
        |path: &str| HttpBackend::new(HttpBackendConfig::new(format!("{service}{path}"))).unwrap();
    let quick = BackendLimits {
        timeout: Duration::from_millis(300),
        max_concurrency: 1,
    };
    let router = Router::builder()
        .backend("echo", EchoBackend, BackendLimits::default())
        .backend("rpc", backend("/rpc"), BackendLimits::default())
        .backend("fail", backend("/fail"), BackendLimits::default())
        .backend("slow", backend("/slow"), quick)
        .backend(
            "down",
            HttpBackend::new(HttpBackendConfig::new("http://127.0.0.1:9/unreachable")).unwrap(),
            BackendLimits::default(),
        )
        .route(1, "echo")
        .route_range(100..=199, "rpc")
        .route(150, "fail")
        .route(300, "slow")
        .route(400, "down")
        .build()
        .unwrap();
    let setup = Setup::start(router, ApiLimits::default()).await;
    let client = std::sync::Arc::new(setup.client("caller").await);
    let conn_id = setup.server.hub().find_device(APP, "caller").unwrap().id();

    // A range rule to the HTTP callback: payload, common parameters and metadata.
    let meta = Metadata::from_pairs([("trace", &b"t-1"[..])]).unwrap();
    let reply = client
        .request_with(120, meta, Bytes::from_static(b"abc"), STEP)
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"cba");
    let seen = String::from_utf8(reply.meta.get("conn").map(<[u8]>::to_vec).unwrap()).unwrap();
    assert_eq!(seen, conn_id.to_string());
    assert_eq!(reply.meta.get("app"), Some(APP.as_bytes()));
    assert_eq!(reply.meta.get("device"), Some(&b"caller"[..]));
    assert_eq!(reply.meta.get("business"), Some(&b"120"[..]));
    assert_eq!(reply.meta.get("in"), Some(&b"trace=t-1"[..]));

    // Exact beats range; the echo rule still echoes.
    assert_eq!(
        failed_code(client.request(150, Bytes::from_static(b"x")).await),
        Code::BackendError
    );
    let echoed = client.request(1, Bytes::from_static(b"e")).await.unwrap();
    assert_eq!(&echoed.payload[..], b"e");

    // No rule, a timeout, an unreachable callback.
    assert_eq!(
        failed_code(client.request(2, Bytes::new()).await),
        Code::UnknownBusiness
    );
    assert_eq!(
        failed_code(client.request(400, Bytes::new()).await),
        Code::BackendError
    );

    // The slow backend takes one call at a time: a second concurrent call is busy, and
    // the first times out.
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.request(300, Bytes::new()).await })
    };
    // The first call holds the permit once the callback has it.
    tokio::time::timeout(STEP, SLOW_STARTED.notified())
        .await
        .expect("the slow callback was called");
    assert_eq!(
        failed_code(client.request(300, Bytes::new()).await),
        Code::Busy
    );
    assert_eq!(failed_code(first.await.unwrap()), Code::BackendTimeout);
    // The connection survived all of it.
    let echoed = client.request(1, Bytes::from_static(b"ok")).await.unwrap();
    assert_eq!(&echoed.payload[..], b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_events_reach_subscribers_in_process_and_over_http() {
    let (http_tx, mut http_events) = mpsc::unbounded_channel();
    let service = business_service(http_tx).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut config = HttpBackendConfig::new(format!("{service}/rpc"));
    config.events_url = Some(format!("{service}/events"));
    let router = Router::builder()
        .backend("recorder", Recorder(tx), BackendLimits::default())
        .backend(
            "hooks",
            HttpBackend::new(config).unwrap(),
            BackendLimits::default(),
        )
        .subscribe("recorder")
        .subscribe("hooks")
        .build()
        .unwrap();
    let setup = Setup::start(router, ApiLimits::default()).await;
    let first = setup.client("phone").await;
    let first_id = setup.server.hub().find_device(APP, "phone").unwrap().id();
    let connected = recv(&mut events).await;
    assert!(
        matches!(
            &connected,
            ConnectionEvent::Connected { conn_id, device, protocol: TransportKind::Tcp }
                if *conn_id == first_id && device.device() == "phone" && device.app() == APP
        ),
        "{connected:?}"
    );

    // A second login of the same device replaces the first: the first's disconnect says
    // `replaced`, closed by the gateway.
    let second = setup.client("phone").await;
    let mut saw_replaced = false;
    for _ in 0..2 {
        match recv(&mut events).await {
            ConnectionEvent::Disconnected {
                conn_id, reason, ..
            } => {
                assert_eq!(conn_id, first_id);
                assert_eq!(reason, CloseReason::Local(Code::Replaced));
                saw_replaced = true;
            }
            ConnectionEvent::Connected { conn_id, .. } => assert_ne!(conn_id, first_id),
        }
    }
    assert!(saw_replaced);
    drop(first);

    // The client closes: `normal`, by the peer.
    second.close().await;
    let closed = recv(&mut events).await;
    assert!(
        matches!(
            closed,
            ConnectionEvent::Disconnected {
                reason: CloseReason::Peer(Code::Normal),
                ..
            }
        ),
        "{closed:?}"
    );

    // The HTTP subscriber got the same four events, as JSON, in order.
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(STEP, http_events.recv())
            .await
            .unwrap()
            .unwrap();
        kinds.push(format!(
            "{}:{}",
            event["event"].as_str().unwrap(),
            event["reason"].as_str().unwrap_or("-")
        ));
        assert_eq!(event["app"], APP);
        assert_eq!(event["device"], "phone");
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "connected:-",
            "connected:-",
            "disconnected:normal",
            "disconnected:replaced"
        ]
    );
    assert_eq!(setup.server.router().dropped_events(), 0);
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<ConnectionEvent>) -> ConnectionEvent {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .expect("an event in time")
        .expect("router alive")
}
