//! The SPF pre-flight before direct-to-MX delivery: send, send through the smart host instead,
//! or defer, per the policy.

use std::net::IpAddr;

use super::SpfConfig;
use crate::address::Domain;
use crate::route::{Host, NextHop};
use crate::spf::{SpfDecision, SpfPolicy, decide};
use crate::status::Diagnostic;
use crate::transport::Delivery;

/// What the pre-flight says about one message.
pub(super) enum Gate {
    /// Send it; with a warning for the log and the event when SPF would not pass.
    Send(Option<String>),
    /// Send it through the smart host instead; the advice says why.
    Reroute(String),
    /// Do not send it now.
    Defer(Diagnostic),
}

/// True when `hop` is the recipients' own domain, looked up by MX: the receiver there will
/// evaluate SPF against us. A smart host or a mailertable relay to another domain's host will
/// not (the relay does its own sending), so they are never checked.
pub(super) fn applies(hop: &NextHop, delivery: &Delivery) -> bool {
    match (&hop.host, hop.mx) {
        (Host::Name(domain), true) => delivery.recipients.iter().all(|&i| {
            delivery
                .envelope
                .recipients
                .get(i)
                .is_some_and(|r| r.address.domain().is_within(domain))
        }),
        _ => false,
    }
}

/// Evaluates SPF for `delivery`'s sender (the HELO name for `<>`) from `egress`.
pub(super) async fn gate(
    spf: &SpfConfig,
    egress: IpAddr,
    delivery: &Delivery,
    helo: &Domain,
) -> Gate {
    if spf.policy == SpfPolicy::Off {
        return Gate::Send(None);
    }
    let verdict = spf
        .checker
        .check(egress, &delivery.envelope.sender, helo)
        .await;
    tracing::debug!(target: "postrider::spf", "{}: {verdict}", delivery.id);
    match decide(spf.policy, &verdict, spf.smart_host_available) {
        SpfDecision::Deliver => Gate::Send(None),
        SpfDecision::DeliverWithWarning(advice) => Gate::Send(Some(advice)),
        SpfDecision::UseSmartHost(advice) => Gate::Reroute(advice),
        d @ SpfDecision::Defer { .. } => match d.deferral() {
            Some(diag) => Gate::Defer(diag),
            None => Gate::Send(d.advice().map(str::to_string)),
        },
    }
}
