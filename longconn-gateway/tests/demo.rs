//! The browser demo's server side (`GatewayBuilder::demo`, `gateway --demo`): its page
//! and SDK files, config, token and presence routes, and the room handler on business 7,
//! driven by a raw-frame client over TCP.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::{Code, Frame, Metadata, TokenKey, TokenKeys, Transmit};
use longconn_gateway::{DEMO_BUSINESS, Demo, Gateway, GatewayError, ListenerKind};
use longconn_server::{EchoBackend, Router};
use longconn_transport::tcp::TcpConnection;

const WAIT: Duration = Duration::from_secs(5);

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("demo-test", b"a demo secret of 16+ bytes").unwrap())
}

/// One HTTP/1.1 exchange: (status, headers, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        head.to_ascii_lowercase(),
        body.to_owned(),
    )
}

async fn json(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = http(addr, method, path, body).await;
    (status, serde_json::from_str(&body).expect("a JSON body"))
}

struct Peer {
    reader: <TcpConnection as Connection>::Reader,
    writer: <TcpConnection as Connection>::Writer,
}

impl Peer {
    async fn connect(addr: SocketAddr) -> Peer {
        let (reader, writer) = TcpConnection::connect(addr, 1 << 16).await.unwrap().split();
        Peer { reader, writer }
    }

    async fn send(&mut self, frame: Frame) {
        self.writer.send(Transmit::Frame(frame)).unwrap();
        self.writer.flush().await.unwrap();
    }

    async fn recv(&mut self) -> Frame {
        tokio::time::timeout(WAIT, self.reader.recv())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .expect("the connection is open")
    }

    async fn request(&mut self, id: u32, group: Option<&str>, payload: &'static str) {
        let meta = match group {
            Some(g) => Metadata::from_pairs([("group", g.as_bytes())]).unwrap(),
            None => Metadata::new(),
        };
        self.send(Frame::Request {
            id,
            business: DEMO_BUSINESS,
            meta,
            payload: Bytes::from_static(payload.as_bytes()),
        })
        .await;
    }
}

async fn start() -> Gateway {
    Gateway::builder()
        .tcp(any())
        .ws(any())
        .http(any())
        .authenticator(keys())
        .demo(Demo::new(keys()))
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_page_and_the_sdk_are_served() {
    let gateway = start().await;
    let http_addr = gateway.local_addr(ListenerKind::Http).unwrap();
    let (status, head, _) = http(http_addr, "GET", "/demo", "").await;
    assert_eq!(status, 308);
    assert!(head.contains("location: /demo/"), "{head}");
    let (status, head, body) = http(http_addr, "GET", "/demo/", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("<script type=\"module\" src=\"app.js\">"));
    // Every file of the SDK's build that the page imports is served.
    let sdk_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sdk");
    let mut paths = vec!["/demo/app.js".to_owned()];
    for entry in std::fs::read_dir(sdk_dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        paths.push(format!("/demo/sdk/{name}"));
    }
    assert!(paths.len() >= 5, "{paths:?}");
    for path in &paths {
        let (status, head, body) = http(http_addr, "GET", path, "").await;
        assert_eq!(status, 200, "{path}");
        assert!(
            head.contains("content-type: text/javascript"),
            "{path}: {head}"
        );
        assert!(
            body.contains("export ") || body.contains("import "),
            "{path} is an ES module"
        );
    }
    let (status, head, _) = http(http_addr, "GET", "/demo/style.css", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/css"));
    // The rest of the HTTP side is unchanged.
    assert_eq!(http(http_addr, "GET", "/healthz", "").await.0, 200);
    assert_eq!(http(http_addr, "GET", "/demo/nope", "").await.0, 404);
    assert_eq!(http(http_addr, "GET", "/demo/sdk/nope.js", "").await.0, 404);

    let (status, config) = json(http_addr, "GET", "/demo/config", "").await;
    assert_eq!(status, 200);
    let ws = gateway.local_addr(ListenerKind::Ws).unwrap();
    assert_eq!(config["ws_port"], ws.port());
    assert_eq!(config["ws_path"], "/ws");
    assert_eq!(config["app"], "demo");
    assert_eq!(config["business"], DEMO_BUSINESS);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_minted_token_logs_in_and_the_room_handler_publishes_to_the_group() {
    let gateway = start().await;
    let http_addr = gateway.local_addr(ListenerKind::Http).unwrap();
    let tcp = gateway.local_addr(ListenerKind::Tcp).unwrap();

    let (status, minted) = json(http_addr, "POST", "/demo/token", r#"{"device":"tab-1"}"#).await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(minted["app"], "demo");
    let token = minted["token"].as_str().unwrap().to_owned();
    assert!(
        keys().verify(token.as_bytes(), 0).is_ok(),
        "signed by the gateway's key"
    );

    let mut tab = Peer::connect(tcp).await;
    tab.send(Frame::Login {
        id: 1,
        app: "demo".into(),
        device: "tab-1".into(),
        token: Bytes::from(token),
        meta: Metadata::new(),
    })
    .await;
    assert!(matches!(tab.recv().await, Frame::LoginAck { id: 1, .. }));

    // Not in the group yet: refused, nothing published.
    tab.request(2, Some("room"), "early").await;
    match tab.recv().await {
        Frame::Error {
            id: 2,
            code,
            message,
        } => {
            assert_eq!(code, Code::BackendError);
            assert!(message.contains("join"), "{message}");
        }
        other => panic!("expected an Error, got {other:?}"),
    }
    // No group named: refused.
    tab.request(3, None, "where to?").await;
    assert!(matches!(
        tab.recv().await,
        Frame::Error {
            id: 3,
            code: Code::BackendError,
            ..
        }
    ));

    tab.send(Frame::JoinGroup {
        id: 4,
        group: "room".into(),
        since: None,
    })
    .await;
    assert!(matches!(tab.recv().await, Frame::JoinAck { id: 4, .. }));
    let (status, presence) = json(http_addr, "GET", "/demo/rooms/room", "").await;
    assert_eq!(status, 200);
    assert_eq!(presence["members"], 1);

    tab.request(5, Some("room"), r#"{"name":"tab","text":"hi"}"#)
        .await;
    let (mut push, mut response) = (None, None);
    for _ in 0..2 {
        match tab.recv().await {
            frame @ Frame::Push { .. } => push = Some(frame),
            frame @ Frame::Response { id: 5, .. } => response = Some(frame),
            other => panic!("unexpected {other:?}"),
        }
    }
    match push.expect("the publish reached the member") {
        Frame::Push {
            business,
            group,
            seq,
            epoch,
            meta,
            payload,
            ..
        } => {
            assert_eq!(business, DEMO_BUSINESS);
            assert_eq!(group.as_deref(), Some("room"));
            assert_eq!(seq, Some(1));
            assert!(epoch.is_some_and(|e| e != 0));
            assert_eq!(meta.get("from"), Some(b"tab-1".as_slice()));
            assert_eq!(payload, r#"{"name":"tab","text":"hi"}"#);
        }
        _ => unreachable!(),
    }
    let Some(Frame::Response { payload, .. }) = response else {
        panic!("no response")
    };
    let reply: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(reply["seq"], "1");
    assert_eq!(reply["members"], 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn bad_token_and_room_requests_get_json_errors() {
    let gateway = start().await;
    let http_addr = gateway.local_addr(ListenerKind::Http).unwrap();
    let (status, body) = json(http_addr, "POST", "/demo/token", r#"{"device":""}"#).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let long = format!(r#"{{"device":"{}"}}"#, "d".repeat(129));
    assert_eq!(json(http_addr, "POST", "/demo/token", &long).await.0, 400);
    let (status, body) = json(http_addr, "POST", "/demo/token", "not json").await;
    assert_eq!((status, body["error"].as_str()), (422, Some("bad_json")));
    let (status, body) = json(http_addr, "POST", "/demo/token", r#"{"device":"d","x":1}"#).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("bad_json")));
    let long_group = format!("/demo/rooms/{}", "g".repeat(129));
    assert_eq!(json(http_addr, "GET", &long_group, "").await.0, 400);
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_demo_needs_its_listeners_and_its_business() {
    let refused = |result: Result<Gateway, GatewayError>| match result {
        Err(GatewayError::Config(message)) => message,
        other => panic!("expected a config error, got {other:?}"),
    };
    let no_ws = Gateway::builder()
        .tcp(any())
        .http(any())
        .demo(Demo::new(keys()))
        .start()
        .await;
    assert!(refused(no_ws).contains("ws listener"));
    let no_http = Gateway::builder()
        .ws(any())
        .demo(Demo::new(keys()))
        .start()
        .await;
    assert!(refused(no_http).contains("http listener"));
    let router = Router::builder()
        .backend("echo", EchoBackend, Default::default())
        .route(1, "echo")
        .build()
        .unwrap();
    let unrouted = Gateway::builder()
        .ws(any())
        .http(any())
        .router(router)
        .demo(Demo::new(keys()))
        .start()
        .await;
    assert!(refused(unrouted).contains("business 7"));
    // A router that routes business 7 to the demo is taken as it is.
    let demo = Demo::new(keys());
    let router = Router::builder()
        .backend("demo", demo.backend(), Default::default())
        .route(DEMO_BUSINESS, "demo")
        .build()
        .unwrap();
    let gateway = Gateway::builder()
        .ws(any())
        .http(any())
        .router(router)
        .demo(demo)
        .start()
        .await
        .unwrap();
    gateway.shutdown().await;
}
