//! PgSpool against a real PostgreSQL (a private cluster, see `support/postgres.rs`): the schema
//! and its version, leases (renewal, take-over after a node is killed with SIGKILL, fencing of
//! a node that comes back late), wake-ups, a server crash after an insert, and the server
//! stopped and started under a running spool.
//!
//! The take-over test re-executes this binary with `POSTRIDER_PG_TEST_CHILD` set: the child
//! is a node that claims messages and is then killed.

#![cfg(feature = "postgres")] // a build without the feature has no PgSpool to test

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use postrider::QueueId;
use postrider::spool::pg::{PgSpool, PgSpoolConfig, schema::SCHEMA_VERSION};
use postrider::spool::{AdminAction, AdminOutcome, Spool, SpoolError};
use support::postgres::{self, PgCluster};
use support::spool::{body_for, envelope_for};

const CHILD_ENV: &str = "POSTRIDER_PG_TEST_CHILD";

async fn node(url: &str, name: &str, lease: Duration) -> PgSpool {
    let config = PgSpoolConfig::new(url)
        .unwrap()
        .with_node(name)
        .with_lease(lease)
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    PgSpool::connect(&config).await.unwrap()
}

async fn insert(spool: &PgSpool, seed: u64) -> QueueId {
    spool
        .insert(
            &envelope_for(seed, 200),
            Bytes::from(body_for(seed, 200)),
            SystemTime::now(),
        )
        .await
        .unwrap()
}

/// Makes every lease in the database end now, as if its holder had stopped renewing long ago.
fn expire_leases(cluster: &PgCluster, url: &str) {
    cluster.psql(
        PgCluster::dbname_of(url),
        "UPDATE postrider_messages SET lease_until = now() - interval '1 second' \
         WHERE lease_until IS NOT NULL",
    );
}

#[tokio::test]
async fn a_fresh_database_gets_the_schema_once_however_many_nodes_start() {
    let cluster = postgres::shared();
    let url = cluster.database();
    let (a, b) = tokio::join!(
        node(&url, "a", Duration::from_secs(60)),
        node(&url, "b", Duration::from_secs(60))
    );
    assert_eq!(a.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(b.schema_version().await.unwrap(), SCHEMA_VERSION);
    let versions = cluster.psql(
        PgCluster::dbname_of(&url),
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM postrider_schema",
    );
    assert_eq!(versions, "1");
}

#[tokio::test]
async fn a_schema_newer_than_this_release_is_refused_for_good() {
    let cluster = postgres::shared();
    let url = cluster.database();
    drop(node(&url, "a", Duration::from_secs(60)).await);
    cluster.psql(
        PgCluster::dbname_of(&url),
        "INSERT INTO postrider_schema (version) VALUES (99)",
    );
    let err = PgSpool::connect(&PgSpoolConfig::new(&url).unwrap())
        .await
        .unwrap_err();
    assert!(!err.is_temporary(), "{err}");
    assert!(err.to_string().contains("99"), "{err}");
    assert!(err.to_string().contains("upgrade postrider"), "{err}");
}

#[tokio::test]
async fn a_database_that_does_not_exist_is_a_permanent_error_naming_it() {
    let cluster = postgres::shared();
    let err = PgSpool::connect(&PgSpoolConfig::new(&cluster.url("nosuchdb")).unwrap())
        .await
        .unwrap_err();
    assert!(!err.is_temporary(), "{err}");
    assert!(err.to_string().contains("nosuchdb"), "{err}");
}

#[tokio::test]
async fn a_node_whose_lease_ran_out_cannot_overwrite_the_state_written_by_the_node_that_took_over()
{
    let cluster = postgres::shared();
    let url = cluster.database();
    let a = node(&url, "a", Duration::from_secs(60)).await;
    let b = node(&url, "b", Duration::from_secs(60)).await;
    let id = insert(&a, 1).await;
    let old = a.claim(&id).await.unwrap().expect("free");
    let mut stale = a.load(&id).await.unwrap().state;
    // b takes the message over once the lease has ended (ended again if a's renewal, every
    // 20 s, happened to fall in between).
    let mut new = None;
    for _ in 0..3 {
        expire_leases(cluster, &url);
        new = b.claim(&id).await.unwrap();
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("taken over after the lease ended");
    // b records a delivery.
    let mut fresh = b.load(&id).await.unwrap().state;
    fresh.attempts = 1;
    fresh.recipients[0].status = postrider::spool::RecipientStatus::Delivered;
    b.save_state(&id, &fresh).await.unwrap();
    // a comes back with its stale view.
    stale.attempts = 7;
    let err = a.save_state(&id, &stale).await.unwrap_err();
    assert!(
        matches!(err, SpoolError::LeaseLost { id: x } if x == id),
        "{err}"
    );
    assert!(!err.is_temporary());
    let err = a.remove(&id).await.unwrap_err();
    assert!(matches!(err, SpoolError::LeaseLost { .. }), "{err}");
    assert_eq!(b.load(&id).await.unwrap().state, fresh);
    // The stale claim's release does not free b's lease.
    old.release().await;
    assert!(
        a.claim(&id).await.unwrap().is_none(),
        "a's release ended b's lease"
    );
    b.remove(&id).await.unwrap();
    new.release().await;
}

#[tokio::test]
async fn a_write_without_a_claim_on_a_message_another_node_holds_is_refused_as_busy() {
    let cluster = postgres::shared();
    let url = cluster.database();
    let a = node(&url, "a", Duration::from_secs(60)).await;
    let b = node(&url, "b", Duration::from_secs(60)).await;
    let id = insert(&a, 2).await;
    let claim = a.claim(&id).await.unwrap().unwrap();
    let before = a.load(&id).await.unwrap().state;
    let mut other = before.clone();
    other.attempts = 5;
    let err = b.save_state(&id, &other).await.unwrap_err();
    assert!(matches!(err, SpoolError::Busy(_)), "{err}");
    assert!(err.is_temporary());
    assert!(matches!(b.remove(&id).await, Err(SpoolError::Busy(_))));
    assert_eq!(b.load(&id).await.unwrap().state, before);
    claim.release().await;
    b.save_state(&id, &other).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_claim_past_its_lease_for_as_long_as_the_attempt_runs() {
    let cluster = postgres::shared();
    let url = cluster.database();
    let lease = Duration::from_millis(600);
    let a = node(&url, "a", lease).await;
    let b = node(&url, "b", lease).await;
    let id = insert(&a, 3).await;
    let claim = a.claim(&id).await.unwrap().unwrap();
    // Four leases long, on the server's clock: only renewal keeps it.
    let start = Instant::now();
    while start.elapsed() < lease * 4 {
        assert!(b.claim(&id).await.unwrap().is_none(), "b took a live claim");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = b.list(None, 10).await.unwrap();
    assert_eq!(
        listed.messages[0].lease.as_ref().map(|l| l.holder.as_str()),
        Some("a")
    );
    let state = a.load(&id).await.unwrap().state;
    a.save_state(&id, &state).await.unwrap();
    claim.release().await;
    assert!(b.claim(&id).await.unwrap().is_some());
}

/// The child side of the take-over test: a node that claims every due message, says which,
/// and waits to be killed.
fn doomed_node(url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let spool = node(url, "doomed", Duration::from_secs(2)).await;
        let claimed = spool.claim_due(SystemTime::now(), 100).await.unwrap();
        let mut out = std::io::stdout().lock();
        for c in &claimed {
            writeln!(out, "claimed {}", c.message.id).unwrap();
        }
        writeln!(out, "ready").unwrap();
        out.flush().unwrap();
        drop(out);
        std::mem::forget(claimed);
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
}

#[test]
fn a_killed_nodes_messages_are_taken_over_by_another_once_its_lease_ends() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        return doomed_node(&url);
    }
    let cluster = postgres::shared();
    let url = cluster.database();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let survivor = rt.block_on(node(&url, "survivor", Duration::from_secs(2)));
    let ids: HashSet<QueueId> = rt.block_on(async {
        let mut ids = HashSet::new();
        for seed in 0..10 {
            ids.insert(insert(&survivor, seed).await);
        }
        ids
    });
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_killed_nodes_messages_are_taken_over_by_another_once_its_lease_ends",
            "--exact",
            "--nocapture",
            "-q",
        ])
        .env(CHILD_ENV, &url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut claimed = HashSet::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("claimed ") {
            claimed.insert(id.parse::<QueueId>().unwrap());
        } else if line == "ready" {
            break;
        }
    }
    assert_eq!(claimed, ids, "the doomed node claimed every message");
    child.kill().unwrap(); // SIGKILL: no release, no renewal.
    child.wait().unwrap();
    let killed = Instant::now();
    rt.block_on(async {
        assert!(
            survivor
                .claim_due(SystemTime::now(), 100)
                .await
                .unwrap()
                .is_empty(),
            "messages of a node were taken before its lease ended"
        );
        let mut taken = HashSet::new();
        let mut held = Vec::new();
        while taken.len() < ids.len() {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "only {} of {} messages taken over 10 s after the kill (lease 2 s)",
                taken.len(),
                ids.len()
            );
            for c in survivor.claim_due(SystemTime::now(), 100).await.unwrap() {
                assert!(taken.insert(c.message.id), "{} taken twice", c.message.id);
                held.push(c);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(taken, ids);
        // Within the lease (plus the time the child took to say "ready") of the kill.
        assert!(
            killed.elapsed() < Duration::from_secs(4),
            "{:?}",
            killed.elapsed()
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_nodes_are_woken_by_new_mail_a_released_claim_and_an_administrators_release() {
    let cluster = postgres::shared();
    let url = cluster.database();
    let a = node(&url, "a", Duration::from_secs(60)).await;
    let b = node(&url, "b", Duration::from_secs(60)).await;
    let mut wakeups = b.wakeups().expect("PgSpool wakes other nodes");
    let wait = Duration::from_secs(10);
    // The first wake-up after connecting says "look at everything".
    let first = tokio::time::timeout(wait, wakeups.next()).await.unwrap();
    assert_eq!(first, Some(SystemTime::UNIX_EPOCH));

    let arrival = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let id = a
        .insert(&envelope_for(1, 10), Bytes::from(body_for(1, 10)), arrival)
        .await
        .unwrap();
    let woke = tokio::time::timeout(wait, wakeups.next()).await.unwrap();
    assert_eq!(woke, Some(arrival), "new mail");

    let claim = a.claim(&id).await.unwrap().unwrap();
    let mut state = a.load(&id).await.unwrap().state;
    state.next_attempt = arrival + Duration::from_secs(300);
    a.save_state(&id, &state).await.unwrap();
    claim.release().await;
    let woke = tokio::time::timeout(wait, wakeups.next()).await.unwrap();
    assert_eq!(
        woke,
        Some(arrival + Duration::from_secs(300)),
        "released claim"
    );

    assert_eq!(
        a.admin(&id, AdminAction::Hold, arrival).await.unwrap(),
        AdminOutcome::Done
    );
    let release_at = arrival + Duration::from_secs(60);
    assert_eq!(
        a.admin(&id, AdminAction::Release, release_at)
            .await
            .unwrap(),
        AdminOutcome::Done
    );
    let woke = tokio::time::timeout(wait, wakeups.next()).await.unwrap();
    assert_eq!(woke, Some(release_at), "administrator's release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_waiting_for_a_killed_holder_is_applied_by_the_node_that_takes_over() {
    let cluster = postgres::shared();
    let url = cluster.database();
    let a = node(&url, "a", Duration::from_secs(60)).await;
    let b = node(&url, "b", Duration::from_secs(60)).await;
    let id = insert(&a, 4).await;
    let claim = a.claim(&id).await.unwrap().unwrap();
    assert_eq!(
        b.admin(&id, AdminAction::Hold, SystemTime::now())
            .await
            .unwrap(),
        AdminOutcome::Deferred
    );
    assert!(
        b.load(&id).await.unwrap().state.held,
        "readers see the hold at once"
    );
    std::mem::forget(claim); // a dies holding it
    expire_leases(cluster, &url);
    assert!(
        b.claim_due(SystemTime::now() + Duration::from_secs(1), 10)
            .await
            .unwrap()
            .is_empty(),
        "a held message was handed out"
    );
    let stored = cluster.psql(
        PgCluster::dbname_of(&url),
        &format!("SELECT held, admin_request IS NULL FROM postrider_messages WHERE id = '{id}'"),
    );
    assert_eq!(stored, "t|t", "the hold was applied durably");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_that_returned_survives_a_server_crash() {
    let cluster = PgCluster::start();
    let url = cluster.database();
    let a = node(&url, "a", Duration::from_secs(60)).await;
    let mut ids = Vec::new();
    for seed in 0..20 {
        ids.push(insert(&a, seed).await);
    }
    drop(a);
    // Immediate mode: the postmaster kills every backend, no checkpoint; recovery replays WAL.
    cluster.crash();
    cluster.start_again();
    let a = node(&url, "a", Duration::from_secs(60)).await;
    let found: Vec<QueueId> = a
        .scan()
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(found, ids);
    for (seed, id) in ids.iter().enumerate() {
        assert_eq!(a.body(id).await.unwrap(), body_for(seed as u64, 200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_down_every_call_fails_temporarily_and_then_the_spool_recovers() {
    let cluster = PgCluster::start();
    let url = cluster.database();
    let a = node(&url, "a", Duration::from_secs(60)).await;
    let mut wakeups = a.wakeups().unwrap();
    let kept = insert(&a, 1).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), wakeups.next()).await;
    cluster.stop();

    let mut refused = 0;
    for seed in 100..105 {
        let err = a
            .insert(
                &envelope_for(seed, 10),
                Bytes::from(body_for(seed, 10)),
                SystemTime::now(),
            )
            .await
            .expect_err("an insert succeeded with the server down");
        assert!(err.is_temporary(), "{err}");
        refused += 1;
    }
    for err in [
        a.load(&kept).await.unwrap_err(),
        a.body(&kept).await.unwrap_err(),
        a.claim(&kept).await.map(|_| ()).unwrap_err(),
        a.scan().await.map(|_| ()).unwrap_err(),
        a.claim_due(SystemTime::now(), 10)
            .await
            .map(|_| ())
            .unwrap_err(),
        a.remove(&kept).await.unwrap_err(),
    ] {
        assert!(err.is_temporary(), "{err}");
        assert!(matches!(err, SpoolError::Database { .. }), "{err}");
    }

    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        match a
            .insert(
                &envelope_for(7, 10),
                Bytes::from(body_for(7, 10)),
                SystemTime::now(),
            )
            .await
        {
            Ok(id) => break id,
            Err(e) => {
                assert!(e.is_temporary(), "{e}");
                assert!(
                    Instant::now() < deadline,
                    "no recovery 20 s after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let ids: Vec<QueueId> = a
        .scan()
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids,
        vec![kept, id],
        "{refused} refused inserts left nothing behind"
    );
    // The wake-up connection came back too, and says so.
    let woke = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if wakeups.next().await == Some(SystemTime::UNIX_EPOCH) {
                return;
            }
        }
    })
    .await;
    assert!(woke.is_ok(), "wake-ups did not reconnect");
}
