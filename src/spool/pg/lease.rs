//! Leases: what this node holds, the guard that releases a lease when a claim drops, and the
//! task that renews every lease of this node in one statement.
//!
//! A claim is a lease in the database (`lease_owner`, `lease_until`) plus a fencing number
//! (`generation`) that every claim raises. The spool remembers, per message, the generation of
//! the claim this node holds, and writes an outcome (`save_state`, `remove`) only if the row
//! still carries it: a node whose lease ran out and whose message another node took over
//! finds a newer generation and gets [`SpoolError::LeaseLost`](crate::spool::SpoolError)
//! instead of overwriting a newer state. The generation is kept until the claim drops, even
//! when a renewal finds the lease lost, so a write after the loss is always fenced.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::Inner;
use crate::queue_id::QueueId;
use crate::spool::ClaimGuard;

/// The generation of every claim this node holds, by message.
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<QueueId, i64>>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<QueueId, i64>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn hold(&self, id: QueueId, generation: i64) {
        self.lock().insert(id, generation);
    }

    /// The generation of this node's claim on `id`, if it holds one.
    pub(crate) fn generation(&self, id: &QueueId) -> Option<i64> {
        self.lock().get(id).copied()
    }

    /// Forgets the claim if it is still the one held; true when it was.
    pub(crate) fn forget(&self, id: &QueueId, generation: i64) -> bool {
        let mut held = self.lock();
        if held.get(id) == Some(&generation) {
            held.remove(id);
            true
        } else {
            false
        }
    }

    fn snapshot(&self) -> (Vec<String>, Vec<i64>) {
        self.lock()
            .iter()
            .map(|(id, g)| (id.as_str().to_string(), *g))
            .unzip()
    }
}

/// The guard inside a [`Claim`](crate::spool::Claim) of a `PgSpool`: dropping it releases the
/// lease (in a task: `Drop` cannot wait), and if that fails the lease simply runs out.
pub(crate) struct LeaseGuard {
    pub(crate) spool: Arc<Inner>,
    pub(crate) id: QueueId,
    pub(crate) generation: i64,
}

impl ClaimGuard for LeaseGuard {
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            if self.spool.leases.forget(&self.id, self.generation)
                && let Err(e) = self.spool.release(&self.id, self.generation).await
            {
                tracing::warn!(target: "postrider::spool",
                    "{}: could not release the lease ({e}); it ends by itself in {:?}",
                    self.id, self.spool.lease);
            }
            // Forgotten above: the drop that follows does nothing.
        })
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.spool.leases.forget(&self.id, self.generation) {
            return;
        }
        let (spool, id, generation) = (self.spool.clone(), self.id, self.generation);
        self.spool.runtime.spawn(async move {
            if let Err(e) = spool.release(&id, generation).await {
                tracing::warn!(target: "postrider::spool",
                    "{id}: could not release the lease ({e}); it ends by itself in {:?}",
                    spool.lease);
            }
        });
    }
}

/// Renews every lease this node holds, every third of the lease, until the spool is gone.
pub(crate) async fn renew_forever(spool: Weak<Inner>, every: Duration) {
    let mut lost_reported: HashSet<(String, i64)> = HashSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(spool) = spool.upgrade() else { return };
        let (ids, generations) = spool.leases.snapshot();
        if ids.is_empty() {
            lost_reported.clear();
            continue;
        }
        match spool.renew(&ids, &generations).await {
            Ok(renewed) => {
                let renewed: HashSet<&str> = renewed.iter().map(String::as_str).collect();
                for (id, g) in ids.iter().zip(&generations) {
                    if !renewed.contains(id.as_str()) && lost_reported.insert((id.clone(), *g)) {
                        tracing::warn!(target: "postrider::spool",
                            "{id}: lease lost (another engine took the message over, or it was \
                             removed); this attempt's outcome will not be written");
                    }
                }
            }
            Err(e) => tracing::warn!(target: "postrider::spool",
                "could not renew {} lease(s): {e}; they end unless renewed within {:?}",
                ids.len(), spool.lease),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_claim_cannot_forget_a_newer_one() {
        let leases = Leases::default();
        let id = QueueId::generate();
        leases.hold(id, 3);
        leases.hold(id, 4);
        assert!(!leases.forget(&id, 3));
        assert_eq!(leases.generation(&id), Some(4));
        assert!(leases.forget(&id, 4));
        assert_eq!(leases.generation(&id), None);
    }
}
