//! An engine set up from `postrider.toml`, as the command-line examples use it: the
//! mailertable router, the TLS/credentials policy, the DNS resolver, the ESMTP transport with
//! its SPF pre-flight, the DKIM signer and the retry schedule, all from [`Config`].

use std::sync::Arc;
use std::time::Duration;

use postrider::config::Config;
use postrider::engine::{Engine, EngineBuilder, Limits};
use postrider::resolve::LocalIdentity;
use postrider::route::Mailertable;
use postrider::spf::{SpfChecker, SpfOptions, SpfPolicy};
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport, LocalAddresses, SpfConfig};
use postrider::{Domain, Spool};

/// An engine builder ready to `start`, and what the configuration warned about.
pub struct Configured {
    pub builder: EngineBuilder,
    pub warnings: Vec<String>,
    /// The router the builder holds, for a long-running program to `reload()`.
    #[allow(dead_code)] // the commands run once; only the relay reloads
    pub router: Arc<Mailertable>,
    /// The transport the builder holds, for a long-running program to `set_policy()`.
    #[allow(dead_code)] // as above
    pub transport: Arc<EsmtpTransport>,
}

/// This host's name, or a message saying how to set it.
pub fn hostname(config: &Config) -> Result<Domain, String> {
    config.hostname().ok_or_else(|| {
        let file = config
            .file()
            .map_or("the configuration".to_string(), |f| f.display().to_string());
        format!(
            "cannot determine this host's name: the system's host name is not a valid domain \
             name; set hostname = \"host.example.com\" in {file}"
        )
    })
}

/// Builds everything the configuration describes. Every error is a configuration error
/// (file, line and what is wrong, as the library words it).
#[allow(dead_code)] // the relay keeps sessions open and calls `engine_builder_with`
pub fn engine_builder(config: &Config, spool: Arc<dyn Spool>) -> Result<Configured, String> {
    // A command's run is short: a session kept open after it would only be cut at exit.
    engine_builder_with(config, spool, None)
}

/// [`engine_builder`] with idle ESMTP sessions kept for `connection_cache` (a daemon's
/// steady stream of mail then reuses its connections).
pub fn engine_builder_with(
    config: &Config,
    spool: Arc<dyn Spool>,
    connection_cache: Option<Duration>,
) -> Result<Configured, String> {
    let hostname = hostname(config)?;
    let mut warnings = Vec::new();
    let (router, w) = config.build_router().map_err(|e| e.to_string())?;
    warnings.extend(w.iter().map(ToString::to_string));
    let (policy, w) = config.load_policy().map_err(|e| e.to_string())?;
    warnings.extend(w.iter().map(ToString::to_string));
    let dns = config.dns_resolver().map_err(|e| e.to_string())?;

    let mut esmtp = EsmtpConfig::new(hostname.clone());
    esmtp.connection_cache = connection_cache;
    // This machine's addresses end an MX list that names it (RFC 5321 §5.1).
    match LocalIdentity::detect(&hostname) {
        Ok(me) => {
            esmtp.local_addresses = LocalAddresses::from_fn(move |ip| me.is_local_addr(ip));
        }
        Err(e) => warnings.push(format!(
            "cannot list this machine's addresses ({e}); mail loops through an MX record \
             naming this host are detected by name only"
        )),
    }
    let spf_policy = config.spf_policy();
    if spf_policy != SpfPolicy::Off {
        let checker = SpfChecker::new(&dns, SpfOptions::default()).map_err(|e| e.to_string())?;
        esmtp.spf = Some(SpfConfig {
            checker,
            policy: spf_policy,
            public_addresses: config.spf.public_addresses.clone(),
            smart_host_available: config.smart_host.is_some(),
        });
    }
    let transport = Arc::new(EsmtpTransport::new(esmtp, Arc::new(dns), Arc::new(policy)));
    let router = Arc::new(router);

    let limits = Limits {
        // A command lives for one submission or one queue run: no periodic rescans, and a
        // short grace so an interrupted run leaves quickly (its recipients stay queued).
        queue_scan_interval: None,
        shutdown_grace: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut builder = Engine::builder()
        .hostname(hostname)
        .spool(spool)
        .router(router.clone())
        .transport(transport.clone())
        .retry(config.retry_policy())
        .limits(limits);
    if let Some(signer) = config.dkim_signer().map_err(|e| e.to_string())? {
        builder = builder.signer(Arc::new(signer));
    }
    Ok(Configured {
        builder,
        warnings,
        router,
        transport,
    })
}
