//! `postrider.toml`: the configuration every program reads, and the engine built from it.
//!
//! ```toml
//! hostname = "sipserver1.ourtest.com"      # default: the system's host name
//! spool = "/var/spool/postrider"           # the default
//! smart_host = "[smtp.gmail.com]:587"      # default: none (deliver to each domain's MX)
//! mailertable = "mailertable"              # default: none
//! local_host_names = "local-host-names"    # default: none (only hostname and localhost are local)
//! policy = "tls-policy"                    # default: none (TLS "may", no AUTH, for every hop)
//!
//! [retry]                     # when to try again, warn, give up (sendmail's Timeout.queue*)
//! initial = "5m"              # first retry after (default 5m), doubling up to...
//! max_interval = "66m"        # ...this (default 66m, Postfix's 4000 s)
//! warn_after = "4h"           # delay-warning DSN (default 4h; "off" never warns)
//! max_age = "5d"              # bounce after (default 5d)
//!
//! [spf]                       # SPF pre-flight before direct-to-MX delivery
//! policy = "smart-host"       # off | warn | smart-host | strict (default: smart-host with a
//!                             #   smart host, else warn)
//! public_addresses = ["203.0.113.5"]   # what receivers see (behind NAT); default: none
//! sender_domains = ["ourtest.com"]     # domains you send as, for the doctor's SPF check
//!
//! [[dkim]]                    # one per signing domain (default: none, mail is not signed)
//! domain = "ourtest.com"      # signs mail whose From: is in this domain (or below it)
//! selector = "pbx2026"        # the key's record: pbx2026._domainkey.ourtest.com
//! key = "dkim/ourtest.com.pem"          # RSA (2048+ bits) or Ed25519, PEM or DER
//! # headers = ["From", "To", "Subject", "Date", "Message-ID"]   # default: postrider's list
//!
//! [dns]
//! name_servers = ["192.168.1.1", "127.0.0.1:5353"]  # default: /etc/resolv.conf
//! timeout = "5s"              # per try (default 5s)
//! attempts = 2                # tries per query (default 2)
//! address_preference = "ipv4-first"     # ipv4-first | ipv6-first | ipv4-only
//!
//! [esmtp]                     # the SMTP client
//! connection_cache = "2s"     # keep an idle session for the next message (default 2s; "off")
//! trust_anchors = "company-ca.pem"      # CAs trusted for `verify` hops besides the Mozilla roots
//!
//! [esmtp.timeouts]            # each phase's limit (defaults: RFC 5321 §4.5.3.2)
//! connect = "30s"             # also greeting, helo, tls, auth, mail, rcpt (5m), data_init (2m),
//! data_term = "10m"           #   data_block (3m), data_term (10m), rset (20s), quit (30s)
//!
//! [queue]                     # the engine's limits
//! max_message_size = 10240000 # octets (Postfix's message_size_limit)
//! max_recipients = 1000
//! max_deliveries = 100        # deliveries at once, over all next hops
//! destination_concurrency = 20          # connections at once to one next hop
//! max_batch_messages = 50     # messages one connection carries per batch
//! max_active_messages = 1000
//! scan_interval = "5m"        # re-read the spool for other processes' mail ("off": never)
//! shutdown_grace = "30s"      # how long a stop lets each session finish its message
//!
//! [local]                     # local delivery; without it local mail fails "not configured"
//! mailbox = "maildir:~/Maildir"           # or mbox:/var/mail/%u (the default), lmtp:unix:/path
//! aliases = "/etc/aliases"
//! virtusertable = "virtusertable"         # read by the router for local and virtual domains
//! # every key: postrider::local::config
//! [metrics]                   # the daemon serves crate::metrics in Prometheus format
//! listen = "127.0.0.1:9187"   # GET /metrics; unauthenticated: keep it on loopback
//! ```
//!
//! [`Config::assemble`] builds the engine's parts from all of this.
//!
//! The SMTP server's `[server]` section and `[[listener]]` tables (access file, `mynetworks`,
//! password file, limits, listen addresses with kind and certificate) are described in
//! [`crate::server::config`].
//!
//! Durations are a number with a unit: `ms`, `s`, `m`, `h`, `d` (`90s`, `66m`, `1h30m`).
//!
//! Relative paths are resolved against the folder of the configuration file. A key postrider
//! does not know is an error naming the file, the line and the key, so a typo never goes
//! unnoticed. Later settings are added as fields with a default (a whole section such as
//! `[retry]` as a field of a `#[serde(default)]` struct type), so existing files stay valid.
//!
//! ```
//! use postrider::config::Config;
//! let config = Config::parse("smart_host = \"[smtp.gmail.com]:587\"\nmailertable = \"mailertable\"\n",
//!                            "/etc/postrider/postrider.toml")?;
//! assert_eq!(config.mailertable.as_deref(), Some(std::path::Path::new("/etc/postrider/mailertable")));
//! assert_eq!(config.smart_host.unwrap().to_string(), "relay:[smtp.gmail.com]:587");
//! # Ok::<(), postrider::config::ConfigError>(())
//! ```

mod assemble;
mod duration;
mod sections;
mod tls;

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::address::Domain;
use crate::dkim::{DkimConfigError, DkimKeyConfig, DkimSigner};
use crate::engine::RetryPolicy;
use crate::resolve::{DnsOptions, DnsResolver, ResolveConfigError};
use crate::route::{
    LoadError, Mailertable, MailertableBuilder, PolicyError, PolicyTable, SmartHost, Warning,
};
use crate::spf::SpfPolicy;
use crate::status::Severity;

pub use assemble::{AssembleError, Assembly, Notice, SMTP_PORT};
pub use duration::parse_duration;
pub use sections::{
    DnsSection, EsmtpSection, MetricsSection, QueueSection, RetrySection, SpfSection,
    TimeoutsSection,
};
pub use tls::{TlsConfigError, TlsSection};

/// The spool directory when the configuration names none.
pub const DEFAULT_SPOOL: &str = "/var/spool/postrider";

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Bad TOML, an unknown key, or a bad value.
    #[error("{}:{line}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The column, from 1.
        column: usize,
        /// What is wrong, as the TOML parser or the value's parser says it.
        message: String,
    },
}

impl ConfigError {
    /// Always permanent: an administrator must fix the file (or its permissions).
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// This host's name: used in EHLO, and implicitly a local domain (like sendmail's `$j`).
    /// `None` means the system's host name (see [`Config::hostname`]).
    pub hostname: Option<Domain>,
    /// The spool directory.
    pub spool: PathBuf,
    /// The smart host for mail no mailertable key claims.
    pub smart_host: Option<SmartHost>,
    /// The mailertable file.
    pub mailertable: Option<PathBuf>,
    /// The local-host-names file.
    pub local_host_names: Option<PathBuf>,
    /// The TLS and credentials policy file.
    pub policy: Option<PathBuf>,
    /// `[retry]`: the retry schedule and queue lifetimes.
    pub retry: RetrySection,
    /// `[spf]`: the SPF pre-flight.
    pub spf: SpfSection,
    /// `[dns]`: name servers and lookup settings.
    pub dns: DnsSection,
    /// `[local]`: local delivery (mailbox format, aliases, virtusertable); `None` when the
    /// section is absent.
    pub local: Option<crate::local::LocalConfig>,
    /// `[[dkim]]`: a signing key per sender domain.
    pub dkim: Vec<DkimKeyConfig>,
    /// `[esmtp]`: the SMTP client's session cache, trust anchors and phase timeouts.
    pub esmtp: EsmtpSection,
    /// `[queue]`: the engine's size and concurrency limits and its shutdown grace.
    pub queue: QueueSection,
    /// `[tls]`: MTA-STS, DANE and TLS-RPT for direct MX delivery.
    pub tls: TlsSection,
    /// `[metrics]`: where a daemon serves the metrics (`crate::metrics`) for Prometheus.
    pub metrics: MetricsSection,
    /// `[server]`: access control, AUTH and limits of the SMTP server (`crate::server::config`).
    pub server: crate::server::config::ServerSection,
    /// `[[listener]]`: where the SMTP server listens, each with its kind and certificate.
    pub listener: Vec<crate::server::config::ListenerSection>,
    #[serde(skip)]
    file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hostname: None,
            spool: PathBuf::from(DEFAULT_SPOOL),
            smart_host: None,
            mailertable: None,
            local_host_names: None,
            policy: None,
            retry: RetrySection::default(),
            spf: SpfSection::default(),
            dns: DnsSection::default(),
            local: None,
            dkim: Vec::new(),
            esmtp: EsmtpSection::default(),
            queue: QueueSection::default(),
            tls: TlsSection::default(),
            metrics: MetricsSection::default(),
            server: Default::default(),
            listener: Vec::new(),
            file: None,
        }
    }
}

impl Config {
    /// Reads and parses a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text; `path` names the file in errors and is the base for relative
    /// paths.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let before = text.get(..offset).unwrap_or(text);
            let line = 1 + before.matches('\n').count();
            let column = 1 + before.rsplit('\n').next().unwrap_or("").chars().count();
            ConfigError::Invalid {
                file: path.to_path_buf(),
                line,
                column,
                message: e.message().trim_end().to_string(),
            }
        })?;
        let base = path.parent();
        let spool_is_url = crate::spool::is_database_url(&config.spool.to_string_lossy());
        if spool_is_url && !cfg!(feature = "postgres") {
            return Err(ConfigError::Invalid {
                file: path.to_path_buf(),
                line: line_of_key(text, "spool"),
                column: 1,
                message: "spool names a PostgreSQL database, but this postrider was built \
                          without the \"postgres\" feature"
                    .into(),
            });
        }
        for p in [
            (!spool_is_url).then_some(&mut config.spool),
            config.mailertable.as_mut(),
            config.local_host_names.as_mut(),
            config.policy.as_mut(),
            config.esmtp.trust_anchors.as_mut(),
        ]
        .into_iter()
        .flatten()
        .chain(config.dkim.iter_mut().map(|k| &mut k.key))
        {
            if let Some(dir) = base
                && p.is_relative()
            {
                *p = dir.join(&*p);
            }
        }
        if let Some(dir) = base {
            config.tls.resolve_paths(dir);
            config.server.resolve_paths(dir);
            config
                .listener
                .iter_mut()
                .for_each(|l| l.resolve_paths(dir));
            if let Some(local) = config.local.as_mut() {
                local.resolve_paths(dir);
            }
        }
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// The PostgreSQL spool when `spool` is a `postgresql://` URL (`None`: a directory).
    #[cfg(feature = "postgres")]
    pub fn pg_spool(
        &self,
    ) -> Option<Result<crate::spool::pg::PgSpoolConfig, crate::spool::pg::PgConfigError>> {
        let text = self.spool.to_str()?;
        crate::spool::is_database_url(text).then(|| text.parse())
    }

    /// The file the configuration was read from.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The host name: the configured one, else the system's (if it is a valid domain name).
    pub fn hostname(&self) -> Option<Domain> {
        self.hostname.clone().or_else(system_hostname)
    }

    /// A router builder reading the configured mailertable and local-host-names, with the
    /// smart host and host name set; add to it before building if needed.
    pub fn router_builder(&self) -> MailertableBuilder {
        let mut builder = Mailertable::builder().smart_host_opt(self.smart_host.clone());
        if let Some(h) = self.hostname() {
            builder = builder.hostname(h);
        }
        if let Some(p) = &self.mailertable {
            builder = builder.mailertable_file(p);
        }
        if let Some(p) = &self.local_host_names {
            builder = builder.local_host_names_file(p);
        }
        if let Some(p) = self.local.as_ref().and_then(|l| l.virtusertable.as_ref()) {
            builder = builder.virtusertable_file(p);
        }
        builder
    }

    /// Builds the router the configuration describes.
    pub fn build_router(&self) -> Result<(Mailertable, Vec<Warning>), LoadError> {
        self.router_builder().build()
    }

    /// The retry schedule of `[retry]` (with the default ±10 % jitter).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.retry.initial,
            max_interval: self.retry.max_interval,
            warn_after: self.retry.warn_after,
            max_age: self.retry.max_age,
            ..RetryPolicy::default()
        }
    }

    /// The SPF policy: as configured, else `smart-host` when a smart host is set, else `warn`.
    pub fn spf_policy(&self) -> SpfPolicy {
        self.spf
            .policy
            .unwrap_or_else(|| SpfPolicy::default_for(self.smart_host.is_some()))
    }

    /// The DNS settings of `[dns]`.
    pub fn dns_options(&self) -> DnsOptions {
        DnsOptions {
            timeout: self.dns.timeout,
            attempts: self.dns.attempts,
            address_preference: self.dns.address_preference,
            ..DnsOptions::default()
        }
    }

    /// A resolver on the configured name servers, else on the system's configuration.
    pub fn dns_resolver(&self) -> Result<DnsResolver, ResolveConfigError> {
        if self.dns.name_servers.is_empty() {
            DnsResolver::from_resolv_conf(Path::new("/etc/resolv.conf"), self.dns_options())
        } else {
            DnsResolver::with_name_servers(&self.dns.name_servers, self.dns_options())
        }
    }

    /// The DKIM signer of the `[[dkim]]` entries (`None` without any): every key file is read
    /// now, so a missing or bad one is an error naming the file and why.
    pub fn dkim_signer(&self) -> Result<Option<DkimSigner>, DkimConfigError> {
        if self.dkim.is_empty() {
            return Ok(None);
        }
        DkimSigner::load(&self.dkim).map(Some)
    }

    /// Loads the policy file, or an empty policy (TLS `may`, no AUTH) when none is configured.
    pub fn load_policy(&self) -> Result<(PolicyTable, Vec<Warning>), PolicyError> {
        match &self.policy {
            Some(p) => PolicyTable::load(p),
            None => Ok((PolicyTable::new(), Vec::new())),
        }
    }
}

/// The line (from 1) where `key` is set at the top level, for errors found after parsing.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

fn system_hostname() -> Option<Domain> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Domain::parse(std::str::from_utf8(&buf[..end]).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::resolve::AddressPreference;

    #[test]
    fn a_postgresql_spool_url_is_kept_as_written_not_joined_to_the_config_folder() {
        let c = Config::parse(
            "spool = \"postgresql://mta@db.example/queue\"\n",
            "/etc/postrider/postrider.toml",
        );
        #[cfg(feature = "postgres")]
        {
            let c = c.unwrap();
            assert_eq!(c.spool, Path::new("postgresql://mta@db.example/queue"));
            let pg = c.pg_spool().unwrap().unwrap();
            assert_eq!(pg.connection.get_dbname(), Some("queue"));
            let dir = Config::parse("spool = \"q\"\n", "/etc/postrider/postrider.toml").unwrap();
            assert!(dir.pg_spool().is_none());
        }
        #[cfg(not(feature = "postgres"))]
        assert!(c.unwrap_err().to_string().contains("postgres"));
    }

    #[test]
    fn every_setting_has_a_default() {
        let c = Config::parse("", "/etc/postrider/postrider.toml").unwrap();
        assert_eq!(c.spool, Path::new(DEFAULT_SPOOL));
        assert!(c.smart_host.is_none() && c.mailertable.is_none() && c.policy.is_none());
        assert_eq!(c.file(), Some(Path::new("/etc/postrider/postrider.toml")));
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_file_line_and_key() {
        let err = Config::parse(
            "hostname = \"mx.example\"\nsmart_hots = \"[a.example]\"\n",
            "/etc/postrider.toml",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/postrider.toml:2: unknown field `smart_hots`"),
            "{msg}"
        );
        assert!(matches!(
            err,
            ConfigError::Invalid {
                line: 2,
                column: 1,
                ..
            }
        ));
    }

    #[test]
    fn a_bad_smart_host_is_an_error_naming_its_line() {
        let err =
            Config::parse("\n\nsmart_host = \"[smtp.gmail.com]:99999\"\n", "c.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.toml:3: "), "{msg}");
        assert!(msg.contains("bad port \"99999\""), "{msg}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = Config::parse(
            "spool = \"queue\"\nmailertable = \"mt\"\nlocal_host_names = \"/abs/lhn\"\npolicy = \"sub/policy\"\n",
            "/etc/postrider/postrider.toml",
        )
        .unwrap();
        assert_eq!(c.spool, Path::new("/etc/postrider/queue"));
        assert_eq!(
            c.mailertable.as_deref(),
            Some(Path::new("/etc/postrider/mt"))
        );
        assert_eq!(c.local_host_names.as_deref(), Some(Path::new("/abs/lhn")));
        assert_eq!(
            c.policy.as_deref(),
            Some(Path::new("/etc/postrider/sub/policy"))
        );
    }

    #[test]
    fn retry_spf_and_dns_sections_parse_with_units() {
        let c = Config::parse(
            "smart_host = \"[smtp.gmail.com]:587\"\n\
             [retry]\ninitial = \"1m\"\nmax_interval = \"1h30m\"\nwarn_after = \"off\"\nmax_age = \"2d\"\n\
             [spf]\npublic_addresses = [\"203.0.113.5\"]\nsender_domains = [\"OurTest.com\"]\n\
             [dns]\nname_servers = [\"127.0.0.1\", \"[::1]:5353\"]\ntimeout = \"500ms\"\naddress_preference = \"ipv4-only\"\n",
            "c.toml",
        )
        .unwrap();
        let r = c.retry_policy();
        assert_eq!(r.initial, Duration::from_secs(60));
        assert_eq!(r.max_interval, Duration::from_secs(5400));
        assert_eq!(r.warn_after, None);
        assert_eq!(r.max_age, Duration::from_secs(2 * 86_400));
        assert_eq!(
            c.spf_policy(),
            SpfPolicy::SmartHost,
            "the default with a smart host"
        );
        assert_eq!(c.spf.sender_domains[0].as_str(), "ourtest.com");
        assert_eq!(
            c.dns.name_servers,
            [
                "127.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:5353".parse().unwrap()
            ]
        );
        assert_eq!(c.dns_options().timeout, Duration::from_millis(500));
        assert_eq!(
            c.dns_options().address_preference,
            AddressPreference::Ipv4Only
        );
    }

    #[test]
    fn the_sections_default_to_the_mta_defaults() {
        let c = Config::parse("", "c.toml").unwrap();
        assert_eq!(c.retry_policy(), RetryPolicy::default());
        assert_eq!(c.spf_policy(), SpfPolicy::Warn, "no smart host: warn");
        assert_eq!(c.dns_options(), DnsOptions::default());
    }

    #[test]
    fn bad_durations_and_policies_name_the_line() {
        let err = Config::parse("[retry]\n\ninitial = \"5 minutes\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().starts_with("c.toml:3: "), "{err}");
        assert!(err.to_string().contains("is not a duration"), "{err}");
        let err = Config::parse("[spf]\npolicy = \"loose\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().starts_with("c.toml:2: "), "{err}");
        let err = Config::parse("[dns]\nname_servers = [\"ns1.example\"]\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("is not an IP address"), "{err}");
    }

    #[test]
    fn the_local_section_resolves_its_paths_and_feeds_the_router() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("virtusertable"), "info@ourtest.com bob\n").unwrap();
        let text = "hostname = \"mx.ourtest.com\"\n[local]\nmailbox = \"maildir:~/Maildir\"\n\
                    aliases = \"aliases\"\nvirtusertable = \"virtusertable\"\n";
        let c = Config::parse(text, dir.path().join("postrider.toml")).unwrap();
        let local = c.local.as_ref().unwrap();
        assert_eq!(
            local.aliases.as_deref(),
            Some(dir.path().join("aliases").as_path())
        );
        let (router, _) = c.build_router().unwrap();
        let info = crate::Address::parse("info@ourtest.com").unwrap();
        assert_eq!(
            router.lookup(&info),
            crate::Route::Local {
                target: crate::LocalTarget::User("bob".into())
            }
        );
        assert!(Config::parse("", "c.toml").unwrap().local.is_none());
        let err = Config::parse("[local]\nmailbox = \"maildir\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().starts_with("c.toml:2: "), "{err}");
    }

    #[test]
    fn the_system_hostname_is_the_default_hostname() {
        let c = Config::default();
        assert_eq!(c.hostname(), system_hostname());
        let c = Config::parse("hostname = \"MX.Example.\"", "c.toml").unwrap();
        assert_eq!(c.hostname().unwrap().as_str(), "mx.example");
    }
}
