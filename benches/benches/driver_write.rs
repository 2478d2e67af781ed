//! The driver's write path: what a connection's driver does with the pushes it took from
//! its inbox, `FrameWriter::send` of each shared encoded frame (100-byte payload, the
//! fan-out bench's message) and one `FrameWriter::flush`, through the TCP transport's
//! writer (the gateway's, `TcpConnection`).
//!
//! - `tcp/{1,16}`: over a loopback TCP connection whose other end a thread reads and
//!   discards: one frame per flush (a member woken once per publish) and 16 (a member
//!   that fell behind by 16 publishes, written in one go). Includes the `sendto` and the
//!   kernel's loopback delivery, which dominate the gateway's fan-out profile
//!   (docs/BENCHMARKS.md "Performance (issue 17)" D).
//! - `sink/{1,16}`: the same writer over `tokio::io::sink()`: only the user-space part
//!   (buffering, the write loop, the buffer's release after a flush), which is what
//!   code changes to the writer move.
//! - `ws/{1,16}`: `tcp/{1,16}` over a WebSocket connection: the server side's joined
//!   connection as the driver holds it (`Connection::join`), each frame one binary
//!   message.
//!
//! Throughput is in frames. Run: `cargo bench -p longconn-benches --bench driver_write`.
//! Figures go to docs/BENCHMARKS.md.

use std::io::{Read, Write};
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use longconn_core::Transmit;
use longconn_core::connection::{Connection, FrameWriter};
use longconn_server::PushMessage;
use longconn_transport::stream::StreamWriter;
use longconn_transport::tcp::TcpConnection;

const MAX_FRAME: usize = 64 * 1024;

/// The encoded push frame a fan-out shares between its members.
fn frame() -> Bytes {
    PushMessage::new(7, Bytes::from(vec![b'x'; 100]))
        .frame()
        .to_bytes(MAX_FRAME)
        .unwrap()
}

/// Sends `frames` copies of `frame` and flushes them.
async fn write_batch<W: FrameWriter>(writer: &mut W, frame: &Bytes, frames: usize) {
    for _ in 0..frames {
        writer.send(Transmit::Encoded(frame.clone())).unwrap();
    }
    writer.flush().await.unwrap();
}

/// A loopback TCP connection: the server's end (non-blocking, for tokio) and its peer
/// address. A thread sends `hello` from the client's end, then reads and discards
/// everything until the server's end is dropped.
fn loopback(hello: &'static [u8]) -> (std::net::TcpStream, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let (server, peer) = listener.accept().unwrap();
    std::thread::spawn(move || {
        client.write_all(hello).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
    });
    server.set_nonblocking(true).unwrap();
    (server, peer)
}

/// A loopback TCP connection's server-side writer.
fn tcp_writer(runtime: &tokio::runtime::Runtime) -> impl FrameWriter {
    let (server, peer) = loopback(b"");
    let _entered = runtime.enter();
    let stream = tokio::net::TcpStream::from_std(server).unwrap();
    let (_reader, writer) = TcpConnection::from_stream(stream, peer, MAX_FRAME)
        .unwrap()
        .split();
    writer
}

/// A loopback WebSocket connection's server side, joined as the driver holds it.
fn ws_joined(runtime: &tokio::runtime::Runtime) -> impl FrameWriter {
    let (server, peer) = loopback(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::from_std(server).unwrap();
        // As `WsAcceptor` does.
        stream.set_nodelay(true).unwrap();
        let config = longconn_transport::TransportConfig::builder()
            .max_frame_size(MAX_FRAME)
            .build()
            .unwrap();
        longconn_transport::ws::accept_stream(stream, peer, &config, None)
            .await
            .unwrap()
            .join()
    })
}

fn driver_write(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let frame = frame();
    let mut group = c.benchmark_group("driver_write");
    for frames in [1usize, 16] {
        group.throughput(Throughput::Elements(frames as u64));
        let mut writer = tcp_writer(&runtime);
        group.bench_function(format!("tcp/{frames}"), |b| {
            b.iter(|| runtime.block_on(write_batch(&mut writer, &frame, frames)))
        });
        let mut sink = StreamWriter::new(tokio::io::sink(), MAX_FRAME);
        group.bench_function(format!("sink/{frames}"), |b| {
            b.iter(|| runtime.block_on(write_batch(&mut sink, &frame, frames)))
        });
        let mut ws = ws_joined(&runtime);
        group.bench_function(format!("ws/{frames}"), |b| {
            b.iter(|| runtime.block_on(write_batch(&mut ws, &frame, frames)))
        });
    }
    group.finish();
}

criterion_group!(benches, driver_write);
criterion_main!(benches);
