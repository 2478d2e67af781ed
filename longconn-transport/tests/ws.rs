//! WebSocket-specific behaviour: path, text messages, messages that are not one frame.
#![cfg(feature = "ws")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use longconn_core::Listener;
use longconn_core::{Code, Frame, FrameCodec, TokenKey, TokenKeys};
use longconn_server::{Router, Server, ServerConfig};
use longconn_transport::ws::WsAcceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const MAX: usize = 16 * 1024;

fn start() -> SocketAddr {
    let keys = TokenKeys::new(TokenKey::new("k", b"ws-test-secret-0123456").unwrap());
    let server = Server::new(
        ServerConfig::default(),
        Arc::new(keys),
        Arc::new(Router::echo()),
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
    assert_eq!(close_code(&frames), Some(Code::UnsupportedMessage));
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

/// Sends `request` on a raw TCP connection and returns everything the server sends
/// before it closes.
async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("the server answers and closes within 5 s")
        .unwrap();
    response
}

const UPGRADE_HEADERS: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn other_paths_get_404() {
    let addr = start();
    let response = raw_http(
        addr,
        format!("GET /chat HTTP/1.1\r\n{UPGRADE_HEADERS}").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains(r#""error":"not_found""#), "{response}");
    // Without an upgrade too (a browser opening the address).
    let response = raw_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

#[tokio::test]
async fn a_request_that_is_not_an_upgrade_gets_400() {
    let addr = start();
    let response = raw_http(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains(r#""error":"bad_request""#), "{response}");
    assert!(response.contains("Sec-WebSocket-Version: 13"), "{response}");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{response}"
    );
    // A wrong WebSocket version, a POST and a request that is not HTTP.
    let old_version = format!("GET /ws HTTP/1.1\r\n{UPGRADE_HEADERS}")
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    for request in [
        old_version.as_bytes(),
        b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello\r\n\r\n",
    ] {
        let response = raw_http(addr, request).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    }
}

#[tokio::test]
async fn a_valid_upgrade_with_a_query_string_is_accepted() {
    let addr = start();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws?v=1"), stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::binary(
        Frame::Ping {
            id: 7,
            payload: bytes::Bytes::new(),
        }
        .to_bytes(MAX)
        .unwrap(),
    ))
    .await
    .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    match pong {
        Some(Ok(Message::Binary(bytes))) => assert!(matches!(
            FrameCodec::new(MAX).decode_message(bytes).unwrap(),
            Frame::Pong { id: 7, .. }
        )),
        other => panic!("expected a Pong, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_close_is_answered() {
    let addr = start();
    let mut ws = client(addr).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let (frames, status) = until_close(&mut ws).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(status, Some(CloseCode::Normal));
}

#[test]
fn close_statuses_follow_the_spec() {
    use longconn_transport::ws::close_status;
    let cases = [
        (Code::Normal, 1000),
        (Code::GoingAway, 1001),
        (Code::Draining, 1001),
        (Code::BadMagic, 1002),
        (Code::UnsupportedVersion, 1002),
        (Code::MalformedFrame, 1002),
        (Code::UnexpectedFrame, 1002),
        (Code::UnsupportedMessage, 1003),
        (Code::FrameTooLarge, 1009),
        (Code::Replaced, 4002),
        (Code::Kicked, 4003),
        (Code::LoginTimeout, 4004),
        (Code::IdleTimeout, 4005),
        (Code::InvalidToken, 4200),
        (Code::Internal, 4500),
        (Code::Other(999), 4999),
        (Code::Other(60_000), 4999),
    ];
    for (code, status) in cases {
        assert_eq!(u16::from(close_status(code)), status, "{code}");
    }
}

#[tokio::test]
async fn a_websocket_ping_from_a_client_is_answered_with_its_payload() {
    let addr = start();
    let mut ws = client(addr).await;
    ws.send(Message::Ping(bytes::Bytes::from_static(b"p1")))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    match answer {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"p1"),
        other => panic!("expected a WebSocket pong, got {other:?}"),
    }
}

/// The client side of `WsConnection` against tungstenite's server: the upgrade, frames
/// both ways, a ping answered, and the server's close ending the stream.
#[tokio::test]
async fn the_client_side_speaks_to_tungstenites_server() {
    use longconn_core::Transmit;
    use longconn_core::connection::{Connection, FrameReader, FrameWriter};
    use longconn_transport::ws::WsConnection;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let push = Frame::Ping {
        id: 21,
        payload: bytes::Bytes::from_static(b"from the server"),
    };
    let wire = push.to_bytes(MAX).unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        ws.send(Message::Ping(bytes::Bytes::from_static(b"alive?")))
            .await
            .unwrap();
        ws.send(Message::binary(wire)).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match ws.next().await {
                Some(Ok(Message::Pong(payload))) => seen.push(format!("pong {payload:?}")),
                Some(Ok(Message::Binary(bytes))) => {
                    let frame = FrameCodec::new(MAX).decode_message(bytes).unwrap();
                    seen.push(format!("frame {frame:?}"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        ws.close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "restart".into(),
        }))
        .await
        .unwrap();
        seen
    });

    let conn = WsConnection::connect(addr, &format!("ws://{addr}/ws"), MAX)
        .await
        .unwrap();
    let (mut reader, mut writer) = conn.split();
    let received = tokio::time::timeout(Duration::from_secs(5), reader.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, Some(push));
    let answer = Frame::Pong {
        id: 21,
        payload: bytes::Bytes::new(),
    };
    writer.send(Transmit::Frame(answer.clone())).unwrap();
    writer.flush().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), reader.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, None, "the server's close ends the stream");
    let seen = server.await.unwrap();
    assert_eq!(seen[0], "pong b\"alive?\"");
    assert_eq!(seen[1], format!("frame {answer:?}"));
}

#[tokio::test]
async fn a_client_upgrade_answered_with_404_is_a_status_error() {
    use longconn_transport::ws::WsConnection;
    let addr = start();
    let err = WsConnection::connect(addr, &format!("ws://{addr}/elsewhere"), MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            longconn_transport::Error::WebSocketStatus { status: 404 }
        ),
        "{err}"
    );
}

/// A one-shot server that reads the upgrade request and answers with `extra_headers`
/// in a valid 101 response, followed by `after` in the same write.
async fn raw_upgrade_server(extra_headers: &'static str, after: Vec<u8>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            request.push(byte[0]);
        }
        let request = String::from_utf8(request).unwrap();
        let key = request
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra_headers}\r\n"
        )
        .into_bytes();
        response.extend_from_slice(&after);
        stream.write_all(&response).await.unwrap();
        // Keep the connection open until the client is done.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    addr
}

/// RFC 6455, section 4.1: a subprotocol or an extension the client did not offer fails
/// the connection.
#[tokio::test]
async fn a_client_upgrade_answered_with_what_was_not_offered_is_refused() {
    use longconn_transport::ws::WsConnection;
    for headers in [
        "Sec-WebSocket-Protocol: chat\r\n",
        // An extension in a second field (the first says none).
        "Sec-WebSocket-Extensions:\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
    ] {
        let addr = raw_upgrade_server(headers, Vec::new()).await;
        let err = WsConnection::connect(addr, &format!("ws://{addr}/ws"), MAX)
            .await
            .unwrap_err();
        assert!(
            matches!(err, longconn_transport::Error::WebSocket(_)),
            "{headers}: {err}"
        );
    }
}

/// A frame the server sends in the same segment as its 101 response is not lost.
#[tokio::test]
async fn a_frame_right_after_the_response_head_is_received() {
    use longconn_core::connection::{Connection, FrameReader};
    use longconn_transport::ws::WsConnection;
    let push = Frame::Ping {
        id: 22,
        payload: bytes::Bytes::from_static(b"early"),
    };
    let message = push.to_bytes(MAX).unwrap();
    // An unmasked binary frame, as a server sends it.
    let mut frame = vec![0x82, message.len() as u8];
    frame.extend_from_slice(&message);
    let addr = raw_upgrade_server("", frame).await;
    let conn = WsConnection::connect(addr, &format!("ws://{addr}/ws"), MAX)
        .await
        .unwrap();
    let (mut reader, _writer) = conn.split();
    let received = tokio::time::timeout(Duration::from_secs(5), reader.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, Some(push));
}
