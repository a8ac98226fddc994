//! A queue of messages deferred for a dead next hop, as the engine leaves them: what the
//! large-queue benches start from. Include with `#[path = "support/dead_queue.rs"] mod
//! dead_queue;`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use postrider::spool::{FsSpool, Spool};
use postrider::{Diagnostic, EnhancedStatus, Envelope};

/// Fills the spool: `n` messages of 1–3 KiB (the `i`th with `envelope(i)`), each deferred
/// once for an hour with the reason a dead next hop gives, as the engine leaves them.
pub async fn fill(spool: &FsSpool, n: u64, envelope: fn(u64) -> Envelope) {
    const TASKS: u64 = 64;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let spool = spool.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(TASKS as usize) {
                    let body = Bytes::from(vec![b'x'; 1024 + (i as usize * 37) % 2048]);
                    let now = SystemTime::now();
                    let id = spool.insert(&envelope(i), body, now).await.unwrap();
                    let mut state = spool.load(&id).await.unwrap().state;
                    state.attempts = 1;
                    state.next_attempt = now + Duration::from_secs(3600);
                    let r = &mut state.recipients[0];
                    r.attempts = 1;
                    r.last_attempt = Some(now);
                    r.last = Some(Diagnostic::local(
                        EnhancedStatus::new(4, 4, 1),
                        "Connection refused by [127.0.0.1]:1",
                    ));
                    spool.save_state(&id, &state).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
