//! Client quality end to end: clients send `QualityReport` frames over TCP and
//! WebSocket, the gateway refuses a malformed body with `malformed_report` and keeps the
//! session, and `GET /v1/quality` shows connect success and latency per network bucket
//! and transport.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::protocol::{QualityReport, ReportTransport, TransportReport};
use longconn_core::{Code, Frame, Metadata, Transmit};
use longconn_gateway::{Gateway, ListenerKind};
use longconn_server::{AuthGrant, Authenticator, LoginRequest};
use longconn_transport::tcp::TcpConnection;
use longconn_transport::ws::WsConnection;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

struct Anyone;

#[async_trait]
impl Authenticator for Anyone {
    async fn authenticate(&self, _login: &LoginRequest, _now: u64) -> Result<AuthGrant, Code> {
        Ok(AuthGrant {
            expires_unix_s: None,
        })
    }
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Peer<C: Connection> {
    reader: C::Reader,
    writer: C::Writer,
}

impl<C: Connection> Peer<C> {
    fn new(conn: C) -> Self {
        let (reader, writer) = conn.split();
        Peer { reader, writer }
    }

    async fn send(&mut self, frame: Frame) {
        self.writer.send(Transmit::Frame(frame)).unwrap();
        self.writer.flush().await.unwrap();
    }

    async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.reader.recv())
            .await
            .expect("a frame within 5 s")
            .unwrap_or(None)
    }

    async fn login(&mut self, device: &str) {
        self.send(Frame::Login {
            id: 1,
            app: "app".into(),
            device: device.into(),
            token: Bytes::from_static(b"t"),
            meta: Metadata::new(),
        })
        .await;
        assert!(matches!(self.recv().await, Some(Frame::LoginAck { .. })));
    }

    /// Sends a ping and waits for its pong: every frame sent before it was handled.
    async fn sync(&mut self, id: u32) {
        self.send(Frame::Ping {
            id,
            payload: Bytes::new(),
        })
        .await;
        match self.recv().await {
            Some(Frame::Pong { id: got, .. }) => assert_eq!(got, id),
            other => panic!("expected Pong, got {other:?}"),
        }
    }
}

/// A report of one transport: `ok` connects at `connect_ms`, `fail` failed connects,
/// `pongs` pings answered in `rtt_ms`, `lost` pings lost.
fn report(
    transport: ReportTransport,
    (ok, fail, connect_ms): (u16, u16, u64),
    (pongs, lost, rtt_ms): (u16, u16, u64),
) -> Bytes {
    let mut e = TransportReport::new(transport);
    (0..ok).for_each(|_| e.record_connect(Some(connect_ms)));
    (0..fail).for_each(|_| e.record_connect(None));
    (0..pongs).for_each(|_| e.record_ping(Some(rtt_ms)));
    (0..lost).for_each(|_| e.record_ping(None));
    QualityReport {
        version: 1,
        transports: vec![e],
    }
    .encode()
    .unwrap()
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn reports_reach_v1_quality_by_bucket_and_transport() {
    let gateway = Gateway::builder()
        .tcp(any())
        .ws(any())
        .http(any())
        .authenticator(Anyone)
        .start()
        .await
        .unwrap();
    let tcp_addr = gateway.local_addr(ListenerKind::Tcp).unwrap();
    let ws_addr = gateway.local_addr(ListenerKind::Ws).unwrap();
    let http = gateway.local_addr(ListenerKind::Http).unwrap();

    // Before any report: an empty table.
    let (status, body) = http_get(http, "/v1/quality").await;
    assert_eq!(status, 200);
    assert_eq!(body["cells"], serde_json::json!([]));
    assert_eq!(body["thresholds"]["weak_rtt_ms"], 300);

    // A report before login ends the session like any other frame.
    let mut early = Peer::new(TcpConnection::connect(tcp_addr, 1 << 20).await.unwrap());
    early
        .send(Frame::QualityReport {
            id: 5,
            network: 1,
            payload: report(ReportTransport::Tcp, (1, 0, 5), (1, 0, 5)),
        })
        .await;
    assert!(matches!(
        early.recv().await,
        Some(Frame::Close {
            code: Code::UnexpectedFrame,
            ..
        })
    ));

    // A wifi client on TCP, good network: 9 of 10 connects at <= 50 ms, no ping lost,
    // round trips of 20 ms.
    let mut good = Peer::new(TcpConnection::connect(tcp_addr, 1 << 20).await.unwrap());
    good.login("good").await;
    good.send(Frame::QualityReport {
        id: 2,
        network: 1,
        payload: report(ReportTransport::Tcp, (9, 1, 40), (100, 0, 20)),
    })
    .await;
    // A malformed body: an Error with malformed_report, and the session goes on.
    good.send(Frame::QualityReport {
        id: 3,
        network: 1,
        payload: Bytes::from_static(&[2, 0]),
    })
    .await;
    match good.recv().await {
        Some(Frame::Error { id: 3, code, .. }) => assert_eq!(code.as_u16(), 320),
        other => panic!("expected Error 320, got {other:?}"),
    }
    good.sync(4).await;

    // A cellular client on WebSocket, weak network: 20 % of pings lost, 1 of 2 connects.
    let mut weak = Peer::new(
        WsConnection::connect(ws_addr, &format!("ws://{ws_addr}/ws"), 1 << 20)
            .await
            .unwrap(),
    );
    weak.login("weak").await;
    weak.send(Frame::QualityReport {
        id: 2,
        network: 2,
        payload: report(ReportTransport::Ws, (1, 1, 800), (8, 2, 400)),
    })
    .await;
    weak.sync(3).await;

    let (status, body) = http_get(http, "/v1/quality").await;
    assert_eq!(status, 200, "{body}");
    let table = &body["table"];
    assert_eq!(table["connect_success_rate"]["good"]["tcp"], 0.9);
    assert_eq!(table["connect_success_rate"]["weak"]["ws"], 0.5);
    assert_eq!(table["connect_latency_ms"]["good"]["tcp"]["p50"], 50);
    assert_eq!(table["connect_latency_ms"]["weak"]["ws"]["p99"], 1000);
    assert_eq!(table["ping"]["weak"]["ws"]["success_rate"], 0.8);
    assert!(table["connect_success_rate"].get("medium").is_none());
    let cells = body["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2, "{body}");
    assert_eq!(cells[0]["bucket"], "weak");
    assert_eq!(cells[0]["connect_attempts"], 2);
    assert_eq!(cells[1]["bucket"], "good");
    assert_eq!(cells[1]["pings"], 100);
    let reports = body["reports"].as_array().unwrap();
    assert!(
        reports
            .iter()
            .any(|r| r["network"] == "cellular" && r["bucket"] == "weak" && r["reports"] == 1),
        "{body}"
    );
    assert!(
        reports
            .iter()
            .any(|r| r["network"] == "wifi" && r["bucket"] == "good" && r["reports"] == 1)
    );
    gateway.shutdown().await;
}
