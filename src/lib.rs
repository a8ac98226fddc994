//! # postrider: an embeddable mail transfer agent
//!
//! postrider is the MTA a program links in when it must send mail and must never lose it: a
//! voicemail server mailing `.wav` files, a PBX, a monitoring box, a web application. It makes
//! each message durable before `submit` returns, decides where it goes (sendmail-compatible
//! mailertable, smart host, local domains), delivers it over ESMTP with TLS and AUTH, retries
//! what is deferred, and bounces what fails with an RFC 3464 report.
//!
//! Four traits compose into the queue [`Engine`](engine::Engine): [`Spool`] (storage),
//! [`Router`] (where a recipient goes), [`Resolver`] (MX and address lookups) and
//! [`Transport`] (delivery). Each has a default implementation that a real deployment uses.
//! When mail does not go out, the [`doctor`] says why and what to fix.
//!
//! # Example
//!
//! A voicemail server whose mail goes where `/etc/postrider/postrider.toml` says (a smart host,
//! a mailertable, direct to MX); the same example as in the README. [`config`] builds every
//! part from the file; an embedder who wants other parts builds the engine from them with
//! [`Engine::builder`](engine::Engine::builder).
//!
//! ```rust,no_run
//! use postrider::config::Config;
//! use postrider::{Address, Envelope, ReversePath};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The host name, smart host, mailertable, TLS and credentials policy, DNS, SPF, retry
//!     // schedule and limits, as sendmail and Postfix users write them (see below).
//!     let config = Config::load("/etc/postrider/postrider.toml")?;
//!     let parts = config.assemble().await?;
//!     for warning in parts.warnings() {
//!         eprintln!("warning: {warning}"); // e.g. a host name that is not fully qualified
//!     }
//!     let engine = parts
//!         .engine_builder(config.open_spool().await?)
//!         .start() // recovers whatever an earlier run left in the spool
//!         .await?;
//!
//!     let mut events = engine.subscribe();
//!     let envelope = Envelope::new(
//!         ReversePath::parse("pbx@example.com")?,
//!         [Address::parse("alice@example.org")?],
//!     );
//!     // Returns once the message is on disk and would survive a power cut.
//!     let id = engine
//!         .submit(envelope, "Subject: voicemail\r\n\r\nYou have a new message.\r\n")
//!         .await?;
//!
//!     // Every attempt is an event, and a log line you already know:
//!     // 1K0TX2MWA6Q8RMQQ: to=<alice@example.org>, delay=00:00:01, xdelay=00:00:01,
//!     //   mailer=relay, relay=[smtp-relay.gmail.com], dsn=2.0.0, stat=Sent (250 2.0.0 Ok)
//!     while let Ok(event) = events.recv().await {
//!         println!("{}", event.log_line());
//!         if event.id == id {
//!             break;
//!         }
//!     }
//!     engine.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! [`message`] has what a submission agent does to a message a program hands it
//! (`sendmail -t`, the missing `From:`, `Date:` and `Message-ID:`); the `sendmail` and
//! `voicemail` examples show the whole crate at work.
#![warn(missing_docs)]

/// The README's code blocks, compiled as doctests so its embedding example cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod address;
pub mod config;
pub mod dkim;
pub mod doctor;
pub mod engine;
pub mod envelope;
mod handshake_signatures;
pub mod https;
pub mod local;
pub mod message;
pub mod metrics;
pub mod oauth2;
pub mod queue_id;
pub mod resolve;
pub mod route;
pub mod server;
pub mod spf;
pub mod spool;
pub mod status;
pub mod time;
pub mod tls_policy;
pub mod transport;

pub use address::{Address, AddressError, Domain, ReversePath};
pub use envelope::{BodyType, Envelope, EnvelopeError, Notify, OriginalRecipient, Recipient, Ret};
pub use queue_id::{QueueId, QueueIdError};
pub use resolve::{MailExchanger, ResolveError, Resolver};
pub use route::{Host, LocalTarget, Mailer, NextHop, Route, RouteError, Router};
pub use spf::{SpfChecker, SpfDecision, SpfPolicy, SpfVerdict};
pub use spool::{MessageState, Spool, SpoolError};
pub use status::{Diagnostic, EnhancedStatus, Outcome, Reply, Severity, StatusError};
pub use transport::{Delivery, RecipientReport, RemoteHost, Transport};
