//! Handing messages to the next hop: the `Transport` trait, and how a transport tells the engine
//! what became of each message ([`Reports`]).
//!
//! A transport reports every message of a batch as soon as its fate is known (for SMTP: when
//! the reply to the end of its data has been read) and waits for [`Reports::record`] to return
//! before it starts the next one. The engine makes the outcome durable in that time, so a crash
//! or a stop at any instant re-sends at most the one message per connection whose reply was on
//! the wire and not yet recorded, never a whole batch.
//!
//! The default transport for relay routes is [`EsmtpTransport`](esmtp::EsmtpTransport): ESMTP
//! over tokio with STARTTLS or implicit TLS by rustls, AUTH, and pipelining.

pub mod esmtp;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use crate::envelope::{Envelope, Recipient};
use crate::queue_id::QueueId;
use crate::route::Route;
use crate::status::{Diagnostic, EnhancedStatus, Outcome};

/// Connections (or deliveries) open at once to one next hop, unless configured otherwise
/// (Postfix's `default_destination_concurrency_limit`): the engine's per-route limit and the
/// ESMTP transport's per-host limit both start from it.
pub const DEFAULT_DESTINATION_CONCURRENCY: usize = 20;

/// One message in a delivery batch, with the recipients to attempt now.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message's queue id.
    pub id: QueueId,
    /// Its envelope (sender, DSN parameters, all recipients).
    pub envelope: Arc<Envelope>,
    /// Indices into `envelope.recipients` of the recipients to attempt with this route.
    pub recipients: Vec<usize>,
    /// The message (headers and body), CRLF line endings, not dot-stuffed.
    pub body: Bytes,
}

/// The host that answered, as log lines show it: `mx.b.example. [192.0.2.1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteHost {
    /// The host name, when known.
    pub name: Option<String>,
    /// The address connected to, when a connection was made.
    pub addr: Option<IpAddr>,
}

impl fmt::Display for RemoteHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.addr) {
            (Some(n), Some(a)) => write!(f, "{n}. [{a}]"),
            (Some(n), None) => write!(f, "{n}."),
            (None, Some(a)) => write!(f, "[{a}]"),
            (None, None) => Ok(()),
        }
    }
}

/// Instead of an outcome here, the transport asks the engine to send a recipient another way,
/// within the same attempt. The report's `outcome` is what applies when the engine cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// Through the smart host: the SPF pre-flight found that this host's address may not send
    /// for the sender's domain directly to its recipients' MX hosts. `reason` says so in words
    /// an operator acts on; it goes with the smart host's log line.
    SmartHost {
        /// Why the direct route was not taken.
        reason: String,
    },
}

/// The outcome for one recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The message.
    pub id: QueueId,
    /// Index into the message's `envelope.recipients`.
    pub recipient: usize,
    /// Delivered, deferred or failed, with the reply or the local reason.
    pub outcome: Outcome,
    /// The host that gave the outcome, if any host was reached or tried.
    pub remote: Option<RemoteHost>,
    /// Something about this delivery an operator should know even though it went through,
    /// e.g. that SPF would fail for the sending address.
    pub note: Option<String>,
    /// The next hop took this recipient's DSN parameters (it advertised DSN, RFC 3461): from
    /// now on success and delay notices are its job, so the engine sends no "relayed" DSN.
    pub dsn_passed_on: bool,
    /// Send this recipient another way instead (see [`Redirect`]).
    pub redirect: Option<Redirect>,
}

impl RecipientReport {
    /// A report without a note, a DSN hand-over or a redirect.
    pub fn new(
        id: QueueId,
        recipient: usize,
        outcome: Outcome,
        remote: Option<RemoteHost>,
    ) -> RecipientReport {
        RecipientReport {
            id,
            recipient,
            outcome,
            remote,
            note: None,
            dsn_passed_on: false,
            redirect: None,
        }
    }

    /// The same report with `note`.
    pub fn with_note(mut self, note: Option<String>) -> RecipientReport {
        self.note = note;
        self
    }
}

/// Whether a transport may start another message in the same [`Transport::deliver`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on with the batch.
    Continue,
    /// Start no other message: the engine is stopping, or it could not record this outcome
    /// (a delivery it cannot record would be repeated). Close the session cleanly.
    Stop,
}

/// What the engine gives a transport for one [`Transport::deliver`] call: where outcomes go.
#[async_trait]
pub trait Reports: Send + Sync {
    /// Records what became of one message of the batch: a report for each recipient its
    /// [`Delivery`] listed (a recipient left out is deferred as an internal error). Returns once
    /// the outcome is durable; only then may the transport send the next message.
    async fn record(&self, id: QueueId, reports: Vec<RecipientReport>) -> Next;

    /// True when no new message should be started; checked before each one. A message not
    /// started is simply not attempted: it stays queued as it was.
    fn stopping(&self) -> bool;

    /// Queues a copy of `delivery`'s message, from the same sender, for `recipients` elsewhere
    /// (alias or forwarding targets that are not local). Durable on return; `Err` says why it
    /// could not be queued, for the original recipient's deferral.
    async fn forward(
        &self,
        delivery: &Delivery,
        recipients: Vec<Recipient>,
    ) -> Result<QueueId, Diagnostic>;
}

/// Delivers batches of messages that share a route.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Delivers `batch` over `route`, one message after another, reporting each to `reports`
    /// as soon as its fate is known and going on only when [`Reports::record`] says so.
    async fn deliver(&self, route: &Route, batch: &[Delivery], reports: &dyn Reports);
}

/// [`Reports`] that keeps every report in memory: for a transport used without an engine (a
/// test, a probe, a one-off send). It never stops a batch and cannot forward.
#[derive(Debug, Default)]
pub struct Collected {
    reports: Mutex<Vec<RecipientReport>>,
    stop: AtomicBool,
}

impl Collected {
    /// An empty collection.
    pub fn new() -> Collected {
        Collected::default()
    }

    /// Every report recorded so far, in the order they came.
    pub fn into_reports(self) -> Vec<RecipientReport> {
        self.reports
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes [`Reports::stopping`] true from now on, as an engine that begins to shut down does.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Reports for Collected {
    async fn record(&self, _id: QueueId, reports: Vec<RecipientReport>) -> Next {
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(reports);
        if self.stop.load(Ordering::SeqCst) {
            Next::Stop
        } else {
            Next::Continue
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    async fn forward(
        &self,
        _delivery: &Delivery,
        _recipients: Vec<Recipient>,
    ) -> Result<QueueId, Diagnostic> {
        Err(Diagnostic::local(
            EnhancedStatus::new(4, 3, 5),
            "forwarding needs a queue engine: this transport was called without one",
        ))
    }
}

/// Runs `transport` on one batch without an engine and returns every report.
///
/// ```no_run
/// # use postrider::{Delivery, Route, Transport};
/// # async fn demo(transport: &dyn Transport, route: Route, batch: Vec<Delivery>) {
/// for report in postrider::transport::collect(transport, &route, &batch).await {
///     println!("{}: {:?}", report.id, report.outcome);
/// }
/// # }
/// ```
pub async fn collect(
    transport: &dyn Transport,
    route: &Route,
    batch: &[Delivery],
) -> Vec<RecipientReport> {
    let collected = Collected::new();
    transport.deliver(route, batch, &collected).await;
    collected.into_reports()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_hosts_display_like_sendmail_relay_fields() {
        let r = RemoteHost {
            name: Some("mx.b.example".into()),
            addr: Some("192.0.2.1".parse().unwrap()),
        };
        assert_eq!(r.to_string(), "mx.b.example. [192.0.2.1]");
        let ip_only = RemoteHost {
            name: None,
            addr: Some("192.0.2.1".parse().unwrap()),
        };
        assert_eq!(ip_only.to_string(), "[192.0.2.1]");
    }

    #[tokio::test]
    async fn a_collection_stops_a_batch_once_told_to() {
        let c = Collected::new();
        let id = QueueId::generate();
        let r = RecipientReport::new(
            id,
            0,
            Outcome::deferred(EnhancedStatus::new(4, 0, 0), "x"),
            None,
        );
        assert_eq!(c.record(id, vec![r.clone()]).await, Next::Continue);
        c.stop();
        assert!(c.stopping());
        assert_eq!(c.record(id, vec![r]).await, Next::Stop);
        assert_eq!(c.into_reports().len(), 2);
    }
}
