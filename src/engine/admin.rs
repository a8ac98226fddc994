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

/// An administrator's change to a message (Postfix's `postsuper -d`, `-h`, `-H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Remove it without delivering it or telling the sender.
    Delete,
    /// Keep it queued but do not deliver it until released.
    Hold,
    /// Release a held message and make it due now.
    Release,
}

impl Action {
    /// How a report names what was done: "Deleted", "Placed on hold", "Released from hold"
    /// (Postfix's words).
    pub fn done(&self) -> &'static str {
        match self {
            Action::Delete => "Deleted",
            Action::Hold => "Placed on hold",
            Action::Release => "Released from hold",
        }
    }
}

/// What [`administer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionSummary {
    /// Messages changed.
    pub changed: usize,
    /// Messages selected that were already as asked (held, or not held).
    pub unchanged: usize,
    /// Messages another process kept claimed (delivering them) the whole time.
    pub busy: Vec<QueueId>,
}

/// The outcome of one change under a message's claim.
pub(crate) enum Changed {
    /// The message left the spool.
    Removed,
    /// Its new state.
    State(MessageState),
    /// It already was as asked.
    Already(MessageState),
}

/// Changes one claimed message in `spool`: the caller holds its claim.
pub(crate) async fn change(
    spool: &dyn crate::spool::Spool,
    action: Action,
    id: &QueueId,
    now: SystemTime,
) -> Result<Changed, crate::spool::SpoolError> {
    let mut msg = spool.load(id).await?;
    let state = &mut msg.state;
    match action {
        Action::Delete => {
            spool.remove(id).await?;
            tracing::info!(target: "postrider::engine", "{id}: deleted by the administrator");
            return Ok(Changed::Removed);
        }
        Action::Hold if state.held => return Ok(Changed::Already(msg.state)),
        Action::Release if !state.held => return Ok(Changed::Already(msg.state)),
        Action::Hold => state.held = true,
        Action::Release => {
            state.held = false;
            state.next_attempt = now;
        }
    }
    spool.save_state(id, state).await?;
    tracing::info!(target: "postrider::engine", "{id}: {} by the administrator", action.done().to_lowercase());
    Ok(Changed::State(msg.state))
}

/// Applies `action` to every message `filter` selects, directly on `spool`, as `postsuper`
/// does: safe beside running engines and queue runs, because each message is changed under its
/// claim. A message another process is delivering is tried again until `patience` has passed,
/// then reported busy. A running engine sees the change at its next attempt or rescan.
///
/// ```no_run
/// use postrider::engine::admin::{Action, administer};
/// use postrider::engine::FlushFilter;
/// use postrider::spool::FsSpool;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let spool = FsSpool::open("/var/spool/postrider")?;
/// let done = administer(&spool, Action::Delete, &FlushFilter::SenderContains("cron@".into()),
///     std::time::Duration::from_secs(5)).await?;
/// println!("postsuper: {}: {} messages", Action::Delete.done(), done.changed);
/// # Ok(()) }
/// ```
pub async fn administer(
    spool: &dyn crate::spool::Spool,
    action: Action,
    filter: &FlushFilter,
    patience: std::time::Duration,
) -> Result<ActionSummary, crate::spool::SpoolError> {
    use crate::spool::SpoolError;
    let candidates: Vec<QueueId> = match filter {
        FlushFilter::Id(id) => match spool.load(id).await {
            Ok(m) => vec![m.id],
            Err(SpoolError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        },
        _ => spool
            .scan()
            .await?
            .messages
            .into_iter()
            .filter(|m| filter.matches(m.id, &m.envelope, &m.state))
            .map(|m| m.id)
            .collect(),
    };
    let mut summary = ActionSummary::default();
    let deadline = tokio::time::Instant::now() + patience;
    let mut waiting = candidates;
    loop {
        let mut busy = Vec::new();
        for id in waiting {
            let claim = match spool.claim(&id).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    busy.push(id);
                    continue;
                }
                Err(SpoolError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            match change(spool, action, &id, SystemTime::now()).await {
                Ok(Changed::Already(_)) => summary.unchanged += 1,
                Ok(_) => summary.changed += 1,
                // Delivered (or deleted) by someone else since the scan.
                Err(SpoolError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            drop(claim);
        }
        if busy.is_empty() || tokio::time::Instant::now() >= deadline {
            summary.busy = busy;
            return Ok(summary);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        waiting = busy;
    }
}
