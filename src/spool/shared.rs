//! What a spool offers beyond the core methods, for a queue that several engines share: due
//! work in batches, wake-ups, and administration of the whole queue from any node.
//!
//! Each capability is a provided method of [`Spool`] whose default, defined here, is built on
//! the core methods (a scan, a claim per message), so [`FsSpool`](super::FsSpool) and
//! [`MemorySpool`](super::MemorySpool) answer them with today's behaviour. A spool with an
//! index or a server (`PgSpool`) overrides them.

use std::time::SystemTime;

use tokio::sync::broadcast;

use super::{Claim, MessageState, QueuedMessage, Spool, SpoolError};
use crate::queue_id::QueueId;

/// A message claimed by [`Spool::claim_due`], with its envelope and state as stored when it
/// was claimed.
#[derive(Debug)]
pub struct ClaimedMessage {
    /// The message.
    pub message: QueuedMessage,
    /// The claim: drop it when the attempt's outcome is recorded.
    pub claim: Claim,
}

/// Who holds a message, as a spool with leases reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder's node name (`PgSpool`: the configured node, by default `host:pid`).
    pub holder: String,
    /// When the lease ends unless the holder renews it (the database server's clock).
    pub until: SystemTime,
}

/// One message in a [`QueuePage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMessage {
    /// The message.
    pub message: QueuedMessage,
    /// Its live lease; `None` when nobody holds it, or when the spool cannot tell (a spool
    /// whose claims are locks of one machine: the engine knows its own).
    pub lease: Option<Lease>,
}

/// One page of the queue, from [`Spool::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePage {
    /// The messages, in id (arrival) order.
    pub messages: Vec<ListedMessage>,
    /// Where the next page starts (pass it as `after`); `None` after the last page.
    pub next: Option<QueueId>,
}

/// An administrator's action on one message ([`Spool::admin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminAction {
    /// Keep it queued but do not deliver it until released.
    Hold,
    /// Undo a hold and make it due now.
    Release,
    /// Make it due now, ignoring its backoff (a held message stays held).
    Flush,
    /// Delete it without delivering it or telling the sender.
    Delete,
}

impl AdminAction {
    /// Applies a hold, release or flush to `state` (a delete has no state to change).
    pub fn apply(self, state: &mut MessageState, at: SystemTime) {
        match self {
            AdminAction::Hold => state.held = true,
            AdminAction::Release => {
                state.held = false;
                state.next_attempt = at;
            }
            AdminAction::Flush if !state.held => state.next_attempt = at,
            AdminAction::Flush | AdminAction::Delete => {}
        }
    }
}

/// What [`Spool::admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Done: the new state (or the deletion) is durable.
    Done,
    /// Another engine is delivering the message: the action is recorded and applied, durably,
    /// when that attempt's outcome is written (so the attempt's result is not lost).
    Deferred,
    /// Another engine or process is delivering the message and the spool cannot record the
    /// action for later: nothing was done; try again shortly.
    Busy,
}

/// Wake-ups from [`Spool::wakeups`]: each says that work may be due at a given time because of
/// something another engine or process did. A hint only: the engine still asks the spool
/// ([`Spool::claim_due`]) what is due, so a lost or duplicate wake-up does no harm.
#[derive(Debug)]
pub struct Wakeups {
    rx: broadcast::Receiver<SystemTime>,
}

impl Wakeups {
    /// Wake-ups fed by a broadcast channel of due times (for spool implementations).
    pub fn new(rx: broadcast::Receiver<SystemTime>) -> Wakeups {
        Wakeups { rx }
    }

    /// Waits for the next wake-up and returns the earliest due time among those that arrived
    /// meanwhile (they are merged). When wake-ups were lost (the receiver fell behind, or the
    /// spool lost its connection to the server), it returns [`SystemTime::UNIX_EPOCH`]: look
    /// at everything now. `None` when the spool has gone.
    pub async fn next(&mut self) -> Option<SystemTime> {
        let mut earliest = match self.rx.recv().await {
            Ok(t) => t,
            Err(broadcast::error::RecvError::Lagged(_)) => SystemTime::UNIX_EPOCH,
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        loop {
            match self.rx.try_recv() {
                Ok(t) => earliest = earliest.min(t),
                Err(broadcast::error::TryRecvError::Lagged(_)) => earliest = SystemTime::UNIX_EPOCH,
                Err(_) => return Some(earliest),
            }
        }
    }
}

/// [`Spool::claim_due`] for a spool without an index: scan, then claim in due order.
pub(crate) async fn claim_due_by_scan<S: Spool + ?Sized>(
    spool: &S,
    due_by: SystemTime,
    limit: usize,
) -> Result<Vec<ClaimedMessage>, SpoolError> {
    let mut due: Vec<QueuedMessage> = spool
        .scan()
        .await?
        .messages
        .into_iter()
        .filter(|m| !m.state.held && m.state.next_attempt <= due_by)
        .collect();
    due.sort_by_key(|m| (m.state.next_attempt, m.id));
    let mut claimed = Vec::new();
    for candidate in due {
        if claimed.len() >= limit {
            break;
        }
        let claim = match spool.claim(&candidate.id).await {
            Ok(Some(claim)) => claim,
            Ok(None) | Err(SpoolError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        // Re-read under the claim: the scan's copy may be stale.
        match spool.load(&candidate.id).await {
            Ok(message) if !message.state.held && message.state.next_attempt <= due_by => {
                claimed.push(ClaimedMessage { message, claim })
            }
            Ok(_) | Err(SpoolError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(claimed)
}

/// [`Spool::next_due`] for a spool without an index.
pub(crate) async fn next_due_by_scan<S: Spool + ?Sized>(
    spool: &S,
) -> Result<Option<SystemTime>, SpoolError> {
    Ok(spool
        .scan()
        .await?
        .messages
        .iter()
        .filter(|m| !m.state.held)
        .map(|m| m.state.next_attempt)
        .min())
}

/// [`Spool::list`] for a spool without an index: scan, then page in id order.
pub(crate) async fn list_by_scan<S: Spool + ?Sized>(
    spool: &S,
    after: Option<QueueId>,
    limit: usize,
) -> Result<QueuePage, SpoolError> {
    let mut messages = spool.scan().await?.messages;
    messages.retain(|m| after.is_none_or(|a| m.id > a));
    messages.sort_by_key(|m| m.id);
    let more = messages.len() > limit;
    messages.truncate(limit);
    let next = if more {
        messages.last().map(|m| m.id)
    } else {
        None
    };
    Ok(QueuePage {
        messages: messages
            .into_iter()
            .map(|message| ListedMessage {
                message,
                lease: None,
            })
            .collect(),
        next,
    })
}

/// [`Spool::admin`] for a spool that can only claim: claim, apply, release.
pub(crate) async fn admin_by_claim<S: Spool + ?Sized>(
    spool: &S,
    id: &QueueId,
    action: AdminAction,
    at: SystemTime,
) -> Result<AdminOutcome, SpoolError> {
    let Some(claim) = spool.claim(id).await? else {
        return Ok(AdminOutcome::Busy);
    };
    if action == AdminAction::Delete {
        spool.remove(id).await?;
    } else {
        let mut state = spool.load(id).await?.state;
        action.apply(&mut state, at);
        spool.save_state(id, &state).await?;
    }
    drop(claim);
    Ok(AdminOutcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakeups_merge_to_the_earliest_and_a_lag_means_look_at_everything() {
        let (tx, rx) = broadcast::channel(2);
        let mut w = Wakeups::new(rx);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        tx.send(t + Duration::from_secs(5)).unwrap();
        tx.send(t).unwrap();
        assert_eq!(w.next().await, Some(t));
        for i in 0..3 {
            tx.send(t + Duration::from_secs(i)).unwrap();
        }
        assert_eq!(w.next().await, Some(SystemTime::UNIX_EPOCH));
        drop(tx);
        assert_eq!(w.next().await, None);
    }

    #[test]
    fn a_flush_leaves_a_held_message_held_and_not_due() {
        let env = crate::envelope::Envelope::new(
            crate::address::ReversePath::Null,
            [crate::address::Address::parse("a@b.example").unwrap()],
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut state = MessageState::new(&env, 1, t0);
        state.next_attempt = t0 + Duration::from_secs(600);
        let now = t0 + Duration::from_secs(60);
        AdminAction::Hold.apply(&mut state, now);
        AdminAction::Flush.apply(&mut state, now);
        assert!(state.held);
        assert_eq!(state.next_attempt, t0 + Duration::from_secs(600));
        AdminAction::Release.apply(&mut state, now);
        assert!(!state.held);
        assert_eq!(state.next_attempt, now);
    }
}
