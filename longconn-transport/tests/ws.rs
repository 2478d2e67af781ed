//! WebSocket-specific behaviour: path, text messages, messages that are not one frame.
#![cfg(feature = "ws")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use longconn_core::runtime::{EchoHandler, Listener, Server, ServerConfig};
use longconn_core::{Code, Frame, FrameCodec, TokenKey, TokenKeys};
use longconn_transport::ws::WsAcceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const MAX: usize = 16 * 1024;

fn start() -> SocketAddr {
    let keys = TokenKeys::new(TokenKey::new("k", b"ws-test-secret-0123456").unwrap());
    let server = Server::new(
        ServerConfig::default(),
        Arc::new(keys),
        Arc::new(EchoHandler),
    );
    let acceptor = WsAcceptor::bind("127.0.0.1:0".parse().unwrap(), MAX, false).unwrap();
    let addr = acceptor.local_addr().unwrap();
    server.serve(acceptor);
    addr
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn client(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .unwrap();
    ws
}

/// Reads until the server's WebSocket close; returns the longconn frames before it and
/// the close status.
async fn until_close(ws: &mut Client) -> (Vec<Frame>, Option<CloseCode>) {
    let codec = FrameCodec::new(MAX);
    let mut frames = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("server answers within 5 s");
        match next {
            Some(Ok(Message::Binary(bytes))) => frames.push(codec.decode_message(bytes).unwrap()),
            Some(Ok(Message::Close(frame))) => return (frames, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (frames, None),
        }
    }
}

fn close_code(frames: &[Frame]) -> Option<Code> {
    match frames.last() {
        Some(Frame::Close { code, .. }) => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn text_message_closes_with_1003() {
    let addr = start();
    let mut ws = client(addr).await;
    ws.send(Message::text("hello")).await.unwrap();
    let (frames, status) = until_close(&mut ws).await;
    assert_eq!(close_code(&frames), Some(Code::MalformedFrame));
    assert_eq!(status, Some(CloseCode::Unsupported));
}

#[tokio::test]
async fn two_frames_in_one_message_close_with_1002() {
    let addr = start();
    let mut ws = client(addr).await;
    let ping = Frame::Ping {
        id: 1,
        payload: bytes::Bytes::new(),
    }
    .to_bytes(MAX)
    .unwrap();
    let mut two = ping.to_vec();
    two.extend_from_slice(&ping);
    ws.send(Message::binary(two)).await.unwrap();
    let (frames, status) = until_close(&mut ws).await;
    assert_eq!(close_code(&frames), Some(Code::MalformedFrame));
    assert_eq!(status, Some(CloseCode::Protocol));
}

#[tokio::test]
async fn half_a_frame_closes_with_1002() {
    let addr = start();
    let mut ws = client(addr).await;
    ws.send(Message::binary(vec![0x4c, 0x43, 0x01, 0x03, 0, 0]))
        .await
        .unwrap();
    let (frames, status) = until_close(&mut ws).await;
    assert_eq!(close_code(&frames), Some(Code::MalformedFrame));
    assert_eq!(status, Some(CloseCode::Protocol));
}

#[tokio::test]
async fn other_paths_get_404() {
    let addr = start();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("not_found"), "{response}");
}
