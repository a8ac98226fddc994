//! From a configuration to an engine: the parts `postrider.toml` describes, built once and
//! shared by every program (the commands, the daemon, the doctor), so each runs exactly the
//! configuration the others do.
//!
//! ```no_run
//! use postrider::config::Config;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("/etc/postrider/postrider.toml")?;
//! let parts = config.assemble().await?;
//! for warning in parts.warnings() {
//!     eprintln!("warning: {warning}");
//! }
//! let engine = parts.engine_builder(config.open_spool().await?).start().await?;
//! # drop(engine); Ok(()) }
//! ```

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::Config;
use crate::address::Domain;
use crate::dkim::{DkimConfigError, DkimSigner};
use crate::engine::{EngineBuilder, Limits, RetryPolicy};
use crate::resolve::{
    DnsResolver, HostnameError, HostnameSources, LocalIdentity, ResolveConfigError,
    qualify_hostname,
};
use crate::route::{LoadError, Mailertable, PolicyError, Warning};
use crate::spf::{SpfChecker, SpfCheckerError, SpfOptions, SpfPolicy};
use crate::spool::{FsSpool, Spool, SpoolError};
use crate::status::Severity;
use crate::transport::esmtp::{
    EsmtpConfig, EsmtpConfigError, EsmtpTransport, LocalAddresses, SpfConfig,
};

/// The SMTP port this host accepts mail on, unless its listeners say otherwise: an MX host
/// with one of this machine's addresses on this port is this machine (a mail loop).
pub const SMTP_PORT: u16 = 25;

/// Why the parts a configuration describes could not be built. Every variant names the file
/// (and the line, where the file has lines) to fix.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// This host's name is unusable and none is configured.
    #[error("{}: cannot determine this host's name: {source}; set hostname = \"host.example.com\"", file.display())]
    Hostname {
        /// The configuration file.
        file: PathBuf,
        /// Why the system's name cannot be used.
        source: Box<HostnameError>,
    },
    /// The mailertable or local-host-names has errors (each with file and line).
    #[error(transparent)]
    Tables(#[from] LoadError),
    /// The TLS and credentials policy file has errors (each with file and line).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The DNS settings cannot be used.
    #[error("{}: [dns]: {source}", file.display())]
    Dns {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong.
        source: ResolveConfigError,
    },
    /// The SPF checker cannot be built.
    #[error("{}: [spf]: {source}", file.display())]
    Spf {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong.
        source: SpfCheckerError,
    },
    /// The `[esmtp] trust_anchors` file cannot be read.
    #[error("{}: cannot read [esmtp] trust_anchors: {source}", path.display())]
    TrustAnchorsUnreadable {
        /// The PEM file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The `[esmtp] trust_anchors` file holds no usable CA certificate.
    #[error("[esmtp] trust_anchors: {source}")]
    TrustAnchors {
        /// What is wrong with the certificates.
        source: EsmtpConfigError,
    },
    /// A `[queue]` limit that would stop all delivery.
    #[error("{}: [queue] {key} = 0 would deliver nothing; it must be at least 1", file.display())]
    ZeroLimit {
        /// The configuration file.
        file: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// The configured spool cannot be opened.
    #[error("{0}")]
    Spool(#[from] SpoolError),
    /// The `[local] aliases` file cannot be used (each bad line with its number).
    #[error(transparent)]
    Aliases(#[from] crate::local::AliasesError),
    /// A `[[dkim]]` entry cannot be used (its key file names itself in the message).
    #[error("{}: [[dkim]]: {source}", file.display())]
    Dkim {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong.
        source: DkimConfigError,
    },
    /// The `[tls]` section cannot be put to work.
    #[error("{}: {source}", file.display())]
    Tls {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong.
        source: super::TlsConfigError,
    },
    /// The `spool` URL names no usable PostgreSQL database (the password never shown).
    #[cfg(feature = "postgres")]
    #[error("{}: spool: {source}", file.display())]
    SpoolUrl {
        /// The configuration file.
        file: PathBuf,
        /// What is wrong with the URL.
        source: crate::spool::pg::PgConfigError,
    },
}

impl AssembleError {
    /// Temporary when trying again may help (DNS was unreachable while qualifying the host
    /// name, a spool on a disk that came back); permanent when the configuration must change.
    pub fn severity(&self) -> Severity {
        match self {
            AssembleError::Hostname { source, .. } if source.is_temporary() => Severity::Temporary,
            AssembleError::Spool(e) => e.severity(),
            AssembleError::Aliases(e) => e.severity(),
            _ => Severity::Permanent,
        }
    }
}

/// Something the configuration works with but an operator should fix; programs print these on
/// every start (and in `sendmail -v`).
#[derive(Debug, thiserror::Error)]
pub enum Notice {
    /// A table's warning (a duplicate key, a mode open to others, ...), with file and line.
    #[error("{0}")]
    Table(Warning),
    /// A name given twice in the aliases file (the first entry is used).
    #[error("{0}")]
    DuplicateAlias(crate::local::DuplicateAlias),
    /// No fully qualified name could be found: EHLO and unqualified addresses use the short
    /// name, which receivers refuse or junk.
    #[error("{source} — using the short name {short}")]
    Unqualified {
        /// The name in use.
        short: Domain,
        /// Why it could not be qualified, with the `/etc/hosts` line to add.
        source: HostnameError,
    },
    /// The network interfaces could not be listed for loop detection.
    #[error(
        "cannot list this machine's addresses ({0}); mail loops through an MX record naming this host are detected by name only"
    )]
    NoInterfaces(io::Error),
}

/// The parts a configuration describes: the router, the SMTP client with its TLS and
/// credentials policy, DNS and SPF, the retry schedule and limits. Keep it to reload the tables
/// on SIGHUP ([`Assembly::reload`]).
pub struct Assembly {
    hostname: Domain,
    router: Arc<Mailertable>,
    esmtp: Arc<EsmtpTransport>,
    local: Option<Arc<crate::local::LocalTransport>>,
    dns: DnsResolver,
    retry: RetryPolicy,
    limits: Limits,
    signer: Option<Arc<DkimSigner>>,
    notices: Vec<Notice>,
}

impl std::fmt::Debug for Assembly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembly")
            .field("hostname", &self.hostname)
            .field("router", &self.router)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Builds every part the configuration describes (reading the mailertable, local-host-names
    /// and policy files; qualifying the host name through `/etc/hosts` and DNS when none is
    /// configured).
    pub async fn assemble(&self) -> Result<Assembly, AssembleError> {
        let file = self.file().map(PathBuf::from).unwrap_or_default();
        let mut notices = Vec::new();
        for (key, value) in [
            ("max_deliveries", self.queue.max_deliveries),
            (
                "destination_concurrency",
                self.queue.destination_concurrency,
            ),
            ("max_active_messages", self.queue.max_active_messages),
        ] {
            if value == 0 {
                return Err(AssembleError::ZeroLimit {
                    file: file.clone(),
                    key,
                });
            }
        }
        let dns = self.dns_resolver().map_err(|source| AssembleError::Dns {
            file: file.clone(),
            source,
        })?;
        let hostname = self.qualified_hostname(&dns, &file, &mut notices).await?;

        let (router, warnings) = self.router_builder().hostname(hostname.clone()).build()?;
        notices.extend(warnings.into_iter().map(Notice::Table));
        let (policy, warnings) = self.load_policy()?;
        notices.extend(warnings.into_iter().map(Notice::Table));

        let (esmtp, more) = self.esmtp_config(&hostname, &dns)?;
        notices.extend(more);
        let esmtp = Arc::new(EsmtpTransport::new(
            esmtp,
            Arc::new(dns.clone()),
            Arc::new(policy),
        ));
        let local = match &self.local {
            Some(config) => {
                let (local, duplicates) =
                    crate::local::LocalTransport::new(config.clone(), hostname.clone())?;
                notices.extend(duplicates.into_iter().map(Notice::DuplicateAlias));
                Some(Arc::new(local))
            }
            None => None,
        };
        // Every key file is read now: a bad one stops the start, naming it and why.
        let signer = self
            .dkim_signer()
            .map_err(|source| AssembleError::Dkim {
                file: file.clone(),
                source,
            })?
            .map(Arc::new);
        Ok(Assembly {
            hostname,
            router: Arc::new(router),
            esmtp,
            local,
            dns,
            retry: self.retry_policy(),
            limits: self.queue.limits(),
            signer,
            notices,
        })
    }

    /// The SMTP client's settings as this configuration describes them: the phase timeouts,
    /// the session cache, the per-host limit, extra trust anchors, loop detection on this
    /// machine's addresses, and the SPF pre-flight. The engine's transport and the doctor's
    /// probe both start from it.
    pub fn esmtp_config(
        &self,
        hostname: &Domain,
        dns: &DnsResolver,
    ) -> Result<(EsmtpConfig, Vec<Notice>), AssembleError> {
        let file = self.file().map(PathBuf::from).unwrap_or_default();
        let mut notices = Vec::new();
        let mut esmtp = EsmtpConfig::new(hostname.clone());
        esmtp.timeouts = self.esmtp.timeouts.into();
        esmtp.connection_cache = self.esmtp.connection_cache;
        esmtp.max_connections_per_hop = self.queue.destination_concurrency;
        if let Some(path) = &self.esmtp.trust_anchors {
            let pem =
                std::fs::read(path).map_err(|source| AssembleError::TrustAnchorsUnreadable {
                    path: path.clone(),
                    source,
                })?;
            esmtp
                .add_trust_anchors_pem(&pem, &path.display().to_string())
                .map_err(|source| AssembleError::TrustAnchors { source })?;
        }
        // This machine's addresses on its SMTP port end an MX list that names it (RFC 5321
        // §5.1); any other port (a sink, a content filter) is not this MTA.
        match LocalIdentity::detect(hostname) {
            Ok(me) => {
                esmtp.local_addresses = LocalAddresses::from_fn(move |a| {
                    a.port() == SMTP_PORT && me.is_local_addr(a.ip())
                });
            }
            Err(e) => notices.push(Notice::NoInterfaces(e)),
        }
        let spf_policy = self.spf_policy();
        if spf_policy != SpfPolicy::Off {
            let checker = SpfChecker::new(dns, SpfOptions::default()).map_err(|source| {
                AssembleError::Spf {
                    file: file.clone(),
                    source,
                }
            })?;
            esmtp.spf = Some(SpfConfig {
                checker,
                policy: spf_policy,
                public_addresses: self.spf.public_addresses.clone(),
                smart_host_available: self.smart_host.is_some(),
            });
        }
        // MTA-STS, DANE and TLS-RPT for direct MX delivery, after the trust anchors (the
        // policy hosts are trusted by the same store as `verify`).
        let spool_dir = (!crate::spool::is_database_url(&self.spool.to_string_lossy()))
            .then_some(self.spool.as_path());
        esmtp.tls_policy = self
            .tls
            .outbound(hostname, dns, esmtp.tls_roots.clone(), spool_dir)
            .map_err(|source| AssembleError::Tls {
                file: file.clone(),
                source,
            })?
            .map(Arc::new);
        Ok((esmtp, notices))
    }

    /// The configured host name, or the system's qualified as sendmail does (`/etc/hosts`,
    /// then DNS); the short name with a notice when it cannot be qualified.
    async fn qualified_hostname(
        &self,
        dns: &DnsResolver,
        file: &std::path::Path,
        notices: &mut Vec<Notice>,
    ) -> Result<Domain, AssembleError> {
        let configured = self.hostname.as_ref().map(Domain::as_str);
        match qualify_hostname(configured, &HostnameSources::system(Some(dns))).await {
            Ok(name) => Ok(name),
            Err(source @ HostnameError::Unqualified { .. }) => {
                let HostnameError::Unqualified { short, .. } = &source else {
                    unreachable!("invariant: matched just above");
                };
                let short = Domain::parse(short).map_err(|e| AssembleError::Hostname {
                    file: file.to_path_buf(),
                    source: Box::new(HostnameError::Invalid {
                        name: short.clone(),
                        source: e,
                    }),
                })?;
                tracing::warn!(target: "postrider::config", "{source} — using the short name {short}");
                notices.push(Notice::Unqualified {
                    short: short.clone(),
                    source,
                });
                Ok(short)
            }
            Err(source) => Err(AssembleError::Hostname {
                file: file.to_path_buf(),
                source: Box::new(source),
            }),
        }
    }

    /// Opens the configured spool: the directory (created when missing), or with the
    /// `postgres` feature the PostgreSQL database a `postgresql://` URL names (its schema
    /// created or migrated).
    pub async fn open_spool(&self) -> Result<Arc<dyn Spool>, AssembleError> {
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.pg_spool() {
            let pg = pg.map_err(|source| AssembleError::SpoolUrl {
                file: self.file().map(PathBuf::from).unwrap_or_default(),
                source,
            })?;
            return Ok(Arc::new(crate::spool::pg::PgSpool::connect(&pg).await?));
        }
        let dir = self.spool.clone();
        // Opening probes the directory with a write and an fsync: off the async threads.
        let fs = tokio::task::spawn_blocking(move || FsSpool::open(dir))
            .await
            .map_err(|e| {
                AssembleError::Spool(SpoolError::Io {
                    op: "open the spool",
                    path: self.spool.clone(),
                    source: io::Error::other(e.to_string()),
                })
            })??;
        Ok(Arc::new(fs))
    }
}

impl Assembly {
    /// An engine builder with every part, ready to `start` (or to refine first: a one-shot
    /// command sets its own [`Limits`]).
    pub fn engine_builder(&self, spool: Arc<dyn Spool>) -> EngineBuilder {
        let builder = crate::engine::Engine::builder()
            .hostname(self.hostname.clone())
            .spool(spool)
            .router(self.router.clone())
            .transport(self.esmtp.clone())
            .retry(self.retry.clone())
            .limits(self.limits.clone());
        let builder = match &self.local {
            Some(local) => builder.local_transport(local.clone()),
            None => builder,
        };
        match &self.signer {
            Some(signer) => builder.signer(signer.clone()),
            None => builder,
        }
    }

    /// The local transport of `[local]` (`None` without the section: local mail then fails
    /// "local delivery is not configured"). `sendmail -bv` asks it
    /// ([`LocalTransport::verify`](crate::local::LocalTransport::verify)).
    pub fn local(&self) -> Option<&Arc<crate::local::LocalTransport>> {
        self.local.as_ref()
    }

    /// The DKIM signer of the `[[dkim]]` entries, when there are any.
    pub fn dkim(&self) -> Option<&Arc<DkimSigner>> {
        self.signer.as_ref()
    }

    /// This host's name, as EHLO and DSNs use it.
    pub fn hostname(&self) -> &Domain {
        &self.hostname
    }

    /// The router (mailertable, smart host, local domains).
    pub fn router(&self) -> &Arc<Mailertable> {
        &self.router
    }

    /// The SMTP client, as the engine delivers with it (the doctor probes this one).
    pub fn esmtp(&self) -> &Arc<EsmtpTransport> {
        &self.esmtp
    }

    /// The DNS resolver every part uses.
    pub fn dns(&self) -> &DnsResolver {
        &self.dns
    }

    /// The engine limits of `[queue]`.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What an operator should fix although everything works.
    pub fn warnings(&self) -> &[Notice] {
        &self.notices
    }

    /// Re-reads the mailertable, local-host-names and policy files of `config` (a `postfix
    /// reload`): on any error nothing changes and the error names the file and line. Returns the
    /// new tables' warnings.
    pub fn reload(&self, config: &Config) -> Result<Vec<Warning>, AssembleError> {
        let (policy, mut warnings) = config.load_policy()?;
        let builder = config.router_builder().hostname(self.hostname.clone());
        // The aliases are checked before anything is swapped, so a bad file changes nothing.
        let aliases = match (
            &self.local,
            config.local.as_ref().and_then(|l| l.aliases.as_ref()),
        ) {
            (Some(_), Some(path)) => Some(crate::local::Aliases::load(path)?),
            _ => None,
        };
        warnings.extend(self.router.reload_from(builder)?);
        self.esmtp.set_policy(Arc::new(policy));
        if let (Some(local), Some((aliases, duplicates))) = (&self.local, aliases) {
            local.set_aliases(aliases);
            for d in duplicates {
                tracing::warn!(target: "postrider::local", "{d}");
            }
        }
        Ok(warnings)
    }
}
