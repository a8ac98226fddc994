//! # postrider: an embeddable mail transfer agent
//!
//! postrider is the MTA a program links in when it must send mail and must never lose it: a
//! voicemail server mailing `.wav` files, a PBX, a monitoring box, a web application. It makes
//! each message durable before `submit` returns, decides where it goes (sendmail-compatible
//! mailertable, smart host, local domains), delivers it over ESMTP with TLS and AUTH, retries
//! what is deferred, and bounces what fails with an RFC 3464 report.
//!
//! Four traits compose into the queue [`Engine`](engine::Engine): [`Spool`] (storage), [`Router`] (where a
//! recipient goes), [`Resolver`] (MX and address lookups) and [`Transport`] (delivery).
//! Each has a default implementation that a real deployment uses.
#![warn(missing_docs)]

pub mod address;
pub mod config;
pub mod engine;
pub mod envelope;
pub mod message;
pub mod queue_id;
pub mod resolve;
pub mod route;
pub mod spf;
pub mod spool;
pub mod status;
pub mod time;
pub mod transport;

pub use address::{Address, AddressError, Domain, ReversePath};
pub use envelope::{BodyType, Envelope, EnvelopeError, Notify, OriginalRecipient, Recipient, Ret};
pub use queue_id::{QueueId, QueueIdError};
pub use resolve::{MailExchanger, ResolveError, Resolver};
pub use route::{Host, Mailer, NextHop, Route, RouteError, Router};
pub use spf::{SpfChecker, SpfDecision, SpfPolicy, SpfVerdict};
pub use spool::{MessageState, Spool, SpoolError};
pub use status::{Diagnostic, EnhancedStatus, Outcome, Reply, Severity, StatusError};
pub use transport::{Delivery, RecipientReport, RemoteHost, Transport};
