//! DKIM signing (RFC 6376) at submission, so the signature is part of the queued message and
//! a retry sends the same signed octets.
//!
//! [`Engine::submit`](crate::engine::Engine::submit) hands each message, once its line endings
//! are CRLF and before it is queued, to the [`MessageSigner`] given to
//! [`EngineBuilder::signer`](crate::engine::EngineBuilder::signer). The default,
//! [`DkimSigner`], signs with the key of the message's `From:` domain (the domain DMARC
//! aligns with; the envelope sender plays no part), `relaxed/relaxed`, with mail-auth's
//! signer: no cryptography or canonicalisation is written here. A message from a domain
//! without a key is queued unsigned. Keys are read when the signer is built, so a missing or
//! bad key file stops the start-up with the file and the reason.
//!
//! The doctor prints the record each key needs (`selector._domainkey.domain TXT "v=DKIM1;
//! k=rsa; p=..."`, see [`DkimRecord`]) and checks that the published one matches.
//!
//! ```no_run
//! use std::sync::Arc;
//! use postrider::dkim::{DkimKeyConfig, DkimSigner};
//! use postrider::engine::Engine;
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let signer = DkimSigner::load(&[DkimKeyConfig {
//!     domain: "ourtest.com".parse()?,
//!     selector: "pbx2026".into(),
//!     key: "/etc/postrider/dkim/ourtest.com.pem".into(),
//!     headers: None,
//! }])?;
//! let builder = Engine::builder().signer(Arc::new(signer));
//! # let _ = builder; Ok(()) }
//! ```

mod key;
mod record;
mod signer;

use bytes::Bytes;

use crate::address::Domain;
use crate::envelope::Envelope;
use crate::status::Severity;

pub use key::{KeyAlgorithm, KeyError, KeyProblem, PrivateKey};
pub use record::{DkimRecord, RecordError, record_name};
pub use signer::{
    DEFAULT_SIGNED_HEADERS, DkimConfigError, DkimKeyConfig, DkimSigner, DomainKey, author_domain,
};

/// Signs a message as it is accepted.
///
/// `sign` gets the envelope and the CRLF-normalised message and returns the message to
/// queue: with its signature field(s) prepended, converted if the signer needs that (the
/// default converts 8-bit parts first, see [`DkimSigner`]), or unchanged. It runs in the
/// submitting task, before the message is durable; an error refuses the submission, so the
/// caller keeps the message.
pub trait MessageSigner: Send + Sync + 'static {
    /// The message to queue.
    fn sign(&self, envelope: &Envelope, message: Bytes) -> Result<Bytes, SignError>;
}

/// A message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The signer failed (mail-auth's words).
    #[error("DKIM signing for {domain} failed: {reason}")]
    Failed {
        /// The signing domain.
        domain: Domain,
        /// Why.
        reason: String,
    },
}

impl SignError {
    /// Temporary: nothing about the message makes signing fail, so the submission can be
    /// tried again.
    pub fn severity(&self) -> Severity {
        Severity::Temporary
    }
}
