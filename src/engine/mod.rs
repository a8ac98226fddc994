//! The queue engine: submit, schedule, deliver, retry, bounce, and let an administrator steer.
//!
//! The engine knows its parts only by their traits: a [`Spool`], a [`Router`] and a
//! [`Transport`] per kind of route (and the [`Resolver`](crate::Resolver) inside a transport).
//! [`config`](crate::config) builds the usual ones from a `postrider.toml`; any others fit:
//!
//! ```no_run
//! use std::sync::Arc;
//! use postrider::engine::Engine;
//! use postrider::{Address, Envelope, ReversePath, Router, Spool, Transport};
//! # async fn run(
//! #     spool: Arc<dyn Spool>,
//! #     router: Arc<dyn Router>,
//! #     smtp: Arc<dyn Transport>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder()
//!     .hostname("pbx.example.com".parse()?)
//!     .spool(spool)
//!     .router(router)
//!     .transport(smtp) // relay routes; .local_transport(...) for local ones
//!     .start()
//!     .await?;
//! let envelope = Envelope::new(
//!     ReversePath::parse("pbx@example.com")?,
//!     [Address::parse("alice@example.org")?],
//! );
//! // Returns once the message is on disk and would survive a power cut.
//! let id = engine
//!     .submit(envelope, "Subject: voicemail\r\n\r\nYou have a new message.\r\n")
//!     .await?;
//! println!("queued as {id}");
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
mod bounce;
pub mod clock;
mod command;
mod delivery;
pub mod events;
mod finalize;
mod hosts;
pub mod mailq;
pub mod retry;
mod scheduler;
pub mod scoped;
mod submit;
mod tasks;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::address::Domain;
use crate::dkim::{MessageSigner, SignError};
use crate::envelope::{BodyType, Envelope, EnvelopeError};
use crate::queue_id::QueueId;
use crate::route::Router;
use crate::spool::{MessageState, Quarantined, ScanReport, Scheduling, Spool, SpoolError};
use crate::status::Severity;
use crate::transport::{DEFAULT_DESTINATION_CONCURRENCY, Transport};

pub use admin::{FlushFilter, FlushSummary, QueueEntry, RecipientEntry};
pub use clock::Clock;
pub use events::{Agent, DeliveryEvent};
pub use retry::RetryPolicy;

use command::{AdminOp, Command};
use scheduler::{Recovered, Scheduler};

/// Size and concurrency limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The largest message accepted, in octets after line-ending normalisation
    /// (Postfix's `message_size_limit` default: 10,240,000).
    pub max_message_size: usize,
    /// The most recipients one message may have.
    pub max_recipients: usize,
    /// Deliveries (transport calls) running at once, over all next hops.
    pub max_deliveries: usize,
    /// Deliveries running at once to one next hop (Postfix's destination concurrency).
    pub max_deliveries_per_hop: usize,
    /// Messages carried by one transport call (one connection) at most.
    pub max_batch_messages: usize,
    /// Messages being attempted at once (each holds a claim, i.e. an open file).
    pub max_active_messages: usize,
    /// How often to re-read the spool for messages queued or removed by other processes
    /// (a `sendmail` command beside a daemon); `None` never does.
    pub queue_scan_interval: Option<Duration>,
    /// How long `shutdown` lets running deliveries finish before interrupting them.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 10_240_000,
            max_recipients: 1000,
            max_deliveries: 100,
            max_deliveries_per_hop: DEFAULT_DESTINATION_CONCURRENCY,
            max_batch_messages: 50,
            max_active_messages: 1000,
            queue_scan_interval: Some(Duration::from_secs(300)),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Why a message was not accepted by [`Engine::submit`]. When `submit` fails, the message is
/// NOT queued: the caller still owns it.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The envelope is unusable (no recipients, bad ENVID).
    #[error("message refused: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The message is larger than [`Limits::max_message_size`].
    #[error("message refused: {size} octets is over the size limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More recipients than [`Limits::max_recipients`].
    #[error("message refused: {count} recipients is over the limit of {limit}")]
    TooManyRecipients {
        /// How many were given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The spool could not store it (full disk, read-only spool, ...).
    #[error("message not queued: {0}")]
    Spool(#[from] SpoolError),
    /// The engine is shutting down.
    #[error("message not queued: the engine is shutting down")]
    ShuttingDown,
    /// The signer (DKIM) failed.
    #[error("message not queued: {0}")]
    Signing(#[from] SignError),
}

impl SubmitError {
    /// Temporary (retry the submission later) or permanent (fix the message).
    pub fn severity(&self) -> Severity {
        match self {
            SubmitError::Spool(e) => e.severity(),
            SubmitError::ShuttingDown => Severity::Temporary,
            SubmitError::Signing(e) => e.severity(),
            _ => Severity::Permanent,
        }
    }
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such message in this engine's queue.
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// Another engine or process is delivering the message right now; try again shortly.
    #[error("message {0} is being delivered by another process; try again shortly")]
    Busy(QueueId),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The engine was built without a required part.
    #[error("engine not configured: {0}")]
    Config(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

impl EngineError {
    /// Temporary or permanent.
    pub fn severity(&self) -> Severity {
        match self {
            EngineError::Busy(_) | EngineError::Stopped => Severity::Temporary,
            EngineError::Spool(e) => e.severity(),
            EngineError::NotFound(_) | EngineError::Config(_) => Severity::Permanent,
        }
    }
}

/// What `start` found in the spool.
#[derive(Debug, Clone, Default)]
pub struct StartupReport {
    /// Messages recovered and scheduled (0 for a shared queue, which is not read at start:
    /// see [`Scheduling::Batches`]).
    pub recovered: usize,
    /// Unreadable records set aside (see the spool's `corrupt/` directory).
    pub quarantined: Vec<Quarantined>,
    /// Leftovers of interrupted submissions that were cleaned up.
    pub orphans_removed: usize,
}

/// The parts shared by the engine handle, the scheduler and its tasks.
pub(crate) struct Shared {
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) router: Arc<dyn Router>,
    /// Delivers `Route::Relay` routes.
    pub(crate) relay: Arc<dyn Transport>,
    /// Delivers `Route::Local` routes, when configured.
    pub(crate) local: Option<Arc<dyn Transport>>,
    /// The engine is shutting down: transports start no new message.
    pub(crate) draining: AtomicBool,
    pub(crate) hostname: Domain,
    pub(crate) retry: RetryPolicy,
    pub(crate) limits: Limits,
    pub(crate) clock: Clock,
    pub(crate) signer: Option<Arc<dyn MessageSigner>>,
    events: broadcast::Sender<DeliveryEvent>,
    tx: mpsc::UnboundedSender<Command>,
}

impl Shared {
    /// Tells the scheduler; a stopped scheduler has nothing left to tell.
    pub(crate) fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }

    /// Logs the event as the sendmail-style line and broadcasts it.
    pub(crate) fn emit(&self, event: DeliveryEvent) {
        match &event.outcome {
            crate::status::Outcome::Delivered { .. } => {
                tracing::info!(target: "postrider::delivery", "{}", event.log_line())
            }
            _ => tracing::warn!(target: "postrider::delivery", "{}", event.log_line()),
        }
        if let Some(note) = &event.note {
            tracing::warn!(target: "postrider::delivery", "{}: to=<{}>: {note}", event.id, event.recipient);
        }
        let _ = self.events.send(event);
    }

    /// Makes a prepared message durable and schedules it. `parent` is the message whose
    /// attempt caused this one (a DSN, a forwarded copy): a flush waiting for the parent waits
    /// for this one's first attempt too, so `sendmail -q` sends the bounce it made.
    pub(crate) async fn enqueue(
        &self,
        envelope: Envelope,
        body: Bytes,
        parent: Option<QueueId>,
    ) -> Result<QueueId, SpoolError> {
        let arrival = self.clock.now();
        let started = std::time::Instant::now();
        let inserted = self
            .spool
            .insert_claimed(&envelope, body.clone(), arrival)
            .await;
        crate::metrics::submitted(inserted.is_ok(), started.elapsed());
        let (id, claim) = inserted?;
        let state = MessageState::new(&envelope, body.len() as u64, arrival);
        self.send(Command::Submitted {
            id,
            parent,
            envelope,
            state,
            fresh: claim.map(|claim| command::Fresh { claim, body }),
        });
        Ok(id)
    }
}

struct Handle {
    shared: Arc<Shared>,
    startup: StartupReport,
    closing: std::sync::atomic::AtomicBool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The last engine handle is gone: let running deliveries finish, then stop.
        self.shared.send(Command::Shutdown(None));
    }
}

/// A running queue engine. Cheap to clone; every clone drives the same queue. When the last
/// clone is dropped the engine shuts down as if [`Engine::shutdown`] had been called.
#[derive(Clone)]
pub struct Engine {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("hostname", &self.handle.shared.hostname)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Engine`] from its parts: a [`Spool`], a [`Router`], a [`Transport`] for each
/// kind of route it should deliver, and this host's name (used in DSNs). The engine knows only
/// these traits; [`config`](crate::config) builds them from a `postrider.toml`.
#[derive(Default)]
pub struct EngineBuilder {
    spool: Option<Arc<dyn Spool>>,
    router: Option<Arc<dyn Router>>,
    transport: Option<Arc<dyn Transport>>,
    local: Option<Arc<dyn Transport>>,
    hostname: Option<Domain>,
    retry: RetryPolicy,
    limits: Limits,
    clock: Option<Clock>,
    signer: Option<Arc<dyn MessageSigner>>,
}

impl EngineBuilder {
    /// Where messages are kept.
    pub fn spool(mut self, spool: Arc<dyn Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Where each recipient goes.
    pub fn router(mut self, router: Arc<dyn Router>) -> Self {
        self.router = Some(router);
        self
    }

    /// How `Route::Relay` mail is delivered (the SMTP client of [`transport`](crate::transport),
    /// or any other [`Transport`]).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// How `Route::Local` mail is delivered. Without one, mail for local domains fails with a
    /// DSN that says local delivery is not configured.
    pub fn local_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.local = Some(transport);
        self
    }

    /// This host's fully qualified name.
    pub fn hostname(mut self, hostname: Domain) -> Self {
        self.hostname = Some(hostname);
        self
    }

    /// The retry schedule and queue lifetimes.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Size and concurrency limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The clock (tests use [`Clock::tokio`] with a paused runtime).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Signs every submitted message before it is queued (DKIM: [`crate::dkim::DkimSigner`]).
    /// Without one, messages are queued as submitted.
    pub fn signer(mut self, signer: Arc<dyn MessageSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Recovers every message in the spool, schedules it, and starts the engine.
    pub async fn start(self) -> Result<Engine, EngineError> {
        let missing = |what: &str| EngineError::Config(format!("no {what} given to the builder"));
        let spool = self.spool.ok_or_else(|| missing("spool"))?;
        let router = self.router.ok_or_else(|| missing("router"))?;
        let hostname = self.hostname.ok_or_else(|| missing("hostname"))?;
        let relay = self
            .transport
            .ok_or_else(|| missing("transport for relay routes"))?;
        crate::metrics::describe();
        // A shared queue is not read at start: its due work is taken in batches.
        let mut recovered = Recovered::default();
        let scan = match spool.scheduling() {
            Scheduling::Index => spool.scan_each(&mut |m| recovered.learn(m)).await?,
            Scheduling::Batches => ScanReport::default(),
        };
        for q in &scan.quarantined {
            tracing::error!(
                target: "postrider::spool",
                "unreadable queue record moved to {}: {} (inspect it, then delete or repair it)",
                q.path.display(),
                q.reason
            );
        }
        let startup = StartupReport {
            recovered: recovered.len(),
            quarantined: scan.quarantined,
            orphans_removed: scan.orphans_removed,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            spool,
            router,
            relay,
            local: self.local,
            draining: AtomicBool::new(false),
            hostname,
            retry: self.retry,
            limits: self.limits,
            clock: self.clock.unwrap_or_default(),
            signer: self.signer,
            events,
            tx,
        });
        match shared.spool.scheduling() {
            Scheduling::Index => tracing::info!(
                target: "postrider::engine",
                "queue engine started on {}: {} message(s) recovered",
                shared.hostname,
                startup.recovered
            ),
            Scheduling::Batches => tracing::info!(
                target: "postrider::engine",
                "queue engine started on {}: shared queue, due work taken in batches",
                shared.hostname
            ),
        }
        let scheduler = Scheduler::new(shared.clone(), rx, recovered);
        if startup.recovered > 0 {
            return_freed_memory();
        }
        tokio::spawn(scheduler.run());
        Ok(Engine {
            handle: Arc::new(Handle {
                shared,
                startup,
                closing: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Validates a message, makes it durable and schedules it. Returns the queue id once the
    /// spool holds it safely (the moment an MTA says `250 OK`). Line endings are normalised to
    /// CRLF; the [signer](EngineBuilder::signer), if any, signs; `BODY=8BITMIME` and SMTPUTF8
    /// are set when the message needs them.
    pub async fn submit(
        &self,
        mut envelope: Envelope,
        body: impl Into<Bytes>,
    ) -> Result<QueueId, SubmitError> {
        let shared = &self.handle.shared;
        if self
            .handle
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(SubmitError::ShuttingDown);
        }
        envelope.validate()?;
        let limits = &shared.limits;
        if envelope.recipients.len() > limits.max_recipients {
            return Err(SubmitError::TooManyRecipients {
                count: envelope.recipients.len(),
                limit: limits.max_recipients,
            });
        }
        let body = submit::normalize_line_endings(body.into());
        if body.len() > limits.max_message_size {
            return Err(SubmitError::TooLarge {
                size: body.len(),
                limit: limits.max_message_size,
            });
        }
        let body = match &shared.signer {
            Some(signer) => signer.sign(&envelope, body)?,
            None => body,
        };
        if submit::has_8bit(&body) {
            envelope.body = BodyType::EightBitMime;
        }
        envelope.smtputf8 = envelope.needs_smtputf8();
        let id = shared.enqueue(envelope, body, None).await?;
        tracing::debug!(target: "postrider::engine", "{id}: queued");
        Ok(id)
    }

    /// Every message in the queue, oldest first, as `mailq` shows it, read from the spool (a
    /// shared queue: the whole cluster's). For a large queue prefer [`Engine::list_page`].
    pub async fn list(&self) -> Result<Vec<QueueEntry>, EngineError> {
        Ok(self.list_page(None, usize::MAX).await?.0)
    }

    /// One page of the queue in id (arrival) order: up to `limit` messages after `after`
    /// (`None`: from the start), and where the next page starts (`None` after the last).
    /// A message is in flight when this engine is working on it or another engine holds its
    /// lease.
    pub async fn list_page(
        &self,
        after: Option<QueueId>,
        limit: usize,
    ) -> Result<(Vec<QueueEntry>, Option<QueueId>), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.handle.shared.send(Command::InFlight(tx));
        let in_flight = rx.await.map_err(|_| EngineError::Stopped)?;
        let page = self.handle.shared.spool.list(after, limit).await?;
        let entries = page
            .messages
            .iter()
            .map(|listed| {
                let m = &listed.message;
                let busy = listed.lease.is_some() || in_flight.contains(&m.id);
                QueueEntry::new(m.id, &m.envelope, &m.state, busy)
            })
            .collect();
        Ok((entries, page.next))
    }

    /// Tries every matching message now, ignoring backoff and host status (`sendmail -q
    /// -OTimeout.hoststatus=0m`, `postqueue -f`): what the engine knows at once, and what a
    /// rescan of the spool finds (messages other processes queued). Returns when every matched
    /// message's attempt has ended. With a shared queue ([`Scheduling::Batches`]) it reads the
    /// whole queue through the spool, makes the matching messages due, and counts those
    /// another engine attempts as `busy`.
    pub async fn flush(&self, filter: FlushFilter) -> Result<FlushSummary, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.handle.shared.send(Command::Flush(filter, tx));
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Holds a message: it stays queued but is not delivered until released.
    pub async fn hold(&self, id: &QueueId) -> Result<(), EngineError> {
        self.admin(AdminOp::Hold, id).await
    }

    /// Releases a held message and makes it due now.
    pub async fn release(&self, id: &QueueId) -> Result<(), EngineError> {
        self.admin(AdminOp::Release, id).await
    }

    /// Deletes a message without delivering it or telling the sender.
    pub async fn delete(&self, id: &QueueId) -> Result<(), EngineError> {
        self.admin(AdminOp::Delete, id).await
    }

    async fn admin(&self, op: AdminOp, id: &QueueId) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.handle.shared.send(Command::Admin(op, *id, tx));
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// A stream of [`DeliveryEvent`]s, one per recipient attempt. A receiver that falls more
    /// than 4096 events behind loses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryEvent> {
        self.handle.shared.events.subscribe()
    }

    /// This host's name as the engine uses it.
    pub fn hostname(&self) -> &Domain {
        &self.handle.shared.hostname
    }

    /// What `start` recovered from the spool.
    pub fn startup_report(&self) -> &StartupReport {
        &self.handle.startup
    }

    /// Stops taking new messages, lets running deliveries finish (for at most
    /// [`Limits::shutdown_grace`], then interrupts them and keeps their recipients queued),
    /// records every outcome, and returns when the engine has stopped.
    pub async fn shutdown(&self) {
        self.handle
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        let (tx, rx) = oneshot::channel();
        self.handle.shared.send(Command::Shutdown(Some(tx)));
        let _ = rx.await;
    }
}

/// Hands the pages the start-up scan used back to the system. The scan reads every message in
/// full (about 900 octets each) and the index keeps a fifth of that; the allocator keeps the
/// freed rest mapped, so a queue of 100,000 would cost the process some 90 MiB it never uses
/// again.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it takes no pointers and has
    // no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
