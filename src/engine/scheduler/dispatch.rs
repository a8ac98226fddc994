//! Starting deliveries: each route's ready jobs in batches, within the global and per-route
//! limits; jobs for a dead route deferred without a connection; each batch in a task of its own
//! with the transport for its route's kind.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Running, Scheduler};
use crate::engine::command::Command;
use crate::engine::delivery::{self, Job, Recorder};
use crate::engine::events::Agent;
use crate::engine::finalize::Report;
use crate::route::{Route, RouteKind};
use crate::status::{Diagnostic, EnhancedStatus, Outcome};

impl Scheduler {
    // ---- delivering --------------------------------------------------------------------

    /// Starts deliveries while the limits allow, giving each route with waiting work a turn.
    pub(super) fn pump(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let limits = &self.shared.limits;
        let (global, per_hop, batch) = (
            limits.max_deliveries,
            limits.max_deliveries_per_hop,
            limits.max_batch_messages.max(1),
        );
        let now = self.shared.clock.now();
        let routes: Vec<Route> = self
            .hops
            .iter()
            .filter(|(_, h)| !h.ready.is_empty())
            .map(|(r, _)| r.clone())
            .collect();
        for route in routes {
            // Jobs for a dead route are deferred without a connection attempt, unless a flush
            // forced them.
            if let Some(reason) = self.hosts.dead(&route, now).cloned() {
                let hop = self
                    .hops
                    .get_mut(&route)
                    .expect("invariant: route listed above");
                let (forced, suspended): (VecDeque<Job>, VecDeque<Job>) =
                    hop.ready.drain(..).partition(|j| j.forced);
                hop.ready = forced;
                for job in suspended {
                    self.suspend(&route, job, &reason, now);
                }
            }
            loop {
                if self.deliveries.len() >= global {
                    return;
                }
                let Some(hop) = self.hops.get_mut(&route) else {
                    break;
                };
                if hop.ready.is_empty() || hop.active >= per_hop {
                    break;
                }
                let n = hop.ready.len().min(batch);
                let jobs: Vec<Job> = hop.ready.drain(..n).collect();
                hop.active += 1;
                self.spawn_delivery(route.clone(), jobs);
            }
        }
        self.hops.retain(|_, h| !h.ready.is_empty() || h.active > 0);
    }

    pub(super) fn suspend(
        &mut self,
        route: &Route,
        job: Job,
        reason: &Diagnostic,
        now: SystemTime,
    ) {
        let outcome = Outcome::Deferred(Diagnostic {
            status: reason.status,
            reply: reason.reply.clone(),
            text: format!("delivery temporarily suspended: {}", reason.text),
        });
        let agent = Agent::of(route);
        let hop = super::route_label(route);
        for _ in &job.recipients {
            crate::metrics::outcome(&outcome, &hop);
        }
        let reports: Vec<Report> = job
            .recipients
            .iter()
            .map(|&idx| Report::immediate(idx, outcome.clone(), agent, now))
            .collect();
        for r in &reports {
            self.emit(job.id, r);
        }
        self.job_done(job.id, reports);
    }

    pub(super) fn spawn_delivery(&mut self, route: Route, jobs: Vec<Job>) {
        let transport = match route.kind() {
            RouteKind::Local => self.shared.local.clone(),
            RouteKind::Relay | RouteKind::Reject => Some(self.shared.relay.clone()),
        }
        .expect("invariant: local jobs are queued only when a local transport exists");
        let n = self.next_delivery;
        self.next_delivery += 1;
        let recorder = Arc::new(Recorder::new(self.shared.clone(), n, &route, &jobs));
        let inner = {
            let (shared, recorder, route) = (self.shared.clone(), recorder.clone(), route.clone());
            tokio::spawn(async move {
                delivery::run(&shared, &transport, &route, &jobs, &recorder).await;
            })
        };
        self.deliveries.insert(
            n,
            Running {
                route: route.clone(),
                abort: inner.abort_handle(),
                started: tokio::time::Instant::now(),
            },
        );
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let interrupted = match inner.await {
                Ok(()) => None,
                Err(e) if e.is_cancelled() => Some(Outcome::deferred(
                    EnhancedStatus::new(4, 3, 2),
                    "delivery interrupted: the engine is shutting down",
                )),
                Err(e) => {
                    tracing::error!(target: "postrider::engine", "delivery task failed: {e}");
                    Some(Outcome::deferred(
                        EnhancedStatus::new(4, 3, 0),
                        "internal error: the transport panicked",
                    ))
                }
            };
            shared.send(Command::DeliveryEnded(
                n,
                recorder.end(route, interrupted.as_ref()),
            ));
        });
    }
}
