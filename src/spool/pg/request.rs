//! An administrator's action waiting for the engine that holds the message: stored in the
//! row (`admin_request`, `admin_at`) by [`Spool::admin`](crate::spool::Spool::admin) while the
//! message is leased, and applied, durably, when the holder writes its outcome or releases
//! the lease (or, if the holder died, when the next claim takes the message).
//!
//! Readers (`load`, `scan`, `list`) show the message as it will be once applied, so an engine
//! that re-reads a message after claiming it sees the hold at once.

use std::time::SystemTime;

use crate::spool::{AdminAction, MessageState};

/// A stored request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Hold,
    Release,
    Delete,
}

impl Request {
    /// The column's value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Request::Hold => "hold",
            Request::Release => "release",
            Request::Delete => "delete",
        }
    }

    /// Reads the column (its CHECK constraint allows only these values).
    pub(crate) fn from_column(value: Option<&str>) -> Option<Request> {
        match value? {
            "hold" => Some(Request::Hold),
            "release" => Some(Request::Release),
            "delete" => Some(Request::Delete),
            _ => None,
        }
    }

    /// The request an action leaves when one is already waiting: a delete stands, otherwise
    /// the latest action wins. `None` for a flush, which has nothing to wait for (the holder
    /// is attempting the message right now).
    pub(crate) fn merge(waiting: Option<Request>, action: AdminAction) -> Option<Request> {
        if waiting == Some(Request::Delete) {
            return Some(Request::Delete);
        }
        match action {
            AdminAction::Hold => Some(Request::Hold),
            AdminAction::Release => Some(Request::Release),
            AdminAction::Delete => Some(Request::Delete),
            AdminAction::Flush => None,
        }
    }

    /// Applies the request to `state`: `false` when the message is to be deleted.
    pub(crate) fn apply(self, state: &mut MessageState, at: SystemTime) -> bool {
        match self {
            Request::Hold => AdminAction::Hold.apply(state, at),
            Request::Release => AdminAction::Release.apply(state, at),
            Request::Delete => return false,
        }
        true
    }
}

/// The effective state of a row: its stored state with the waiting request applied; `None`
/// when the request deletes it.
pub(crate) fn effective(
    mut state: MessageState,
    request: Option<Request>,
    at: Option<SystemTime>,
) -> Option<MessageState> {
    match request {
        Some(r) => {
            let at = at.unwrap_or(state.next_attempt);
            r.apply(&mut state, at).then_some(state)
        }
        None => Some(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_delete_stands_and_otherwise_the_latest_action_wins() {
        assert_eq!(
            Request::merge(Some(Request::Delete), AdminAction::Release),
            Some(Request::Delete)
        );
        assert_eq!(
            Request::merge(Some(Request::Hold), AdminAction::Release),
            Some(Request::Release)
        );
        assert_eq!(Request::merge(None, AdminAction::Flush), None);
        for r in [Request::Hold, Request::Release, Request::Delete] {
            assert_eq!(Request::from_column(Some(r.as_str())), Some(r));
        }
    }
}
