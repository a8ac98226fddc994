//! The SPF checker: mail-auth's evaluation, on the configured name servers, with a bounded
//! per-(domain, address) cache that honours the records' TTLs.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, Parameters};
use tokio::time::Instant;

use super::cache::VerdictCache;
use super::diagnose;
use super::lookup::{Fetched, SpfDns};
use super::trace::{Recorder, Seeded};
use super::verdict::{SpfIdentity, SpfResult, SpfVerdict};
use crate::address::{Domain, ReversePath};
use crate::resolve::{DnsResolver, ResolveConfigError};
use crate::status::Severity;

/// Settings of an [`SpfChecker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfOptions {
    /// At most this many (domain, address) verdicts are cached; the soonest to expire goes
    /// first when full. At least 1.
    pub cache_capacity: usize,
    /// A verdict is kept at most this long even when its records' TTLs are longer, so a fixed
    /// SPF record is noticed within this time (receivers may still hold the old one for its
    /// TTL). [`SpfChecker::clear_cache`] forgets at once.
    pub max_ttl: Duration,
    /// How long a `temperror` is kept: there is no TTL for a failure, and RFC 2308 §7.1 allows
    /// caching a server failure for up to 5 minutes. It spares a batch of messages from the
    /// same sender one DNS timeout each.
    pub temp_error_ttl: Duration,
}

impl Default for SpfOptions {
    fn default() -> SpfOptions {
        SpfOptions {
            cache_capacity: 1024,
            max_ttl: Duration::from_secs(3600),
            temp_error_ttl: Duration::from_secs(60),
        }
    }
}

/// Why an [`SpfChecker`] could not be built. Never temporary: the configuration must change.
#[derive(Debug, thiserror::Error)]
pub enum SpfCheckerError {
    /// The system's resolver configuration could not be used.
    #[error("cannot set up DNS for SPF checks: {0}")]
    Dns(#[from] ResolveConfigError),
    /// hickory refused the resolver configuration.
    #[error("cannot build the DNS resolver for SPF checks: {reason}")]
    Build {
        /// hickory's message.
        reason: String,
    },
    /// `cache_capacity` was 0.
    #[error(
        "the SPF cache capacity must be at least 1 (to stop checking SPF, set the SPF policy to off)"
    )]
    ZeroCacheCapacity,
}

impl SpfCheckerError {
    /// Always permanent: retrying with the same configuration cannot help.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }

    /// Always false.
    pub fn is_temporary(&self) -> bool {
        false
    }
}

/// Evaluates SPF for (sending address, MAIL FROM or HELO identity), through the same name
/// servers as a [`DnsResolver`], and caches each verdict per (domain, address) for as long as
/// every record it was built from is valid (at most [`SpfOptions::max_ttl`]).
///
/// Cheap to clone: clones share the cache. Build it inside the tokio runtime that uses it.
///
/// ```no_run
/// use postrider::resolve::{DnsOptions, DnsResolver};
/// use postrider::spf::{decide, SpfChecker, SpfDecision, SpfOptions, SpfPolicy};
/// use postrider::{Domain, ReversePath};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dns = DnsResolver::with_name_servers(&["192.168.1.1:53".parse()?], DnsOptions::default())?;
/// let spf = SpfChecker::new(&dns, SpfOptions::default())?;
/// let sender = ReversePath::parse("voicemail@ourtest.com")?;
/// let helo: Domain = "sipserver1.ourtest.com".parse()?;
///
/// let verdict = spf.check("203.0.113.5".parse()?, &sender, &helo).await;
/// match decide(SpfPolicy::SmartHost, &verdict, true) {
///     SpfDecision::Deliver => {}
///     SpfDecision::DeliverWithWarning(advice) => eprintln!("warning: {advice}"),
///     SpfDecision::UseSmartHost(advice) => eprintln!("via the smart host: {advice}"),
///     SpfDecision::Defer { status, advice } => eprintln!("deferred {status}: {advice}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SpfChecker {
    inner: Arc<Inner>,
}

struct Inner {
    auth: MessageAuthenticator,
    dns: SpfDns,
    cache: VerdictCache,
    options: SpfOptions,
}

impl fmt::Debug for SpfChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpfChecker")
            .field("name_servers", &self.inner.dns.words.name_servers())
            .field("options", &self.inner.options)
            .field("cached", &self.inner.cache.len())
            .finish()
    }
}

impl SpfChecker {
    /// A checker that asks the same name servers, with the same timeout and attempts, as
    /// `dns` (split DNS and tests point both at the same servers).
    ///
    /// It has its own hickory resolver without a response cache: the verdict cache is the
    /// cache, and its expiry is computed from the TTLs of the answers, so a lower cache
    /// cannot serve stale records to a re-evaluation.
    pub fn new(dns: &DnsResolver, options: SpfOptions) -> Result<SpfChecker, SpfCheckerError> {
        if options.cache_capacity == 0 {
            return Err(SpfCheckerError::ZeroCacheCapacity);
        }
        let (config, mut opts) = dns.hickory_config();
        opts.cache_size = 0;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| SpfCheckerError::Build {
                reason: e.to_string(),
            })?;
        Ok(SpfChecker {
            inner: Arc::new(Inner {
                auth: MessageAuthenticator(resolver.clone()),
                dns: SpfDns {
                    resolver,
                    words: dns.clone(),
                },
                cache: VerdictCache::new(options.cache_capacity),
                options,
            }),
        })
    }

    /// A checker on the system's name servers (`/etc/resolv.conf`).
    pub fn from_system(options: SpfOptions) -> Result<SpfChecker, SpfCheckerError> {
        SpfChecker::new(&DnsResolver::from_system()?, options)
    }

    /// The options in effect.
    pub fn options(&self) -> &SpfOptions {
        &self.inner.options
    }

    /// Does SPF for `sender`'s domain authorise `ip` to send its mail? For `<>` (bounces)
    /// the HELO name is the identity checked (RFC 7208 §2.4), so `helo` should be the name
    /// the transport will send in EHLO.
    ///
    /// Never fails: DNS trouble is a [`SpfResult::TempError`] verdict that says what failed.
    /// An IPv4-mapped IPv6 address is checked as the IPv4 address it is.
    pub async fn check(&self, ip: IpAddr, sender: &ReversePath, helo: &Domain) -> SpfVerdict {
        match sender {
            ReversePath::Null => {
                self.check_identity(ip, helo, SpfIdentity::Helo, None, helo)
                    .await
            }
            ReversePath::Address(address) => {
                let full = format!("{}@{}", address.local_part(), address.domain());
                self.check_identity(
                    ip,
                    address.domain(),
                    SpfIdentity::MailFrom,
                    Some(&full),
                    helo,
                )
                .await
            }
        }
    }

    /// Does SPF for `domain` authorise `ip`, for mail from any address in it? What the
    /// doctor asks for the configured sender domain and egress address. The HELO name only
    /// matters to records that use the `%{h}` macro; `domain` stands in for it.
    pub async fn check_domain(&self, ip: IpAddr, domain: &Domain) -> SpfVerdict {
        // RFC 7208 §4.3: "postmaster" stands in for a missing local part.
        let sender = format!("postmaster@{domain}");
        self.check_identity(ip, domain, SpfIdentity::MailFrom, Some(&sender), domain)
            .await
    }

    /// Forgets every cached verdict, so the next check reads the records again (after an
    /// SPF record was fixed, say).
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    async fn check_identity(
        &self,
        ip: IpAddr,
        domain: &Domain,
        identity: SpfIdentity,
        // The full MAIL FROM address; `None` for the HELO identity.
        sender: Option<&str>,
        helo: &Domain,
    ) -> SpfVerdict {
        let ip = ip.to_canonical();
        if let Some(mut cached) = self.inner.cache.get(domain, ip) {
            // The record is the same for both identities; only the label differs.
            cached.identity = identity;
            return cached;
        }
        let (verdict, expires) = self.evaluate(ip, domain, identity, sender, helo).await;
        tracing::debug!(
            target: "postrider::spf",
            "{verdict}{}",
            verdict.advice().map(|a| format!(": {a}")).unwrap_or_default()
        );
        let cap = Instant::now() + self.inner.options.max_ttl;
        self.inner.cache.insert(verdict.clone(), expires.min(cap));
        verdict
    }

    /// One evaluation, and when its verdict stops being valid.
    async fn evaluate(
        &self,
        ip: IpAddr,
        domain: &Domain,
        identity: SpfIdentity,
        sender: Option<&str>,
        helo: &Domain,
    ) -> (SpfVerdict, Instant) {
        let mut verdict = SpfVerdict {
            result: SpfResult::None,
            domain: domain.clone(),
            ip,
            identity,
            problem: None,
            explanation: None,
        };
        let forever = Instant::now() + self.inner.options.max_ttl;
        if domain.is_single_label() {
            verdict.problem = Some(match identity {
                SpfIdentity::Helo => format!(
                    "it is not fully qualified, and bounces are checked against the HELO name: \
                     set this host's full name (e.g. {domain}.example.com)"
                ),
                SpfIdentity::MailFrom => {
                    "it is not fully qualified: send from an address in a real domain".to_string()
                }
            });
            return (verdict, forever);
        }

        let (spf, top_expires) = match self.inner.dns.spf_record(domain.as_str()).await {
            Fetched::Record { spf, expires } => (spf, expires),
            Fetched::NoRecord { expires } => return (verdict, expires),
            Fetched::Broken { problem, expires } => {
                verdict.result = SpfResult::PermError;
                verdict.problem = Some(problem);
                return (verdict, expires);
            }
            Fetched::Failed { reason } => {
                verdict.result = SpfResult::TempError;
                verdict.problem = Some(format!("the TXT lookup of {domain} failed: {reason}"));
                return (verdict, Instant::now() + self.inner.options.temp_error_ttl);
            }
        };

        let recorder = Recorder::default();
        let seeded = Seeded {
            name: format!("{domain}.").into_boxed_str(),
            spf: spf.clone(),
            recorder: &recorder,
        };
        let helo_name = helo.as_str();
        // The receiving host's name (`%{r}`, only used in explanations) is not known before
        // connecting; ours stands in.
        let params = match sender {
            Some(sender) => SpfParameters::verify_mail_from(ip, helo_name, helo_name, sender),
            None => SpfParameters::verify_ehlo(ip, helo_name, helo_name),
        };
        let output = self
            .inner
            .auth
            .verify_spf(
                Parameters::new(params)
                    .with_txt_cache(&seeded)
                    .with_mx_cache(&recorder)
                    .with_ipv4_cache(&recorder)
                    .with_ipv6_cache(&recorder)
                    .with_ptr_cache(&recorder),
            )
            .await;
        self.finish(verdict, output, spf, top_expires, &recorder)
            .await
    }

    async fn finish(
        &self,
        mut verdict: SpfVerdict,
        output: mail_auth::SpfOutput,
        spf: Arc<mail_auth::spf::Spf>,
        top_expires: Instant,
        recorder: &Recorder,
    ) -> (SpfVerdict, Instant) {
        verdict.result = output.result().into();
        verdict.explanation = output.explanation().map(printable);
        let mut expires = recorder
            .earliest()
            .map_or(top_expires, |e| e.min(top_expires));
        match verdict.result {
            SpfResult::PermError | SpfResult::TempError => {
                let found = diagnose::explain(
                    &self.inner.dns,
                    verdict.domain.as_str(),
                    spf,
                    verdict.result,
                    verdict.ip,
                )
                .await;
                verdict.problem = Some(found.unwrap_or_else(|| {
                    if verdict.result == SpfResult::TempError {
                        "a DNS lookup failed temporarily during the evaluation, and answered when \
                         asked again"
                            .to_string()
                    } else {
                        "the evaluation gave a permanent error that a re-read of the records \
                         does not explain (an mx term naming more than 10 hosts, or a macro \
                         that expands to an invalid name?)"
                            .to_string()
                    }
                }));
                if verdict.result == SpfResult::TempError {
                    expires = Instant::now() + self.inner.options.temp_error_ttl;
                }
            }
            _ => {}
        }
        (verdict, expires)
    }
}

/// The domain's `exp=` text, which it controls, made safe for a log line: control
/// characters become spaces and the length is bounded.
fn printable(text: &str) -> String {
    const MAX: usize = 300;
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if text.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explanation_cannot_break_a_log_line() {
        assert_eq!(printable("not\r\nours"), "not  ours");
        let long = printable(&"x".repeat(1000));
        assert_eq!(long.chars().count(), 303);
    }
}
