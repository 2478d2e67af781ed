//! The rustls (ring) client config behind `https://` callbacks: the system's root
//! certificates plus, optionally, the certificates of a PEM file
//! ([`crate::HttpBackendConfig::ca_file`]) for a private CA or a self-signed backend.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// A client config trusting the system roots and the certificates in `ca_file`.
///
/// # Errors
/// [`Error::Tls`] when `ca_file` cannot be read or holds no certificate, or when no
/// root certificate at all is usable (no system roots and no `ca_file`).
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<std::result::Result<_, _>>())
            .map_err(|e| Error::Tls(format!("ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Tls(format!(
                "ca_file {}: no certificate found",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("ca_file {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(Error::Tls(
            "no root certificate to check https callbacks against (no system roots; set \
             ca_file)"
                .into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
