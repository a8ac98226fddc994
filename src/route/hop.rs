//! The host-list grammar shared by mailertable values, the smart host and the policy file's
//! keys: `host` (MX lookup), `[host]` (no MX lookup), `[10.0.0.5]`, `[IPv6:2001:db8::1]` (or
//! Postfix's `[2001:db8::1]`), each optionally followed by `:port`; several hosts separated by
//! `:` or `,` are fallbacks tried in order (`[a]:[b]`, `a,b`, `[a]:587,[b]:587`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::{AddressError, Domain};

use super::{Host, NextHop};

/// Why a host list was refused. Messages quote the offending piece; the caller adds where the
/// list came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    /// Nothing where a host was expected.
    #[error("no host given")]
    Empty,
    /// Two separators in a row, or one at the start or end (`a,,b`, `[a]:`).
    #[error("empty host or port between separators")]
    EmptyPart,
    /// `[host` without `]`.
    #[error("{text:?} has no closing \"]\"")]
    Unclosed {
        /// The piece concerned.
        text: String,
    },
    /// A bracket where none belongs (`a]`, `[a[b]]`, `x[a]`).
    #[error("misplaced bracket in {text:?} (write [host] or [host]:port)")]
    MisplacedBracket {
        /// The piece concerned.
        text: String,
    },
    /// `[]`.
    #[error("empty brackets \"[]\"")]
    EmptyBrackets,
    /// A port outside 1–65535.
    #[error("bad port {port:?} (ports are 1 to 65535)")]
    BadPort {
        /// The port as written.
        port: String,
    },
    /// A port before any host (`:587`, `587`).
    #[error("port {port} follows no host")]
    PortWithoutHost {
        /// The port as written.
        port: String,
    },
    /// `a,587`: a port must follow its host with a colon.
    #[error("port {port} after a comma (write host:{port})")]
    PortAfterComma {
        /// The port as written.
        port: String,
    },
    /// `[a]:587:25`.
    #[error("host {host} has two ports ({first} and {second})")]
    TwoPorts {
        /// The host.
        host: String,
        /// The first port.
        first: u16,
        /// The second port as written.
        second: String,
    },
    /// A host name that is not a valid domain.
    #[error("bad host {host:?}: {reason}")]
    BadHost {
        /// The host as written.
        host: String,
        /// What is wrong with it.
        reason: AddressError,
    },
    /// `[IPv6:...]` that is not an IPv6 address.
    #[error("bad IPv6 address {text:?}")]
    BadIpv6 {
        /// The literal as written.
        text: String,
    },
    /// `host # comment`: makemap and postmap only know whole-line comments.
    #[error("{text:?} looks like a trailing comment; comments must be on a line of their own")]
    TrailingComment {
        /// The piece concerned.
        text: String,
    },
    /// A host name made only of digits (perhaps after Unicode normalisation dropped invisible
    /// characters): it would read back as a port.
    #[error("host {host:?} is all digits; write an IP address in brackets, or a port after host:")]
    NumericHost {
        /// The host as written.
        host: String,
    },
    /// Several hosts where one is expected (a policy key).
    #[error("one host expected, found {count}")]
    NotOne {
        /// How many were found.
        count: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Separator {
    Start,
    Colon,
    Comma,
}

/// Splits at `:` and `,` outside brackets, remembering which separator preceded each piece.
fn pieces(list: &str) -> Result<Vec<(Separator, &str)>, HopError> {
    let mut out = Vec::new();
    let mut sep = Separator::Start;
    let mut start = 0;
    let mut in_brackets = false;
    for (i, c) in list.char_indices() {
        match c {
            '[' if in_brackets => {
                return Err(HopError::MisplacedBracket {
                    text: list.to_string(),
                });
            }
            '[' => in_brackets = true,
            ']' if !in_brackets => {
                return Err(HopError::MisplacedBracket {
                    text: list.to_string(),
                });
            }
            ']' => in_brackets = false,
            ':' | ',' if !in_brackets => {
                out.push((sep, list[start..i].trim()));
                sep = if c == ':' {
                    Separator::Colon
                } else {
                    Separator::Comma
                };
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_brackets {
        let open = list.rfind('[').unwrap_or(0);
        return Err(HopError::Unclosed {
            text: list[open..].to_string(),
        });
    }
    out.push((sep, list[start..].trim()));
    Ok(out)
}

/// Parses a host list: one or more hosts, each with an optional port, in the order to try.
pub fn parse_hops(list: &str) -> Result<Vec<NextHop>, HopError> {
    if list.trim().is_empty() {
        return Err(HopError::Empty);
    }
    let mut hops: Vec<NextHop> = Vec::new();
    for (sep, piece) in pieces(list)? {
        if piece.is_empty() {
            return Err(HopError::EmptyPart);
        }
        if piece.bytes().all(|b| b.is_ascii_digit()) {
            let port = piece.to_string();
            let last = match (sep, hops.last_mut()) {
                (Separator::Comma, _) => return Err(HopError::PortAfterComma { port }),
                (_, None) => return Err(HopError::PortWithoutHost { port }),
                (_, Some(last)) => last,
            };
            if let Some(first) = last.port {
                return Err(HopError::TwoPorts {
                    host: last.to_string(),
                    first,
                    second: port,
                });
            }
            last.port = Some(parse_port(piece)?);
        } else {
            hops.push(parse_host(piece)?);
        }
    }
    Ok(hops)
}

/// Parses exactly one host with an optional port (a policy key, say).
pub fn parse_hop(text: &str) -> Result<NextHop, HopError> {
    let mut hops = parse_hops(text)?;
    match hops.len() {
        1 => Ok(hops.remove(0)),
        count => Err(HopError::NotOne { count }),
    }
}

/// Writes hops the way a user would: `[a]:587,b`.
pub fn display_hops(hops: &[NextHop]) -> String {
    hops.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_port(text: &str) -> Result<u16, HopError> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(HopError::BadPort {
            port: text.to_string(),
        }),
    }
}

fn parse_host(piece: &str) -> Result<NextHop, HopError> {
    if piece.contains('#') && piece.contains(char::is_whitespace) {
        return Err(HopError::TrailingComment {
            text: piece.to_string(),
        });
    }
    if let Some(open) = piece.strip_prefix('[') {
        let inner = open
            .strip_suffix(']')
            .ok_or_else(|| HopError::MisplacedBracket {
                text: piece.to_string(),
            })?;
        if inner.contains(['[', ']']) {
            return Err(HopError::MisplacedBracket {
                text: piece.to_string(),
            });
        }
        return Ok(NextHop::direct(parse_literal_or_name(inner)?, None));
    }
    if piece.contains(['[', ']']) {
        return Err(HopError::MisplacedBracket {
            text: piece.to_string(),
        });
    }
    let domain = Domain::parse(piece).map_err(|reason| HopError::BadHost {
        host: piece.to_string(),
        reason,
    })?;
    if domain.as_str().bytes().all(|b| b.is_ascii_digit()) {
        return Err(HopError::NumericHost {
            host: piece.to_string(),
        });
    }
    Ok(NextHop::mx(domain, None))
}

fn parse_literal_or_name(inner: &str) -> Result<Host, HopError> {
    if inner.is_empty() {
        return Err(HopError::EmptyBrackets);
    }
    let bad_v6 = || HopError::BadIpv6 {
        text: inner.to_string(),
    };
    if let Some(tag) = inner.get(..5)
        && tag.eq_ignore_ascii_case("ipv6:")
    {
        let v6: Ipv6Addr = inner[5..].parse().map_err(|_| bad_v6())?;
        return Ok(Host::Ip(IpAddr::V6(v6)));
    }
    if let Ok(v4) = inner.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    if inner.contains(':') {
        let v6: Ipv6Addr = inner.parse().map_err(|_| bad_v6())?;
        return Ok(Host::Ip(IpAddr::V6(v6)));
    }
    Domain::parse(inner)
        .map(Host::Name)
        .map_err(|reason| HopError::BadHost {
            host: inner.to_string(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> String {
        parse_hop(text).unwrap().to_string()
    }

    #[test]
    fn the_forms_users_write_parse_to_next_hops() {
        assert_eq!(one("mail.corporate.net"), "mail.corporate.net");
        assert_eq!(one("[smtp.gmail.com]:587"), "[smtp.gmail.com]:587");
        assert_eq!(one("host:2525"), "host:2525");
        assert_eq!(one("[10.0.0.5]"), "[10.0.0.5]");
        assert_eq!(one("[IPv6:2001:DB8::1]"), "[IPv6:2001:db8::1]");
        assert_eq!(one("[ipv6:2001:db8::1]:25"), "[IPv6:2001:db8::1]:25");
        assert_eq!(one("[2001:db8::1]:587"), "[IPv6:2001:db8::1]:587");
        assert_eq!(one(" [Mail.Example.COM.] "), "[mail.example.com]");
    }

    #[test]
    fn brackets_turn_off_mx_lookup() {
        assert!(parse_hop("a.example").unwrap().mx);
        assert!(!parse_hop("[a.example]").unwrap().mx);
    }

    #[test]
    fn fallback_hosts_keep_their_order_and_their_own_ports() {
        let hops = parse_hops("[a.example]:587,[b.example]:[c.example], d.example:2525").unwrap();
        assert_eq!(
            display_hops(&hops),
            "[a.example]:587,[b.example],[c.example],d.example:2525"
        );
        assert_eq!(
            display_hops(&parse_hops("a.example:b.example").unwrap()),
            "a.example,b.example"
        );
    }

    #[test]
    fn bad_lists_are_refused_with_the_offending_piece() {
        let cases: &[(&str, &str)] = &[
            ("", "no host given"),
            ("[a]:", "empty host or port between separators"),
            ("a,,b", "empty host or port between separators"),
            ("[a.example", "\"[a.example\" has no closing \"]\""),
            (
                "a]",
                "misplaced bracket in \"a]\" (write [host] or [host]:port)",
            ),
            (
                "[a]b",
                "misplaced bracket in \"[a]b\" (write [host] or [host]:port)",
            ),
            (
                "[[a]]",
                "misplaced bracket in \"[[a]]\" (write [host] or [host]:port)",
            ),
            ("[]", "empty brackets \"[]\""),
            ("[a]:99999", "bad port \"99999\" (ports are 1 to 65535)"),
            ("[a]:0", "bad port \"0\" (ports are 1 to 65535)"),
            ("587", "port 587 follows no host"),
            ("a,587", "port 587 after a comma (write host:587)"),
            ("[a]:587:25", "host [a]:587 has two ports (587 and 25)"),
            ("[IPv6:zz::1]", "bad IPv6 address \"IPv6:zz::1\""),
            ("[1:2]", "bad IPv6 address \"1:2\""),
            (
                "mail.example # backup",
                "\"mail.example # backup\" looks like a trailing comment; comments must be on a line of their own",
            ),
        ];
        for (input, message) in cases {
            let err = parse_hops(input).unwrap_err();
            assert_eq!(&err.to_string(), message, "input {input:?}");
        }
        let err = parse_hops("exa mple.com").unwrap_err();
        assert!(
            err.to_string().starts_with("bad host \"exa mple.com\": "),
            "{err}"
        );
        let err = parse_hops("10.0.0.5").unwrap_err();
        assert!(err.to_string().contains("[192.0.2.1]"), "{err}");
    }

    #[test]
    fn multibyte_text_in_brackets_is_not_sliced_apart() {
        // The fifth byte falls inside the euro sign: the IPv6 tag check must not split it.
        let hop = parse_hop("[abcd\u{20ac}.example]").unwrap();
        assert_eq!(hop.to_string(), "[xn--abcd-yv7a.example]");
    }

    /// Inputs the fuzzer found; each must parse back to the same hops from its display form.
    #[test]
    fn fuzz_regressions_parse_back_to_the_same_hops() {
        // A byte-order mark before a digit: IDNA drops the mark and leaves the host "9".
        let found: &[&[u8]] = &[b"\xef\xbb\xbf9"];
        for input in found {
            let text = std::str::from_utf8(input).unwrap();
            if let Ok(hops) = parse_hops(text) {
                assert_eq!(parse_hops(&display_hops(&hops)), Ok(hops), "{text:?}");
            }
        }
        assert!(matches!(
            parse_hops("\u{feff}9"),
            Err(HopError::NumericHost { .. })
        ));
    }

    #[test]
    fn exactly_one_host_is_required_where_one_is_expected() {
        assert_eq!(
            parse_hop("[a]:[b]").unwrap_err(),
            HopError::NotOne { count: 2 }
        );
    }
}
