//! The scheduler: one task that owns the queue's in-memory index and decides what runs when.
//!
//! It keeps a due-time index of waiting messages, one ready queue per route ("next hop"), and
//! the host status of each route. Everything that does I/O (claiming and loading a message,
//! routing it, delivering a batch, recording outcomes) runs in a task of its own and reports
//! back here by [`Command`], so the index is never locked and never waits on a disk or a socket.
//!
//! A message moves Idle → Preparing (claim, load, route) → Active (jobs queued per route,
//! delivered in batches; each job's outcome made durable as it arrives) → Finalizing (state
//! saved, DSNs queued) → Idle or gone.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

mod dispatch;
mod recording;
mod steering;

use super::Shared;
use super::admin::{FlushSummary, QueueEntry};
use super::command::{Ack, AdminOp, Command, Fresh, Prepared, Reply};
use super::delivery::Job;
use super::events::Agent;
use super::finalize::Report;
use super::hosts::HostTable;
use super::tasks;
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::route::{Route, RouteError};
use crate::spool::{Claim, MessageState, QueuedMessage};
use crate::status::{EnhancedStatus, Outcome};

/// How long to wait before looking again at a message another process is delivering.
const BUSY_RETRY: Duration = Duration::from_secs(60);

/// The most body bytes kept in memory for messages on their first attempt (see [`Fresh`]);
/// past it, deliveries read bodies from the spool as for any queued message.
const FRESH_BODY_BUDGET: usize = 64 << 20;

/// A message under attempt.
struct Active {
    claim: Claim,
    /// Jobs of this attempt queued or being delivered.
    jobs: usize,
    /// Every outcome of this attempt so far.
    reports: Vec<Report>,
    /// A partial state is being written; these transports wait for it.
    saving: Option<Vec<Ack>>,
    /// Transports waiting for the next write.
    waiting: Vec<Ack>,
    /// A write failed: outcomes of this message cannot be recorded now, so nothing more of it
    /// is sent in this attempt.
    unrecorded: bool,
}

enum Phase {
    /// Waiting for its due time (in the index) or held (not in it).
    Idle,
    Preparing,
    Active(Active),
    /// The end of the attempt is being written; these transports wait for it.
    Finalizing(Vec<Ack>),
    /// An administrator's change is being written.
    Admin,
}

struct Entry {
    envelope: Arc<Envelope>,
    /// The state as the spool holds it — or, when `unsaved`, as it really is.
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
    /// `state` could not be written: it knows of deliveries the spool does not. It is written
    /// before the message is attempted again.
    unsaved: bool,
}

impl Entry {
    fn new(envelope: Arc<Envelope>, state: MessageState, phase: Phase, generation: u64) -> Entry {
        Entry {
            envelope,
            state,
            phase,
            forced: false,
            requested: None,
            generation,
            body: None,
            unsaved: false,
        }
    }
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

struct Draining {
    replies: Vec<Reply<()>>,
    abort_at: tokio::time::Instant,
    aborted: bool,
}

/// A delivery task under way.
struct Running {
    route: Route,
    abort: AbortHandle,
}

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Command>,
    messages: HashMap<QueueId, Entry>,
    due: BTreeSet<(SystemTime, QueueId)>,
    hops: HashMap<Route, HopQueue>,
    hosts: HostTable,
    active_messages: usize,
    deliveries: HashMap<u64, Running>,
    next_delivery: u64,
    generation: u64,
    flushes: Vec<FlushWaiter>,
    draining: Option<Draining>,
    /// Bytes of the bodies kept in `Entry::body`.
    fresh_bytes: usize,
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
                parent,
                envelope,
                state,
                fresh,
            } => {
                if let Some(parent) = parent {
                    self.adopt_into_flushes(parent, id);
                }
                self.on_submitted(id, envelope, state, fresh)
            }
            Command::List(reply) => {
                let _ = reply.send(self.list());
            }
            Command::Flush(filter, reply) => self.start_scan(Some((filter, reply))),
            Command::Admin(op, id, reply) => self.admin(op, id, reply),
            Command::Shutdown(reply) => self.begin_drain(reply),
            Command::Prepared(id, p) => self.on_prepared(id, p),
            Command::Recorded {
                delivery,
                id,
                reports,
                ack,
            } => self.on_recorded(delivery, id, reports, ack),
            Command::Saved(id, result) => self.on_saved(id, result),
            Command::DeliveryEnded(n, end) => self.on_delivery_ended(n, end),
            Command::Finalized(id, f) => self.on_finalized(id, f),
            Command::AdminDone(id, result, reply) => self.on_admin_done(id, result, reply),
            Command::Scanned(generation, result, flush) => {
                self.on_scanned(generation, result, flush)
            }
        }
    }

    // ---- the index ---------------------------------------------------------------------

    fn learn(&mut self, id: QueueId, envelope: Envelope, state: MessageState) {
        let entry = Entry::new(Arc::new(envelope), state, Phase::Idle, self.generation);
        self.messages.insert(id, entry);
        self.schedule(id);
    }

    fn on_submitted(
        &mut self,
        id: QueueId,
        envelope: Envelope,
        state: MessageState,
        fresh: Option<Fresh>,
    ) {
        let startable = fresh.is_some()
            && self.draining.is_none()
            && self.active_messages < self.shared.limits.max_active_messages;
        let mut forced = false;
        if let Some(e) = self.messages.get(&id) {
            // A rescan listed it first. Idle, it is taken over (its attempt would only find it
            // claimed); otherwise the claim goes and the attempt under way wins.
            if !(startable && matches!(e.phase, Phase::Idle)) {
                return;
            }
            forced = e.forced;
            self.unschedule(id);
            self.messages.remove(&id);
        }
        match fresh {
            Some(fresh) if startable => self.start_fresh(id, envelope, state, fresh, forced),
            // Dropping the claim lets the normal path (or another process) take it.
            _ => self.learn(id, envelope, state),
        }
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
        let mut entry = Entry::new(
            envelope.clone(),
            state.clone(),
            Phase::Preparing,
            self.generation,
        );
        entry.forced = forced;
        entry.body = body;
        self.messages.insert(id, entry);
        self.active_messages += 1;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let routes = tasks::route_pending(&shared, &envelope, &state).await;
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
            let unsaved = e.unsaved.then(|| e.state.clone());
            self.active_messages += 1;
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let p = tasks::prepare(&shared, id, unsaved).await;
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
                e.unsaved = false;
                self.back_to_idle(id);
                self.resolve_flush(id, |s| s.held += 1);
            }
            Prepared::Failed(err) => {
                tracing::error!(target: "postrider::engine", "{id}: cannot load from the spool: {err}");
                let unsaved = e.unsaved;
                e.state.next_attempt = now + self.shared.retry.initial;
                self.back_to_idle(id);
                self.resolve_flush(id, |s| s.unrecorded += usize::from(unsaved));
            }
            Prepared::Ready {
                claim,
                envelope,
                state,
                routes,
            } => {
                e.envelope = envelope;
                e.state = state;
                e.unsaved = false;
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
                    jobs: 0,
                    reports: Vec::new(),
                    saving: None,
                    waiting: Vec::new(),
                    unrecorded: false,
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
            let decided = match route {
                Ok(Route::Reject { reply }) => Some((Outcome::from_reply(reply), Agent::Error)),
                Ok(Route::Local { .. }) if self.shared.local.is_none() => Some((
                    Outcome::failed(
                        EnhancedStatus::new(5, 3, 0),
                        "local delivery is not configured: give the engine a local transport \
                         or route this domain elsewhere in the mailertable",
                    ),
                    Agent::Local,
                )),
                Ok(route) => {
                    groups.entry(route).or_default().push(idx);
                    None
                }
                Err(RouteError::Temporary { reason }) => Some((
                    Outcome::deferred(
                        EnhancedStatus::new(4, 4, 0),
                        format!("routing failed: {reason}"),
                    ),
                    Agent::Error,
                )),
                Err(RouteError::Permanent { reason }) => Some((
                    Outcome::failed(
                        EnhancedStatus::new(5, 4, 4),
                        format!("unroutable: {reason}"),
                    ),
                    Agent::Error,
                )),
            };
            if let Some((outcome, agent)) = decided {
                immediate.push(Report::immediate(idx, outcome, agent, now));
            }
        }
        for r in &immediate {
            self.emit(id, r);
        }
        if let Some(a) = self.active(id) {
            a.reports.extend(immediate);
            a.jobs = groups.len();
        }
        for (route, recipients) in groups {
            self.queue_job(
                route,
                Job {
                    id,
                    envelope: envelope.clone(),
                    recipients,
                    forced,
                    body: body.clone(),
                    note: None,
                },
            );
        }
        self.advance(id);
    }

    fn active(&mut self, id: QueueId) -> Option<&mut Active> {
        match self.messages.get_mut(&id) {
            Some(Entry {
                phase: Phase::Active(a),
                ..
            }) => Some(a),
            _ => None,
        }
    }

    fn queue_job(&mut self, route: Route, job: Job) {
        self.hops.entry(route).or_default().ready.push_back(job);
    }

    // ---- shutting down -----------------------------------------------------------------

    /// Stops taking new work: jobs that have not started are not attempted (their recipients
    /// stay as they were), and each running session finishes the message it is on — its
    /// outcome is recorded — and then closes.
    fn begin_drain(&mut self, reply: Option<Reply<()>>) {
        self.shared.draining.store(true, Ordering::Release);
        let grace = self.shared.limits.shutdown_grace;
        let d = self.draining.get_or_insert_with(|| Draining {
            replies: Vec::new(),
            abort_at: tokio::time::Instant::now() + grace,
            aborted: false,
        });
        if let Some(r) = reply {
            d.replies.push(r);
        }
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
                    "shutdown grace period over: interrupting {} deliveries (their unanswered messages stay queued)",
                    self.deliveries.len()
                );
            }
            for running in self.deliveries.values() {
                running.abort.abort();
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
