//! Index scheduling (a spool one engine owns) on tokio's paused clock: a flush is answered
//! from the engine's compact index at once, without waiting for the rescan that looks for
//! messages other processes queued, and the rescan still adds those.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use postrider::engine::{Clock, Engine, FlushFilter, Limits};
use postrider::spool::{
    Claim, MemorySpool, MessageState, QueuedMessage, ScanReport, Spool, SpoolError,
};
use postrider::{Address, Envelope, QueueId, ReversePath};
use support::engine::*;

/// A MemorySpool whose scans take an hour once `slow` is set (a huge queue on a cold disk).
struct SlowScan {
    inner: MemorySpool,
    slow: AtomicBool,
}

#[async_trait]
impl Spool for SlowScan {
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
        self.inner.save_state(id, state).await
    }
    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.inner.remove(id).await
    }
    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.inner.scan().await
    }
    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        self.inner.claim(id).await
    }
}

fn envelope(to: &str) -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@sender.example").unwrap(),
        [Address::parse(to).unwrap()],
    )
}

#[tokio::test(start_paused = true)]
async fn a_flush_of_one_domain_starts_from_the_index_before_the_rescan_ends_and_waits_for_it() {
    let spool = Arc::new(SlowScan {
        inner: MemorySpool::new(),
        slow: AtomicBool::new(false),
    });
    let clock = Clock::tokio();
    let transport = ScriptedTransport::new(clock, Box::new(|_| temp()));
    let engine = Engine::builder()
        .hostname("mta.test.example".parse().unwrap())
        .spool(spool.clone())
        .router(Arc::new(DomainRouter))
        .transport(transport.clone())
        .retry(exact_retry())
        .limits(Limits {
            queue_scan_interval: None,
            ..Limits::default()
        })
        .clock(clock)
        .start()
        .await
        .unwrap();
    for i in 0..50 {
        let domain = if i % 10 == 0 { "wanted" } else { "other" };
        engine
            .submit(envelope(&format!("u{i}@{domain}.example")), "x\r\n")
            .await
            .unwrap();
    }
    for _ in 0..20 {
        settle().await;
    }
    let first_round = transport.sent.lock().unwrap().len();
    assert_eq!(first_round, 50, "every message tried once and deferred");
    // Another process queues one more for the domain: only the rescan can know of it.
    let elsewhere = spool
        .inner
        .insert(
            &envelope("late@wanted.example"),
            Bytes::from_static(b"x\r\n"),
            clock.now(),
        )
        .await
        .unwrap();
    spool.slow.store(true, Ordering::SeqCst);
    transport.set_rule(Box::new(|_| ok()));
    let flushed_at = clock.now();
    let flush = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .flush(FlushFilter::RecipientDomain(
                    "wanted.example".parse().unwrap(),
                ))
                .await
                .unwrap()
        }
    });
    for _ in 0..20 {
        settle().await;
    }
    let sent: Vec<(QueueId, SystemTime)> = transport.sent.lock().unwrap()[first_round..].to_vec();
    assert_eq!(
        sent.len(),
        5,
        "the five indexed messages of the domain went before the scan ended, no other"
    );
    assert!(
        sent.iter()
            .all(|(_, at)| at.duration_since(flushed_at).unwrap() < Duration::from_secs(1))
    );
    assert!(!flush.is_finished(), "the flush waits for its rescan");
    let summary = flush.await.unwrap();
    assert_eq!(summary.attempted, 6, "{summary:?}");
    assert_eq!(summary.completed, 6, "{summary:?}");
    assert!(
        spool.inner.load(&elsewhere).await.is_err(),
        "found by the rescan and delivered"
    );
}
