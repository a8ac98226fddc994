//! The receiving daemon a configuration describes: the engine, the server and every
//! `[[listener]]` of `postrider.toml`, started together, reloaded together, stopped together.
//!
//! Programs that run the receiving edge (`examples/relay.rs`, `sendmail -bd`) are this plus
//! their arguments, signals and logging; `sendmail -bs` uses [`ServerSetup`] alone, for one
//! session on standard input and output.
//!
//! ```no_run
//! use postrider::config::Config;
//! use postrider::server::daemon::Daemon;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("/etc/postrider/postrider.toml")?;
//! let daemon = Daemon::start(config, &[]).await?;
//! let reloader = daemon.reloader();
//! tokio::spawn(async move {
//!     let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
//!         .expect("a SIGHUP handler");
//!     while hangup.recv().await.is_some() {
//!         reloader.reload();
//!     }
//! });
//! daemon.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! Everything that can be wrong with the files (a table, the access file, the password file, a
//! certificate) is found before anything starts, so a bad file is a clean
//! [`DaemonError::is_configuration`] error, never a half-started daemon. The engine behind the
//! server accepts whatever the server accepted (see [`ServerLimits::engine_message_size`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{AssembleError, Assembly, Config, Notice};
use crate::engine::{Engine, EngineError, Limits};
use crate::status::Severity;
use crate::tls_policy::{ReportSchedule, ReportSender, ReportTask, ReportTrigger, TlsReporter};

use super::access::AccessError;
use super::auth::Authenticator;
use super::limits::ServerLimits;
use super::passwd::{PasswdError, PasswordFile};
use super::relay::RelayPolicy;
use super::tls::{ServerTls, TlsError};
use super::{Endpoint, ListenerKind, Server, serve};

const TARGET: &str = "postrider::daemon";

/// Where a daemon listens when neither the configuration nor the caller names a listener:
/// loopback only, on a port that needs no privileges.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2525);

/// Why the daemon (or a server for one session) could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration's tables or host name (file and line named).
    #[error("{0}")]
    Assemble(AssembleError),
    /// The access file.
    #[error("{0}")]
    Access(#[from] AccessError),
    /// The password file.
    #[error("{0}")]
    Passwords(#[from] PasswdError),
    /// A listener's certificate or key.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The spool cannot be opened.
    #[error("cannot open the spool: {0}")]
    Spool(AssembleError),
    /// The engine did not start over the spool.
    #[error("cannot start the queue engine: {0}")]
    Engine(EngineError),
    /// A listen address cannot be bound (in use, not an address of this machine, a
    /// privileged port without the privilege).
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl DaemonError {
    /// True when a file of the configuration must be fixed (sysexits' `EX_CONFIG`); false when
    /// the machine is the problem (the spool, a port: `EX_OSERR`).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            DaemonError::Assemble(_)
                | DaemonError::Access(_)
                | DaemonError::Passwords(_)
                | DaemonError::Tls(_)
        )
    }

    /// Temporary when starting again later may work without a change (a spool on a disk that
    /// comes back, DNS that answers again, a port that is freed); permanent otherwise.
    pub fn severity(&self) -> Severity {
        match self {
            DaemonError::Assemble(e) | DaemonError::Spool(e) => e.severity(),
            DaemonError::Engine(e) => e.severity(),
            DaemonError::Listen { .. } => Severity::Temporary,
            DaemonError::Access(_) | DaemonError::Passwords(_) | DaemonError::Tls(_) => {
                Severity::Permanent
            }
        }
    }
}

/// What a [`Server`] needs from `postrider.toml`, read and checked: the relay policy (access
/// file, `mynetworks`), the password file, the limits, and each listener's endpoint with its
/// certificate. Nothing is started or bound.
pub struct ServerSetup {
    policy: RelayPolicy,
    passwords: Option<Arc<PasswordFile>>,
    limits: ServerLimits,
    received_auth_header: bool,
    listeners: Vec<(SocketAddr, Endpoint)>,
    certificates: Vec<Arc<ServerTls>>,
}

impl std::fmt::Debug for ServerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSetup")
            .field("limits", &self.limits)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl ServerSetup {
    /// Reads the `[server]` section's files and every `[[listener]]`'s certificate.
    pub fn read(config: &Config) -> Result<ServerSetup, DaemonError> {
        let policy = config.server.relay_policy()?;
        let passwords = config.server.password_file()?.map(Arc::new);
        let mut listeners = Vec::new();
        let mut certificates = Vec::new();
        for l in &config.listener {
            let tls = l.tls()?;
            certificates.extend(tls.clone());
            listeners.push((l.address, l.endpoint(tls)));
        }
        Ok(ServerSetup {
            policy,
            passwords,
            limits: config.server.limits.to_limits(),
            received_auth_header: config.server.received_auth_header,
            listeners,
            certificates,
        })
    }

    /// The configured listeners: address and endpoint.
    pub fn listeners(&self) -> &[(SocketAddr, Endpoint)] {
        &self.listeners
    }

    /// The server's limits (`[server.limits]`).
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// `limits` (an engine's) with room for everything this server accepts: an engine that
    /// refused a message the server had taken within its advertised `SIZE` would break the
    /// promise `SIZE` makes.
    pub fn engine_limits(&self, mut limits: Limits) -> Limits {
        limits.max_message_size = limits
            .max_message_size
            .max(self.limits.engine_message_size());
        limits
    }

    /// The server over `engine`, with the router, host name and resolver of `parts`.
    pub fn server(&self, engine: Engine, parts: &Assembly) -> Server {
        let mut builder = Server::builder(engine, parts.router().clone(), parts.hostname().clone())
            .relay_policy(self.policy.clone())
            .limits(self.limits.clone())
            .received_auth_header(self.received_auth_header)
            .resolver(Arc::new(parts.dns().clone()));
        if let Some(p) = &self.passwords {
            builder = builder.authenticator(p.clone() as Arc<dyn Authenticator>);
        }
        builder.build()
    }
}

/// One listener of a running daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The address it is bound to (the real port when the configuration said port 0).
    pub address: SocketAddr,
    /// Its kind.
    pub kind: ListenerKind,
    /// True when it offers TLS (STARTTLS, or implicit on `submissions`).
    pub tls: bool,
}

/// The engine, the server and the bound listeners of a configuration; [`Daemon::run`] serves
/// them.
pub struct Daemon {
    parts: Arc<Assembly>,
    engine: Engine,
    server: Server,
    bound: Vec<(TcpListener, Listening, Endpoint)>,
    reloader: Reloader,
    /// The TLS-RPT loop, with `[tls] tls_rpt = true`.
    reports: Option<(Arc<TlsReporter>, ReportTask)>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("server", &self.server)
            .field("listening", &self.listening())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Reads everything `config` names, binds every `[[listener]]` and each address of
    /// `extra` (an `smtp` listener without TLS, as `relay --listen` adds), or
    /// [`DEFAULT_LISTEN`] when there is none, opens the spool and starts the engine. Nothing
    /// is served before [`Daemon::run`].
    ///
    /// The engine is a daemon's: periodic rescans of the spool (`[queue] scan_interval`), the
    /// shutdown grace of `[queue]`, the session cache of `[esmtp]`.
    pub async fn start(config: Config, extra: &[SocketAddr]) -> Result<Daemon, DaemonError> {
        let parts = Arc::new(config.assemble().await.map_err(DaemonError::Assemble)?);
        let setup = ServerSetup::read(&config)?;
        let mut listeners = setup.listeners.clone();
        listeners.extend(
            extra
                .iter()
                .map(|a| (*a, Endpoint::new(ListenerKind::Smtp))),
        );
        if listeners.is_empty() {
            listeners.push((DEFAULT_LISTEN, Endpoint::new(ListenerKind::Smtp)));
        }
        // Bound before the engine starts: a port in use stops nothing half-way.
        let mut bound = Vec::new();
        for (address, endpoint) in listeners {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| DaemonError::Listen { address, source })?;
            let local = listener.local_addr().unwrap_or(address);
            let listening = Listening {
                address: local,
                kind: endpoint.kind(),
                tls: endpoint.tls().is_some(),
            };
            bound.push((listener, listening, endpoint));
        }
        let spool = config.open_spool().await.map_err(DaemonError::Spool)?;
        let limits = setup.engine_limits(parts.limits().clone());
        let engine = parts
            .engine_builder(spool)
            .limits(limits)
            .start()
            .await
            .map_err(DaemonError::Engine)?;
        let server = setup.server(engine.clone(), &parts);
        let reports = start_reports(&parts, &engine);
        let reloader = Reloader {
            inner: Arc::new(ReloadParts {
                config,
                parts: parts.clone(),
                server: server.clone(),
                passwords: setup.passwords.clone(),
                certificates: setup.certificates.clone(),
            }),
        };
        Ok(Daemon {
            parts,
            engine,
            server,
            bound,
            reloader,
            reports,
        })
    }

    /// What an operator should fix although everything works (an unqualified host name, a
    /// table's duplicate key): print these at every start.
    pub fn warnings(&self) -> &[Notice] {
        self.parts.warnings()
    }

    /// The listeners, bound.
    pub fn listening(&self) -> Vec<Listening> {
        self.bound.iter().map(|(_, l, _)| l.clone()).collect()
    }

    /// The queue engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The server every listener serves.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// A handle that re-reads the files (for SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// A handle that asks the TLS-RPT loop to send what is due at a given time now
    /// (`None` without `[tls] tls_rpt = true`). The loop sends by itself every hour; this
    /// is for an administrator's "send the reports now", and for tests, which cannot wait
    /// for midnight: a time a day ahead makes today a finished day.
    pub fn tls_reports(&self) -> Option<ReportTrigger> {
        self.reports.as_ref().map(|(_, task)| task.trigger())
    }

    /// Serves every listener until `shutdown` completes; then stops taking connections, lets
    /// each session end (`421` at its next command, a message being submitted finished
    /// first), and shuts the engine down (each delivery finishes the message it is on, within
    /// `[queue] shutdown_grace`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let hostname = self.server.hostname().clone();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for (listener, l, endpoint) in self.bound {
            tracing::info!(
                target: TARGET,
                "listening on {} ({}{}) as {hostname}",
                l.address,
                l.kind,
                if l.tls { ", TLS" } else { "" }
            );
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(serve(
                listener,
                self.server.clone(),
                endpoint,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )));
        }
        shutdown.await;
        tracing::info!(target: TARGET, "stopping: no new connections; sessions end, then the queue engine");
        let _ = stop.send(true);
        for t in tasks {
            let _ = t.await;
        }
        // The loop submits through the engine, so it stops first (after the send it is on);
        // the last flush comes after the engine's, which may still count the sessions that
        // finish their message.
        let reporter = match self.reports {
            Some((reporter, task)) => {
                task.stop().await;
                Some(reporter)
            }
            None => None,
        };
        self.engine.shutdown().await;
        if let Some(Err(e)) = reporter.map(|r| r.flush()) {
            tracing::warn!(target: TARGET, "{e}");
        }
    }
}

/// Starts the TLS-RPT loop over the transport's reporter, when `[tls] tls_rpt` made one.
/// A reload re-reads tables, never `[tls]`, so this reporter stays the one the transport
/// counts into for the daemon's whole life: one loop, started once.
fn start_reports(parts: &Assembly, engine: &Engine) -> Option<(Arc<TlsReporter>, ReportTask)> {
    let reporter = parts
        .esmtp()
        .config()
        .tls_policy
        .as_ref()
        .and_then(|o| o.reporter())?
        .clone();
    let from = match crate::address::Address::new("postmaster", parts.hostname().clone()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(target: TARGET, "TLS-RPT reports not sent: no sender address for {}: {e}", parts.hostname());
            return None;
        }
    };
    let sender = ReportSender {
        engine: engine.clone(),
        dns: parts.dns().clone(),
        submitter: parts.hostname().clone(),
        from,
    };
    let task = reporter.clone().spawn(sender, ReportSchedule::default());
    Some((reporter, task))
}

/// Re-reads a daemon's files, as `postfix reload` or a HUP to sendmail does.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<ReloadParts>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

struct ReloadParts {
    config: Config,
    parts: Arc<Assembly>,
    server: Server,
    passwords: Option<Arc<PasswordFile>>,
    certificates: Vec<Arc<ServerTls>>,
}

/// What one reload did: a sentence per file or group of files, as logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What was read and is now in use.
    pub reloaded: Vec<String>,
    /// What was refused (the previous version stays in use), with the reason.
    pub refused: Vec<String>,
}

impl Reloader {
    /// Re-reads the mailertable, local-host-names and policy file (all or nothing), the access
    /// file, the password file and every listener's certificate. Each is read whole first; one
    /// with errors is refused with the reason logged, and what was in use stays in use.
    pub fn reload(&self) -> ReloadReport {
        let r = &self.inner;
        let mut report = ReloadReport::default();
        match r.parts.reload(&r.config) {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!(target: TARGET, "{w}");
                }
                // The router and the transport log this themselves.
                report
                    .reloaded
                    .push("mailertable, local-host-names and policy file reloaded".into());
            }
            Err(e) => report.refuse(format!(
                "tables not reloaded, the previous ones stay in use: {e}"
            )),
        }
        match r.config.server.relay_policy() {
            Ok(p) => {
                r.server.set_relay_policy(p);
                report.accept("access control reloaded".into());
            }
            Err(e) => report.refuse(format!(
                "access control not reloaded, the previous one stays in use: {e}"
            )),
        }
        if let Some(p) = &r.passwords {
            match p.reload() {
                Ok(n) => report.accept(format!("password file reloaded: {n} users")),
                Err(e) => report.refuse(format!(
                    "password file not reloaded, the previous one stays in use: {e}"
                )),
            }
        }
        for tls in &r.certificates {
            match tls.reload() {
                Ok(()) => report.accept(format!(
                    "certificate {} reloaded",
                    tls.certificate_file().display()
                )),
                Err(e) => report.refuse(format!(
                    "certificate not reloaded, the previous one stays in use: {e}"
                )),
            }
        }
        report
    }
}

impl ReloadReport {
    fn accept(&mut self, line: String) {
        tracing::info!(target: TARGET, "{line}");
        self.reloaded.push(line);
    }

    fn refuse(&mut self, line: String) {
        tracing::error!(target: TARGET, "{line}");
        self.refused.push(line);
    }
}
