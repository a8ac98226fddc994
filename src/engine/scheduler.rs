//! The scheduler: one task that owns the queue's in-memory index and decides what runs when.
//!
//! It keeps a due-time index of waiting messages, one ready queue per route ("next hop"), and
//! the host status of each route. Everything that does I/O (claiming and loading a message,
//! routing it, delivering a batch, recording the result) runs in a task of its own and reports
//! back here by message, so the index is never locked and never waits on a disk or a socket.
//!
//! A message moves Idle → Preparing (claim, load, route) → Active (jobs queued per route,
//! delivered in batches) → Finalizing (state saved, DSNs queued) → Idle or gone.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::admin::{FlushFilter, FlushSummary, QueueEntry};
use super::finalize::{self, FinalizeJob, Finalized, Report};
use super::hosts::HostTable;
use super::{EngineError, Shared};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::route::{Route, RouteError};
use crate::spool::{Claim, MessageState, QueuedMessage, SpoolError};
use crate::status::{Diagnostic, EnhancedStatus, Outcome};
use crate::transport::{Delivery, RecipientReport};

/// How long to wait before looking again at a message another process is delivering.
const BUSY_RETRY: Duration = Duration::from_secs(60);

/// The most body bytes kept in memory for messages on their first attempt (see [`Fresh`]);
/// past it, deliveries read bodies from the spool as for any queued message.
const FRESH_BODY_BUDGET: usize = 64 << 20;

/// An administrator's change to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminOp {
    Hold,
    Release,
    Delete,
}

type Reply<T> = oneshot::Sender<T>;

/// A message just submitted, still claimed by the spool insert that stored it: its first
/// attempt needs no claim, no re-read of its record and no read of its body.
pub(crate) struct Fresh {
    pub claim: Claim,
    pub body: Bytes,
}

/// Everything the scheduler is told, by the engine handle and by its own tasks.
pub(crate) enum Command {
    Submitted {
        id: QueueId,
        envelope: Envelope,
        state: MessageState,
        /// `None` when the spool could not hand over a claim: the message is scheduled as if
        /// found by a scan.
        fresh: Option<Fresh>,
    },
    List(Reply<Vec<QueueEntry>>),
    Flush(FlushFilter, Reply<FlushSummary>),
    Admin(AdminOp, QueueId, Reply<Result<(), EngineError>>),
    Shutdown(Option<Reply<()>>),
    Prepared(QueueId, Prepared),
    Delivered(u64, DeliveryResult),
    Finalized(QueueId, Finalized),
    AdminDone(
        QueueId,
        Result<Option<MessageState>, EngineError>,
        Reply<Result<(), EngineError>>,
    ),
    Scanned(
        u64,
        Result<Vec<QueuedMessage>, SpoolError>,
        Option<(FlushFilter, Reply<FlushSummary>)>,
    ),
}

/// What preparing a message found.
pub(crate) enum Prepared {
    Ready {
        claim: Claim,
        envelope: Arc<Envelope>,
        state: MessageState,
        routes: Vec<(usize, Result<Route, RouteError>)>,
    },
    /// Another engine or process holds the claim.
    Busy,
    /// The message left the spool (another process delivered or deleted it).
    Gone,
    /// An administrator held it (possibly from another process).
    Held(MessageState),
    /// The spool failed; try again later.
    Failed(SpoolError),
}

/// One message's share of a batch: the recipients to try with the batch's route.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    id: QueueId,
    envelope: Arc<Envelope>,
    recipients: Vec<usize>,
    forced: bool,
    /// The body, when still in memory from the submission.
    body: Option<Bytes>,
}

/// What a delivery task reports.
pub(crate) struct DeliveryResult {
    route: Route,
    jobs: Vec<QueueId>,
    started: SystemTime,
    finished: SystemTime,
    reports: Vec<RecipientReport>,
}

struct Active {
    claim: Claim,
    pending_jobs: usize,
    reports: Vec<Report>,
}

enum Phase {
    /// Waiting for its due time (in the index) or held (not in it).
    Idle,
    Preparing,
    Active(Active),
    Finalizing,
    /// An administrator's change is being written.
    Admin,
}

struct Entry {
    envelope: Arc<Envelope>,
    state: MessageState,
    phase: Phase,
    /// A flush asked for this attempt: ignore host status.
    forced: bool,
    /// An administrator's change that waits for the current attempt to end.
    requested: Option<AdminOp>,
    /// The scan generation at which the index learned of this message.
    generation: u64,
    /// The body, kept from the submission for the first attempt (counted in `fresh_bytes`).
    body: Option<Bytes>,
}

#[derive(Default)]
struct HopQueue {
    ready: VecDeque<Job>,
    active: usize,
}

struct FlushWaiter {
    remaining: HashSet<QueueId>,
    summary: FlushSummary,
    reply: Reply<FlushSummary>,
}

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Command>,
    messages: HashMap<QueueId, Entry>,
    due: BTreeSet<(SystemTime, QueueId)>,
    hops: HashMap<Route, HopQueue>,
    hosts: HostTable,
    active_messages: usize,
    active_deliveries: usize,
    deliveries: HashMap<u64, AbortHandle>,
    next_delivery: u64,
    generation: u64,
    flushes: Vec<FlushWaiter>,
    draining: Option<Draining>,
    /// Bytes of the bodies kept in `Entry::body`.
    fresh_bytes: usize,
}

struct Draining {
    replies: Vec<Reply<()>>,
    abort_at: tokio::time::Instant,
    aborted: bool,
}

impl Scheduler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Command>,
        recovered: Vec<QueuedMessage>,
    ) -> Scheduler {
        let mut s = Scheduler {
            shared,
            rx,
            messages: HashMap::new(),
            due: BTreeSet::new(),
            hops: HashMap::new(),
            hosts: HostTable::default(),
            active_messages: 0,
            active_deliveries: 0,
            deliveries: HashMap::new(),
            next_delivery: 0,
            generation: 0,
            flushes: Vec::new(),
            draining: None,
            fresh_bytes: 0,
        };
        for m in recovered {
            s.learn(m.id, m.envelope, m.state);
        }
        s
    }

    /// Runs until shut down, or until every engine handle is gone.
    pub(crate) async fn run(mut self) {
        let mut rescan = self.shared.limits.queue_scan_interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            self.dispatch_due();
            self.pump();
            if self.drained() {
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => self.begin_drain(None),
                },
                _ = sleep_until_opt(wake) => {}
                _ = tick_opt(&mut rescan) => self.start_scan(None),
            }
        }
        if let Some(d) = self.draining.take() {
            for r in d.replies {
                let _ = r.send(());
            }
        }
        tracing::info!(target: "postrider::engine", "queue engine stopped");
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        if let Some(d) = &self.draining {
            return (!d.aborted).then_some(d.abort_at);
        }
        if self.active_messages >= self.shared.limits.max_active_messages {
            return None;
        }
        self.due
            .first()
            .map(|(t, _)| self.shared.clock.deadline(*t))
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submitted {
                id,
                envelope,
                state,
                fresh,
            } => {
                let startable = fresh.is_some()
                    && self.draining.is_none()
                    && self.active_messages < self.shared.limits.max_active_messages;
                let mut forced = false;
                if let Some(e) = self.messages.get(&id) {
                    // A rescan listed it first. Idle, it is taken over (its attempt would only
                    // find it claimed); otherwise the claim goes and the attempt under way wins.
                    if !(startable && matches!(e.phase, Phase::Idle)) {
                        return;
                    }
                    forced = e.forced;
                    self.unschedule(id);
                    self.messages.remove(&id);
                }
                match fresh {
                    Some(fresh) if startable => {
                        self.start_fresh(id, envelope, state, fresh, forced)
                    }
                    // Dropping the claim lets the normal path (or another process) take it.
                    _ => self.learn(id, envelope, state),
                }
            }
            Command::List(reply) => {
                let _ = reply.send(self.list());
            }
            Command::Flush(filter, reply) => self.start_scan(Some((filter, reply))),
            Command::Admin(op, id, reply) => self.admin(op, id, reply),
            Command::Shutdown(reply) => self.begin_drain(reply),
            Command::Prepared(id, p) => self.on_prepared(id, p),
            Command::Delivered(n, r) => self.on_delivered(n, r),
            Command::Finalized(id, f) => self.on_finalized(id, f),
            Command::AdminDone(id, result, reply) => self.on_admin_done(id, result, reply),
            Command::Scanned(generation, result, flush) => {
                self.on_scanned(generation, result, flush)
            }
        }
    }

    // ---- the index ---------------------------------------------------------------------

    fn learn(&mut self, id: QueueId, envelope: Envelope, state: MessageState) {
        let entry = Entry {
            envelope: Arc::new(envelope),
            state,
            phase: Phase::Idle,
            forced: false,
            requested: None,
            generation: self.generation,
            body: None,
        };
        self.messages.insert(id, entry);
        self.schedule(id);
    }

    /// Starts the first attempt of a message submitted through this engine at once: it is
    /// claimed already and its state is the one just written, so only routing remains.
    fn start_fresh(
        &mut self,
        id: QueueId,
        envelope: Envelope,
        state: MessageState,
        fresh: Fresh,
        forced: bool,
    ) {
        let Fresh { claim, body } = fresh;
        let body = (self.fresh_bytes + body.len() <= FRESH_BODY_BUDGET).then_some(body);
        self.fresh_bytes += body.as_ref().map_or(0, Bytes::len);
        let envelope = Arc::new(envelope);
        self.messages.insert(
            id,
            Entry {
                envelope: envelope.clone(),
                state: state.clone(),
                phase: Phase::Preparing,
                forced,
                requested: None,
                generation: self.generation,
                body,
            },
        );
        self.active_messages += 1;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let routes = route_pending(&shared, &envelope, &state).await;
            let ready = Prepared::Ready {
                claim,
                envelope,
                state,
                routes,
            };
            shared.send(Command::Prepared(id, ready));
        });
    }

    /// Forgets the body kept for the attempt that is ending.
    fn drop_body(&mut self, id: QueueId) {
        if let Some(body) = self.messages.get_mut(&id).and_then(|e| e.body.take()) {
            self.fresh_bytes -= body.len();
        }
    }

    /// Puts an idle, unheld message into the due index at its `next_attempt`.
    fn schedule(&mut self, id: QueueId) {
        if let Some(e) = self.messages.get(&id)
            && matches!(e.phase, Phase::Idle)
            && !e.state.held
        {
            self.due.insert((e.state.next_attempt, id));
        }
    }

    fn unschedule(&mut self, id: QueueId) {
        if let Some(e) = self.messages.get(&id) {
            self.due.remove(&(e.state.next_attempt, id));
        }
    }

    fn list(&self) -> Vec<QueueEntry> {
        let mut out: Vec<QueueEntry> = self
            .messages
            .iter()
            .map(|(id, e)| {
                let in_flight = !matches!(e.phase, Phase::Idle);
                QueueEntry::new(*id, &e.envelope, &e.state, in_flight)
            })
            .collect();
        out.sort_by_key(|e| e.id);
        out
    }

    // ---- preparing ---------------------------------------------------------------------

    fn dispatch_due(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let now = self.shared.clock.now();
        while self.active_messages < self.shared.limits.max_active_messages {
            let Some(&(t, id)) = self.due.first() else {
                break;
            };
            if t > now {
                break;
            }
            self.due.pop_first();
            let Some(e) = self.messages.get_mut(&id) else {
                continue;
            };
            e.phase = Phase::Preparing;
            self.active_messages += 1;
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let p = prepare(&shared, id).await;
                shared.send(Command::Prepared(id, p));
            });
        }
    }

    fn on_prepared(&mut self, id: QueueId, p: Prepared) {
        let now = self.shared.clock.now();
        let Some(e) = self.messages.get_mut(&id) else {
            self.active_messages -= 1;
            return;
        };
        match p {
            Prepared::Busy => {
                tracing::debug!(target: "postrider::engine", "{id}: claimed by another process; looking again later");
                e.state.next_attempt = now + BUSY_RETRY;
                self.back_to_idle(id);
                self.resolve_flush(id, |s| s.busy += 1);
            }
            Prepared::Gone => {
                self.drop_body(id);
                self.messages.remove(&id);
                self.active_messages -= 1;
                self.resolve_flush(id, |s| s.completed += 1);
            }
            Prepared::Held(state) => {
                e.state = state;
                self.back_to_idle(id);
                self.resolve_flush(id, |s| s.held += 1);
            }
            Prepared::Failed(err) => {
                tracing::error!(target: "postrider::engine", "{id}: cannot load from the spool: {err}");
                e.state.next_attempt = now + self.shared.retry.initial;
                self.back_to_idle(id);
                self.resolve_flush(id, |_| {});
            }
            Prepared::Ready {
                claim,
                envelope,
                state,
                routes,
            } => {
                e.envelope = envelope;
                e.state = state;
                if self.draining.is_some() {
                    drop(claim);
                    self.back_to_idle(id);
                    return;
                }
                let envelope = e.envelope.clone();
                let forced = e.forced;
                let body = e.body.clone();
                e.phase = Phase::Active(Active {
                    claim,
                    pending_jobs: 0,
                    reports: Vec::new(),
                });
                self.route_recipients(id, envelope, forced, body, routes, now);
            }
        }
    }

    /// Ends an attempt that did not happen: back to the index, no longer active.
    fn back_to_idle(&mut self, id: QueueId) {
        self.drop_body(id);
        if let Some(e) = self.messages.get_mut(&id) {
            e.phase = Phase::Idle;
            e.forced = false;
        }
        self.active_messages -= 1;
        self.schedule(id);
    }

    fn route_recipients(
        &mut self,
        id: QueueId,
        envelope: Arc<Envelope>,
        forced: bool,
        body: Option<Bytes>,
        routes: Vec<(usize, Result<Route, RouteError>)>,
        now: SystemTime,
    ) {
        let mut groups: HashMap<Route, Vec<usize>> = HashMap::new();
        let mut immediate = Vec::new();
        for (idx, route) in routes {
            match route {
                Ok(Route::Reject { reply }) => {
                    immediate.push(Report::immediate(
                        idx,
                        Outcome::from_reply(reply),
                        "error",
                        now,
                    ));
                }
                Ok(Route::Local { .. }) if self.shared.local.is_none() => {
                    immediate.push(Report::immediate(
                        idx,
                        Outcome::failed(
                            EnhancedStatus::new(5, 3, 0),
                            "local delivery is not configured: give the engine a local transport \
                             or route this domain elsewhere in the mailertable",
                        ),
                        "local",
                        now,
                    ));
                }
                Ok(route) => groups.entry(route).or_default().push(idx),
                Err(RouteError::Temporary { reason }) => immediate.push(Report::immediate(
                    idx,
                    Outcome::deferred(
                        EnhancedStatus::new(4, 4, 0),
                        format!("routing failed: {reason}"),
                    ),
                    "error",
                    now,
                )),
                Err(RouteError::Permanent { reason }) => immediate.push(Report::immediate(
                    idx,
                    Outcome::failed(
                        EnhancedStatus::new(5, 4, 4),
                        format!("unroutable: {reason}"),
                    ),
                    "error",
                    now,
                )),
            }
        }
        for r in &immediate {
            self.emit(id, r);
        }
        let jobs = groups.len();
        if let Some(Entry {
            phase: Phase::Active(a),
            ..
        }) = self.messages.get_mut(&id)
        {
            a.reports.extend(immediate);
            a.pending_jobs = jobs;
        }
        if jobs == 0 {
            self.start_finalize(id);
            return;
        }
        for (route, recipients) in groups {
            self.hops.entry(route).or_default().ready.push_back(Job {
                id,
                envelope: envelope.clone(),
                recipients,
                forced,
                body: body.clone(),
            });
        }
    }

    // ---- delivering --------------------------------------------------------------------

    /// Starts deliveries while the limits allow, giving each route with waiting work a turn.
    fn pump(&mut self) {
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
                if self.active_deliveries >= global {
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
                self.active_deliveries += 1;
                self.spawn_delivery(route.clone(), jobs);
            }
        }
        self.hops.retain(|_, h| !h.ready.is_empty() || h.active > 0);
    }

    fn suspend(&mut self, route: &Route, job: Job, reason: &Diagnostic, now: SystemTime) {
        let outcome = Outcome::Deferred(Diagnostic {
            status: reason.status,
            reply: reason.reply.clone(),
            text: format!("delivery temporarily suspended: {}", reason.text),
        });
        let mailer = mailer_name(route);
        let reports: Vec<Report> = job
            .recipients
            .iter()
            .map(|&idx| Report::immediate(idx, outcome.clone(), mailer, now))
            .collect();
        for r in &reports {
            self.emit(job.id, r);
        }
        self.job_done(job.id, reports);
    }

    fn spawn_delivery(&mut self, route: Route, jobs: Vec<Job>) {
        let n = self.next_delivery;
        self.next_delivery += 1;
        let shared = self.shared.clone();
        let inner_route = route.clone();
        let inner_jobs = jobs.clone();
        let inner_shared = shared.clone();
        let inner =
            tokio::spawn(async move { deliver(&inner_shared, &inner_route, &inner_jobs).await });
        self.deliveries.insert(n, inner.abort_handle());
        tokio::spawn(async move {
            let started = shared.clock.now();
            let result = match inner.await {
                Ok(r) => r,
                Err(e) => {
                    let (status, why) = if e.is_cancelled() {
                        (
                            EnhancedStatus::new(4, 3, 2),
                            "delivery interrupted: the engine is shutting down",
                        )
                    } else {
                        (
                            EnhancedStatus::new(4, 3, 0),
                            "internal error: the transport panicked",
                        )
                    };
                    if !e.is_cancelled() {
                        tracing::error!(target: "postrider::engine", "delivery task failed: {e}");
                    }
                    DeliveryResult {
                        route: route.clone(),
                        jobs: jobs.iter().map(|j| j.id).collect(),
                        started,
                        finished: shared.clock.now(),
                        reports: missing_reports(&jobs, status, why),
                    }
                }
            };
            shared.send(Command::Delivered(n, result));
        });
    }

    fn on_delivered(&mut self, n: u64, r: DeliveryResult) {
        self.deliveries.remove(&n);
        self.active_deliveries -= 1;
        if let Some(hop) = self.hops.get_mut(&r.route) {
            hop.active -= 1;
        }
        let now = self.shared.clock.now();
        if self
            .hosts
            .record(&r.route, &r.reports, now, &self.shared.retry)
        {
            tracing::warn!(
                target: "postrider::engine",
                "next hop {} is not answering; deferring its mail without connecting until its backoff ends",
                route_label(&r.route)
            );
        }
        let mailer = mailer_name(&r.route);
        let mut by_message: HashMap<QueueId, Vec<Report>> = HashMap::new();
        for rep in r.reports {
            by_message.entry(rep.id).or_default().push(Report {
                recipient: rep.recipient,
                outcome: rep.outcome,
                remote: rep.remote,
                mailer: mailer.to_string(),
                started: r.started,
                finished: r.finished,
                note: rep.note,
                dsn_passed_on: rep.dsn_passed_on,
            });
        }
        for id in r.jobs {
            let reports = by_message.remove(&id).unwrap_or_default();
            for rep in &reports {
                self.emit(id, rep);
            }
            self.job_done(id, reports);
        }
    }

    /// Records the reports of one finished job; finalizes the message after its last job.
    fn job_done(&mut self, id: QueueId, reports: Vec<Report>) {
        let Some(Entry {
            phase: Phase::Active(a),
            ..
        }) = self.messages.get_mut(&id)
        else {
            return;
        };
        a.reports.extend(reports);
        a.pending_jobs = a.pending_jobs.saturating_sub(1);
        if a.pending_jobs == 0 {
            self.start_finalize(id);
        }
    }

    fn emit(&self, id: QueueId, r: &Report) {
        if let Some(e) = self.messages.get(&id) {
            self.shared.emit(r.event(id, &e.envelope, e.state.arrival));
        }
    }

    // ---- finalizing --------------------------------------------------------------------

    fn start_finalize(&mut self, id: QueueId) {
        self.drop_body(id);
        let Some(e) = self.messages.get_mut(&id) else {
            return;
        };
        let Phase::Active(active) = std::mem::replace(&mut e.phase, Phase::Finalizing) else {
            return;
        };
        let job = FinalizeJob {
            id,
            envelope: e.envelope.clone(),
            state: e.state.clone(),
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

    fn on_finalized(&mut self, id: QueueId, f: Finalized) {
        self.active_messages -= 1;
        match f {
            Finalized::Removed => {
                self.messages.remove(&id);
                self.resolve_flush(id, |s| s.completed += 1);
            }
            Finalized::Kept(state) => {
                if let Some(e) = self.messages.get_mut(&id) {
                    e.state = state;
                    e.phase = Phase::Idle;
                    e.forced = false;
                }
                self.schedule(id);
                self.resolve_flush(id, |_| {});
            }
        }
    }

    // ---- administration ----------------------------------------------------------------

    fn admin(&mut self, op: AdminOp, id: QueueId, reply: Reply<Result<(), EngineError>>) {
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
            let result = apply_admin(&shared, op, id).await;
            shared.send(Command::AdminDone(id, result, reply));
        });
    }

    fn on_admin_done(
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
    fn start_scan(&mut self, flush: Option<(FlushFilter, Reply<FlushSummary>)>) {
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

    fn on_scanned(
        &mut self,
        generation: u64,
        result: Result<Vec<QueuedMessage>, SpoolError>,
        flush: Option<(FlushFilter, Reply<FlushSummary>)>,
    ) {
        match result {
            Ok(found) => {
                let on_disk: HashSet<QueueId> = found.iter().map(|m| m.id).collect();
                for m in found {
                    if !self.messages.contains_key(&m.id) {
                        self.learn(m.id, m.envelope, m.state);
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

    fn flush(&mut self, filter: FlushFilter, reply: Reply<FlushSummary>) {
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

    fn resolve_flush(&mut self, id: QueueId, count: impl Fn(&mut FlushSummary)) {
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

    // ---- shutting down -----------------------------------------------------------------

    fn begin_drain(&mut self, reply: Option<Reply<()>>) {
        let grace = self.shared.limits.shutdown_grace;
        let d = self.draining.get_or_insert_with(|| Draining {
            replies: Vec::new(),
            abort_at: tokio::time::Instant::now() + grace,
            aborted: false,
        });
        if let Some(r) = reply {
            d.replies.push(r);
        }
        // Jobs that have not started are simply not attempted: their recipients stay pending.
        let queued: Vec<QueueId> = self
            .hops
            .values_mut()
            .flat_map(|h| h.ready.drain(..).map(|j| j.id).collect::<Vec<_>>())
            .collect();
        for id in queued {
            self.job_done(id, Vec::new());
        }
    }

    fn drained(&mut self) -> bool {
        let Some(d) = &mut self.draining else {
            return false;
        };
        if !d.aborted && tokio::time::Instant::now() >= d.abort_at {
            d.aborted = true;
            if !self.deliveries.is_empty() {
                tracing::warn!(
                    target: "postrider::engine",
                    "shutdown grace period over: interrupting {} deliveries (their recipients stay queued)",
                    self.deliveries.len()
                );
            }
            for h in self.deliveries.values() {
                h.abort();
            }
        }
        self.active_messages == 0
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

pub(crate) fn mailer_name(route: &Route) -> &'static str {
    match route {
        Route::Relay { mailer, .. } => mailer.name(),
        Route::Local { .. } => "local",
        Route::Reject { .. } => "error",
    }
}

fn route_label(route: &Route) -> String {
    match route {
        Route::Relay { hops, .. } => hops
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        Route::Local { .. } => "local".into(),
        Route::Reject { .. } => "error".into(),
    }
}

/// Claims, re-reads and routes one message.
async fn prepare(shared: &Shared, id: QueueId) -> Prepared {
    let claim = match shared.spool.claim(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Prepared::Busy,
        Err(SpoolError::NotFound(_)) => return Prepared::Gone,
        Err(e) => return Prepared::Failed(e),
    };
    // Another process may have advanced the state since this engine last read it.
    let msg = match shared.spool.load(&id).await {
        Ok(m) => m,
        Err(SpoolError::NotFound(_)) => return Prepared::Gone,
        Err(e) => return Prepared::Failed(e),
    };
    if msg.state.held {
        return Prepared::Held(msg.state);
    }
    let routes = route_pending(shared, &msg.envelope, &msg.state).await;
    Prepared::Ready {
        claim,
        envelope: Arc::new(msg.envelope),
        state: msg.state,
        routes,
    }
}

/// The route of every recipient still pending.
async fn route_pending(
    shared: &Shared,
    envelope: &Envelope,
    state: &MessageState,
) -> Vec<(usize, Result<Route, RouteError>)> {
    let mut routes = Vec::new();
    for (idx, (r, s)) in envelope
        .recipients
        .iter()
        .zip(&state.recipients)
        .enumerate()
    {
        if s.status == crate::spool::RecipientStatus::Pending {
            routes.push((idx, shared.router.route(&r.address).await));
        }
    }
    routes
}

/// Loads the bodies and hands one batch to the transport; makes sure every recipient gets
/// exactly one report.
async fn deliver(shared: &Shared, route: &Route, jobs: &[Job]) -> DeliveryResult {
    let started = shared.clock.now();
    let mut batch = Vec::with_capacity(jobs.len());
    let mut reports = Vec::new();
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
            Err(e) => reports.extend(job.recipients.iter().map(|&idx| RecipientReport {
                id: job.id,
                recipient: idx,
                outcome: Outcome::deferred(
                    EnhancedStatus::new(4, 3, 0),
                    format!("cannot read the message from the spool: {e}"),
                ),
                remote: None,
                note: None,
                dsn_passed_on: false,
            })),
        }
    }
    if !batch.is_empty() {
        let transport = match route {
            Route::Local { .. } => shared.local.as_ref().unwrap_or(&shared.transport),
            _ => &shared.transport,
        };
        let got = transport.deliver(route, &batch).await;
        let mut expected: HashSet<(QueueId, usize)> = batch
            .iter()
            .flat_map(|d| d.recipients.iter().map(move |&i| (d.id, i)))
            .collect();
        for r in got {
            if expected.remove(&(r.id, r.recipient)) {
                reports.push(r);
            } else {
                tracing::warn!(target: "postrider::engine", "{}: transport reported on recipient {} it was not given (ignored)", r.id, r.recipient);
            }
        }
        let mut missing: Vec<(QueueId, usize)> = expected.into_iter().collect();
        missing.sort();
        for (id, idx) in missing {
            reports.push(RecipientReport {
                id,
                recipient: idx,
                outcome: Outcome::deferred(
                    EnhancedStatus::new(4, 3, 0),
                    "internal error: the transport gave no report for this recipient",
                ),
                remote: None,
                note: None,
                dsn_passed_on: false,
            });
        }
    }
    DeliveryResult {
        route: route.clone(),
        jobs: jobs.iter().map(|j| j.id).collect(),
        started,
        finished: shared.clock.now(),
        reports,
    }
}

fn missing_reports(jobs: &[Job], status: EnhancedStatus, why: &str) -> Vec<RecipientReport> {
    jobs.iter()
        .flat_map(|j| {
            j.recipients.iter().map(move |&idx| RecipientReport {
                id: j.id,
                recipient: idx,
                outcome: Outcome::deferred(status, why),
                remote: None,
                note: None,
                dsn_passed_on: false,
            })
        })
        .collect()
}

/// Writes a hold, release or delete under the message's claim. `Ok(None)`: the message is gone.
async fn apply_admin(
    shared: &Shared,
    op: AdminOp,
    id: QueueId,
) -> Result<Option<MessageState>, EngineError> {
    let claim = match shared.spool.claim(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(EngineError::Busy(id)),
        Err(SpoolError::NotFound(_)) => return Err(EngineError::NotFound(id)),
        Err(e) => return Err(EngineError::Spool(e)),
    };
    let mut msg = match shared.spool.load(&id).await {
        Ok(m) => m,
        Err(SpoolError::NotFound(_)) => return Err(EngineError::NotFound(id)),
        Err(e) => return Err(EngineError::Spool(e)),
    };
    let result = match op {
        AdminOp::Delete => {
            shared.spool.remove(&id).await.map_err(EngineError::Spool)?;
            tracing::info!(target: "postrider::engine", "{id}: deleted by the administrator");
            None
        }
        AdminOp::Hold => {
            msg.state.held = true;
            shared
                .spool
                .save_state(&id, &msg.state)
                .await
                .map_err(EngineError::Spool)?;
            tracing::info!(target: "postrider::engine", "{id}: held by the administrator");
            Some(msg.state)
        }
        AdminOp::Release => {
            msg.state.held = false;
            msg.state.next_attempt = shared.clock.now();
            shared
                .spool
                .save_state(&id, &msg.state)
                .await
                .map_err(EngineError::Spool)?;
            tracing::info!(target: "postrider::engine", "{id}: released by the administrator");
            Some(msg.state)
        }
    };
    drop(claim);
    Ok(result)
}
