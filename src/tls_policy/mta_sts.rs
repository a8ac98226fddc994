//! MTA-STS discovery (RFC 8461 §3, §5): the `_mta-sts` TXT record, the policy fetched over
//! HTTPS, and the cache that decides which policy applies when one of them is unavailable.
//!
//! The order of §5.1: a cached policy that has not expired is used as long as the TXT id is
//! unchanged (or the TXT lookup fails: an attacker who can block DNS must not be able to
//! remove a policy); a new id triggers a fetch, and the old policy stays when the fetch
//! fails. An expired policy is fetched again; when the policy host is down it is still used
//! (§5.1 says to keep applying it rather than fall back to no policy), and it is only
//! dropped once the TXT record is gone as well.

use std::sync::Arc;
use std::time::SystemTime;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::report::tlsrpt::ResultType;

use super::sts_cache::{CachedPolicy, StsCache};
use super::sts_policy::{StsMode, StsPolicy};
use crate::address::Domain;
use crate::https::{HttpsClient, HttpsUrl};
use crate::resolve::DnsResolver;

/// Where "now" comes from (tests move it forward; everything else uses the system clock).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The MTA-STS policy that applies to a domain, as [`MtaSts::lookup`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsLookup {
    /// The domain publishes no policy (no TXT record, nothing cached), or its policy says
    /// `mode: none`.
    NoPolicy,
    /// A policy applies.
    Policy {
        /// The policy, with its id and fetch time.
        cached: CachedPolicy,
        /// Why an older or expired copy is used, when it is ("the policy host is down: ...").
        stale: Option<String>,
    },
    /// A TXT record announces a policy, but it could not be fetched or parsed and none is
    /// cached: delivery goes on as without a policy (RFC 8461 §5), and TLS-RPT hears of it.
    Unavailable {
        /// What failed.
        reason: String,
        /// `sts-policy-fetch-error` or `sts-policy-invalid` (RFC 8460 §4.3.2.2).
        result: ResultType,
    },
}

/// MTA-STS for the SMTP client.
pub struct MtaSts {
    dns: DnsResolver,
    https: HttpsClient,
    cache: StsCache,
    clock: Clock,
}

impl std::fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtaSts")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

enum Txt {
    /// A valid `v=STSv1` record with this id.
    Id(String),
    /// No policy record (none, or not exactly one valid one: RFC 8461 §3.1).
    Absent,
    /// No answer.
    Failed(String),
}

impl MtaSts {
    /// Discovery through `dns` (TXT records, and the policy host's address) and `https`
    /// (trusting the roots it was built with), caching in `cache`.
    pub fn new(dns: DnsResolver, https: HttpsClient, cache: StsCache) -> MtaSts {
        MtaSts {
            dns,
            https,
            cache,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Replaces the clock (tests: an expired cache without waiting a day).
    pub fn with_clock(mut self, clock: Clock) -> MtaSts {
        self.clock = clock;
        self
    }

    /// The cache.
    pub fn cache(&self) -> &StsCache {
        &self.cache
    }

    /// The policy that applies to mail for `domain` now.
    pub async fn lookup(&self, domain: &Domain) -> StsLookup {
        let now = (self.clock)();
        let cached = self.cache.get(domain);
        let txt = self.txt(domain).await;
        match (cached, txt) {
            (Some(c), Txt::Id(id)) if id == c.id && !c.expired(now) => usable(c, None),
            (Some(c), Txt::Failed(reason)) if !c.expired(now) => {
                tracing::debug!(%domain, "MTA-STS TXT lookup failed ({reason}); using the cached policy");
                usable(c, None)
            }
            (Some(c), Txt::Absent) if !c.expired(now) => usable(c, None),
            (Some(c), Txt::Absent) => {
                // Expired, and the domain no longer announces a policy: it is gone.
                if let Err(e) = self.cache.remove(domain) {
                    tracing::warn!(%domain, "cannot remove the expired MTA-STS policy: {e}");
                }
                drop(c);
                StsLookup::NoPolicy
            }
            (Some(c), Txt::Failed(reason)) => usable(
                c,
                Some(format!(
                    "the cached policy expired and its TXT record cannot be looked up ({reason})"
                )),
            ),
            (Some(c), Txt::Id(id)) => match self.fetch(domain, &id, now).await {
                Ok(fresh) => usable(fresh, None),
                Err((reason, _)) => {
                    tracing::warn!(%domain, "MTA-STS policy refresh failed, keeping the cached policy: {reason}");
                    usable(
                        c,
                        Some(format!("the policy could not be refreshed: {reason}")),
                    )
                }
            },
            (None, Txt::Absent) => StsLookup::NoPolicy,
            (None, Txt::Failed(reason)) => {
                tracing::debug!(%domain, "MTA-STS TXT lookup failed and nothing is cached: {reason}");
                StsLookup::NoPolicy
            }
            (None, Txt::Id(id)) => match self.fetch(domain, &id, now).await {
                Ok(fresh) => usable(fresh, None),
                Err((reason, result)) => StsLookup::Unavailable { reason, result },
            },
        }
    }

    async fn txt(&self, domain: &Domain) -> Txt {
        let records = match self.dns.txt_records("_mta-sts", domain).await {
            Ok(r) => r,
            Err(e) => return Txt::Failed(e.to_string()),
        };
        // Only records that start with v=STSv1 count; more than one is an error (§3.1).
        let ids: Vec<String> = records
            .iter()
            .filter(|r| r.starts_with(b"v=STSv1"))
            .filter_map(|r| mail_auth::mta_sts::MtaSts::parse(r).ok().map(|m| m.id))
            .collect();
        match ids.as_slice() {
            [id] => Txt::Id(id.clone()),
            _ => Txt::Absent,
        }
    }

    async fn fetch(
        &self,
        domain: &Domain,
        id: &str,
        now: SystemTime,
    ) -> Result<CachedPolicy, (String, ResultType)> {
        let url: HttpsUrl = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
            .parse()
            .map_err(|e| (format!("{e}"), ResultType::StsPolicyFetchError))?;
        let response = self.https.get(&url).await.map_err(|e| {
            let result = match e {
                crate::https::HttpsError::Tls { .. } => ResultType::StsWebpkiInvalid,
                _ => ResultType::StsPolicyFetchError,
            };
            (e.to_string(), result)
        })?;
        if response.status != 200 {
            return Err((
                format!(
                    "{url} answered HTTP {} (RFC 8461 §3.3 needs 200)",
                    response.status
                ),
                ResultType::StsPolicyFetchError,
            ));
        }
        let plain = response
            .content_type
            .as_deref()
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"));
        if !plain {
            return Err((
                format!(
                    "{url} is served as {} (RFC 8461 §3.2 needs text/plain)",
                    response.content_type.as_deref().unwrap_or("no media type")
                ),
                ResultType::StsPolicyInvalid,
            ));
        }
        let policy = StsPolicy::parse_bytes(&response.body)
            .map_err(|e| (format!("{url}: {e}"), ResultType::StsPolicyInvalid))?;
        let cached = CachedPolicy {
            id: id.to_string(),
            fetched: now,
            policy,
            text: String::from_utf8_lossy(&response.body).into_owned(),
        };
        if let Err(e) = self.cache.put(domain, cached.clone()) {
            tracing::warn!(%domain, "cannot store the MTA-STS policy in the cache: {e}");
        }
        Ok(cached)
    }
}

fn usable(cached: CachedPolicy, stale: Option<String>) -> StsLookup {
    if cached.policy.mode == StsMode::None {
        return StsLookup::NoPolicy;
    }
    StsLookup::Policy { cached, stale }
}
