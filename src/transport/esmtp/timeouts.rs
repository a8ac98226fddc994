//! Per-phase time limits of an SMTP client session (RFC 5321 §4.5.3.2).

use std::fmt;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// How long the client waits in each phase of a session before giving up on the host.
///
/// The defaults are RFC 5321 §4.5.3.2's for the phases it names; for the others they follow
/// Postfix (EHLO, STARTTLS and AUTH 5 min, RSET 20 s). QUIT waits 30 s: every outcome is known
/// by then, and waiting longer only holds a connection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection (30 s).
    pub connect: Duration,
    /// The 220 greeting (5 min).
    pub greeting: Duration,
    /// The reply to EHLO or HELO (5 min).
    pub helo: Duration,
    /// The reply to STARTTLS plus the TLS handshake, or the handshake of implicit TLS (5 min).
    pub tls: Duration,
    /// Each reply during AUTH (5 min).
    pub auth: Duration,
    /// The reply to MAIL FROM (5 min).
    pub mail: Duration,
    /// The reply to each RCPT TO (5 min).
    pub rcpt: Duration,
    /// The 354 reply to DATA (2 min).
    pub data_init: Duration,
    /// Each block of message data written (3 min).
    pub data_block: Duration,
    /// The reply to the final `.` (10 min).
    pub data_term: Duration,
    /// The reply to RSET (20 s).
    pub rset: Duration,
    /// The reply to QUIT (30 s).
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: 5 * MINUTE,
            helo: 5 * MINUTE,
            tls: 5 * MINUTE,
            auth: 5 * MINUTE,
            mail: 5 * MINUTE,
            rcpt: 5 * MINUTE,
            data_init: 2 * MINUTE,
            data_block: 3 * MINUTE,
            data_term: 10 * MINUTE,
            rset: Duration::from_secs(20),
            quit: Duration::from_secs(30),
        }
    }
}

/// A phase of a client session: what the client was doing when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Establishing the TCP connection.
    Connect,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO or HELO.
    Helo,
    /// STARTTLS and the TLS handshake (or implicit TLS).
    Tls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA, until 354.
    DataInit,
    /// Sending the message data.
    DataBlock,
    /// Waiting for the reply to the final `.`.
    DataTerm,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

impl Phase {
    /// The time limit for this phase.
    pub fn limit(self, t: &Timeouts) -> Duration {
        match self {
            Phase::Connect => t.connect,
            Phase::Greeting => t.greeting,
            Phase::Helo => t.helo,
            Phase::Tls => t.tls,
            Phase::Auth => t.auth,
            Phase::Mail => t.mail,
            Phase::Rcpt => t.rcpt,
            Phase::DataInit => t.data_init,
            Phase::DataBlock => t.data_block,
            Phase::DataTerm => t.data_term,
            Phase::Rset => t.rset,
            Phase::Quit => t.quit,
        }
    }

    /// What the client was doing, to complete "timeout ..." or "connection dropped ... while".
    pub fn activity(self) -> &'static str {
        match self {
            Phase::Connect => "connecting",
            Phase::Greeting => "waiting for greeting",
            Phase::Helo => "waiting for reply to EHLO/HELO",
            Phase::Tls => "during TLS handshake",
            Phase::Auth => "waiting for reply to AUTH",
            Phase::Mail => "waiting for reply to MAIL FROM",
            Phase::Rcpt => "waiting for reply to RCPT TO",
            Phase::DataInit => "waiting for reply to DATA",
            Phase::DataBlock => "sending message data",
            Phase::DataTerm => "waiting for reply to end of data",
            Phase::Rset => "waiting for reply to RSET",
            Phase::Quit => "waiting for reply to QUIT",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.activity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_those_of_rfc_5321() {
        let t = Timeouts::default();
        assert_eq!(Phase::Connect.limit(&t), Duration::from_secs(30));
        assert_eq!(Phase::Greeting.limit(&t), Duration::from_secs(300));
        assert_eq!(Phase::Mail.limit(&t), Duration::from_secs(300));
        assert_eq!(Phase::Rcpt.limit(&t), Duration::from_secs(300));
        assert_eq!(Phase::DataInit.limit(&t), Duration::from_secs(120));
        assert_eq!(Phase::DataBlock.limit(&t), Duration::from_secs(180));
        assert_eq!(Phase::DataTerm.limit(&t), Duration::from_secs(600));
    }
}
