//! The default [`MessageSigner`]: one key per sender domain, chosen by the `From:` field.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner as Signing, Done};
use serde::Deserialize;

use super::key::{Key, KeyAlgorithm, KeyError, PrivateKey};
use super::record::{DkimRecord, record_name};
use super::{MessageSigner, SignError};
use crate::address::{Address, Domain};
use crate::envelope::Envelope;
use crate::message::{HeaderSection, Target, downgrade, parse_address_list};
use crate::status::Severity;

/// The header fields signed when the configuration names none: those a reader sees or a
/// reply uses, and the MIME fields that say how to read the body (RFC 6376 §5.4.1). A listed
/// field the message lacks is signed as absent, so it cannot be added later without breaking
/// the signature (mail-auth's behaviour, often called over-signing).
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// One `[[dkim]]` entry of the configuration: a domain's selector and key file.
///
/// ```toml
/// [[dkim]]
/// domain = "ourtest.com"
/// selector = "pbx2026"
/// key = "dkim/ourtest.com.pem"     # relative to the configuration file
/// # headers = ["From", "To", "Subject", "Date", "Message-ID"]   # default: DEFAULT_SIGNED_HEADERS
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// The signing domain (`d=`): the `From:` domain of the mail it signs, or a parent of it.
    pub domain: Domain,
    /// The selector (`s=`): the key's record is `selector._domainkey.domain`.
    pub selector: String,
    /// The private key file (PEM or DER; RSA of 2048 bits or more, or Ed25519).
    pub key: PathBuf,
    /// The header fields to sign; `None` for [`DEFAULT_SIGNED_HEADERS`].
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

/// Why a DKIM configuration cannot be used (found at start-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkimConfigError {
    /// The key file is missing, unreadable or not a usable key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The selector is not a DNS name.
    #[error(
        "the DKIM selector {selector:?} of {domain} is not valid (letters, digits and hyphens, \
         in labels separated by dots)"
    )]
    BadSelector {
        /// The domain.
        domain: Domain,
        /// The selector as written.
        selector: String,
    },
    /// A header field name that is not one.
    #[error("the DKIM header list of {domain} has {name:?}, which is not a header field name")]
    BadHeader {
        /// The domain.
        domain: Domain,
        /// The name as written.
        name: String,
    },
    /// The list leaves out `From`, which RFC 6376 §5.4 requires.
    #[error("the DKIM header list of {domain} must include From (RFC 6376 §5.4)")]
    FromNotSigned {
        /// The domain.
        domain: Domain,
    },
    /// Two keys of one algorithm for one domain.
    #[error(
        "the domain {domain} has two {algorithm} DKIM keys; give each domain one key per \
         algorithm (an RSA and an Ed25519 key sign side by side)"
    )]
    DuplicateDomain {
        /// The domain.
        domain: Domain,
        /// `RSA` or `Ed25519`.
        algorithm: &'static str,
    },
}

impl DkimConfigError {
    /// Permanent: the configuration must be fixed.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

enum KeySigner {
    Rsa(Signing<RsaKey<Sha256>, Done>),
    Ed25519(Signing<Ed25519Key, Done>),
}

/// One domain's signing key, ready to sign.
pub struct DomainKey {
    domain: Domain,
    selector: String,
    file: PathBuf,
    algorithm: KeyAlgorithm,
    record: DkimRecord,
    headers: Vec<String>,
    signer: KeySigner,
}

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("file", &self.file)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl DomainKey {
    /// Loads the key file of `config` and checks the selector and header list.
    pub fn load(config: &DkimKeyConfig) -> Result<DomainKey, DkimConfigError> {
        let key = PrivateKey::load(&config.key)?;
        DomainKey::new(config, key)
    }

    /// A domain key from a key already read (`config.key` only names it).
    pub fn new(config: &DkimKeyConfig, key: PrivateKey) -> Result<DomainKey, DkimConfigError> {
        let domain = config.domain.clone();
        if !is_selector(&config.selector) {
            return Err(DkimConfigError::BadSelector {
                domain,
                selector: config.selector.clone(),
            });
        }
        let headers: Vec<String> = match &config.headers {
            Some(list) => list.iter().map(|h| h.trim().to_string()).collect(),
            None => DEFAULT_SIGNED_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
        };
        if let Some(bad) = headers.iter().find(|h| !is_field_name(h)) {
            return Err(DkimConfigError::BadHeader {
                domain,
                name: bad.clone(),
            });
        }
        if !headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            return Err(DkimConfigError::FromNotSigned { domain });
        }
        let record = DkimRecord::for_key(&key);
        let algorithm = key.algorithm();
        let d = domain.as_str().to_string();
        let s = config.selector.to_ascii_lowercase();
        let signer = match key.key {
            Key::Rsa(k) => KeySigner::Rsa(
                Signing::from_key(k)
                    .domain(d)
                    .selector(s.clone())
                    .headers(headers.clone())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed),
            ),
            Key::Ed25519(k) => KeySigner::Ed25519(
                Signing::from_key(k)
                    .domain(d)
                    .selector(s.clone())
                    .headers(headers.clone())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed),
            ),
        };
        Ok(DomainKey {
            domain,
            selector: s,
            file: config.key.clone(),
            algorithm,
            record,
            headers,
            signer,
        })
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The key file it was read from.
    pub fn file(&self) -> &std::path::Path {
        &self.file
    }

    /// The key's algorithm and size.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The header fields signed.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The DNS name of the key record: `selector._domainkey.domain`.
    pub fn record_name(&self) -> String {
        record_name(&self.selector, self.domain.as_str())
    }

    /// The record to publish there.
    pub fn record(&self) -> &DkimRecord {
        &self.record
    }

    /// The `DKIM-Signature:` field (with its CRLF) for `message`, which must be in its final
    /// form.
    pub fn signature_field(&self, message: &[u8]) -> Result<String, SignError> {
        let signature = match &self.signer {
            KeySigner::Rsa(s) => s.sign(message),
            KeySigner::Ed25519(s) => s.sign(message),
        };
        signature
            .map(|s| s.to_header())
            .map_err(|e| SignError::Failed {
                domain: self.domain.clone(),
                reason: e.to_string(),
            })
    }
}

/// Signs each message with the key of its `From:` domain (or of the nearest parent domain
/// that has one); mail from other domains goes unsigned. A domain may have an RSA and an
/// Ed25519 key: the message then carries both signatures (RFC 8463 §5), for receivers that
/// verify only one of the two.
///
/// Before signing, the message's 8-bit MIME parts are converted to quoted-printable or base64
/// and over-long lines re-encoded ([`downgrade`]): the signature then covers the form every
/// server takes, and no later conversion on the way (ours, or a relay's without 8BITMIME) can
/// break it. Header fields are signed as they are.
///
/// ```no_run
/// use postrider::dkim::{DkimKeyConfig, DkimSigner};
/// let signer = DkimSigner::load(&[DkimKeyConfig {
///     domain: "ourtest.com".parse()?,
///     selector: "pbx2026".into(),
///     key: "/etc/postrider/dkim/ourtest.com.pem".into(),
///     headers: None,
/// }])?;
/// for key in signer.keys() {
///     println!("{}", key.record().zone_line(&key.record_name()));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct DkimSigner {
    keys: Vec<DomainKey>,
}

impl DkimSigner {
    /// A signer with these keys (at most one per domain and algorithm).
    pub fn new(keys: Vec<DomainKey>) -> Result<DkimSigner, DkimConfigError> {
        let kind = |k: &DomainKey| match k.algorithm {
            KeyAlgorithm::Rsa { .. } => "RSA",
            KeyAlgorithm::Ed25519 => "Ed25519",
        };
        for (i, k) in keys.iter().enumerate() {
            if keys[..i]
                .iter()
                .any(|o| o.domain == k.domain && kind(o) == kind(k))
            {
                return Err(DkimConfigError::DuplicateDomain {
                    domain: k.domain.clone(),
                    algorithm: kind(k),
                });
            }
        }
        Ok(DkimSigner { keys })
    }

    /// Loads every configured key; the first bad entry is the error.
    pub fn load(configs: &[DkimKeyConfig]) -> Result<DkimSigner, DkimConfigError> {
        let keys = configs
            .iter()
            .map(DomainKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        DkimSigner::new(keys)
    }

    /// The keys, in configuration order.
    pub fn keys(&self) -> &[DomainKey] {
        &self.keys
    }

    /// The keys for mail from `domain`: its own, else the nearest parent's (none when no
    /// domain on the way has a key).
    pub fn keys_for(&self, domain: &Domain) -> Vec<&DomainKey> {
        let mut name = domain.as_str();
        loop {
            let found: Vec<&DomainKey> = self
                .keys
                .iter()
                .filter(|k| k.domain.as_str() == name)
                .collect();
            if !found.is_empty() {
                return found;
            }
            match name.split_once('.') {
                Some((_, parent)) => name = parent,
                None => return Vec::new(),
            }
        }
    }
}

impl MessageSigner for DkimSigner {
    fn sign(&self, _envelope: &Envelope, message: Bytes) -> Result<Bytes, SignError> {
        let Some(domain) = author_domain(&message) else {
            return Ok(message);
        };
        let keys = self.keys_for(&domain);
        if keys.is_empty() {
            return Ok(message);
        }
        let converted = match downgrade(
            &message,
            Target {
                eight_bit: false,
                utf8_headers: true,
            },
        ) {
            Ok(std::borrow::Cow::Borrowed(_)) => message,
            Ok(std::borrow::Cow::Owned(v)) => Bytes::from(v),
            Err(e) => {
                // Too deeply nested to convert: signed as it is; a server without 8BITMIME
                // will refuse it at delivery with the same reason.
                tracing::warn!(target: "postrider::dkim", "signing the message for {domain} unconverted: {e}");
                message
            }
        };
        let fields = keys
            .iter()
            .map(|k| k.signature_field(&converted))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = BytesMut::with_capacity(
            fields.iter().map(String::len).sum::<usize>() + converted.len(),
        );
        for field in &fields {
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&converted);
        Ok(out.freeze())
    }
}

/// The domain of the (first) `From:` address: what DMARC aligns a signature with.
pub fn author_domain(message: &[u8]) -> Option<Domain> {
    let h = HeaderSection::parse(message);
    let from = h.named("From").next()?;
    let value = from.unfolded_value(message);
    let text = std::str::from_utf8(&value).ok()?;
    let first = parse_address_list(text).ok()?.into_iter().next()?;
    Address::parse(&first).ok().map(|a| a.domain().clone())
}

/// Labels of letters, digits and hyphens, separated by dots (RFC 6376 §3.1).
fn is_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// RFC 5322 §3.6.8: printable ASCII except `:`.
fn is_field_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::ReversePath;
    use crate::dkim::key::tests::{ED25519_PEM, RSA_PKCS8_PEM};

    fn key(domain: &str, pem: &str) -> DomainKey {
        DomainKey::new(
            &DkimKeyConfig {
                domain: Domain::parse(domain).unwrap(),
                selector: "sel".into(),
                key: "test.pem".into(),
                headers: None,
            },
            PrivateKey::parse(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn envelope() -> Envelope {
        Envelope::new(
            ReversePath::parse("bounces@other.example").unwrap(),
            [Address::parse("a@example.org").unwrap()],
        )
    }

    #[test]
    fn the_author_domain_is_the_first_from_address_s() {
        assert_eq!(
            author_domain(b"To: x@y.example\r\nFrom: \"Voice, Mail\" <vm@PBX.Example.com>\r\n\r\n"),
            Some(Domain::parse("pbx.example.com").unwrap())
        );
        assert_eq!(author_domain(b"Subject: no from\r\n\r\n"), None);
        assert_eq!(author_domain(b"From: undisclosed\r\n\r\n"), None);
    }

    #[test]
    fn the_nearest_configured_domain_signs() {
        let signer = DkimSigner::new(vec![key("example.com", RSA_PKCS8_PEM)]).unwrap();
        let sub = Domain::parse("pbx.example.com").unwrap();
        let keys = signer.keys_for(&sub);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].domain().as_str(), "example.com");
        assert!(
            signer
                .keys_for(&Domain::parse("example.org").unwrap())
                .is_empty()
        );
    }

    #[test]
    fn mail_from_an_unconfigured_domain_is_left_as_it_is() {
        let signer = DkimSigner::new(vec![key("example.com", ED25519_PEM)]).unwrap();
        let msg = Bytes::from_static(b"From: a@elsewhere.example\r\n\r\nhi\r\n");
        let out = signer.sign(&envelope(), msg.clone()).unwrap();
        assert_eq!(out.as_ptr(), msg.as_ptr(), "not even copied");
    }

    #[test]
    fn a_signed_message_starts_with_the_signature_and_has_a_7bit_body() {
        let signer = DkimSigner::new(vec![key("example.com", ED25519_PEM)]).unwrap();
        let msg = Bytes::from("From: vm@example.com\r\nSubject: x\r\n\r\nCaf\u{e9}\r\n");
        let out = signer.sign(&envelope(), msg).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.starts_with(
                "DKIM-Signature: v=1; a=ed25519-sha256; s=sel; d=example.com; c=relaxed/relaxed;"
            ),
            "{text}"
        );
        // Every listed field is signed, present or not (absent ones as absent).
        assert!(
            text.contains(
                "h=Content-Transfer-Encoding:MIME-Version:Content-Type:Subject:From:To:Cc"
            ),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nCaf=C3=A9\r\n"), "{text}");
    }

    #[test]
    fn bad_selectors_and_header_lists_are_refused() {
        let config = |selector: &str, headers: Option<Vec<String>>| DkimKeyConfig {
            domain: Domain::parse("example.com").unwrap(),
            selector: selector.into(),
            key: "k.pem".into(),
            headers,
        };
        let k = || PrivateKey::parse(ED25519_PEM.as_bytes()).unwrap();
        assert!(matches!(
            DomainKey::new(&config("a_b", None), k()),
            Err(DkimConfigError::BadSelector { .. })
        ));
        assert!(DomainKey::new(&config("2026.pbx", None), k()).is_ok());
        assert!(matches!(
            DomainKey::new(&config("s", Some(vec!["To".into(), "Subject".into()])), k()),
            Err(DkimConfigError::FromNotSigned { .. })
        ));
        assert!(matches!(
            DomainKey::new(&config("s", Some(vec!["From".into(), "X:Y".into()])), k()),
            Err(DkimConfigError::BadHeader { .. })
        ));
        assert!(matches!(
            DkimSigner::new(vec![
                key("example.com", ED25519_PEM),
                key("example.com", ED25519_PEM)
            ]),
            Err(DkimConfigError::DuplicateDomain {
                algorithm: "Ed25519",
                ..
            })
        ));
    }

    #[test]
    fn a_domain_with_an_rsa_and_an_ed25519_key_gets_both_signatures() {
        let signer = DkimSigner::new(vec![
            key("example.com", RSA_PKCS8_PEM),
            key("example.com", ED25519_PEM),
        ])
        .unwrap();
        let msg = Bytes::from_static(b"From: vm@example.com\r\n\r\nhi\r\n");
        let out = String::from_utf8(signer.sign(&envelope(), msg).unwrap().to_vec()).unwrap();
        assert_eq!(out.matches("DKIM-Signature:").count(), 2, "{out}");
        assert!(out.starts_with("DKIM-Signature: v=1; a=rsa-sha256;"));
        assert!(out.contains("DKIM-Signature: v=1; a=ed25519-sha256;"));
    }
}
