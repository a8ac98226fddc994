//! `spf`: does SPF of each domain this site sends as authorise the address receivers see?
//! The verdict is the SPF checker's; the doctor words the fix as the record to publish.

use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::egress::Egress;
use super::{Check, Doctor, Finding, Verdict, no_dns};
use crate::address::Domain;
use crate::resolve::DnsResolver;
use crate::spf::{SpfChecker, SpfOptions, SpfResult, SpfVerdict, spf_term};

pub(crate) async fn check(d: &Doctor, egress: &[Egress]) -> Vec<Finding> {
    let domains = &d.config.spf.sender_domains;
    if domains.is_empty() {
        return vec![
            Finding::warn(Check::Spf, "not checked: no sender domains are configured").with_fix(
                format!(
                    "list the domains you send mail as: [spf] sender_domains = [\"{}\"] in {}",
                    guess_sender_domain(d),
                    d.config_file()
                ),
            ),
        ];
    }
    let dns = match &d.dns {
        Ok(dns) => dns,
        Err(e) => return vec![no_dns(Check::Spf, e)],
    };
    if egress.is_empty() {
        return vec![
            Finding::warn(
                Check::Spf,
                "not checked: the address receivers see is unknown (no public address is \
                 configured, and no route to a mail server was found)",
            )
            .with_fix(format!(
                "set [spf] public_addresses = [\"203.0.113.5\"] (this site's public address) \
                 in {}",
                d.config_file()
            )),
        ];
    }
    let checker = match SpfChecker::new(dns, SpfOptions::default()) {
        Ok(c) => c,
        Err(e) => return vec![Finding::warn(Check::Spf, format!("not checked: {e}"))],
    };
    let mut findings = Vec::new();
    for e in egress {
        if !crate::spf::is_public(e.ip) {
            findings.push(private_egress(d, e));
            continue;
        }
        for domain in domains {
            let verdict = checker.check_domain(e.ip, domain).await;
            findings.push(judge(d, dns, &verdict).await);
        }
    }
    findings
}

/// Behind NAT the local address means nothing to receivers: say so once, instead of judging
/// SPF for an address nobody sees.
fn private_egress(d: &Doctor, e: &Egress) -> Finding {
    let seen = e
        .seen_on
        .as_deref()
        .map(|s| format!(" (this host's address on {s})"))
        .unwrap_or_default();
    Finding::warn(
        Check::Spf,
        format!(
            "not checked: {}{seen} is a private address that receivers never see; behind NAT \
             they see your router's public address",
            e.ip
        ),
    )
    .with_fix(format!(
        "configure the public address: [spf] public_addresses = [\"203.0.113.5\"] (your \
         router's public address) in {}, and make sure SPF of {} authorises it",
        d.config_file(),
        d.config
            .spf
            .sender_domains
            .iter()
            .map(Domain::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

async fn judge(d: &Doctor, dns: &DnsResolver, v: &SpfVerdict) -> Finding {
    let (domain, ip) = (&v.domain, v.ip);
    let term = spf_term(ip);
    // With a smart host, mail leaves from it: this host's address matters only for
    // mailertable entries that deliver straight to an MX.
    let via_smart_host = d.has_smart_host();
    let relay_note = if via_smart_host {
        " (only mail that a mailertable entry sends straight to an MX leaves from this \
         address; the smart host sends the rest)"
    } else {
        ""
    };
    let or_relay = if via_smart_host {
        ""
    } else {
        ", or send through a smart host"
    };
    match v.result {
        SpfResult::Pass => Finding::pass(
            Check::Spf,
            format!("SPF for {domain} authorises {ip} (spf={})", v.result),
        ),
        SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => {
            let consequence = match v.result {
                SpfResult::Fail => "receivers refuse its mail",
                SpfResult::SoftFail => "receivers junk its mail",
                _ => "receivers count its mail as unauthenticated",
            };
            let verdict = match (v.result, via_smart_host) {
                (SpfResult::Neutral, _) | (_, true) => Verdict::Warn,
                _ => Verdict::Fail,
            };
            let record = match current_record(dns, domain).await {
                Some(record) => format!(": \"{}\"", with_term(&record, &term)),
                None => String::new(),
            };
            Finding::new(
                Check::Spf,
                verdict,
                format!(
                    "SPF for {domain} does not authorise {ip} (spf={}): {consequence}{relay_note}",
                    v.result
                ),
            )
            .with_fix(format!(
                "add \"{term}\" to the TXT record of {domain}{record}{or_relay}"
            ))
        }
        SpfResult::None => match &v.problem {
            Some(problem) => Finding::warn(
                Check::Spf,
                format!("{domain} cannot have an SPF record: {problem}"),
            )
            .with_fix(
                "list the domains you send mail as in [spf] sender_domains \
                     (e.g. \"example.com\")",
            ),
            None => Finding::warn(
                Check::Spf,
                format!(
                    "{domain} publishes no SPF record, so receivers cannot tell that {ip} \
                         may send its mail (large mailbox providers junk or refuse such \
                         mail){relay_note}"
                ),
            )
            .with_fix(format!(
                "publish a TXT record for {domain}: \"v=spf1 {term} ~all\" (listing every \
                     server that sends its mail){or_relay}"
            )),
        },
        SpfResult::PermError => Finding::fail(
            Check::Spf,
            format!(
                "the SPF record of {domain} is broken: {}; receivers count its mail as \
                 unauthenticated",
                v.problem
                    .as_deref()
                    .unwrap_or("the evaluation gave a permanent error")
            ),
        )
        .with_fix(format!(
            "correct the TXT record of {domain} (it must be one \"v=spf1 ...\" record of valid \
             terms, e.g. \"v=spf1 {term} ~all\")"
        )),
        SpfResult::TempError => Finding::warn(
            Check::Spf,
            format!(
                "SPF for {domain} could not be checked: {}",
                v.problem
                    .as_deref()
                    .unwrap_or("a DNS lookup failed temporarily")
            ),
        )
        .with_fix(
            "check that the name servers answer ([dns] name_servers in postrider.toml, or \
             /etc/resolv.conf)",
        ),
    }
}

/// The domain's one SPF record, when it has exactly one.
async fn current_record(dns: &DnsResolver, domain: &Domain) -> Option<String> {
    let name = Name::from_ascii(format!("{domain}.")).ok()?;
    let lookup = dns
        .hickory_resolver()
        .lookup(name, RecordType::TXT)
        .await
        .ok()?;
    let mut records = lookup.answers().iter().filter_map(|r| match &r.data {
        RData::TXT(txt) => {
            let text = String::from_utf8_lossy(&txt.txt_data.concat()).into_owned();
            is_spf(&text).then_some(text)
        }
        _ => None,
    });
    let first = records.next()?;
    records.next().is_none().then_some(first)
}

fn is_spf(text: &str) -> bool {
    let Some(head) = text.get(..6) else {
        return false;
    };
    head.eq_ignore_ascii_case("v=spf1") && text[6..].chars().next().is_none_or(|c| c == ' ')
}

/// `record` with `term` added where it takes effect: before the `all` mechanism or the
/// `redirect=` modifier (terms after `all` are never reached), else at the end.
fn with_term(record: &str, term: &str) -> String {
    let mut words: Vec<&str> = record.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| {
            let bare = w.trim_start_matches(['+', '-', '~', '?']);
            bare.eq_ignore_ascii_case("all")
                || w.get(..9)
                    .is_some_and(|p| p.eq_ignore_ascii_case("redirect="))
        })
        .unwrap_or(words.len());
    words.insert(at, term);
    words.join(" ")
}

/// The configured host name's parent domain (`sipserver1.ourtest.com` -> `ourtest.com`),
/// for the example in a fix.
fn guess_sender_domain(d: &Doctor) -> String {
    d.config
        .hostname()
        .and_then(|h| match h.parents().next() {
            Some(parent) if parent.contains('.') => Some(parent.to_string()),
            _ => (!h.is_single_label()).then(|| h.to_string()),
        })
        .unwrap_or_else(|| "example.com".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_term_goes_before_all_or_redirect() {
        assert_eq!(
            with_term("v=spf1 ip4:198.51.100.7 -all", "ip4:203.0.113.5"),
            "v=spf1 ip4:198.51.100.7 ip4:203.0.113.5 -all"
        );
        assert_eq!(
            with_term("v=spf1 mx redirect=_spf.example.net", "ip4:203.0.113.5"),
            "v=spf1 mx ip4:203.0.113.5 redirect=_spf.example.net"
        );
        assert_eq!(
            with_term("v=spf1 include:_spf.google.com", "ip6:2001:db8::5"),
            "v=spf1 include:_spf.google.com ip6:2001:db8::5"
        );
        assert_eq!(
            with_term("V=SPF1 ~ALL", "ip4:203.0.113.5"),
            "V=SPF1 ip4:203.0.113.5 ~ALL"
        );
    }

    #[test]
    fn only_v_spf1_records_count() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=abc"));
    }
}
