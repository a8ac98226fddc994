//! One delivery: a batch of jobs that share a route, handed to the transport for the route's
//! kind, with the [`Reports`] each message's outcome goes to as soon as the transport knows it.
//!
//! The recorder passes every message's reports to the scheduler and waits until the outcome is
//! durable before the transport may send the next message, so a crash re-sends at most the
//! message whose reply was in flight. When the transport returns, every job it did not report
//! is either "not attempted" (the engine asked it to stop: the recipients stay as they were) or
//! deferred as an internal error (a transport that forgot a message).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::Shared;
use super::command::Command;
use super::events::Agent;
use super::finalize::Report;
use crate::envelope::{Envelope, Recipient};
use crate::queue_id::QueueId;
use crate::route::Route;
use crate::status::{Diagnostic, EnhancedStatus, Outcome};
use crate::transport::{Delivery, Next, RecipientReport, Redirect, Reports, Transport};

/// One message's share of a batch: the recipients to try with the batch's route.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: QueueId,
    pub envelope: Arc<Envelope>,
    pub recipients: Vec<usize>,
    pub forced: bool,
    /// The body, when still in memory from the submission.
    pub body: Option<Bytes>,
    /// Why these recipients are on this route (a redirect), for their log lines.
    pub note: Option<String>,
}

/// What the scheduler learns when a delivery task is over.
pub(crate) struct DeliveryEnd {
    pub route: Route,
    /// Every outcome the transport reported, for the next hop's status.
    pub outcomes: Vec<Outcome>,
    /// Jobs the transport did not report, each with the reports to record for it (empty: not
    /// attempted, the recipients stay as they were).
    pub unreported: Vec<(QueueId, Vec<Report>)>,
}

/// A report with what the engine adds: who gave it, when, and a redirect to act on.
#[derive(Debug, Clone)]
pub(crate) struct Reported {
    pub report: Report,
    pub redirect: Option<Redirect>,
}

/// The [`Reports`] of one delivery.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    delivery: u64,
    agent: Agent,
    started: SystemTime,
    /// Each job's recipients and note.
    jobs: HashMap<QueueId, (Vec<usize>, Option<String>)>,
    state: Mutex<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    recorded: HashSet<QueueId>,
    outcomes: Vec<Outcome>,
    /// The engine said stop (it could not record, or it is shutting down).
    stopped: bool,
}

impl Recorder {
    pub(crate) fn new(shared: Arc<Shared>, delivery: u64, route: &Route, jobs: &[Job]) -> Recorder {
        Recorder {
            started: shared.clock.now(),
            shared,
            delivery,
            agent: Agent::of(route),
            jobs: jobs
                .iter()
                .map(|j| (j.id, (j.recipients.clone(), j.note.clone())))
                .collect(),
            state: Mutex::new(RecorderState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports for `recipients` of `id` that say `outcome`, as if the transport had given them.
    pub(crate) fn reports_for(
        &self,
        recipients: &[usize],
        outcome: &Outcome,
        finished: SystemTime,
    ) -> Vec<Report> {
        recipients
            .iter()
            .map(|&recipient| Report {
                recipient,
                outcome: outcome.clone(),
                remote: None,
                agent: self.agent,
                started: self.started,
                finished,
                note: None,
                dsn_passed_on: false,
            })
            .collect()
    }

    /// The end of the delivery: what the scheduler needs for the jobs the transport did not
    /// report. `interrupted` says why the task ended early (aborted at shutdown, or panicked).
    pub(crate) fn end(&self, route: Route, interrupted: Option<&Outcome>) -> DeliveryEnd {
        let finished = self.shared.clock.now();
        let mut state = self.state();
        let stopped = state.stopped || self.shared.draining.load(Ordering::Acquire);
        let mut unreported = Vec::new();
        let mut ids: Vec<&QueueId> = self.jobs.keys().collect();
        ids.sort();
        for id in ids {
            if state.recorded.contains(id) {
                continue;
            }
            let (recipients, _) = &self.jobs[id];
            let reports = match interrupted {
                Some(outcome) => self.reports_for(recipients, outcome, finished),
                None if stopped => Vec::new(),
                None => {
                    tracing::error!(target: "postrider::engine", "{id}: the transport ended without reporting this message (a transport bug); deferring it");
                    self.reports_for(
                        recipients,
                        &Outcome::deferred(
                            EnhancedStatus::new(4, 3, 0),
                            "internal error: the transport gave no report for this message",
                        ),
                        finished,
                    )
                }
            };
            unreported.push((*id, reports));
        }
        DeliveryEnd {
            route,
            outcomes: std::mem::take(&mut state.outcomes),
            unreported,
        }
    }

    /// The reports of `id` the engine records: one per recipient of the job, in the job's order;
    /// reports for other recipients and repeats are dropped, missing ones are an internal error.
    fn accept(&self, id: QueueId, reports: Vec<RecipientReport>) -> Option<Vec<Reported>> {
        let (recipients, note) = self.jobs.get(&id)?;
        let finished = self.shared.clock.now();
        let mut by_recipient: HashMap<usize, RecipientReport> = HashMap::new();
        for r in reports {
            if r.id != id || !recipients.contains(&r.recipient) {
                tracing::warn!(target: "postrider::engine", "{id}: the transport reported recipient {} of {} it was not given (ignored)", r.recipient, r.id);
                continue;
            }
            by_recipient.entry(r.recipient).or_insert(r);
        }
        let recorded = recipients
            .iter()
            .map(|&recipient| match by_recipient.remove(&recipient) {
                Some(r) => Reported {
                    report: Report {
                        recipient,
                        outcome: r.outcome,
                        remote: r.remote,
                        agent: self.agent,
                        started: self.started,
                        finished,
                        note: r.note.or_else(|| note.clone()),
                        dsn_passed_on: r.dsn_passed_on,
                    },
                    redirect: r.redirect,
                },
                None => Reported {
                    report: Report {
                        recipient,
                        outcome: Outcome::deferred(
                            EnhancedStatus::new(4, 3, 0),
                            "internal error: the transport gave no report for this recipient",
                        ),
                        remote: None,
                        agent: self.agent,
                        started: self.started,
                        finished,
                        note: None,
                        dsn_passed_on: false,
                    },
                    redirect: None,
                },
            })
            .collect();
        Some(recorded)
    }
}

#[async_trait]
impl Reports for Recorder {
    async fn record(&self, id: QueueId, reports: Vec<RecipientReport>) -> Next {
        let Some(recorded) = self.accept(id, reports) else {
            tracing::warn!(target: "postrider::engine", "{id}: the transport reported a message it was not given (ignored)");
            return Next::Continue;
        };
        let (ack, durable) = oneshot::channel();
        {
            let mut state = self.state();
            if !state.recorded.insert(id) {
                tracing::warn!(target: "postrider::engine", "{id}: the transport reported this message twice (the second report is ignored)");
                return if state.stopped {
                    Next::Stop
                } else {
                    Next::Continue
                };
            }
            state.outcomes.extend(
                recorded
                    .iter()
                    .filter(|r| r.redirect.is_none())
                    .map(|r| r.report.outcome.clone()),
            );
            // Sent under the lock, with no await in between: a task aborted at shutdown either
            // has handed the message over or has not, and `end` sees which.
            self.shared.send(Command::Recorded {
                delivery: self.delivery,
                id,
                reports: recorded,
                ack,
            });
        }
        let ok = durable.await.unwrap_or(false);
        if !ok {
            self.state().stopped = true;
        }
        if ok && !self.shared.draining.load(Ordering::Acquire) {
            Next::Continue
        } else {
            self.state().stopped = true;
            Next::Stop
        }
    }

    fn stopping(&self) -> bool {
        self.state().stopped || self.shared.draining.load(Ordering::Acquire)
    }

    async fn forward(
        &self,
        delivery: &Delivery,
        recipients: Vec<Recipient>,
    ) -> Result<QueueId, Diagnostic> {
        let original = &delivery.envelope;
        let envelope = Envelope {
            sender: original.sender.clone(),
            recipients,
            ret: original.ret,
            envid: original.envid.clone(),
            body: original.body,
            smtputf8: original.smtputf8,
            requiretls: original.requiretls,
        };
        if let Err(e) = envelope.validate() {
            return Err(Diagnostic::local(
                EnhancedStatus::new(5, 3, 0),
                format!("cannot forward: {e}"),
            ));
        }
        let id = self
            .shared
            .enqueue(envelope, delivery.body.clone(), Some(delivery.id))
            .await
            .map_err(|e| {
                Diagnostic::local(
                    EnhancedStatus::new(4, 3, 0),
                    format!("cannot queue the forwarded copy: {e}"),
                )
            })?;
        tracing::info!(target: "postrider::engine", "{}: forwarded as {id}", delivery.id);
        Ok(id)
    }
}

/// Loads the bodies and hands the batch to the transport for `route`'s kind. Jobs whose body
/// cannot be read are recorded as deferred without reaching the transport.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    transport: &Arc<dyn Transport>,
    route: &Route,
    jobs: &[Job],
    recorder: &Recorder,
) {
    let mut batch = Vec::with_capacity(jobs.len());
    for job in jobs {
        let body = match &job.body {
            Some(body) => Ok(body.clone()),
            None => shared.spool.body(&job.id).await,
        };
        match body {
            Ok(body) => batch.push(Delivery {
                id: job.id,
                envelope: job.envelope.clone(),
                recipients: job.recipients.clone(),
                body,
            }),
            Err(e) => {
                let outcome = Outcome::deferred(
                    EnhancedStatus::new(4, 3, 0),
                    format!("cannot read the message from the spool: {e}"),
                );
                let reports = job
                    .recipients
                    .iter()
                    .map(|&i| RecipientReport::new(job.id, i, outcome.clone(), None))
                    .collect();
                recorder.record(job.id, reports).await;
            }
        }
    }
    if !batch.is_empty() && !recorder.stopping() {
        transport.deliver(route, &batch, recorder).await;
    }
}
