//! FsSpool against a real file system: the layout, atomic state changes, claims, cleanup after
//! interrupted inserts, quarantine of corrupt records, a full disk and a read-only spool.

mod support;
use support::spool as spool_support;
use support::tmpfs;

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bytes::Bytes;
use postrider::QueueId;
use postrider::spool::{FsSpool, RecipientStatus, Spool, SpoolError};
use spool_support::{body_for, envelope, envelope_for, names, seed_of};
use tmpfs::Tmpfs;

fn queue(spool: &FsSpool) -> std::path::PathBuf {
    spool.path().join("queue")
}

fn record_path(spool: &FsSpool, id: &QueueId) -> std::path::PathBuf {
    queue(spool).join(format!("{id}.qf"))
}

fn body_path(spool: &FsSpool, id: &QueueId) -> std::path::PathBuf {
    queue(spool).join(format!("{id}.df"))
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
async fn the_record_is_json_an_administrator_can_read_beside_the_body() {
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
    assert_eq!(
        names(&queue(&spool)),
        [format!("{id}.df"), format!("{id}.qf")]
    );
    let text = fs::read_to_string(record_path(&spool, &id)).unwrap();
    assert!(text.starts_with("{\n  \"version\": 1,\n"), "{text}");
    assert!(text.contains(&format!("\"id\": \"{id}\"")), "{text}");
    assert!(text.contains("\"alice@example.org\""), "{text}");
    assert_eq!(fs::read(body_path(&spool, &id)).unwrap(), b"hello\r\n");
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
    assert_eq!(mode(&record_path(&spool, &id)), 0o600);
    assert_eq!(mode(&body_path(&spool, &id)), 0o600);
    let mut state = spool.load(&id).await.unwrap().state;
    state.held = true;
    spool.save_state(&id, &state).await.unwrap();
    assert_eq!(mode(&record_path(&spool, &id)), 0o600);
}

#[tokio::test]
async fn save_state_replaces_the_record_and_the_new_state_survives_reopening() {
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
    let record_inode = fs::metadata(record_path(&spool, &id)).unwrap().ino();
    let body_inode = fs::metadata(body_path(&spool, &id)).unwrap().ino();

    let mut state = spool.load(&id).await.unwrap().state;
    state.attempts = 1;
    state.recipients[1].status = RecipientStatus::Delivered;
    spool.save_state(&id, &state).await.unwrap();

    // A replacement by rename (never an in-place rewrite), and the body untouched, so a
    // claim's lock on the body still holds.
    assert_ne!(
        fs::metadata(record_path(&spool, &id)).unwrap().ino(),
        record_inode
    );
    assert_eq!(
        fs::metadata(body_path(&spool, &id)).unwrap().ino(),
        body_inode
    );
    assert!(names(&spool.path().join("tmp")).is_empty());

    drop(spool);
    let reopened = FsSpool::open(dir.path()).unwrap();
    assert_eq!(reopened.load(&id).await.unwrap().state, state);
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
async fn a_removed_message_is_gone_with_both_files() {
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

    assert_eq!(
        names(&queue(&spool)),
        [format!("{keep}.df"), format!("{keep}.qf")]
    );
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
    // What a writer killed mid-insert leaves: a body without a record, a temporary record.
    let dead = QueueId::generate();
    fs::write(body_path(&spool, &dead), b"half a bo").unwrap();
    fs::write(
        spool.path().join("tmp").join(format!("{dead}.1.0.tmp")),
        b"{\"vers",
    )
    .unwrap();

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.orphans_removed, 2);
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, id);
    assert!(scan.quarantined.is_empty());
    assert_eq!(
        names(&queue(&spool)),
        [format!("{id}.df"), format!("{id}.qf")]
    );
    assert!(names(&spool.path().join("tmp")).is_empty());
    assert_eq!(spool.scan().await.unwrap().orphans_removed, 0);
}

#[tokio::test]
async fn files_a_live_writer_holds_are_left_alone_by_scan() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    // An insert in flight in another process: body written and locked, no record yet.
    let inflight = QueueId::generate();
    let body = body_path(&spool, &inflight);
    fs::write(&body, b"being written").unwrap();
    let body_lock = File::open(&body).unwrap();
    body_lock.lock().unwrap();
    let tmp = spool.path().join("tmp").join(format!("{inflight}.1.0.tmp"));
    fs::write(&tmp, b"{").unwrap();
    let tmp_lock = File::open(&tmp).unwrap();
    tmp_lock.lock().unwrap();

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.orphans_removed, 0);
    assert!(scan.messages.is_empty());
    assert!(body.exists() && tmp.exists());
    // Nor can it be claimed: it is not a message until its record is committed.
    assert!(spool.claim(&inflight).await.unwrap().is_none());

    drop(body_lock);
    drop(tmp_lock);
    assert_eq!(spool.scan().await.unwrap().orphans_removed, 2);
    assert!(!body.exists() && !tmp.exists());
}

#[tokio::test]
async fn corrupt_records_are_quarantined_with_their_bodies_and_reported() {
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
    let [good, garbage, future, truncated, stranger, bodiless] = ids[..] else {
        unreachable!()
    };
    fs::write(record_path(&spool, &garbage), b"\xff\xfe not json").unwrap();
    let text = fs::read_to_string(record_path(&spool, &future)).unwrap();
    fs::write(
        record_path(&spool, &future),
        text.replace("\"version\": 1", "\"version\": 2"),
    )
    .unwrap();
    let text = fs::read(record_path(&spool, &truncated)).unwrap();
    fs::write(record_path(&spool, &truncated), &text[..text.len() / 3]).unwrap();
    // A record copied over another's name.
    fs::copy(record_path(&spool, &good), record_path(&spool, &stranger)).unwrap();
    fs::remove_file(body_path(&spool, &bodiless)).unwrap();

    assert!(matches!(
        spool.load(&future).await,
        Err(SpoolError::Corrupt { .. })
    ));

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, good);
    let mut reasons: Vec<(String, String)> = scan
        .quarantined
        .iter()
        .map(|q| {
            (
                q.path.file_name().unwrap().to_str().unwrap().to_string(),
                q.reason.clone(),
            )
        })
        .collect();
    reasons.sort();
    let expect = |id: &QueueId, needle: &str| {
        let name = format!("{id}.qf");
        let (_, reason) = reasons
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} not quarantined: {reasons:?}"));
        assert!(reason.contains(needle), "{name}: {reason}");
    };
    expect(&garbage, "not UTF-8");
    expect(&future, "version 2 is not supported");
    expect(&truncated, "not valid JSON");
    expect(&stranger, &format!("names message {good}"));
    expect(&bodiless, "missing");
    assert_eq!(scan.quarantined.len(), 5);

    // Nothing was deleted: every record sits in corrupt/ with its body (where it had one).
    let corrupt = spool.path().join("corrupt");
    for q in &scan.quarantined {
        assert!(q.path.starts_with(&corrupt) && q.path.exists(), "{q:?}");
    }
    for id in [garbage, future, truncated, stranger] {
        assert_eq!(
            fs::read(corrupt.join(format!("{id}.df"))).unwrap(),
            b"body\r\n"
        );
    }
    assert_eq!(
        names(&queue(&spool)),
        [format!("{good}.df"), format!("{good}.qf")]
    );

    let again = spool.scan().await.unwrap();
    assert!(again.quarantined.is_empty());
    assert_eq!(again.orphans_removed, 0);
    assert_eq!(names(&corrupt).len(), 9);
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
    fs::write(corrupt.join(format!("{id}.qf")), b"first").unwrap();
    fs::write(corrupt.join(format!("{id}.df")), b"1st").unwrap();
    fs::write(record_path(&spool, &id), b"second").unwrap();

    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.quarantined.len(), 1);
    assert_eq!(scan.quarantined[0].path, corrupt.join(format!("{id}.1.qf")));
    assert_eq!(
        fs::read(corrupt.join(format!("{id}.qf"))).unwrap(),
        b"first"
    );
    assert_eq!(
        fs::read(corrupt.join(format!("{id}.1.qf"))).unwrap(),
        b"second"
    );
    assert_eq!(
        fs::read(corrupt.join(format!("{id}.1.df"))).unwrap(),
        b"2nd"
    );
}

#[tokio::test]
async fn many_concurrent_inserts_all_land_intact() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..8u64 {
                    let seed = t * 100 + i;
                    let len = 100 + (seed as usize * 37) % 3000;
                    let id = spool
                        .insert(
                            &envelope_for(seed, len),
                            Bytes::from(body_for(seed, len)),
                            std::time::SystemTime::now(),
                        )
                        .await
                        .unwrap();
                    ids.push(id);
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
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    for m in &scan.messages {
        let (seed, len) = seed_of(&m.envelope);
        assert_eq!(spool.body(&m.id).await.unwrap(), body_for(seed, len));
    }
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
    assert_eq!(names(&queue(&spool)).len(), 2 * accepted.len());
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
async fn a_read_only_spool_refuses_the_insert_as_not_writable_but_still_lists() {
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
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert_eq!(scan.messages[0].id, id);
    assert!(matches!(
        FsSpool::open(&root),
        Err(SpoolError::NotWritable { .. })
    ));
    drop(spool);
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
    assert!(record_path(&spool, &id).exists() && body_path(&spool, &id).exists());
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

#[tokio::test]
async fn the_files_of_a_removed_message_are_reused_by_the_next_insert() {
    let dir = tempfile::tempdir().unwrap();
    let spool = FsSpool::open(dir.path()).unwrap();
    let now = std::time::SystemTime::now();
    let a = spool
        .insert(&envelope_for(1, 3000), Bytes::from(body_for(1, 3000)), now)
        .await
        .unwrap();
    let inodes = [
        fs::metadata(body_path(&spool, &a)).unwrap().ino(),
        fs::metadata(record_path(&spool, &a)).unwrap().ino(),
    ];
    spool.remove(&a).await.unwrap();
    assert!(names(&queue(&spool)).is_empty());

    // A shorter message in the recycled files: nothing of the old one shows through.
    let b = spool
        .insert(&envelope_for(2, 100), Bytes::from(body_for(2, 100)), now)
        .await
        .unwrap();
    for path in [body_path(&spool, &b), record_path(&spool, &b)] {
        assert!(
            inodes.contains(&fs::metadata(&path).unwrap().ino()),
            "{path:?}"
        );
    }
    assert_eq!(spool.body(&b).await.unwrap(), body_for(2, 100));
    assert_eq!(spool.load(&b).await.unwrap().envelope, envelope_for(2, 100));
    assert!(names(&spool.path().join("tmp")).is_empty());
    let scan = spool.scan().await.unwrap();
    assert_eq!(scan.messages.len(), 1);
    assert!(scan.quarantined.is_empty());
    assert_eq!(scan.orphans_removed, 0);
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
    assert_eq!(names(&spool.path().join("tmp")).len(), 2);
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
