//! Batch scheduling: due work taken from a shared spool in batches.
//!
//! The scheduler asks [`Spool::claim_due`] for at most as many messages as it has room for,
//! only when something may be due: at start, when a batch came back full, when
//! [`Spool::next_due`] said a time that has come, when [`Spool::wakeups`] says another engine
//! made work due, when an attempt of its own ends with a next attempt, and on the rescan timer
//! (a safety net for lost wake-ups). One request at a time; a failing spool (a database
//! restarting) is asked again with a backoff from 100 ms to 10 s.
//!
//! [`Spool::claim_due`]: crate::spool::Spool::claim_due
//! [`Spool::next_due`]: crate::spool::Spool::next_due
//! [`Spool::wakeups`]: crate::spool::Spool::wakeups

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::Scheduler;
use crate::engine::clock::Clock;
use crate::engine::command::Command;
use crate::engine::tasks;
use crate::queue_id::QueueId;
use crate::spool::{ClaimedMessage, SpoolError};

/// The most messages one request takes.
const BATCH_LIMIT: usize = 100;

/// Asking again right after a batch came back short is pointless: whatever `next_due` names
/// as due already was being taken by someone else a moment ago.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// The bookkeeping of batch scheduling.
#[derive(Default)]
pub(super) struct Batches {
    /// A `claim_due` is under way.
    claiming: bool,
    /// A `next_due` is under way.
    asking: bool,
    /// Something may be due now: ask as soon as there is room.
    pub look: bool,
    /// Ask when this time comes (the earliest due time heard of).
    wake_at: Option<SystemTime>,
    /// Requests that failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
    /// Requests started so far (flushes wait for one started after them).
    pub claims: u64,
    /// Flushed messages: their attempt ignores host status when this engine gets them.
    pub forced: HashSet<QueueId>,
}

impl Batches {
    /// Notes that a message becomes due at `t`.
    pub(super) fn due_at(&mut self, t: SystemTime) {
        self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
    }

    /// When the scheduler must wake up for this.
    pub(super) fn wake(&self, clock: &Clock) -> Option<tokio::time::Instant> {
        if self.claiming {
            return None;
        }
        let at = self.wake_at.map(|t| clock.deadline(t));
        let retry = self.retry_at.filter(|_| self.look);
        match (at, retry) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    fn failed(&mut self) {
        self.failures += 1;
        let backoff = Duration::from_millis(100)
            .saturating_mul(1 << self.failures.min(7))
            .min(Duration::from_secs(10));
        self.retry_at = Some(tokio::time::Instant::now() + backoff);
        self.look = true;
    }
}

impl Scheduler {
    /// Starts forwarding the spool's wake-ups, when it gives any.
    pub(super) fn start_wakeups(&mut self) {
        let Some(b) = &mut self.batches else {
            return;
        };
        b.look = true;
        let Some(mut wakeups) = self.shared.spool.wakeups() else {
            return;
        };
        let shared = std::sync::Arc::downgrade(&self.shared);
        let task = tokio::spawn(async move {
            while let Some(at) = wakeups.next().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.send(Command::Wake(at));
            }
        });
        self.wakeups = Some(task.abort_handle());
    }

    /// Asks the spool for due work when something may be due and there is room for it.
    pub(super) fn claim_more(&mut self, now: SystemTime) {
        let room = self
            .shared
            .limits
            .max_active_messages
            .saturating_sub(self.active_messages);
        let Some(b) = &mut self.batches else {
            return;
        };
        if b.wake_at.is_some_and(|t| t <= now) {
            b.wake_at = None;
            b.look = true;
        }
        if !b.look || b.claiming || room == 0 {
            return;
        }
        if b.retry_at.is_some_and(|t| t > tokio::time::Instant::now()) {
            return;
        }
        let limit = room.min(BATCH_LIMIT);
        b.look = false;
        b.claiming = true;
        b.claims += 1;
        let seq = b.claims;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = shared.spool.claim_due(now, limit).await;
            shared.send(Command::Claimed { seq, limit, result });
        });
    }

    pub(super) fn on_claimed(
        &mut self,
        seq: u64,
        limit: usize,
        result: Result<Vec<ClaimedMessage>, SpoolError>,
    ) {
        let Some(b) = &mut self.batches else {
            return;
        };
        b.claiming = false;
        match result {
            Ok(batch) => {
                b.failures = 0;
                b.retry_at = None;
                let full = batch.len() >= limit;
                crate::metrics::batch_claimed(batch.len());
                for claimed in batch {
                    self.start_claimed(claimed);
                }
                if full {
                    if let Some(b) = &mut self.batches {
                        b.look = true;
                    }
                } else {
                    self.ask_next_due();
                    self.resolve_taken_elsewhere(seq);
                }
            }
            Err(e) => {
                tracing::warn!(target: "postrider::engine",
                    "cannot take due work from the spool: {e}; asking again shortly");
                b.failed();
            }
        }
    }

    /// Starts the attempt of a message the spool handed out, claimed and loaded.
    fn start_claimed(&mut self, claimed: ClaimedMessage) {
        let ClaimedMessage { message, claim } = claimed;
        let id = message.id;
        if self.draining.is_some() || self.messages.contains_key(&id) {
            // Dropping the claim hands it back.
            return;
        }
        let mut entry = self.entry_for(&message.envelope, &message.state);
        if let Some(b) = &mut self.batches {
            entry.forced = b.forced.remove(&id);
        }
        // A state this engine could not write earlier is newer than the spool's.
        let unsaved = self.index.remove(&id).and_then(|idle| idle.unsaved);
        self.messages.insert(id, entry);
        self.active_messages += 1;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let p = tasks::prepare_claimed(&shared, id, claim, message, unsaved.map(|s| *s)).await;
            shared.send(Command::Prepared(id, p));
        });
    }

    fn ask_next_due(&mut self) {
        let Some(b) = &mut self.batches else {
            return;
        };
        if b.asking {
            return;
        }
        b.asking = true;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = shared.spool.next_due().await;
            shared.send(Command::NextDue(result));
        });
    }

    pub(super) fn on_next_due(
        &mut self,
        result: Result<Option<std::time::SystemTime>, SpoolError>,
    ) {
        let now = self.shared.clock.now();
        let Some(b) = &mut self.batches else {
            return;
        };
        b.asking = false;
        match result {
            Ok(Some(t)) => b.due_at(t.max(now + MIN_INTERVAL)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "postrider::engine",
                    "cannot ask the spool when work is due: {e}; asking again shortly");
                b.failed();
            }
        }
    }

    pub(super) fn on_wake(&mut self, at: SystemTime) {
        if let Some(b) = &mut self.batches {
            b.due_at(at);
        }
    }
}
