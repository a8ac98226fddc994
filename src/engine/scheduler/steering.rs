//! What an administrator asks of the queue: hold, release and delete one message, rescans of
//! the spool, and flushes that try matching messages now.
//!
//! With index scheduling the engine knows every message and changes it under its claim. With
//! batch scheduling it knows only what it works on: anything else goes to the spool
//! ([`Spool::admin`](crate::spool::Spool::admin), [`Spool::list`](crate::spool::Spool::list)),
//! which reaches the whole queue from any node.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Entry, FlushWaiter, Phase, Scheduler};
use crate::engine::admin::{Action, FlushFilter, FlushSummary};
use crate::engine::command::{AdminOp, Command, Reply};
use crate::engine::{EngineError, Shared, tasks};
use crate::queue_id::QueueId;
use crate::spool::{AdminAction, AdminOutcome, MessageState, QueuedMessage, SpoolError};

/// Messages per page when a flush of a shared queue reads it.
const FLUSH_PAGE: usize = 500;
/// Messages a rescan hands the scheduler at a time.
const RESCAN_BATCH: usize = 256;

impl Scheduler {
    // ---- administration ----------------------------------------------------------------

    pub(super) fn admin(
        &mut self,
        op: AdminOp,
        id: QueueId,
        reply: Reply<Result<(), EngineError>>,
    ) {
        if let Some(e) = self.messages.get_mut(&id) {
            let answer = match (&e.phase, op) {
                (Phase::Admin(..), _) => Err(EngineError::Busy(id)),
                // Release of an active message is a no-op: it is not held.
                (_, AdminOp::Release) => Ok(()),
                // Applied when the current attempt ends.
                (_, op) => {
                    e.requested = Some(op);
                    Ok(())
                }
            };
            let _ = reply.send(answer);
            return;
        }
        if let Some(idle) = self.index.remove(&id) {
            let (next_attempt, held) = (idle.next_attempt, idle.held);
            self.messages
                .insert(id, Entry::from_idle(idle, Phase::Admin(next_attempt, held)));
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let result = tasks::apply_admin(&shared, op, id).await;
                shared.send(Command::AdminDone(id, result, reply));
            });
            return;
        }
        if self.batches.is_none() {
            let _ = reply.send(Err(EngineError::NotFound(id)));
            return;
        }
        // A shared queue: the message is in the spool, perhaps with another engine.
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _ = reply.send(admin_shared(&shared, op, id).await);
        });
    }

    pub(super) fn on_admin_done(
        &mut self,
        id: QueueId,
        result: Result<Option<MessageState>, EngineError>,
        reply: Reply<Result<(), EngineError>>,
    ) {
        let before = match self.messages.get(&id).map(|e| &e.phase) {
            Some(Phase::Admin(next_attempt, held)) => Some((*next_attempt, *held)),
            _ => None,
        };
        match result {
            Ok(None) => {
                self.forget(id);
                let _ = reply.send(Ok(()));
            }
            Ok(Some(state)) => {
                self.set_idle(id, state.next_attempt, state.held);
                let _ = reply.send(Ok(()));
            }
            Err(err) => {
                match (&err, before) {
                    (EngineError::NotFound(_), _) | (_, None) => {
                        self.forget(id);
                    }
                    (_, Some((next_attempt, held))) => self.set_idle(id, next_attempt, held),
                }
                let _ = reply.send(Err(err));
            }
        }
    }

    // ---- flushing and rescanning -------------------------------------------------------

    /// Re-reads the spool (messages queued by other processes appear, ones delivered by them
    /// disappear); returns the scan's generation.
    pub(super) fn start_scan(&mut self) -> u64 {
        self.generation += 1;
        self.scans += 1;
        let generation = self.generation;
        let shared = self.shared.clone();
        self.found_by_scan.insert(generation, HashSet::new());
        tokio::spawn(async move {
            // Handed over in batches as the spool reads, so that a rescan of a large queue
            // never holds all of it in full. These are the scheduler's own batches (one
            // command each), whatever unit the spool reads in: re-collecting them moves 256
            // small structs a batch, which is nothing next to the file reads of the scan.
            let mut batch = Vec::with_capacity(RESCAN_BATCH);
            let result = shared
                .spool
                .scan_each(&mut |m| {
                    batch.push(m);
                    if batch.len() == RESCAN_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(RESCAN_BATCH));
                        shared.send(Command::ScanFound(generation, full));
                    }
                })
                .await
                .map(|r| {
                    for q in &r.quarantined {
                        tracing::error!(target: "postrider::spool", "quarantined {}: {}", q.path.display(), q.reason);
                    }
                });
            if !batch.is_empty() {
                shared.send(Command::ScanFound(generation, batch));
            }
            shared.send(Command::Scanned(generation, result));
        });
        generation
    }

    pub(super) fn on_scan_found(&mut self, generation: u64, found: Vec<QueuedMessage>) {
        let Some(on_disk) = self.found_by_scan.get_mut(&generation) else {
            return;
        };
        on_disk.extend(found.iter().map(|m| m.id));
        for m in found {
            if self.messages.contains_key(&m.id) {
                continue;
            }
            if self
                .gone_during_scan
                .get(&m.id)
                .is_some_and(|&at| at >= generation)
            {
                // Read before this engine removed it: it is not queued any more.
                continue;
            }
            if self.index.contains(&m.id) {
                // Changed by another process (held or released by an administrator's
                // command, partly delivered by a queue run): take its state.
                self.index.update(m.id, &m.envelope, &m.state);
            } else {
                self.index
                    .learn(m.id, &m.envelope, &m.state, self.generation);
            }
        }
    }

    pub(super) fn on_scanned(&mut self, generation: u64, result: Result<(), SpoolError>) {
        self.scans -= 1;
        let on_disk = self.found_by_scan.remove(&generation).unwrap_or_default();
        match result {
            Ok(()) => {
                for id in self.index.gone(generation, &on_disk) {
                    self.index.remove(&id);
                }
            }
            Err(e) => tracing::error!(target: "postrider::engine", "queue scan failed: {e}"),
        }
        if self.scans == 0 {
            self.gone_during_scan.clear();
        }
        // Flushes that waited for this scan match again: it may have found more.
        let mut waiters = std::mem::take(&mut self.flushes);
        for w in &mut waiters {
            if w.scan == Some(generation) {
                w.scan = None;
                self.flush_match(w);
            }
        }
        self.flushes = waiters;
        self.reply_finished_flushes();
    }

    pub(super) fn start_flush(&mut self, filter: FlushFilter, reply: Reply<FlushSummary>) {
        let mut waiter = FlushWaiter {
            filter,
            remaining: HashSet::new(),
            considered: HashSet::new(),
            summary: FlushSummary::default(),
            reply,
            scan: None,
            claims_after: 0,
        };
        if self.batches.is_some() {
            let in_flight: HashSet<QueueId> = self.messages.keys().copied().collect();
            let shared = self.shared.clone();
            let FlushWaiter { filter, reply, .. } = waiter;
            tokio::spawn(async move {
                let (ids, summary) = mark_flushed(&shared, &filter, &in_flight).await;
                shared.send(Command::FlushMarked {
                    ids,
                    summary,
                    reply,
                });
            });
            return;
        }
        // What the index knows is tried at once; the rescan adds what other processes queued.
        self.flush_match(&mut waiter);
        waiter.scan = Some(self.start_scan());
        self.flushes.push(waiter);
    }

    /// Makes every message `w` selects and has not considered yet due now and forced.
    fn flush_match(&mut self, w: &mut FlushWaiter) {
        let now = self.shared.clock.now();
        for (id, e) in &self.messages {
            if matches!(e.phase, Phase::Admin(..)) || w.considered.contains(id) {
                continue;
            }
            if self.index.symbols.matches(&w.filter, *id, &e.keys) {
                w.considered.insert(*id);
                w.summary.attempted += 1;
                w.remaining.insert(*id);
            }
        }
        for id in self.index.matching(&w.filter) {
            if !w.considered.insert(id) {
                continue;
            }
            let held = self.index.get(&id).is_some_and(|i| i.held);
            if held {
                w.summary.held += 1;
                continue;
            }
            w.summary.attempted += 1;
            w.remaining.insert(id);
            self.index.make_due(&id, now, true);
        }
    }

    /// A flush of a shared queue has made its messages due: this engine takes what it can.
    pub(super) fn on_flush_marked(
        &mut self,
        ids: Vec<QueueId>,
        summary: FlushSummary,
        reply: Reply<FlushSummary>,
    ) {
        let mut waiter = FlushWaiter {
            filter: FlushFilter::All,
            remaining: HashSet::new(),
            considered: HashSet::new(),
            summary,
            reply,
            scan: None,
            claims_after: 0,
        };
        let b = self
            .batches
            .as_mut()
            .expect("invariant: flushes are marked only with batch scheduling");
        for id in ids {
            waiter.summary.attempted += 1;
            waiter.remaining.insert(id);
            if !self.messages.contains_key(&id) {
                b.forced.insert(id);
            }
        }
        waiter.claims_after = b.claims + 1;
        b.look = true;
        self.flushes.push(waiter);
        self.reply_finished_flushes();
    }

    /// A flush waiting for `parent` waits for `child` too (a DSN or forwarded copy its
    /// attempt queued), so the run that caused it also sends it.
    pub(super) fn adopt_into_flushes(&mut self, parent: QueueId, child: QueueId) {
        for w in &mut self.flushes {
            if w.remaining.contains(&parent) && w.remaining.insert(child) {
                w.considered.insert(child);
                w.summary.attempted += 1;
            }
        }
    }

    pub(super) fn resolve_flush(&mut self, id: QueueId, count: impl Fn(&mut FlushSummary)) {
        if self.flushes.is_empty() {
            return;
        }
        for w in &mut self.flushes {
            if w.remaining.remove(&id) {
                count(&mut w.summary);
            }
        }
        self.reply_finished_flushes();
    }

    /// A batch request numbered `seq` came back short: every due message is taken. Flushed
    /// messages this engine did not get are being delivered by another.
    pub(super) fn resolve_taken_elsewhere(&mut self, seq: u64) {
        let mut waiters = std::mem::take(&mut self.flushes);
        for w in &mut waiters {
            if w.claims_after == 0 || seq < w.claims_after {
                continue;
            }
            let elsewhere: Vec<QueueId> = w
                .remaining
                .iter()
                .filter(|id| !self.messages.contains_key(id))
                .copied()
                .collect();
            for id in elsewhere {
                w.remaining.remove(&id);
                w.summary.busy += 1;
                if let Some(b) = &mut self.batches {
                    b.forced.remove(&id);
                }
            }
        }
        self.flushes = waiters;
        self.reply_finished_flushes();
    }

    fn reply_finished_flushes(&mut self) {
        let (done, still): (Vec<FlushWaiter>, Vec<FlushWaiter>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|w| w.remaining.is_empty() && w.scan.is_none());
        self.flushes = still;
        for w in done {
            let _ = w.reply.send(w.summary);
        }
    }
}

/// The spool's action for an administrator's change.
fn action_of(op: AdminOp) -> AdminAction {
    match op {
        Action::Delete => AdminAction::Delete,
        Action::Hold => AdminAction::Hold,
        Action::Release => AdminAction::Release,
    }
}

/// Hold, release or delete through a shared spool, whichever engine holds the message.
async fn admin_shared(shared: &Arc<Shared>, op: AdminOp, id: QueueId) -> Result<(), EngineError> {
    let now = shared.clock.now();
    match shared.spool.admin(&id, action_of(op), now).await {
        Ok(AdminOutcome::Done) => {
            tracing::info!(target: "postrider::engine", "{id}: {} by the administrator", op.done().to_lowercase());
            if op == AdminOp::Release {
                shared.send(Command::Wake(now));
            }
            Ok(())
        }
        Ok(AdminOutcome::Deferred) => {
            tracing::info!(target: "postrider::engine",
                "{id}: {} when the engine delivering it records its attempt", op.done().to_lowercase());
            Ok(())
        }
        Ok(AdminOutcome::Busy) => Err(EngineError::Busy(id)),
        Err(SpoolError::NotFound(_)) => Err(EngineError::NotFound(id)),
        Err(e) => Err(EngineError::Spool(e)),
    }
}

/// Reads a shared queue page by page and makes every unheld message `filter` selects due now.
/// Returns the ids made due (and those this engine is delivering already), with the held and
/// busy counts.
async fn mark_flushed(
    shared: &Shared,
    filter: &FlushFilter,
    in_flight: &HashSet<QueueId>,
) -> (Vec<QueueId>, FlushSummary) {
    let now = shared.clock.now();
    let mut summary = FlushSummary::default();
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = match shared.spool.list(after, FLUSH_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(target: "postrider::engine", "flush: cannot read the queue: {e}");
                break;
            }
        };
        for listed in page.messages {
            let m = listed.message;
            if !filter.matches(m.id, &m.envelope, &m.state) {
                continue;
            }
            if m.state.held {
                summary.held += 1;
                continue;
            }
            if in_flight.contains(&m.id) {
                ids.push(m.id);
                continue;
            }
            match shared.spool.admin(&m.id, AdminAction::Flush, now).await {
                Ok(AdminOutcome::Done | AdminOutcome::Deferred) => ids.push(m.id),
                Ok(AdminOutcome::Busy) => {
                    summary.attempted += 1;
                    summary.busy += 1;
                }
                Err(SpoolError::NotFound(_)) => {}
                Err(e) => {
                    tracing::error!(target: "postrider::engine", "flush: {}: {e}", m.id);
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    (ids, summary)
}
