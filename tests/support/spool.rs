//! Helpers for the spool tests: envelopes and bodies that check themselves.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;

use postrider::{Address, Envelope, ReversePath};

/// An envelope whose ENVID names the body it travels with (`body-<seed>-<len>`), so a test can
/// check any message it finds in a spool, including ones whose insert never returned.
pub fn envelope_for(seed: u64, len: usize) -> Envelope {
    let mut env = Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [
            Address::parse("alice@example.org").unwrap(),
            Address::parse("bob@example.net").unwrap(),
        ],
    );
    env.set_envid(&format!("body-{seed}-{len}")).unwrap();
    env
}

/// A plain two-recipient envelope.
pub fn envelope() -> Envelope {
    envelope_for(0, 0)
}

/// The body `envelope_for(seed, len)` describes: a header, then bytes derived from the seed.
pub fn body_for(seed: u64, len: usize) -> Vec<u8> {
    let mut out = format!("X-Seed: {seed}\r\n\r\n").into_bytes();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.truncate(len);
    out
}

/// The (seed, len) an envelope from [`envelope_for`] carries.
pub fn seed_of(env: &Envelope) -> (u64, usize) {
    let envid = env
        .envid
        .as_deref()
        .expect("the test envelope has an ENVID");
    let mut parts = envid.strip_prefix("body-").unwrap().split('-');
    let seed = parts.next().unwrap().parse().unwrap();
    let len = parts.next().unwrap().parse().unwrap();
    (seed, len)
}

/// Names of the files in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The path of a message's file in a format-2 spool.
pub fn message_path(spool: &Path, id: &postrider::QueueId) -> std::path::PathBuf {
    spool.join("queue").join(id.as_str())
}

/// Writes a message the way format 1 (`queue/ID.df` body, `queue/ID.qf` JSON record, the
/// layout before format 2) left it, with `envelope_for(seed, len)` and its body, and a state
/// whose attempts say `attempts`: a spool of the old format for the conversion tests.
pub fn write_v1_message(spool: &Path, seed: u64, len: usize, attempts: u32) -> postrider::QueueId {
    use postrider::spool::record::{self, SpoolRecord};
    let queue = spool.join("queue");
    for sub in ["queue", "tmp", "corrupt"] {
        std::fs::create_dir_all(spool.join(sub)).unwrap();
    }
    let id = postrider::QueueId::generate();
    let envelope = envelope_for(seed, len);
    let mut state = postrider::spool::MessageState::new(
        &envelope,
        len as u64,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_321_500),
    );
    state.attempts = attempts;
    state.recipients[1].status = postrider::spool::RecipientStatus::Delivered;
    std::fs::write(queue.join(format!("{id}.df")), body_for(seed, len)).unwrap();
    let record = record::render(&SpoolRecord {
        id,
        envelope,
        state,
    });
    std::fs::write(queue.join(format!("{id}.qf")), record).unwrap();
    id
}

/// Copies the format-1 spool the previous release wrote (`tests/fixtures/spool-v1`) to `dest`.
pub fn copy_v1_fixture(dest: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool-v1/queue");
    for sub in ["queue", "tmp", "corrupt"] {
        std::fs::create_dir_all(dest.join(sub)).unwrap();
    }
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dest.join("queue").join(entry.file_name())).unwrap();
    }
}

/// Collects the `tracing` output of the current thread while `f` runs.
pub fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("postrider=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// Like [`envelope_for`], with `recipients` recipients (at least one).
pub fn envelope_with(seed: u64, len: usize, recipients: usize) -> Envelope {
    let mut env = Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        (0..recipients.max(1))
            .map(|i| Address::parse(&format!("rcpt{i}@example{}.org", i % 7)).unwrap()),
    );
    env.set_envid(&format!("body-{seed}-{len}")).unwrap();
    env
}

/// The `k`-th state the crash tests save for a message first stored as `initial` (`k` = 0 is
/// `initial` itself). Every field follows from `k`, so a state read back that mixes two saves
/// is caught by [`saved_k`]; the texts' lengths vary with `k`, so some states are too large
/// for their slot and are stored shortened.
pub fn state_for(
    initial: &postrider::spool::MessageState,
    k: u32,
) -> postrider::spool::MessageState {
    use postrider::spool::RecipientStatus;
    use postrider::{Diagnostic, EnhancedStatus, Reply};
    use std::time::Duration;
    let mut s = initial.clone();
    if k == 0 {
        return s;
    }
    let base = s.arrival;
    s.attempts = k;
    s.next_attempt = base + Duration::from_secs(u64::from(k));
    s.warned = k % 2 == 1;
    for (i, r) in s.recipients.iter_mut().enumerate() {
        let delivered = (i + k as usize).is_multiple_of(3);
        r.status = if delivered {
            RecipientStatus::Delivered
        } else {
            RecipientStatus::Pending
        };
        r.attempts = k;
        r.last_attempt = Some(base + Duration::from_millis(u64::from(k)));
        r.remote_mta = Some(format!("mx{k}.example{i}.org. [192.0.2.{}]", k % 250));
        let filler = "x".repeat((k as usize * 97) % 1500);
        r.last = (!delivered).then(|| {
            Diagnostic::remote(
                Reply::new(
                    451,
                    Some(EnhancedStatus::new(4, 7, 1)),
                    format!("attempt {k}: {filler}"),
                )
                .unwrap(),
            )
        });
    }
    s
}

/// Which `k` of [`state_for`] `stored` is (as saved, or shortened to fit its slot: texts cut
/// or dropped, every number and status intact); `None` when it is none of them (a mixture of
/// two saves, or damage).
pub fn saved_k(
    initial: &postrider::spool::MessageState,
    stored: &postrider::spool::MessageState,
) -> Option<u32> {
    let k = stored.attempts;
    let want = state_for(initial, k);
    if *stored == want {
        return Some(k);
    }
    let cut_of = |short: &str, long: &str| long.starts_with(short.trim_end_matches('…'));
    let same_numbers = (
        stored.arrival,
        stored.size,
        stored.next_attempt,
        stored.held,
        stored.warned,
        stored.recipients.len(),
    ) == (
        want.arrival,
        want.size,
        want.next_attempt,
        want.held,
        want.warned,
        want.recipients.len(),
    );
    let recipients_agree = stored
        .recipients
        .iter()
        .zip(&want.recipients)
        .all(|(a, b)| {
            let numbers =
                (a.status, a.attempts, a.last_attempt) == (b.status, b.attempts, b.last_attempt);
            let mta = match (&a.remote_mta, &b.remote_mta) {
                (None, _) => true,
                (Some(a), Some(b)) => cut_of(a, b),
                (Some(_), None) => false,
            };
            let last = match (&a.last, &b.last) {
                (None, _) => true,
                (Some(a), Some(b)) => {
                    let (ra, rb) = (a.reply.as_ref(), b.reply.as_ref());
                    a.status == b.status
                        && ra.map(|r| (r.code(), r.enhanced()))
                            == rb.map(|r| (r.code(), r.enhanced()))
                        && match (ra, rb) {
                            (Some(ra), Some(rb)) => cut_of(ra.text(), rb.text()),
                            _ => cut_of(&a.text, &b.text),
                        }
                }
                (Some(_), None) => false,
            };
            numbers && mta && last
        });
    (same_numbers && recipients_agree).then_some(k)
}

/// Inserts the self-checking message of `seed` and `len` ([`envelope_for`], [`body_for`]),
/// arriving now.
pub async fn insert_seeded(
    spool: &dyn postrider::spool::Spool,
    seed: u64,
    len: usize,
) -> postrider::QueueId {
    spool
        .insert(
            &envelope_for(seed, len),
            bytes::Bytes::from(body_for(seed, len)),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap()
}
