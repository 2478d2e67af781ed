//! The reference gateway as a user runs it: the real binary on random ports, driven over
//! TCP and HTTP, stopped with SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use longconn_core::{Frame, FrameCodec, Metadata, TokenKey, TokenKeys};
use longconn_gateway::config::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_server::ECHO_BUSINESS;

struct Running {
    child: Child,
    tcp: SocketAddr,
    http: SocketAddr,
    /// Every listener the gateway logged, by label.
    bound: std::collections::HashMap<String, SocketAddr>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Starts the binary on random ports and reads the bound addresses from its log.
fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway binary starts");
    let bound = common::read_listening(&mut child).bound;
    Running {
        child,
        tcp: bound["tcp"],
        http: bound["http"],
        bound,
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(65_536),
        }
    }

    fn send(&mut self, frame: &Frame) {
        let bytes = frame.to_bytes(65_536).unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("frame within 5 s");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).expect("a JSON reply"))
}

/// A one-route HTTP service on a thread: answers every request with `reply`.
fn callback_service(reply: &'static str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the head and the body announced by Content-Length, then answer.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let head_end = loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(at + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < head_end + len {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    addr
}

fn dev_token(device: &str) -> Bytes {
    let keys =
        TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    Bytes::from(keys.mint("demo", device, exp))
}

#[test]
fn serves_echo_and_health_then_drains_on_sigterm() {
    let gw = start(&["--ws", "off", "--quic", "off"]);
    let (status, body) = http_get(gw.http, "/healthz");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    let (status, body) = http_get(gw.http, "/nope");
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "not_found");

    let mut c = Client::connect(gw.tcp);
    c.send(&Frame::Login {
        id: 1,
        app: "demo".into(),
        device: "phone-1".into(),
        token: dev_token("phone-1"),
        meta: Metadata::new(),
    });
    assert!(matches!(c.recv(), Some(Frame::LoginAck { id: 1, .. })));
    c.send(&Frame::Request {
        id: 2,
        business: ECHO_BUSINESS,
        meta: Metadata::new(),
        payload: Bytes::from_static(b"echo me"),
    });
    match c.recv() {
        Some(Frame::Response { id: 2, payload, .. }) => assert_eq!(payload, "echo me"),
        other => panic!("expected Response, got {other:?}"),
    }
    let (_, body) = http_get(gw.http, "/healthz");
    assert!(body.contains("\"connections\":1"), "{body}");

    let mut gw = gw;
    let status = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(matches!(c.recv(), Some(Frame::GoAway { .. })));
    assert!(matches!(
        c.recv(),
        Some(Frame::Close {
            code: longconn_core::Code::GoingAway,
            ..
        })
    ));
    let exit = gw.child.wait().unwrap();
    assert!(exit.success(), "graceful exit: {exit:?}");
}

#[test]
fn bad_settings_exit_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "off",
            "--token-secret",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("token"), "{stderr}");
}

/// Every transport of the default set-up logs a client in: TCP, WebSocket, QUIC (with
/// the generated development certificate, trusted from the file it was written to), and
/// the opt-in TLS and wss listeners.
#[test]
fn every_listener_accepts_a_login() {
    let dir = std::env::temp_dir().join(format!("lc-gw-cert-{}", std::process::id()));
    let gw = start(&[
        "--ws",
        "127.0.0.1:0",
        "--quic",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--wss",
        "127.0.0.1:0",
        "--dev-cert-dir",
        dir.to_str().unwrap(),
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use longconn_core::connection::{Connection, FrameReader, FrameWriter};
        use longconn_transport::cert::Trust;

        async fn login<C: Connection>(conn: C, device: &str) {
            let (mut reader, mut writer) = conn.split();
            writer
                .send(longconn_core::Transmit::Frame(Frame::Login {
                    id: 1,
                    app: "demo".into(),
                    device: device.into(),
                    token: dev_token(device),
                    meta: Metadata::new(),
                }))
                .unwrap();
            writer.flush().await.unwrap();
            let ack = tokio::time::timeout(Duration::from_secs(5), reader.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(
                matches!(ack, Some(Frame::LoginAck { id: 1, .. })),
                "{device}: {ack:?}"
            );
        }

        let trust = Trust::from_pem_file(&dir.join("cert.pem")).unwrap();
        let client_tls = Arc::new(trust.client_config(&[], false).unwrap());
        let ws = gw.bound["ws"];
        login(
            longconn_transport::ws::WsConnection::connect(ws, &format!("ws://{ws}/ws"), 65_536)
                .await
                .unwrap(),
            "over-ws",
        )
        .await;
        let wss = gw.bound["wss"];
        login(
            longconn_transport::ws::WsConnection::connect_tls(
                wss,
                &format!("wss://localhost:{}/ws", wss.port()),
                "localhost",
                client_tls.clone(),
                65_536,
            )
            .await
            .unwrap(),
            "over-wss",
        )
        .await;
        login(
            longconn_transport::tls::TlsConnection::connect(
                gw.bound["tls"],
                "localhost",
                client_tls,
                65_536,
            )
            .await
            .unwrap(),
            "over-tls",
        )
        .await;
        let quic =
            longconn_transport::quic::QuicClient::new("127.0.0.1:0".parse().unwrap(), &trust)
                .unwrap();
        login(
            quic.connect(gw.bound["quic"], "localhost", 65_536)
                .await
                .unwrap(),
            "over-quic",
        )
        .await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The push API and HTTP callback rules of the real binary, configured from a file.
#[test]
fn push_api_and_callback_rules_from_the_config_file() {
    let service = callback_service("from the callback");
    let dir = std::env::temp_dir().join(format!("lc-gw-push-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[groups]
max_groups_per_connection = 1
[[backends]]
name = "orders"
url = "http://{service}/rpc"
businesses = [7]
timeout_ms = 2000
"#
        ),
    )
    .unwrap();
    let gw = start(&[
        "--ws",
        "off",
        "--quic",
        "off",
        "--config",
        path.to_str().unwrap(),
    ]);
    let mut c = Client::connect(gw.tcp);
    c.send(&Frame::Login {
        id: 1,
        app: "demo".into(),
        device: "phone-1".into(),
        token: dev_token("phone-1"),
        meta: Metadata::new(),
    });
    assert!(matches!(c.recv(), Some(Frame::LoginAck { id: 1, .. })));

    // Business 7 goes to the callback, 1 still echoes, 8 has no rule.
    for (id, business, expect) in [(2, 7, "from the callback"), (3, 1, "ping")] {
        c.send(&Frame::Request {
            id,
            business,
            meta: Metadata::new(),
            payload: Bytes::from_static(b"ping"),
        });
        match c.recv() {
            Some(Frame::Response { payload, .. }) => assert_eq!(payload, expect),
            other => panic!("business {business}: {other:?}"),
        }
    }
    c.send(&Frame::Request {
        id: 4,
        business: 8,
        meta: Metadata::new(),
        payload: Bytes::new(),
    });
    assert!(matches!(
        c.recv(),
        Some(Frame::Error {
            id: 4,
            code: longconn_core::Code::UnknownBusiness,
            ..
        })
    ));

    // Groups: one join allowed by the file, the second refused with group_limit.
    c.send(&Frame::JoinGroup {
        id: 5,
        group: "room".into(),
        since: None,
    });
    assert!(matches!(c.recv(), Some(Frame::JoinAck { id: 5, .. })));
    c.send(&Frame::JoinGroup {
        id: 6,
        group: "other".into(),
        since: None,
    });
    assert!(matches!(
        c.recv(),
        Some(Frame::Error {
            id: 6,
            code: longconn_core::Code::GroupLimit,
            ..
        })
    ));

    let (status, reply) = http_post(
        gw.http,
        "/v1/push/groups/room",
        r#"{"business":9,"payload_b64":"aGk="}"#,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["members"], 1);
    assert_eq!(reply["seq"], 1);
    match c.recv() {
        Some(Frame::Push {
            business: 9,
            group: Some(group),
            seq: Some(1),
            payload,
            ..
        }) => {
            assert_eq!(group.as_str(), "room");
            assert_eq!(payload, "hi");
        }
        other => panic!("expected the group push, got {other:?}"),
    }
    let (status, reply) = http_post(
        gw.http,
        "/v1/push/devices",
        r#"{"app":"demo","business":9,"devices":["phone-1","tablet"],"payload_b64":"eW8="}"#,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        serde_json::json!({"queued": 1, "offline": ["tablet"], "dropped": [], "unknown": []})
    );
    assert!(matches!(c.recv(), Some(Frame::Push { group: None, .. })));
    let (_, body) = http_get(gw.http, "/v1/groups/room");
    assert!(body.contains("\"members\":1"), "{body}");
    let (status, reply) = http_post(gw.http, "/v1/push/devices", "{oops");
    assert_eq!((status, reply["error"].as_str()), (400, Some("bad_json")));

    let (status, reply) = http_post(
        gw.http,
        "/v1/kick",
        r#"{"app":"demo","device":"phone-1","reason":"bye"}"#,
    );
    assert_eq!((status, reply["kicked"].as_bool()), (200, Some(true)));
    assert!(matches!(
        c.recv(),
        Some(Frame::Kick {
            code: longconn_core::Code::Kicked,
            ..
        })
    ));
}

#[test]
fn a_bad_backend_rule_exits_with_a_message() {
    let dir = std::env::temp_dir().join(format!("lc-gw-badrule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        "[[backends]]\nname = \"x\"\nurl = \"https://example.com/\"\nbusinesses = [7]\n\
         ca_file = \"/nonexistent/longconn-ca.pem\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "off",
            "--ws",
            "off",
            "--quic",
            "off",
        ])
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backend `x`"), "{stderr}");
    // An https callback is fine; its unreadable CA file is what is named.
    assert!(
        stderr.contains("ca_file /nonexistent/longconn-ca.pem"),
        "{stderr}"
    );
}
