//! What one client may ask of the server: sizes, counts and time (RFC 5321 §4.5.3).
//!
//! The defaults follow Postfix's smtpd where RFC 5321 names no number; each is a field an
//! embedder may change.

use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// Size and count limits of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// The largest message accepted, in octets, advertised with `SIZE` (Postfix's
    /// `message_size_limit`, 10,240,000).
    pub max_message_size: usize,
    /// Recipients per message; more get `452 4.5.3` (Postfix's `smtpd_recipient_limit`, 1000).
    pub max_recipients: usize,
    /// The longest command line, CRLF included. RFC 5321 §4.5.3.1.4 says 512; extensions
    /// lengthen MAIL and RCPT, so Postfix allows 2048 (`line_length_limit`).
    pub max_line_length: usize,
    /// Refused commands before the session is closed with `421 4.7.0` (Postfix's
    /// `smtpd_hard_error_limit`, 20).
    pub max_errors: usize,
    /// Failed AUTH attempts before the session is closed (3).
    pub max_auth_failures: u32,
    /// `Received:` fields above which a message is a mail loop, `554 5.4.6` (Postfix's
    /// `hopcount_limit`, 50).
    pub max_hops: usize,
    /// Sessions at once over all listeners of one server (500).
    pub max_connections: usize,
    /// Sessions at once from one client address (Postfix's
    /// `smtpd_client_connection_count_limit`, 50).
    pub max_connections_per_client: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_message_size: 10_240_000,
            max_recipients: 1000,
            max_line_length: 2048,
            max_errors: 20,
            max_auth_failures: 3,
            max_hops: 50,
            max_connections: 500,
            max_connections_per_client: 50,
        }
    }
}

/// The most the server's `Received:` field can add to a message: its words are bounded (the
/// HELO name to 255 characters, names to 253, the user to 100, one recipient within a command
/// line), so 16 KiB leaves room to spare.
const RECEIVED_BOUND: usize = 16 * 1024;

impl ServerLimits {
    /// The smallest [`Limits::max_message_size`](crate::engine::Limits::max_message_size) of
    /// an engine behind this server that never refuses what the server accepted.
    ///
    /// `SIZE` counts what the client sends (RFC 1870); the engine counts what it stores: the
    /// server's `Received:` field, and every bare CR or LF made a CRLF, which at worst doubles
    /// a message. An engine held to the advertised size would refuse, after DATA, a message
    /// the client had every right to send.
    ///
    /// ```
    /// use postrider::server::ServerLimits;
    /// let limits = ServerLimits { max_message_size: 1000, ..ServerLimits::default() };
    /// assert!(limits.engine_message_size() >= 2 * 1000 + 1000);
    /// ```
    pub fn engine_message_size(&self) -> usize {
        self.max_message_size
            .saturating_mul(2)
            .saturating_add(RECEIVED_BOUND)
    }
}

/// Server time limits (RFC 5321 §4.5.3.2).
///
/// Each is a deadline for a whole step, never a timer that restarts on every byte: a client
/// that trickles one octet a second is dropped when the step's deadline passes, however
/// steadily it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// For the next whole command line (§4.5.3.2.7: 5 min).
    pub command: Duration,
    /// The base deadline of the DATA phase or of one BDAT chunk (§4.5.3.2.6's data block:
    /// 3 min), lengthened by [`ServerTimeouts::min_data_rate`].
    pub data: Duration,
    /// Octets per second a client must average in DATA: each octet received lengthens the
    /// DATA deadline by `1 / min_data_rate` seconds (Postfix's `smtpd_min_data_rate`, 500).
    pub min_data_rate: u32,
    /// The TLS handshake, after STARTTLS or at connect on `submissions` (1 min).
    pub tls_handshake: Duration,
    /// The reverse (PTR) and forward lookups of the client's name (10 s).
    pub client_lookup: Duration,
    /// The first delay after a failed AUTH; it grows with each failure (1 s, 2 s, ...).
    pub auth_failure_delay: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts {
            command: 5 * MINUTE,
            data: 3 * MINUTE,
            min_data_rate: 500,
            tls_handshake: MINUTE,
            client_lookup: Duration::from_secs(10),
            auth_failure_delay: Duration::from_secs(1),
        }
    }
}

/// The deadline of one DATA phase or BDAT chunk: `start + data + received / min_data_rate`.
///
/// ```
/// use std::time::Duration;
/// use postrider::server::limits::{DataDeadline, ServerTimeouts};
/// let t = ServerTimeouts::default();
/// let mut d = DataDeadline::new(&t);
/// assert_eq!(d.allowance(), Duration::from_secs(180));
/// d.received(5000); // 5000 octets at 500 octets/s buy 10 s more
/// assert_eq!(d.allowance(), Duration::from_secs(190));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DataDeadline {
    base: Duration,
    rate: u32,
    octets: u64,
}

impl DataDeadline {
    /// A deadline starting now.
    pub fn new(t: &ServerTimeouts) -> DataDeadline {
        DataDeadline {
            base: t.data,
            rate: t.min_data_rate.max(1),
            octets: 0,
        }
    }

    /// Counts octets received.
    pub fn received(&mut self, octets: usize) {
        self.octets = self.octets.saturating_add(octets as u64);
    }

    /// The time allowed from the start of the phase, given the octets received so far.
    pub fn allowance(&self) -> Duration {
        let earned = Duration::from_secs_f64(self.octets as f64 / f64::from(self.rate));
        self.base.saturating_add(earned)
    }
}
