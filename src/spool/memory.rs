//! An in-memory spool: for tests, and for embedders that accept losing the queue on restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Claim, MessageState, QueuedMessage, ScanReport, Spool, SpoolError};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;

#[derive(Default)]
struct Inner {
    messages: BTreeMap<QueueId, (Envelope, MessageState, Bytes)>,
    claimed: HashSet<QueueId>,
}

/// A spool that keeps everything in memory. Nothing survives the process.
///
/// Clones share the same storage, so a test can hand one clone to an engine and inspect
/// another.
#[derive(Clone, Default)]
pub struct MemorySpool {
    inner: Arc<Mutex<Inner>>,
}

impl MemorySpool {
    /// An empty spool.
    pub fn new() -> MemorySpool {
        MemorySpool::default()
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// True when it holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated (every update is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct MemoryClaim {
    spool: MemorySpool,
    id: QueueId,
}

impl Drop for MemoryClaim {
    fn drop(&mut self) {
        self.spool.lock().claimed.remove(&self.id);
    }
}

impl MemorySpool {
    /// Stores a new message, `claimed` in the same step (under one lock, so nobody can claim
    /// it in between).
    fn store(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
        claimed: bool,
    ) -> QueueId {
        let id = QueueId::generate();
        let state = MessageState::new(envelope, body.len() as u64, arrival);
        let mut inner = self.lock();
        inner.messages.insert(id, (envelope.clone(), state, body));
        if claimed {
            inner.claimed.insert(id);
        }
        id
    }
}

#[async_trait]
impl Spool for MemorySpool {
    async fn insert(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<QueueId, SpoolError> {
        Ok(self.store(envelope, body, arrival, false))
    }

    async fn insert_claimed(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Option<Claim>), SpoolError> {
        let id = self.store(envelope, body, arrival, true);
        let claim = Claim::new(MemoryClaim {
            spool: self.clone(),
            id,
        });
        Ok((id, Some(claim)))
    }

    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        self.lock()
            .messages
            .get(id)
            .map(|(_, _, b)| b.clone())
            .ok_or(SpoolError::NotFound(*id))
    }

    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        self.lock()
            .messages
            .get(id)
            .map(|(e, s, _)| QueuedMessage {
                id: *id,
                envelope: e.clone(),
                state: s.clone(),
            })
            .ok_or(SpoolError::NotFound(*id))
    }

    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        match self.lock().messages.get_mut(id) {
            Some(entry) => {
                let (want, have) = (entry.0.recipients.len(), state.recipients.len());
                if want != have {
                    // As FsSpool: a state that does not fit its envelope is refused.
                    return Err(SpoolError::InvalidState {
                        id: *id,
                        reason: format!(
                            "it has {have} recipient states for {want} envelope recipients"
                        ),
                    });
                }
                entry.1 = state.clone();
                Ok(())
            }
            None => Err(SpoolError::NotFound(*id)),
        }
    }

    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.lock()
            .messages
            .remove(id)
            .map(|_| ())
            .ok_or(SpoolError::NotFound(*id))
    }

    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        let messages = self
            .lock()
            .messages
            .iter()
            .map(|(id, (e, s, _))| QueuedMessage {
                id: *id,
                envelope: e.clone(),
                state: s.clone(),
            })
            .collect();
        Ok(ScanReport {
            messages,
            ..ScanReport::default()
        })
    }

    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        let mut inner = self.lock();
        if !inner.messages.contains_key(id) {
            return Err(SpoolError::NotFound(*id));
        }
        if !inner.claimed.insert(*id) {
            return Ok(None);
        }
        Ok(Some(Claim::new(MemoryClaim {
            spool: self.clone(),
            id: *id,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, ReversePath};

    fn envelope() -> Envelope {
        Envelope::new(
            ReversePath::Null,
            [Address::parse("a@b.example").expect("test address")],
        )
    }

    #[tokio::test]
    async fn inserted_messages_are_scanned_loaded_and_removed() {
        let spool = MemorySpool::new();
        let id = spool
            .insert(
                &envelope(),
                Bytes::from_static(b"hi\r\n"),
                SystemTime::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            spool.body(&id).await.unwrap(),
            Bytes::from_static(b"hi\r\n")
        );
        let scan = spool.scan().await.unwrap();
        assert_eq!(scan.messages.len(), 1);
        assert_eq!(scan.messages[0].state.size, 4);
        let mut state = spool.load(&id).await.unwrap().state;
        state.held = true;
        spool.save_state(&id, &state).await.unwrap();
        assert!(spool.load(&id).await.unwrap().state.held);
        spool.remove(&id).await.unwrap();
        assert!(matches!(
            spool.body(&id).await,
            Err(SpoolError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_message_inserted_claimed_cannot_be_claimed_until_released() {
        let spool = MemorySpool::new();
        let (id, claim) = spool
            .insert_claimed(&envelope(), Bytes::new(), SystemTime::now())
            .await
            .unwrap();
        assert!(claim.is_some());
        assert!(spool.claim(&id).await.unwrap().is_none());
        drop(claim);
        assert!(spool.claim(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_claim_excludes_a_second_claim_until_dropped() {
        let spool = MemorySpool::new();
        let id = spool
            .insert(&envelope(), Bytes::new(), SystemTime::now())
            .await
            .unwrap();
        let first = spool.claim(&id).await.unwrap();
        assert!(first.is_some());
        assert!(spool.claim(&id).await.unwrap().is_none());
        drop(first);
        assert!(spool.claim(&id).await.unwrap().is_some());
    }
}
