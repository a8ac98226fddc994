//! MX records to a delivery list (RFC 5321 §5.1, RFC 7505): pure functions, no I/O.
//!
//! A [`Resolver`](super::Resolver) that reads MX records from anywhere (DNS, a database) turns
//! them into [`MailExchanger`]s with [`exchangers_from_records`] and orders them with
//! [`order_for_delivery`], so every implementation agrees on null MX, on targets that are not
//! host names, and on shuffling.

use std::collections::HashMap;
use std::net::IpAddr;

use rand::Rng;
use rand::seq::SliceRandom;

use super::{MailExchanger, ResolveError};
use crate::address::Domain;

/// One MX record as the DNS gave it: a preference and the exchange name in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// The MX preference.
    pub preference: u16,
    /// The exchange, as written in the record: `mx.example.com.`, `.` for the root.
    pub exchange: String,
}

impl MxRecord {
    /// Builds a record.
    pub fn new(preference: u16, exchange: impl Into<String>) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    fn is_root(&self) -> bool {
        self.exchange.is_empty() || self.exchange == "."
    }
}

/// Turns a domain's MX records into mail exchangers (not yet ordered).
///
/// - Exactly one record `MX 0 .` is a null MX (RFC 7505): [`ResolveError::NullMx`].
/// - A root target among other records breaks RFC 7505 §3 ("MUST NOT advertise any other MX
///   RR"), which says nothing about what a client does then; the root record names no host,
///   so it is skipped and the other records are used.
/// - A target that is an IP address in text (`MX 10 192.0.2.1.`) is skipped, as Postfix and
///   Exim do: RFC 5321 §5.1 says the MX data is a domain name, and such a name does not exist.
///   A target that is not a valid host name is skipped too.
/// - The same host listed twice keeps its best preference.
/// - When records exist but none is usable: [`ResolveError::InvalidMx`] (5.4.4), naming
///   each refused record. There is never a fallback to the domain's own address.
///
/// `records` must not be empty: a domain without MX records takes the implicit-MX path.
pub fn exchangers_from_records(
    domain: &Domain,
    records: &[MxRecord],
) -> Result<Vec<MailExchanger>, ResolveError> {
    if let [only] = records
        && only.is_root()
        && only.preference == 0
    {
        return Err(ResolveError::NullMx {
            domain: domain.clone(),
        });
    }
    let mut best: HashMap<Domain, u16> = HashMap::new();
    let mut order: Vec<Domain> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for record in records {
        match usable_host(record) {
            Ok(host) => match best.get_mut(&host) {
                Some(pref) => *pref = (*pref).min(record.preference),
                None => {
                    best.insert(host.clone(), record.preference);
                    order.push(host);
                }
            },
            Err(why) => {
                tracing::warn!(
                    domain = %domain,
                    "skipping MX {} {}: {why}",
                    record.preference,
                    record.exchange
                );
                refused.push(format!(
                    "MX {} {} {why}",
                    record.preference, record.exchange
                ));
            }
        }
    }
    if order.is_empty() {
        return Err(ResolveError::InvalidMx {
            domain: domain.clone(),
            detail: refused.join("; "),
        });
    }
    Ok(order
        .into_iter()
        .map(|host| MailExchanger {
            preference: best[&host],
            host,
            implicit: false,
        })
        .collect())
}

fn usable_host(record: &MxRecord) -> Result<Domain, &'static str> {
    if record.is_root() {
        return Err("is a null MX mixed with other MX records (RFC 7505 §3)");
    }
    let text = record
        .exchange
        .strip_suffix('.')
        .unwrap_or(&record.exchange);
    if text.parse::<IpAddr>().is_ok() {
        return Err("names an IP address where a host name belongs (RFC 5321 §5.1)");
    }
    Domain::parse(text).map_err(|_| "is not a valid host name")
}

/// Orders exchangers for delivery: by preference, lowest first, with equal preferences in
/// random order so that load spreads across a domain's equal exchangers (RFC 5321 §5.1).
pub fn order_for_delivery<R: Rng + ?Sized>(exchangers: &mut [MailExchanger], rng: &mut R) {
    exchangers.sort_by_key(|m| m.preference);
    let mut start = 0;
    while start < exchangers.len() {
        let pref = exchangers[start].preference;
        let end = exchangers[start..]
            .iter()
            .position(|m| m.preference != pref)
            .map_or(exchangers.len(), |n| start + n);
        exchangers[start..end].shuffle(rng);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    fn hosts(list: &[MailExchanger]) -> Vec<(u16, &str)> {
        list.iter()
            .map(|m| (m.preference, m.host.as_str()))
            .collect()
    }

    #[test]
    fn a_single_zero_preference_root_record_is_a_null_mx() {
        let err = exchangers_from_records(&d("nomail.test"), &[MxRecord::new(0, ".")]).unwrap_err();
        assert_eq!(
            err,
            ResolveError::NullMx {
                domain: d("nomail.test")
            }
        );
        assert_eq!(err.status().to_string(), "5.1.10");
    }

    #[test]
    fn a_root_record_with_another_preference_is_not_a_null_mx_but_is_unusable() {
        let err = exchangers_from_records(&d("odd.test"), &[MxRecord::new(10, ".")]).unwrap_err();
        assert!(matches!(err, ResolveError::InvalidMx { .. }), "{err:?}");
        assert_eq!(err.status().to_string(), "5.4.4");
    }

    #[test]
    fn a_null_mx_mixed_with_real_exchangers_is_skipped_and_the_others_are_used() {
        let list = exchangers_from_records(
            &d("mixed.test"),
            &[MxRecord::new(0, "."), MxRecord::new(10, "mx.mixed.test.")],
        )
        .unwrap();
        assert_eq!(hosts(&list), vec![(10, "mx.mixed.test")]);
    }

    #[test]
    fn an_ip_address_as_mx_target_is_skipped_with_a_reason() {
        let list = exchangers_from_records(
            &d("ip.test"),
            &[
                MxRecord::new(5, "192.0.2.1."),
                MxRecord::new(10, "mx.ip.test."),
            ],
        )
        .unwrap();
        assert_eq!(hosts(&list), vec![(10, "mx.ip.test")]);

        let err =
            exchangers_from_records(&d("ip.test"), &[MxRecord::new(5, "192.0.2.1.")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("MX 5 192.0.2.1."), "{text}");
        assert!(text.contains("IP address"), "{text}");
        assert!(!err.is_temporary());
    }

    #[test]
    fn a_host_listed_twice_keeps_its_best_preference() {
        let list = exchangers_from_records(
            &d("dup.test"),
            &[
                MxRecord::new(20, "MX.dup.test."),
                MxRecord::new(10, "mx.dup.test."),
            ],
        )
        .unwrap();
        assert_eq!(hosts(&list), vec![(10, "mx.dup.test")]);
    }

    #[test]
    fn ordering_sorts_by_preference_and_keeps_every_exchanger() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut list: Vec<MailExchanger> = [(30, "c"), (10, "a"), (20, "b"), (10, "a2")]
            .iter()
            .map(|(p, h)| MailExchanger {
                preference: *p,
                host: d(&format!("{h}.test")),
                implicit: false,
            })
            .collect();
        order_for_delivery(&mut list, &mut rng);
        let prefs: Vec<u16> = list.iter().map(|m| m.preference).collect();
        assert_eq!(prefs, vec![10, 10, 20, 30]);
        assert_eq!(list[2].host, d("b.test"));
    }

    #[test]
    fn equal_preferences_come_out_in_both_orders() {
        let mut rng = StdRng::seed_from_u64(1);
        let base = vec![
            MailExchanger {
                preference: 10,
                host: d("a.test"),
                implicit: false,
            },
            MailExchanger {
                preference: 10,
                host: d("b.test"),
                implicit: false,
            },
        ];
        let mut a_first = 0;
        for _ in 0..100 {
            let mut list = base.clone();
            order_for_delivery(&mut list, &mut rng);
            if list[0].host == d("a.test") {
                a_first += 1;
            }
        }
        assert!(a_first > 0 && a_first < 100, "a first {a_first} of 100");
    }
}
