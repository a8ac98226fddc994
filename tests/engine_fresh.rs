//! The first attempt of a message submitted through the engine: it is claimed by the insert
//! itself (`Spool::insert_claimed`), so the engine neither claims it again, nor re-reads its
//! record, nor reads its body back before delivering it. Later attempts go through the spool.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use postrider::engine::{Clock, Engine, Limits};
use postrider::spool::{
    Claim, MemorySpool, MessageState, QueuedMessage, ScanReport, Spool, SpoolError,
};
use postrider::{Envelope, Outcome, QueueId};
use support::engine::*;

/// A MemorySpool that counts the reads an attempt may need; with `claimed_inserts` off it
/// keeps the trait's default `insert_claimed` (insert only), as a third-party spool would.
struct CountingSpool {
    inner: MemorySpool,
    claimed_inserts: bool,
    claims: AtomicUsize,
    loads: AtomicUsize,
    bodies: AtomicUsize,
}

impl CountingSpool {
    fn new(claimed_inserts: bool) -> Arc<CountingSpool> {
        Arc::new(CountingSpool {
            inner: MemorySpool::new(),
            claimed_inserts,
            claims: AtomicUsize::new(0),
            loads: AtomicUsize::new(0),
            bodies: AtomicUsize::new(0),
        })
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.claims.load(Ordering::SeqCst),
            self.loads.load(Ordering::SeqCst),
            self.bodies.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl Spool for CountingSpool {
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
        if self.claimed_inserts {
            self.inner.insert_claimed(envelope, body, arrival).await
        } else {
            Ok((self.inner.insert(envelope, body, arrival).await?, None))
        }
    }

    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        self.bodies.fetch_add(1, Ordering::SeqCst);
        self.inner.body(id).await
    }

    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(id).await
    }

    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        self.inner.save_state(id, state).await
    }

    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.inner.remove(id).await
    }

    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        self.inner.scan().await
    }

    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(id).await
    }
}

async fn engine(spool: Arc<CountingSpool>, transport: Arc<ScriptedTransport>) -> Engine {
    Engine::builder()
        .hostname("mta.test.example".parse().unwrap())
        .spool(spool)
        .router(Arc::new(DomainRouter))
        .transport(transport)
        .retry(exact_retry())
        .limits(Limits::default())
        .clock(Clock::tokio())
        .start()
        .await
        .unwrap()
}

fn envelope() -> Envelope {
    Envelope::new(
        postrider::ReversePath::parse("pbx@sender.example").unwrap(),
        [postrider::Address::parse("bob@remote.example").unwrap()],
    )
}

#[tokio::test(start_paused = true)]
async fn a_submitted_message_is_delivered_without_claiming_reloading_or_rereading_it() {
    let spool = CountingSpool::new(true);
    let transport = ScriptedTransport::new(Clock::tokio(), Box::new(|_| ok()));
    let engine = engine(spool.clone(), transport.clone()).await;
    let mut events = engine.subscribe();
    engine
        .submit(envelope(), "Subject: fresh\r\n\r\nhello\r\n")
        .await
        .unwrap();
    let e = events.recv().await.unwrap();
    assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{e:?}");
    let calls = transport.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        &calls[0].messages[0].2[..],
        b"Subject: fresh\r\n\r\nhello\r\n"
    );
    settle().await;
    assert_eq!(spool.counts(), (0, 0, 0), "(claims, loads, body reads)");
    assert!(spool.inner.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_spool_without_claimed_inserts_is_claimed_and_read_as_before() {
    let spool = CountingSpool::new(false);
    let transport = ScriptedTransport::new(Clock::tokio(), Box::new(|_| ok()));
    let engine = engine(spool.clone(), transport.clone()).await;
    let mut events = engine.subscribe();
    engine
        .submit(envelope(), "Subject: plain\r\n\r\nhello\r\n")
        .await
        .unwrap();
    let e = events.recv().await.unwrap();
    assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{e:?}");
    settle().await;
    assert_eq!(spool.counts(), (1, 1, 1), "(claims, loads, body reads)");
    assert!(spool.inner.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_retry_claims_and_reads_the_message_from_the_spool() {
    let spool = CountingSpool::new(true);
    let transport = ScriptedTransport::new(Clock::tokio(), Box::new(|_| temp()));
    let engine = engine(spool.clone(), transport.clone()).await;
    let mut events = engine.subscribe();
    engine
        .submit(envelope(), "Subject: later\r\n\r\nhello\r\n")
        .await
        .unwrap();
    let first = events.recv().await.unwrap();
    assert!(matches!(first.outcome, Outcome::Deferred(_)), "{first:?}");
    settle().await;
    assert_eq!(spool.counts(), (0, 0, 0));
    transport.set_rule(Box::new(|_| ok()));
    let second = tokio::time::timeout(Duration::from_secs(3600), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(second.outcome, Outcome::Delivered { .. }),
        "{second:?}"
    );
    let calls = transport.calls();
    assert_eq!(
        &calls[1].messages[0].2[..],
        b"Subject: later\r\n\r\nhello\r\n"
    );
    settle().await;
    assert_eq!(spool.counts(), (1, 1, 1), "(claims, loads, body reads)");
    assert!(spool.inner.is_empty());
}
