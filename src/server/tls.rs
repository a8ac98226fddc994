//! The server's TLS: a certificate chain and key read from PEM files (rustls with the `ring`
//! provider), swapped whole on reload.
//!
//! A file that cannot be read or holds no usable certificate or key is an error naming that
//! file, so a listener never starts with a TLS offer it cannot keep.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::status::Severity;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("TLS certificate {}: {reason}", file.display())]
    Certificate {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file could not be read or holds no private key.
    #[error("TLS key {}: {reason}", file.display())]
    Key {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (the key does not match the certificate, an unsupported key).
    #[error("TLS certificate {} with key {}: {reason}", certificate.display(), key.display())]
    Pair {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

impl TlsError {
    /// Always permanent: the administrator must fix the files.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

/// A certificate chain and key from PEM files, re-read by [`ServerTls::reload`].
#[derive(Debug)]
pub struct ServerTls {
    certificate: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files: `certificate` holds the chain (leaf first), `key` the private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn load(
        certificate: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerTls, TlsError> {
        let (certificate, key) = (
            certificate.as_ref().to_path_buf(),
            key.as_ref().to_path_buf(),
        );
        let config = build(&certificate, &key)?;
        Ok(ServerTls {
            certificate,
            key,
            config: RwLock::new(config),
        })
    }

    /// Re-reads both files; on an error the configuration in use stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.certificate, &self.key)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The certificate file.
    pub fn certificate_file(&self) -> &Path {
        &self.certificate
    }

    /// The key file.
    pub fn key_file(&self) -> &Path {
        &self.key
    }
}

fn build(certificate: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Certificate {
        file: certificate.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(certificate).map_err(|e| cert_err(format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in it".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Key {
        file: key.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        file: key.to_path_buf(),
        reason: format!("no usable PRIVATE KEY block in it: {e}"),
    })?;
    let pair = |reason: String| TlsError::Pair {
        certificate: certificate.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| pair(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| pair(e.to_string()))?;
    Ok(Arc::new(config))
}

/// What the session learned from a finished handshake, for `Received:` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The IANA suite name, `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Key bits of the cipher (Postfix's `(256/256 bits)`).
    pub bits: u16,
}

impl TlsInfo {
    /// Reads the negotiated parameters of a server connection.
    pub fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_string(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        // rustls says TLS13_AES_256_GCM_SHA384; the IANA (and OpenSSL, Postfix) name is
        // TLS_AES_256_GCM_SHA384.
        let cipher = match cipher.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => cipher.to_string(),
        };
        let bits = if cipher.contains("AES_128") { 128 } else { 256 };
        TlsInfo {
            version,
            cipher,
            bits,
        }
    }
}
