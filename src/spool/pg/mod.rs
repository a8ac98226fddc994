//! The PostgreSQL spool (cargo feature `postgres`): several engines, on several machines, share
//! one queue, and a dead node strands nothing.
//!
//! Each message is a row of `postrider_messages` (the delivery state and the lease) and a row
//! of `postrider_contents` (envelope and body, written once); see [`schema`] for the tables
//! and their migrations. The invariants:
//!
//! - **insert** is one statement (both rows, and a `NOTIFY` for an unclaimed one) committed
//!   with the server's `synchronous_commit` before the id is returned. Any failure, including
//!   a connection lost while the commit was under way, is an error, never an id: the sender
//!   retries, so at worst a message is queued twice, never lost.
//! - **claim** is a lease, not a lock held across the delivery: one `UPDATE` takes a message
//!   whose lease is free or over, raises its `generation` and leases it to this node until
//!   `now() + lease` (the server's clock, the one every node agrees on). The node renews all
//!   its leases every third of the lease in one statement and releases a lease when the
//!   [`Claim`] drops. A node that dies stops renewing; when its leases end, any node takes its
//!   messages over. Batches of due work are taken with `FOR UPDATE SKIP LOCKED`, so engines
//!   asking at once get disjoint batches without waiting for each other.
//! - **save_state** and **remove** by the claim's holder are fenced: they apply only if the row
//!   still carries the claim's generation (see `lease.rs`), so a node that comes back after its
//!   lease ran out cannot overwrite the state written by the node that took over. Without a
//!   claim they apply only to a message nobody holds.
//! - **admin** works on the whole queue from any node: on a message nobody holds it applies at
//!   once; on one being delivered it is recorded and applied by the holder with its outcome
//!   (see `request.rs`).
//! - While PostgreSQL is down or restarting every operation fails with a temporary
//!   [`SpoolError::Database`]; the pool drops broken connections and makes new ones, so the
//!   spool recovers on its own. No operation waits longer than the configured timeout.
//!
//! ```no_run
//! use postrider::spool::pg::{PgSpool, PgSpoolConfig};
//! use postrider::spool::Spool;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config: PgSpoolConfig = "postgresql://postrider@db.example.com/postrider?sslmode=require".parse()?;
//! let spool = PgSpool::connect(&config).await?; // creates or migrates the schema
//! let due = spool.claim_due(std::time::SystemTime::now(), 50).await?;
//! # Ok(()) }
//! ```

pub mod config;
mod error;
mod lease;
mod listen;
mod queue;
mod request;
pub mod schema;
mod state;
mod tls;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use config::{PgConfigError, PgSpoolConfig};
pub use error::{PgError, describe as describe_error};

use super::{
    AdminAction, AdminOutcome, Claim, ClaimedMessage, Lease, ListedMessage, MessageState,
    QueuePage, QueuedMessage, ScanReport, Spool, SpoolError, Wakeups,
};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::spool::Quarantined;
use error::{db, pool as pool_error};
use lease::{LeaseGuard, Leases};
use request::Request;

/// How many ids an insert tries when another node generated the same id (astronomically rare).
const INSERT_ATTEMPTS: usize = 4;

/// A [`Spool`] on PostgreSQL, shared by every engine that connects to the same database.
///
/// Cheap to clone: clones share the pool, the leases and the wake-up connection. Build it
/// inside the tokio runtime that uses it (its background tasks run there).
#[derive(Clone)]
pub struct PgSpool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSpool")
            .field("node", &self.inner.node)
            .field("lease", &self.inner.lease)
            .finish_non_exhaustive()
    }
}

/// The parts shared by the clones, the claims and the background tasks.
pub(crate) struct Inner {
    pool: Pool,
    node: String,
    pub(crate) lease: Duration,
    timeout: Duration,
    pub(crate) leases: Leases,
    pub(crate) runtime: tokio::runtime::Handle,
    connection: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    wake: broadcast::Sender<SystemTime>,
    /// Due times to `NOTIFY` the other nodes of, sent by one task outside the writers'
    /// transactions.
    notifier: mpsc::UnboundedSender<SystemTime>,
    /// The renewal and notifying tasks, and the wake-up listener once somebody asked for wake-ups.
    tasks: Mutex<Vec<AbortHandle>>,
    listening: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}

impl PgSpool {
    /// Connects, creates or migrates the schema, and starts renewing leases.
    ///
    /// Fails with a temporary [`SpoolError::Database`] when the server cannot be reached (try
    /// again later) and a permanent one when it refuses us or holds a newer schema.
    pub async fn connect(config: &PgSpoolConfig) -> Result<PgSpool, SpoolError> {
        let tls = tls::connector(config.ca_file.as_deref()).map_err(|e| e.during("open"))?;
        let mut connection = config.connection.clone();
        if connection.get_connect_timeout().is_none() {
            connection.connect_timeout(config.timeout);
        }
        if connection.get_application_name().is_none() {
            connection.application_name("postrider");
        }
        let manager = Manager::from_config(
            connection.clone(),
            tls.clone(),
            ManagerConfig {
                // A connection the server closed is noticed by its task: no query per checkout.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .build()
            .map_err(|e| SpoolError::Database {
                op: "open",
                severity: crate::status::Severity::Permanent,
                source: Box::new(e),
            })?;
        let mut client = pool.get().await.map_err(pool_error("open"))?;
        schema::migrate(&mut client).await?;
        drop(client);
        let (wake, _) = broadcast::channel(1024);
        let (notifier, notifications) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool,
            node: config.node_name(),
            lease: config.lease,
            timeout: config.timeout,
            leases: Leases::default(),
            runtime: tokio::runtime::Handle::current(),
            connection,
            tls,
            wake,
            notifier,
            tasks: Mutex::new(Vec::new()),
            listening: std::sync::atomic::AtomicBool::new(false),
        });
        let renewer = tokio::spawn(lease::renew_forever(
            Arc::downgrade(&inner),
            config.lease / 3,
        ));
        inner.push_task(renewer.abort_handle());
        let notifying = tokio::spawn(listen::notify_forever(inner.pool.clone(), notifications));
        inner.push_task(notifying.abort_handle());
        Ok(PgSpool { inner })
    }

    /// The name this node's leases carry.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The schema version in the database.
    pub async fn schema_version(&self) -> Result<i32, SpoolError> {
        let client = self.inner.client("read schema version").await?;
        self.inner
            .timed("read schema version", schema::version(&client))
            .await
    }

    /// How many messages the whole queue holds (for tests and monitoring).
    pub async fn count(&self) -> Result<u64, SpoolError> {
        let row = self
            .inner
            .query_one(
                "count messages",
                "SELECT count(*) FROM postrider_messages",
                &[],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

/// Where a row is named in errors and quarantine reports.
fn row_path(id: &str) -> PathBuf {
    PathBuf::from(format!("postgresql:postrider_messages/{id}"))
}

fn corrupt(id: &str, what: &str, e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Corrupt {
        path: row_path(id),
        reason: format!("its {what} is unreadable: {e}"),
    }
}

fn parse_id(id: &str) -> Result<QueueId, SpoolError> {
    QueueId::parse(id).map_err(|e| corrupt(id, "id", e))
}

fn parse_state(id: &str, json: &str) -> Result<MessageState, SpoolError> {
    serde_json::from_str(json).map_err(|e| corrupt(id, "state", e))
}

fn parse_envelope(id: &str, json: &str) -> Result<Envelope, SpoolError> {
    serde_json::from_str(json).map_err(|e| corrupt(id, "envelope", e))
}

/// A row with columns `id, envelope::text, state::text, admin_request, admin_at` (in that
/// order from `first`), as the message will be once its waiting request is applied; `None`
/// when the request deletes it.
fn message_of(row: &Row, first: usize) -> Result<Option<QueuedMessage>, SpoolError> {
    let id: &str = row.get(first);
    let envelope = parse_envelope(id, row.get(first + 1))?;
    let state = parse_state(id, row.get(first + 2))?;
    let request = Request::from_column(row.get(first + 3));
    let at: Option<SystemTime> = row.get(first + 4);
    let qid = parse_id(id)?;
    Ok(
        request::effective(state, request, at).map(|state| QueuedMessage {
            id: qid,
            envelope,
            state,
        }),
    )
}

const MESSAGE_COLUMNS: &str = "m.id, c.envelope::text, m.state::text, m.admin_request, m.admin_at";

impl Inner {
    fn push_task(&self, task: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Tells the other nodes, soon and coalesced, that a message is due at `due` (a hint:
    /// see [`listen`]).
    fn notify(&self, due: SystemTime) {
        let _ = self.notifier.send(due);
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Runs `fut`, failing with a temporary error after the configured timeout.
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, SpoolError>>,
    ) -> Result<T, SpoolError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(PgError::Timeout(self.timeout).during(op)),
        }
    }

    async fn client(&self, op: &'static str) -> Result<deadpool_postgres::Client, SpoolError> {
        self.pool.get().await.map_err(pool_error(op))
    }

    async fn query(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, SpoolError> {
        self.timed(op, async {
            let client = self.client(op).await?;
            let stmt = client.prepare_cached(sql).await.map_err(db(op))?;
            client.query(&stmt, params).await.map_err(db(op))
        })
        .await
    }

    async fn query_one(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Row, SpoolError> {
        self.timed(op, async {
            let client = self.client(op).await?;
            let stmt = client.prepare_cached(sql).await.map_err(db(op))?;
            client.query_one(&stmt, params).await.map_err(db(op))
        })
        .await
    }

    async fn execute(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, SpoolError> {
        self.timed(op, async {
            let client = self.client(op).await?;
            let stmt = client.prepare_cached(sql).await.map_err(db(op))?;
            client.execute(&stmt, params).await.map_err(db(op))
        })
        .await
    }

    /// Wraps a lease this node just took into a [`Claim`].
    fn claim_of(self: &Arc<Self>, id: QueueId, generation: i64) -> Claim {
        self.leases.hold(id, generation);
        Claim::with_guard(LeaseGuard {
            spool: self.clone(),
            id,
            generation,
        })
    }

    async fn insert(
        self: &Arc<Self>,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
        claimed: bool,
    ) -> Result<(QueueId, Option<Claim>), SpoolError> {
        const SQL: &str = "WITH m AS (
                INSERT INTO postrider_messages
                    (id, generation, lease_owner, lease_until, next_attempt, held, recipients, state)
                VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, false, $6, $7)
            )
            INSERT INTO postrider_contents (id, envelope, body) VALUES ($1, $8, $9)";
        let state = MessageState::new(envelope, body.len() as u64, arrival);
        let recipients = envelope.recipients.len() as i32;
        let (generation, owner, lease) = if claimed {
            (1i64, Some(self.node.as_str()), Some(self.lease_secs()))
        } else {
            (0i64, None, None)
        };
        let mut last = None;
        for _ in 0..INSERT_ATTEMPTS {
            let id = QueueId::generate();
            let result = self
                .execute(
                    "insert",
                    SQL,
                    &[
                        &id.as_str(),
                        &generation,
                        &owner,
                        &lease,
                        &state.next_attempt,
                        &recipients,
                        &Json(&state),
                        &Json(envelope),
                        &body.as_ref(),
                    ],
                )
                .await;
            match result {
                Ok(_) => {
                    if !claimed {
                        self.notify(state.next_attempt);
                    }
                    let claim = claimed.then(|| self.claim_of(id, generation));
                    return Ok((id, claim));
                }
                Err(SpoolError::Database { source, .. })
                    if is_unique_violation(source.as_ref()) =>
                {
                    last = Some(source);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(SpoolError::Database {
            op: "insert (every fresh id was taken)",
            severity: crate::status::Severity::Temporary,
            source: last.unwrap_or_else(|| "no attempt was made".into()),
        })
    }

    async fn claim(self: &Arc<Self>, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        const SQL: &str = "WITH c AS (
                UPDATE postrider_messages
                   SET generation = generation + 1, lease_owner = $2,
                       lease_until = now() + make_interval(secs => $3)
                 WHERE id = $1 AND (lease_until IS NULL OR lease_until <= now())
                RETURNING generation, admin_request)
            SELECT (SELECT generation FROM c), (SELECT admin_request FROM c),
                   EXISTS (SELECT 1 FROM postrider_messages WHERE id = $1)";
        let row = self
            .query_one(
                "claim",
                SQL,
                &[&id.as_str(), &self.node, &self.lease_secs()],
            )
            .await?;
        let generation: Option<i64> = row.get(0);
        let waiting = Request::from_column(row.get(1));
        let exists: bool = row.get(2);
        match generation {
            Some(g) => {
                let claim = self.claim_of(*id, g);
                if waiting.is_some() && !self.apply_waiting(id, g).await? {
                    // The waiting request deleted it.
                    return Err(SpoolError::NotFound(*id));
                }
                Ok(Some(claim))
            }
            None if exists => Ok(None),
            None => Err(SpoolError::NotFound(*id)),
        }
    }

    /// Applies the request waiting on a message this node now holds (its holder died or
    /// released it without writing an outcome). False when the message was deleted.
    async fn apply_waiting(&self, id: &QueueId, generation: i64) -> Result<bool, SpoolError> {
        let stored = self.load(id).await;
        match stored {
            // `load` shows the effective state: write it back under our claim.
            Ok(message) => {
                self.save_state(id, &message.state, Some(generation))
                    .await?;
                Ok(true)
            }
            Err(SpoolError::NotFound(_)) => match self.remove(id, Some(generation)).await {
                Ok(()) | Err(SpoolError::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM postrider_messages m JOIN postrider_contents c \
             USING (id) WHERE m.id = $1"
        );
        let rows = self.query("load", &sql, &[&id.as_str()]).await?;
        match rows.first() {
            Some(row) => message_of(row, 0)?.ok_or(SpoolError::NotFound(*id)),
            None => Err(SpoolError::NotFound(*id)),
        }
    }

    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        let rows = self
            .query(
                "read body",
                "SELECT body FROM postrider_contents WHERE id = $1",
                &[&id.as_str()],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Bytes::from(row.get::<_, Vec<u8>>(0))),
            None => Err(SpoolError::NotFound(*id)),
        }
    }

    /// Ends this node's lease on `id` if `generation` is still current, applying a waiting
    /// request, and tells the other nodes when the message is due.
    pub(crate) async fn release(&self, id: &QueueId, generation: i64) -> Result<(), SpoolError> {
        const SQL: &str = "WITH r AS (
                UPDATE postrider_messages SET lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND generation = $2 AND admin_request IS NULL
                RETURNING next_attempt, held)
            SELECT next_attempt, held FROM r";
        let rows = self
            .query("release lease", SQL, &[&id.as_str(), &generation])
            .await?;
        if let Some(row) = rows.first() {
            if !row.get::<_, bool>(1) {
                self.notify(row.get(0));
            }
            return Ok(());
        }
        // Not released: the message is gone, another node took it over, or a request waits.
        let waiting = self
            .query(
                "release lease",
                "SELECT 1 FROM postrider_messages
                  WHERE id = $1 AND generation = $2 AND admin_request IS NOT NULL",
                &[&id.as_str(), &generation],
            )
            .await?;
        if waiting.is_empty() {
            return Ok(());
        }
        // A request arrived during the attempt and no outcome was written: apply it now,
        // still under our generation, then let go.
        match self.apply_waiting(id, generation).await {
            Ok(true) => {}
            Ok(false) | Err(SpoolError::NotFound(_)) | Err(SpoolError::LeaseLost { .. }) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.execute(
            "release lease",
            "UPDATE postrider_messages SET lease_owner = NULL, lease_until = NULL
              WHERE id = $1 AND generation = $2",
            &[&id.as_str(), &generation],
        )
        .await
        .map(|_| ())
    }

    /// Renews the leases of `ids` (with their generations); returns the ids renewed.
    pub(crate) async fn renew(
        &self,
        ids: &[String],
        generations: &[i64],
    ) -> Result<Vec<String>, SpoolError> {
        const SQL: &str = "UPDATE postrider_messages m
               SET lease_until = now() + make_interval(secs => $3), lease_owner = $4
              FROM unnest($1::text[], $2::bigint[]) AS h(id, generation)
             WHERE m.id = h.id AND m.generation = h.generation
            RETURNING m.id";
        let rows = self
            .query(
                "renew leases",
                SQL,
                &[&ids, &generations, &self.lease_secs(), &self.node],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    fn wakeups(&self) -> Option<Wakeups> {
        let rx = self.wake.subscribe();
        if !self
            .listening
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let task = self.runtime.spawn(listen::listen_forever(
                self.connection.clone(),
                self.tls.clone(),
                self.wake.clone(),
            ));
            self.push_task(task.abort_handle());
        }
        Some(Wakeups::new(rx))
    }
}

/// The TLS connector a connection for `config` uses (the doctor connects outside the pool).
pub fn connector(config: &PgSpoolConfig) -> Result<MakeRustlsConnect, PgError> {
    tls::connector(config.ca_file.as_deref())
}

fn is_unique_violation(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    match e.downcast_ref::<PgError>() {
        Some(PgError::Postgres(e)) => {
            e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        }
        _ => false,
    }
}

#[async_trait]
impl Spool for PgSpool {
    async fn insert(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<QueueId, SpoolError> {
        Ok(self.inner.insert(envelope, body, arrival, false).await?.0)
    }

    async fn insert_claimed(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Option<Claim>), SpoolError> {
        self.inner.insert(envelope, body, arrival, true).await
    }

    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        self.inner.body(id).await
    }

    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        self.inner.load(id).await
    }

    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        let generation = self.inner.leases.generation(id);
        self.inner.save_state(id, state, generation).await
    }

    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let generation = self.inner.leases.generation(id);
        self.inner.remove(id, generation).await?;
        if let Some(g) = generation {
            // Nothing left to release: the claim's drop need not ask the server.
            self.inner.leases.forget(id, g);
        }
        Ok(())
    }

    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        self.inner.scan().await
    }

    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        self.inner.claim(id).await
    }

    fn scheduling(&self) -> super::Scheduling {
        super::Scheduling::Batches
    }

    async fn claim_due(
        &self,
        due_by: SystemTime,
        limit: usize,
    ) -> Result<Vec<ClaimedMessage>, SpoolError> {
        self.inner.claim_due(due_by, limit).await
    }

    async fn next_due(&self) -> Result<Option<SystemTime>, SpoolError> {
        self.inner.next_due().await
    }

    fn wakeups(&self) -> Option<Wakeups> {
        self.inner.wakeups()
    }

    async fn list(&self, after: Option<QueueId>, limit: usize) -> Result<QueuePage, SpoolError> {
        self.inner.list(after, limit).await
    }

    async fn admin(
        &self,
        id: &QueueId,
        action: AdminAction,
        at: SystemTime,
    ) -> Result<AdminOutcome, SpoolError> {
        self.inner.admin(id, action, at).await
    }
}
