//! TLS for the client: rustls with the `ring` provider, configured per policy level, and
//! handshake errors put into words an operator can act on.
//!
//! Two client configurations exist: one that verifies the certificate chain and host name
//! (`verify`) and one that checks only the handshake signatures (`may`, `encrypt`, and implicit
//! TLS without `verify`): opportunistic TLS protects against passive listeners, and refusing an
//! unverifiable certificate there would push delivery back to clear text.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::address::Domain;

/// The trust anchors used by `verify`: the Mozilla roots from webpki-roots, plus any extra.
pub fn default_roots() -> RootCertStore {
    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
}

/// The two connectors a transport needs, built once, and what a probe needs to build a third.
#[derive(Clone)]
pub(crate) struct TlsClient {
    verifying: TlsConnector,
    encrypting: TlsConnector,
    /// The `verify` level's certificate check; `None` when the root store is empty.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl TlsClient {
    pub(crate) fn new(roots: RootCertStore) -> TlsClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build();
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("invariant: the ring provider supports TLS 1.2 and 1.3")
        };
        let verifier = verifier.ok();
        let verifying = match &verifier {
            Some(v) => builder()
                .with_webpki_verifier(v.clone())
                .with_no_client_auth(),
            // An empty root store: nothing can be verified, so every `verify` handshake fails
            // with "unknown issuer", which is what the operator needs to hear.
            None => builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        };
        let encrypting = builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        TlsClient {
            verifying: TlsConnector::from(Arc::new(verifying)),
            encrypting: TlsConnector::from(Arc::new(encrypting)),
            verifier,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// A connector that accepts any certificate, as the encrypting one does, but first checks
    /// it as `verify` would and keeps the answer: how a probe reports an invalid certificate on
    /// a hop whose policy does not require a valid one, on the same connection. Built per
    /// probe, since each needs its own record.
    pub(crate) fn inspector(&self) -> Inspector {
        let record = Arc::new(Mutex::new(None));
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("invariant: the ring provider supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Inspecting {
                    verifier: self.verifier.clone(),
                    algorithms: self.algorithms,
                    record: record.clone(),
                }))
                .with_no_client_auth();
        Inspector {
            connector: TlsConnector::from(Arc::new(config)),
            record,
        }
    }

    /// The connector for a handshake that does (`verify`) or does not check the certificate.
    pub(crate) fn connector(&self, verify: bool) -> &TlsConnector {
        if verify {
            &self.verifying
        } else {
            &self.encrypting
        }
    }
}

/// A connector that records whether the certificate would pass `verify`, and that record.
pub(crate) struct Inspector {
    pub connector: TlsConnector,
    record: Arc<Mutex<Option<Result<(), String>>>>,
}

impl Inspector {
    /// What the last handshake's certificate check found: `Ok` when it would pass `verify`,
    /// else why not; `None` before a certificate was seen.
    pub(crate) fn take(&self) -> Option<Result<(), String>> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Checks the certificate as `verify` would, records the answer, and accepts it anyway (the
/// handshake signatures are still checked).
#[derive(Debug)]
struct Inspecting {
    verifier: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    record: Arc<Mutex<Option<Result<(), String>>>>,
}

impl ServerCertVerifier for Inspecting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.verifier {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| describe_rustls_error(&e)),
            None => Err(describe_certificate_error(&CertificateError::UnknownIssuer)),
        };
        *self
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(verdict);
        Ok(ServerCertVerified::assertion())
    }

    crate::handshake_signatures::verify_handshake_signatures_with!(algorithms);
}

/// The name the certificate must carry: the host name we looked up, or the address when the
/// route gave an address literal (checked against the certificate's IP SAN).
pub(crate) fn server_name(host: Option<&Domain>, addr: IpAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h.as_str().to_string()).ok())
        .unwrap_or(ServerName::IpAddress(addr.into()))
}

/// Accepts any certificate but still checks that the server holds its key (the handshake
/// signatures), so the session is at least encrypted to whoever answered.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    crate::handshake_signatures::verify_handshake_signatures_with!(algorithms);
}

/// Why a handshake failed, in words: "the server's certificate has expired", "... is not valid
/// for the name mx.example.com (it names other.example, 192.0.2.1)", ...
pub(crate) fn describe_handshake_error(err: &io::Error) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            io::ErrorKind::UnexpectedEof => "the server closed the connection".to_string(),
            _ => err.to_string(),
        };
    };
    describe_rustls_error(tls)
}

fn describe_rustls_error(err: &rustls::Error) -> String {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(c) => describe_certificate_error(c),
        E::NoCertificatesPresented => "the server presented no certificate".to_string(),
        E::AlertReceived(alert) => format!("the server sent the TLS alert {alert:?}"),
        E::PeerIncompatible(why) => {
            format!("no TLS version or cipher in common with the server ({why:?})")
        }
        E::PeerMisbehaved(why) => format!("the server broke the TLS protocol ({why:?})"),
        E::InvalidMessage(why) => {
            format!("the server sent something that is not TLS ({why:?})")
        }
        // Our own verifiers (DANE) put their finding in words already.
        E::General(why) => why.clone(),
        other => other.to_string(),
    }
}

fn describe_certificate_error(err: &CertificateError) -> String {
    use CertificateError as C;
    match err {
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet".into()
        }
        C::UnknownIssuer => {
            "the server's certificate has an unknown issuer (not signed by a trusted CA)".into()
        }
        C::NotValidForName => "the server's certificate does not match the host name".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the server's certificate does not match the host name {} (it names {})",
            expected.to_str(),
            if presented.is_empty() {
                "nothing".to_string()
            } else {
                presented
                    .iter()
                    .map(|p| bare_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        C::Revoked => "the server's certificate has been revoked".into(),
        C::BadSignature => "the server's certificate has a bad signature".into(),
        C::BadEncoding => "the server's certificate is malformed".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the server's certificate is not meant for TLS servers".into()
        }
        other => format!("the server's certificate was refused ({other:?})"),
    }
}

/// webpki shows presented names in debug form (`DnsName("a.example")`, `IpAddress(192.0.2.1)`);
/// the operator wants the name.
fn bare_name(presented: &str) -> &str {
    for prefix in ["DnsName(\"", "IpAddress("] {
        if let Some(rest) = presented.strip_prefix(prefix) {
            return rest.trim_end_matches(')').trim_end_matches('"');
        }
    }
    presented
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_read_as_words() {
        let wrap = |c: CertificateError| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(c),
            )
        };
        assert!(describe_handshake_error(&wrap(CertificateError::Expired)).contains("expired"));
        assert!(
            describe_handshake_error(&wrap(CertificateError::UnknownIssuer))
                .contains("unknown issuer")
        );
        let mismatch = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("mx.example.com").unwrap(),
            presented: vec![
                "DnsName(\"other.example\")".into(),
                "IpAddress(192.0.2.1)".into(),
            ],
        };
        assert_eq!(
            describe_handshake_error(&wrap(mismatch)),
            "the server's certificate does not match the host name mx.example.com (it names other.example, 192.0.2.1)"
        );
    }

    #[test]
    fn address_literals_are_checked_against_ip_sans() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(server_name(None, ip), ServerName::IpAddress(_)));
        let d = Domain::parse("mx.example.com").unwrap();
        assert_eq!(server_name(Some(&d), ip).to_str(), "mx.example.com");
    }

    #[test]
    fn the_default_roots_are_the_mozilla_set() {
        assert!(default_roots().len() > 100);
    }
}
