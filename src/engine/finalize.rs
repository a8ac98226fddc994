//! The end of an attempt: record every recipient's outcome, expire what is too old, queue the
//! DSNs the senders asked for, then save the new state or remove the finished message.
//!
//! Order matters for "never lose": a recipient is recorded as failed only once its bounce is
//! durable in the spool (or no bounce is wanted). If the bounce cannot be queued, the recipient
//! stays pending and is tried again, so the sender still hears of it eventually.
//!
//! While an attempt is still under way (other recipients of the message are with other
//! transports), each message's outcome is made durable as it comes in by [`partial_state`]:
//! delivered recipients are recorded at once, so they are never sent again; failures are kept
//! pending there until the end of the attempt queues their bounce.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::Shared;
use super::bounce::{self, Action, DsnContext, DsnKind, DsnRecipient};
use super::command::AdminOp;
use super::events::{Agent, DeliveryEvent};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::spool::{Claim, MessageState, RecipientStatus, SpoolError};
use crate::status::{Diagnostic, EnhancedStatus, Outcome};
use crate::transport::RemoteHost;

/// One recipient's outcome in this attempt.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub recipient: usize,
    pub outcome: Outcome,
    pub remote: Option<RemoteHost>,
    pub agent: Agent,
    pub started: SystemTime,
    pub finished: SystemTime,
    pub note: Option<String>,
    pub dsn_passed_on: bool,
}

impl Report {
    /// An outcome decided without a delivery attempt (error routes, dead hosts).
    pub(crate) fn immediate(
        recipient: usize,
        outcome: Outcome,
        agent: Agent,
        now: SystemTime,
    ) -> Report {
        Report {
            recipient,
            outcome,
            remote: None,
            agent,
            started: now,
            finished: now,
            note: None,
            dsn_passed_on: false,
        }
    }

    pub(crate) fn event(
        &self,
        id: QueueId,
        envelope: &Envelope,
        arrival: SystemTime,
    ) -> DeliveryEvent {
        DeliveryEvent {
            id,
            sender: envelope.sender.clone(),
            recipient: envelope.recipients[self.recipient].address.clone(),
            outcome: self.outcome.clone(),
            mailer: self.agent,
            relay: self.remote.clone(),
            arrival,
            started: self.started,
            finished: self.finished,
            note: self.note.clone(),
        }
    }
}

/// What applying an attempt's reports to a state found.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Some recipient's state changed.
    pub changed: bool,
    /// Recipients that failed this attempt (still pending: the bounce decides).
    pub failed: Vec<usize>,
    /// Recipients delivered this attempt whose success notice is ours to send, with whether
    /// the delivery was local.
    pub delivered: Vec<(usize, bool)>,
}

/// Writes the reports into the recipients' states: delivered ones are done, deferred and failed
/// ones keep their reason. A recipient already done is left alone (another process, or an
/// earlier report of this attempt, settled it).
pub(crate) fn apply(state: &mut MessageState, reports: &[Report]) -> Applied {
    let mut applied = Applied::default();
    for r in reports {
        let Some(rs) = state.recipients.get_mut(r.recipient) else {
            continue;
        };
        if rs.status != RecipientStatus::Pending {
            continue;
        }
        applied.changed = true;
        rs.attempts += 1;
        rs.last_attempt = Some(r.finished);
        if let Some(remote) = &r.remote {
            rs.remote_mta = Some(remote.to_string());
        }
        match &r.outcome {
            Outcome::Delivered { .. } => {
                rs.status = RecipientStatus::Delivered;
                rs.last = None;
                if !r.dsn_passed_on {
                    applied
                        .delivered
                        .push((r.recipient, r.agent == Agent::Local));
                }
            }
            Outcome::Deferred(d) => rs.last = Some(d.clone()),
            Outcome::Failed(d) => {
                rs.last = Some(d.clone());
                applied.failed.push(r.recipient);
            }
        }
    }
    applied
}

/// The state to record while the attempt is still under way: `base` with every report so far.
pub(crate) fn partial_state(base: &MessageState, reports: &[Report]) -> MessageState {
    let mut state = base.clone();
    apply(&mut state, reports);
    state
}

/// Everything finalizing one message needs.
pub(crate) struct FinalizeJob {
    pub id: QueueId,
    pub envelope: Arc<Envelope>,
    pub state: MessageState,
    pub reports: Vec<Report>,
    pub claim: Claim,
    pub requested: Option<AdminOp>,
}

/// What became of the message.
pub(crate) enum Finalized {
    /// Every recipient is done (or an administrator deleted it): it left the spool.
    Removed,
    /// Still queued with this state.
    Kept(MessageState),
    /// This state is the truth but could not be written: it holds deliveries the spool does
    /// not know of. The next attempt writes it before anything is sent again.
    Unsaved(MessageState),
    /// The claim ran out and another engine took the message over (the spool fenced the
    /// write): this attempt's outcome is dropped, never retried here; the other engine's
    /// state stands.
    LeaseLost,
}

/// The log line for an outcome the spool fenced out.
fn lease_lost(id: QueueId) -> Finalized {
    tracing::warn!(target: "postrider::engine",
        "{id}: lease lost: another engine took the message over while this one delivered it; \
         this attempt's outcome is dropped (its recipients may be delivered twice, never lost)");
    crate::metrics::lease_lost();
    Finalized::LeaseLost
}

pub(crate) async fn finalize(shared: &Shared, job: FinalizeJob) -> Finalized {
    let FinalizeJob {
        id,
        envelope,
        mut state,
        reports,
        claim,
        requested,
    } = job;
    let now = shared.clock.now();
    let Applied {
        mut changed,
        mut failed,
        delivered,
    } = apply(&mut state, &reports);
    if changed {
        state.attempts += 1;
    }

    let age = now.duration_since(state.arrival).unwrap_or_default();
    if age >= shared.retry.max_age {
        expire(shared, id, &envelope, &mut state, &mut failed, now, age);
        changed = true;
    }

    let wants_delay = !state.warned
        && shared.retry.warn_after.is_some_and(|w| age >= w)
        && state
            .recipients
            .iter()
            .any(|r| r.status == RecipientStatus::Pending);
    let wants_dsn = !failed.is_empty()
        || wants_delay
        || delivered
            .iter()
            .any(|(i, _)| envelope.recipients[*i].effective_notify().success);
    let original = if wants_dsn && !envelope.sender.is_null() {
        match shared.spool.body(&id).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(target: "postrider::engine", "{id}: cannot read the message for its DSN, returning no content: {e}");
                Bytes::new()
            }
        }
    } else {
        Bytes::new()
    };
    let ctx = DsnContext {
        reporting_mta: &shared.hostname,
        id,
        envelope: &envelope,
        arrival: state.arrival,
        now,
        original: &original,
        waited: age,
    };

    if !failed.is_empty() {
        bounce_failed(shared, &ctx, &mut state, &failed).await;
    }
    notify_delivered(shared, &ctx, &state, &delivered).await;
    if wants_delay {
        changed |= warn_delayed(shared, &ctx, &mut state).await;
    }

    let delete = requested == Some(AdminOp::Delete);
    if requested == Some(AdminOp::Hold) {
        state.held = true;
        changed = true;
    }
    let outcome = if delete || state.is_done() {
        match shared.spool.remove(&id).await {
            Ok(()) | Err(SpoolError::NotFound(_)) => {
                if delete {
                    tracing::info!(target: "postrider::engine", "{id}: deleted by the administrator");
                } else {
                    tracing::info!(target: "postrider::engine", "{id}: removed (all recipients done)");
                }
                Finalized::Removed
            }
            Err(SpoolError::LeaseLost { .. }) => lease_lost(id),
            Err(e) => {
                tracing::error!(target: "postrider::engine", "{id}: cannot remove the finished message: {e} (it is not delivered again; removal is retried)");
                state.next_attempt = now + shared.retry.initial;
                Finalized::Unsaved(state)
            }
        }
    } else if changed {
        state.next_attempt = next_attempt(shared, &state, now);
        match shared.spool.save_state(&id, &state).await {
            Ok(()) => Finalized::Kept(state),
            Err(SpoolError::LeaseLost { .. }) => lease_lost(id),
            Err(e) => {
                tracing::error!(target: "postrider::engine", "{id}: cannot record delivery state: {e} (recipients delivered are not delivered again; the record is retried)");
                state.next_attempt = now + shared.retry.initial;
                Finalized::Unsaved(state)
            }
        }
    } else {
        Finalized::Kept(state)
    };
    drop(claim);
    outcome
}

/// The next attempt: the retry delay, but never after the moment the message expires, so the
/// bounce goes out on time. (The delay warning is checked at attempts, as sendmail does at queue
/// runs: with 66-minute retries it is at most that late, and costs no extra attempt.)
///
/// Past the expiry (the bounce could not be queued), the normal delay applies, so a full disk
/// does not turn into a retry every second.
fn next_attempt(shared: &Shared, state: &MessageState, now: SystemTime) -> SystemTime {
    let next = now + shared.retry.delay(state.attempts.max(1));
    let expiry = state.arrival + shared.retry.max_age;
    if expiry > now {
        next.min(expiry).max(now + Duration::from_secs(1))
    } else {
        next
    }
}

/// Turns every recipient still pending into a failure: the message is too old.
fn expire(
    shared: &Shared,
    id: QueueId,
    envelope: &Envelope,
    state: &mut MessageState,
    failed: &mut Vec<usize>,
    now: SystemTime,
    age: Duration,
) {
    let days = shared.retry.max_age.as_secs() / 86_400;
    let limit = if days >= 1 {
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    } else {
        format!("{} hours", shared.retry.max_age.as_secs() / 3600)
    };
    for (idx, rs) in state.recipients.iter_mut().enumerate() {
        if rs.status != RecipientStatus::Pending || failed.contains(&idx) {
            continue;
        }
        let (status, last_text, reply) = match &rs.last {
            Some(d) if d.status.is_temporary() => {
                (d.status.with_class(5), d.text.clone(), d.reply.clone())
            }
            Some(d) => (
                EnhancedStatus::new(5, 4, 7),
                d.text.clone(),
                d.reply.clone(),
            ),
            None => (
                EnhancedStatus::new(5, 4, 7),
                "no attempt was made".to_string(),
                None,
            ),
        };
        let diag = Diagnostic {
            status,
            reply,
            text: format!("Cannot send message for {limit}; last error: {last_text}"),
        };
        let event = DeliveryEvent {
            id,
            sender: envelope.sender.clone(),
            recipient: envelope.recipients[idx].address.clone(),
            outcome: Outcome::Failed(diag.clone()),
            mailer: Agent::Queue,
            relay: None,
            arrival: state.arrival,
            started: now,
            finished: now,
            note: None,
        };
        tracing::debug!(target: "postrider::engine", "{id}: expired after {:?}", age);
        shared.emit(event);
        rs.last = Some(diag);
        failed.push(idx);
    }
}

/// Queues the bounce for `failed`, then marks them failed. A recipient whose bounce could not
/// be queued stays pending.
async fn bounce_failed(
    shared: &Shared,
    ctx: &DsnContext<'_>,
    state: &mut MessageState,
    failed: &[usize],
) {
    let id = ctx.id;
    let envelope = ctx.envelope;
    let wanted: Vec<usize> = failed
        .iter()
        .copied()
        .filter(|&i| envelope.recipients[i].effective_notify().failure)
        .collect();
    let mut queued = true;
    if !wanted.is_empty() {
        if envelope.sender.is_null() {
            tracing::warn!(
                target: "postrider::engine",
                "{id}: undeliverable message from <> (a bounce) is dropped: a bounce is never bounced"
            );
        } else {
            let recipients: Vec<DsnRecipient<'_>> = wanted
                .iter()
                .map(|&i| {
                    let rs = &state.recipients[i];
                    DsnRecipient {
                        recipient: &envelope.recipients[i],
                        action: Action::Failed,
                        status: rs
                            .last
                            .as_ref()
                            .map_or(EnhancedStatus::PERMANENT, |d| d.status),
                        diagnostic: rs.last.as_ref(),
                        remote_mta: remote_name(rs.remote_mta.as_deref()),
                        last_attempt: rs.last_attempt,
                        will_retry_until: None,
                    }
                })
                .collect();
            queued = send_dsn(shared, DsnKind::Failure, ctx, &recipients).await;
        }
    }
    for &i in failed {
        if queued || !wanted.contains(&i) {
            state.recipients[i].status = RecipientStatus::Failed;
        }
    }
}

async fn notify_delivered(
    shared: &Shared,
    ctx: &DsnContext<'_>,
    state: &MessageState,
    delivered: &[(usize, bool)],
) {
    let envelope = ctx.envelope;
    let recipients: Vec<DsnRecipient<'_>> = delivered
        .iter()
        .filter(|(i, _)| envelope.recipients[*i].effective_notify().success)
        .map(|&(i, local)| {
            let rs = &state.recipients[i];
            DsnRecipient {
                recipient: &envelope.recipients[i],
                // Handed to another MTA, we can only say "relayed" (RFC 3464 §2.3.3).
                action: if local {
                    Action::Delivered
                } else {
                    Action::Relayed
                },
                status: EnhancedStatus::OK,
                diagnostic: None,
                remote_mta: remote_name(rs.remote_mta.as_deref()),
                last_attempt: rs.last_attempt,
                will_retry_until: None,
            }
        })
        .collect();
    if !recipients.is_empty() && !envelope.sender.is_null() {
        send_dsn(shared, DsnKind::Success, ctx, &recipients).await;
    }
}

/// Sends the delay warning once; returns true when the state changed.
async fn warn_delayed(shared: &Shared, ctx: &DsnContext<'_>, state: &mut MessageState) -> bool {
    let envelope = ctx.envelope;
    let until = state.arrival + shared.retry.max_age;
    let recipients: Vec<DsnRecipient<'_>> = state
        .recipients
        .iter()
        .enumerate()
        .filter(|(i, rs)| {
            rs.status == RecipientStatus::Pending
                && envelope.recipients[*i].effective_notify().delay
        })
        .map(|(i, rs)| DsnRecipient {
            recipient: &envelope.recipients[i],
            action: Action::Delayed,
            status: rs
                .last
                .as_ref()
                .map_or(EnhancedStatus::TEMPORARY, |d| d.status),
            diagnostic: rs.last.as_ref(),
            remote_mta: remote_name(rs.remote_mta.as_deref()),
            last_attempt: rs.last_attempt,
            will_retry_until: Some(until),
        })
        .collect();
    let sent = recipients.is_empty()
        || envelope.sender.is_null()
        || send_dsn(shared, DsnKind::Delay, ctx, &recipients).await;
    if sent {
        state.warned = true;
    }
    sent
}

/// The `Remote-MTA` name of a stored `remote_mta` (`mx.example.com. [192.0.2.1]`): the host
/// name, or the address literal when the host was reached by address (`[192.0.2.1]`).
fn remote_name(remote: Option<&str>) -> Option<&str> {
    let r = remote?.trim();
    let name = r.split(' ').next().unwrap_or(r).trim_end_matches('.');
    (!name.is_empty()).then_some(name)
}

/// Builds and queues one DSN; true when it is durable (or there was nothing to send).
async fn send_dsn(
    shared: &Shared,
    kind: DsnKind,
    ctx: &DsnContext<'_>,
    recipients: &[DsnRecipient<'_>],
) -> bool {
    let Some((envelope, body)) = bounce::build(kind, ctx, recipients) else {
        return true;
    };
    let to = envelope.recipients[0].address.clone();
    match shared.enqueue(envelope, body, Some(ctx.id)).await {
        Ok(dsn_id) => {
            tracing::info!(
                target: "postrider::engine",
                "{}: {dsn_id}: DSN ({}) queued to <{to}>",
                ctx.id,
                match kind {
                    DsnKind::Failure => "failure",
                    DsnKind::Delay => "delay",
                    DsnKind::Success => "success",
                }
            );
            true
        }
        Err(e) => {
            tracing::error!(target: "postrider::engine", "{}: cannot queue the DSN to <{to}>: {e}", ctx.id);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_are_the_relay_fields_host_or_address_literal() {
        assert_eq!(
            remote_name(Some("mx.b.example. [192.0.2.1]")),
            Some("mx.b.example")
        );
        assert_eq!(remote_name(Some("[192.0.2.1]")), Some("[192.0.2.1]"));
        assert_eq!(remote_name(Some("")), None);
        assert_eq!(remote_name(None), None);
    }
}
