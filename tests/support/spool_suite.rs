//! The behaviour every [`Spool`] must show, written once and run against each spool
//! (`tests/spool_suite.rs`): `spool_suite!(factory)` expands to one `#[tokio::test]` per
//! behaviour. The factory gives two handles on the same storage (two `MemorySpool` clones,
//! two `FsSpool`s opened on one directory, two `PgSpool`s connected to one database: two
//! nodes), so exclusivity is checked across handles as an engine on another node would meet it.
//!
//! Releasing a claim may finish after the drop (a `PgSpool` releases its lease in a task), so
//! "claimable again" is awaited with [`claim_soon`], bounded.
#![allow(dead_code)]

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use postrider::QueueId;
use postrider::spool::{AdminAction, AdminOutcome, Claim, RecipientStatus, Spool, SpoolError};
use postrider::{Address, Envelope, ReversePath};

use super::spool::{body_for, envelope_for};

/// Two handles on one spool, and whatever must live as long as they do.
pub struct Pair {
    /// The first handle.
    pub a: Arc<dyn Spool>,
    /// The second handle (another process, another node).
    pub b: Arc<dyn Spool>,
    /// A temporary directory, a database, ...
    pub keep: Box<dyn Any + Send>,
}

/// The longest a test waits for a released claim to become claimable.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A fixed base time, so due-time tests do not depend on the clock.
pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

fn at(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

async fn insert(spool: &dyn Spool, seed: u64, arrival: SystemTime) -> QueueId {
    spool
        .insert(
            &envelope_for(seed, 300),
            Bytes::from(body_for(seed, 300)),
            arrival,
        )
        .await
        .unwrap()
}

/// Claims `id`, waiting (bounded) for a release still under way.
pub async fn claim_soon(spool: &dyn Spool, id: &QueueId) -> Claim {
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    loop {
        if let Some(c) = spool.claim(id).await.unwrap() {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} was still claimed {RELEASE_WAIT:?} after its claim was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Expands to one test per behaviour for the spool pair `$factory` (an async expression
/// giving a [`Pair`]).
#[macro_export]
macro_rules! spool_suite {
    ($factory:expr) => {
        $crate::spool_suite!(@each $factory;
            an_inserted_message_reads_back_with_its_envelope_body_and_fresh_state,
            a_saved_state_replaces_the_old_one_and_every_handle_sees_it,
            a_removed_message_is_gone_for_every_operation,
            an_unknown_id_is_not_found,
            a_scan_lists_every_message_oldest_first,
            a_claim_excludes_every_other_handle_until_dropped,
            a_message_inserted_claimed_cannot_be_claimed_until_its_claim_drops,
            a_state_with_the_wrong_number_of_recipients_is_refused_and_the_old_one_stays,
            the_holder_saves_and_removes_under_its_claim,
            claim_due_takes_due_free_unheld_messages_earliest_first_up_to_the_limit,
            two_handles_claiming_due_work_at_once_never_get_the_same_message,
            next_due_is_the_earliest_message_not_held,
            list_pages_through_the_whole_queue_in_id_order,
            admin_holds_releases_flushes_and_deletes_a_free_message,
            admin_on_a_message_being_delivered_is_never_lost_and_never_clobbers_the_outcome,
            a_requiretls_envelope_keeps_its_flag_and_others_stay_without
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let pair = $factory.await;
                $crate::support::spool_suite::$name(&*pair.a, &*pair.b).await;
                drop(pair);
            }
        )*
    };
}

pub async fn an_inserted_message_reads_back_with_its_envelope_body_and_fresh_state(
    a: &dyn Spool,
    b: &dyn Spool,
) {
    let id = insert(a, 7, at(5)).await;
    assert_eq!(b.body(&id).await.unwrap(), body_for(7, 300));
    let m = b.load(&id).await.unwrap();
    assert_eq!(m.id, id);
    assert_eq!(m.envelope, envelope_for(7, 300));
    assert_eq!(m.state.arrival, at(5));
    assert_eq!(m.state.next_attempt, at(5));
    assert_eq!(m.state.size, 300);
    assert_eq!(m.state.attempts, 0);
    assert!(!m.state.held);
    assert_eq!(m.state.recipients.len(), 2);
    assert!(
        m.state
            .recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Pending)
    );
}

/// RFC 8689 §4.1: the REQUIRETLS tag must stay with the message until it is relayed, across
/// handles (a restart, another node) and in the scan that rebuilds the queue.
pub async fn a_requiretls_envelope_keeps_its_flag_and_others_stay_without(
    a: &dyn Spool,
    b: &dyn Spool,
) {
    let mut flagged = envelope_for(3, 300);
    flagged.requiretls = true;
    let id = a
        .insert(&flagged, Bytes::from(body_for(3, 300)), at(1))
        .await
        .unwrap();
    let plain = insert(a, 4, at(2)).await;
    assert_eq!(b.load(&id).await.unwrap().envelope, flagged);
    assert!(!b.load(&plain).await.unwrap().envelope.requiretls);
    let scanned = b.scan().await.unwrap().messages;
    let flag_of = |want: &QueueId| {
        scanned
            .iter()
            .find(|m| &m.id == want)
            .map(|m| m.envelope.requiretls)
    };
    assert_eq!(flag_of(&id), Some(true));
    assert_eq!(flag_of(&plain), Some(false));
}

pub async fn a_saved_state_replaces_the_old_one_and_every_handle_sees_it(
    a: &dyn Spool,
    b: &dyn Spool,
) {
    let id = insert(a, 1, at(0)).await;
    let claim = a
        .claim(&id)
        .await
        .unwrap()
        .expect("a free message is claimable");
    let mut state = a.load(&id).await.unwrap().state;
    state.attempts = 3;
    state.next_attempt = at(600);
    state.recipients[0].status = RecipientStatus::Delivered;
    state.recipients[0].attempts = 3;
    state.recipients[0].remote_mta = Some("mx.example.org. [192.0.2.1]".into());
    a.save_state(&id, &state).await.unwrap();
    claim.release().await;
    assert_eq!(b.load(&id).await.unwrap().state, state);
    assert_eq!(a.load(&id).await.unwrap().state, state);
}

pub async fn a_removed_message_is_gone_for_every_operation(a: &dyn Spool, b: &dyn Spool) {
    let id = insert(a, 2, at(0)).await;
    let keep = insert(a, 3, at(0)).await;
    let state = a.load(&id).await.unwrap().state;
    let claim = a.claim(&id).await.unwrap().unwrap();
    a.remove(&id).await.unwrap();
    drop(claim);
    assert!(matches!(b.body(&id).await, Err(SpoolError::NotFound(x)) if x == id));
    assert!(matches!(b.load(&id).await, Err(SpoolError::NotFound(_))));
    assert!(matches!(b.remove(&id).await, Err(SpoolError::NotFound(_))));
    assert!(matches!(b.claim(&id).await, Err(SpoolError::NotFound(_))));
    assert!(matches!(
        b.save_state(&id, &state).await,
        Err(SpoolError::NotFound(_))
    ));
    let ids: Vec<QueueId> = b
        .scan()
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![keep]);
}

pub async fn an_unknown_id_is_not_found(a: &dyn Spool, _b: &dyn Spool) {
    let id = QueueId::generate();
    assert!(matches!(a.body(&id).await, Err(SpoolError::NotFound(_))));
    assert!(matches!(a.load(&id).await, Err(SpoolError::NotFound(_))));
    assert!(matches!(a.claim(&id).await, Err(SpoolError::NotFound(_))));
    assert!(matches!(a.remove(&id).await, Err(SpoolError::NotFound(_))));
    assert!(matches!(
        a.admin(&id, AdminAction::Hold, at(0)).await,
        Err(SpoolError::NotFound(_))
    ));
}

pub async fn a_scan_lists_every_message_oldest_first(a: &dyn Spool, b: &dyn Spool) {
    let mut ids = Vec::new();
    for seed in 0..5 {
        ids.push(insert(if seed % 2 == 0 { a } else { b }, seed, at(seed)).await);
    }
    let scan = a.scan().await.unwrap();
    let found: Vec<QueueId> = scan.messages.iter().map(|m| m.id).collect();
    assert_eq!(found, ids);
    assert!(scan.quarantined.is_empty());
    for m in &scan.messages {
        let (seed, len) = super::spool::seed_of(&m.envelope);
        assert_eq!(a.body(&m.id).await.unwrap(), body_for(seed, len));
    }
}

pub async fn a_claim_excludes_every_other_handle_until_dropped(a: &dyn Spool, b: &dyn Spool) {
    let id = insert(a, 4, at(0)).await;
    let first = a.claim(&id).await.unwrap().expect("free");
    assert!(
        b.claim(&id).await.unwrap().is_none(),
        "b claimed a's message"
    );
    assert!(a.claim(&id).await.unwrap().is_none(), "claimed twice by a");
    first.release().await;
    let second = b.claim(&id).await.unwrap().expect("released");
    assert!(
        a.claim(&id).await.unwrap().is_none(),
        "a claimed b's message"
    );
    drop(second);
    // Dropping releases too, in the background for some spools.
    let third = claim_soon(a, &id).await;
    assert!(b.claim(&id).await.unwrap().is_none());
    drop(third);
    let second = claim_soon(b, &id).await;
    assert!(
        a.claim(&id).await.unwrap().is_none(),
        "a claimed b's message"
    );
    drop(second);
}

pub async fn a_message_inserted_claimed_cannot_be_claimed_until_its_claim_drops(
    a: &dyn Spool,
    b: &dyn Spool,
) {
    let (id, claim) = a
        .insert_claimed(&envelope_for(5, 10), Bytes::from(body_for(5, 10)), at(0))
        .await
        .unwrap();
    if let Some(claim) = claim {
        assert!(b.claim(&id).await.unwrap().is_none());
        assert!(
            b.claim_due(at(10), 10).await.unwrap().is_empty(),
            "due work included a claimed message"
        );
        drop(claim);
    }
    drop(claim_soon(b, &id).await);
    assert_eq!(b.body(&id).await.unwrap(), body_for(5, 10));
}

pub async fn a_state_with_the_wrong_number_of_recipients_is_refused_and_the_old_one_stays(
    a: &dyn Spool,
    _b: &dyn Spool,
) {
    let id = insert(a, 6, at(0)).await;
    let claim = a.claim(&id).await.unwrap().unwrap();
    let before = a.load(&id).await.unwrap().state;
    let mut bad = before.clone();
    bad.recipients.pop();
    bad.attempts = 9;
    let err = a.save_state(&id, &bad).await.unwrap_err();
    assert!(matches!(err, SpoolError::InvalidState { .. }), "{err}");
    assert!(!err.is_temporary());
    assert_eq!(a.load(&id).await.unwrap().state, before);
    drop(claim);
}

pub async fn the_holder_saves_and_removes_under_its_claim(a: &dyn Spool, b: &dyn Spool) {
    let id = insert(a, 8, at(0)).await;
    let claim = b.claim(&id).await.unwrap().unwrap();
    let mut state = b.load(&id).await.unwrap().state;
    state.attempts = 1;
    b.save_state(&id, &state).await.unwrap();
    b.save_state(&id, &state).await.unwrap();
    b.remove(&id).await.unwrap();
    drop(claim);
    assert!(matches!(a.load(&id).await, Err(SpoolError::NotFound(_))));
}

pub async fn claim_due_takes_due_free_unheld_messages_earliest_first_up_to_the_limit(
    a: &dyn Spool,
    b: &dyn Spool,
) {
    // Due at 30, 10, 20, 40 (held), 50 (claimed by b), 500 (not due).
    let mut ids = Vec::new();
    for (seed, due) in [(0, 30), (1, 10), (2, 20), (3, 40), (4, 50), (5, 500)] {
        let id = insert(a, seed, at(0)).await;
        let claim = a.claim(&id).await.unwrap().unwrap();
        let mut state = a.load(&id).await.unwrap().state;
        state.next_attempt = at(due);
        state.held = seed == 3;
        a.save_state(&id, &state).await.unwrap();
        claim.release().await;
        ids.push(id);
    }
    let held_by_b = b.claim(&ids[4]).await.unwrap().expect("released");
    let first = a.claim_due(at(100), 2).await.unwrap();
    let got: Vec<QueueId> = first.iter().map(|c| c.message.id).collect();
    assert_eq!(got, vec![ids[1], ids[2]], "the two earliest, in due order");
    assert_eq!(first[0].message.state.next_attempt, at(10));
    assert_eq!(first[0].message.envelope, envelope_for(1, 300));
    let rest = a.claim_due(at(100), 10).await.unwrap();
    let got: Vec<QueueId> = rest.iter().map(|c| c.message.id).collect();
    assert_eq!(
        got,
        vec![ids[0]],
        "claimed, held, b's and undue messages left out"
    );
    assert!(
        b.claim(&ids[1]).await.unwrap().is_none(),
        "claim_due claims"
    );
    drop(first);
    drop(rest);
    drop(held_by_b);
}

pub async fn two_handles_claiming_due_work_at_once_never_get_the_same_message(
    a: &dyn Spool,
    b: &dyn Spool,
) {
    let mut all = Vec::new();
    for seed in 0..40 {
        all.push(insert(a, seed, at(seed % 7)).await);
    }
    let mut seen = std::collections::HashSet::new();
    let mut held = Vec::new();
    for _ in 0..20 {
        let (x, y) = tokio::join!(a.claim_due(at(100), 3), b.claim_due(at(100), 3));
        let (x, y) = (x.unwrap(), y.unwrap());
        if x.is_empty() && y.is_empty() {
            break;
        }
        for c in x.into_iter().chain(y) {
            assert!(
                seen.insert(c.message.id),
                "{} handed out twice",
                c.message.id
            );
            held.push(c.claim);
        }
    }
    assert_eq!(
        seen.len(),
        all.len(),
        "every due message was handed out once"
    );
}

pub async fn next_due_is_the_earliest_message_not_held(a: &dyn Spool, b: &dyn Spool) {
    assert_eq!(a.next_due().await.unwrap(), None);
    let early = insert(a, 0, at(10)).await;
    insert(a, 1, at(20)).await;
    assert_eq!(b.next_due().await.unwrap(), Some(at(10)));
    assert_eq!(
        a.admin(&early, AdminAction::Hold, at(0)).await.unwrap(),
        AdminOutcome::Done
    );
    assert_eq!(b.next_due().await.unwrap(), Some(at(20)));
}

pub async fn list_pages_through_the_whole_queue_in_id_order(a: &dyn Spool, b: &dyn Spool) {
    let mut ids = Vec::new();
    for seed in 0..7 {
        ids.push(insert(if seed % 3 == 0 { b } else { a }, seed, at(seed)).await);
    }
    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = b.list(after, 3).await.unwrap();
        pages += 1;
        assert!(page.messages.len() <= 3);
        listed.extend(page.messages.iter().map(|m| m.message.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(listed, ids);
    assert_eq!(pages, 3);
    let one = a.list(Some(ids[5]), 10).await.unwrap();
    assert_eq!(one.messages.len(), 1);
    assert_eq!(one.messages[0].message.envelope, envelope_for(6, 300));
    assert_eq!(one.next, None);
}

pub async fn admin_holds_releases_flushes_and_deletes_a_free_message(a: &dyn Spool, b: &dyn Spool) {
    let id = insert(a, 0, at(0)).await;
    let claim = a.claim(&id).await.unwrap().unwrap();
    let mut state = a.load(&id).await.unwrap().state;
    state.next_attempt = at(900);
    a.save_state(&id, &state).await.unwrap();
    claim.release().await;
    let admin = |action| async move {
        let outcome = b.admin(&id, action, at(60)).await.unwrap();
        assert_eq!(outcome, AdminOutcome::Done, "{action:?} on a free message");
    };
    admin(AdminAction::Flush).await;
    assert_eq!(a.load(&id).await.unwrap().state.next_attempt, at(60));
    admin(AdminAction::Hold).await;
    assert!(a.load(&id).await.unwrap().state.held);
    assert!(
        a.claim_due(at(1000), 10).await.unwrap().is_empty(),
        "held yet due"
    );
    admin(AdminAction::Release).await;
    let s = a.load(&id).await.unwrap().state;
    assert!(!s.held);
    assert_eq!(s.next_attempt, at(60));
    admin(AdminAction::Delete).await;
    assert!(matches!(a.load(&id).await, Err(SpoolError::NotFound(_))));
}

pub async fn admin_on_a_message_being_delivered_is_never_lost_and_never_clobbers_the_outcome(
    a: &dyn Spool,
    b: &dyn Spool,
) {
    let id = insert(a, 0, at(0)).await;
    let claim = a.claim(&id).await.unwrap().unwrap();
    let mut state = a.load(&id).await.unwrap().state;
    let outcome = b.admin(&id, AdminAction::Hold, at(30)).await.unwrap();
    // The attempt ends: one recipient delivered.
    state.attempts = 1;
    state.recipients[0].status = RecipientStatus::Delivered;
    state.next_attempt = at(300);
    a.save_state(&id, &state).await.unwrap();
    claim.release().await;
    let after = a.load(&id).await.unwrap().state;
    assert_eq!(after.recipients[0].status, RecipientStatus::Delivered);
    assert_eq!(after.attempts, 1);
    match outcome {
        AdminOutcome::Deferred => assert!(after.held, "the deferred hold was dropped"),
        AdminOutcome::Busy => assert!(!after.held, "a busy answer changed the message"),
        AdminOutcome::Done => panic!("admin claimed to act on a message someone held"),
    }
    // A deferred delete removes it once the attempt ends.
    let claim = a.claim(&id).await.unwrap().expect("released");
    if b.admin(&id, AdminAction::Delete, at(40)).await.unwrap() == AdminOutcome::Deferred {
        assert!(
            matches!(a.load(&id).await, Err(SpoolError::NotFound(_))),
            "a message waiting for its deletion still loads"
        );
        a.save_state(&id, &after).await.unwrap();
        claim.release().await;
        assert!(matches!(b.load(&id).await, Err(SpoolError::NotFound(_))));
    }
}

/// An envelope with one recipient (for tests that need a different recipient count).
pub fn one_recipient() -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [Address::parse("carol@example.org").unwrap()],
    )
}
