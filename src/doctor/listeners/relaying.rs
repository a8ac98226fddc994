//! Who may relay: nobody but local mail on a LAN-facing port 25 (the PBX gets "Relaying
//! denied"), or everybody (an open relay: `mynetworks` or a `Connect:` RELAY rule wider than
//! anybody's LAN).

use std::net::IpAddr;

use super::name;
use crate::config::Config;
use crate::doctor::{Check, Doctor, Finding};
use crate::server::ListenerKind;
use crate::server::access::ClientKey;
use crate::server::config::ListenerSection;
use crate::server::networks::Network;
use crate::server::relay::{RelayPolicy, is_loopback};

/// Who may relay: nobody but local mail, or everybody.
pub(crate) fn check(config: &Config, file: &str, lan: &str) -> Vec<Finding> {
    let Ok(policy) = config.server.relay_policy() else {
        // Reported by `listeners`.
        return Vec::new();
    };
    let exposed: Vec<&ListenerSection> = config
        .listener
        .iter()
        .filter(|l| l.kind == ListenerKind::Smtp && !is_loopback(l.address.ip()))
        .collect();
    let mut findings = Vec::new();
    for (rule, source) in open_rules(&policy) {
        let detail = format!("{source} lets {rule} relay");
        findings.push(if exposed.is_empty() {
            Finding::warn(
                Check::Relaying,
                format!("{detail}: harmless while every smtp listener is on loopback, an open relay once one is not"),
            )
        } else {
            Finding::fail(
                Check::Relaying,
                format!(
                    "{detail}, and {} accepts connections from the network: an open relay, which \
                     spammers find within hours and blocklists list soon after",
                    name(exposed[0])
                ),
            )
        }
        .with_fix(format!(
            "allow only your own networks (e.g. Connect:{lan} RELAY, or mynetworks = \
             [\"{lan_cidr}\"]) and let everyone else authenticate on a submission listener",
            lan_cidr = lan_cidr(lan)
        )));
    }
    if !findings.is_empty() {
        return findings;
    }
    let submission = config
        .listener
        .iter()
        .any(|l| l.kind.requires_auth() && config.server.passwords.is_some());
    let grants = !policy.mynetworks().is_empty()
        || policy
            .access()
            .is_some_and(|t| !t.client_relay_rules().is_empty());
    match exposed.first() {
        Some(l) if !grants && !submission => {
            let why = if policy.is_unconfigured() {
                "no access file and no mynetworks: only loopback clients may relay"
            } else {
                "no RELAY entry for clients and no mynetworks"
            };
            findings.push(
                Finding::warn(
                    Check::Relaying,
                    format!(
                        "{} relays for nobody ({why}, and no submission listener): mail for \
                         local domains is accepted, anything else gets \"550 5.7.1 Relaying \
                         denied\", so a PBX on the LAN cannot send through it",
                        name(l)
                    ),
                )
                .with_fix(format!(
                    "add \"Connect:{lan} RELAY\" to /etc/mail/access and set [server] access = \
                     \"/etc/mail/access\" in {file} (or mynetworks = [\"{}\"]), or add a \
                     submission listener with a password file",
                    lan_cidr(lan)
                )),
            );
        }
        _ => findings.push(Finding::pass(
            Check::Relaying,
            relay_summary(&policy, submission),
        )),
    }
    findings
}

/// Rules that open relaying to everyone or to a large part of the Internet, each with where
/// it comes from.
fn open_rules(policy: &RelayPolicy) -> Vec<(String, String)> {
    let mut open = Vec::new();
    for n in policy.mynetworks().iter() {
        if let Some(who) = too_wide(n) {
            open.push((who, format!("mynetworks {n}")));
        }
    }
    if let Some(table) = policy.access() {
        for (key, m) in table.client_relay_rules() {
            let who = match &key {
                ClientKey::Network(n) => too_wide(n),
                // Anyone can publish a PTR record under a top-level domain for an address they
                // hold, and confirm it forward.
                ClientKey::Names(d) if !d.as_str().contains('.') => {
                    Some(format!("every client whose host name ends in .{d}"))
                }
                ClientKey::Names(_) => None,
            };
            if let Some(who) = who {
                open.push((
                    who,
                    format!("{}:{} ({} RELAY)", table.file().display(), m.line, m.key),
                ));
            }
        }
    }
    open
}

/// `everyone` for /0; a public network wider than a /8 (IPv4) or /16 (IPv6) is too wide to be
/// anybody's LAN.
fn too_wide(n: &Network) -> Option<String> {
    if n.prefix() == 0 {
        return Some(match n.addr() {
            IpAddr::V4(_) => "every IPv4 client".to_string(),
            IpAddr::V6(_) => "every IPv6 client".to_string(),
        });
    }
    let wide = match n.addr() {
        IpAddr::V4(_) => n.prefix() < 8,
        IpAddr::V6(_) => n.prefix() < 16,
    };
    (wide && !private(n.addr())).then(|| format!("the {n} network (public addresses)"))
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00 || v6.is_unicast_link_local()
        }
    }
}

fn relay_summary(policy: &RelayPolicy, submission: bool) -> String {
    let mut who: Vec<String> = Vec::new();
    if policy.is_unconfigured() {
        who.push("loopback clients".to_string());
    }
    if !policy.mynetworks().is_empty() {
        let nets: Vec<String> = policy.mynetworks().iter().map(|n| n.to_string()).collect();
        who.push(format!("mynetworks {}", nets.join(", ")));
    }
    if let Some(t) = policy.access() {
        let rules: Vec<String> = t
            .client_relay_rules()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        if !rules.is_empty() {
            who.push(format!("access file RELAY for {}", rules.join(", ")));
        }
    }
    if submission {
        who.push("users who authenticate on the submission listener".to_string());
    }
    if who.is_empty() {
        return "relaying: nobody may relay (mail for local domains only)".to_string();
    }
    format!("relaying is open to {} only", who.join("; "))
}

/// The access-file key of this machine's LAN for the fixes (`192.168.10`), from its first
/// private IPv4 address; `192.168.1` when it has none.
pub(super) fn lan_example(doctor: &Doctor) -> String {
    doctor
        .names
        .addresses
        .iter()
        .flatten()
        .find_map(|ip| match ip {
            IpAddr::V4(v4) if v4.is_private() => {
                let o = v4.octets();
                Some(format!("{}.{}.{}", o[0], o[1], o[2]))
            }
            _ => None,
        })
        .unwrap_or_else(|| "192.168.1".to_string())
}

/// `192.168.10` -> `192.168.10.0/24`.
fn lan_cidr(lan: &str) -> String {
    format!("{lan}.0/24")
}

#[cfg(test)]
mod tests {
    use super::super::parse_config as listener;
    use super::*;

    #[test]
    fn a_lan_listener_without_any_relay_permission_relays_for_nobody() {
        let c = listener("[[listener]]\naddress = \"0.0.0.0:25\"\n");
        let found = check(&c, "postrider.toml", "192.168.10");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].verdict.label(), "WARN");
        assert!(found[0].detail.contains("relays for nobody"), "{found:#?}");
        assert!(found[0].detail.contains("Relaying denied"), "{found:#?}");
        let fix = found[0].fix.as_deref().unwrap();
        assert!(
            fix.contains("\"Connect:192.168.10 RELAY\" to /etc/mail/access"),
            "{fix}"
        );
        // On loopback only, nothing is said about it.
        let c = listener("[[listener]]\naddress = \"127.0.0.1:25\"\n");
        assert_eq!(check(&c, "f", "192.168.1")[0].verdict.label(), "PASS");
        // mynetworks or a submission listener with passwords is a way to relay.
        let c = listener(
            "[server]\nmynetworks = [\"192.168.10.0/24\"]\n[[listener]]\naddress = \"0.0.0.0:25\"\n",
        );
        let found = check(&c, "f", "192.168.1");
        assert_eq!(found[0].verdict.label(), "PASS", "{found:#?}");
        assert!(
            found[0].detail.contains("mynetworks 192.168.10.0/24"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_rule_that_lets_everyone_relay_fails_on_an_exposed_listener() {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access");
        std::fs::write(&access, "Connect:127.0.0.1 RELAY\nConnect:com RELAY\n").unwrap();
        for (server, who) in [
            (
                "mynetworks = [\"0.0.0.0/0\"]".to_string(),
                "every IPv4 client",
            ),
            ("mynetworks = [\"::/0\"]".to_string(), "every IPv6 client"),
            (
                "mynetworks = [\"64.0.0.0/2\"]".to_string(),
                "the 64.0.0.0/2 network",
            ),
            (
                format!("access = \"{}\"", access.display()),
                "every client whose host name ends in .com",
            ),
        ] {
            let c = listener(&format!(
                "[server]\n{server}\n[[listener]]\naddress = \"0.0.0.0:25\"\n"
            ));
            let found = check(&c, "f", "192.168.1");
            assert_eq!(found.len(), 1, "{found:#?}");
            assert_eq!(found[0].verdict.label(), "FAIL", "{found:#?}");
            assert!(found[0].detail.contains(who), "{who}: {found:#?}");
            assert!(found[0].detail.contains("open relay"), "{found:#?}");
            // Behind a loopback-only listener it is a warning.
            let c = listener(&format!(
                "[server]\n{server}\n[[listener]]\naddress = \"127.0.0.1:25\"\n"
            ));
            assert_eq!(check(&c, "f", "192.168.1")[0].verdict.label(), "WARN");
        }
        // A private /8 is somebody's LAN.
        let c = listener(
            "[server]\nmynetworks = [\"10.0.0.0/8\"]\n[[listener]]\naddress = \"0.0.0.0:25\"\n",
        );
        assert_eq!(check(&c, "f", "192.168.1")[0].verdict.label(), "PASS");
    }
}
