//! DKIM private keys from files: RSA (2048 bits or more, RFC 8301) or Ed25519 (RFC 8463), in
//! PEM (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY`) or DER (PKCS #8 or PKCS #1), as
//! `openssl genpkey` and `opendkim-genkey` write them. The key is handed to mail-auth, whose
//! ring backend does all the cryptography.

use std::fmt;
use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

use crate::status::Severity;

/// The largest key file read (a 4096-bit RSA key in PEM is about 3.3 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The signing algorithm a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA with SHA-256 (`rsa-sha256`), with the modulus size in bits.
    Rsa {
        /// The modulus size.
        bits: usize,
    },
    /// Ed25519 with SHA-256 (`ed25519-sha256`, RFC 8463).
    Ed25519,
}

impl KeyAlgorithm {
    /// The `k=` tag of the DNS record: `rsa` or `ed25519`.
    pub fn key_type(&self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa { .. } => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// What is wrong with a key file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Read(String),
    /// Larger than any key file.
    #[error("it is {size} bytes long, too long for a key file")]
    TooLarge {
        /// Its size.
        size: u64,
    },
    /// PEM text with a public key and no private key.
    #[error(
        "it holds a public key; DKIM signing needs the private key (the public key goes in DNS)"
    )]
    PublicKey,
    /// An encrypted PEM key.
    #[error(
        "the private key is encrypted; write it unencrypted (openssl pkey -in FILE -out KEY) and \
         make the file readable only by postrider"
    )]
    Encrypted,
    /// PEM text without a private key block.
    #[error("it holds no PRIVATE KEY block")]
    NoPrivateKey,
    /// PEM text that does not decode.
    #[error("its PEM text is malformed: {0}")]
    BadPem(String),
    /// A key of another type (EC, DSA, X25519, ...).
    #[error("it holds {0} key; DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256)")]
    Unsupported(&'static str),
    /// An RSA key shorter than 2048 bits (RFC 8301 §3.2: verifiers may refuse shorter).
    #[error(
        "its RSA key is shorter than 2048 bits, which receivers refuse (RFC 8301); generate a \
         new one: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048"
    )]
    RsaTooSmall,
    /// An RSA key larger than ring signs with.
    #[error("its RSA key is longer than 4096 bits, which the signer cannot use")]
    RsaTooLarge,
    /// DER that is no key postrider can read.
    #[error("it is not a PKCS #8 or PKCS #1 private key ({0})")]
    Malformed(String),
}

/// A key file that cannot be used: the file and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DKIM key file {}: {problem}", file.display())]
pub struct KeyError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: KeyProblem,
}

impl KeyError {
    /// Permanent: the file must be fixed (a read error too: the start-up stops on it).
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

/// A private key ready to sign, and the public key that goes in DNS.
pub struct PrivateKey {
    pub(crate) algorithm: KeyAlgorithm,
    /// The `p=` octets: SubjectPublicKeyInfo for RSA (what `opendkim-genkey` publishes),
    /// the raw 32 octets for Ed25519 (RFC 8463 §4.2).
    pub(crate) public: Vec<u8>,
    pub(crate) key: Key,
}

pub(crate) enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads a key file.
    pub fn load(path: &Path) -> Result<PrivateKey, KeyError> {
        let error = |problem| KeyError {
            file: path.to_path_buf(),
            problem,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| error(KeyProblem::Read(e.to_string())))?
            .len();
        if size > MAX_KEY_FILE {
            return Err(error(KeyProblem::TooLarge { size }));
        }
        let bytes = std::fs::read(path).map_err(|e| error(KeyProblem::Read(e.to_string())))?;
        PrivateKey::parse(&bytes).map_err(error)
    }

    /// Reads a key from PEM text or DER octets.
    pub fn parse(bytes: &[u8]) -> Result<PrivateKey, KeyProblem> {
        if memchr::memmem::find(bytes, b"-----BEGIN").is_some() {
            let der = match PrivateKeyDer::from_pem_slice(bytes) {
                Ok(der) => der,
                Err(pem::Error::NoItemsFound) => {
                    return Err(if contains(bytes, b"ENCRYPTED PRIVATE KEY") {
                        KeyProblem::Encrypted
                    } else if contains(bytes, b"PUBLIC KEY") {
                        KeyProblem::PublicKey
                    } else {
                        KeyProblem::NoPrivateKey
                    });
                }
                Err(e) => return Err(KeyProblem::BadPem(e.to_string())),
            };
            return from_der(der);
        }
        // DER: PKCS #8 announces its algorithm; anything else is tried as PKCS #1.
        match pkcs8_algorithm(bytes) {
            Some(_) => from_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                bytes.to_vec(),
            ))),
            None => from_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(
                bytes.to_vec(),
            ))),
        }
    }

    /// The algorithm (and size).
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public key as the DNS record's `p=` carries it (before base64).
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pkcs8Algorithm {
    Rsa,
    Ed25519,
    Other(&'static str),
}

/// The algorithm a PKCS #8 key names, found by its object identifier near the start
/// (`PrivateKeyInfo` = version, `AlgorithmIdentifier`, key); `None` when it is not PKCS #8.
fn pkcs8_algorithm(der: &[u8]) -> Option<Pkcs8Algorithm> {
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const X25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x6e];
    const DSA: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
    // SEQUENCE, then INTEGER version (0 or 1): PKCS #1 starts the same way, but its next
    // element is an INTEGER, not the AlgorithmIdentifier SEQUENCE with an OID.
    let head = &der[..der.len().min(32)];
    for (oid, alg) in [
        (RSA, Pkcs8Algorithm::Rsa),
        (ED25519, Pkcs8Algorithm::Ed25519),
        (EC, Pkcs8Algorithm::Other("an EC (ECDSA)")),
        (X25519, Pkcs8Algorithm::Other("an X25519")),
        (DSA, Pkcs8Algorithm::Other("a DSA")),
    ] {
        if contains(head, oid) {
            return Some(alg);
        }
    }
    None
}

fn from_der(der: PrivateKeyDer<'_>) -> Result<PrivateKey, KeyProblem> {
    let algorithm = match &der {
        PrivateKeyDer::Pkcs1(_) => Pkcs8Algorithm::Rsa,
        PrivateKeyDer::Pkcs8(k) => pkcs8_algorithm(k.secret_pkcs8_der())
            .ok_or_else(|| KeyProblem::Malformed("no known algorithm identifier".into()))?,
        PrivateKeyDer::Sec1(_) => return Err(KeyProblem::Unsupported("an EC (ECDSA)")),
        _ => return Err(KeyProblem::Unsupported("an unknown kind of")),
    };
    match algorithm {
        Pkcs8Algorithm::Other(what) => Err(KeyProblem::Unsupported(what)),
        Pkcs8Algorithm::Ed25519 => {
            let PrivateKeyDer::Pkcs8(k) = &der else {
                unreachable!("invariant: only PKCS #8 names Ed25519");
            };
            // "maybe unchecked": OpenSSL writes PKCS #8 v1, without the public key.
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der())
                .map_err(|e| KeyProblem::Malformed(e.to_string()))?;
            Ok(PrivateKey {
                algorithm: KeyAlgorithm::Ed25519,
                public: key.public_key(),
                key: Key::Ed25519(key),
            })
        }
        Pkcs8Algorithm::Rsa => {
            let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| {
                let text = e.to_string();
                if text.contains("TooSmall") {
                    KeyProblem::RsaTooSmall
                } else if text.contains("TooLarge") {
                    KeyProblem::RsaTooLarge
                } else {
                    KeyProblem::Malformed(text)
                }
            })?;
            let pkcs1 = key.public_key();
            let bits = rsa_modulus_bits(&pkcs1).ok_or_else(|| {
                KeyProblem::Malformed("its public key cannot be read back".into())
            })?;
            if bits < 2048 {
                // ring refuses these already; this keeps the rule here whatever ring does.
                return Err(KeyProblem::RsaTooSmall);
            }
            Ok(PrivateKey {
                algorithm: KeyAlgorithm::Rsa { bits },
                public: rsa_spki(&pkcs1),
                key: Key::Rsa(key),
            })
        }
    }
}

/// The DER length octets of `len`.
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// An `RSAPublicKey` (PKCS #1) wrapped as `SubjectPublicKeyInfo` (RFC 5280 §4.1), the form
/// DKIM records carry for RSA (RFC 6376 §3.6.1).
pub(crate) fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }.
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_length(pkcs1.len() + 1, &mut bit_string);
    bit_string.push(0); // no unused bits
    bit_string.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_length(ALGORITHM.len() + bit_string.len(), &mut out);
    out.extend_from_slice(ALGORITHM);
    out.extend_from_slice(&bit_string);
    out
}

/// Reads a DER length at the start of `bytes`: (length, rest).
fn read_length(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    if first < 0x80 {
        return Some((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 || rest.len() < n {
        return None;
    }
    let len = rest[..n]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some((len, &rest[n..]))
}

/// One DER element with the expected tag: (content, rest).
fn element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = bytes.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = read_length(rest)?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The size in bits of an `RSAPublicKey`'s modulus.
pub(crate) fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let (seq, _) = element(pkcs1, 0x30)?;
    let (modulus, _) = element(seq, 0x02)?;
    let significant = modulus.iter().position(|&b| b != 0)?;
    let top = modulus[significant];
    Some((modulus.len() - significant - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// The `RSAPublicKey` inside a `SubjectPublicKeyInfo`, or the input when it is not one
/// (DKIM records carry either form).
pub(crate) fn rsa_public_key_of(p: &[u8]) -> &[u8] {
    let inner = || {
        let (spki, _) = element(p, 0x30)?;
        let (_algorithm, rest) = element(spki, 0x30)?;
        let (bits, _) = element(rest, 0x03)?;
        bits.strip_prefix(&[0])
    };
    inner().unwrap_or(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Keys made once by `openssl genpkey` (see `tests/data/dkim/README` for the commands).
    pub(crate) const RSA_PKCS8_PEM: &str = include_str!("../../tests/data/dkim/rsa2048.pem");
    pub(crate) const RSA_PKCS1_PEM: &str = include_str!("../../tests/data/dkim/rsa2048-pkcs1.pem");
    pub(crate) const ED25519_PEM: &str = include_str!("../../tests/data/dkim/ed25519.pem");
    const RSA1024_PEM: &str = include_str!("../../tests/data/dkim/rsa1024.pem");
    const EC_PEM: &str = include_str!("../../tests/data/dkim/ec.pem");
    const RSA_DER: &[u8] = include_bytes!("../../tests/data/dkim/rsa2048.der");
    const ED25519_DER: &[u8] = include_bytes!("../../tests/data/dkim/ed25519.der");
    const RSA_PUBLIC_DER: &[u8] = include_bytes!("../../tests/data/dkim/rsa2048-public.der");

    #[test]
    fn rsa_keys_load_from_pkcs8_and_pkcs1_pem_and_der() {
        for bytes in [RSA_PKCS8_PEM.as_bytes(), RSA_PKCS1_PEM.as_bytes(), RSA_DER] {
            let key = PrivateKey::parse(bytes).unwrap();
            assert_eq!(key.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });
            // The same public key as `openssl pkey -pubout -outform DER` writes.
            assert_eq!(key.public_key(), RSA_PUBLIC_DER);
        }
    }

    #[test]
    fn ed25519_keys_load_from_pem_and_der_and_publish_32_octets() {
        for bytes in [ED25519_PEM.as_bytes(), ED25519_DER] {
            let key = PrivateKey::parse(bytes).unwrap();
            assert_eq!(key.algorithm(), KeyAlgorithm::Ed25519);
            assert_eq!(key.public_key().len(), 32);
        }
    }

    #[test]
    fn unusable_keys_say_why() {
        assert_eq!(
            PrivateKey::parse(RSA1024_PEM.as_bytes()).unwrap_err(),
            KeyProblem::RsaTooSmall
        );
        assert_eq!(
            PrivateKey::parse(EC_PEM.as_bytes()).unwrap_err(),
            KeyProblem::Unsupported("an EC (ECDSA)")
        );
        assert_eq!(
            PrivateKey::parse(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .unwrap_err(),
            KeyProblem::PublicKey
        );
        assert_eq!(
            PrivateKey::parse(
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
            )
            .unwrap_err(),
            KeyProblem::Encrypted
        );
        assert!(matches!(
            PrivateKey::parse(b"not a key at all").unwrap_err(),
            KeyProblem::Malformed(_)
        ));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = PrivateKey::load(Path::new("/nonexistent/dkim.pem")).unwrap_err();
        assert_eq!(e.file, Path::new("/nonexistent/dkim.pem"));
        assert!(
            e.to_string()
                .starts_with("DKIM key file /nonexistent/dkim.pem: cannot read it"),
            "{e}"
        );
    }

    #[test]
    fn spki_wrapping_and_unwrapping_are_inverse() {
        let key = PrivateKey::parse(RSA_PKCS8_PEM.as_bytes()).unwrap();
        let pkcs1 = rsa_public_key_of(key.public_key());
        assert_ne!(pkcs1, key.public_key());
        assert_eq!(rsa_spki(pkcs1), key.public_key());
        assert_eq!(rsa_modulus_bits(pkcs1), Some(2048));
        assert_eq!(rsa_public_key_of(b"\x01\x02"), b"\x01\x02");
    }
}
