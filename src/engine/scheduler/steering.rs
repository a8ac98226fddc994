//! What an administrator asks of the queue: hold, release and delete one message, rescans of
//! the spool, and flushes that try matching messages now.

use std::collections::HashSet;

use super::{FlushWaiter, Phase, Scheduler};
use crate::engine::EngineError;
use crate::engine::admin::{FlushFilter, FlushSummary};
use crate::engine::command::{AdminOp, Command, Reply};
use crate::engine::tasks;
use crate::queue_id::QueueId;
use crate::spool::{MessageState, QueuedMessage, SpoolError};

impl Scheduler {
    // ---- administration ----------------------------------------------------------------

    pub(super) fn admin(
        &mut self,
        op: AdminOp,
        id: QueueId,
        reply: Reply<Result<(), EngineError>>,
    ) {
        let Some(e) = self.messages.get_mut(&id) else {
            let _ = reply.send(Err(EngineError::NotFound(id)));
            return;
        };
        match (&e.phase, op) {
            (Phase::Idle, _) => {}
            (Phase::Admin, _) => {
                let _ = reply.send(Err(EngineError::Busy(id)));
                return;
            }
            // Release of an active message is a no-op: it is not held.
            (_, AdminOp::Release) => {
                let _ = reply.send(Ok(()));
                return;
            }
            // Applied when the current attempt ends.
            (_, op) => {
                e.requested = Some(op);
                let _ = reply.send(Ok(()));
                return;
            }
        }
        self.unschedule(id);
        if let Some(e) = self.messages.get_mut(&id) {
            e.phase = Phase::Admin;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = tasks::apply_admin(&shared, op, id).await;
            shared.send(Command::AdminDone(id, result, reply));
        });
    }

    pub(super) fn on_admin_done(
        &mut self,
        id: QueueId,
        result: Result<Option<MessageState>, EngineError>,
        reply: Reply<Result<(), EngineError>>,
    ) {
        match result {
            Ok(None) => {
                self.messages.remove(&id);
                let _ = reply.send(Ok(()));
            }
            Ok(Some(state)) => {
                if let Some(e) = self.messages.get_mut(&id) {
                    e.state = state;
                    e.phase = Phase::Idle;
                }
                self.schedule(id);
                let _ = reply.send(Ok(()));
            }
            Err(err) => {
                if let Some(e) = self.messages.get_mut(&id) {
                    e.phase = Phase::Idle;
                }
                if matches!(err, EngineError::NotFound(_)) {
                    self.messages.remove(&id);
                } else {
                    self.schedule(id);
                }
                let _ = reply.send(Err(err));
            }
        }
    }

    // ---- flushing and rescanning -------------------------------------------------------

    /// Re-reads the spool (messages queued by other processes appear, ones delivered by
    /// them disappear), then applies a flush if one asked for the scan.
    pub(super) fn start_scan(&mut self, flush: Option<(FlushFilter, Reply<FlushSummary>)>) {
        self.generation += 1;
        let generation = self.generation;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = shared.spool.scan().await.map(|r| {
                for q in &r.quarantined {
                    tracing::error!(target: "postrider::spool", "quarantined {}: {}", q.path.display(), q.reason);
                }
                r.messages
            });
            shared.send(Command::Scanned(generation, result, flush));
        });
    }

    pub(super) fn on_scanned(
        &mut self,
        generation: u64,
        result: Result<Vec<QueuedMessage>, SpoolError>,
        flush: Option<(FlushFilter, Reply<FlushSummary>)>,
    ) {
        match result {
            Ok(found) => {
                let on_disk: HashSet<QueueId> = found.iter().map(|m| m.id).collect();
                for m in found {
                    match self.messages.get(&m.id) {
                        None => self.learn(m.id, m.envelope, m.state),
                        // Changed by another process (held or released by an administrator's
                        // command, partly delivered by a queue run): take its state.
                        Some(e)
                            if matches!(e.phase, Phase::Idle)
                                && !e.unsaved
                                && e.state != m.state =>
                        {
                            self.unschedule(m.id);
                            if let Some(e) = self.messages.get_mut(&m.id) {
                                e.state = m.state;
                            }
                            self.schedule(m.id);
                        }
                        Some(_) => {}
                    }
                }
                // Idle messages known before this scan began and absent from it were removed by
                // another process.
                let gone: Vec<QueueId> = self
                    .messages
                    .iter()
                    .filter(|(id, e)| {
                        matches!(e.phase, Phase::Idle)
                            && e.generation < generation
                            && !on_disk.contains(id)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    self.unschedule(id);
                    self.messages.remove(&id);
                }
            }
            Err(e) => tracing::error!(target: "postrider::engine", "queue scan failed: {e}"),
        }
        if let Some((filter, reply)) = flush {
            self.flush(filter, reply);
        }
    }

    pub(super) fn flush(&mut self, filter: FlushFilter, reply: Reply<FlushSummary>) {
        let now = self.shared.clock.now();
        let mut waiter = FlushWaiter {
            remaining: HashSet::new(),
            summary: FlushSummary::default(),
            reply,
        };
        let matched: Vec<QueueId> = self
            .messages
            .iter()
            .filter(|(id, e)| filter.matches(**id, &e.envelope, &e.state))
            .map(|(id, _)| *id)
            .collect();
        for id in matched {
            let Some(e) = self.messages.get(&id) else {
                continue;
            };
            if e.state.held {
                waiter.summary.held += 1;
                continue;
            }
            waiter.summary.attempted += 1;
            waiter.remaining.insert(id);
            if matches!(e.phase, Phase::Idle) {
                self.unschedule(id);
                if let Some(e) = self.messages.get_mut(&id) {
                    e.state.next_attempt = now;
                    e.forced = true;
                }
                self.schedule(id);
            }
        }
        if waiter.remaining.is_empty() {
            let _ = waiter.reply.send(waiter.summary);
        } else {
            self.flushes.push(waiter);
        }
    }

    /// A flush waiting for `parent` waits for `child` too (a DSN or forwarded copy its
    /// attempt queued), so the run that caused it also sends it.
    pub(super) fn adopt_into_flushes(&mut self, parent: QueueId, child: QueueId) {
        for w in &mut self.flushes {
            if w.remaining.contains(&parent) && w.remaining.insert(child) {
                w.summary.attempted += 1;
            }
        }
    }

    pub(super) fn resolve_flush(&mut self, id: QueueId, count: impl Fn(&mut FlushSummary)) {
        if self.flushes.is_empty() {
            return;
        }
        let mut still = Vec::with_capacity(self.flushes.len());
        for mut w in self.flushes.drain(..) {
            if w.remaining.remove(&id) {
                count(&mut w.summary);
            }
            if w.remaining.is_empty() {
                let _ = w.reply.send(w.summary);
            } else {
                still.push(w);
            }
        }
        self.flushes = still;
    }
}
