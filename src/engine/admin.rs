//! What the queue looks like to an administrator, and how to steer it.

use std::time::SystemTime;

use crate::address::{Address, Domain, ReversePath};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::spool::{MessageState, RecipientStatus};
use crate::status::Diagnostic;

/// One message as `mailq` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The queue id.
    pub id: QueueId,
    /// Body size in octets.
    pub size: u64,
    /// When it arrived.
    pub arrival: SystemTime,
    /// The envelope sender.
    pub sender: ReversePath,
    /// Held by an administrator.
    pub held: bool,
    /// Being delivered right now.
    pub in_flight: bool,
    /// When the next attempt is due.
    pub next_attempt: SystemTime,
    /// Attempts so far.
    pub attempts: u32,
    /// Every recipient with its status and the last reason it was not delivered.
    pub recipients: Vec<RecipientEntry>,
}

/// One recipient as `mailq` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientEntry {
    /// The address.
    pub address: Address,
    /// Pending, delivered or failed.
    pub status: RecipientStatus,
    /// Why the last attempt did not deliver.
    pub last: Option<Diagnostic>,
}

impl QueueEntry {
    pub(crate) fn new(
        id: QueueId,
        envelope: &Envelope,
        state: &MessageState,
        in_flight: bool,
    ) -> QueueEntry {
        QueueEntry {
            id,
            size: state.size,
            arrival: state.arrival,
            sender: envelope.sender.clone(),
            held: state.held,
            in_flight,
            next_attempt: state.next_attempt,
            attempts: state.attempts,
            recipients: envelope
                .recipients
                .iter()
                .zip(&state.recipients)
                .map(|(r, s)| RecipientEntry {
                    address: r.address.clone(),
                    status: s.status,
                    last: s.last.clone(),
                })
                .collect(),
        }
    }
}

/// Which messages a flush (`sendmail -q`, `postqueue -f`) tries now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushFilter {
    /// Every message that is not held.
    All,
    /// Messages with a pending recipient in this domain or below it (`sendmail -qR`).
    RecipientDomain(Domain),
    /// One message (`sendmail -qI`).
    Id(QueueId),
    /// Messages whose sender address contains this text, case-insensitively (`sendmail -qS`).
    SenderContains(String),
}

impl FlushFilter {
    /// True when the message is one this filter selects (a spool view or a `mailq` filter can
    /// apply the same rule as [`Engine::flush`](super::Engine::flush)).
    pub fn matches(&self, id: QueueId, envelope: &Envelope, state: &MessageState) -> bool {
        match self {
            FlushFilter::All => true,
            FlushFilter::Id(want) => id == *want,
            FlushFilter::RecipientDomain(d) => envelope
                .recipients
                .iter()
                .zip(&state.recipients)
                .any(|(r, s)| {
                    s.status == RecipientStatus::Pending && r.address.domain().is_within(d)
                }),
            FlushFilter::SenderContains(text) => {
                let sender = envelope.sender.to_string().to_ascii_lowercase();
                sender.contains(&text.to_ascii_lowercase())
            }
        }
    }
}

/// What a flush did, once every matched message's attempt has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushSummary {
    /// Messages that matched the filter and were tried.
    pub attempted: usize,
    /// Of those, messages that left the queue (every recipient delivered or failed).
    pub completed: usize,
    /// Messages skipped because another engine or process is delivering them.
    pub busy: usize,
    /// Held messages that matched but were left alone.
    pub held: usize,
    /// Messages whose outcomes could not be written to the spool (a failing disk): what was
    /// delivered is not sent again while this engine runs, but the spool does not know of it
    /// yet. A command that exits now must say so (sendmail's exit status 75).
    pub unrecorded: usize,
}
