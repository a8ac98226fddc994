//! The scheduler: one task that decides what runs when, over the messages it works on and an
//! index of the rest.
//!
//! It keeps the messages under attempt in full, one ready queue per route ("next hop"), and
//! the host status of each route. What it knows of the other messages depends on the spool's
//! [`Scheduling`]: with `Index` a compact index of every idle message (due time, hold, flush
//! keys: see [`index`]); with `Batches` nothing but a note of when to ask the spool again
//! (see [`batches`]). Everything that does I/O (claiming and loading a message, routing it,
//! delivering a batch, recording outcomes, asking for due work) runs in a task of its own and
//! reports back here by [`Command`], so the scheduler never waits on a disk or a socket.
//!
//! A message moves Idle (in the index, or only in the spool) → Preparing (claim, load, route)
//! → Active (jobs queued per route, delivered in batches; each job's outcome made durable as it
//! arrives) → Finalizing (state saved, DSNs queued) → Idle or gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

mod batches;
mod dispatch;
mod index;
mod recording;
mod steering;

use super::Shared;
use super::admin::{FlushFilter, FlushSummary};
use super::command::{Ack, AdminOp, Command, Fresh, Prepared, Reply};
use super::delivery::Job;
use super::events::Agent;
use super::finalize::Report;
use super::hosts::HostTable;
use super::tasks;
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::route::{Route, RouteError};
use crate::spool::{Claim, MessageState, QueuedMessage, Scheduling};
use crate::status::{EnhancedStatus, Outcome};
use batches::Batches;
use index::{Idle, IdleIndex, Keys};

/// How long to wait before looking again at a message another process is delivering.
const BUSY_RETRY: Duration = Duration::from_secs(60);

/// The most body bytes kept in memory for messages on their first attempt (see [`Fresh`]);
/// past it, deliveries read bodies from the spool as for any queued message.
const FRESH_BODY_BUDGET: usize = 64 << 20;

/// A message under attempt.
struct Active {
    claim: Claim,
    envelope: Arc<Envelope>,
    /// The state as the spool holds it at the start of the attempt.
    state: MessageState,
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
    Preparing,
    Active(Active),
    /// The end of the attempt is being written; these transports wait for it.
    Finalizing(Vec<Ack>, Arc<Envelope>),
    /// An administrator's change is being written; the message was due at this time and held
    /// or not before.
    Admin(SystemTime, bool),
}

/// A message the scheduler is working on.
struct Entry {
    phase: Phase,
    /// A flush asked for this attempt: ignore host status.
    forced: bool,
    /// An administrator's change that waits for the current attempt to end.
    requested: Option<AdminOp>,
    /// The scan generation at which the index learned of this message.
    generation: u64,
    /// The body, kept from the submission for the first attempt (counted in `fresh_bytes`).
    body: Option<Bytes>,
    /// What a flush filter asks about it.
    keys: Keys,
    size: u64,
    /// A state the spool does not have (its write failed): written before it is sent again.
    unsaved: Option<Box<MessageState>>,
}

impl Entry {
    fn from_idle(idle: Idle, phase: Phase) -> Entry {
        Entry {
            phase,
            forced: idle.forced,
            requested: None,
            generation: idle.generation,
            body: None,
            keys: idle.keys,
            size: idle.size,
            unsaved: idle.unsaved,
        }
    }
}

#[derive(Default)]
struct HopQueue {
    ready: VecDeque<Job>,
    active: usize,
}

struct FlushWaiter {
    filter: FlushFilter,
    /// Messages matched whose attempt has not ended.
    remaining: HashSet<QueueId>,
    /// Every message matched so far (a rescan matches again).
    considered: HashSet<QueueId>,
    summary: FlushSummary,
    reply: Reply<FlushSummary>,
    /// Index scheduling: the rescan this flush waits for (it may match more messages).
    scan: Option<u64>,
    /// Batch scheduling: a batch request numbered at least this that comes back short means
    /// every due message was taken, by this engine or another; matched ones this engine did not
    /// get are another's (busy).
    claims_after: u64,
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
    started: tokio::time::Instant,
}

/// The index of the messages a start-up scan finds, built as the scan hands them over
/// ([`crate::spool::Spool::scan_each`]) so that they are never all held in full.
#[derive(Default)]
pub(crate) struct Recovered(IdleIndex);

impl Recovered {
    /// Indexes one message the scan found.
    pub(crate) fn learn(&mut self, m: QueuedMessage) {
        self.0.learn(m.id, &m.envelope, &m.state, 0);
    }

    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Command>,
    /// The messages being worked on.
    messages: HashMap<QueueId, Entry>,
    /// Idle messages: all of them (index scheduling), or those with an unsaved state (batches).
    index: IdleIndex,
    /// Batch scheduling's bookkeeping; `None` with index scheduling.
    batches: Option<Batches>,
    hops: HashMap<Route, HopQueue>,
    hosts: HostTable,
    active_messages: usize,
    deliveries: HashMap<u64, Running>,
    next_delivery: u64,
    generation: u64,
    /// Rescans of the spool under way.
    scans: usize,
    /// Messages this engine finished (removed from the spool) while a rescan was under way,
    /// with the generation then: the rescan may have read them before they went, and must not
    /// bring them back into the index.
    gone_during_scan: HashMap<QueueId, u64>,
    /// The ids each running rescan has found so far, by generation.
    found_by_scan: HashMap<u64, HashSet<QueueId>>,
    flushes: Vec<FlushWaiter>,
    draining: Option<Draining>,
    /// Bytes of the bodies kept in `Entry::body`.
    fresh_bytes: usize,
    /// The task forwarding the spool's wake-ups.
    wakeups: Option<AbortHandle>,
}

impl Scheduler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Command>,
        recovered: Recovered,
    ) -> Scheduler {
        let batches = (shared.spool.scheduling() == Scheduling::Batches).then(Batches::default);
        Scheduler {
            shared,
            rx,
            messages: HashMap::new(),
            index: recovered.0,
            batches,
            hops: HashMap::new(),
            hosts: HostTable::default(),
            active_messages: 0,
            deliveries: HashMap::new(),
            next_delivery: 0,
            generation: 0,
            scans: 0,
            gone_during_scan: HashMap::new(),
            found_by_scan: HashMap::new(),
            flushes: Vec::new(),
            draining: None,
            fresh_bytes: 0,
            wakeups: None,
        }
    }

    /// Runs until shut down, or until every engine handle is gone.
    pub(crate) async fn run(mut self) {
        let mut rescan = self.shared.limits.queue_scan_interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        self.start_wakeups();
        loop {
            self.dispatch_due();
            self.pump();
            self.gauges();
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
                _ = tick_opt(&mut rescan) => self.on_tick(),
            }
        }
        if let Some(w) = self.wakeups.take() {
            w.abort();
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
        let indexed = self
            .index
            .first_due()
            .map(|t| self.shared.clock.deadline(t));
        let batch = self
            .batches
            .as_ref()
            .and_then(|b| b.wake(&self.shared.clock));
        match (indexed, batch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_tick(&mut self) {
        match &mut self.batches {
            // A safety net under the wake-ups: ask the spool again.
            Some(b) => b.look = true,
            None => {
                self.start_scan();
            }
        }
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
            Command::InFlight(reply) => {
                let _ = reply.send(self.messages.keys().copied().collect());
            }
            Command::Flush(filter, reply) => self.start_flush(filter, reply),
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
            Command::ScanFound(generation, found) => self.on_scan_found(generation, found),
            Command::Scanned(generation, result) => self.on_scanned(generation, result),
            Command::Claimed { seq, limit, result } => self.on_claimed(seq, limit, result),
            Command::NextDue(result) => self.on_next_due(result),
            Command::Wake(at) => self.on_wake(at),
            Command::FlushMarked {
                ids,
                summary,
                reply,
            } => self.on_flush_marked(ids, summary, reply),
        }
    }

    // ---- the index ---------------------------------------------------------------------

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
        if self.messages.contains_key(&id) {
            // A rescan listed it first and its attempt is under way: that attempt wins.
            return;
        }
        if let Some(idle) = self.index.get(&id) {
            // A rescan listed it first. Idle, it is taken over (its attempt would only find it
            // claimed).
            if !startable {
                return;
            }
            forced = idle.forced;
            self.index.remove(&id);
        }
        match fresh {
            Some(fresh) if startable => self.start_fresh(id, envelope, state, fresh, forced),
            // Dropping the claim lets the normal path (or another engine) take it.
            _ => self.learn(id, &envelope, &state),
        }
    }

    /// Notes a message that is in the spool and that nobody is working on.
    fn learn(&mut self, id: QueueId, envelope: &Envelope, state: &MessageState) {
        match &mut self.batches {
            // The spool hands it out when it is due (to this engine or another).
            Some(b) if !state.held => b.due_at(state.next_attempt),
            Some(_) => {}
            None => self.index.learn(id, envelope, state, self.generation),
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
        let mut entry = self.entry_for(&envelope, &state);
        entry.forced = forced;
        entry.body = body;
        self.messages.insert(id, entry);
        self.active_messages += 1;
        let envelope = Arc::new(envelope);
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

    /// A new work entry for a message whose envelope and state are at hand.
    fn entry_for(&mut self, envelope: &Envelope, state: &MessageState) -> Entry {
        Entry {
            phase: Phase::Preparing,
            forced: false,
            requested: None,
            generation: self.generation,
            body: None,
            keys: self.index.symbols.keys(envelope, state),
            size: state.size,
            unsaved: None,
        }
    }

    /// Forgets a message that is no longer in the spool.
    fn forget(&mut self, id: QueueId) {
        self.messages.remove(&id);
        if self.scans > 0 {
            self.gone_during_scan.insert(id, self.generation);
        }
    }

    /// Forgets the body kept for the attempt that is ending.
    fn drop_body(&mut self, id: QueueId) {
        if let Some(body) = self.messages.get_mut(&id).and_then(|e| e.body.take()) {
            self.fresh_bytes -= body.len();
        }
    }

    /// Ends the work on a message that stays queued, due at `next_attempt`: back into the
    /// index, or (batch scheduling, nothing unsaved) left to the spool.
    fn set_idle(&mut self, id: QueueId, next_attempt: SystemTime, held: bool) {
        self.drop_body(id);
        let Some(e) = self.messages.remove(&id) else {
            return;
        };
        match &mut self.batches {
            Some(b) if e.unsaved.is_none() => {
                if !held {
                    b.due_at(next_attempt);
                }
            }
            _ => self.index.insert(
                id,
                Idle {
                    next_attempt,
                    held,
                    forced: false,
                    size: e.size,
                    generation: e.generation,
                    keys: e.keys,
                    unsaved: e.unsaved,
                },
            ),
        }
    }

    /// Publishes the queue gauges (cheap: counters the scheduler keeps anyway).
    fn gauges(&self) {
        let work_bytes: u64 = self.messages.values().map(|e| e.size).sum();
        crate::metrics::queue(
            self.index.len() + self.messages.len(),
            self.index.bytes() + work_bytes,
            self.active_messages,
        );
    }

    // ---- preparing ---------------------------------------------------------------------

    fn dispatch_due(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let now = self.shared.clock.now();
        while self.active_messages < self.shared.limits.max_active_messages {
            let Some((id, idle)) = self.index.pop_due(now) else {
                break;
            };
            let unsaved = idle.unsaved.as_deref().cloned();
            self.messages
                .insert(id, Entry::from_idle(idle, Phase::Preparing));
            self.active_messages += 1;
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let p = tasks::prepare(&shared, id, unsaved).await;
                shared.send(Command::Prepared(id, p));
            });
        }
        self.claim_more(now);
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
                self.back_to_idle(id, now + BUSY_RETRY, false);
                self.resolve_flush(id, |s| s.busy += 1);
            }
            Prepared::Gone => {
                self.drop_body(id);
                self.forget(id);
                self.active_messages -= 1;
                self.resolve_flush(id, |s| s.completed += 1);
            }
            Prepared::Held(state) => {
                e.unsaved = None;
                self.back_to_idle(id, state.next_attempt, true);
                self.resolve_flush(id, |s| s.held += 1);
            }
            Prepared::Failed(err) => {
                tracing::error!(target: "postrider::engine", "{id}: cannot load from the spool: {err}");
                let unsaved = e.unsaved.is_some();
                self.back_to_idle(id, now + self.shared.retry.initial, false);
                self.resolve_flush(id, |s| s.unrecorded += usize::from(unsaved));
            }
            Prepared::Ready {
                claim,
                envelope,
                state,
                routes,
            } => {
                e.unsaved = None;
                if self.draining.is_some() {
                    drop(claim);
                    self.back_to_idle(id, state.next_attempt, state.held);
                    return;
                }
                e.keys = self.index.symbols.keys(&envelope, &state);
                e.size = state.size;
                let forced = e.forced;
                let body = e.body.clone();
                e.phase = Phase::Active(Active {
                    claim,
                    envelope: envelope.clone(),
                    state,
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

    /// Ends an attempt that did not happen: back to the index (or the spool), no longer
    /// active.
    fn back_to_idle(&mut self, id: QueueId, next_attempt: SystemTime, held: bool) {
        self.active_messages -= 1;
        self.set_idle(id, next_attempt, held);
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
            let hop = match r.agent {
                Agent::Local => "local",
                _ => "error",
            };
            crate::metrics::outcome(&r.outcome, hop);
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
