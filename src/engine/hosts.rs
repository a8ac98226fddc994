//! Host status: a next hop that does not answer is "dead" until its backoff ends, and mail for
//! it waits without a connection attempt (sendmail's host status, Postfix's dead destination).

use std::collections::HashMap;
use std::time::SystemTime;

use super::retry::RetryPolicy;
use crate::route::Route;
use crate::status::{Diagnostic, Outcome};
use crate::transport::RecipientReport;

struct HostState {
    dead_until: SystemTime,
    failures: u32,
    reason: Diagnostic,
}

/// The status of every route that failed recently.
#[derive(Default)]
pub(crate) struct HostTable {
    routes: HashMap<Route, HostState>,
}

/// True for a deferral that says the next hop as a whole is unusable: no answer, a dropped
/// connection, a DNS failure, a TLS failure (all 4.4.x/4.7.x without a remote reply), or a
/// `421` (the server is closing the session). A 4xx to one RCPT says nothing about the host.
pub(crate) fn is_hop_failure(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Deferred(d) => match &d.reply {
            Some(reply) => reply.code() == 421,
            None => matches!(d.status.subject(), 4 | 7),
        },
        _ => false,
    }
}

impl HostTable {
    /// Why `route` is dead, if it is dead at `now`.
    pub(crate) fn dead(&self, route: &Route, now: SystemTime) -> Option<&Diagnostic> {
        self.routes
            .get(route)
            .filter(|s| s.dead_until > now)
            .map(|s| &s.reason)
    }

    /// Updates the route's status from one batch. Returns true when the route just became
    /// dead (for the log).
    pub(crate) fn record(
        &mut self,
        route: &Route,
        reports: &[RecipientReport],
        now: SystemTime,
        retry: &RetryPolicy,
    ) -> bool {
        if !matches!(route, Route::Relay { .. }) || reports.is_empty() {
            return false;
        }
        if !reports.iter().all(|r| is_hop_failure(&r.outcome)) {
            self.routes.remove(route);
            return false;
        }
        let Outcome::Deferred(reason) = &reports[0].outcome else {
            return false;
        };
        let state = self
            .routes
            .entry(route.clone())
            .or_insert_with(|| HostState {
                dead_until: now,
                failures: 0,
                reason: reason.clone(),
            });
        let newly = state.dead_until <= now;
        state.failures += 1;
        state.reason = reason.clone();
        state.dead_until = now + retry.base_delay(state.failures);
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Domain;
    use crate::queue_id::QueueId;
    use crate::status::{EnhancedStatus, Reply};
    use std::time::Duration;

    fn report(outcome: Outcome) -> RecipientReport {
        RecipientReport {
            id: QueueId::generate(),
            recipient: 0,
            outcome,
            remote: None,
            note: None,
            dsn_passed_on: false,
        }
    }

    #[test]
    fn connection_failures_kill_a_route_and_a_success_revives_it() {
        let route = Route::direct_mx(&Domain::parse("example.com").unwrap());
        let mut t = HostTable::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let timeout = report(Outcome::deferred(EnhancedStatus::new(4, 4, 1), "timed out"));
        assert!(t.record(&route, &[timeout], now, &RetryPolicy::default()));
        assert!(t.dead(&route, now + Duration::from_secs(299)).is_some());
        assert!(t.dead(&route, now + Duration::from_secs(300)).is_none());
        let ok = report(Outcome::from_reply(Reply::new(250, None, "ok").unwrap()));
        t.record(&route, &[ok], now, &RetryPolicy::default());
        assert!(t.dead(&route, now).is_none());
    }

    #[test]
    fn a_recipient_level_4xx_is_not_a_host_failure() {
        let greylisted = Reply::new(450, Some(EnhancedStatus::new(4, 7, 1)), "greylisted").unwrap();
        assert!(!is_hop_failure(&Outcome::from_reply(greylisted)));
        let closing = Reply::new(421, None, "too many connections").unwrap();
        assert!(is_hop_failure(&Outcome::from_reply(closing)));
        assert!(is_hop_failure(&Outcome::deferred(
            EnhancedStatus::new(4, 7, 5),
            "TLS handshake failed"
        )));
        assert!(!is_hop_failure(&Outcome::deferred(
            EnhancedStatus::new(4, 3, 0),
            "spool error"
        )));
    }
}
