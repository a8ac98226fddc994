//! The receiving edge: an SMTP server that hands each message to [`Engine::submit`] and says
//! `250` only once the engine holds it.
//!
//! A [`Server`] is what every session shares: the engine, the router (a recipient whose route
//! is [`Route::Local`](crate::Route::Local) is accepted from anyone; any other only from a
//! client that may relay), the [`RelayPolicy`] (sendmail's access file and Postfix's
//! `mynetworks`), the [`Authenticator`], the limits and the time-outs. [`serve`] runs one
//! listener ([`Endpoint`]: `smtp`, `submission` or `submissions`) until its shutdown future
//! completes; [`serve_session`] runs one session on any reader and writer (`sendmail -bs`).
//!
//! It is never an open relay: with no access file and no `mynetworks`, only loopback clients
//! may relay; on `submission` and `submissions` every transaction needs AUTH, and AUTH needs
//! TLS.
//!
//! ```no_run
//! use std::sync::Arc;
//! use postrider::engine::Engine;
//! use postrider::route::Mailertable;
//! use postrider::server::{Endpoint, ListenerKind, Server, serve};
//! use postrider::spool::FsSpool;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (router, _) = Mailertable::builder().build()?;
//! let router = Arc::new(router);
//! let engine = Engine::builder()
//!     .hostname("mail.example.com".parse()?)
//!     .spool(Arc::new(FsSpool::open("/var/spool/postrider")?))
//!     .router(router.clone())
//!     .start()
//!     .await?;
//! let server = Server::builder(engine.clone(), router, "mail.example.com".parse()?).build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
//! serve(listener, server, Endpoint::new(ListenerKind::Smtp), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! engine.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules: [`command`] (the parser), [`data`] and [`bdat`] (message readers), [`limits`],
//! [`access`], [`networks`] and [`relay`] (who may relay), [`auth`] and [`passwd`] (AUTH),
//! [`tls`], [`reverse`] (the client's name), [`received`] (the trace field), [`config`]
//! (the configuration sections), [`daemon`] (all of it as `postrider.toml` describes it:
//! the engine, the server and its listeners, reloaded and stopped together); the session and
//! the accept loop are private.

pub mod access;
pub mod auth;
pub mod bdat;
pub mod command;
pub mod config;
pub mod daemon;
pub mod data;
pub mod limits;
pub mod networks;
pub mod passwd;
pub mod received;
pub mod relay;
pub mod reverse;
mod serve;
mod session;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use crate::address::Domain;
use crate::engine::Engine;
use crate::resolve::Resolver;
use crate::route::Router;

pub use auth::Authenticator;
pub use limits::{ServerLimits, ServerTimeouts};
pub use relay::RelayPolicy;
pub use serve::{SessionReport, serve, serve_session};
pub use tls::ServerTls;

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Port 25 style: mail from anyone for local domains, relaying by the relay policy or
    /// AUTH; STARTTLS offered when a certificate is configured.
    Smtp,
    /// Port 587 (RFC 6409): every transaction needs AUTH; AUTH needs STARTTLS first.
    Submission,
    /// Port 465 (RFC 8314): TLS from the first byte, then as `submission`.
    Submissions,
}

impl ListenerKind {
    /// True for the kinds where MAIL needs AUTH.
    pub fn requires_auth(&self) -> bool {
        !matches!(self, ListenerKind::Smtp)
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        })
    }
}

/// One listener's settings.
#[derive(Debug, Clone)]
pub struct Endpoint {
    kind: ListenerKind,
    tls: Option<Arc<ServerTls>>,
    allow_plaintext_auth_from_loopback: bool,
}

/// A `submissions` endpoint without a certificate.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a submissions listener speaks TLS from the first byte: it needs a certificate and key")]
pub struct EndpointError;

impl Endpoint {
    /// An endpoint of `kind` without TLS (for `submissions` use [`Endpoint::with_tls`]).
    pub fn new(kind: ListenerKind) -> Endpoint {
        Endpoint {
            kind,
            tls: None,
            allow_plaintext_auth_from_loopback: false,
        }
    }

    /// An endpoint with TLS: STARTTLS on `smtp` and `submission`, implicit on `submissions`.
    pub fn with_tls(kind: ListenerKind, tls: Arc<ServerTls>) -> Endpoint {
        Endpoint {
            kind,
            tls: Some(tls),
            allow_plaintext_auth_from_loopback: false,
        }
    }

    /// Lets loopback clients AUTH without TLS (off by default: a password in the clear is
    /// readable by anything that can read loopback traffic, e.g. a container's neighbours).
    pub fn allow_plaintext_auth_from_loopback(mut self, allow: bool) -> Endpoint {
        self.allow_plaintext_auth_from_loopback = allow;
        self
    }

    /// Checks the endpoint can work (`submissions` needs TLS).
    pub fn check(&self) -> Result<(), EndpointError> {
        if self.kind == ListenerKind::Submissions && self.tls.is_none() {
            return Err(EndpointError);
        }
        Ok(())
    }

    /// The kind.
    pub fn kind(&self) -> ListenerKind {
        self.kind
    }

    /// The TLS configuration, if any.
    pub fn tls(&self) -> Option<&Arc<ServerTls>> {
        self.tls.as_ref()
    }
}

/// What every session of a server shares. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) router: Arc<dyn Router>,
    pub(crate) resolver: Option<Arc<dyn Resolver>>,
    pub(crate) hostname: Domain,
    pub(crate) policy: RwLock<Arc<RelayPolicy>>,
    pub(crate) authenticator: RwLock<Option<Arc<dyn Authenticator>>>,
    pub(crate) limits: ServerLimits,
    pub(crate) timeouts: ServerTimeouts,
    pub(crate) show_auth_user: bool,
    pub(crate) connections: Mutex<Connections>,
}

#[derive(Default)]
pub(crate) struct Connections {
    pub(crate) total: usize,
    pub(crate) per_client: HashMap<IpAddr, usize>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("hostname", &self.shared.hostname)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`].
pub struct ServerBuilder {
    engine: Engine,
    router: Arc<dyn Router>,
    hostname: Domain,
    resolver: Option<Arc<dyn Resolver>>,
    policy: RelayPolicy,
    authenticator: Option<Arc<dyn Authenticator>>,
    limits: ServerLimits,
    timeouts: ServerTimeouts,
    show_auth_user: bool,
}

impl Server {
    /// A builder: the engine that takes the messages, the router that says which recipients
    /// are local, and the name the server greets with.
    pub fn builder(engine: Engine, router: Arc<dyn Router>, hostname: Domain) -> ServerBuilder {
        ServerBuilder {
            engine,
            router,
            hostname,
            resolver: None,
            policy: RelayPolicy::default(),
            authenticator: None,
            limits: ServerLimits::default(),
            timeouts: ServerTimeouts::default(),
            show_auth_user: false,
        }
    }

    /// Replaces the relay policy (a reloaded access file); sessions already past their
    /// greeting keep the verdict they got.
    pub fn set_relay_policy(&self, policy: RelayPolicy) {
        *self
            .shared
            .policy
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Replaces the authenticator (`None`: no AUTH offered).
    pub fn set_authenticator(&self, authenticator: Option<Arc<dyn Authenticator>>) {
        *self
            .shared
            .authenticator
            .write()
            .unwrap_or_else(|p| p.into_inner()) = authenticator;
    }

    /// The name the server greets with.
    pub fn hostname(&self) -> &Domain {
        &self.shared.hostname
    }

    /// The limits.
    pub fn limits(&self) -> &ServerLimits {
        &self.shared.limits
    }

    /// Sessions open now.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total
    }
}

impl ServerBuilder {
    /// The resolver for the clients' reverse lookups; without one every client is `unknown`.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Who may relay (default: loopback clients only).
    pub fn relay_policy(mut self, policy: RelayPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The password check for AUTH (default: none, no AUTH offered).
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Size and count limits.
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Time limits.
    pub fn timeouts(mut self, timeouts: ServerTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Whether `Received:` names the authenticated user (Postfix's
    /// `smtpd_sasl_authenticated_header`, off by default: it tells every recipient a login
    /// name).
    pub fn received_auth_header(mut self, show: bool) -> Self {
        self.show_auth_user = show;
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        Server {
            shared: Arc::new(Shared {
                engine: self.engine,
                router: self.router,
                resolver: self.resolver,
                hostname: self.hostname,
                policy: RwLock::new(Arc::new(self.policy)),
                authenticator: RwLock::new(self.authenticator),
                limits: self.limits,
                timeouts: self.timeouts,
                show_auth_user: self.show_auth_user,
                connections: Mutex::new(Connections::default()),
            }),
        }
    }
}
