//! Transport security for direct-to-MX delivery: which TLS a recipient domain's MX hosts
//! must offer, learnt from the domain itself.
//!
//! - **DANE** (RFC 7672, [`dane`]): when the domain's MX records are DNSSEC-signed and an MX
//!   host publishes signed TLSA records at `_25._tcp.<mx>`, TLS is required and the
//!   certificate must match them. DANE wins over MTA-STS for that host (RFC 8461 §2).
//! - **MTA-STS** (RFC 8461, [`mta_sts`]): a policy fetched over HTTPS and cached; `enforce`
//!   allows only the listed MX hosts, with TLS and a certificate valid for the MX name;
//!   `testing` delivers as usual and reports what `enforce` would have refused.
//! - **TLS-RPT** (RFC 8460, [`report`]): every session under a policy is counted, and a daily
//!   report goes to the domain's `_smtp._tls` address.
//!
//! None of this applies to a next hop the policy file names (`[smtp.example.com]:587
//! verify`, `example.org none`): the administrator's line wins over what DNS says. Nor to a
//! bracketed relay or smart host, whose name is not a mail domain. [`explain()`] tells which
//! rule applies to a domain and why, in words.
//!
//! ```
//! use postrider::tls_policy::{StsMode, StsPolicy};
//! let p = StsPolicy::parse("version: STSv1\nmode: testing\nmx: *.example.com\nmax_age: 86400\n")?;
//! assert_eq!(p.mode, StsMode::Testing);
//! # Ok::<(), postrider::tls_policy::StsPolicyError>(())
//! ```

pub mod dane;
mod explain;
pub mod mta_sts;
pub mod report;
mod report_send;
mod report_store;
mod report_task;
mod rules;
mod state_file;
pub mod sts_cache;
pub mod sts_policy;

pub use explain::{PolicySource, TlsPolicyExplanation, explain};
pub use mta_sts::{Clock, MtaSts, StsLookup};
pub use report::{DueReport, PolicyKind, ReportedPolicy, TlsReporter};
pub use report_send::TLSRPT_GZIP;
pub use report_store::ReportStoreError;
pub use report_task::{ReportSchedule, ReportSender, ReportTask, ReportTrigger};
pub(crate) use rules::result_for_handshake;
pub use rules::{Discovered, HostRule, OutboundTls};
pub use sts_cache::{CachedPolicy, StsCache};
pub use sts_policy::{MAX_MAX_AGE, MxPattern, StsMode, StsPolicy, StsPolicyError};
