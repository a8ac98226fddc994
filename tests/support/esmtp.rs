//! Builders and assertions for EsmtpTransport tests: transports pointed at loopback peers,
//! messages, and checks on the reports.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use postrider::resolve::StaticResolver;
use postrider::route::{HopPolicy, PolicyTable, TlsLevel};
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};
use postrider::{
    Address, Delivery, Domain, Envelope, Host, Mailer, NextHop, Outcome, QueueId, RecipientReport,
    ReversePath, Route,
};

/// The name the transport uses in EHLO.
pub const OUR_NAME: &str = "client.postrider.test";

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

/// The defaults, but without the session cache: each `deliver` call's session ends with QUIT,
/// so a test sees exactly the sessions it caused (the cache has tests of its own).
pub fn config() -> EsmtpConfig {
    EsmtpConfig {
        connection_cache: None,
        ..EsmtpConfig::new(d(OUR_NAME))
    }
}

pub fn transport(
    config: EsmtpConfig,
    resolver: StaticResolver,
    policy: PolicyTable,
) -> EsmtpTransport {
    EsmtpTransport::new(config, Arc::new(resolver), Arc::new(policy))
}

/// A transport with default config, an empty resolver and the default policy (`may`).
pub fn plain_transport() -> EsmtpTransport {
    transport(config(), StaticResolver::new(), PolicyTable::new())
}

/// `esmtp:[127.0.0.1]:port`.
pub fn literal_route(port: u16) -> Route {
    Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![literal_hop(port)],
    }
}

pub fn literal_hop(port: u16) -> NextHop {
    NextHop::direct(Host::Ip(LOCALHOST), Some(port))
}

/// `mailer:[name]:port`.
pub fn named_route(mailer: Mailer, name: &str, port: u16) -> Route {
    Route::Relay {
        mailer,
        hops: vec![named_hop(name, port)],
    }
}

pub fn named_hop(name: &str, port: u16) -> NextHop {
    NextHop::direct(Host::Name(d(name)), Some(port))
}

/// A policy table with one entry.
pub fn policy_for(hop: &NextHop, policy: HopPolicy) -> PolicyTable {
    let mut t = PolicyTable::new();
    t.insert(hop, policy);
    t
}

pub fn tls_policy(level: TlsLevel) -> HopPolicy {
    HopPolicy {
        tls: level,
        ..HopPolicy::default()
    }
}

/// A message from `pbx@example.com` to `rcpts` with `body`.
pub fn message(rcpts: &[&str], body: &str) -> Delivery {
    let env = Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        rcpts.iter().map(|r| Address::parse(r).unwrap()),
    );
    delivery(env, body)
}

pub fn delivery(env: Envelope, body: &str) -> Delivery {
    Delivery {
        id: QueueId::generate(),
        recipients: (0..env.recipients.len()).collect(),
        envelope: Arc::new(env),
        body: Bytes::from(body.to_string()),
    }
}

/// A small well-formed message body.
pub fn body(subject: &str) -> String {
    format!(
        "From: pbx@example.com\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    )
}

/// The report for recipient `i` of message `m`.
pub fn report<'a>(reports: &'a [RecipientReport], m: &Delivery, i: usize) -> &'a RecipientReport {
    let found: Vec<_> = reports
        .iter()
        .filter(|r| r.id == m.id && r.recipient == i)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one report for {} #{i}: {reports:#?}",
        m.id
    );
    found[0]
}

/// Every recipient of every message has exactly one report, and nothing else is reported.
pub fn assert_complete(reports: &[RecipientReport], batch: &[Delivery]) {
    let expected: usize = batch.iter().map(|m| m.recipients.len()).sum();
    assert_eq!(reports.len(), expected, "{reports:#?}");
    for m in batch {
        for &i in &m.recipients {
            report(reports, m, i);
        }
    }
}

#[track_caller]
pub fn assert_delivered(r: &RecipientReport) {
    assert!(
        matches!(r.outcome, Outcome::Delivered { .. }),
        "expected delivery, got {r:#?}"
    );
}

/// Deferred with this status and exactly this text.
#[track_caller]
pub fn assert_deferred(r: &RecipientReport, status: &str, text: &str) {
    match &r.outcome {
        Outcome::Deferred(d) => {
            assert_eq!(d.status.to_string(), status, "{r:#?}");
            assert_eq!(d.text, text, "{r:#?}");
        }
        other => panic!("expected a deferral, got {other:#?}"),
    }
}

/// Failed with this status and exactly this text.
#[track_caller]
pub fn assert_failed(r: &RecipientReport, status: &str, text: &str) {
    match &r.outcome {
        Outcome::Failed(d) => {
            assert_eq!(d.status.to_string(), status, "{r:#?}");
            assert_eq!(d.text, text, "{r:#?}");
        }
        other => panic!("expected a failure, got {other:#?}"),
    }
}

/// Deferred with this status and a text containing `part`.
#[track_caller]
pub fn assert_deferred_containing(r: &RecipientReport, status: &str, part: &str) {
    match &r.outcome {
        Outcome::Deferred(d) => {
            assert_eq!(d.status.to_string(), status, "{r:#?}");
            assert!(d.text.contains(part), "{part:?} not in {:?}", d.text);
        }
        other => panic!("expected a deferral, got {other:#?}"),
    }
}

/// `[127.0.0.1]:port` as diagnostics show a literal peer.
pub fn lit(port: u16) -> String {
    format!("[127.0.0.1]:{port}")
}

/// `Transport::deliver` as the tests use it: the whole batch, every report collected.
pub trait DeliverAll {
    /// Delivers `batch` and returns every report, in the order the transport gave them.
    fn deliver_all<'a>(
        &'a self,
        route: &'a Route,
        batch: &'a [Delivery],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<RecipientReport>> + Send + 'a>>;
}

impl<T: postrider::Transport> DeliverAll for T {
    fn deliver_all<'a>(
        &'a self,
        route: &'a Route,
        batch: &'a [Delivery],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<RecipientReport>> + Send + 'a>>
    {
        Box::pin(postrider::transport::collect(self, route, batch))
    }
}
