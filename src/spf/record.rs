//! SPF records read out of TXT answers (RFC 7208 §3, §4.5) with mail-auth's parser, and
//! what is wrong with one that does not parse, said so an operator can fix it.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Spf};

/// RFC 7208 §4.6.4: at most 10 terms that cause DNS lookups.
pub(crate) const LOOKUP_LIMIT: usize = 10;

/// Longest record or term text quoted in a message.
const QUOTE_MAX: usize = 120;

/// The SPF records among one name's TXT records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// No TXT record starts with `v=spf1`: the domain publishes no SPF record.
    None,
    /// Exactly one does.
    One(Vec<u8>),
    /// Several do, which RFC 7208 §4.5 makes a permanent error.
    Several(Vec<Vec<u8>>),
}

/// Picks the SPF record out of a name's TXT records, each already the concatenation of its
/// strings (RFC 7208 §3.3).
pub(crate) fn select(records: Vec<Vec<u8>>) -> Selection {
    let mut spf: Vec<Vec<u8>> = records.into_iter().filter(|r| is_spf(r)).collect();
    match spf.len() {
        0 => Selection::None,
        1 => Selection::One(spf.remove(0)),
        _ => Selection::Several(spf),
    }
}

/// `v=spf1` followed by a space or the end of the record, in any case (RFC 7208 §4.5: ABNF
/// strings are case-insensitive). `v=spf10` is not an SPF record.
pub(crate) fn is_spf(record: &[u8]) -> bool {
    record.len() >= 6
        && record[..6].eq_ignore_ascii_case(b"v=spf1")
        && (record.len() == 6 || record[6] == b' ')
}

/// Parses an SPF record, or says what is wrong with it.
pub(crate) fn parse(record: &[u8]) -> Result<Spf, String> {
    match Spf::parse(record) {
        Ok(spf) => Ok(spf),
        Err(_) => Err(explain_parse_error(record)),
    }
}

/// The first term that makes `record` unparsable, in words.
fn explain_parse_error(record: &[u8]) -> String {
    let body = record.get(6..).unwrap_or_default();
    let terms: Vec<&[u8]> = body
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    for modifier in ["redirect=", "exp="] {
        let count = terms
            .iter()
            .filter(|t| {
                t.len() >= modifier.len()
                    && t[..modifier.len()].eq_ignore_ascii_case(modifier.as_bytes())
            })
            .count();
        if count > 1 {
            return format!("it has {count} {modifier} modifiers where RFC 7208 §6 allows one");
        }
    }
    for term in terms {
        let mut alone = b"v=spf1 ".to_vec();
        alone.extend_from_slice(term);
        if Spf::parse(&alone).is_err() {
            return format!("the term {} is not valid SPF", quote(term));
        }
    }
    format!("the record {} does not parse", quote(record))
}

/// Several SPF records at one name, in words.
pub(crate) fn explain_several(records: &[Vec<u8>]) -> String {
    let quoted: Vec<String> = records.iter().map(|r| quote(r)).collect();
    format!(
        "it publishes {} SPF records ({}) where RFC 7208 §4.5 allows one: merge them into one \
         record",
        records.len(),
        quoted.join(" and ")
    )
}

/// Text from DNS, quoted and escaped so a hostile record cannot break a log line, and
/// shortened.
pub(crate) fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > QUOTE_MAX {
        let cut: String = text.chars().take(QUOTE_MAX).collect();
        format!("{:?}...", cut)
    } else {
        format!("{text:?}")
    }
}

/// A term of a record that makes a DNS lookup of its own (RFC 7208 §4.6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LookupTerm {
    /// `include`, `a`, `mx`, `ptr`, `exists` or `redirect`.
    pub kind: &'static str,
    /// The name it looks up when written without macros; `None` when it uses macros, and
    /// for `a`/`mx` without a name, the record's own domain (see [`LookupTerm::name_or`]).
    pub name: Option<String>,
    /// False when the name contains macros, so it cannot be known without the evaluation's
    /// variables.
    pub literal: bool,
}

impl LookupTerm {
    /// The name looked up, with `current` standing for the record's own domain.
    pub fn name_or(&self, current: &str) -> Option<String> {
        match (&self.name, self.literal) {
            (Some(name), true) => Some(name.clone()),
            (None, true) => Some(current.to_string()),
            _ => None,
        }
    }
}

/// The record's terms that cost a DNS lookup, in evaluation order (`redirect` last).
pub(crate) fn lookup_terms(spf: &Spf) -> Vec<LookupTerm> {
    let mut terms: Vec<LookupTerm> = spf
        .directives
        .iter()
        .filter_map(|d| {
            let (kind, name) = match &d.mechanism {
                Mechanism::Include { macro_string } => ("include", macro_string),
                Mechanism::A { macro_string, .. } => ("a", macro_string),
                Mechanism::Mx { macro_string, .. } => ("mx", macro_string),
                Mechanism::Ptr { macro_string } => ("ptr", macro_string),
                Mechanism::Exists { macro_string } => ("exists", macro_string),
                Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => return None,
            };
            Some(term(kind, name))
        })
        .collect();
    if let Some(redirect) = &spf.redirect {
        terms.push(term("redirect", redirect));
    }
    terms
}

fn term(kind: &'static str, name: &Macro) -> LookupTerm {
    match name {
        Macro::None => LookupTerm {
            kind,
            name: None,
            literal: true,
        },
        Macro::Literal(bytes) => LookupTerm {
            kind,
            name: Some(String::from_utf8_lossy(bytes).into_owned()),
            literal: true,
        },
        Macro::Variable { .. } | Macro::List(_) => LookupTerm {
            kind,
            name: None,
            literal: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn only_records_starting_with_v_spf1_are_spf_records() {
        assert!(is_spf(b"v=spf1 -all"));
        assert!(is_spf(b"v=spf1"));
        assert!(is_spf(b"V=SPF1 ip4:192.0.2.1 -all"));
        assert!(!is_spf(b"v=spf10 -all"));
        assert!(!is_spf(b"v=DKIM1; p=abc"));
        assert!(!is_spf(b"google-site-verification=xyz"));
        assert!(!is_spf(b" v=spf1 -all"));
    }

    #[test]
    fn other_txt_records_beside_the_spf_record_are_ignored() {
        assert_eq!(
            select(vec![b("site-verification=1"), b("v=spf1 -all")]),
            Selection::One(b("v=spf1 -all"))
        );
        assert_eq!(select(vec![b("site-verification=1")]), Selection::None);
        assert_eq!(select(vec![]), Selection::None);
    }

    #[test]
    fn two_spf_records_are_named_with_the_fix() {
        let several = match select(vec![b("v=spf1 a -all"), b("v=spf1 mx -all")]) {
            Selection::Several(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            explain_several(&several),
            "it publishes 2 SPF records (\"v=spf1 a -all\" and \"v=spf1 mx -all\") where RFC \
             7208 §4.5 allows one: merge them into one record"
        );
    }

    #[test]
    fn a_bad_term_is_named() {
        assert_eq!(
            parse(b"v=spf1 a ip4:203.0.113 -all").unwrap_err(),
            "the term \"ip4:203.0.113\" is not valid SPF"
        );
        assert_eq!(
            parse(b"v=spf1 include -all").unwrap_err(),
            "the term \"include\" is not valid SPF"
        );
    }

    #[test]
    fn a_repeated_redirect_is_named() {
        let err = parse(b"v=spf1 redirect=a.example redirect=b.example");
        assert_eq!(
            err.unwrap_err(),
            "it has 2 redirect= modifiers where RFC 7208 §6 allows one"
        );
    }

    #[test]
    fn a_good_record_parses() {
        let spf = parse(b"v=spf1 ip4:203.0.113.0/24 include:_spf.example.net mx -all").unwrap();
        assert_eq!(
            lookup_terms(&spf),
            vec![
                LookupTerm {
                    kind: "include",
                    name: Some("_spf.example.net".into()),
                    literal: true
                },
                LookupTerm {
                    kind: "mx",
                    name: None,
                    literal: true
                },
            ]
        );
    }

    #[test]
    fn terms_with_macros_are_not_taken_for_names() {
        let spf = parse(b"v=spf1 exists:%{i}._spf.example.net redirect=_spf.example.org").unwrap();
        let terms = lookup_terms(&spf);
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].name_or("x.example"), None);
        assert_eq!(
            terms[1].name_or("x.example").as_deref(),
            Some("_spf.example.org")
        );
    }

    #[test]
    fn quoted_dns_text_is_escaped_and_shortened() {
        assert_eq!(quote(b"a\nb"), "\"a\\nb\"");
        let long = "x".repeat(500);
        let q = quote(long.as_bytes());
        assert!(q.len() < 130 && q.ends_with("..."), "{q}");
    }
}
