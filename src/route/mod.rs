//! Where a recipient's mail goes: the `Router` trait and the routes it returns.
//!
//! The default router is the sendmail-compatible [`Mailertable`] (with a smart host and local
//! domains); the per-next-hop TLS and credentials policy lives in [`PolicyTable`].
//!
//! # The router
//!
//! The sendmail-compatible router: the virtusertable (for local and virtual domains), local
//! domains, then the mailertable, then the smart host, then direct delivery to the recipient
//! domain's MX hosts.
//!
//! The tables live in an immutable snapshot behind an `RwLock<Arc<_>>`: a lookup clones the
//! `Arc` (the lock is held for that instant only) and works on the snapshot, so a
//! [`reload`](Mailertable::reload) never blocks readers for longer than a pointer swap and a
//! lookup never sees half of an old table and half of a new one.
//!
//! ```
//! use postrider::route::{Mailertable, SmartHost};
//! use postrider::{Address, Route};
//! let (router, warnings) = Mailertable::builder()
//!     .mailertable_text("mailertable", "gmail.com esmtp:[smtp.gmail.com]:587\n")
//!     .local_host_names_text("local-host-names", "ourtest.com\n")
//!     .smart_host("[mail.isp.net]".parse::<SmartHost>()?)
//!     .build()?;
//! assert!(warnings.is_empty());
//! let e = router.explain(&Address::parse("user@gmail.com")?);
//! assert_eq!(e.to_string(), "user@gmail.com: mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 1)");
//! assert_eq!(router.lookup(&Address::parse("aaa@ourtest.com")?), Route::local());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Local domains
//!
//! Local domains: sendmail's class `w`, read from `local-host-names`, plus the host's own name and
//! `localhost`.
//!
//! The file holds host names separated by whitespace, usually one per line, with `#` comment
//! lines; names match exactly (a name does not cover its subdomains), case-insensitively.
//! Address literals (`[192.0.2.1]`) are accepted in sendmail's file but can never match here,
//! since postrider refuses address-literal recipients: they are skipped with a warning.
//!
//! # The smart host
//!
//! The smart host: where mail goes when no mailertable key matches (sendmail's `SMART_HOST`,
//! Postfix's `relayhost`).
//!
//! Written as sendmail and Postfix users write it: `[smtp.gmail.com]:587`, `mail.isp.net`,
//! `[192.0.2.25]`, with an optional mailer prefix (`smtps:[smtp.gmail.com]:465`,
//! `relay:[mail.isp.net]`). Without a prefix the mailer is `relay`, as in sendmail, so log lines
//! read `mailer=relay` for smart-host deliveries just as they did there.
//!
//! ```
//! use postrider::route::SmartHost;
//! let s: SmartHost = "[smtp.gmail.com]:587".parse()?;
//! assert_eq!(s.to_string(), "relay:[smtp.gmail.com]:587");
//! let s: SmartHost = "smtps:[smtp.gmail.com]:465".parse()?;
//! assert_eq!(s.mailer().name(), "smtps");
//! # Ok::<(), postrider::route::SmartHostError>(())
//! ```
//!
//! # The policy file
//!
//! The per-next-hop TLS and credentials file.
//!
//! One entry per line, fields separated by whitespace, `#` comment lines:
//!
//! ```text
//! # NEXT-HOP             [LEVEL]   [OPTION...]        [USER:PASSWORD]
//! [smtp.gmail.com]:587   encrypt   user@example.com:app-password
//! [mail.corporate.net]   verify
//! [10.0.0.5]:25          none      auth-without-tls   relay:s3cret
//! [smtp.office365.com]:587 verify oauth2=xoauth2 user=voicemail@example.com token-refresh=m365.oauth
//! [smtp.gmail.com]:465   verify    oauth2 user=pbx@example.com token-command=oama access pbx@example.com
//! *                      may
//! ```
//!
//! - NEXT-HOP is written as routes display it (`[host]:port`, `[host]`, `host`, `[10.0.0.5]`,
//!   `[IPv6:2001:db8::1]`); `*` or `default` is the entry for every other hop. A key without a
//!   port matches the host on any port; brackets are part of the key (`[mail.example.com]` is
//!   not `mail.example.com`, as in Postfix).
//! - LEVEL is `none | may | encrypt | verify`. When it is left out and credentials are given,
//!   the level is `encrypt`, so a Postfix `sasl_passwd` line (`[smtp.gmail.com]:587 user:pass`)
//!   works unchanged and never sends the password in clear text.
//! - OPTION: `auth-without-tls` allows AUTH on a connection without TLS (needed with `none`).
//!   LEVEL and options may come in any order; each at most once.
//! - OAuth2 instead of a password (Microsoft 365, Google Workspace): `oauth2` (or
//!   `oauth2=auto`: OAUTHBEARER when the server offers it, else XOAUTH2), `oauth2=xoauth2` or
//!   `oauth2=oauthbearer`; `user=ACCOUNT`; and where the access token comes from, one of
//!   `token-file=PATH` (a file another program keeps fresh), `token-refresh=PATH` (the RFC
//!   6749 refresh-token grant with the credentials in PATH, see
//!   [`RefreshGrant`](crate::oauth2::RefreshGrant)) or `token-command=COMMAND` (run with
//!   `/bin/sh -c`; it takes the rest of the line, so it comes last). Relative paths are
//!   relative to the policy file's folder. Without a level, an OAuth2 line means `encrypt`.
//! - USER:PASSWORD comes last: the user is everything up to the first `:` (so it cannot contain
//!   one), the password is the rest of the line (it may contain `:` and spaces; surrounding
//!   spaces are dropped).
//! - The first entry for a key is used; a later one is reported as a warning.
//!
//! Passwords never appear in errors, warnings, logs or `Debug` output: an error about a field
//! that may hold a secret names the field's position instead of quoting it (a token command
//! is never quoted either). A file with passwords that group or others can read gets a
//! warning (not an error, so a mode change never stops mail), like ssh's check on keys; so
//! does a token or credentials file named by `token-file=` or `token-refresh=`.
//!
//! # Explanations (`sendmail -bv`)
//!
//! Why a recipient routes where it does, for `sendmail -bv` and for administrators.
//!
//! An [`Explanation`] displays as one line that scripts can read:
//!
//! ```text
//! user@gmail.com: mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 3)
//! bob@hq.corp.example: mailer=esmtp host=mail.corporate.net port=25 mx=yes rule=mailertable:.corp.example (line 5)
//! x@bad.example: error dsn=5.7.0 code=550 text="mail to this domain is not accepted" rule=mailertable:bad.example (line 7)
//! aaa@ourtest.com: mailer=local user=aaa rule=local-host-names
//! info@ourtest.com: mailer=local user=bob rule=virtusertable:info@ourtest.com (line 2)
//! sales@ourtest.com: mailer=local forward=team@partner.example rule=virtusertable:sales@ourtest.com (line 3)
//! ```
//!
//! With fallback hosts each host repeats its `host= port= mx=` group, in the order tried. The
//! port is the one connected to (the mailer's default when the route names none). The rule is
//! one of `local-host-names`, `hostname`, `localhost`, `virtusertable:KEY (line N)`,
//! `virtual-domain` (a virtusertable domain without an entry for the address),
//! `mailertable:KEY (line N)`, `smart-host` or `direct-mx`. The user shown for local mail is
//! the name aliases are applied to; `sendmail -bv` shows their expansion after this line.
//!
//! # Mailertable values
//!
//! The mailertable value grammar: `mailer:hosts` for the relaying mailers, `local:` and
//! `local:user`, and `error:D.S.N:CODE text`.
//!
//! ```
//! use postrider::route::parse_value;
//! use postrider::Route;
//! let route = parse_value("esmtp:[smtp.gmail.com]:587")?;
//! assert!(matches!(route, Route::Relay { .. }));
//! assert_eq!(parse_value("local:")?, Route::local());
//! # Ok::<(), postrider::route::ValueError>(())
//! ```
//!
//! # Host lists
//!
//! The host-list grammar shared by mailertable values, the smart host and the policy file's
//! keys: `host` (MX lookup), `[host]` (no MX lookup), `[10.0.0.5]`, `[IPv6:2001:db8::1]` (or
//! Postfix's `[2001:db8::1]`), each optionally followed by `:port`; several hosts separated by
//! `:` or `,` are fallbacks tried in order (`[a]:[b]`, `a,b`, `[a]:587,[b]:587`).
//!
//! A component made only of digits is a port (Postfix's form, and what DESIGN.md specifies);
//! a host name cannot end in an all-digit label, so nothing is ambiguous.
//!
//! # Table lookup
//!
//! A parsed mailertable: keys to routes, and the lookup that gives sendmail's precedence.
//!
//! For a recipient domain `a.b.example.com` the lookup tries the exact key `a.b.example.com`,
//! then the `.parent` keys from the longest down (`.b.example.com`, `.example.com`, `.com`),
//! then the catch-all `.`. A key with a leading dot matches only names *below* it, as in
//! sendmail: `.example.com` does not match `example.com` itself. File order does not matter.
//! Each step is one hash lookup, so a lookup costs a few hundred nanoseconds whatever the
//! table's size.
//!
//! # Table files
//!
//! The plumbing shared by postrider's line-oriented table files (mailertable, local-host-names,
//! the TLS/credentials policy): where a text came from, its numbered content lines, warnings and
//! read errors that name the file and the line.
//!
//! The format is makemap's and postmap's: one entry per line, `#` starts a comment line, blank
//! lines are ignored, CRLF line ends and a UTF-8 byte-order mark are tolerated.
mod error;
mod explain;
pub(crate) mod hop;
mod local;
mod mailertable;
mod policy;
mod policy_file;
mod smart_host;
mod table;
pub(crate) mod table_file;
mod value;

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::address::{Address, Domain};
use crate::status::{Reply, Severity};

pub use error::{KeyProblem, LineError, LineProblem, LoadError};
pub use explain::{Explanation, Rule};
pub use hop::{HopError, display_hops, parse_hop, parse_hops};
pub use local::{LocalDomains, LocalSource};
pub use mailertable::{Mailertable, MailertableBuilder};
pub use policy::{Credentials, HopPolicy, PolicyTable, Secret, TlsLevel};
pub use policy_file::{PolicyError, PolicyLineError, PolicyProblem};
pub use smart_host::{SmartHost, SmartHostError};
pub use table::{Key, Match, RouteTable};
pub use table_file::{Origin, ReadError, Warning, WarningKind};
pub use value::{ErrorSpecProblem, MAILER_NAMES, ValueError, parse_value};

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
