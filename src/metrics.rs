//! Metrics through the [`metrics`] facade: postrider records, the embedder decides where they
//! go by installing a recorder (`metrics-exporter-prometheus`, StatsD, OpenTelemetry, ...).
//! Without a recorder every call is a no-op that costs a relaxed atomic load.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `postrider_queue_messages` | gauge | | messages queued (index scheduling: the whole queue; batch scheduling: those this engine is working on) |
//! | `postrider_queue_bytes` | gauge | | their body octets |
//! | `postrider_active_messages` | gauge | | messages under attempt (claimed) |
//! | `postrider_submissions_total` | counter | `result` = `queued` \| `refused` | [`Engine::submit`](crate::engine::Engine::submit) calls, and the DSNs and forwarded copies the engine queues itself |
//! | `postrider_spool_insert_seconds` | histogram | | time to make a new message durable (the "250 OK" wait) |
//! | `postrider_deliveries_total` | counter | `outcome` = `delivered` \| `deferred` \| `failed`, `next_hop` | recipient outcomes, one per recipient attempt (as the log lines) |
//! | `postrider_deferrals_total` | counter | `class` (RFC 3463 class.subject: `4.4` network and routing, `4.2` mailbox, `4.3` mail system, `4.7` security or policy, ...) | deferred recipient outcomes by reason |
//! | `postrider_delivery_attempt_seconds` | histogram | `next_hop` | one delivery (one transport call: a connection and the messages it carried) |
//! | `postrider_connection_cache_total` | counter | `result` = `hit` \| `miss` | ESMTP sessions taken from the connection cache, or opened anew |
//! | `postrider_claimed_total` | counter | | messages taken from a shared spool in batches (`Spool::claim_due`) |
//! | `postrider_lease_lost_total` | counter | | attempts whose outcome was dropped because another engine took the message over |
//!
//! `next_hop` is the route as the log shows it: the host list of a relay route (`[smtp.example.com]:587`,
//! or the recipient domain for MX delivery), `local`, or `error` for a mailertable error
//! route. A shared queue's total size is the database's to tell
//! (`SELECT count(*) FROM postrider_messages`): no node knows it.

use std::time::Duration;

use crate::status::Outcome;

/// Names of the metrics, for recorders and dashboards.
pub mod names {
    /// Messages queued.
    pub const QUEUE_MESSAGES: &str = "postrider_queue_messages";
    /// Body octets of the queued messages.
    pub const QUEUE_BYTES: &str = "postrider_queue_bytes";
    /// Messages under attempt.
    pub const ACTIVE_MESSAGES: &str = "postrider_active_messages";
    /// Submissions by result.
    pub const SUBMISSIONS: &str = "postrider_submissions_total";
    /// Time to make a new message durable.
    pub const SPOOL_INSERT_SECONDS: &str = "postrider_spool_insert_seconds";
    /// Recipient outcomes by outcome and next hop.
    pub const DELIVERIES: &str = "postrider_deliveries_total";
    /// Deferred recipient outcomes by status class.
    pub const DEFERRALS: &str = "postrider_deferrals_total";
    /// Duration of one delivery (one transport call).
    pub const ATTEMPT_SECONDS: &str = "postrider_delivery_attempt_seconds";
    /// ESMTP sessions from the connection cache or opened anew.
    pub const CONNECTION_CACHE: &str = "postrider_connection_cache_total";
    /// Messages taken from a shared spool in batches.
    pub const CLAIMED: &str = "postrider_claimed_total";
    /// Outcomes dropped because another engine took the message over.
    pub const LEASE_LOST: &str = "postrider_lease_lost_total";
}

/// Registers a description of every metric with the installed recorder (call it after
/// installing one; the engine calls it when it starts).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        names::QUEUE_MESSAGES,
        Unit::Count,
        "messages queued (a shared queue: those this engine works on)"
    );
    describe_gauge!(
        names::QUEUE_BYTES,
        Unit::Bytes,
        "body octets of the queued messages"
    );
    describe_gauge!(
        names::ACTIVE_MESSAGES,
        Unit::Count,
        "messages under attempt"
    );
    describe_counter!(
        names::SUBMISSIONS,
        Unit::Count,
        "messages submitted, by result"
    );
    describe_histogram!(
        names::SPOOL_INSERT_SECONDS,
        Unit::Seconds,
        "time to make a new message durable"
    );
    describe_counter!(
        names::DELIVERIES,
        Unit::Count,
        "recipient outcomes by outcome and next hop"
    );
    describe_counter!(
        names::DEFERRALS,
        Unit::Count,
        "deferred recipients by RFC 3463 class.subject"
    );
    describe_histogram!(
        names::ATTEMPT_SECONDS,
        Unit::Seconds,
        "duration of one delivery (a transport call) by next hop"
    );
    describe_counter!(
        names::CONNECTION_CACHE,
        Unit::Count,
        "ESMTP sessions reused from the cache (hit) or opened (miss)"
    );
    describe_counter!(
        names::CLAIMED,
        Unit::Count,
        "messages taken from a shared spool in batches"
    );
    describe_counter!(
        names::LEASE_LOST,
        Unit::Count,
        "attempt outcomes dropped because another engine took the message over"
    );
}

pub(crate) fn queue(messages: usize, bytes: u64, active: usize) {
    metrics::gauge!(names::QUEUE_MESSAGES).set(messages as f64);
    metrics::gauge!(names::QUEUE_BYTES).set(bytes as f64);
    metrics::gauge!(names::ACTIVE_MESSAGES).set(active as f64);
}

pub(crate) fn submitted(queued: bool, insert: Duration) {
    let result = if queued { "queued" } else { "refused" };
    metrics::counter!(names::SUBMISSIONS, "result" => result).increment(1);
    if queued {
        metrics::histogram!(names::SPOOL_INSERT_SECONDS).record(insert.as_secs_f64());
    }
}

/// One recipient outcome at `next_hop`.
pub(crate) fn outcome(outcome: &Outcome, next_hop: &str) {
    let name = match outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Deferred(d) => {
            let class = format!("{}.{}", d.status.class(), d.status.subject());
            metrics::counter!(names::DEFERRALS, "class" => class).increment(1);
            "deferred"
        }
        Outcome::Failed(_) => "failed",
    };
    metrics::counter!(names::DELIVERIES, "outcome" => name, "next_hop" => next_hop.to_string())
        .increment(1);
}

pub(crate) fn attempt(next_hop: &str, took: Duration) {
    metrics::histogram!(names::ATTEMPT_SECONDS, "next_hop" => next_hop.to_string())
        .record(took.as_secs_f64());
}

/// An ESMTP session was taken from the connection cache (`hit`) or had to be opened.
pub(crate) fn connection_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(names::CONNECTION_CACHE, "result" => result).increment(1);
}

pub(crate) fn batch_claimed(n: usize) {
    metrics::counter!(names::CLAIMED).increment(n as u64);
}

pub(crate) fn lease_lost() {
    metrics::counter!(names::LEASE_LOST).increment(1);
}
