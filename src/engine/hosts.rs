//! Host status: a next hop that does not answer is "dead" until its backoff ends, and mail for
//! it waits without a connection attempt (sendmail's host status, Postfix's dead destination).

use std::collections::HashMap;
use std::time::SystemTime;

use super::retry::RetryPolicy;
use crate::route::Route;
use crate::status::{Diagnostic, Outcome};

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
/// connection, a DNS failure, a TLS failure or credentials withheld (4.4.x/4.7.x without a
/// remote reply), or a `421` (the server is closing the session). A 4xx to one RCPT says
/// nothing about the host, and neither does an SPF verdict (4.7.23/4.7.24): it is about one
/// sender, and other senders' mail must still go.
pub(crate) fn is_hop_failure(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Deferred(d) => match &d.reply {
            Some(reply) => reply.code() == 421,
            None => match d.status.subject() {
                4 => true,
                7 => !matches!(d.status.detail(), 23 | 24),
                _ => false,
            },
        },
        _ => false,
    }
}

/// The log line for a next hop that just became dead: "not answering" only when it did not
/// answer (no connection, no greeting, dropped); otherwise what failed.
pub(crate) fn dead_line(hop: &str, reason: &Diagnostic) -> String {
    let what = if reason.reply.is_none()
        && matches!(reason.status.subject(), 4)
        && matches!(reason.status.detail(), 1 | 2)
    {
        format!("next hop {hop} is not answering ({})", reason.text)
    } else {
        format!("next hop {hop} failed: {}", reason.text)
    };
    format!("{what}; deferring its mail without connecting until its backoff ends")
}

impl HostTable {
    /// Why `route` is dead, if it is dead at `now`.
    pub(crate) fn dead(&self, route: &Route, now: SystemTime) -> Option<&Diagnostic> {
        self.routes
            .get(route)
            .filter(|s| s.dead_until > now)
            .map(|s| &s.reason)
    }

    /// Updates the route's status from the outcomes of one delivery. Returns the reason when
    /// the route just became dead (for the log).
    pub(crate) fn record(
        &mut self,
        route: &Route,
        outcomes: &[Outcome],
        now: SystemTime,
        retry: &RetryPolicy,
    ) -> Option<Diagnostic> {
        if !matches!(route, Route::Relay { .. }) || outcomes.is_empty() {
            return None;
        }
        if !outcomes.iter().all(is_hop_failure) {
            self.routes.remove(route);
            return None;
        }
        let Outcome::Deferred(reason) = &outcomes[0] else {
            return None;
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
        newly.then(|| reason.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Domain;
    use crate::status::{EnhancedStatus, Reply};
    use std::time::Duration;

    #[test]
    fn connection_failures_kill_a_route_and_a_success_revives_it() {
        let route = Route::direct_mx(&Domain::parse("example.com").unwrap());
        let mut t = HostTable::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let timeout = Outcome::deferred(EnhancedStatus::new(4, 4, 1), "timed out");
        assert!(
            t.record(&route, &[timeout], now, &RetryPolicy::default())
                .is_some()
        );
        assert!(t.dead(&route, now + Duration::from_secs(299)).is_some());
        assert!(t.dead(&route, now + Duration::from_secs(300)).is_none());
        let ok = Outcome::from_reply(Reply::new(250, None, "ok").unwrap());
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

    #[test]
    fn an_spf_deferral_is_about_the_sender_not_the_next_hop() {
        for detail in [23, 24] {
            let spf =
                Outcome::deferred(EnhancedStatus::new(4, 7, detail), "SPF does not authorise");
            assert!(!is_hop_failure(&spf));
        }
    }

    #[test]
    fn only_a_hop_that_did_not_answer_is_called_not_answering() {
        let timeout = Diagnostic::local(EnhancedStatus::new(4, 4, 1), "Connection timed out");
        assert!(dead_line("[a.example]", &timeout).contains("is not answering"));
        for (status, text) in [
            (EnhancedStatus::new(4, 7, 5), "TLS handshake failed"),
            (EnhancedStatus::new(4, 7, 10), "credentials withheld"),
            (EnhancedStatus::new(4, 4, 3), "MX lookup failed"),
        ] {
            let line = dead_line("[a.example]", &Diagnostic::local(status, text));
            assert!(!line.contains("not answering"), "{line}");
            assert!(line.contains(text), "{line}");
        }
    }
}
