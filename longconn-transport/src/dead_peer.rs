//! Transport-level dead-peer detection for client connections: how a client notices a
//! gateway that vanished without closing (killed, host gone, network cut) within a
//! stated bound, the dead-peer timeout `T`.
//!
//! - TCP (and TLS, WebSocket over it): TCP keep-alive after `T / 2` idle, then probes
//!   every `T / 6` (at least 1 s), 3 of them, and `TCP_USER_TIMEOUT = T` (Linux: data
//!   unacknowledged for `T` ends the connection even while keep-alive would wait).
//! - QUIC: keep-alive packets every `T / 3` and a maximum idle timeout of `T` (the
//!   smaller of both sides' idle timeouts applies, so the gateway's longer one does
//!   not matter).
//!
//! The client session adds its own probe on top (`ClientSessionConfig::dead_peer_timeout`
//! in longconn-core): a `Ping` after `T / 2` without a received frame, which also
//! covers proxies that keep the transport alive for a dead backend.

use std::time::Duration;

/// Keep-alive probes TCP sends before giving up.
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Sets TCP keep-alive and `TCP_USER_TIMEOUT` on a client socket for the dead-peer
/// timeout `timeout` (see the [module docs](self)).
///
/// # Errors
/// The `setsockopt` errors.
#[cfg(feature = "tcp")]
pub fn tcp(stream: &tokio::net::TcpStream, timeout: Duration) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let idle = (timeout / 2).max(Duration::from_secs(1));
    let interval = (timeout / 6).max(Duration::from_secs(1));
    #[allow(unused_mut)]
    let mut keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    {
        keepalive = keepalive.with_retries(TCP_KEEPALIVE_RETRIES);
    }
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(timeout))?;
    Ok(())
}

/// The quinn transport settings of a client endpoint for the dead-peer timeout
/// `timeout`: [`crate::quic::transport_config`] with keep-alives every `timeout / 3` and
/// a maximum idle timeout of `timeout`.
#[cfg(feature = "quic")]
pub fn quic_transport(timeout: Duration) -> quinn::TransportConfig {
    let mut transport = crate::quic::transport_config();
    transport
        .keep_alive_interval(Some(timeout / 3))
        .max_idle_timeout(quinn::IdleTimeout::try_from(timeout).ok());
    transport
}

#[cfg(all(test, feature = "tcp"))]
mod tests {
    use super::*;

    /// The options reach the socket: keep-alive on, its idle time, and (Linux) the
    /// user timeout.
    #[tokio::test]
    async fn tcp_options_are_set_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(!socket.keepalive().unwrap());
        tcp(&stream, Duration::from_secs(10)).unwrap();
        assert!(socket.keepalive().unwrap());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(5));
            assert_eq!(
                socket.tcp_keepalive_retries().unwrap(),
                TCP_KEEPALIVE_RETRIES
            );
            assert_eq!(
                socket.tcp_user_timeout().unwrap(),
                Some(Duration::from_secs(10))
            );
        }
    }
}
