//! The raw client's login, lean enough that the load side of a login run costs less
//! than the gateway it measures (issue 17 item 4b, docs/BENCHMARKS.md "Logins: the load
//! side's CPU per login").
//!
//! What a login sends is prepared before the first connect ([`LoginFrames`]): the
//! token (HMAC-SHA256 and base64, ~1.3 µs) and the encoded `Login` frame. The gateway
//! still checks every token; a real device mints its token on its own CPU, not on the
//! load generator's. Then each login is:
//!
//! 1. a non-blocking socket (`SOCK_NONBLOCK` at creation: no `fcntl`), bound to its
//!    source address when there is one, and `connect`;
//! 2. the `Login` frame sent at once on the same socket. On loopback the handshake is
//!    complete when `connect` returns (the kernel runs both ends in the connecting
//!    thread), so the send succeeds; while a real network still has the SYN out, it
//!    fails with `EAGAIN` and the frame goes out once tokio reports the socket
//!    writable. Either way no wake-up is spent waiting for "connected", and no
//!    `getsockopt(SO_ERROR)`: a refused connect shows as the first send's or read's
//!    error;
//! 3. the socket handed to tokio, and the `LoginAck` read.
//!
//! `TCP_NODELAY` is only set when asked (request phases): a fresh connection's first
//! segment is never held back by Nagle, so a login-and-hold connection does not need it.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use longconn_core::Frame;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::fleet::LoadCtx;
use super::peer::{RAW_CODEC, raw_login_frame, raw_next, raw_pong};

/// The encoded `Login` frame of each connection of a run, minted before it starts.
pub(crate) struct LoginFrames {
    /// `(global index, frame)`, in the order the connections are made; `Err` when the
    /// frame could not be encoded (a device id or app over the frame size limit).
    pub(crate) frames: Vec<(u32, Result<Bytes, String>)>,
}

impl LoginFrames {
    /// The frames for `indices`, each with a token valid for a day.
    pub(crate) fn new(ctx: &LoadCtx, indices: impl IntoIterator<Item = u32>) -> LoginFrames {
        let expires = ctx.token_expiry();
        let mut out = BytesMut::new();
        let frames = indices
            .into_iter()
            .map(|index| {
                let device = ctx.device(index);
                let token = ctx.token_until(&device, expires);
                let encoded = raw_login_frame(&ctx.common.app, &device, token)
                    .encode(&mut out, RAW_CODEC.max_frame_size())
                    .map(|()| out.split().freeze())
                    .map_err(|e| e.to_string());
                (index, encoded)
            })
            .collect();
        LoginFrames { frames }
    }
}

/// Connects to `addr` (from `from`), sends the prepared `login` frame and waits for its
/// `LoginAck`, answering pings meanwhile. Returns the stream and its read buffer (which
/// may already hold the frames that followed the ack).
///
/// # Errors
/// The socket calls failed, the connection was refused or closed, or the gateway
/// answered the login with an error, kick or close.
pub(crate) async fn login(
    addr: SocketAddr,
    from: Option<IpAddr>,
    login: &[u8],
    nodelay: bool,
) -> Result<(TcpStream, BytesMut), String> {
    let err = |e: std::io::Error| e.to_string();
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(err)?;
    if nodelay {
        socket.set_tcp_nodelay(true).map_err(err)?;
    }
    if let Some(ip) = from {
        socket.bind(&SocketAddr::new(ip, 0).into()).map_err(err)?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e.to_string()),
    }
    // Optimistic send: see the module docs.
    let sent = match socket.send(login) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e.to_string()),
    };
    let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket)).map_err(err)?;
    if sent < login.len() {
        stream.write_all(&login[sent..]).await.map_err(err)?;
    }
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match raw_next(&mut stream, &mut buf).await? {
            Frame::LoginAck { .. } => return Ok((stream, buf)),
            Frame::Ping { id, payload } => raw_pong(&mut stream, id, payload).await?,
            Frame::Error { code, .. } | Frame::Kick { code, .. } | Frame::Close { code, .. } => {
                return Err(format!("raw login refused: {code:?}"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A refused connect is an error (not a hang), found without `SO_ERROR`.
    #[tokio::test]
    async fn refused_connect_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let got = login(addr, None, b"x", false).await;
        assert!(got.is_err(), "{:?}", got.map(|_| ()));
    }

    /// The frame arrives whole, pings before the ack are answered, bytes after the
    /// ack stay in the buffer, and an `Error` answer is a refusal.
    #[tokio::test]
    async fn sends_the_frame_and_reads_the_ack() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frame = vec![0xabu8; 300];
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 300];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, vec![0xabu8; 300]);
            let mut out = BytesMut::new();
            Frame::Ping {
                id: 4,
                payload: Bytes::new(),
            }
            .encode(&mut out, 1 << 16)
            .unwrap();
            s.write_all(&out).await.unwrap();
            let mut buf = BytesMut::new();
            let pong = loop {
                if let Some(f) = {
                    let mut c = RAW_CODEC;
                    c.decode(&mut buf)
                }
                .unwrap()
                {
                    break f;
                }
                s.read_buf(&mut buf).await.unwrap();
            };
            assert!(matches!(pong, Frame::Pong { id: 4, .. }), "{pong:?}");
            out.clear();
            Frame::LoginAck {
                id: 1,
                conn_id: 7,
                heartbeat_ms: 30_000,
                expires_at_ms: None,
            }
            .encode(&mut out, 1 << 16)
            .unwrap();
            out.extend_from_slice(b"tail");
            s.write_all(&out).await.unwrap();
            s
        });
        let (_stream, buf) = login(addr, Some("127.0.0.1".parse().unwrap()), &frame, true)
            .await
            .unwrap();
        assert_eq!(&buf[..], b"tail");
        drop(server.await.unwrap());
    }
}
