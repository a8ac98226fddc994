//! DANE for SMTP (RFC 7672): matching the server's certificate against its TLSA records,
//! as a rustls certificate verifier.
//!
//! Only the usages RFC 7672 §3.1 keeps for SMTP count: 3 (DANE-EE: the end-entity
//! certificate or its key, with no name and no expiry check, §3.1.1) and 2 (DANE-TA: a
//! certificate of the presented chain is the trust anchor, and the chain is then validated
//! from it, names included, §3.1.2). PKIX usages 0 and 1 are unusable for SMTP (§3.1.3).
//! Selectors 0 (whole certificate) and 1 (SubjectPublicKeyInfo), matching types 0 (exact),
//! 1 (SHA-256) and 2 (SHA-512). The handshake signatures are always checked, so whoever
//! answers holds the key that matched.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::resolve::TlsaRecord;

/// TLSA usage 2: the record names a trust anchor.
pub const DANE_TA: u8 = 2;
/// TLSA usage 3: the record names the server's own certificate or key.
pub const DANE_EE: u8 = 3;

/// True when RFC 7672 lets an SMTP client use `record` (usage 2 or 3, a known selector and
/// matching type). A TLSA RRset without any usable record means "TLS required, no
/// authentication" (§2.2).
pub fn usable(record: &TlsaRecord) -> bool {
    matches!(record.usage, DANE_TA | DANE_EE)
        && matches!(record.selector, 0 | 1)
        && matches!(record.matching, 0..=2)
}

/// True when `cert` (DER) matches `record`'s selector, matching type and data. A
/// certificate that cannot be parsed matches nothing.
///
/// ```
/// use postrider::resolve::TlsaRecord;
/// use postrider::tls_policy::dane::matches;
/// let cert = [0x30, 0x03, 0x02, 0x01, 0x05]; // not a certificate: only selector 0 can look
/// let exact = TlsaRecord { usage: 3, selector: 0, matching: 0, data: cert.to_vec() };
/// assert!(matches(&exact, &cert));
/// let spki = TlsaRecord { selector: 1, ..exact };
/// assert!(!matches(&spki, &cert));
/// ```
pub fn matches(record: &TlsaRecord, cert: &[u8]) -> bool {
    let selected: Vec<u8> = match record.selector {
        0 => cert.to_vec(),
        1 => {
            let der = CertificateDer::from(cert);
            match rustls::server::ParsedCertificate::try_from(&der) {
                Ok(parsed) => parsed.subject_public_key_info().as_ref().to_vec(),
                Err(_) => return false,
            }
        }
        _ => return false,
    };
    let digest = |alg| ring::digest::digest(alg, &selected).as_ref().to_vec();
    let computed = match record.matching {
        0 => selected.clone(),
        1 => digest(&ring::digest::SHA256),
        2 => digest(&ring::digest::SHA512),
        _ => return false,
    };
    // The data is public (it is in DNS); no need for a constant-time comparison.
    computed == record.data
}

/// A certificate verifier for one MX host's usable TLSA records.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<TlsaRecord>,
    host: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl DaneVerifier {
    /// A verifier for `host`'s records (unusable ones are ignored).
    pub fn new(host: impl Into<String>, records: &[TlsaRecord]) -> DaneVerifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        DaneVerifier {
            records: records.iter().filter(|r| usable(r)).cloned().collect(),
            host: host.into(),
            algorithms: provider.signature_verification_algorithms,
            provider,
        }
    }

    /// The DANE-TA check: a presented certificate matches a usage-2 record, and the chain
    /// validates from it as the only trust anchor (names and validity included).
    fn trust_anchor_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Option<Result<(), rustls::Error>> {
        let mut last = None;
        for record in self.records.iter().filter(|r| r.usage == DANE_TA) {
            for ta in intermediates.iter().filter(|c| matches(record, c)) {
                let mut roots = RootCertStore::empty();
                if roots.add(ta.clone()).is_err() {
                    continue;
                }
                let verifier = match WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                match verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                {
                    Ok(_) => return Some(Ok(())),
                    Err(e) => last = Some(Err(e)),
                }
            }
        }
        last
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .records
            .iter()
            .any(|r| r.usage == DANE_EE && matches(r, end_entity))
        {
            return Ok(ServerCertVerified::assertion());
        }
        match self.trust_anchor_path(end_entity, intermediates, server_name, ocsp_response, now) {
            Some(Ok(())) => Ok(ServerCertVerified::assertion()),
            Some(Err(e)) => Err(rustls::Error::General(format!(
                "the certificate chain of {} matches a DANE-TA record but does not validate from it: {e}",
                self.host
            ))),
            None => Err(rustls::Error::General(format!(
                "no TLSA record of {} matches the server's certificate (DANE)",
                self.host
            ))),
        }
    }

    crate::handshake_signatures::verify_handshake_signatures_with!(algorithms);
}

/// A rustls client configuration that verifies with `verifier`.
pub(crate) fn connector(verifier: DaneVerifier) -> tokio_rustls::TlsConnector {
    let config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .expect("invariant: the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["mx.example.com".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (
            cert.der().to_vec(),
            rcgen::PublicKeyData::subject_public_key_info(&key),
        )
    }

    #[test]
    fn selectors_and_matching_types_each_match_their_own_form() {
        let (der, spki) = cert();
        let sha256 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .to_vec()
        };
        let sha512 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA512, b)
                .as_ref()
                .to_vec()
        };
        let r = |selector, matching, data| TlsaRecord {
            usage: 3,
            selector,
            matching,
            data,
        };
        assert!(matches(&r(0, 0, der.clone()), &der));
        assert!(matches(&r(0, 1, sha256(&der)), &der));
        assert!(matches(&r(0, 2, sha512(&der)), &der));
        assert!(matches(&r(1, 0, spki.clone()), &der));
        assert!(matches(&r(1, 1, sha256(&spki)), &der));
        assert!(matches(&r(1, 2, sha512(&spki)), &der));
        assert!(
            !matches(&r(1, 1, sha256(&der)), &der),
            "selector 1 hashes the key, not the certificate"
        );
        let (other, _) = cert();
        assert!(!matches(&r(0, 1, sha256(&der)), &other));
    }

    #[test]
    fn pkix_usages_are_not_usable_for_smtp() {
        let rec = |usage| TlsaRecord {
            usage,
            selector: 1,
            matching: 1,
            data: vec![0; 32],
        };
        assert!(!usable(&rec(0)));
        assert!(!usable(&rec(1)));
        assert!(usable(&rec(2)));
        assert!(usable(&rec(3)));
    }
}
