//! Fuzzes the WebSocket listener's upgrade path: the input is what a client sends (the
//! HTTP upgrade request and whatever follows it: WebSocket frames, garbage), written in
//! chunks over an in-memory `tokio::io::duplex` stream into the real server handshake
//! (`longconn_transport::ws::accept_stream`, the code `WsAcceptor` runs per connection:
//! request parsing, the request-head limit, path and `Origin` checks, the upgrade). An
//! accepted connection's frames are then read until the stream ends. Nothing may panic,
//! and the handshake must accept or refuse once the client has stopped sending: it may
//! never wait forever (time is paused, so a hang shows up at once as the timeout).
//!
//! Input layout: byte 0 = flags (bit 0: an `Origin` allowlist is set; bit 1: the request
//! head, up to the first blank line, is written on its own), byte 1 = chunk size (0: one
//! write), the rest = the client's bytes.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run ws_upgrade`.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use longconn_core::connection::{Connection, FrameReader};
use longconn_transport::TransportConfig;
use longconn_transport::ws::accept_stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Small limits, so that the request-head and frame-size limits are reached often.
fn config() -> &'static TransportConfig {
    static CONFIG: OnceLock<TransportConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        TransportConfig::builder()
            .max_frame_size(1024)
            .ws_max_request_head(1024)
            .build()
            .expect("valid fuzz transport config")
    })
}

/// Far longer than anything in memory takes; with the clock paused it only elapses
/// when every task is blocked, that is when the handshake would wait forever.
const DEADLINE: Duration = Duration::from_secs(60);

/// The client's writes: the head on its own (if asked), then chunks of `chunk` bytes.
fn segments(data: &[u8], head_alone: bool, chunk: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    if head_alone {
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            out.push(&rest[..end + 4]);
            rest = &rest[end + 4..];
        }
    }
    if chunk == 0 {
        if !rest.is_empty() {
            out.push(rest);
        }
    } else {
        out.extend(rest.chunks(chunk));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (flags, chunk, client_bytes) = match data {
        [flags, chunk, rest @ ..] => (*flags, *chunk as usize, rest),
        _ => return,
    };
    let origins = (flags & 1 != 0).then(|| vec!["https://App.example/".to_owned()]);
    let writes = segments(client_bytes, flags & 2 != 0, chunk);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(4096);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let writes: Vec<Vec<u8>> = writes.into_iter().map(<[u8]>::to_vec).collect();
        // The client: sends its chunks, letting the server run between them, then
        // closes its sending side; the server's answer is read and dropped.
        tokio::spawn(async move {
            for write in writes {
                if client_write.write_all(&write).await.is_err() {
                    return;
                }
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            }
            let _ = client_write.shutdown().await;
        });
        tokio::spawn(async move {
            let mut sink = [0u8; 1024];
            while matches!(client_read.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let served = tokio::time::timeout(DEADLINE, async {
            let Ok(conn) = accept_stream(server, peer, config(), origins).await else {
                return;
            };
            assert_eq!(conn.peer_addr(), Some(peer));
            let (mut reader, _writer) = conn.split();
            // Every frame the client managed to send, until the stream ends or fails.
            while let Ok(Some(_frame)) = reader.recv().await {}
        })
        .await;
        assert!(served.is_ok(), "the WebSocket handshake or reader hung");
    });
});
