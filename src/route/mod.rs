//! Where a recipient's mail goes: the `Router` trait and the routes it returns.
//!
//! The default router is the sendmail-compatible [`Mailertable`] (with a smart host and local
//! domains); the per-next-hop TLS and credentials policy lives in [`policy`].
//!
//! Modules: [`table_file`] (line numbering, origins, warnings), [`hop`] (host lists),
//! [`value`] (mailertable values), [`table`] (keys and lookup), [`local`] (local-host-names),
//! [`smart_host`], [`explain`] (`sendmail -bv` lines), [`mailertable`] (the router),
//! [`policy`] and [`policy_file`] (TLS and credentials per next hop).

pub mod error;
pub mod explain;
pub mod hop;
pub mod local;
pub mod mailertable;
pub mod policy;
pub mod policy_file;
pub mod smart_host;
pub mod table;
pub mod table_file;
pub mod value;

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::address::{Address, Domain};
use crate::status::{Reply, Severity};

pub use error::{KeyProblem, LineError, LineProblem, LoadError};
pub use explain::{Explanation, Rule};
pub use local::{LocalDomains, LocalSource};
pub use mailertable::{Mailertable, MailertableBuilder};
pub use policy::{Credentials, HopPolicy, PolicyTable, Secret, TlsLevel};
pub use policy_file::{PolicyError, PolicyLineError, PolicyProblem};
pub use smart_host::{SmartHost, SmartHostError};
pub use table::{Key, Match, RouteTable};
pub use table_file::{Origin, ReadError, Warning, WarningKind};
pub use value::ValueError;

/// The delivery agent named in a mailertable value. All but `smtps` speak ESMTP over plain TCP
/// with STARTTLS as the policy allows; `smtps` starts TLS at connect (RFC 8314).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mailer {
    /// `esmtp`: EHLO, falling back to HELO if refused.
    Esmtp,
    /// `smtp`: sendmail's plain SMTP mailer; postrider still tries EHLO first.
    Smtp,
    /// `smtp8`: SMTP that may send 8-bit data without 8BITMIME.
    Smtp8,
    /// `relay`: sendmail's mailer for relaying to a smart host.
    Relay,
    /// `smtps`: implicit TLS, port 465 by default.
    Smtps,
}

impl Mailer {
    /// The mailer's name as written in a mailertable.
    pub fn name(&self) -> &'static str {
        match self {
            Mailer::Esmtp => "esmtp",
            Mailer::Smtp => "smtp",
            Mailer::Smtp8 => "smtp8",
            Mailer::Relay => "relay",
            Mailer::Smtps => "smtps",
        }
    }

    /// The port used when the route names none: 465 for `smtps`, else 25.
    pub fn default_port(&self) -> u16 {
        match self {
            Mailer::Smtps => 465,
            _ => 25,
        }
    }

    /// True when TLS starts at connect instead of by STARTTLS.
    pub fn implicit_tls(&self) -> bool {
        matches!(self, Mailer::Smtps)
    }
}

impl fmt::Display for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A next-hop host: a DNS name or an IP address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A host or domain name.
    Name(Domain),
    /// An address literal (`[10.0.0.5]`, `[IPv6:2001:db8::1]`).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(d) => write!(f, "{d}"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "IPv6:{ip}"),
        }
    }
}

/// One host to try: a name or literal, an optional port, and whether MX lookup applies.
///
/// It displays in the form Postfix and sendmail users write, which is also the key of the
/// TLS/credentials policy table: `[smtp.gmail.com]:587`, `mail.corporate.net`,
/// `[IPv6:2001:db8::1]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// The host.
    pub host: Host,
    /// The port, when the route names one.
    pub port: Option<u16>,
    /// True when the host is a mail domain whose MX records are looked up (no brackets).
    pub mx: bool,
}

impl NextHop {
    /// A bracketed host: connect to it directly, no MX lookup.
    pub fn direct(host: Host, port: Option<u16>) -> NextHop {
        NextHop {
            host,
            port,
            mx: false,
        }
    }

    /// A mail domain delivered through its MX records.
    pub fn mx(domain: Domain, port: Option<u16>) -> NextHop {
        NextHop {
            host: Host::Name(domain),
            port,
            mx: true,
        }
    }

    /// The port to connect to for `mailer`.
    pub fn port_for(&self, mailer: Mailer) -> u16 {
        self.port.unwrap_or(mailer.default_port())
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mx {
            write!(f, "{}", self.host)?;
        } else {
            write!(f, "[{}]", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Where a recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Deliver over (E)SMTP to the first of `hops` that answers.
    Relay {
        /// The mailer (`esmtp`, `smtps`, ...).
        mailer: Mailer,
        /// Hosts in the order to try (fallbacks after the first).
        hops: Vec<NextHop>,
    },
    /// Deliver on this machine, through the local transport (aliases apply there).
    Local {
        /// Whose mail it is: the recipient's local part, a named user, or an address the
        /// local transport forwards to.
        target: LocalTarget,
    },
    /// Refuse with this reply (the mailertable `error:` mailer); 4xx defers, 5xx fails.
    Reject {
        /// The reply to report.
        reply: Reply,
    },
}

/// Whose mail a [`Route::Local`] recipient is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LocalTarget {
    /// The local part of the recipient's own address (`aaa@ourtest.com` is `aaa`'s).
    Recipient,
    /// This local name instead (`local:postmaster` in a mailertable, a virtusertable entry
    /// naming a user); aliases apply to it.
    User(String),
    /// A virtusertable entry naming an address elsewhere: the local transport queues a copy
    /// for it (same sender, ORCPT kept) and reports the recipient delivered.
    Forward(Address),
}

impl LocalTarget {
    /// The local name `recipient`'s mail is for, or `None` for a forward.
    pub fn local_name<'a>(&'a self, recipient: &'a Address) -> Option<&'a str> {
        match self {
            LocalTarget::Recipient => Some(recipient.local_part()),
            LocalTarget::User(u) => Some(u),
            LocalTarget::Forward(_) => None,
        }
    }
}

/// The kinds of route, each delivered by the transport for its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Over SMTP ([`Route::Relay`]).
    Relay,
    /// On this machine ([`Route::Local`]).
    Local,
    /// Refused by routing itself ([`Route::Reject`]); no transport is involved.
    Reject,
}

impl Route {
    /// Local delivery to the recipient's own local part.
    pub fn local() -> Route {
        Route::Local {
            target: LocalTarget::Recipient,
        }
    }

    /// Which kind of route this is.
    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Relay { .. } => RouteKind::Relay,
            Route::Local { .. } => RouteKind::Local,
            Route::Reject { .. } => RouteKind::Reject,
        }
    }

    /// Direct delivery to the recipient domain's MX hosts over ESMTP.
    pub fn direct_mx(domain: &Domain) -> Route {
        Route::Relay {
            mailer: Mailer::Esmtp,
            hops: vec![NextHop::mx(domain.clone(), None)],
        }
    }
}

/// A routing failure (a lookup in an external table failed, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Try again later.
    #[error("routing failed temporarily: {reason}")]
    Temporary {
        /// What went wrong.
        reason: String,
    },
    /// The recipient cannot be routed.
    #[error("recipient cannot be routed: {reason}")]
    Permanent {
        /// What went wrong.
        reason: String,
    },
}

impl RouteError {
    /// Temporary or permanent.
    pub fn severity(&self) -> Severity {
        match self {
            RouteError::Temporary { .. } => Severity::Temporary,
            RouteError::Permanent { .. } => Severity::Permanent,
        }
    }
}

/// Decides where each recipient's mail goes.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// The route for one recipient.
    async fn route(&self, recipient: &Address) -> Result<Route, RouteError>;

    /// The smart host's route, for mail a transport asks to send through it instead of
    /// directly ([`Redirect::SmartHost`](crate::transport::Redirect::SmartHost)); `None` (the
    /// default) when there is none, and the transport's own outcome then stands.
    fn smart_host(&self) -> Option<Route> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_display_in_the_form_users_write() {
        let gmail = NextHop::direct(
            Host::Name(Domain::parse("smtp.gmail.com").unwrap()),
            Some(587),
        );
        assert_eq!(gmail.to_string(), "[smtp.gmail.com]:587");
        let corp = NextHop::mx(Domain::parse("mail.corporate.net").unwrap(), None);
        assert_eq!(corp.to_string(), "mail.corporate.net");
        let v6 = NextHop::direct(Host::Ip("2001:db8::1".parse().unwrap()), None);
        assert_eq!(v6.to_string(), "[IPv6:2001:db8::1]");
        assert_eq!(v6.port_for(Mailer::Smtps), 465);
        assert_eq!(gmail.port_for(Mailer::Smtps), 587);
    }
}
