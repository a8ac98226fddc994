//! Who may relay: the access table and `mynetworks` put together, with the rule that an
//! unconfigured server relays for loopback clients only.
//!
//! The decision for one recipient is made by the session (it knows whether the client
//! authenticated and where the router sends the recipient); this type answers the questions
//! about the client, the sender and the recipient that the configuration settles.

use std::net::IpAddr;

use crate::address::{Address, Domain};

use super::access::{AccessMatch, AccessTable, Action};
use super::networks::Networks;

/// The relay and access configuration of a server.
#[derive(Debug, Clone, Default)]
pub struct RelayPolicy {
    access: Option<AccessTable>,
    mynetworks: Networks,
}

/// What the configuration says about a connecting client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientVerdict {
    /// The client may relay (a `RELAY` entry, a `mynetworks` network, or loopback when nothing
    /// is configured).
    pub may_relay: bool,
    /// The access entry that matched, if any (a `REJECT` or `ERROR:` refuses the session, a
    /// `DISCARD` throws its mail away).
    pub entry: Option<AccessMatch>,
}

impl RelayPolicy {
    /// A policy from an access table and networks; both may be empty.
    pub fn new(access: Option<AccessTable>, mynetworks: Networks) -> RelayPolicy {
        RelayPolicy { access, mynetworks }
    }

    /// True when neither an access table nor `mynetworks` is configured: then only loopback
    /// clients may relay.
    pub fn is_unconfigured(&self) -> bool {
        self.access.is_none() && self.mynetworks.is_empty()
    }

    /// The access table, if any.
    pub fn access(&self) -> Option<&AccessTable> {
        self.access.as_ref()
    }

    /// Postfix's `mynetworks`.
    pub fn mynetworks(&self) -> &Networks {
        &self.mynetworks
    }

    /// The verdict on a client: its address, and its host name once forward-confirmed (an
    /// unconfirmed PTR name is never used: anyone can publish any PTR record for their own
    /// addresses).
    pub fn client(&self, ip: IpAddr, confirmed_name: Option<&Domain>) -> ClientVerdict {
        let entry = self
            .access
            .as_ref()
            .and_then(|t| t.connect(ip, confirmed_name))
            .cloned();
        let may_relay = match &entry {
            Some(m) => m.action == Action::Relay,
            None if self.is_unconfigured() => is_loopback(ip),
            None => self.mynetworks.contains(ip),
        };
        ClientVerdict { may_relay, entry }
    }

    /// The access entry for an envelope sender.
    pub fn sender(&self, sender: &Address) -> Option<&AccessMatch> {
        self.access.as_ref().and_then(|t| t.from(sender))
    }

    /// The access entry for an envelope recipient (`RELAY` here means anyone may send to it).
    pub fn recipient(&self, recipient: &Address) -> Option<&AccessMatch> {
        self.access.as_ref().and_then(|t| t.to(recipient))
    }
}

/// Loopback, including an IPv4-mapped `::ffff:127.x.y.z`.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// True when the local part carries a route to somewhere else: `user%remote`, `remote!user`,
/// or a quoted `"user@remote"`. A server that honoured any of these for a local domain would
/// relay; postrider never does, and refuses them from clients that may not relay, as sendmail
/// does (without `FEATURE(loose_relay_check)`).
pub fn has_sender_specified_route(a: &Address) -> bool {
    a.local_part().contains(['%', '!', '@'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfigured_means_loopback_only() {
        let p = RelayPolicy::default();
        assert!(p.client("127.0.0.1".parse().unwrap(), None).may_relay);
        assert!(p.client("::1".parse().unwrap(), None).may_relay);
        assert!(
            p.client("::ffff:127.0.0.5".parse().unwrap(), None)
                .may_relay
        );
        assert!(!p.client("192.168.1.5".parse().unwrap(), None).may_relay);
    }

    #[test]
    fn once_configured_only_what_is_configured_relays() {
        let nets = Networks::parse(["192.168.1.0/24"]).unwrap();
        let p = RelayPolicy::new(None, nets);
        assert!(p.client("192.168.1.5".parse().unwrap(), None).may_relay);
        assert!(!p.client("127.0.0.1".parse().unwrap(), None).may_relay);
        let t = AccessTable::parse("Connect:127.0.0.1 RELAY\nConnect:192.168.1.9 REJECT\n", "a")
            .unwrap();
        let p = RelayPolicy::new(Some(t), Networks::parse(["192.168.1.0/24"]).unwrap());
        assert!(p.client("127.0.0.1".parse().unwrap(), None).may_relay);
        assert!(!p.client("127.0.0.2".parse().unwrap(), None).may_relay);
        // The access entry is more specific than the network.
        let v = p.client("192.168.1.9".parse().unwrap(), None);
        assert!(!v.may_relay);
        assert_eq!(v.entry.unwrap().action, Action::Reject);
    }

    #[test]
    fn routing_tricks_in_local_parts_are_recognised() {
        for a in [
            "u%remote.example@local.example",
            "remote.example!u@local.example",
            "\"u@remote.example\"@local.example",
        ] {
            assert!(has_sender_specified_route(&a.parse().unwrap()), "{a}");
        }
        assert!(!has_sender_specified_route(
            &"\"john doe\"@local.example".parse().unwrap()
        ));
    }
}
