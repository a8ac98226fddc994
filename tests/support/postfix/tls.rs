//! The certificate a private instance's smtpd presents: a leaf for `localhost`, `127.0.0.1`
//! and the instance's `myhostname`, signed by a CA made for this instance only, so a test can
//! trust exactly that CA for `verify` and nothing else is trusted by accident.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM texts for one instance.
pub struct InstanceCertificate {
    /// The CA's certificate (the trust anchor for clients).
    pub ca_pem: String,
    /// The leaf followed by the CA, as `smtpd_tls_cert_file` wants a chain.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

impl InstanceCertificate {
    pub fn new(instance: &str, names: &[&str]) -> InstanceCertificate {
        // rcgen only fails here on bad parameters, which are fixed in this file.
        let invariant = "rcgen accepts the fixed parameters of a test certificate";
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect(invariant);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("postrider test CA for {instance}"),
        );
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let ca_key = KeyPair::generate().expect(invariant);
        let ca_cert = ca.self_signed(&ca_key).expect(invariant);
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("certificate names {names:?}: {e}"));
        leaf.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or(instance),
        );
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate().expect(invariant);
        let cert = leaf.signed_by(&key, &issuer).expect(invariant);
        InstanceCertificate {
            chain_pem: format!("{}{ca_pem}", cert.pem()),
            ca_pem,
            key_pem: key.serialize_pem(),
        }
    }
}
