//! Each gateway writes its development certificate to a directory of its own (issue 16:
//! every gateway shared /tmp/longconn-dev-cert and overwrote the others' certificate).

use clap::Parser;
use longconn_gateway::{Cli, Gateway, GatewaySettings};

fn settings(args: &[&str]) -> GatewaySettings {
    let cli = Cli::try_parse_from(
        ["gateway", "--tcp", "off", "--ws", "off", "--http", "off"]
            .iter()
            .chain(args),
    )
    .unwrap();
    GatewaySettings::resolve(cli).unwrap()
}

#[test]
fn the_default_directory_is_named_after_the_gateways_listener() {
    let a = settings(&[]);
    assert_eq!(
        a.dev_cert_dir,
        std::env::temp_dir().join("longconn-dev-cert-quic-127.0.0.1-7102")
    );
    let b = settings(&["--quic", "127.0.0.1:7202"]);
    assert_ne!(a.dev_cert_dir, b.dev_cert_dir);
    let c = settings(&["--quic", "off", "--tls", "[::1]:7443"]);
    assert_eq!(
        c.dev_cert_dir,
        std::env::temp_dir().join("longconn-dev-cert-tls-__1-7443")
    );
    let given = settings(&["--dev-cert-dir", "/somewhere/else"]);
    assert_eq!(given.dev_cert_dir, std::path::Path::new("/somewhere/else"));
}

#[tokio::test]
async fn two_gateways_do_not_overwrite_each_others_certificate() {
    let first = settings(&["--quic", "127.0.0.1:0"]);
    let second = settings(&["--quic", "127.0.0.1:0"]);
    assert_ne!(first.dev_cert_dir, second.dev_cert_dir);
    let (dir_a, dir_b) = (first.dev_cert_dir.clone(), second.dev_cert_dir.clone());
    let a = Gateway::start(first).await.unwrap();
    let cert_a = std::fs::read_to_string(dir_a.join("cert.pem")).unwrap();
    let b = Gateway::start(second).await.unwrap();
    let cert_b = std::fs::read_to_string(dir_b.join("cert.pem")).unwrap();
    assert_ne!(cert_a, cert_b, "each gateway generated its own certificate");
    assert_eq!(
        std::fs::read_to_string(dir_a.join("cert.pem")).unwrap(),
        cert_a,
        "the second gateway left the first one's certificate alone"
    );
    a.shutdown().await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(dir_a);
    let _ = std::fs::remove_dir_all(dir_b);
}
