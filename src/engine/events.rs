//! What the engine tells its embedder and its log about every recipient attempt.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::address::{Address, ReversePath};
use crate::queue_id::QueueId;
use crate::route::{Mailer, Route};
use crate::status::Outcome;
use crate::transport::RemoteHost;

/// Who gave an outcome, as sendmail's `mailer=` field names it: the relay mailer of an SMTP
/// route (`relay`, `smtps`, ...), local delivery, the mailertable's `error` mailer, or
/// the queue itself (expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agent {
    /// An SMTP route's mailer.
    Relay(Mailer),
    /// Delivery on this machine.
    Local,
    /// Refused by routing (a mailertable `error:` route, a routing failure).
    Error,
    /// The queue gave up on its own (the message expired).
    Queue,
}

impl Agent {
    /// The agent of a route.
    pub fn of(route: &Route) -> Agent {
        match route {
            Route::Relay { mailer, .. } => Agent::Relay(*mailer),
            Route::Local { .. } => Agent::Local,
            Route::Reject { .. } => Agent::Error,
        }
    }

    /// The name sendmail's log shows.
    pub fn name(&self) -> &'static str {
        match self {
            Agent::Relay(mailer) => mailer.name(),
            Agent::Local => "local",
            Agent::Error => "error",
            Agent::Queue => "queue",
        }
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One recipient attempt: broadcast by [`Engine::subscribe`](super::Engine::subscribe) and
/// logged through `tracing` as the line every mail administrator knows (see
/// [`DeliveryEvent::log_line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEvent {
    /// The message.
    pub id: QueueId,
    /// Its envelope sender.
    pub sender: ReversePath,
    /// The recipient this attempt was for.
    pub recipient: Address,
    /// What happened.
    pub outcome: Outcome,
    /// Who gave the outcome (`mailer=relay`, `smtps`, `local`, `error`, `queue`).
    pub mailer: Agent,
    /// The host that answered or was tried, if any.
    pub relay: Option<RemoteHost>,
    /// When the message entered the queue.
    pub arrival: SystemTime,
    /// When this attempt started.
    pub started: SystemTime,
    /// When this attempt ended.
    pub finished: SystemTime,
    /// A warning about this attempt an operator should act on even if the mail went through
    /// (SPF would fail for our address; the message was sent through the smart host instead).
    pub note: Option<String>,
}

impl DeliveryEvent {
    /// Time from arrival to the end of this attempt (sendmail's `delay=`).
    pub fn delay(&self) -> Duration {
        self.finished
            .duration_since(self.arrival)
            .unwrap_or_default()
    }

    /// Time this attempt took (sendmail's `xdelay=`).
    pub fn xdelay(&self) -> Duration {
        self.finished
            .duration_since(self.started)
            .unwrap_or_default()
    }

    /// The status field: `Sent (...)`, `Deferred: ...` or `Failed: ...`.
    pub fn stat(&self) -> String {
        match &self.outcome {
            Outcome::Delivered { reply } => format!("Sent ({})", reply.one_line()),
            Outcome::Deferred(d) => format!("Deferred: {}", d.text),
            Outcome::Failed(d) => format!("Failed: {}", d.text),
        }
    }

    /// The sendmail-style log line:
    /// `QID: to=<a@b>, delay=00:00:03, xdelay=00:00:01, mailer=relay,
    /// relay=mx.b.example. [192.0.2.1], dsn=2.0.0, stat=Sent (250 2.0.0 Ok)`.
    pub fn log_line(&self) -> String {
        let mut line = format!(
            "{}: to=<{}>, delay={}, xdelay={}, mailer={}",
            self.id,
            self.recipient,
            crate::time::delay(self.delay()),
            crate::time::delay(self.xdelay()),
            self.mailer
        );
        if let Some(relay) = &self.relay {
            line.push_str(&format!(", relay={relay}"));
        }
        line.push_str(&format!(
            ", dsn={}, stat={}",
            self.outcome.status(),
            self.stat()
        ));
        line
    }
}

impl fmt::Display for DeliveryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.log_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{EnhancedStatus, Reply};

    fn event(outcome: Outcome) -> DeliveryEvent {
        let arrival = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        DeliveryEvent {
            id: QueueId::parse("0PC4F8X1RZ3A7KQ2").unwrap(),
            sender: ReversePath::Null,
            recipient: Address::parse("a@b.example").unwrap(),
            outcome,
            mailer: Agent::Relay(Mailer::Relay),
            relay: Some(RemoteHost {
                name: Some("mx.b.example".into()),
                addr: Some("192.0.2.1".parse().unwrap()),
            }),
            arrival,
            started: arrival + Duration::from_secs(2),
            finished: arrival + Duration::from_secs(3),
            note: None,
        }
    }

    #[test]
    fn a_delivery_renders_as_the_sendmail_log_line() {
        let reply = Reply::new(250, Some(EnhancedStatus::OK), "Ok").unwrap();
        assert_eq!(
            event(Outcome::Delivered { reply }).log_line(),
            "0PC4F8X1RZ3A7KQ2: to=<a@b.example>, delay=00:00:03, xdelay=00:00:01, \
             mailer=relay, relay=mx.b.example. [192.0.2.1], dsn=2.0.0, stat=Sent (250 2.0.0 Ok)"
        );
    }

    #[test]
    fn a_deferral_says_why_in_the_stat_field() {
        let e = event(Outcome::deferred(
            EnhancedStatus::new(4, 4, 1),
            "Connection timed out with mx.b.example.",
        ));
        assert!(
            e.log_line()
                .ends_with("dsn=4.4.1, stat=Deferred: Connection timed out with mx.b.example."),
            "{}",
            e.log_line()
        );
    }
}
