//! The scheduler's I/O for one message, each run in a task of its own: preparing an attempt
//! (claim, re-read, route), and an administrator's change.

use std::sync::Arc;

use super::admin::{self, Changed};
use super::command::{AdminOp, Prepared};
use super::{EngineError, Shared};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::route::{Route, RouteError};
use crate::spool::{Claim, MessageState, QueuedMessage, RecipientStatus, SpoolError};

/// Claims, re-reads and routes one message. `unsaved` is a state the engine holds but could
/// not write last time: it is written first (or the message removed, when it is done), because
/// the record on disk does not know of deliveries that state knows of.
pub(crate) async fn prepare(
    shared: &Shared,
    id: QueueId,
    unsaved: Option<MessageState>,
) -> Prepared {
    let claim = match shared.spool.claim(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Prepared::Busy,
        Err(SpoolError::NotFound(_)) => return Prepared::Gone,
        Err(e) => return Prepared::Failed(e),
    };
    if let Some(state) = unsaved
        && let Some(done) = write_unsaved(shared, id, state).await
    {
        return done;
    }
    // Another process may have advanced the state since this engine last read it.
    let msg = match shared.spool.load(&id).await {
        Ok(m) => m,
        Err(SpoolError::NotFound(_)) => return Prepared::Gone,
        Err(e) => return Prepared::Failed(e),
    };
    ready(shared, claim, msg).await
}

/// Prepares a message the spool handed out claimed and loaded ([`Spool::claim_due`]).
///
/// [`Spool::claim_due`]: crate::spool::Spool::claim_due
pub(crate) async fn prepare_claimed(
    shared: &Shared,
    id: QueueId,
    claim: Claim,
    message: QueuedMessage,
    unsaved: Option<MessageState>,
) -> Prepared {
    let message = match unsaved {
        None => message,
        Some(state) => {
            if let Some(done) = write_unsaved(shared, id, state).await {
                return done;
            }
            match shared.spool.load(&id).await {
                Ok(m) => m,
                Err(SpoolError::NotFound(_)) => return Prepared::Gone,
                Err(e) => return Prepared::Failed(e),
            }
        }
    };
    ready(shared, claim, message).await
}

/// Writes a state that could not be written before; `Some` when preparing ends there.
async fn write_unsaved(shared: &Shared, id: QueueId, state: MessageState) -> Option<Prepared> {
    let written = if state.is_done() {
        match shared.spool.remove(&id).await {
            Ok(()) | Err(SpoolError::NotFound(_)) => {
                tracing::info!(target: "postrider::engine", "{id}: removed (all recipients done; recorded late)");
                return Some(Prepared::Gone);
            }
            Err(e) => Err(e),
        }
    } else {
        shared.spool.save_state(&id, &state).await
    };
    if let Err(e) = written {
        return Some(Prepared::Failed(e));
    }
    tracing::info!(target: "postrider::engine", "{id}: delivery state recorded late");
    None
}

async fn ready(shared: &Shared, claim: Claim, msg: QueuedMessage) -> Prepared {
    if msg.state.held {
        return Prepared::Held(msg.state);
    }
    let routes = route_pending(shared, &msg.envelope, &msg.state).await;
    Prepared::Ready {
        claim,
        envelope: Arc::new(msg.envelope),
        state: msg.state,
        routes,
    }
}

/// The route of every recipient still pending.
pub(crate) async fn route_pending(
    shared: &Shared,
    envelope: &Envelope,
    state: &MessageState,
) -> Vec<(usize, Result<Route, RouteError>)> {
    let mut routes = Vec::new();
    for (idx, (r, s)) in envelope
        .recipients
        .iter()
        .zip(&state.recipients)
        .enumerate()
    {
        if s.status == RecipientStatus::Pending {
            routes.push((idx, shared.router.route(&r.address).await));
        }
    }
    routes
}

/// Writes a hold, release or delete under the message's claim. `Ok(None)`: the message is gone.
pub(crate) async fn apply_admin(
    shared: &Shared,
    op: AdminOp,
    id: QueueId,
) -> Result<Option<MessageState>, EngineError> {
    let claim = match shared.spool.claim(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(EngineError::Busy(id)),
        Err(SpoolError::NotFound(_)) => return Err(EngineError::NotFound(id)),
        Err(e) => return Err(EngineError::Spool(e)),
    };
    let changed = admin::change(&*shared.spool, op, &id, shared.clock.now()).await;
    drop(claim);
    match changed {
        Ok(Changed::Removed) => Ok(None),
        Ok(Changed::State(state) | Changed::Already(state)) => Ok(Some(state)),
        Err(SpoolError::NotFound(_)) => Err(EngineError::NotFound(id)),
        Err(e) => Err(EngineError::Spool(e)),
    }
}
