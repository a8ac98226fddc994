//! Recording an attempt as it goes: each message a transport reports is written (a partial
//! state, one write at a time per message) before the transport may send the next; redirects
//! become jobs of the same attempt; a write that fails stops the message; the last job ends
//! the attempt with [`finalize`].

use std::collections::HashMap;

use super::{Entry, Phase, Scheduler, route_label};
use crate::engine::command::{Ack, Command};
use crate::engine::delivery::{DeliveryEnd, Job, Reported};
use crate::engine::finalize::{self, FinalizeJob, Finalized, Report};
use crate::engine::hosts;
use crate::queue_id::QueueId;
use crate::route::{Route, RouteKind};
use crate::spool::SpoolError;
use crate::transport::Redirect;

impl Scheduler {
    /// One message of delivery `n` is reported: its outcomes are recorded now, and the
    /// transport goes on once they are durable (`ack`).
    pub(super) fn on_recorded(&mut self, n: u64, id: QueueId, reported: Vec<Reported>, ack: Ack) {
        let route = self.deliveries.get(&n).map(|r| r.route.clone());
        let mut reports = Vec::with_capacity(reported.len());
        let mut redirected = Vec::new();
        for r in reported {
            match r.redirect {
                Some(Redirect::SmartHost { reason }) => redirected.push((r.report, reason)),
                None => reports.push(r.report),
            }
        }
        if !redirected.is_empty() {
            reports.extend(self.redirect(id, route.as_ref(), redirected));
        }
        for r in &reports {
            self.emit(id, r);
        }
        let Some(a) = self.active(id) else {
            let _ = ack.send(false);
            return;
        };
        a.reports.extend(reports);
        a.jobs = a.jobs.saturating_sub(1);
        if a.unrecorded {
            let _ = ack.send(false);
        } else {
            a.waiting.push(ack);
        }
        self.advance(id);
    }

    /// Queues recipients a transport asked to send through the smart host on its route, as a
    /// job of the same attempt. Returns the reports that stand instead: when there is no smart
    /// host, when they came from it already, or when the engine is stopping (then nothing:
    /// they stay as they were).
    pub(super) fn redirect(
        &mut self,
        id: QueueId,
        from: Option<&Route>,
        redirected: Vec<(Report, String)>,
    ) -> Vec<Report> {
        if self.draining.is_some() {
            return Vec::new();
        }
        let smart_host = self
            .shared
            .router
            .smart_host()
            .filter(|r| Some(r) != from && r.kind() == RouteKind::Relay);
        let forced = self.messages.get(&id).is_some_and(|e| e.forced);
        let envelope = match self.messages.get(&id).map(|e| &e.phase) {
            Some(Phase::Active(a)) => Some(a.envelope.clone()),
            _ => None,
        };
        let (Some(route), Some(envelope)) = (smart_host, envelope) else {
            return redirected.into_iter().map(|(r, _)| r).collect();
        };
        let mut by_reason: HashMap<String, Vec<usize>> = HashMap::new();
        for (r, reason) in redirected {
            by_reason.entry(reason).or_default().push(r.recipient);
        }
        for (reason, recipients) in by_reason {
            tracing::info!(target: "postrider::spf", "{id}: {reason}; sending through the smart host instead");
            if let Some(a) = self.active(id) {
                a.jobs += 1;
            }
            self.queue_job(
                route.clone(),
                Job {
                    id,
                    envelope: envelope.clone(),
                    recipients,
                    forced,
                    body: None,
                    note: Some(format!("{reason}; sent through the smart host instead")),
                },
            );
        }
        Vec::new()
    }

    /// Takes the attempt of `id` one step further: writes what was reported, or finalizes once
    /// no job is left. One write per message at a time; reports that arrive meanwhile wait for
    /// the next.
    pub(super) fn advance(&mut self, id: QueueId) {
        let Some(a) = self.active(id) else {
            return;
        };
        if a.saving.is_some() {
            return;
        }
        if a.jobs == 0 {
            self.start_finalize(id);
        } else if !a.waiting.is_empty() {
            self.start_save(id);
        }
    }

    pub(super) fn start_save(&mut self, id: QueueId) {
        let Some(e) = self.messages.get_mut(&id) else {
            return;
        };
        let Phase::Active(a) = &mut e.phase else {
            return;
        };
        let state = finalize::partial_state(&a.state, &a.reports);
        a.saving = Some(std::mem::take(&mut a.waiting));
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = shared.spool.save_state(&id, &state).await;
            shared.send(Command::Saved(id, result));
        });
    }

    pub(super) fn on_saved(&mut self, id: QueueId, result: Result<(), SpoolError>) {
        let Some(a) = self.active(id) else {
            return;
        };
        let acks = a.saving.take().unwrap_or_default();
        match result {
            Ok(()) => {
                for ack in acks {
                    let _ = ack.send(true);
                }
            }
            Err(e) => {
                for ack in acks.into_iter().chain(a.waiting.drain(..)) {
                    let _ = ack.send(false);
                }
                a.unrecorded = true;
                tracing::error!(
                    target: "postrider::engine",
                    "{id}: cannot record delivery state: {e}; its other recipients are not attempted now, so nothing delivered is sent twice"
                );
                let withdrawn = self.withdraw(id);
                if let Some(a) = self.active(id) {
                    a.jobs = a.jobs.saturating_sub(withdrawn);
                }
            }
        }
        self.advance(id);
    }

    /// Takes the message's jobs that have not started out of their queues; returns how many.
    pub(super) fn withdraw(&mut self, id: QueueId) -> usize {
        let mut withdrawn = 0;
        for hop in self.hops.values_mut() {
            let before = hop.ready.len();
            hop.ready.retain(|j| j.id != id);
            withdrawn += before - hop.ready.len();
        }
        withdrawn
    }

    pub(super) fn on_delivery_ended(&mut self, n: u64, end: DeliveryEnd) {
        let hop = route_label(&end.route);
        if let Some(running) = self.deliveries.remove(&n) {
            crate::metrics::attempt(&hop, running.started.elapsed());
        }
        for outcome in &end.outcomes {
            crate::metrics::outcome(outcome, &hop);
        }
        if let Some(hop) = self.hops.get_mut(&end.route) {
            hop.active -= 1;
        }
        let now = self.shared.clock.now();
        if let Some(reason) = self
            .hosts
            .record(&end.route, &end.outcomes, now, &self.shared.retry)
        {
            tracing::warn!(target: "postrider::engine", "{}", hosts::dead_line(&route_label(&end.route), &reason));
        }
        for (id, reports) in end.unreported {
            for r in &reports {
                crate::metrics::outcome(&r.outcome, &hop);
                self.emit(id, r);
            }
            self.job_done(id, reports);
        }
    }

    /// Records the reports of a job that ended without going through the recorder (suspended,
    /// not attempted, interrupted).
    pub(super) fn job_done(&mut self, id: QueueId, reports: Vec<Report>) {
        if let Some(a) = self.active(id) {
            a.reports.extend(reports);
            a.jobs = a.jobs.saturating_sub(1);
        }
        self.advance(id);
    }

    pub(super) fn emit(&self, id: QueueId, r: &Report) {
        if let Some(Entry {
            phase: Phase::Active(a),
            ..
        }) = self.messages.get(&id)
        {
            self.shared.emit(r.event(id, &a.envelope, a.state.arrival));
        }
    }

    // ---- finalizing --------------------------------------------------------------------

    pub(super) fn start_finalize(&mut self, id: QueueId) {
        self.drop_body(id);
        let Some(e) = self.messages.get_mut(&id) else {
            return;
        };
        let Phase::Active(mut active) = std::mem::replace(&mut e.phase, Phase::Preparing) else {
            return;
        };
        e.phase = Phase::Finalizing(std::mem::take(&mut active.waiting), active.envelope.clone());
        let job = FinalizeJob {
            id,
            envelope: active.envelope,
            state: active.state,
            reports: active.reports,
            claim: active.claim,
            requested: e.requested.take(),
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let f = finalize::finalize(&shared, job).await;
            shared.send(Command::Finalized(id, f));
        });
    }

    pub(super) fn on_finalized(&mut self, id: QueueId, f: Finalized) {
        self.active_messages -= 1;
        let (acks, envelope) = match self.messages.get_mut(&id).map(|e| &mut e.phase) {
            Some(Phase::Finalizing(acks, envelope)) => {
                (std::mem::take(acks), Some(envelope.clone()))
            }
            _ => (Vec::new(), None),
        };
        let durable = matches!(f, Finalized::Removed | Finalized::Kept(_));
        for ack in acks {
            let _ = ack.send(durable);
        }
        match f {
            Finalized::Removed => {
                self.forget(id);
                self.resolve_flush(id, |s| s.completed += 1);
            }
            Finalized::LeaseLost => {
                // Another engine took the message over: its state is that engine's business.
                self.forget(id);
                self.resolve_flush(id, |s| s.busy += 1);
            }
            Finalized::Kept(state) | Finalized::Unsaved(state) => {
                let requested = match self.messages.get_mut(&id) {
                    Some(e) => {
                        if let Some(envelope) = &envelope {
                            e.keys = self.index.symbols.keys(envelope, &state);
                        }
                        e.size = state.size;
                        e.unsaved = (!durable).then(|| Box::new(state.clone()));
                        e.forced = false;
                        e.requested.take()
                    }
                    None => None,
                };
                self.set_idle(id, state.next_attempt, state.held);
                self.resolve_flush(id, |s| s.unrecorded += usize::from(!durable));
                if let Some(op) = requested {
                    // Asked for while the end of the attempt was being written: apply it now.
                    let (reply, _) = tokio::sync::oneshot::channel();
                    self.admin(op, id, reply);
                }
            }
        }
    }
}
