//! FsSpool against a real file system: the layout, atomic state changes in place, claims,
//! cleanup after interrupted inserts, quarantine of damaged files, a full disk, a read-only
//! spool, the streaming listing, the commit modes, and the conversion of a format-1 spool.

mod support;
use support::spool as spool_support;
use support::tmpfs;

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bytes::Bytes;
use postrider::QueueId;
use postrider::spool::fs::{CommitMode, FsSpoolOptions};
use postrider::spool::{FsSpool, RecipientStatus, Spool, SpoolError};
use postrider::{Diagnostic, EnhancedStatus, Reply};
use spool_support::{body_for, envelope, envelope_for, insert_seeded, names, seed_of};
use tmpfs::Tmpfs;

fn queue(spool: &FsSpool) -> std::path::PathBuf {
    spool.path().join("queue")
}

fn message_path(spool: &FsSpool, id: &QueueId) -> std::path::PathBuf {
    spool_support::message_path(spool.path(), id)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn an_inserted_message_is_listed_loaded_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path().join("spool")).unwrap();
    let body = body_for(7, 5000);
    let id = spool
        .insert(
            &envelope_for(7, 5000),
            Bytes::from(body.clone()),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();

    assert_eq!(spool.body(&id).await.unwrap(), body);
    let loaded = spool.load(&id).await.unwrap();
    assert_eq!(loaded.id, id);
    assert_eq!(loaded.envelope, envelope_for(7, 5000));
    assert_eq!(loaded.state.size, 5000);
    assert_eq!(loaded.state.recipients.len(), 2);
    assert!(!loaded.state.is_done());

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages, vec![loaded]);
    assert!(scan.quarantined.is_empty());
    assert_eq!(scan.orphans_removed, 0);
}

#[tokio::test]
async fn a_message_is_one_file_whose_header_and_envelope_an_administrator_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let id = spool
        .insert(
            &envelope(),
            Bytes::from_static(b"hello\r\n"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    assert_eq!(names(&queue(&spool)), [id.to_string()]);
    let bytes = fs::read(message_path(&spool, &id)).unwrap();
    assert!(bytes.starts_with(b"PRSPOOL\n"));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(id.as_str()), "{text}");
    assert!(text.contains("{\"sender\":\"pbx@example.com\""), "{text}");
    assert!(text.contains("\"alice@example.org\""), "{text}");
    assert!(bytes.ends_with(b"hello\r\n"));
    assert!(names(&spool.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn files_are_private_to_the_owner_and_directories_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let spool = FsSpool::open(&root).unwrap();
    let id = spool
        .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
        .await
        .unwrap();
    for d in ["", "queue", "tmp", "corrupt"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}/");
    }
    assert_eq!(mode(&message_path(&spool, &id)), 0o600);
    let mut state = spool.load(&id).await.unwrap().state;
    state.held = true;
    spool.save_state(&id, &state).await.unwrap();
    assert_eq!(mode(&message_path(&spool, &id)), 0o600);
}

#[tokio::test]
async fn save_state_rewrites_the_file_in_place_and_the_new_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let id = spool
        .insert(
            &envelope(),
            Bytes::from_static(b"x"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    let before = fs::metadata(message_path(&spool, &id)).unwrap();

    let mut state = spool.load(&id).await.unwrap().state;
    for n in 1..=5 {
        state.attempts = n;
        state.recipients[1].status = RecipientStatus::Delivered;
        spool.save_state(&id, &state).await.unwrap();
        assert_eq!(spool.load(&id).await.unwrap().state, state);
    }

    // In place: the same inode (a claim's lock on it still holds), the same size (the slots
    // were reserved at insert), nothing written anywhere else.
    let after = fs::metadata(message_path(&spool, &id)).unwrap();
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.len(), before.len());
    assert!(names(&spool.path().join("tmp")).is_empty());
    assert_eq!(names(&queue(&spool)), [id.to_string()]);

    drop(spool);
    let reopened = FsSpool::open(dir.path()).unwrap();
    assert_eq!(reopened.load(&id).await.unwrap().state, state);
    assert_eq!(reopened.body(&id).await.unwrap(), Bytes::from_static(b"x"));
}

#[tokio::test]
async fn a_state_too_large_for_its_slot_is_saved_shortened_with_every_status_intact() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let id = spool
        .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
        .await
        .unwrap();
    let mut state = spool.load(&id).await.unwrap().state;
    state.recipients[0].status = RecipientStatus::Delivered;
    state.recipients[0].attempts = 1;
    state.recipients[1].attempts = 7;
    // A long multi-line reply (some servers send a page of explanation).
    let long = "Our policy does not allow this message. ".repeat(200);
    state.recipients[1].last = Some(Diagnostic::remote(
        Reply::new(451, Some(EnhancedStatus::new(4, 7, 1)), long.clone()).unwrap(),
    ));
    spool.save_state(&id, &state).await.unwrap();
    let back = spool.load(&id).await.unwrap().state;
    assert_eq!(back.recipients[0], state.recipients[0]);
    assert_eq!(back.recipients[1].attempts, 7);
    assert_eq!(back.recipients[1].status, RecipientStatus::Pending);
    let reply = back.recipients[1]
        .last
        .as_ref()
        .unwrap()
        .reply
        .as_ref()
        .unwrap();
    assert_eq!(
        (reply.code(), reply.enhanced()),
        (451, Some(EnhancedStatus::new(4, 7, 1)))
    );
    assert!(reply.text().len() < long.len());
    assert!(long.starts_with(reply.text().trim_end_matches('…')));
}

#[tokio::test]
async fn a_state_that_does_not_fit_the_envelope_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let id = spool
        .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
        .await
        .unwrap();
    let before = spool.load(&id).await.unwrap();
    let mut state = before.state.clone();
    state.recipients.pop();
    let err = spool.save_state(&id, &state).await.unwrap_err();
    assert!(matches!(err, SpoolError::InvalidState { .. }), "{err:?}");
    assert!(!err.is_temporary());
    assert_eq!(spool.load(&id).await.unwrap(), before);
}

#[tokio::test]
async fn a_removed_message_is_gone_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let keep = spool
        .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
        .await
        .unwrap();
    let id = spool
        .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
        .await
        .unwrap();
    spool.remove(&id).await.unwrap();

    assert_eq!(names(&queue(&spool)), [keep.to_string()]);
    assert!(matches!(spool.load(&id).await, Err(SpoolError::NotFound(x)) if x == id));
    assert!(matches!(
        spool.body(&id).await,
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.claim(&id).await,
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.remove(&id).await,
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool
            .save_state(&id, &spool.load(&keep).await.unwrap().state)
            .await,
        Err(SpoolError::NotFound(_))
    ));
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, keep);
}

#[tokio::test]
async fn scan_lists_messages_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            spool
                .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
                .await
                .unwrap(),
        );
    }
    let listed: Vec<QueueId> = spool
        .scan()
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, ids);
}

#[tokio::test]
async fn a_claim_excludes_a_second_claim_in_the_same_process_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let other_handle = FsSpool::open(dir.path()).unwrap();
    let id = spool
        .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
        .await
        .unwrap();

    let first = spool.claim(&id).await.unwrap();
    assert!(first.is_some());
    assert!(spool.claim(&id).await.unwrap().is_none());
    assert!(other_handle.claim(&id).await.unwrap().is_none());
    // Saving state and removing under the claim work (the engine does both while holding it).
    let state = spool.load(&id).await.unwrap().state;
    spool.save_state(&id, &state).await.unwrap();
    assert!(spool.claim(&id).await.unwrap().is_none());
    drop(first);
    let again = other_handle.claim(&id).await.unwrap();
    assert!(again.is_some());
    spool.remove(&id).await.unwrap();
    drop(again);
    assert!(matches!(
        spool.claim(&id).await,
        Err(SpoolError::NotFound(_))
    ));
    let unknown = QueueId::generate();
    assert!(matches!(
        spool.claim(&unknown).await,
        Err(SpoolError::NotFound(_))
    ));
}

#[tokio::test]
async fn leftovers_of_interrupted_inserts_are_removed_by_scan() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let id = spool
        .insert(
            &envelope(),
            Bytes::from_static(b"kept"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    // What writers killed mid-insert leave: half-written message files in tmp/.
    let dead = QueueId::generate();
    let tmp = spool.path().join("tmp");
    fs::write(tmp.join(format!("{dead}.1.0.tmp")), b"PRSPOOL\n\x02\0").unwrap();
    let whole = fs::read(message_path(&spool, &id)).unwrap();
    fs::write(tmp.join(format!("{dead}.1.1.tmp")), whole).unwrap();

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.orphans_removed, 2);
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, id);
    assert!(scan.quarantined.is_empty());
    assert_eq!(names(&queue(&spool)), [id.to_string()]);
    assert!(names(&tmp).is_empty());
    assert_eq!(spool.scan().await.unwrap().orphans_removed, 0);
}

#[tokio::test]
async fn files_a_live_writer_holds_are_left_alone_by_scan() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    // An insert in flight in another process: its file written and locked in tmp/.
    let inflight = QueueId::generate();
    let tmp = spool.path().join("tmp").join(format!("{inflight}.1.0.tmp"));
    fs::write(&tmp, b"PRSPOOL\n").unwrap();
    let tmp_lock = File::open(&tmp).unwrap();
    tmp_lock.lock().unwrap();

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.orphans_removed, 0);
    assert!(scan.messages.is_empty());
    assert!(tmp.exists());
    // Nor can it be claimed: it is not a message until it is renamed into queue/.
    assert!(matches!(
        spool.claim(&inflight).await,
        Err(SpoolError::NotFound(_))
    ));

    drop(tmp_lock);
    assert_eq!(spool.scan().await.unwrap().orphans_removed, 1);
    assert!(!tmp.exists());
}

#[tokio::test]
async fn damaged_message_files_are_quarantined_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            spool
                .insert(
                    &envelope(),
                    Bytes::from_static(b"body\r\n"),
                    std::time::SystemTime::now(),
                )
                .await
                .unwrap(),
        );
    }
    let [good, garbage, future, truncated, stranger, slots] = ids[..] else {
        unreachable!()
    };
    fs::write(message_path(&spool, &garbage), b"\xff\xfe not a message").unwrap();
    let mut bytes = fs::read(message_path(&spool, &future)).unwrap();
    bytes[8] = 4;
    fs::write(message_path(&spool, &future), &bytes).unwrap();
    let bytes = fs::read(message_path(&spool, &truncated)).unwrap();
    fs::write(message_path(&spool, &truncated), &bytes[..bytes.len() - 3]).unwrap();
    // A file copied over another's name.
    fs::copy(message_path(&spool, &good), message_path(&spool, &stranger)).unwrap();
    // Both state slots damaged (bit rot; a torn write damages at most one).
    let mut bytes = fs::read(message_path(&spool, &slots)).unwrap();
    bytes[512 + 20] ^= 1;
    bytes[512 + 1024 + 20] ^= 1;
    bytes[512 + 1024] = 1;
    fs::write(message_path(&spool, &slots), &bytes).unwrap();

    assert!(matches!(
        spool.load(&future).await,
        Err(SpoolError::Corrupt { .. })
    ));
    assert!(matches!(
        spool
            .save_state(&stranger, &spool.load(&good).await.unwrap().state)
            .await,
        Err(SpoolError::Corrupt { .. })
    ));

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, good);
    let reasons: Vec<(String, String)> = scan
        .quarantined
        .iter()
        .map(|q| {
            (
                q.path.file_name().unwrap().to_str().unwrap().to_string(),
                q.reason.clone(),
            )
        })
        .collect();
    let expect = |id: &QueueId, needle: &str| {
        let name = id.to_string();
        let (_, reason) = reasons
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} not quarantined: {reasons:?}"));
        assert!(reason.contains(needle), "{name}: {reason}");
    };
    expect(&garbage, "not a postrider message file");
    expect(&future, "format 4 is not supported");
    expect(&truncated, "cut short");
    expect(&stranger, &format!("names message {good}"));
    expect(&slots, "neither state slot is readable");
    assert_eq!(scan.quarantined.len(), 5);

    // Nothing was deleted: every file sits in corrupt/ as it was.
    let corrupt = spool.path().join("corrupt");
    for q in &scan.quarantined {
        assert!(q.path.starts_with(&corrupt) && q.path.exists(), "{q:?}");
    }
    assert_eq!(
        fs::read(corrupt.join(garbage.to_string())).unwrap(),
        b"\xff\xfe not a message"
    );
    assert_eq!(names(&queue(&spool)), [good.to_string()]);

    let again = spool.scan().await.unwrap();
    assert!(again.quarantined.is_empty());
    assert_eq!(again.orphans_removed, 0);
    assert_eq!(names(&corrupt).len(), 5);
}

/// What a power loss during an insert can leave under the message's name. An insert names
/// its file before flushing it and returns the id only once data and name are durable, so
/// none of these was ever acknowledged; none may pass for a message.
#[tokio::test]
async fn files_a_power_loss_cut_short_are_never_taken_for_messages() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for seed in 0..5 {
        let body = Bytes::from(body_for(seed, 6000));
        let id = spool
            .insert(
                &envelope_for(seed, 6000),
                body,
                std::time::SystemTime::now(),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let [good, empty, zeros, zero_body, stale_body] = ids[..] else {
        unreachable!()
    };
    let len = fs::metadata(message_path(&spool, &good)).unwrap().len() as usize;
    // Nothing of the data reached the disk: the name did, with or without the size.
    fs::write(message_path(&spool, &empty), b"").unwrap();
    fs::write(message_path(&spool, &zeros), vec![0u8; len]).unwrap();
    // The first blocks (header, envelope, slots) did; the body's read as zeros, or as what a
    // recycled file held before: another message's body of the same length.
    let mut bytes = fs::read(message_path(&spool, &zero_body)).unwrap();
    bytes[len - 4000..].fill(0);
    fs::write(message_path(&spool, &zero_body), &bytes).unwrap();
    let mut bytes = fs::read(message_path(&spool, &stale_body)).unwrap();
    let other = fs::read(message_path(&spool, &good)).unwrap();
    bytes[len - 4000..].copy_from_slice(&other[len - 4000..]);
    fs::write(message_path(&spool, &stale_body), &bytes).unwrap();

    let spool = FsSpool::open(dir.path()).unwrap();
    let scan = spool.scan().await.unwrap();
    // The empty file held nothing: deleted, as a leftover of an interrupted insert.
    assert_eq!(scan.orphans_removed, 1);
    assert!(!message_path(&spool, &empty).exists());
    assert_eq!(scan.quarantined.len(), 1, "{:?}", scan.quarantined);
    assert!(
        scan.quarantined[0]
            .reason
            .contains("not a postrider message file"),
        "{:?}",
        scan.quarantined[0]
    );
    // A torn body is found when the body is read: the metadata alone reads well.
    let listed: Vec<QueueId> = scan.messages.iter().map(|m| m.id).collect();
    assert_eq!(listed, [good, zero_body, stale_body]);
    let corrupt = spool.path().join("corrupt");
    for torn in [zero_body, stale_body] {
        match spool.body(&torn).await {
            Err(SpoolError::Corrupt { path, reason }) => {
                assert!(reason.contains("body's checksum"), "{reason}");
                assert_eq!(path, corrupt.join(torn.to_string()));
                assert!(path.exists());
            }
            other => panic!("{torn}: {other:?}"),
        }
        assert!(matches!(
            spool.load(&torn).await,
            Err(SpoolError::NotFound(_))
        ));
    }
    assert_eq!(spool.body(&good).await.unwrap(), body_for(0, 6000));
    let again = spool.scan().await.unwrap();
    assert_eq!(again.messages.len(), 1);
    assert!(again.quarantined.is_empty() && again.orphans_removed == 0);
    assert_eq!(names(&corrupt).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_never_sends_a_torn_body_and_takes_it_out_of_the_queue() {
    use std::sync::Arc;
    use support::engine::{DomainRouter, ScriptedTransport, ok};

    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for seed in [1, 2] {
        let id = spool
            .insert(
                &envelope_for(seed, 5000),
                Bytes::from(body_for(seed, 5000)),
                std::time::SystemTime::now(),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let torn = ids[1];
    let mut bytes = fs::read(message_path(&spool, &torn)).unwrap();
    let n = bytes.len();
    bytes[n - 100..].fill(0);
    fs::write(message_path(&spool, &torn), &bytes).unwrap();

    let clock = postrider::engine::Clock::system();
    let transport = ScriptedTransport::new(clock, Box::new(|_| ok()));
    let engine = postrider::engine::Engine::builder()
        .hostname("mta.test.example".parse().unwrap())
        .spool(Arc::new(FsSpool::open(dir.path()).unwrap()))
        .router(Arc::new(DomainRouter))
        .transport(transport.clone())
        .clock(clock)
        .start()
        .await
        .unwrap();
    let queue_dir = queue(&spool);
    for _ in 0..500 {
        if names(&queue_dir).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(names(&queue_dir).is_empty(), "{:?}", names(&queue_dir));
    let sent: Vec<Bytes> = transport
        .calls()
        .iter()
        .flat_map(|c| c.messages.iter().map(|(_, _, body)| body.clone()))
        .collect();
    // Each recipient's domain is a route of its own: the good message goes once per route,
    // the torn one never.
    let good = Bytes::from(body_for(1, 5000));
    assert_eq!(sent.len(), envelope_for(1, 5000).recipients.len());
    assert!(
        sent.iter().all(|body| *body == good),
        "a torn body was sent"
    );
    assert_eq!(names(&dir.path().join("corrupt")), [torn.to_string()]);
    assert!(engine.list().await.unwrap().is_empty());
    engine.shutdown().await;
}

/// A message file as the previous release wrote it: format 2, durable before it was named,
/// with no body checksum.
fn as_format_2(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    bytes[56..60].fill(0);
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_message_file_of_format_2_is_read_and_updated_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let body = body_for(9, 3000);
    let id = spool
        .insert(
            &envelope_for(9, 3000),
            Bytes::from(body.clone()),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    let path = message_path(&spool, &id);
    assert_eq!(fs::read(&path).unwrap()[8], 3);
    as_format_2(&path);
    // A damaged body of format 2 cannot be told from a whole one: that file was durable before
    // it was named, so the scan and the read trust it as they always did.
    let spool = FsSpool::open(dir.path()).unwrap();
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert!(scan.quarantined.is_empty());
    assert_eq!(spool.body(&id).await.unwrap(), body);
    let mut state = scan.messages[0].state.clone();
    state.recipients[0].status = RecipientStatus::Delivered;
    spool.save_state(&id, &state).await.unwrap();
    assert_eq!(spool.load(&id).await.unwrap().state, state);
    assert_eq!(fs::read(&path).unwrap()[8], 2, "the file keeps its format");
}

#[tokio::test]
async fn a_second_quarantine_of_the_same_id_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let id = spool
        .insert(
            &envelope(),
            Bytes::from_static(b"2nd"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    let corrupt = spool.path().join("corrupt");
    fs::write(corrupt.join(id.to_string()), b"first").unwrap();
    fs::write(message_path(&spool, &id), b"second").unwrap();

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.quarantined.len(), 1);
    assert_eq!(scan.quarantined[0].path, corrupt.join(format!("{id}.1")));
    assert_eq!(fs::read(corrupt.join(id.to_string())).unwrap(), b"first");
    assert_eq!(
        fs::read(corrupt.join(format!("{id}.1"))).unwrap(),
        b"second"
    );
}

/// `tasks` concurrent tasks each insert `each` seeded messages (seed `task * 100 + i`, of
/// `len(seed)` octets); their ids, oldest first.
async fn insert_from_tasks(
    spool: &FsSpool,
    tasks: u64,
    each: u64,
    len: fn(u64) -> usize,
) -> Vec<QueueId> {
    let tasks: Vec<_> = (0..tasks)
        .map(|t| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for seed in (0..each).map(|i| t * 100 + i) {
                    ids.push(insert_seeded(&spool, seed, len(seed)).await);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn many_concurrent_inserts_all_land_intact() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let ids = insert_from_tasks(&spool, 64, 8, |seed| 100 + (seed as usize * 37) % 3000).await;
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    for m in &scan.messages {
        let (seed, len) = seed_of(&m.envelope);
        assert_eq!(spool.body(&m.id).await.unwrap(), body_for(seed, len));
    }
}

#[tokio::test]
async fn a_scan_of_hundreds_of_messages_keeps_arrival_order_and_sets_damaged_ones_aside() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let mut ids = insert_from_tasks(&spool, 60, 10, |_| 300).await;
    // One damaged file near the start, one empty near the end.
    let (damaged, empty) = (ids.remove(7), ids.remove(590));
    fs::write(message_path(&spool, &damaged), vec![0u8; 700]).unwrap();
    fs::write(message_path(&spool, &empty), b"").unwrap();

    let scan = FsSpool::open(dir.path()).unwrap().scan().await.unwrap();
    assert_eq!(scan.messages.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    for m in scan.messages.iter().step_by(97) {
        let (seed, len) = seed_of(&m.envelope);
        assert_eq!(spool.body(&m.id).await.unwrap(), body_for(seed, len));
    }
    assert_eq!(scan.quarantined.len(), 1, "{:?}", scan.quarantined);
    assert!(scan.quarantined[0].path.ends_with(damaged.to_string()));
    assert_eq!(scan.orphans_removed, 1);
    assert!(!message_path(&spool, &empty).exists());
}

#[tokio::test]
async fn a_streamed_scan_hands_over_what_a_full_scan_finds_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    // More than two of the batches the spool's reading thread hands over.
    let mut ids = insert_from_tasks(&spool, 60, 10, |_| 300).await;
    let damaged = ids.remove(300);
    fs::write(message_path(&spool, &damaged), vec![0u8; 700]).unwrap();

    let mut streamed = Vec::new();
    let report = FsSpool::open(dir.path())
        .unwrap()
        .scan_each(&mut |m| streamed.push(m))
        .await
        .unwrap();
    assert!(report.messages.is_empty());
    assert_eq!(streamed.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(report.quarantined.len(), 1, "{:?}", report.quarantined);
    assert!(report.quarantined[0].path.ends_with(damaged.to_string()));

    let full = FsSpool::open(dir.path()).unwrap().scan().await.unwrap();
    assert_eq!(full.messages, streamed);
    assert!(full.quarantined.is_empty(), "set aside once");
}

#[test]
fn a_path_that_is_not_a_directory_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spool");
    fs::write(&file, b"").unwrap();
    let err = FsSpool::open(&file).unwrap_err();
    assert!(matches!(err, SpoolError::Config { .. }), "{err:?}");
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    fs::write(file.join("queue"), b"").unwrap();
    let err = FsSpool::open(&file).unwrap_err();
    assert!(matches!(err, SpoolError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[tokio::test]
async fn a_full_disk_refuses_the_insert_and_keeps_every_earlier_message() {
    let fs_ = Tmpfs::mount("64k");
    let spool = FsSpool::open(fs_.path().join("spool")).unwrap();
    let mut accepted = Vec::new();
    let err = loop {
        let seed = accepted.len() as u64;
        match spool
            .insert(
                &envelope_for(seed, 4096),
                Bytes::from(body_for(seed, 4096)),
                std::time::SystemTime::now(),
            )
            .await
        {
            Ok(id) => accepted.push(id),
            Err(e) => break e,
        }
        assert!(accepted.len() < 64, "a 64 KiB file system never filled up");
    };
    assert!(matches!(err, SpoolError::NoSpace { .. }), "{err:?}");
    assert!(err.is_temporary());
    assert!(err.to_string().contains("full"), "{err}");
    assert!(!accepted.is_empty());

    // The refused message left nothing behind, and every accepted one is intact.
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.orphans_removed, 0);
    assert!(scan.quarantined.is_empty());
    assert_eq!(
        scan.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        accepted
    );
    for m in &scan.messages {
        let (seed, len) = seed_of(&m.envelope);
        assert_eq!(spool.body(&m.id).await.unwrap(), body_for(seed, len));
    }
    assert_eq!(names(&queue(&spool)).len(), accepted.len());
    assert!(names(&spool.path().join("tmp")).is_empty());

    // Space freed, the spool accepts mail again.
    spool.remove(&accepted[0]).await.unwrap();
    spool.remove(&accepted[1]).await.unwrap();
    spool
        .insert(
            &envelope_for(99, 4096),
            Bytes::from(body_for(99, 4096)),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    drop(spool);
}

#[tokio::test]
async fn with_the_disk_full_deliveries_are_still_recorded_and_messages_removed() {
    for mode in [CommitMode::PerFile, CommitMode::FileSystem] {
        disk_full_state_updates(mode).await;
    }
}

/// Less than a page free: tmpfs allocates by the page, so nothing new fits.
const FULL: u64 = 4096;

async fn disk_full_state_updates(mode: CommitMode) {
    let fs_ = Tmpfs::mount("512k");
    let spool =
        FsSpool::open_with(fs_.path().join("spool"), FsSpoolOptions::new().commit(mode)).unwrap();
    let mut ids = Vec::new();
    for seed in 0..24u64 {
        ids.push(insert_seeded(&spool, seed, 4096).await);
    }
    fs_.fill();
    let err = spool
        .insert(
            &envelope_for(99, 4096),
            Bytes::from(body_for(99, 4096)),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SpoolError::NoSpace { .. }),
        "{mode:?}: {err:?}"
    );
    // Whatever the refused insert gave back is taken again: the disk is full to the page.
    fs_.fill();
    assert!(fs_.free_bytes() < FULL, "{mode:?}: {}", fs_.free_bytes());

    // Every state change the engine makes after a session's message, many times over, on a
    // disk without a free block: one recipient delivered, the other deferred with a reply
    // that is sometimes too long for its slot (stored shortened).
    let mut states = Vec::new();
    for id in &ids {
        states.push(spool.load(id).await.unwrap().state);
    }
    for round in 1..=20u32 {
        for (id, state) in ids.iter().zip(states.iter_mut()) {
            state.attempts = round;
            state.recipients[0].status = RecipientStatus::Delivered;
            state.recipients[0].attempts = round;
            state.recipients[1].attempts = round;
            let text = format!("greylisted, try again (round {round})");
            let text = if round % 5 == 0 {
                text.repeat(100)
            } else {
                text
            };
            state.recipients[1].last = Some(Diagnostic::remote(
                Reply::new(451, Some(EnhancedStatus::new(4, 7, 1)), text).unwrap(),
            ));
            spool
                .save_state(id, state)
                .await
                .unwrap_or_else(|e| panic!("{mode:?} round {round}: {e}"));
        }
        assert!(fs_.free_bytes() < FULL, "{mode:?} round {round}");
    }
    for (id, state) in ids.iter().zip(&states) {
        let back = spool.load(id).await.unwrap().state;
        assert_eq!(back.attempts, 20, "{mode:?}");
        assert_eq!(back.recipients[0], state.recipients[0], "{mode:?}");
        assert_eq!(back.recipients[1].attempts, 20, "{mode:?}");
    }
    // And removing delivered messages works too, many in a row, still without a free block
    // (their files become spares, which keep their blocks).
    for id in &ids[..20] {
        spool
            .remove(id)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: remove {id}: {e}"));
    }
    // A message larger than any spare does not fit: refused, and the refusal gives the spares'
    // space back, so the sender's retry is accepted.
    assert!(fs_.free_bytes() < FULL, "{mode:?}: {}", fs_.free_bytes());
    let big = |seed| {
        (
            envelope_for(seed, 16_384),
            Bytes::from(body_for(seed, 16_384)),
        )
    };
    let (env, body) = big(100);
    let err = spool
        .insert(&env, body, std::time::SystemTime::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SpoolError::NoSpace { .. }),
        "{mode:?}: {err:?}"
    );
    assert!(fs_.free_bytes() > 16_384, "{mode:?}: {}", fs_.free_bytes());
    let (env, body) = big(100);
    let retried = spool
        .insert(&env, body, std::time::SystemTime::now())
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: the retry: {e}"));
    // Spares are not messages; nothing else changed.
    let scan = spool.scan().await.unwrap();
    assert_eq!(
        scan.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[20..]
            .iter()
            .copied()
            .chain([retried])
            .collect::<Vec<_>>(),
        "{mode:?}"
    );
    assert_eq!(
        scan.messages[3].state.recipients[0],
        states[23].recipients[0]
    );

    drop(spool);
}

#[tokio::test]
async fn a_read_only_spool_refuses_writes_as_not_writable_but_still_lists() {
    let fs_ = Tmpfs::mount("1m");
    let root = fs_.path().join("spool");
    let spool = FsSpool::open(&root).unwrap();
    let id = spool
        .insert(
            &envelope(),
            Bytes::from_static(b"before"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    fs_.remount_read_only();

    let err = spool
        .insert(
            &envelope(),
            Bytes::from_static(b"after"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SpoolError::NotWritable { .. }), "{err:?}");
    assert!(err.to_string().contains("not writable"), "{err}");
    // A state update says which file it could not write, and why.
    let mut state = spool.load(&id).await.unwrap().state;
    state.recipients[0].status = RecipientStatus::Delivered;
    let err = spool.save_state(&id, &state).await.unwrap_err();
    assert!(matches!(err, SpoolError::NotWritable { .. }), "{err:?}");
    assert!(err.to_string().contains(id.as_str()), "{err}");
    assert!(err.to_string().contains("Read-only file system"), "{err}");
    let err = spool.remove(&id).await.unwrap_err();
    assert!(matches!(err, SpoolError::NotWritable { .. }), "{err:?}");

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, id);
    assert!(!scan.messages[0].state.is_done());
    assert_eq!(
        spool.body(&id).await.unwrap(),
        Bytes::from_static(b"before")
    );
    assert!(matches!(
        FsSpool::open(&root),
        Err(SpoolError::NotWritable { .. })
    ));
    // Opened read-only on purpose (mailq), it lists the same, and refuses writes up front.
    let reader = FsSpool::open_with(&root, FsSpoolOptions::new().read_only(true)).unwrap();
    let listed: Vec<QueueId> = reader.listing().unwrap().map(|m| m.unwrap().id).collect();
    assert_eq!(listed, [id]);
    assert_eq!(reader.scan().await.unwrap().messages.len(), 1);
    let err = reader.remove(&id).await.unwrap_err();
    assert!(err.to_string().contains("opened read-only"), "{err}");
    drop(spool);
}

#[tokio::test]
async fn the_listing_streams_every_message_oldest_first_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for seed in 0..10u64 {
        ids.push(insert_seeded(&spool, seed, 100).await);
    }
    fs::write(message_path(&spool, &ids[3]), b"damaged").unwrap();
    let mut listing = spool.listing().unwrap();
    assert_eq!(listing.remaining(), 10);
    let first = listing.next().unwrap().unwrap();
    assert_eq!(first.envelope, envelope_for(0, 100));
    // Removed while the listing runs: skipped, not an error.
    spool.remove(&ids[5]).await.unwrap();
    let rest: Vec<_> = listing.collect();
    assert_eq!(rest.len(), 8);
    match &rest[2] {
        Err(SpoolError::Corrupt { path, reason }) => {
            assert_eq!(path, &message_path(&spool, &ids[3]));
            assert!(reason.contains("not a postrider message file"), "{reason}");
        }
        other => panic!("expected the damaged file, got {other:?}"),
    }
    let listed: Vec<QueueId> = rest
        .iter()
        .filter_map(|m| m.as_ref().ok())
        .map(|m| m.id)
        .collect();
    let mut want = ids[1..].to_vec();
    want.retain(|id| *id != ids[3] && *id != ids[5]);
    assert_eq!(listed, want);
    // Unlike a scan, the listing quarantined nothing.
    assert!(message_path(&spool, &ids[3]).exists());
    assert!(names(&spool.path().join("corrupt")).is_empty());
}

#[tokio::test]
async fn paging_through_the_queue_goes_on_from_the_first_pages_reading_of_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for seed in 0..6u64 {
        ids.push(insert_seeded(&spool, seed, 100).await);
    }
    let page = |after| spool.list(after, 2);
    let first = page(None).await.unwrap();
    let listed: Vec<QueueId> = first.messages.iter().map(|m| m.message.id).collect();
    assert_eq!(listed, ids[..2]);
    assert_eq!(first.next, Some(ids[1]));
    // Between pages one message is delivered and another queued.
    spool.remove(&ids[2]).await.unwrap();
    let late = insert_seeded(&spool, 6, 100).await;
    let second = page(first.next).await.unwrap();
    let listed: Vec<QueueId> = second.messages.iter().map(|m| m.message.id).collect();
    assert_eq!(listed, [ids[3], ids[4]], "the removed one is skipped");
    let third = page(second.next).await.unwrap();
    let listed: Vec<QueueId> = third.messages.iter().map(|m| m.message.id).collect();
    assert_eq!(
        listed,
        [ids[5]],
        "the continued listing is the directory as its first page read it"
    );
    assert_eq!(third.next, None);
    // A new listing reads the directory again; so does a page after an id no listing ended at.
    let again = spool.list(None, 10).await.unwrap();
    let listed: Vec<QueueId> = again.messages.iter().map(|m| m.message.id).collect();
    assert_eq!(listed, [ids[0], ids[1], ids[3], ids[4], ids[5], late]);
    let from_middle = spool.list(Some(ids[3]), 10).await.unwrap();
    let listed: Vec<QueueId> = from_middle.messages.iter().map(|m| m.message.id).collect();
    assert_eq!(listed, [ids[4], ids[5], late]);
}

#[test]
fn the_commit_mode_is_syncfs_only_where_the_spool_has_a_file_system_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let shared = FsSpool::open(dir.path().join("spool")).unwrap();
    assert_eq!(shared.commit_mode(), CommitMode::PerFile);
    let fs_ = Tmpfs::mount("1m");
    let own = FsSpool::open(fs_.path()).unwrap();
    assert_eq!(own.commit_mode(), CommitMode::FileSystem);
    let chosen = FsSpool::open_with(
        fs_.path(),
        FsSpoolOptions::new().commit(CommitMode::PerFile),
    )
    .unwrap();
    assert_eq!(chosen.commit_mode(), CommitMode::PerFile);
    let forced = FsSpool::open_with(
        dir.path().join("spool"),
        FsSpoolOptions::new().commit(CommitMode::FileSystem),
    )
    .unwrap();
    assert_eq!(forced.commit_mode(), CommitMode::FileSystem);
}

#[tokio::test]
async fn every_operation_works_in_both_commit_modes() {
    let fs_ = Tmpfs::mount("4m");
    for mode in [CommitMode::PerFile, CommitMode::FileSystem] {
        let root = fs_.path().join(format!("{mode:?}"));
        let spool = FsSpool::open_with(&root, FsSpoolOptions::new().commit(mode)).unwrap();
        assert_eq!(spool.commit_mode(), mode);
        let (id, claim) = spool
            .insert_claimed(
                &envelope_for(3, 700),
                Bytes::from(body_for(3, 700)),
                std::time::SystemTime::now(),
            )
            .await
            .unwrap();
        let mut state = spool.load(&id).await.unwrap().state;
        state.recipients[0].status = RecipientStatus::Delivered;
        spool.save_state(&id, &state).await.unwrap();
        drop(claim);
        let other = spool
            .insert(&envelope(), Bytes::new(), std::time::SystemTime::now())
            .await
            .unwrap();
        spool.remove(&other).await.unwrap();
        let scan = spool.scan().await.unwrap();
        assert_eq!(scan.messages.len(), 1, "{mode:?}");
        assert_eq!(scan.messages[0].state, state, "{mode:?}");
        assert_eq!(spool.body(&id).await.unwrap(), body_for(3, 700), "{mode:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Format 1

#[test]
fn a_spool_of_format_1_is_converted_at_open_with_one_log_line() {
    use postrider::spool::record;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    spool_support::copy_v1_fixture(&root);
    // What the previous release wrote, read with its own parser.
    let mut expected = Vec::new();
    for name in names(&root.join("queue")) {
        if let Some(stem) = name.strip_suffix(".qf") {
            let r = record::parse(&fs::read(root.join("queue").join(&name)).unwrap()).unwrap();
            let body = fs::read(root.join("queue").join(format!("{stem}.df"))).unwrap();
            expected.push((r, body));
        }
    }
    assert_eq!(expected.len(), 3);

    let (spool, log) = spool_support::logged(|| FsSpool::open(&root).unwrap());
    assert_eq!(
        log.matches("converted 3 messages from format 1").count(),
        1,
        "{log}"
    );
    let mut want: Vec<String> = expected.iter().map(|(r, _)| r.id.to_string()).collect();
    want.sort();
    assert_eq!(names(&root.join("queue")), want);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let scan = spool.scan().await.unwrap();
        assert!(scan.quarantined.is_empty());
        assert_eq!(scan.messages.len(), 3);
        for (r, body) in &expected {
            let m = spool.load(&r.id).await.unwrap();
            assert_eq!((&m.envelope, &m.state), (&r.envelope, &r.state));
            assert_eq!(spool.body(&r.id).await.unwrap(), body.as_slice());
            // A converted message is a message like any other: claimed, updated, removed.
            let claim = spool.claim(&r.id).await.unwrap().unwrap();
            let mut state = m.state.clone();
            state.attempts += 1;
            spool.save_state(&r.id, &state).await.unwrap();
            assert_eq!(spool.load(&r.id).await.unwrap().state, state);
            drop(claim);
        }
        spool.remove(&expected[0].0.id).await.unwrap();
    });
    // The next start finds nothing to convert, and says nothing.
    drop(spool);
    let (spool, log) = spool_support::logged(|| FsSpool::open(&root).unwrap());
    assert!(!log.contains("format 1"), "{log}");
    assert_eq!(rt.block_on(spool.scan()).unwrap().messages.len(), 2);
}

#[test]
fn an_unreadable_format_1_record_is_quarantined_with_its_body_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let good = spool_support::write_v1_message(&root, 1, 300, 2);
    let bad = spool_support::write_v1_message(&root, 2, 300, 2);
    let bad_record = root.join("queue").join(format!("{bad}.qf"));
    let text = fs::read_to_string(&bad_record).unwrap();
    fs::write(
        &bad_record,
        text.replace("\"version\": 1", "\"version\": 9"),
    )
    .unwrap();
    // A body whose record was never written: what a format-1 insert killed midway left.
    let orphan = QueueId::generate();
    fs::write(root.join("queue").join(format!("{orphan}.df")), b"half").unwrap();

    let spool = FsSpool::open(&root).unwrap();
    assert_eq!(names(&root.join("queue")), [good.to_string()]);
    let corrupt = root.join("corrupt");
    assert_eq!(names(&corrupt), [format!("{bad}.df"), format!("{bad}.qf")]);
    assert_eq!(
        fs::read(corrupt.join(format!("{bad}.df"))).unwrap(),
        body_for(2, 300)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scan = rt.block_on(spool.scan()).unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].state.attempts, 2);
    assert_eq!(scan.quarantined.len(), 1, "{:?}", scan.quarantined);
    assert_eq!(scan.quarantined[0].path, corrupt.join(format!("{bad}.qf")));
    assert!(
        scan.quarantined[0]
            .reason
            .contains("version 9 is not supported"),
        "{}",
        scan.quarantined[0].reason
    );
    assert!(rt.block_on(spool.scan()).unwrap().quarantined.is_empty());
}

#[test]
fn a_conversion_interrupted_after_its_commit_finishes_without_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let ids: Vec<QueueId> = (0..5)
        .map(|seed| spool_support::write_v1_message(&root, seed, 1000, 1))
        .collect();
    let saved: Vec<(String, Vec<u8>)> = names(&root.join("queue"))
        .into_iter()
        .map(|n| {
            let bytes = fs::read(root.join("queue").join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    drop(FsSpool::open(&root).unwrap());
    // As if the kill came after the format-2 files were durable but before the format-1
    // ones were deleted: both are there.
    for (name, bytes) in &saved {
        fs::write(root.join("queue").join(name), bytes).unwrap();
    }
    let spool = FsSpool::open(&root).unwrap();
    let mut want: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    want.sort();
    assert_eq!(names(&root.join("queue")), want);
    let scan = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(spool.scan())
        .unwrap();
    assert_eq!(scan.messages.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert!(scan.quarantined.is_empty());
}

#[tokio::test]
async fn a_read_only_spool_of_format_1_is_listed_where_it_lies() {
    let fs_ = Tmpfs::mount("1m");
    let root = fs_.path().join("spool");
    let id = spool_support::write_v1_message(&root, 7, 500, 3);
    fs_.remount_read_only();
    let spool = FsSpool::open_with(&root, FsSpoolOptions::new().read_only(true)).unwrap();
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, id);
    assert_eq!(scan.messages[0].state.attempts, 3);
    let listed: Vec<_> = spool.listing().unwrap().map(|m| m.unwrap()).collect();
    assert_eq!(listed, scan.messages);
    assert_eq!(spool.body(&id).await.unwrap(), body_for(7, 500));
    assert_eq!(
        names(&root.join("queue")),
        [format!("{id}.df"), format!("{id}.qf")]
    );
}

#[tokio::test]
async fn a_message_inserted_claimed_is_durable_and_nobody_else_can_claim_it_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let other_handle = FsSpool::open(dir.path()).unwrap();
    let (id, claim) = spool
        .insert_claimed(
            &envelope(),
            Bytes::from_static(b"hi\r\n"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    assert!(claim.is_some());
    // Committed: listed by a scan in full, and its files are in place.
    let scan = other_handle.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.orphans_removed, 0);
    assert!(message_path(&spool, &id).exists());
    // Claimed from the start.
    assert!(spool.claim(&id).await.unwrap().is_none());
    assert!(other_handle.claim(&id).await.unwrap().is_none());
    drop(claim);
    assert!(other_handle.claim(&id).await.unwrap().is_some());
    assert_eq!(
        spool.body(&id).await.unwrap(),
        Bytes::from_static(b"hi\r\n")
    );
}

fn inode(spool: &FsSpool, id: &QueueId) -> u64 {
    fs::metadata(message_path(spool, id)).unwrap().ino()
}

#[tokio::test]
async fn the_file_of_a_removed_message_is_reused_once_its_removal_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let now = std::time::SystemTime::now();
    let a = spool
        .insert(&envelope_for(1, 3000), Bytes::from(body_for(1, 3000)), now)
        .await
        .unwrap();
    let recycled = inode(&spool, &a);
    let mut state = spool.load(&a).await.unwrap().state;
    state.attempts = 9;
    spool.save_state(&a, &state).await.unwrap();
    spool.remove(&a).await.unwrap();
    assert!(names(&queue(&spool)).is_empty());

    // Not yet durable: a power loss could bring `a` back, so its file is not rewritten yet.
    let b = insert_seeded(&spool, 2, 100).await;
    assert_ne!(inode(&spool, &b), recycled);
    // b's insert flushed queue/, which made a's removal durable: now the file is reused, and
    // nothing of the longer old message shows through.
    let c = spool
        .insert(&envelope_for(3, 100), Bytes::from(body_for(3, 100)), now)
        .await
        .unwrap();
    assert_eq!(inode(&spool, &c), recycled);
    assert_eq!(spool.body(&c).await.unwrap(), body_for(3, 100));
    let loaded = spool.load(&c).await.unwrap();
    assert_eq!(loaded.envelope, envelope_for(3, 100));
    assert_eq!(loaded.state.attempts, 0);
    assert!(names(&spool.path().join("tmp")).is_empty());
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 2);
    assert!(scan.quarantined.is_empty());
    assert_eq!(scan.orphans_removed, 0);
    // The removed message stays removed, even to a stale caller.
    assert!(matches!(
        spool.save_state(&a, &state).await,
        Err(SpoolError::NotFound(_))
    ));
    assert_eq!(spool.load(&c).await.unwrap(), loaded);

    // Asked for, the flush comes at once.
    spool.remove(&b).await.unwrap();
    let b_file = {
        let tmp = names(&spool.path().join("tmp"));
        assert_eq!(tmp.len(), 1, "{tmp:?}");
        fs::metadata(spool.path().join("tmp").join(&tmp[0]))
            .unwrap()
            .ino()
    };
    spool.sync_removals().await.unwrap();
    let d = insert_seeded(&spool, 4, 100).await;
    assert_eq!(inode(&spool, &d), b_file);
}

#[tokio::test]
async fn a_removal_no_insert_follows_is_made_durable_by_the_spool_itself() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let a = insert_seeded(&spool, 1, 100).await;
    let recycled = inode(&spool, &a);
    spool.remove(&a).await.unwrap();
    // The spool flushes removals at most 50 ms after the first one; an insert takes a spare
    // before it flushes anything itself, so it reuses a's file only if that flush ran.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let b = insert_seeded(&spool, 2, 100).await;
    assert_eq!(inode(&spool, &b), recycled);
}

#[tokio::test]
async fn spares_are_cleaned_up_by_a_scan_without_counting_as_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let now = std::time::SystemTime::now();
    let a = spool
        .insert(&envelope(), Bytes::from_static(b"x\r\n"), now)
        .await
        .unwrap();
    spool.remove(&a).await.unwrap();
    assert_eq!(names(&spool.path().join("tmp")).len(), 1);
    // Another process's scan (or this one's) finds them unlocked: they go, silently.
    let other = FsSpool::open(dir.path()).unwrap();
    let scan = other.scan().await.unwrap();
    assert_eq!(scan.orphans_removed, 0);
    assert!(names(&spool.path().join("tmp")).is_empty());
    // The pool's names are gone: the next insert creates files as usual.
    let b = spool
        .insert(&envelope(), Bytes::from_static(b"y\r\n"), now)
        .await
        .unwrap();
    assert_eq!(spool.body(&b).await.unwrap(), Bytes::from_static(b"y\r\n"));
    // Closing the spool leaves no spare behind.
    spool.remove(&b).await.unwrap();
    drop(spool);
    assert!(names(&dir.path().join("tmp")).is_empty());
}
