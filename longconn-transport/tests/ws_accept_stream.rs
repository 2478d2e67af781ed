//! `ws::accept_stream`, the server handshake over any byte stream (the entry point of the
//! ws_upgrade fuzz target): it runs the same checks as the listener, in memory.
#![cfg(feature = "ws")]

use std::net::SocketAddr;

use longconn_core::connection::{Connection, FrameReader};
use longconn_transport::TransportConfig;
use longconn_transport::ws::accept_stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                           Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Sends `request`, closes the client's sending side; returns whether the handshake
/// accepted and the answer's status line.
async fn handshake(request: String, origins: Option<Vec<String>>) -> (bool, String) {
    let (mut client, server) = tokio::io::duplex(4096);
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let config = TransportConfig::default();
    let accepted = match accept_stream(server, peer, &config, origins).await {
        Ok(conn) => {
            assert_eq!(conn.peer_addr(), Some(peer));
            client.shutdown().await.unwrap();
            // The client sent no frame and closed: the stream ends or fails, no frame.
            let (mut reader, _writer) = conn.split();
            assert!(!matches!(reader.recv().await, Ok(Some(_))));
            true
        }
        Err(_) => false,
    };
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    (accepted, answer.lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn an_upgrade_over_a_duplex_stream_is_accepted_and_refusals_are_answered() {
    let ok = format!("GET /ws HTTP/1.1\r\nHost: x\r\n{KEY_HEADERS}\r\n");
    let (accepted, status) = handshake(ok, None).await;
    assert!(accepted);
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");

    let other = format!("GET /other HTTP/1.1\r\nHost: x\r\n{KEY_HEADERS}\r\n");
    assert_eq!(
        handshake(other, None).await,
        (false, "HTTP/1.1 404 Not Found".to_owned())
    );

    let evil = format!("GET /ws HTTP/1.1\r\nOrigin: https://evil.example\r\n{KEY_HEADERS}\r\n");
    let allow = Some(vec!["https://App.example/".to_owned()]);
    assert_eq!(
        handshake(evil, allow.clone()).await,
        (false, "HTTP/1.1 403 Forbidden".to_owned())
    );
    // The allowlist is normalized as `WsAcceptor::allow_origins` does it.
    let good = format!("GET /ws HTTP/1.1\r\nOrigin: https://app.example\r\n{KEY_HEADERS}\r\n");
    assert!(handshake(good, allow).await.0);

    let garbage = "\u{0}\u{1}not http\r\n\r\n".to_owned();
    assert_eq!(
        handshake(garbage, None).await,
        (false, "HTTP/1.1 400 Bad Request".to_owned())
    );
}
