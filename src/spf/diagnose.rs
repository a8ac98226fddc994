//! Why an evaluation ended in `permerror` or `temperror`.
//!
//! mail-auth 0.13 reports only the result, not the cause. On those two (rare) results the
//! checker re-reads the record tree itself — the top-level record it already has, then each
//! `include:` and `redirect=` target written without macros — and names the first problem it
//! finds: a target without an SPF record, a broken record, a loop, a lookup that fails, or
//! more lookup terms than RFC 7208 §4.6.4 allows.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::proto::rr::RecordType;
use mail_auth::spf::Spf;

use super::lookup::{Fetched, SpfDns};
use super::record::{self, LOOKUP_LIMIT, LookupTerm};
use super::verdict::SpfResult;

/// At most this many extra queries per diagnosis, so a huge tree costs bounded time.
const QUERY_BUDGET: usize = 30;

struct Node {
    domain: String,
    spf: Arc<Spf>,
    /// The domains from the top down to this one, for loop detection.
    path: Vec<String>,
}

/// The cause of `result` (`PermError` or `TempError`) for the record `top` of `domain`, in
/// words; `None` when the re-read finds nothing wrong.
pub(crate) async fn explain(
    dns: &SpfDns,
    domain: &str,
    top: Arc<Spf>,
    result: SpfResult,
    ip: IpAddr,
) -> Option<String> {
    let mut permanent: Option<String> = None;
    let mut temporary: Option<String> = None;
    let mut lookups = 0usize;
    let mut queries = 0usize;
    let mut stack = vec![Node {
        domain: domain.to_string(),
        spf: top,
        path: vec![domain.to_string()],
    }];
    while let Some(node) = stack.pop() {
        // Push children in reverse so they are visited in record order.
        let mut children = Vec::new();
        for term in record::lookup_terms(&node.spf) {
            lookups += 1;
            let Some(name) = term.name_or(&node.domain) else {
                continue;
            };
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if queries >= QUERY_BUDGET {
                continue;
            }
            match term.kind {
                "include" | "redirect" => {
                    if node.path.contains(&name) {
                        permanent.get_or_insert_with(|| {
                            format!(
                                "{} loops back to a record already being evaluated ({} -> {name})",
                                shown(&term, &name),
                                node.path.join(" -> ")
                            )
                        });
                        continue;
                    }
                    queries += 1;
                    match dns.spf_record(&name).await {
                        Fetched::Record { spf, .. } => {
                            let mut path = node.path.clone();
                            path.push(name.clone());
                            children.push(Node {
                                domain: name,
                                spf,
                                path,
                            });
                        }
                        Fetched::NoRecord { .. } => {
                            permanent.get_or_insert_with(|| {
                                format!(
                                    "{} names a domain that publishes no SPF record",
                                    shown(&term, &name)
                                )
                            });
                        }
                        Fetched::Broken { problem, .. } => {
                            permanent.get_or_insert_with(|| {
                                format!(
                                    "{} points to a broken record: {problem}",
                                    shown(&term, &name)
                                )
                            });
                        }
                        Fetched::Failed { reason } => {
                            temporary.get_or_insert_with(|| {
                                format!("the TXT lookup of {name} failed: {reason}")
                            });
                        }
                    }
                }
                "a" | "mx" | "exists" if result == SpfResult::TempError && temporary.is_none() => {
                    let rtype = match (term.kind, ip) {
                        ("mx", _) => RecordType::MX,
                        ("a", IpAddr::V6(_)) => RecordType::AAAA,
                        _ => RecordType::A,
                    };
                    queries += 1;
                    if let Err(reason) = dns.probe(&name, rtype).await {
                        temporary = Some(format!("the {rtype} lookup of {name} failed: {reason}"));
                    }
                }
                _ => {}
            }
        }
        stack.extend(children.into_iter().rev());
    }
    match result {
        SpfResult::TempError => temporary,
        _ => permanent.or_else(|| {
            (lookups > LOOKUP_LIMIT).then(|| {
                format!(
                    "it needs {lookups} DNS lookups (each include, a, mx, ptr, exists and \
                     redirect counts, in included records too) where RFC 7208 §4.6.4 allows \
                     {LOOKUP_LIMIT}: replace includes by the ip4:/ip6: ranges they stand for"
                )
            })
        }),
    }
}

/// `include:_spf.example.net`, `redirect=_spf.example.net`.
fn shown(term: &LookupTerm, name: &str) -> String {
    match term.kind {
        "redirect" => format!("redirect={name}"),
        kind => format!("{kind}:{name}"),
    }
}
