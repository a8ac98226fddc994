//! The DNS lookups the checker makes itself (not through mail-auth): the top-level SPF
//! record with its TTL, and the re-reads that explain a `permerror` or `temperror`.

use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use mail_auth::spf::Spf;
use tokio::time::Instant;

use super::record::{self, Selection};
use crate::resolve::DnsResolver;

/// What a name's TXT records say about SPF.
#[derive(Debug, Clone)]
pub(crate) enum Fetched {
    /// One SPF record that parses.
    Record {
        /// The parsed record.
        spf: Arc<Spf>,
        /// When the TXT answer expires.
        expires: Instant,
    },
    /// No SPF record: the name does not exist, has no TXT records, or none is SPF.
    NoRecord {
        /// When the (negative) answer expires.
        expires: Instant,
    },
    /// The record is broken: several SPF records, or one that does not parse.
    Broken {
        /// What is wrong, in words.
        problem: String,
        /// When the TXT answer expires.
        expires: Instant,
    },
    /// The lookup failed temporarily.
    Failed {
        /// Why, in the words [`DnsResolver`] uses (`SERVFAIL from 127.0.0.1:5353`).
        reason: String,
    },
}

/// Lookups through the checker's own hickory resolver (same servers as the [`DnsResolver`]
/// it was built from, no response cache: see `SpfChecker`).
#[derive(Clone)]
pub(crate) struct SpfDns {
    pub(crate) resolver: TokioResolver,
    /// Only for wording failures the way the rest of postrider does.
    pub(crate) words: DnsResolver,
}

impl SpfDns {
    /// The SPF record published at `name` (an absolute or relative domain name).
    pub(crate) async fn spf_record(&self, name: &str) -> Fetched {
        let Some(query) = absolute(name) else {
            return Fetched::Broken {
                problem: format!(
                    "{} is not a valid domain name",
                    record::quote(name.as_bytes())
                ),
                expires: Instant::now(),
            };
        };
        match self.resolver.lookup(query, RecordType::TXT).await {
            Ok(lookup) => {
                let expires = from_std(lookup.valid_until());
                let texts: Vec<Vec<u8>> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(txt.txt_data.concat()),
                        _ => None,
                    })
                    .collect();
                match record::select(texts) {
                    Selection::None => Fetched::NoRecord { expires },
                    Selection::Several(records) => Fetched::Broken {
                        problem: record::explain_several(&records),
                        expires,
                    },
                    Selection::One(text) => match record::parse(&text) {
                        Ok(spf) => Fetched::Record {
                            spf: Arc::new(spf),
                            expires,
                        },
                        Err(problem) => Fetched::Broken { problem, expires },
                    },
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
                response_code: ResponseCode::NXDomain | ResponseCode::NoError,
                negative_ttl,
                ..
            }))) => Fetched::NoRecord {
                // RFC 2308 §5: a negative answer without an SOA (so without a negative TTL)
                // is not cached.
                expires: Instant::now() + Duration::from_secs(negative_ttl.unwrap_or(0).into()),
            },
            Err(e) => Fetched::Failed {
                reason: self.words.describe_failure(&e),
            },
        }
    }

    /// Asks `name` for `rtype` and reports a temporary failure; an answer, NXDOMAIN or no
    /// data are all fine here (SPF treats the last two as "no match").
    pub(crate) async fn probe(&self, name: &str, rtype: RecordType) -> Result<(), String> {
        let Some(query) = absolute(name) else {
            return Ok(());
        };
        match self.resolver.lookup(query, rtype).await {
            Ok(_) => Ok(()),
            Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
                response_code: ResponseCode::NXDomain | ResponseCode::NoError,
                ..
            }))) => Ok(()),
            Err(e) => Err(self.words.describe_failure(&e)),
        }
    }
}

/// `name` as an absolute DNS name; `None` when it is not a valid one.
fn absolute(name: &str) -> Option<Name> {
    let mut n = Name::from_str_relaxed(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// A hickory deadline (`std::time::Instant`) on tokio's clock, which tests can pause and
/// advance: the remaining time is measured now and added to tokio's now.
pub(crate) fn from_std(deadline: std::time::Instant) -> Instant {
    Instant::now() + deadline.saturating_duration_since(std::time::Instant::now())
}
