//! The WebSocket Origin allowlist from the gateway's settings (issue 16 item 5).

use std::net::SocketAddr;

use clap::Parser;
use longconn_gateway::{Cli, Gateway, GatewaySettings, ListenerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn status(addr: SocketAddr, origin: Option<&str>) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         {origin}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

async fn gateway(extra: &[&str]) -> Gateway {
    let args = ["gateway", "--tcp", "off", "--quic", "off", "--http", "off"];
    let args = args
        .iter()
        .chain(["--ws", "127.0.0.1:0"].iter())
        .chain(extra);
    Gateway::start(GatewaySettings::resolve(Cli::try_parse_from(args).unwrap()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn listed_origins_only_and_native_clients_always() {
    let g = gateway(&["--ws-allowed-origin", "https://app.example"]).await;
    let ws = g.local_addr(ListenerKind::Ws).unwrap();
    assert_eq!(
        status(ws, Some("https://app.example")).await,
        "HTTP/1.1 101"
    );
    assert_eq!(
        status(ws, Some("https://evil.example")).await,
        "HTTP/1.1 403"
    );
    assert_eq!(status(ws, None).await, "HTTP/1.1 101");
    g.shutdown().await;
}

#[tokio::test]
async fn a_loopback_listener_allows_any_origin_by_default() {
    let g = gateway(&[]).await;
    let ws = g.local_addr(ListenerKind::Ws).unwrap();
    assert_eq!(
        status(ws, Some("https://evil.example")).await,
        "HTTP/1.1 101"
    );
    g.shutdown().await;
}
