//! Never send twice what the next hop already took: each message's outcome is made durable as
//! its reply arrives, before the session sends the next message; a graceful stop re-sends
//! nothing; and a state the spool cannot write stops that message's delivery instead of
//! delivering its recipients again. All on tokio's paused clock with a scripted transport and a
//! spool whose writes take virtual time and can be made to fail.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use postrider::engine::{Clock, Engine, FlushFilter, Limits};
use postrider::spool::{
    Claim, MemorySpool, MessageState, QueuedMessage, RecipientStatus, ScanReport, Spool, SpoolError,
};
use postrider::{Address, Envelope, Outcome, QueueId, ReversePath};
use support::engine::*;

/// A MemorySpool whose state writes take `write_time` of virtual time, log when they
/// completed, and fail while `failing` is set (as a disk that went bad would).
struct SlowSpool {
    inner: MemorySpool,
    clock: Clock,
    write_time: Duration,
    failing: AtomicBool,
    /// (message, "save" or "remove", when the write completed).
    writes: Mutex<Vec<(QueueId, &'static str, SystemTime)>>,
}

impl SlowSpool {
    fn new(clock: Clock, write_time: Duration) -> Arc<SlowSpool> {
        Arc::new(SlowSpool {
            inner: MemorySpool::new(),
            clock,
            write_time,
            failing: AtomicBool::new(false),
            writes: Mutex::new(Vec::new()),
        })
    }

    async fn write(&self, id: &QueueId, what: &'static str) -> Result<(), SpoolError> {
        tokio::time::sleep(self.write_time).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(SpoolError::io(
                "write record",
                "/spool/queue",
                std::io::Error::from_raw_os_error(libc_eio()),
            ));
        }
        self.writes
            .lock()
            .unwrap()
            .push((*id, what, self.clock.now()));
        Ok(())
    }

    fn written(&self, id: &QueueId) -> Option<SystemTime> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, _, t)| *t)
    }
}

/// EIO, without a libc dependency in the tests.
fn libc_eio() -> i32 {
    5
}

#[async_trait]
impl Spool for SlowSpool {
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
        self.write(id, "save").await?;
        self.inner.save_state(id, state).await
    }
    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.write(id, "remove").await?;
        self.inner.remove(id).await
    }
    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        self.inner.scan().await
    }
    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        self.inner.claim(id).await
    }
}

struct World {
    engine: Engine,
    transport: Arc<ScriptedTransport>,
    spool: Arc<SlowSpool>,
}

async fn world(rule: Rule, latency: Duration, limits: Limits) -> World {
    world_with_queue(rule, latency, limits, 0).await.0
}

/// A world whose spool holds `queued` messages to a@x.example before the engine starts: they
/// are all due at once, so they travel together in one batch.
async fn world_with_queue(
    rule: Rule,
    latency: Duration,
    limits: Limits,
    queued: usize,
) -> (World, Vec<QueueId>) {
    let clock = Clock::tokio();
    let transport = ScriptedTransport::new(clock, rule);
    *transport.latency.lock().unwrap() = latency;
    let spool = SlowSpool::new(clock, Duration::from_millis(20));
    let mut ids = Vec::new();
    for _ in 0..queued {
        let id = spool
            .inner
            .insert(
                &envelope(&["a@x.example"]),
                Bytes::from_static(b"Subject: x\r\n\r\nhello\r\n"),
                clock.now(),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let engine = Engine::builder()
        .hostname("mta.test.example".parse().unwrap())
        .spool(spool.clone())
        .router(Arc::new(DomainRouter))
        .transport(transport.clone())
        .retry(exact_retry())
        .limits(limits)
        .clock(clock)
        .start()
        .await
        .unwrap();
    (
        World {
            engine,
            transport,
            spool,
        },
        ids,
    )
}

/// One connection for everything: every message of the queue in one batch.
fn one_session() -> Limits {
    Limits {
        max_deliveries: 1,
        max_deliveries_per_hop: 1,
        ..Limits::default()
    }
}

fn envelope(to: &[&str]) -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        to.iter().map(|t| Address::parse(t).unwrap()),
    )
}

#[tokio::test(start_paused = true)]
async fn each_message_is_recorded_before_the_session_sends_the_next() {
    let (w, _ids) = world_with_queue(
        Box::new(|_| ok()),
        Duration::from_millis(50),
        one_session(),
        5,
    )
    .await;
    let summary = w.engine.flush(FlushFilter::All).await.unwrap();
    assert_eq!(summary.completed, 5, "{summary:?}");
    let sent = w.transport.sent.lock().unwrap().clone();
    let in_one_call = w.transport.calls().iter().map(|c| c.messages.len()).max();
    assert!(
        in_one_call >= Some(2),
        "the test needs several messages in one session"
    );
    for pair in sent.windows(2) {
        let (earlier, next) = (pair[0], pair[1]);
        let recorded = w
            .spool
            .written(&earlier.0)
            .expect("every delivered message was removed");
        assert!(
            recorded <= next.1,
            "{} was sent at {:?}, before {}'s delivery was recorded at {:?}",
            next.0,
            next.1,
            earlier.0,
            recorded
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_partly_delivered_message_records_its_delivered_recipient_at_once() {
    // a@ is delivered by one transport call; b@ (another route) takes long to answer.
    let w = world(
        Box::new(|a: &Address| {
            if a.domain().as_str() == "slow.example" {
                temp()
            } else {
                ok()
            }
        }),
        Duration::from_secs(30),
        Limits::default(),
    )
    .await;
    let id = w
        .engine
        .submit(
            envelope(&["a@x.example", "b@slow.example"]),
            "Subject: x\r\n\r\nhi\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    settle().await;
    let msg = w.spool.inner.load(&id).await.unwrap();
    assert_eq!(msg.state.recipients[0].status, RecipientStatus::Delivered);
    assert_eq!(msg.state.recipients[1].status, RecipientStatus::Pending);
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_lets_the_message_under_way_finish_and_sends_nothing_more() {
    let (w, ids) = world_with_queue(
        Box::new(|_| ok()),
        Duration::from_secs(1),
        one_session(),
        10,
    )
    .await;
    let mut events = w.engine.subscribe();
    // Mid-way through the batch.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    w.engine.shutdown().await;
    let mut delivered = Vec::new();
    while let Ok(e) = events.try_recv() {
        assert!(
            matches!(e.outcome, Outcome::Delivered { .. }),
            "nothing is logged as deferred by a graceful stop: {e}"
        );
        delivered.push(e.id);
    }
    let sent: Vec<QueueId> = w
        .transport
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(
        sent.len(),
        delivered.len(),
        "every message started was finished and recorded"
    );
    assert!(
        sent.len() < ids.len(),
        "the stop came before the end of the batch"
    );
    for id in &ids {
        let on_disk = w.spool.inner.load(id).await;
        if delivered.contains(id) {
            assert!(
                matches!(on_disk, Err(SpoolError::NotFound(_))),
                "{id} delivered and removed"
            );
        } else {
            let m = on_disk.unwrap();
            assert_eq!(m.state.recipients[0].attempts, 0, "{id} untouched");
        }
    }
    // A new engine on the same spool delivers the rest, each once.
    let clock = Clock::tokio();
    let again = ScriptedTransport::new(clock, Box::new(|_| ok()));
    let engine = Engine::builder()
        .hostname("mta.test.example".parse().unwrap())
        .spool(w.spool.clone())
        .router(Arc::new(DomainRouter))
        .transport(again.clone())
        .clock(clock)
        .start()
        .await
        .unwrap();
    engine.flush(FlushFilter::All).await.unwrap();
    let mut counts: HashMap<QueueId, usize> = HashMap::new();
    for id in sent
        .iter()
        .chain(again.sent.lock().unwrap().iter().map(|s| &s.0))
    {
        *counts.entry(*id).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "{id} sent exactly once");
    }
}

#[tokio::test(start_paused = true)]
async fn a_state_that_cannot_be_written_stops_the_message_instead_of_delivering_twice() {
    // a@ goes at once; b@ is deferred. With the disk failing, the delivery of a@ cannot be
    // recorded: later attempts must not send it to a@ again.
    let w = world(
        Box::new(
            |a: &Address| {
                if a.local_part() == "b" { temp() } else { ok() }
            },
        ),
        Duration::ZERO,
        Limits::default(),
    )
    .await;
    w.spool.failing.store(true, Ordering::SeqCst);
    let id = w
        .engine
        .submit(
            envelope(&["a@x.example", "b@x.example"]),
            "Subject: x\r\n\r\nhi\r\n",
        )
        .await
        .unwrap();
    let first = w.engine.flush(FlushFilter::Id(id)).await.unwrap();
    assert_eq!(
        first.unrecorded, 1,
        "the flush says the state was not recorded: {first:?}"
    );
    for _ in 0..3 {
        w.engine.flush(FlushFilter::Id(id)).await.unwrap();
    }
    let to_a = w.transport.calls_for("a@x.example").len();
    assert_eq!(to_a, 1, "a@ got one copy, not one per retry");
    // Once the disk is back, the truth is written first, and only b@ is tried.
    w.spool.failing.store(false, Ordering::SeqCst);
    let later = w.engine.flush(FlushFilter::Id(id)).await.unwrap();
    assert_eq!(later.unrecorded, 0, "{later:?}");
    let msg = w.spool.inner.load(&id).await.unwrap();
    assert_eq!(msg.state.recipients[0].status, RecipientStatus::Delivered);
    assert_eq!(w.transport.calls_for("a@x.example").len(), 1);
}
