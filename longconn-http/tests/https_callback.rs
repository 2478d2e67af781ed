//! `https://` callbacks (issue 16 item 5): a local HTTPS backend with a self-signed
//! certificate gets the request when `ca_file` trusts it, and the client gets its
//! reply; a backend whose certificate is not trusted gives the client `backend_error`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use longconn_client::ClientError;
use longconn_core::Code;
use longconn_http::{ApiLimits, HttpBackend, HttpBackendConfig};
use longconn_server::{BackendLimits, Router};
use longconn_transport::cert::TlsIdentity;
use support::Setup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTPS/1.1 backend: answers each POST with its body reversed, counting
/// the requests that got through the TLS handshake. Returns its port.
async fn https_backend(identity: &TlsIdentity, served: Arc<AtomicUsize>) -> u16 {
    let config = identity.server_config(&[b"http/1.1"], false).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let served = served.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // One request per connection: head, then Content-Length bytes of body.
                let mut buf = Vec::new();
                let head_end = loop {
                    let mut chunk = [0u8; 4096];
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < head_end + len {
                    let mut chunk = [0u8; 4096];
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                served.fetch_add(1, Ordering::SeqCst);
                let mut body = buf[head_end..head_end + len].to_vec();
                body.reverse();
                let mut reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                reply.extend_from_slice(&body);
                let _ = tls.write_all(&reply).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_callbacks_are_checked_against_the_ca_file() {
    let dir = std::env::temp_dir().join(format!("longconn-https-cb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let (cert, key) = (dir.join("backend.pem"), dir.join("backend.key"));
    identity.write_pem_files(&cert, &key).unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let port = https_backend(&identity, served.clone()).await;
    let url = format!("https://localhost:{port}/rpc");

    let mut trusted = HttpBackendConfig::new(&url);
    trusted.ca_file = Some(cert.clone());
    // Another CA's certificate (and the system roots): the backend's is not trusted.
    let other = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let other_ca = dir.join("other.pem");
    other
        .write_pem_files(&other_ca, &dir.join("other.key"))
        .unwrap();
    let mut untrusted = HttpBackendConfig::new(&url);
    untrusted.ca_file = Some(other_ca);
    let builder = Router::builder()
        .backend(
            "trusted",
            HttpBackend::new(trusted).unwrap(),
            BackendLimits::default(),
        )
        .route(10, "trusted")
        .backend(
            "untrusted",
            HttpBackend::new(untrusted).unwrap(),
            BackendLimits::default(),
        )
        .route(20, "untrusted");
    let setup = Setup::start(builder.build().unwrap(), ApiLimits::default()).await;
    let client = setup.client("caller").await;

    let reply = client
        .request(10, Bytes::from_static(b"over tls"))
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"slt revo");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    match client.request(20, Bytes::from_static(b"x")).await {
        Err(ClientError::Failed { code, .. }) => assert_eq!(code, Code::BackendError),
        other => panic!("expected backend_error, got {other:?}"),
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "the handshake failed first"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
