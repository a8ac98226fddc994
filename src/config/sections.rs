//! The sections of `postrider.toml` other than its top-level keys.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::duration::{de_duration, de_duration_or_off};
use crate::address::Domain;
use crate::engine::RetryPolicy;
use crate::resolve::{AddressPreference, DnsOptions};
use crate::spf::SpfPolicy;

/// `[retry]`: when to try again, warn and give up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RetrySection {
    /// Delay before the first retry.
    #[serde(deserialize_with = "de_duration")]
    pub initial: Duration,
    /// The longest delay between attempts.
    #[serde(deserialize_with = "de_duration")]
    pub max_interval: Duration,
    /// When to send the delay warning; `None` (`"off"`) never does.
    #[serde(deserialize_with = "de_duration_or_off")]
    pub warn_after: Option<Duration>,
    /// When to give up and bounce.
    #[serde(deserialize_with = "de_duration")]
    pub max_age: Duration,
}

impl Default for RetrySection {
    fn default() -> Self {
        let p = RetryPolicy::default();
        RetrySection {
            initial: p.initial,
            max_interval: p.max_interval,
            warn_after: p.warn_after,
            max_age: p.max_age,
        }
    }
}

/// `[spf]`: the SPF pre-flight before direct-to-MX delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SpfSection {
    /// `off | warn | smart-host | strict`; `None`: smart-host when a smart host is configured,
    /// else warn.
    pub policy: Option<SpfPolicy>,
    /// This site's public addresses as receivers see them.
    pub public_addresses: Vec<IpAddr>,
    /// The domains this site sends as (checked by the doctor).
    pub sender_domains: Vec<Domain>,
}

/// `[dns]`: how names are looked up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DnsSection {
    /// Name servers (`IP` or `IP:port`); empty: the system's (`/etc/resolv.conf`).
    #[serde(deserialize_with = "de_name_servers")]
    pub name_servers: Vec<SocketAddr>,
    /// How long to wait for one answer.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Tries per query.
    pub attempts: u32,
    /// `ipv4-first`, `ipv6-first` or `ipv4-only`.
    #[serde(deserialize_with = "de_address_preference")]
    pub address_preference: AddressPreference,
}

impl Default for DnsSection {
    fn default() -> Self {
        let o = DnsOptions::default();
        DnsSection {
            name_servers: Vec::new(),
            timeout: o.timeout,
            attempts: o.attempts,
            address_preference: o.address_preference,
        }
    }
}

fn de_name_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "name server {s:?} is not an IP address or IP:port (e.g. \"192.168.1.1\", \"[::1]:5353\")"
                    ))
                })
        })
        .collect()
}

fn de_address_preference<'de, D: Deserializer<'de>>(d: D) -> Result<AddressPreference, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "ipv4-first" => Ok(AddressPreference::Ipv4First),
        "ipv6-first" => Ok(AddressPreference::Ipv6First),
        "ipv4-only" => Ok(AddressPreference::Ipv4Only),
        _ => Err(serde::de::Error::custom(format!(
            "address_preference {s:?} is not one of ipv4-first, ipv6-first, ipv4-only"
        ))),
    }
}

/// `[esmtp]`: the SMTP client — sessions kept for reuse, connections per host, the time limit
/// of each phase, extra trust anchors.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EsmtpSection {
    /// Keep an idle session this long for the next message to the same next hop (Postfix's
    /// `smtp_connection_cache_time_limit`); `"off"` closes each session when its batch is done.
    #[serde(deserialize_with = "de_duration_or_off")]
    pub connection_cache: Option<Duration>,
    /// PEM file of CA certificates trusted for `verify` hops besides the Mozilla roots (a
    /// company CA); relative to the configuration file.
    pub trust_anchors: Option<std::path::PathBuf>,
    /// `[esmtp.timeouts]`: each phase's limit.
    pub timeouts: TimeoutsSection,
}

impl Default for EsmtpSection {
    fn default() -> Self {
        EsmtpSection {
            connection_cache: Some(crate::transport::esmtp::DEFAULT_CONNECTION_CACHE_TIME),
            trust_anchors: None,
            timeouts: TimeoutsSection::default(),
        }
    }
}

/// `[esmtp.timeouts]`: how long the client waits in each phase before giving up on a host.
/// Defaults are RFC 5321 §4.5.3.2's (see
/// [`Timeouts`](crate::transport::esmtp::Timeouts)); shorter limits free a stuck delivery sooner
/// from a tarpitting smart host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TimeoutsSection {
    /// Establishing the TCP connection (30 s).
    #[serde(deserialize_with = "de_duration")]
    pub connect: Duration,
    /// The 220 greeting (5 min).
    #[serde(deserialize_with = "de_duration")]
    pub greeting: Duration,
    /// The reply to EHLO or HELO (5 min).
    #[serde(deserialize_with = "de_duration")]
    pub helo: Duration,
    /// STARTTLS and the TLS handshake (5 min).
    #[serde(deserialize_with = "de_duration")]
    pub tls: Duration,
    /// Each reply during AUTH (5 min).
    #[serde(deserialize_with = "de_duration")]
    pub auth: Duration,
    /// The reply to MAIL FROM (5 min).
    #[serde(deserialize_with = "de_duration")]
    pub mail: Duration,
    /// The reply to each RCPT TO (5 min).
    #[serde(deserialize_with = "de_duration")]
    pub rcpt: Duration,
    /// The 354 reply to DATA (2 min).
    #[serde(deserialize_with = "de_duration")]
    pub data_init: Duration,
    /// Each block of message data written (3 min).
    #[serde(deserialize_with = "de_duration")]
    pub data_block: Duration,
    /// The reply to the final dot (10 min).
    #[serde(deserialize_with = "de_duration")]
    pub data_term: Duration,
    /// The reply to RSET (20 s).
    #[serde(deserialize_with = "de_duration")]
    pub rset: Duration,
    /// The reply to QUIT (30 s).
    #[serde(deserialize_with = "de_duration")]
    pub quit: Duration,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        TimeoutsSection::from(crate::transport::esmtp::Timeouts::default())
    }
}

impl From<crate::transport::esmtp::Timeouts> for TimeoutsSection {
    fn from(t: crate::transport::esmtp::Timeouts) -> Self {
        TimeoutsSection {
            connect: t.connect,
            greeting: t.greeting,
            helo: t.helo,
            tls: t.tls,
            auth: t.auth,
            mail: t.mail,
            rcpt: t.rcpt,
            data_init: t.data_init,
            data_block: t.data_block,
            data_term: t.data_term,
            rset: t.rset,
            quit: t.quit,
        }
    }
}

impl From<TimeoutsSection> for crate::transport::esmtp::Timeouts {
    fn from(t: TimeoutsSection) -> Self {
        crate::transport::esmtp::Timeouts {
            connect: t.connect,
            greeting: t.greeting,
            helo: t.helo,
            tls: t.tls,
            auth: t.auth,
            mail: t.mail,
            rcpt: t.rcpt,
            data_init: t.data_init,
            data_block: t.data_block,
            data_term: t.data_term,
            rset: t.rset,
            quit: t.quit,
        }
    }
}

/// `[queue]`: the engine's size and concurrency limits and its shutdown grace
/// (see [`Limits`](crate::engine::Limits)).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct QueueSection {
    /// The largest message accepted, in octets.
    pub max_message_size: usize,
    /// The most recipients one message may have.
    pub max_recipients: usize,
    /// Deliveries running at once, over all next hops.
    pub max_deliveries: usize,
    /// Connections open at once to one next hop (Postfix's
    /// `default_destination_concurrency_limit`): the engine's per-route limit and the SMTP
    /// client's per-host limit, which counts the idle sessions it keeps for reuse too.
    pub destination_concurrency: usize,
    /// Messages carried by one connection per batch at most.
    pub max_batch_messages: usize,
    /// Messages being attempted at once.
    pub max_active_messages: usize,
    /// How often to re-read the spool for messages other processes queued; `"off"` never.
    #[serde(deserialize_with = "de_duration_or_off")]
    pub scan_interval: Option<Duration>,
    /// How long a stop lets each session finish the message it is on.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection::from(&crate::engine::Limits::default())
    }
}

impl From<&crate::engine::Limits> for QueueSection {
    fn from(l: &crate::engine::Limits) -> Self {
        QueueSection {
            max_message_size: l.max_message_size,
            max_recipients: l.max_recipients,
            max_deliveries: l.max_deliveries,
            destination_concurrency: l.max_deliveries_per_hop,
            max_batch_messages: l.max_batch_messages,
            max_active_messages: l.max_active_messages,
            scan_interval: l.queue_scan_interval,
            shutdown_grace: l.shutdown_grace,
        }
    }
}

impl QueueSection {
    /// The engine limits this section describes.
    pub fn limits(&self) -> crate::engine::Limits {
        crate::engine::Limits {
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            max_deliveries: self.max_deliveries,
            max_deliveries_per_hop: self.destination_concurrency,
            max_batch_messages: self.max_batch_messages,
            max_active_messages: self.max_active_messages,
            queue_scan_interval: self.scan_interval,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// `[metrics]`: where a daemon serves [`crate::metrics`] in Prometheus's text format. The
/// library itself only records through the `metrics` facade; the daemon installs the exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MetricsSection {
    /// The address of the HTTP listener (`GET /metrics`), e.g. `127.0.0.1:9187`; `None`: no
    /// exporter. It has no authentication: keep it on loopback or a management network.
    pub listen: Option<std::net::SocketAddr>,
}
