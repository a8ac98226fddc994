//! The part of a rustls [`ServerCertVerifier`](rustls::client::danger::ServerCertVerifier)
//! every verifier here shares: the handshake signatures are checked with the crypto
//! provider's algorithms whatever the verifier decides about the certificate, so a server
//! must hold the key of the certificate it showed even when that certificate is accepted
//! without a chain (opportunistic TLS, DANE-EE).

/// Expands, inside an `impl ServerCertVerifier`, to `verify_tls12_signature`,
/// `verify_tls13_signature` and `supported_verify_schemes` over `self.$algorithms` (a
/// `rustls::crypto::WebPkiSupportedAlgorithms`).
macro_rules! verify_handshake_signatures_with {
    ($algorithms:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.$algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.$algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$algorithms.supported_schemes()
        }
    };
}

pub(crate) use verify_handshake_signatures_with;
