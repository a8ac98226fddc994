//! The per-next-hop connection limit: one semaphore per hop, shared by every `deliver` call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts open connections per next hop (keyed by the hop as users write it).
///
/// Entries are never removed: there is one small semaphore per next hop ever used, which is
/// bounded by the routing configuration and the set of destination domains.
#[derive(Debug)]
pub(crate) struct HopLimits {
    max: usize,
    hops: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HopLimits {
    pub(crate) fn new(max: usize) -> HopLimits {
        HopLimits {
            max: max.max(1),
            hops: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a free connection slot for `hop`.
    pub(crate) async fn acquire(&self, hop: &str) -> OwnedSemaphorePermit {
        let sem = {
            let mut hops = self
                .hops
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            hops.entry(hop.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
                .clone()
        };
        sem.acquire_owned()
            .await
            .expect("invariant: hop semaphores are never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hop_gets_no_more_connections_than_the_limit() {
        let limits = HopLimits::new(2);
        let a = limits.acquire("[relay]:587").await;
        let _b = limits.acquire("[relay]:587").await;
        let third = limits.acquire("[relay]:587");
        tokio::pin!(third);
        assert!(futures_poll_once(third.as_mut()).await.is_none());
        // Another hop is not affected.
        let _other = limits.acquire("example.com").await;
        drop(a);
        assert!(futures_poll_once(third.as_mut()).await.is_some());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(std::time::Duration::ZERO, f)
            .await
            .ok()
    }
}
