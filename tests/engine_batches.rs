//! Batch scheduling (a spool several engines share, `Scheduling::Batches`) on tokio's paused
//! clock: the queue is not read at start, due work comes from `claim_due` in batches no larger
//! than the engine's room, the engine sleeps until `next_due` or a wake-up, an outcome fenced
//! with `LeaseLost` is dropped and never retried here, and administration goes through the
//! spool. The test plays the other engines (see `support::shared_spool`).

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use postrider::engine::{Clock, Engine, FlushFilter, Limits, RetryPolicy};
use postrider::spool::Spool;
use postrider::{Address, Envelope, Outcome, ReversePath};
use support::engine::*;
use support::shared_spool::SharedSpool;

struct World {
    engine: Engine,
    spool: Arc<SharedSpool>,
    transport: Arc<ScriptedTransport>,
    clock: Clock,
}

fn limits(active: usize) -> Limits {
    Limits {
        max_active_messages: active,
        queue_scan_interval: None,
        ..Limits::default()
    }
}

async fn world_on(spool: Arc<SharedSpool>, rule: Rule, limits: Limits) -> World {
    let clock = Clock::tokio();
    let transport = ScriptedTransport::new(clock, rule);
    let engine = Engine::builder()
        .hostname("mta.test.example".parse().unwrap())
        .spool(spool.clone())
        .router(Arc::new(DomainRouter))
        .transport(transport.clone())
        .retry(RetryPolicy {
            warn_after: None,
            ..exact_retry()
        })
        .limits(limits)
        .clock(clock)
        .start()
        .await
        .unwrap();
    World {
        engine,
        spool,
        transport,
        clock,
    }
}

fn envelope(to: &str) -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@sender.example").unwrap(),
        [Address::parse(to).unwrap()],
    )
}

/// Queues a message as another engine would: straight into the shared spool.
async fn queue_elsewhere(spool: &SharedSpool, clock: &Clock, to: &str) -> postrider::QueueId {
    spool
        .inner
        .insert(&envelope(to), Bytes::from_static(b"x\r\n"), clock.now())
        .await
        .unwrap()
}

async fn next(
    events: &mut tokio::sync::broadcast::Receiver<postrider::engine::DeliveryEvent>,
) -> postrider::engine::DeliveryEvent {
    tokio::time::timeout(Duration::from_secs(86_400), events.recv())
        .await
        .expect("no delivery event within a virtual day")
        .expect("event stream closed")
}

fn sent(t: &ScriptedTransport) -> usize {
    t.sent.lock().unwrap().len()
}

#[tokio::test(start_paused = true)]
async fn a_shared_queue_is_not_read_at_start_and_is_delivered_in_batches_no_larger_than_the_room() {
    let spool = Arc::new(SharedSpool::new());
    let clock = Clock::tokio();
    for i in 0..250 {
        queue_elsewhere(&spool, &clock, &format!("u{i}@remote.example")).await;
    }
    let w = world_on(spool, Box::new(|_| ok()), limits(40)).await;
    assert_eq!(w.engine.startup_report().recovered, 0);
    assert_eq!(
        w.spool.scans.load(Ordering::SeqCst),
        0,
        "start must not read the whole shared queue"
    );
    for _ in 0..200 {
        settle().await;
        if w.spool.inner.is_empty() {
            break;
        }
    }
    assert!(w.spool.inner.is_empty(), "{} left", w.spool.inner.len());
    assert_eq!(sent(&w.transport), 250, "each message sent once");
    let batches = w.spool.batches();
    assert!(
        batches
            .iter()
            .all(|&(limit, got)| limit <= 40 && got <= limit),
        "{batches:?}"
    );
    assert!(
        batches.iter().filter(|&&(_, got)| got > 0).count() >= 7,
        "250 messages through room for 40 take several batches: {batches:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_message_deferred_by_another_engine_is_claimed_when_next_due_says_and_not_before() {
    let spool = Arc::new(SharedSpool::new());
    let clock = Clock::tokio();
    let id = queue_elsewhere(&spool, &clock, "bob@remote.example").await;
    let mut state = spool.inner.load(&id).await.unwrap().state;
    let due = clock.now() + Duration::from_secs(300);
    state.next_attempt = due;
    spool.inner.save_state(&id, &state).await.unwrap();
    let w = world_on(spool, Box::new(|_| ok()), limits(100)).await;
    let mut events = w.engine.subscribe();
    let delivered = next(&mut events).await;
    assert!(matches!(delivered.outcome, Outcome::Delivered { .. }));
    let late = delivered.started.duration_since(due);
    assert!(
        late.is_ok_and(|d| d < Duration::from_secs(1)),
        "attempted at {:?}, due at {due:?}",
        delivered.started
    );
    let polls = w.spool.next_dues.load(Ordering::SeqCst);
    assert!(
        polls <= 3,
        "the engine sleeps until the due time instead of polling: {polls} next_due calls"
    );
}

#[tokio::test(start_paused = true)]
async fn mail_queued_by_another_engine_waits_for_a_wakeup_and_then_goes_at_once() {
    let spool = Arc::new(SharedSpool::new());
    let w = world_on(spool, Box::new(|_| ok()), limits(100)).await;
    settle().await;
    let id = queue_elsewhere(&w.spool, &w.clock, "carol@remote.example").await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        sent(&w.transport),
        0,
        "no wake-up and no rescan timer: the engine had no reason to look"
    );
    let woken = w.clock.now();
    w.spool.wake(woken);
    for _ in 0..20 {
        settle().await;
    }
    assert_eq!(sent(&w.transport), 1);
    let at = w.transport.sent.lock().unwrap()[0].1;
    assert!(at.duration_since(woken).unwrap() < Duration::from_millis(100));
    assert!(
        w.spool.inner.load(&id).await.is_err(),
        "delivered and removed"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outcome_fenced_by_a_lost_lease_is_dropped_and_never_retried_here() {
    let spool = Arc::new(SharedSpool::new());
    let w = world_on(
        spool,
        Box::new(|_| temp()),
        Limits {
            queue_scan_interval: Some(Duration::from_secs(300)),
            ..limits(100)
        },
    )
    .await;
    let clock = w.clock;
    let id = queue_elsewhere(&w.spool, &clock, "dave@remote.example").await;
    w.spool.steal_on_write.lock().unwrap().insert(id);
    w.spool.wake(clock.now());
    for _ in 0..20 {
        settle().await;
    }
    assert_eq!(sent(&w.transport), 1);
    // Another engine holds it now: this one never writes over it nor tries it again.
    tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
    assert_eq!(sent(&w.transport), 1, "the lost attempt was retried here");
    assert_eq!(
        w.spool.foreign_claims.load(Ordering::SeqCst),
        0,
        "the engine came back for a message another engine took over"
    );
    let stored = w.spool.inner.load(&id).await.unwrap();
    assert_eq!(
        stored.state.attempts, 0,
        "the fenced outcome must not reach the spool"
    );
    assert!(
        w.engine.list().await.unwrap().iter().any(|e| e.id == id),
        "the message stays queued for the engine that took it over"
    );
}

#[tokio::test(start_paused = true)]
async fn hold_release_and_delete_of_a_message_nobody_here_works_on_go_through_the_spool() {
    let spool = Arc::new(SharedSpool::new());
    let w = world_on(spool, Box::new(|_| ok()), limits(100)).await;
    settle().await; // the start's look at the spool found nothing
    let clock = w.clock;
    let held = queue_elsewhere(&w.spool, &clock, "erin@remote.example").await;
    w.engine.hold(&held).await.unwrap();
    assert!(w.spool.inner.load(&held).await.unwrap().state.held);
    w.spool.wake(clock.now());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(sent(&w.transport), 0, "a held message is not delivered");
    w.engine.release(&held).await.unwrap();
    for _ in 0..20 {
        settle().await;
    }
    assert_eq!(sent(&w.transport), 1, "a release makes it due now");

    let doomed = queue_elsewhere(&w.spool, &clock, "frank@remote.example").await;
    w.spool.foreign.lock().unwrap().insert(doomed);
    assert!(
        matches!(
            w.engine.delete(&doomed).await,
            Err(postrider::engine::EngineError::Busy(_))
        ),
        "another engine holds it"
    );
    w.spool.foreign.lock().unwrap().remove(&doomed);
    w.engine.hold(&doomed).await.unwrap();
    w.engine.delete(&doomed).await.unwrap();
    assert!(w.spool.inner.is_empty());
    assert!(matches!(
        w.engine.delete(&doomed).await,
        Err(postrider::engine::EngineError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_flush_of_a_shared_queue_tries_its_messages_now_and_counts_the_ones_held_elsewhere() {
    let spool = Arc::new(SharedSpool::new());
    let w = world_on(spool, Box::new(|_| temp()), limits(100)).await;
    let clock = w.clock;
    let mine = queue_elsewhere(&w.spool, &clock, "gina@flush.example").await;
    let theirs = queue_elsewhere(&w.spool, &clock, "hugo@flush.example").await;
    let other = queue_elsewhere(&w.spool, &clock, "ivan@other.example").await;
    w.spool.foreign.lock().unwrap().insert(theirs);
    w.spool.wake(clock.now());
    for _ in 0..20 {
        settle().await;
    }
    assert_eq!(
        sent(&w.transport),
        2,
        "mine and other, deferred for 5 minutes"
    );
    w.transport.set_rule(Box::new(|_| ok()));
    let flushed = w
        .engine
        .flush(FlushFilter::RecipientDomain(
            "flush.example".parse().unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(flushed.attempted, 2, "{flushed:?}");
    assert_eq!(flushed.completed, 1, "{flushed:?}");
    assert_eq!(flushed.busy, 1, "{flushed:?}");
    assert!(
        w.spool.inner.load(&mine).await.is_err(),
        "flushed and delivered"
    );
    assert!(
        w.spool.inner.load(&other).await.is_ok(),
        "another domain waits for its retry"
    );
    assert_eq!(sent(&w.transport), 3);
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_listed_from_the_spool_page_by_page() {
    let spool = Arc::new(SharedSpool::new());
    let w = world_on(spool, Box::new(|_| temp()), limits(100)).await;
    settle().await;
    let clock = w.clock;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = queue_elsewhere(&w.spool, &clock, &format!("u{i}@remote.example")).await;
        w.engine.hold(&id).await.unwrap();
        ids.push(id);
    }
    let (first, next) = w.engine.list_page(None, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let (rest, end) = w.engine.list_page(next, 3).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(end, None);
    let listed: Vec<_> = first.iter().chain(&rest).map(|e| e.id).collect();
    ids.sort();
    assert_eq!(listed, ids);
    assert!(first.iter().chain(&rest).all(|e| e.held && !e.in_flight));
}
