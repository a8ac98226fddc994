//! `[tls]`: TLS policies the destination publishes (MTA-STS, DANE) and TLS-RPT, for mail
//! delivered straight to a domain's MX hosts.
//!
//! ```toml
//! [tls]
//! mta_sts = true                 # default: on
//! dane = true                    # default: off; DNSSEC-validated with the IANA root keys
//! dnssec_trust_anchor = "root.key"   # optional: other anchors (a private signed tree)
//! state_directory = "/var/lib/postrider"   # default: the spool directory (MTA-STS cache, TLS-RPT counts)
//! tls_rpt = false                # default: off; daily reports to _smtp._tls rua addresses (mailto: and https:)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::address::Domain;
use crate::https::{HttpsClient, HttpsError, HttpsOptions};
use crate::resolve::{DnsResolver, ResolveConfigError, SecureResolver};
use crate::tls_policy::{MtaSts, OutboundTls, StsCache, TlsReporter};

/// `[tls]` of `postrider.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsSection {
    /// Apply MTA-STS policies (RFC 8461) to direct MX delivery.
    pub mta_sts: bool,
    /// Apply DANE (RFC 7672) to direct MX delivery (off by default).
    pub dane: bool,
    /// A DNSSEC trust anchor file (hickory's format: DNSKEY records); the IANA root keys
    /// when absent.
    pub dnssec_trust_anchor: Option<PathBuf>,
    /// Where the MTA-STS policy cache (`mta-sts/` below it) and the TLS-RPT counts
    /// (`tls-rpt/counts.json`) live; the spool directory when absent, memory only when the
    /// spool is a database.
    pub state_directory: Option<PathBuf>,
    /// Collect TLS-RPT counts (RFC 8460) for daily reports.
    pub tls_rpt: bool,
}

impl Default for TlsSection {
    fn default() -> TlsSection {
        TlsSection {
            mta_sts: true,
            // Opt-in, as Postfix's `dane` level: a validating stub needs name servers that
            // return DNSSEC records and reach the root; behind one that strips them every
            // domain looks bogus and all MX mail would wait.
            dane: false,
            dnssec_trust_anchor: None,
            state_directory: None,
            tls_rpt: false,
        }
    }
}

/// Why the `[tls]` section cannot be put to work.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The trust anchor file cannot be read or parsed.
    #[error("[tls] dnssec_trust_anchor {}: {reason}", path.display())]
    TrustAnchor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The validating resolver could not be built.
    #[error("[tls] dane: {0}")]
    Resolver(#[from] ResolveConfigError),
    /// The HTTPS client for policy fetches and report posts could not be built.
    #[error("[tls] the HTTPS client (MTA-STS policies, TLS-RPT reports): {0}")]
    Https(#[from] HttpsError),
}

impl TlsSection {
    /// Resolves relative paths against the configuration file's directory.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for p in [
            self.dnssec_trust_anchor.as_mut(),
            self.state_directory.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The discovery side the section describes, or `None` when MTA-STS and DANE are both
    /// off. `spool_dir` is the default state directory; `roots` trust the policy hosts.
    pub fn outbound(
        &self,
        hostname: &Domain,
        dns: &DnsResolver,
        roots: rustls::RootCertStore,
        spool_dir: Option<&Path>,
    ) -> Result<Option<OutboundTls>, TlsConfigError> {
        if !self.mta_sts && !self.dane {
            return Ok(None);
        }
        // One client for policy fetches and report posts: the same trust anchors as
        // `verify`, the same DNS as the MX hosts.
        let https =
            HttpsClient::with_resolver(roots, HttpsOptions::default(), Arc::new(dns.clone()))?;
        let mta_sts = if self.mta_sts {
            let https = https.clone();
            let dir = self
                .state_directory
                .as_deref()
                .or(spool_dir)
                .map(|d| d.join("mta-sts"));
            Some(MtaSts::new(dns.clone(), https, StsCache::new(dir)))
        } else {
            None
        };
        let dane = if self.dane {
            let anchors = match &self.dnssec_trust_anchor {
                Some(path) => Some(
                    hickory_resolver::proto::dnssec::TrustAnchors::from_file(path).map_err(
                        |e| TlsConfigError::TrustAnchor {
                            path: path.clone(),
                            reason: e.to_string(),
                        },
                    )?,
                ),
                None => None,
            };
            Some(SecureResolver::new(dns, anchors)?)
        } else {
            None
        };
        let reporter = self.tls_rpt.then(|| {
            // Counts are kept where the policy cache is, so a restart keeps the day.
            let reporter = match self.state_directory.as_deref().or(spool_dir) {
                Some(dir) => {
                    let (reporter, error) = TlsReporter::open(hostname.to_string(), dir);
                    if let Some(e) = error {
                        tracing::error!(target: "postrider::tls_rpt", "{e}");
                    }
                    reporter
                }
                None => TlsReporter::new(hostname.to_string()),
            };
            Arc::new(reporter.with_https(https))
        });
        Ok(Some(OutboundTls::new(mta_sts, dane, reporter)))
    }
}
