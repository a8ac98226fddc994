//! A MemorySpool that answers like a spool several engines share (`Scheduling::Batches`), for
//! the engine's batch scheduling on tokio's paused clock. The test plays the other engines:
//! it inserts messages behind the engine's back, sends wake-ups, and takes messages over (a
//! claim that returns `None`, a write fenced with `LeaseLost`). Due work, `next_due`, `list`
//! and `admin` are the trait's defaults over the memory spool, as a third-party spool gets.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use postrider::spool::{
    Claim, ClaimedMessage, MemorySpool, MessageState, QueuedMessage, ScanReport, Scheduling, Spool,
    SpoolError, Wakeups,
};
use postrider::{Envelope, QueueId};
use tokio::sync::broadcast;

pub struct SharedSpool {
    pub inner: MemorySpool,
    wake: broadcast::Sender<SystemTime>,
    /// Messages another engine holds: `claim` says so.
    pub foreign: Mutex<HashSet<QueueId>>,
    /// Messages another engine takes over when this one writes their outcome.
    pub steal_on_write: Mutex<HashSet<QueueId>>,
    /// Every `claim_due` limit asked for, and how many messages each returned.
    pub batches: Mutex<Vec<(usize, usize)>>,
    pub scans: AtomicUsize,
    pub next_dues: AtomicUsize,
    /// `claim` calls by id (not through `claim_due`) for messages another engine holds.
    pub foreign_claims: AtomicUsize,
}

impl SharedSpool {
    pub fn new() -> SharedSpool {
        SharedSpool {
            inner: MemorySpool::new(),
            wake: broadcast::channel(64).0,
            foreign: Mutex::new(HashSet::new()),
            steal_on_write: Mutex::new(HashSet::new()),
            batches: Mutex::new(Vec::new()),
            scans: AtomicUsize::new(0),
            next_dues: AtomicUsize::new(0),
            foreign_claims: AtomicUsize::new(0),
        }
    }

    /// What another engine's `NOTIFY` would say: work is due at `at`.
    pub fn wake(&self, at: SystemTime) {
        let _ = self.wake.send(at);
    }

    pub fn batches(&self) -> Vec<(usize, usize)> {
        self.batches.lock().unwrap().clone()
    }

    async fn try_claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        if self.foreign.lock().unwrap().contains(id) {
            return Ok(None);
        }
        self.inner.claim(id).await
    }

    fn stolen(&self, id: &QueueId) -> bool {
        if self.steal_on_write.lock().unwrap().remove(id) {
            self.foreign.lock().unwrap().insert(*id);
            return true;
        }
        false
    }
}

#[async_trait]
impl Spool for SharedSpool {
    async fn insert(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<QueueId, SpoolError> {
        self.inner.insert(envelope, body, arrival).await
    }

    async fn insert_claimed(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Option<Claim>), SpoolError> {
        self.inner.insert_claimed(envelope, body, arrival).await
    }

    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        self.inner.body(id).await
    }

    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        self.inner.load(id).await
    }

    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        if self.stolen(id) {
            return Err(SpoolError::LeaseLost { id: *id });
        }
        self.inner.save_state(id, state).await
    }

    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        if self.stolen(id) {
            return Err(SpoolError::LeaseLost { id: *id });
        }
        self.inner.remove(id).await
    }

    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inner.scan().await
    }

    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        if self.foreign.lock().unwrap().contains(id) {
            self.foreign_claims.fetch_add(1, Ordering::SeqCst);
        }
        self.try_claim(id).await
    }

    fn scheduling(&self) -> Scheduling {
        Scheduling::Batches
    }

    async fn claim_due(
        &self,
        due_by: SystemTime,
        limit: usize,
    ) -> Result<Vec<ClaimedMessage>, SpoolError> {
        // The trait's default, through this spool's claim (which knows the foreign ones).
        let mut due: Vec<QueuedMessage> = self
            .inner
            .scan()
            .await?
            .messages
            .into_iter()
            .filter(|m| !m.state.held && m.state.next_attempt <= due_by)
            .collect();
        due.sort_by_key(|m| (m.state.next_attempt, m.id));
        let mut out = Vec::new();
        for m in due {
            if out.len() >= limit {
                break;
            }
            if let Some(claim) = self.try_claim(&m.id).await? {
                out.push(ClaimedMessage { message: m, claim });
            }
        }
        self.batches.lock().unwrap().push((limit, out.len()));
        Ok(out)
    }

    async fn next_due(&self) -> Result<Option<SystemTime>, SpoolError> {
        self.next_dues.fetch_add(1, Ordering::SeqCst);
        let foreign = self.foreign.lock().unwrap().clone();
        Ok(self
            .inner
            .scan()
            .await?
            .messages
            .iter()
            .filter(|m| !m.state.held && !foreign.contains(&m.id))
            .map(|m| m.state.next_attempt)
            .min())
    }

    fn wakeups(&self) -> Option<Wakeups> {
        Some(Wakeups::new(self.wake.subscribe()))
    }
}
