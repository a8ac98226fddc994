//! Helpers for local-delivery tests: deliveries built in code, and a [`Reports`] that records
//! what the transport reported and forwarded (the engine's side of the seam, without an
//! engine).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use postrider::transport::{Next, Reports};
use postrider::{
    Address, Delivery, Diagnostic, EnhancedStatus, Envelope, Outcome, QueueId, Recipient,
    RecipientReport, ReversePath,
};

/// A delivery of `body` (CRLF) from `sender` to every one of `rcpts`.
pub fn delivery(sender: &str, rcpts: &[&str], body: &[u8]) -> Delivery {
    let sender = if sender.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::parse(sender).unwrap()
    };
    let rcpts: Vec<Address> = rcpts.iter().map(|r| Address::parse(r).unwrap()).collect();
    let n = rcpts.len();
    Delivery {
        id: QueueId::generate(),
        envelope: Arc::new(Envelope::new(sender, rcpts)),
        recipients: (0..n).collect(),
        body: Bytes::copy_from_slice(body),
    }
}

/// One forwarded copy.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub from: QueueId,
    pub id: QueueId,
    pub sender: ReversePath,
    pub recipients: Vec<Recipient>,
    pub body: Bytes,
}

/// Records reports and forwards; forwarding fails with `forward_error` when set.
#[derive(Default)]
pub struct Recorder {
    pub reports: Mutex<Vec<RecipientReport>>,
    pub forwarded: Mutex<Vec<Forwarded>>,
    pub forward_error: Mutex<Option<Diagnostic>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    pub fn reports(&self) -> Vec<RecipientReport> {
        self.reports.lock().unwrap().clone()
    }

    pub fn forwarded(&self) -> Vec<Forwarded> {
        self.forwarded.lock().unwrap().clone()
    }

    /// The outcome reported for recipient `index` of message `id`.
    pub fn outcome(&self, id: QueueId, index: usize) -> Outcome {
        self.report(id, index).outcome
    }

    pub fn report(&self, id: QueueId, index: usize) -> RecipientReport {
        self.reports()
            .into_iter()
            .find(|r| r.id == id && r.recipient == index)
            .unwrap_or_else(|| panic!("no report for {id} recipient {index}"))
    }
}

#[async_trait]
impl Reports for Recorder {
    async fn record(&self, _id: QueueId, reports: Vec<RecipientReport>) -> Next {
        self.reports.lock().unwrap().extend(reports);
        Next::Continue
    }

    fn stopping(&self) -> bool {
        false
    }

    async fn forward(
        &self,
        delivery: &Delivery,
        recipients: Vec<Recipient>,
    ) -> Result<QueueId, Diagnostic> {
        if let Some(e) = self.forward_error.lock().unwrap().clone() {
            return Err(e);
        }
        let id = QueueId::generate();
        self.forwarded.lock().unwrap().push(Forwarded {
            from: delivery.id,
            id,
            sender: delivery.envelope.sender.clone(),
            recipients,
            body: delivery.body.clone(),
        });
        Ok(id)
    }
}

/// A temporary failure to queue, for the forward of a test.
pub fn queue_full() -> Diagnostic {
    Diagnostic::local(EnhancedStatus::new(4, 3, 1), "the spool is full")
}

/// Text of a delivered outcome's reply, or panics.
pub fn delivered_text(o: &Outcome) -> String {
    match o {
        Outcome::Delivered { reply } => reply.text().to_string(),
        other => panic!("not delivered: {other:?}"),
    }
}
