//! One [`Fixture`] per transport.

use std::net::SocketAddr;

use longconn_core::connection::memory::{self, MemoryConnection};
use longconn_server::Server;
use longconn_transport::tcp::{TcpAcceptor, TcpConnection};

use crate::harness::{Fixture, MAX_FRAME, Timers};

/// In-process pairs handed to `Server::serve_connection`. No real I/O, so its run is on
/// tokio's paused clock and uses long timers at no cost.
pub struct Memory {
    server: Server,
}

impl Fixture for Memory {
    type Conn = MemoryConnection;
    const TIMERS: Timers = Timers::PAUSED;

    async fn start(server: &Server) -> Self {
        Memory {
            server: server.clone(),
        }
    }

    async fn connect(&self) -> MemoryConnection {
        // A small channel, so a client that does not read fills it quickly.
        let (server_side, client_side) = memory::pair(16, MAX_FRAME);
        assert!(self.server.serve_connection(server_side), "server refused");
        client_side
    }
}

/// Plain TCP on a random loopback port.
pub struct Tcp {
    addr: SocketAddr,
}

impl Fixture for Tcp {
    type Conn = TcpConnection;

    async fn start(server: &Server) -> Self {
        let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), MAX_FRAME, false).unwrap();
        let addr = longconn_server::Listener::local_addr(&acceptor).unwrap();
        server.serve(acceptor);
        Tcp { addr }
    }

    async fn connect(&self) -> TcpConnection {
        TcpConnection::connect(self.addr, MAX_FRAME).await.unwrap()
    }
}

/// A generated certificate: the server's TLS config and a client config that trusts
/// exactly that certificate.
#[cfg(feature = "tls")]
fn dev_tls() -> (
    std::sync::Arc<rustls::ServerConfig>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    use longconn_transport::cert::{TlsIdentity, Trust};
    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let server = identity.server_config(&[], false).unwrap();
    let client = Trust::Roots(vec![identity.leaf().clone()])
        .client_config(&[], false)
        .unwrap();
    (std::sync::Arc::new(server), std::sync::Arc::new(client))
}

/// TLS over TCP with a generated certificate the client trusts explicitly.
#[cfg(feature = "tls")]
pub struct Tls {
    addr: SocketAddr,
    client: std::sync::Arc<rustls::ClientConfig>,
}

#[cfg(feature = "tls")]
impl Fixture for Tls {
    type Conn = longconn_transport::tls::TlsConnection;

    async fn start(server: &Server) -> Self {
        let (config, client) = dev_tls();
        let acceptor = longconn_transport::tls::TlsAcceptor::bind(
            "127.0.0.1:0".parse().unwrap(),
            config,
            MAX_FRAME,
            false,
        )
        .unwrap();
        let addr = longconn_server::Listener::local_addr(&acceptor).unwrap();
        server.serve(acceptor);
        Tls { addr, client }
    }

    async fn connect(&self) -> Self::Conn {
        longconn_transport::tls::TlsConnection::connect(
            self.addr,
            "localhost",
            self.client.clone(),
            MAX_FRAME,
        )
        .await
        .unwrap()
    }
}

/// WebSocket on `/ws`, plain (`ws://`).
#[cfg(feature = "ws")]
pub struct Ws {
    addr: SocketAddr,
}

#[cfg(feature = "ws")]
impl Fixture for Ws {
    type Conn = longconn_transport::ws::WsConnection;

    async fn start(server: &Server) -> Self {
        let acceptor = longconn_transport::ws::WsAcceptor::bind(
            "127.0.0.1:0".parse().unwrap(),
            MAX_FRAME,
            false,
        )
        .unwrap();
        let addr = longconn_server::Listener::local_addr(&acceptor).unwrap();
        server.serve(acceptor);
        Ws { addr }
    }

    async fn connect(&self) -> Self::Conn {
        let url = format!("ws://{}/ws", self.addr);
        longconn_transport::ws::WsConnection::connect(self.addr, &url, MAX_FRAME)
            .await
            .unwrap()
    }
}

/// WebSocket over TLS (`wss://`).
#[cfg(all(feature = "ws", feature = "tls"))]
pub struct Wss {
    addr: SocketAddr,
    client: std::sync::Arc<rustls::ClientConfig>,
}

#[cfg(all(feature = "ws", feature = "tls"))]
impl Fixture for Wss {
    type Conn = longconn_transport::ws::WsConnection;

    async fn start(server: &Server) -> Self {
        let (config, client) = dev_tls();
        let acceptor = longconn_transport::ws::WsAcceptor::bind_tls(
            "127.0.0.1:0".parse().unwrap(),
            config,
            MAX_FRAME,
            false,
        )
        .unwrap();
        let addr = longconn_server::Listener::local_addr(&acceptor).unwrap();
        server.serve(acceptor);
        Wss { addr, client }
    }

    async fn connect(&self) -> Self::Conn {
        let url = format!("wss://localhost:{}/ws", self.addr.port());
        longconn_transport::ws::WsConnection::connect_tls(
            self.addr,
            &url,
            "localhost",
            self.client.clone(),
            MAX_FRAME,
        )
        .await
        .unwrap()
    }
}

/// QUIC with a generated certificate the client trusts explicitly.
#[cfg(feature = "quic")]
pub struct Quic {
    addr: SocketAddr,
    client: longconn_transport::quic::QuicClient,
}

#[cfg(feature = "quic")]
impl Fixture for Quic {
    type Conn = longconn_transport::quic::QuicConnection;

    async fn start(server: &Server) -> Self {
        use longconn_transport::cert::{TlsIdentity, Trust};
        let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
        let acceptor = longconn_transport::quic::QuicAcceptor::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            MAX_FRAME,
        )
        .unwrap();
        let addr = longconn_server::Listener::local_addr(&acceptor).unwrap();
        server.serve(acceptor);
        let trust = Trust::Roots(vec![identity.leaf().clone()]);
        let client =
            longconn_transport::quic::QuicClient::new("127.0.0.1:0".parse().unwrap(), &trust)
                .unwrap();
        Quic { addr, client }
    }

    /// Opens the session stream and makes it exist for the gateway with a Ping (QUIC
    /// announces a stream only once data is sent), so every case starts as on TCP.
    async fn connect(&self) -> Self::Conn {
        let mut conn = self
            .client
            .connect(self.addr, "localhost", MAX_FRAME)
            .await
            .unwrap();
        let ping = longconn_core::Frame::Ping {
            id: 0,
            payload: bytes::Bytes::new(),
        }
        .to_bytes(MAX_FRAME)
        .unwrap();
        conn.write_raw(&ping).await.unwrap();
        let mut pong = [0u8; longconn_core::protocol::HEADER_LEN];
        conn.read_raw(&mut pong).await.unwrap();
        assert_eq!(pong[3], 0x04, "the gateway answers the opening Ping");
        conn
    }
}
