//! TLS to the database: rustls with the ring provider (the crate's one TLS stack), verifying
//! the server's chain and name against the Mozilla roots plus the configured `ca_file`.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::PgError;

/// The connector every database connection uses (plain connections ignore it).
pub(crate) fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, PgError> {
    let mut roots: RootCertStore = crate::transport::esmtp::default_roots();
    if let Some(path) = ca_file {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| PgError::Tls(format!("cannot read ca_file {shown}: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| PgError::Tls(format!("ca_file {shown} is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(PgError::Tls(format!(
                "ca_file {shown} holds no certificate (expected -----BEGIN CERTIFICATE-----)"
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| PgError::Tls(format!("ca_file {shown}: {e}")))?;
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
