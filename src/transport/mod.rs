//! Handing messages to the next hop: the `Transport` trait and what it reports.
//!
//! The default transport is [`EsmtpTransport`](esmtp::EsmtpTransport): ESMTP over tokio with
//! STARTTLS or implicit TLS by rustls, AUTH, and pipelining.

pub mod esmtp;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::route::Route;
use crate::status::Outcome;

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
    /// e.g. that SPF would fail for the sending address, or that it was rerouted.
    pub note: Option<String>,
    /// The next hop took this recipient's DSN parameters (it advertised DSN, RFC 3461): from
    /// now on success and delay notices are its job, so the engine sends no "relayed" DSN.
    pub dsn_passed_on: bool,
}

impl RecipientReport {
    /// A report without a note.
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
        }
    }
}

/// Delivers batches of messages that share a route.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Delivers `batch` over `route`. Every recipient listed in every [`Delivery`] gets exactly
    /// one report; the order of reports does not matter.
    async fn deliver(&self, route: &Route, batch: &[Delivery]) -> Vec<RecipientReport>;
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
}
