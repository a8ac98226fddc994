//! ESMTP delivery over tokio and rustls: the default [`Transport`].
//!
//! [`EsmtpTransport`] takes a [`Route::Relay`] and a batch of messages,
//! finds the hosts of each next hop (MX records for unbracketed domains, the host itself for
//! bracketed ones, each address in the resolver's order, then the fallback hops), and carries
//! every message over one session per host: EHLO, STARTTLS and AUTH per the hop's
//! [`HopPolicy`](crate::route::HopPolicy), then MAIL, RCPT and DATA, pipelined when the server
//! allows. Every recipient gets a [`RecipientReport`](crate::transport::RecipientReport) with the remote
//! reply or a local status and words an operator can act on.
//!
//! ```no_run
//! use std::sync::Arc;
//! use postrider::{Domain, Route};
//! use postrider::resolve::StaticResolver;
//! use postrider::route::PolicyTable;
//! use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};
//!
//! # async fn demo(batch: Vec<postrider::Delivery>) -> Result<(), Box<dyn std::error::Error>> {
//! let config = EsmtpConfig::new(Domain::parse("pbx.example.com")?);
//! let transport = EsmtpTransport::new(
//!     config,
//!     Arc::new(StaticResolver::new()),
//!     Arc::new(PolicyTable::new()),
//! );
//! let route = Route::direct_mx(&Domain::parse("example.org")?);
//! let reports = postrider::transport::collect(&transport, &route, &batch).await;
//! for r in reports {
//!     println!("{}: {:?}", r.id, r.outcome);
//! }
//! # Ok(()) }
//! ```
//!
//! The SMTP conversation is logged at debug level under the `tracing` target
//! [`TRANSCRIPT_TARGET`] (`postrider::smtp`), with AUTH secrets redacted.

mod auth;
mod classify;
mod command;
mod connect;
mod data;
mod deliver;
mod ehlo;
mod identity;
mod oauth;
mod pool;
mod preflight;
mod probe;
mod reply;
mod session;
mod setup;
mod timeouts;
mod tls;
mod transaction;

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::address::Domain;
use crate::oauth2::Tokens;
use crate::resolve::Resolver;
use crate::route::{Mailer, NextHop, PolicyTable, Route};
use crate::spf::{SpfChecker, SpfPolicy};
use crate::transport::{DEFAULT_DESTINATION_CONCURRENCY, Delivery, Reports, Transport};

pub(crate) use auth::base64_encode;
pub(crate) use data::DotStuffer;
pub use ehlo::Capabilities;
pub use identity::LocalAddresses;
pub use probe::{AuthProbe, CertificateProbe, ProbeReport, TlsProbe};
pub use reply::{MAX_LINE, MAX_LINES, ReplyError, parse_reply};
pub use session::TRANSCRIPT_TARGET;
pub use timeouts::{Phase, Timeouts};
pub use tls::default_roots;

/// How long an idle session is kept for the next delivery to the same next hop, unless
/// configured otherwise (Postfix's `smtp_connection_cache_time_limit`).
pub const DEFAULT_CONNECTION_CACHE_TIME: Duration = Duration::from_secs(2);

/// A configuration value the transport cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EsmtpConfigError {
    /// A trust anchor that is not a usable CA certificate.
    #[error("trust anchor {what} is not a usable certificate: {reason}")]
    BadTrustAnchor {
        /// Which certificate (its position, or the file it came from).
        what: String,
        /// What rustls said.
        reason: String,
    },
    /// PEM text without any certificate, or with a malformed one.
    #[error("no certificate could be read from the PEM text {what}: {reason}")]
    BadPem {
        /// Where the text came from.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How an [`EsmtpTransport`] behaves.
#[derive(Debug, Clone)]
pub struct EsmtpConfig {
    /// Our name, sent with EHLO/HELO and compared with the server's name to detect loops.
    pub hostname: Domain,
    /// Per-phase time limits.
    pub timeouts: Timeouts,
    /// Connections open at once to one next hop, across all `deliver` calls (at least 1),
    /// counting the idle sessions of the connection cache: a delivery that finds the hop full
    /// closes a parked session of another kind rather than wait behind it.
    pub max_connections_per_hop: usize,
    /// Addresses of this machine: an MX host with one of them ends the MX list (RFC 5321 §5.1)
    /// or, if it is the best MX, fails with 5.3.5.
    pub local_addresses: LocalAddresses,
    /// Trust anchors for the `verify` level, and for OAuth2 token endpoints: webpki-roots
    /// unless changed.
    pub tls_roots: RootCertStore,
    /// SPF pre-flight before direct-to-MX delivery; `None` skips it.
    pub spf: Option<SpfConfig>,
    /// Keep a session open this long after a `deliver` call, for the next call to the same
    /// next hop (Postfix's connection cache): under a steady stream of mail each message then
    /// costs a transaction, not a connection, greeting, EHLO, TLS handshake and AUTH.
    /// [`DEFAULT_CONNECTION_CACHE_TIME`] unless changed; `None` ends each call's session with
    /// QUIT (a one-shot command, whose parked sessions would only be cut at exit).
    pub connection_cache: Option<Duration>,
    /// TLS policies the destination publishes (MTA-STS, DANE) and TLS-RPT, applied to
    /// direct-to-MX hops the policy file does not name; `None` (the default) keeps MX
    /// delivery at the policy file's default level.
    pub tls_policy: Option<Arc<crate::tls_policy::OutboundTls>>,
}

/// SPF pre-flight: before mail goes straight to a recipient domain's MX (never through a smart
/// host or a mailertable relay), check that SPF for the sender's domain (the HELO name for
/// `<>`) authorises the address the receiver will see, and act per the policy.
#[derive(Clone)]
pub struct SpfConfig {
    /// Evaluates SPF (with its own cache).
    pub checker: SpfChecker,
    /// What to do when SPF would not pass.
    pub policy: SpfPolicy,
    /// This site's public address(es), as receivers see them (behind NAT the connection's
    /// local address is private and means nothing to them). Empty: the connection's local
    /// address is checked, after connecting.
    pub public_addresses: Vec<IpAddr>,
    /// A smart host exists, so the `smart-host` policy may ask the engine to send mail through
    /// it instead ([`Redirect::SmartHost`](crate::transport::Redirect::SmartHost)); the
    /// engine's router knows which host that is.
    pub smart_host_available: bool,
}

impl SpfConfig {
    /// The address checked for a connection whose local address is `local`: the configured
    /// public address of the same family, else `local` itself.
    pub fn egress_for(&self, local: IpAddr) -> IpAddr {
        self.public_addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .unwrap_or(local)
    }

    /// The address checked before connecting, when one is configured (IPv4 first).
    pub fn egress_before_connect(&self) -> Option<IpAddr> {
        self.public_addresses
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .or_else(|| self.public_addresses.first().copied())
    }
}

impl std::fmt::Debug for SpfConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpfConfig")
            .field("policy", &self.policy)
            .field("public_addresses", &self.public_addresses)
            .field("smart_host_available", &self.smart_host_available)
            .finish_non_exhaustive()
    }
}

impl EsmtpConfig {
    /// Defaults for everything but the host name: RFC 5321 timeouts,
    /// [`DEFAULT_DESTINATION_CONCURRENCY`] connections per hop, idle sessions kept for
    /// [`DEFAULT_CONNECTION_CACHE_TIME`], no local addresses, the Mozilla roots.
    pub fn new(hostname: Domain) -> EsmtpConfig {
        EsmtpConfig {
            hostname,
            timeouts: Timeouts::default(),
            max_connections_per_hop: DEFAULT_DESTINATION_CONCURRENCY,
            local_addresses: LocalAddresses::none(),
            tls_roots: default_roots(),
            spf: None,
            connection_cache: Some(DEFAULT_CONNECTION_CACHE_TIME),
            tls_policy: None,
        }
    }

    /// Trusts one more CA (DER), for `verify` hops with a private CA.
    pub fn add_trust_anchor(&mut self, der: CertificateDer<'_>) -> Result<(), EsmtpConfigError> {
        self.tls_roots
            .add(der)
            .map_err(|e| EsmtpConfigError::BadTrustAnchor {
                what: format!("#{}", self.tls_roots.len() + 1),
                reason: e.to_string(),
            })
    }

    /// Trusts every CA certificate in PEM text; `what` names the source in errors (a path).
    /// Returns how many were added.
    pub fn add_trust_anchors_pem(
        &mut self,
        pem: &[u8],
        what: &str,
    ) -> Result<usize, EsmtpConfigError> {
        let mut added = 0;
        for (n, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| EsmtpConfigError::BadPem {
                what: what.to_string(),
                reason: format!("certificate #{}: {e}", n + 1),
            })?;
            self.tls_roots
                .add(cert)
                .map_err(|e| EsmtpConfigError::BadTrustAnchor {
                    what: format!("#{} in {what}", n + 1),
                    reason: e.to_string(),
                })?;
            added += 1;
        }
        if added == 0 {
            return Err(EsmtpConfigError::BadPem {
                what: what.to_string(),
                reason: "it contains no CERTIFICATE block".into(),
            });
        }
        Ok(added)
    }
}

/// The default transport: ESMTP with STARTTLS or implicit TLS, AUTH and pipelining.
///
/// One session carries every message of a `deliver` batch (RSET after an aborted
/// transaction, QUIT at the end), and with [`EsmtpConfig::connection_cache`] it is kept for
/// the next call to the same next hop.
pub struct EsmtpTransport {
    config: EsmtpConfig,
    resolver: Arc<dyn Resolver>,
    /// Swapped whole by [`EsmtpTransport::set_policy`], which also counts the swaps; each
    /// delivery takes both once (see [`EsmtpTransport::policy_in_use`]).
    policy: RwLock<(u64, Arc<PolicyTable>)>,
    tls: tls::TlsClient,
    /// Open and parked connections per next hop, under `max_connections_per_hop`.
    pool: pool::Pool<session::Session>,
    /// The OAuth2 token sources the policy names, kept across policy swaps so their caches
    /// live on.
    tokens: Tokens,
}

impl EsmtpTransport {
    /// A transport that looks hosts up with `resolver` and takes TLS and credentials per next
    /// hop from `policy`.
    pub fn new(
        config: EsmtpConfig,
        resolver: Arc<dyn Resolver>,
        policy: Arc<PolicyTable>,
    ) -> EsmtpTransport {
        EsmtpTransport {
            tls: tls::TlsClient::new(config.tls_roots.clone()),
            tokens: Tokens::new(config.tls_roots.clone()),
            pool: pool::Pool::new(config.max_connections_per_hop, config.connection_cache),
            config,
            resolver,
            policy: RwLock::new((0, policy)),
        }
    }

    /// The TLS and credentials policy in use.
    pub fn policy(&self) -> Arc<PolicyTable> {
        self.policy_in_use().1
    }

    /// The policy in use and how many times it was replaced before, read together: a session
    /// is parked under a key that includes that count, so one set up under a policy that was
    /// replaced while it ran is never taken again (the reaper QUITs it).
    pub(crate) fn policy_in_use(&self) -> (u64, Arc<PolicyTable>) {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the TLS and credentials policy, e.g. after the policy file changed (a new app
    /// password): deliveries that start from now on use `policy`; one already under way
    /// finishes with the table it started with. Parked sessions (see
    /// [`EsmtpConfig::connection_cache`]) were authenticated under the old policy, so they are
    /// closed rather than reused, and so is a session still delivering under it when it ends.
    /// Callable from any thread; outside a tokio runtime the parked sessions are closed
    /// without a QUIT.
    pub fn set_policy(&self, policy: Arc<PolicyTable>) {
        {
            let mut in_use = self.policy.write().unwrap_or_else(PoisonError::into_inner);
            *in_use = (in_use.0 + 1, policy);
        }
        self.pool.clear();
        tracing::info!("TLS and credentials policy replaced");
    }

    /// The configuration in use.
    pub fn config(&self) -> &EsmtpConfig {
        &self.config
    }

    /// Tries `hop` without sending mail: connects as a delivery over `mailer` would (the hop's
    /// hosts and addresses in order, until one greets), says EHLO, starts TLS and
    /// authenticates per the hop's policy, then QUITs. The report says how far it got and why
    /// it stopped, in the words delivery would log; the password is never in it.
    ///
    /// On a hop whose policy is `may` or `encrypt`, the certificate is also checked as
    /// `verify` would check it, and the answer reported, without stopping the session.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use postrider::{Domain, Host, Mailer, NextHop};
    /// # use postrider::resolve::StaticResolver;
    /// # use postrider::route::PolicyTable;
    /// # use postrider::transport::esmtp::{AuthProbe, EsmtpConfig, EsmtpTransport};
    /// # async fn demo(policy: PolicyTable) -> Result<(), Box<dyn std::error::Error>> {
    /// let transport = EsmtpTransport::new(
    ///     EsmtpConfig::new(Domain::parse("pbx.example.com")?),
    ///     Arc::new(StaticResolver::new()),
    ///     Arc::new(policy),
    /// );
    /// let hop = NextHop::direct(Host::Name(Domain::parse("smtp.gmail.com")?), Some(587));
    /// let report = transport.probe(Mailer::Relay, &hop).await;
    /// if let AuthProbe::Refused { reply } = &report.auth {
    ///     eprintln!("password refused: {reply}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn probe(&self, mailer: Mailer, hop: &NextHop) -> ProbeReport {
        probe::probe(self, mailer, hop).await
    }
}

impl std::fmt::Debug for EsmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsmtpTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for EsmtpTransport {
    async fn deliver(&self, route: &Route, batch: &[Delivery], reports: &dyn Reports) {
        deliver::deliver(self, route, batch, reports).await
    }
}
