//! Certificates and trust for the TLS-based transports (TLS over TCP, `wss`, QUIC).
//!
//! A server presents a [`TlsIdentity`]: loaded from PEM files, or, for development, a
//! self-signed certificate generated on the spot and written to files so that clients can
//! trust exactly it (`--ca FILE`). A client trusts according to [`Trust`].
//!
//! All TLS uses rustls with the `ring` provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};

/// ALPN protocol id of longconn over QUIC (docs/PROTOCOL.md, "QUIC").
pub const ALPN_LONGCONN: &[u8] = b"longconn";

/// The crypto provider every longconn TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key.
pub struct TlsIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certs", &self.certs.len())
            .field("fingerprint", &self.fingerprint_sha256())
            .finish_non_exhaustive()
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| Error::Certificate(format!("{}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(Error::Certificate(format!(
                "{}: no certificate found",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::Certificate(format!("{}: {e}", key.display())))?;
        Ok(TlsIdentity { certs, key })
    }

    /// A fresh self-signed certificate for `names` (DNS names or IP addresses). For
    /// development only: clients must be told to trust it.
    pub fn self_signed(names: &[&str]) -> Result<TlsIdentity> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::Certificate(format!("generating a certificate: {e}")))?;
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
            .map_err(|e| Error::Certificate(format!("generated key: {e}")))?;
        Ok(TlsIdentity {
            certs: vec![generated.cert.der().clone()],
            key,
        })
    }

    /// Writes the chain and the key as PEM files (the key file readable by its owner only).
    pub fn write_pem_files(&self, cert: &Path, key: &Path) -> Result<()> {
        let mut chain = String::new();
        for der in &self.certs {
            chain.push_str(&pem("CERTIFICATE", der.as_ref()));
        }
        std::fs::write(cert, chain)?;
        std::fs::write(key, pem("PRIVATE KEY", self.key.secret_der()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    /// SHA-256 fingerprint of the leaf certificate, as colon-separated hex.
    pub fn fingerprint_sha256(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.certs[0].as_ref());
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The leaf certificate, for clients that pin it.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.certs[0]
    }

    /// A rustls server config presenting this identity. `tls13_only` is for QUIC, which
    /// requires TLS 1.3.
    pub fn server_config(&self, alpn: &[&[u8]], tls13_only: bool) -> Result<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider());
        let builder = if tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .map_err(tls)?;
        let mut config = builder
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(tls)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// Which servers a client believes.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The operating system's root certificates (on Linux the distribution's CA bundle;
    /// `SSL_CERT_FILE` overrides it). Loaded each time a config is built, so build one
    /// config and reuse it.
    System,
    /// Certificates signed by one of these (or these exact self-signed certificates).
    Roots(Vec<CertificateDer<'static>>),
    /// Anything at all. Development only: it defeats TLS against an active attacker, and
    /// callers must say so loudly.
    InsecureSkipVerify,
}

impl Trust {
    /// Trusts the certificates in a PEM file (a CA, or a server's own self-signed one).
    pub fn from_pem_file(path: &Path) -> Result<Trust> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| Error::Certificate(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Certificate(format!(
                "{}: no certificate found",
                path.display()
            )));
        }
        Ok(Trust::Roots(certs))
    }

    /// A rustls client config with this trust. `tls13_only` is for QUIC.
    pub fn client_config(&self, alpn: &[&[u8]], tls13_only: bool) -> Result<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider());
        let builder = if tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .map_err(tls)?;
        let mut config = match self {
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    return Err(Error::Certificate(format!(
                        "no usable system root certificates ({})",
                        why.join("; ")
                    )));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Roots(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs {
                    roots.add(cert.clone()).map_err(tls)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::InsecureSkipVerify => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                    provider().signature_verification_algorithms,
                )))
                .with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// Accepts any certificate, but still checks the handshake signatures so that the
/// session keys belong to whoever holds the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn tls(err: rustls::Error) -> Error {
    Error::Tls(err.to_string())
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_round_trips_through_pem_files() {
        let dir = std::env::temp_dir().join(format!("longconn-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let identity = TlsIdentity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        identity.write_pem_files(&cert, &key).unwrap();
        let loaded = TlsIdentity::from_pem_files(&cert, &key).unwrap();
        assert_eq!(loaded.fingerprint_sha256(), identity.fingerprint_sha256());
        assert_eq!(identity.fingerprint_sha256().len(), 32 * 3 - 1);
        assert!(loaded.server_config(&[ALPN_LONGCONN], true).is_ok());
        let Trust::Roots(roots) = Trust::from_pem_file(&cert).unwrap() else {
            panic!("expected roots");
        };
        assert_eq!(roots[0], *identity.leaf());
        assert!(
            TlsIdentity::from_pem_files(&key, &key).is_err(),
            "a key is no certificate"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // The machine's CA bundle loads as system roots.
        if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
            assert!(Trust::System.client_config(&[], false).is_ok());
        } else {
            eprintln!("SKIPPED system roots: no /etc/ssl/certs/ca-certificates.crt here");
        }
    }
}
