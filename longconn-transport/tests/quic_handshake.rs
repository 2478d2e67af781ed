//! A QUIC connection whose session stream never arrives: the gateway gives up on it
//! (its login timeout drops the handshake) and the client learns why.
#![cfg(feature = "quic")]

use std::time::Duration;

use longconn_core::Listener;
use longconn_transport::cert::{TlsIdentity, Trust};
use longconn_transport::quic::{QuicAcceptor, QuicClient, QuicConnection};

const MAX_FRAME: usize = 65_536;

/// The error a read on `conn` ends with once the server closes it (its close code and
/// reason in the text).
async fn closed_with(conn: &mut QuicConnection) -> String {
    let mut buf = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), conn.read_raw(&mut buf))
        .await
        .expect("the client was not told the connection is closed")
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_given_up_on_closes_the_connection_with_login_timeout() {
    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let mut acceptor =
        QuicAcceptor::bind("127.0.0.1:0".parse().unwrap(), &identity, MAX_FRAME).unwrap();
    let addr = acceptor.local_addr().unwrap();
    let trust = Trust::Roots(vec![identity.leaf().clone()]);
    let client = QuicClient::new("127.0.0.1:0".parse().unwrap(), &trust).unwrap();

    // The client completes the TLS handshake but never sends on its stream, so the
    // server's handshake (which waits for that stream) cannot finish; the server gives
    // up after 2 s, as its login timeout does, and drops the handshake.
    let server = tokio::spawn(async move {
        let handshake = acceptor.accept().await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(2), handshake).await;
        assert!(waited.is_err(), "the handshake finished without a stream");
        acceptor
    });
    let mut conn = client.connect(addr, "localhost", MAX_FRAME).await.unwrap();
    let _acceptor = server.await.unwrap();

    let err = closed_with(&mut conn).await;
    assert!(
        err.contains("login_timeout"),
        "the close does not name login_timeout: {err}"
    );
}

/// At shutdown the server abandons the handshakes in progress: a client whose session
/// stream has not arrived is told `going_away` (reconnect later, elsewhere), not
/// `login_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_abandoned_at_shutdown_closes_with_going_away() {
    use std::sync::Arc;

    use longconn_core::{TokenKey, TokenKeys};
    use longconn_server::{Router, Server, ServerConfig};

    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let acceptor =
        QuicAcceptor::bind("127.0.0.1:0".parse().unwrap(), &identity, MAX_FRAME).unwrap();
    let addr = acceptor.local_addr().unwrap();
    let keys = TokenKeys::new(TokenKey::new("test", b"quic-handshake-secret").unwrap());
    let server = Server::new(
        ServerConfig::default(),
        Arc::new(keys),
        Arc::new(Router::echo()),
    );
    server.serve(acceptor);
    let trust = Trust::Roots(vec![identity.leaf().clone()]);
    let client = QuicClient::new("127.0.0.1:0".parse().unwrap(), &trust).unwrap();
    // TLS done, no stream opened: the server's handshake is waiting for it.
    let mut conn = client.connect(addr, "localhost", MAX_FRAME).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.shutdown(Duration::from_secs(2)).await;
    let err = closed_with(&mut conn).await;
    assert!(
        err.contains("going_away"),
        "the close does not name going_away: {err}"
    );
}
