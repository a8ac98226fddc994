//! Wake-ups: one connection per spool, outside the pool, `LISTEN`ing on the spool's channel,
//! and one task that `NOTIFY`s it.
//!
//! Inserts, released claims and administrators' releases hand the time the message is due to
//! the notifier once their transaction has committed; it sends `NOTIFY` with the earliest of
//! those waiting (microseconds since the epoch), one statement at a time, so a burst of inserts
//! costs a few notifications. Not inside the writers' transactions: PostgreSQL serialises the
//! commits of notifying transactions on one lock held until their commit record is flushed,
//! which measured one WAL flush per insert and no gain from concurrency (`benches/README.md`).
//! A notification lost because the process died between commit and notify costs nothing but
//! latency: the others find the message through `next_due`. The listener forwards each to [`Wakeups`](crate::spool::Wakeups). While it is disconnected
//! notifications are lost, so after every (re)connection it sends "look at everything"
//! ([`SystemTime::UNIX_EPOCH`]). It reconnects on its own, backing off from 100 ms to 5 s.

use std::future::poll_fn;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel every postrider spool in a database notifies.
pub(crate) const CHANNEL: &str = "postrider_wakeup";

/// The due time a notification names; a payload this release did not write means "look now".
pub(crate) fn due_of(payload: &str) -> SystemTime {
    payload
        .parse::<u64>()
        .ok()
        .and_then(|micros| SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(micros)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The payload for a message due at `due`.
pub(crate) fn payload_of(due: SystemTime) -> String {
    due.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
        .to_string()
}

/// Sends the notifications handed to it until the spool is gone.
pub(crate) async fn notify_forever(
    pool: deadpool_postgres::Pool,
    mut rx: mpsc::UnboundedReceiver<SystemTime>,
) {
    while let Some(first) = rx.recv().await {
        let mut due = first;
        while let Ok(more) = rx.try_recv() {
            due = due.min(more);
        }
        let sent = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "SELECT pg_notify('postrider_wakeup', $1)",
                    &[&payload_of(due)],
                )
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = sent.await {
            tracing::debug!(target: "postrider::spool",
                "could not notify the other nodes ({e}); they find the message when it is due");
        }
    }
}

/// Listens until aborted (the spool aborts it when dropped).
pub(crate) async fn listen_forever(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    tx: broadcast::Sender<SystemTime>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                backoff = Duration::from_millis(100);
                let listen = client.batch_execute("LISTEN postrider_wakeup");
                tokio::pin!(listen);
                let mut listening = false;
                let why = loop {
                    tokio::select! {
                        done = &mut listen, if !listening => match done {
                            Ok(()) => {
                                listening = true;
                                let _ = tx.send(SystemTime::UNIX_EPOCH);
                            }
                            Err(e) => break e.to_string(),
                        },
                        message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                                let _ = tx.send(due_of(n.payload()));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => break e.to_string(),
                            None => break "the server closed the connection".to_string(),
                        },
                    }
                };
                tracing::warn!(target: "postrider::spool",
                    "spool wake-up connection lost ({why}); reconnecting");
            }
            Err(e) => tracing::debug!(target: "postrider::spool",
                "spool wake-up connection failed: {e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_and_a_foreign_one_means_now() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_790_000_000_123_456);
        assert_eq!(due_of(&payload_of(t)), t);
        assert_eq!(due_of("hello"), SystemTime::UNIX_EPOCH);
        assert_eq!(due_of(""), SystemTime::UNIX_EPOCH);
    }
}
