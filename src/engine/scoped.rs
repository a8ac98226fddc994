//! A view of a spool for a short-lived process: an engine started over it sees (and so
//! delivers) only part of the queue, and may be forbidden to deliver at all.
//!
//! ```no_run
//! use std::sync::Arc;
//! use postrider::engine::FlushFilter;
//! use postrider::engine::scoped::{Scope, ScopedSpool};
//! use postrider::spool::FsSpool;
//! # fn demo() -> Result<(), postrider::SpoolError> {
//! // `sendmail -qR example.com`: an engine over this view tries only that domain's mail.
//! let spool = Arc::new(FsSpool::open("/var/spool/postrider")?);
//! let view = ScopedSpool::new(spool, Scope::Matching(FlushFilter::RecipientDomain(
//!     "example.com".parse().expect("a domain"),
//! )));
//! # let _ = view; Ok(()) }
//! ```
//!
//! A `sendmail` command that submits one message must try that message only, not every
//! message that happens to be due; `sendmail -qR example.com` must leave other messages alone;
//! `sendmail -odq` must not deliver. The engine schedules whatever its spool's `scan` returns
//! and delivers only what it can `claim`, so narrowing those two calls is enough, and the
//! engine needs no mode of its own.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::admin::FlushFilter;
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::spool::{Claim, MessageState, QueuedMessage, ScanReport, Spool, SpoolError};
use async_trait::async_trait;
use bytes::Bytes;

/// Which messages the view shows.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The whole queue (`sendmail -q`).
    Everything,
    /// Only messages inserted through this view (a submission, and the DSNs it causes).
    Own,
    /// Messages a flush filter selects (`-qR`, `-qI`, `-qS`).
    Matching(FlushFilter),
}

/// A spool seen through a [`Scope`].
pub struct ScopedSpool {
    inner: Arc<dyn Spool>,
    scope: Scope,
    claims: bool,
    own: Mutex<BTreeSet<QueueId>>,
}

impl ScopedSpool {
    /// A view of `inner` showing `scope`.
    pub fn new(inner: Arc<dyn Spool>, scope: Scope) -> ScopedSpool {
        ScopedSpool {
            inner,
            scope,
            claims: true,
            own: Mutex::new(BTreeSet::new()),
        }
    }

    /// Never claims a message, so an engine over this view queues but never delivers.
    pub fn without_claims(mut self) -> ScopedSpool {
        self.claims = false;
        self
    }

    /// The whole queue's scan, streamed, with only what `filter` selects handed to `each`:
    /// what both `scan` and `scan_each` of a [`Scope::Matching`] view read.
    async fn scan_matching(
        &self,
        filter: &FlushFilter,
        each: &mut (dyn FnMut(QueuedMessage) + Send),
    ) -> Result<ScanReport, SpoolError> {
        let filtered = &mut |m: QueuedMessage| {
            if filter.matches(m.id, &m.envelope, &m.state) {
                each(m);
            }
        };
        self.inner.scan_each(filtered).await
    }

    fn own_ids(&self) -> Vec<QueueId> {
        // A poisoned lock only means another task panicked while inserting an id.
        let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.iter().copied().collect()
    }
}

#[async_trait]
impl Spool for ScopedSpool {
    async fn insert(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<QueueId, SpoolError> {
        let id = self.inner.insert(envelope, body, arrival).await?;
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        Ok(id)
    }

    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        self.inner.body(id).await
    }

    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        self.inner.load(id).await
    }

    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        self.inner.save_state(id, state).await
    }

    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.inner.remove(id).await
    }

    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        match &self.scope {
            Scope::Everything => self.inner.scan().await,
            // One message (`-qI`, and every background delivery after a submission): read
            // its record instead of the whole queue.
            Scope::Matching(FlushFilter::Id(id)) => {
                let mut report = ScanReport::default();
                match self.inner.load(id).await {
                    Ok(m) => report.messages.push(m),
                    Err(SpoolError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                Ok(report)
            }
            Scope::Matching(filter) => {
                let mut kept = Vec::new();
                let mut report = self.scan_matching(filter, &mut |m| kept.push(m)).await?;
                report.messages = kept;
                Ok(report)
            }
            Scope::Own => {
                let mut report = ScanReport::default();
                for id in self.own_ids() {
                    match self.inner.load(&id).await {
                        Ok(m) => report.messages.push(m),
                        Err(SpoolError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(report)
            }
        }
    }

    /// Streams what a scan of the whole queue finds; a narrower scope reads only a few
    /// messages, collected as [`Spool::scan`] does.
    async fn scan_each(
        &self,
        each: &mut (dyn FnMut(QueuedMessage) + Send),
    ) -> Result<ScanReport, SpoolError> {
        match &self.scope {
            Scope::Everything => self.inner.scan_each(each).await,
            Scope::Matching(filter) if !matches!(filter, FlushFilter::Id(_)) => {
                self.scan_matching(filter, each).await
            }
            _ => Ok(self.scan().await?.hand_out(each)),
        }
    }

    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        if self.claims {
            self.inner.claim(id).await
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::MemorySpool;
    use crate::{Address, Domain, ReversePath};

    async fn queue_for(spool: &MemorySpool, rcpt: &str) -> QueueId {
        let envelope = Envelope::new(
            ReversePath::parse("pbx@sender.example").unwrap(),
            [Address::parse(rcpt).unwrap()],
        );
        spool
            .insert(&envelope, Bytes::from_static(b"x\r\n"), SystemTime::now())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_matching_view_finds_the_same_messages_collected_or_streamed() {
        let spool = MemorySpool::new();
        let mut wanted = Vec::new();
        for i in 0..6 {
            let domain = if i % 2 == 0 { "y.example" } else { "z.example" };
            let id = queue_for(&spool, &format!("u{i}@{domain}")).await;
            if i % 2 == 0 {
                wanted.push(id);
            }
        }
        let filter = FlushFilter::RecipientDomain(Domain::parse("y.example").unwrap());
        let view = ScopedSpool::new(Arc::new(spool), Scope::Matching(filter));

        let collected: Vec<QueueId> = view
            .scan()
            .await
            .unwrap()
            .messages
            .iter()
            .map(|m| m.id)
            .collect();
        let mut streamed = Vec::new();
        let report = view.scan_each(&mut |m| streamed.push(m.id)).await.unwrap();

        assert!(
            report.messages.is_empty(),
            "a streamed scan hands messages out"
        );
        assert_eq!(collected, streamed);
        let (mut found, mut wanted) = (collected, wanted);
        found.sort();
        wanted.sort();
        assert_eq!(found, wanted, "only y.example's three messages");
    }
}
