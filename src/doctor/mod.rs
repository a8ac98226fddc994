//! The doctor: checks a configuration against the world and says, for each thing that can
//! stop mail, whether it is right and how to fix it.
//!
//! The checks are the failures mail administrators meet first (a voicemail server that never
//! mails its messages is the classic case):
//!
//! | check | what | fails when |
//! |---|---|---|
//! | `hostname` | the host name is fully qualified and resolves | it is a single label (`sipserver1`) |
//! | `spf` | SPF of each `[spf] sender_domains` entry authorises the address receivers see | the record says fail or is broken |
//! | `dkim` | each `[[dkim]]` key can be read and `selector._domainkey.domain` publishes it (the record to publish is printed) | the key file is unusable, the record is missing or holds another key |
//! | `port25` | outbound port 25 to a domain's MX answers within a few seconds | refused, timed out, no greeting, refused greeting |
//! | `smart-host` | the smart host answers and talks SMTP | it cannot be reached or refuses us |
//! | `smart-host-tls` | it offers STARTTLS with a certificate valid for its name | TLS is required and fails |
//! | `smart-host-auth` | it accepts the credentials (AUTH, then QUIT: no mail is sent) | 535 and friends |
//! | `mailertable` | the mailertable and local-host-names parse | a line has an error (one finding per line) |
//! | `policy` | the TLS and credentials policy file parses | a line has an error |
//! | `tls-policy` | the TLS rule (policy file, DANE, MTA-STS) mail to the probe and sender domains meets, and why | a published policy rules a host out or cannot be fetched (warning) |
//! | `spool` | the spool directory is writable and fsync works there | read-only, full, not a directory |
//! | `listener-tls` | each `[[listener]]`'s certificate is readable, valid for 14 days more and covers the host name | expired, unreadable, another name (on 587/465; a warning on 25) |
//! | `listener` | a `submission` listener has a password file and TLS; the access and password files parse | nobody could authenticate, a bad line |
//! | `relaying` | who may relay: not nobody on a LAN-facing port 25, not everybody | an access rule or `mynetworks` that opens relaying to the Internet |
//! | `mailbox` | Dovecot's `mail_location` is where `[local] mailbox` delivers (when `[local]` and a Dovecot configuration exist) | another format or path |
//!
//! A `FAIL` means mail will not go out (or receivers will refuse or junk it) until it is
//! fixed; a `WARN` means mail goes out but something is off or could not be checked. With a
//! smart host configured, a blocked port 25 and an SPF record that does not list this host are
//! warnings: mail leaves through the smart host.
//!
//! ```no_run
//! use postrider::config::Config;
//! use postrider::doctor::{Doctor, DoctorOptions, Verdict};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("/etc/postrider/postrider.toml")?;
//! let doctor = Doctor::new(config).with_options(DoctorOptions {
//!     probe_domain: Some("gmail.com".parse()?),
//!     ..DoctorOptions::default()
//! });
//! let findings = doctor.run().await;
//! for finding in &findings {
//!     println!("{finding}");
//! }
//! let healthy = findings.iter().all(|f| f.verdict != Verdict::Fail);
//! # Ok(()) }
//! ```
//!
//! Every check can also run alone ([`Doctor::check_hostname`], ...). The parts that touch the
//! machine (the resolver, the host name sources, the port, the trust anchors) can be replaced,
//! so that the checks can be tested on loopback.

mod dkim;
mod egress;
mod finding;
mod hostname;
mod listeners;
pub mod mailbox;
#[cfg(feature = "postgres")]
pub mod pg_spool;
mod port25;
mod smart_host;
mod spf;
mod spool;
mod tables;
mod tls_policy;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls::RootCertStore;

use crate::address::Domain;
use crate::config::Config;
use crate::resolve::{DnsResolver, HostnameSources, qualify_hostname};

pub use finding::{Check, Finding, Verdict, worst};

/// Settings of a [`Doctor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// The domain whose MX the port-25 check connects to (`gmail.com`); `None` skips the
    /// check.
    pub probe_domain: Option<Domain>,
    /// The port of the port-25 check: 25, except in tests.
    pub smtp_port: u16,
    /// How long the port-25 check waits for the connection and then for the greeting.
    pub port25_timeout: Duration,
    /// How long the smart-host check waits for each step (connect, greeting, EHLO, TLS,
    /// AUTH).
    pub smart_host_timeout: Duration,
    /// Less free space than this on the spool's file system is a warning.
    pub spool_low_space: u64,
}

impl Default for DoctorOptions {
    /// No probe domain, port 25 with 3 s, 10 s per smart-host step, a warning under 100 MiB
    /// free.
    fn default() -> DoctorOptions {
        DoctorOptions {
            probe_domain: None,
            smtp_port: 25,
            port25_timeout: Duration::from_secs(3),
            smart_host_timeout: Duration::from_secs(10),
            spool_low_space: 100 * 1024 * 1024,
        }
    }
}

/// Where the host name comes from: [`HostnameSources`] without the resolver (the doctor's own
/// is used).
#[derive(Debug, Clone)]
struct NameSources {
    system_hostname: Option<String>,
    hosts_file: PathBuf,
    addresses: Option<Vec<IpAddr>>,
}

/// Runs the checks for one configuration. Build it inside the tokio runtime that runs the
/// checks (the resolver keeps its connections as tasks of that runtime).
pub struct Doctor {
    config: Config,
    dns: Result<DnsResolver, String>,
    names: NameSources,
    options: DoctorOptions,
    /// Trust anchors that replace the transport's (tests); `None`: the configured ones.
    tls_roots: Option<RootCertStore>,
    dovecot_config: PathBuf,
}

impl std::fmt::Debug for Doctor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doctor")
            .field("config", &self.config.file())
            .field("dns", &self.dns)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Doctor {
    /// A doctor for `config`, with the resolver it configures, the machine's host name,
    /// `/etc/hosts` and network interfaces, the Mozilla trust anchors and default options.
    /// A resolver that cannot be set up is reported by [`Doctor::run`] (check `dns`).
    pub fn new(config: Config) -> Doctor {
        let dns = config.dns_resolver().map_err(|e| e.to_string());
        let system = HostnameSources::system(None);
        Doctor {
            config,
            dns,
            names: NameSources {
                system_hostname: system.system_hostname,
                hosts_file: system.hosts_file,
                addresses: system.addresses,
            },
            options: DoctorOptions::default(),
            tls_roots: None,
            dovecot_config: PathBuf::from(mailbox::DEFAULT_DOVECOT_CONFIG),
        }
    }

    /// Uses `dns` instead of the configured resolver.
    pub fn with_dns(mut self, dns: DnsResolver) -> Doctor {
        self.dns = Ok(dns);
        self
    }

    /// Reads the host name, hosts file and addresses from `sources` instead of the machine;
    /// its `dns` is ignored (the doctor's resolver is used).
    pub fn with_hostname_sources(mut self, sources: &HostnameSources<'_>) -> Doctor {
        self.names = NameSources {
            system_hostname: sources.system_hostname.clone(),
            hosts_file: sources.hosts_file.clone(),
            addresses: sources.addresses.clone(),
        };
        self
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: DoctorOptions) -> Doctor {
        self.options = options;
        self
    }

    /// Replaces the trust anchors the smart host's certificate is checked against (the
    /// configured ones by default: the Mozilla set and `[esmtp] trust_anchors`).
    pub fn with_tls_roots(mut self, roots: RootCertStore) -> Doctor {
        self.tls_roots = Some(roots);
        self
    }

    /// Reads Dovecot's configuration from `path` instead of `/etc/dovecot/dovecot.conf`.
    pub fn with_dovecot_config(mut self, path: impl Into<PathBuf>) -> Doctor {
        self.dovecot_config = path.into();
        self
    }

    /// The configuration checked.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The options in effect.
    pub fn options(&self) -> &DoctorOptions {
        &self.options
    }

    /// Runs every check and returns the findings in the order of the table in the
    /// [module documentation](self). The network checks run at the same time, so the whole
    /// run takes about as long as the slowest.
    pub async fn run(&self) -> Vec<Finding> {
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.config.pg_spool() {
            let database = match pg {
                Ok(pg) => pg_spool::check(&pg).await,
                Err(e) => vec![
                    Finding::fail(Check::Spool, format!("spool: {e}"))
                        .with_fix(format!("correct the spool URL in {}", self.config_file())),
                ],
            };
            return self.run_with_spool(async { Ok(database) }).await;
        }
        let path = self.config.spool.clone();
        let low = self.options.spool_low_space;
        self.run_with_spool(tokio::task::spawn_blocking(move || {
            spool::check(&path, low)
        }))
        .await
    }

    async fn run_with_spool(
        &self,
        spool: impl std::future::Future<Output = Result<Vec<Finding>, tokio::task::JoinError>>,
    ) -> Vec<Finding> {
        let (hostname, port25, smart_host, dkim) = tokio::join!(
            self.check_hostname(),
            port25::check(self),
            self.check_smart_host(),
            self.check_dkim()
        );
        let egress = egress::egress(self, port25.local).await;
        let spf = spf::check(self, egress.as_ref()).await;

        let mut findings = Vec::new();
        if let Err(e) = &self.dns {
            findings.push(dns_failure(e));
        }
        findings.extend(hostname);
        findings.extend(spf);
        findings.extend(dkim);
        findings.extend(port25.findings);
        findings.extend(smart_host);
        findings.extend(self.check_mailertable());
        findings.extend(self.check_policy());
        findings.extend(self.check_tls_policy().await);
        findings.extend(spool.await.unwrap_or_else(|e| {
            vec![Finding::fail(
                Check::Spool,
                format!("the spool check did not finish: {e}"),
            )]
        }));
        findings.extend(self.check_listeners().await);
        findings.extend(self.check_mailbox());
        findings
    }

    /// `listener-tls`, `listener`, `relaying`: each listener's certificate (expiry, names), each
    /// listener's means to work, and who may relay. Nothing without `[[listener]]` tables.
    pub async fn check_listeners(&self) -> Vec<Finding> {
        listeners::check(self).await
    }

    /// `hostname`: the host name is fully qualified, and resolves.
    pub async fn check_hostname(&self) -> Vec<Finding> {
        hostname::check(self).await
    }

    /// `spf`: SPF of each sender domain authorises the address receivers see (the configured
    /// `[spf] public_addresses`, else this host's address on the way to the probe domain's MX
    /// or the smart host).
    pub async fn check_spf(&self) -> Vec<Finding> {
        let egress = egress::egress(self, None).await;
        spf::check(self, egress.as_ref()).await
    }

    /// `dkim`: each `[[dkim]]` key file can be read, and its record (printed, to publish) is
    /// published with the same key. Nothing without DKIM keys.
    pub async fn check_dkim(&self) -> Vec<Finding> {
        dkim::check(self).await
    }

    /// `port25`: outbound port 25 to the probe domain's MX answers within the timeout. Nothing
    /// without a probe domain.
    pub async fn check_port25(&self) -> Vec<Finding> {
        port25::check(self).await.findings
    }

    /// `smart-host`, `smart-host-tls`, `smart-host-auth`: each smart host answers, offers
    /// STARTTLS with a valid certificate and accepts the credentials; then QUIT, no mail is
    /// sent. Nothing without a smart host.
    pub async fn check_smart_host(&self) -> Vec<Finding> {
        smart_host::check(self).await
    }

    /// `mailertable`: the mailertable and local-host-names parse (one finding per bad line or
    /// warning).
    pub fn check_mailertable(&self) -> Vec<Finding> {
        tables::mailertable(&self.config)
    }

    /// `mailbox`: Dovecot's `mail_location` agrees with `[local] mailbox`. Nothing without a
    /// `[local]` section or without a Dovecot configuration (see [`Doctor::with_dovecot_config`]).
    pub fn check_mailbox(&self) -> Option<Finding> {
        let local = self.config.local.as_ref()?;
        mailbox::check(local, self.config.file(), &self.dovecot_config)
    }

    /// `policy`: the TLS and credentials policy file parses.
    pub fn check_policy(&self) -> Vec<Finding> {
        tables::policy(&self.config)
    }

    /// `tls-policy`: the TLS rule mail to the probe domain and to each sender domain would
    /// meet (the policy file's line, DANE, MTA-STS, or the default) and why.
    pub async fn check_tls_policy(&self) -> Vec<Finding> {
        tls_policy::check(self).await
    }

    /// `spool`: the spool directory is writable and fsync works there (a file is written,
    /// fsynced, renamed and removed, and the directory fsynced).
    pub fn check_spool(&self) -> Vec<Finding> {
        spool::check(&self.config.spool, self.options.spool_low_space)
    }

    fn hostname_sources(&self) -> HostnameSources<'_> {
        HostnameSources {
            system_hostname: self.names.system_hostname.clone(),
            hosts_file: self.names.hosts_file.clone(),
            dns: self.dns.as_ref().ok(),
            addresses: self.names.addresses.clone(),
        }
    }

    /// The name to say EHLO with: the qualified host name, else whatever is configured, else
    /// `localhost`.
    async fn ehlo_name(&self) -> Domain {
        let configured = self.config.hostname.as_ref().map(Domain::as_str);
        match qualify_hostname(configured, &self.hostname_sources()).await {
            Ok(name) => name,
            Err(_) => self.config.hostname().unwrap_or_else(|| {
                Domain::parse("localhost").expect("invariant: localhost is a valid domain")
            }),
        }
    }

    /// The smart host is configured.
    fn has_smart_host(&self) -> bool {
        self.config.smart_host.is_some()
    }

    /// The configuration file, as fixes name it.
    fn config_file(&self) -> String {
        self.config.file().map_or_else(
            || "the configuration file".to_string(),
            |p| p.display().to_string(),
        )
    }
}

fn dns_failure(e: &str) -> Finding {
    Finding::fail(Check::Dns, format!("DNS cannot be used: {e}")).with_fix(
        "add a line such as \"nameserver 192.168.1.1\" to /etc/resolv.conf, or set \
         [dns] name_servers = [\"192.168.1.1\"] in postrider.toml",
    )
}

/// "not checked" for a check that needs DNS when there is none.
fn no_dns(check: Check, e: &str) -> Finding {
    Finding::warn(check, format!("not checked: DNS cannot be used ({e})"))
}
