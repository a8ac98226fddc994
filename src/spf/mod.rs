//! SPF pre-flight: before a direct-to-MX delivery, does the sender domain's SPF record
//! (RFC 7208) let this host's address send its mail? If not, say how to fix it, and — as the
//! configured [`SpfPolicy`] says — warn, route through the smart host, or defer.
//!
//! A voicemail server whose public address is missing from its domain's SPF record sends mail
//! that receivers silently junk or refuse. This module finds that out before sending, and
//! names the fix: `SPF for ourtest.com does not authorise 203.0.113.5: add "ip4:203.0.113.5"
//! to its TXT record, or route through a smart host`.
//!
//! - [`SpfChecker::check`] evaluates (address, MAIL FROM domain or, for `<>`, HELO name) with
//!   mail-auth on the configured name servers, and caches the [`SpfVerdict`] per (domain,
//!   address) for the records' TTL.
//! - [`decide`] turns a verdict and the policy into an [`SpfDecision`]; it is pure.
//! - [`SpfVerdict::advice`] is the sentence for the log, the event and the doctor.
//!
//! The checks apply to direct-to-MX delivery only: mail through a smart host or a mailertable
//! relay leaves from that relay, whose address is the one receivers check.

mod cache;
mod checker;
mod diagnose;
mod lookup;
mod policy;
mod record;
mod trace;
mod verdict;

pub use checker::{SpfChecker, SpfCheckerError, SpfOptions};
pub use policy::{
    SPF_VALIDATION_ERROR, SPF_VALIDATION_FAILED, SpfDecision, SpfPolicy, SpfPolicyError, decide,
};
pub(crate) use verdict::is_public;
pub use verdict::{SpfIdentity, SpfResult, SpfVerdict, spf_term};
