//! Domains, mailbox addresses and reverse paths, parsed once at the edge.
//!
//! Everything after the edge works with these types, so a string that reached the queue has
//! already been checked against RFC 5321's grammar and length limits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// RFC 5321 §4.5.3.1.1: the local part is at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: a domain is at most 255 octets; DNS limits a name to 253 in text form.
pub const MAX_DOMAIN: usize = 253;
/// A DNS label is at most 63 octets (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;
/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
pub const MAX_ADDRESS: usize = 254;

/// Why a domain or address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The input was empty.
    #[error("empty {what}")]
    Empty {
        /// "domain", "address" or "local part".
        what: &'static str,
    },
    /// The domain has an empty label (`a..b`, a leading dot).
    #[error("domain {domain:?} has an empty label")]
    EmptyLabel {
        /// The domain as given.
        domain: String,
    },
    /// A label is longer than 63 octets.
    #[error("domain {domain:?} has a label of {len} octets (at most {MAX_LABEL})")]
    LabelTooLong {
        /// The domain as given.
        domain: String,
        /// The length of the offending label.
        len: usize,
    },
    /// The whole name is longer than 253 octets.
    #[error("domain {domain:?} is {len} octets long (at most {MAX_DOMAIN})")]
    DomainTooLong {
        /// The domain as given (truncated in the message by the caller if needed).
        domain: String,
        /// Its length in A-label form.
        len: usize,
    },
    /// A character that a host name cannot contain, or a label starting or ending with `-`.
    #[error("domain {domain:?} is not a valid host name: {reason}")]
    BadDomain {
        /// The domain as given.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address without `@`.
    #[error("address {address:?} has no @domain")]
    NoDomain {
        /// The address as given.
        address: String,
    },
    /// The local part breaks RFC 5321's dot-string / quoted-string grammar.
    #[error("address {address:?} has an invalid local part: {reason}")]
    BadLocalPart {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The local part is longer than 64 octets.
    #[error("local part of {address:?} is {len} octets long (at most {MAX_LOCAL_PART})")]
    LocalPartTooLong {
        /// The address as given.
        address: String,
        /// Its length.
        len: usize,
    },
    /// The whole address is longer than 254 octets.
    #[error("address {address:?} is {len} octets long (at most {MAX_ADDRESS})")]
    AddressTooLong {
        /// The address as given.
        address: String,
        /// Its length.
        len: usize,
    },
    /// `user@[192.0.2.1]`: address literals are not routed by postrider.
    #[error(
        "address {address:?} uses an address literal; route the domain with a mailertable entry instead"
    )]
    AddressLiteral {
        /// The address as given.
        address: String,
    },
}

/// A DNS domain name in lower-case A-label (punycode) form, without a trailing dot.
///
/// ```
/// use postrider::Domain;
/// let d: Domain = "Mail.Example.COM.".parse()?;
/// assert_eq!(d.as_str(), "mail.example.com");
/// let idn: Domain = "bücher.example".parse()?;
/// assert_eq!(idn.as_str(), "xn--bcher-kva.example");
/// # Ok::<(), postrider::AddressError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Parses a host or domain name: lower-cases it, converts U-labels to A-labels (IDNA/UTS 46),
    /// drops one trailing dot, and checks label and name lengths.
    pub fn parse(input: &str) -> Result<Domain, AddressError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(AddressError::Empty { what: "domain" });
        }
        let ascii = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(trimmed).map_err(|e| AddressError::BadDomain {
                domain: input.to_string(),
                reason: format!("IDNA conversion failed ({e})"),
            })?
        };
        check_domain(&ascii, input)?;
        Ok(Domain(ascii))
    }

    /// The name in lower-case A-label form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's labels, most specific first (`a`, `example`, `com`).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// True when the name has a single label (`localhost`, `sipserver1`): not fully qualified.
    pub fn is_single_label(&self) -> bool {
        !self.0.contains('.')
    }

    /// The suffixes of this name that sendmail's `.parent` mailertable keys match, longest first:
    /// for `a.b.example.com` these are `b.example.com`, `example.com`, `com`.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.0
            .match_indices('.')
            .map(move |(i, _)| &self.0[i + 1..])
    }

    /// True when `self` equals `other` or lies below it (`mx.example.com` is within `example.com`).
    pub fn is_within(&self, other: &Domain) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.ends_with(&other.0)
                && self.0.as_bytes()[self.0.len() - other.0.len() - 1] == b'.')
    }
}

fn check_domain(ascii: &str, input: &str) -> Result<(), AddressError> {
    if ascii.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong {
            domain: input.to_string(),
            len: ascii.len(),
        });
    }
    let mut last = "";
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(AddressError::EmptyLabel {
                domain: input.to_string(),
            });
        }
        if label.len() > MAX_LABEL {
            return Err(AddressError::LabelTooLong {
                domain: input.to_string(),
                len: label.len(),
            });
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(AddressError::BadDomain {
                domain: input.to_string(),
                reason: format!("character {c:?} is not allowed (letters, digits and '-' only)"),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::BadDomain {
                domain: input.to_string(),
                reason: format!("label {label:?} starts or ends with '-'"),
            });
        }
        last = label;
    }
    if ascii.contains('.') && last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::BadDomain {
            domain: input.to_string(),
            reason: "it looks like an IP address; write an address literal in brackets, e.g. [192.0.2.1]"
                .to_string(),
        });
    }
    Ok(())
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

impl FromStr for Domain {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse(s)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Domain::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A mailbox `local@domain` (RFC 5321 `Mailbox`), with the domain in A-label form.
///
/// The local part keeps its case (only the receiving system may interpret it) and is stored in
/// its simplest form: a quoted local part that needs no quotes is unquoted, so `"john"@x` and
/// `john@x` are the same address.
///
/// ```
/// use postrider::Address;
/// let a: Address = "<Bob.Smith@Corp.Example>".parse()?;
/// assert_eq!(a.to_string(), "Bob.Smith@corp.example");
/// let q: Address = r#""john doe"@example.com"#.parse()?;
/// assert_eq!(q.local_part(), r#""john doe""#);
/// # Ok::<(), postrider::AddressError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    domain: Domain,
}

impl Address {
    /// Parses `local@domain`, optionally inside one pair of angle brackets.
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let inner = match input.strip_prefix('<') {
            Some(rest) => rest.strip_suffix('>').ok_or(AddressError::BadLocalPart {
                address: input.to_string(),
                reason: "unbalanced angle brackets",
            })?,
            None => input,
        };
        if inner.is_empty() {
            return Err(AddressError::Empty { what: "address" });
        }
        let at = match find_domain_separator(inner) {
            Separator::At(i) => i,
            Separator::Missing => {
                return Err(AddressError::NoDomain {
                    address: input.to_string(),
                });
            }
            Separator::OpenQuote => {
                return Err(AddressError::BadLocalPart {
                    address: input.to_string(),
                    reason: "the quoted string is not closed",
                });
            }
        };
        let (raw_local, raw_domain) = (&inner[..at], &inner[at + 1..]);
        if raw_domain.starts_with('[') {
            return Err(AddressError::AddressLiteral {
                address: input.to_string(),
            });
        }
        let local = canonical_local_part(raw_local, input)?;
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong {
                address: input.to_string(),
                len: local.len(),
            });
        }
        let domain = Domain::parse(raw_domain)?;
        let total = local.len() + 1 + domain.0.len();
        if total > MAX_ADDRESS {
            return Err(AddressError::AddressTooLong {
                address: input.to_string(),
                len: total,
            });
        }
        Ok(Address { local, domain })
    }

    /// Builds an address from a local part and an already parsed domain.
    pub fn new(local_part: &str, domain: Domain) -> Result<Address, AddressError> {
        Address::parse(&format!("{local_part}@{}", domain.as_str()))
    }

    /// The local part as it is sent on the wire (quoted when it must be).
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// True when the local part has non-ASCII characters, so relaying needs SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }
}

enum Separator {
    At(usize),
    Missing,
    OpenQuote,
}

/// The `@` that separates the domain: the last one outside a quoted string.
fn find_domain_separator(s: &str) -> Separator {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut at = None;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'@' if !in_quotes => at = Some(i),
            _ => {}
        }
    }
    match at {
        _ if in_quotes => Separator::OpenQuote,
        Some(i) => Separator::At(i),
        None => Separator::Missing,
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// Checks the local part against RFC 5321 (`Dot-string / Quoted-string`, with RFC 6531's UTF-8)
/// and returns its simplest equivalent form.
fn canonical_local_part(raw: &str, address: &str) -> Result<String, AddressError> {
    let bad = |reason| AddressError::BadLocalPart {
        address: address.to_string(),
        reason,
    };
    if raw.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some(quoted) = raw.strip_prefix('"') {
        let body = quoted
            .strip_suffix('"')
            .ok_or(bad("the quoted string is not closed"))?;
        let mut content = String::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e) if (' '..='~').contains(&e) => content.push(e),
                    _ => return Err(bad("a backslash must escape a printable ASCII character")),
                },
                '"' => return Err(bad("an unescaped quote inside the quoted string")),
                c if c.is_ascii() && !(' '..='~').contains(&c) => {
                    return Err(bad("a control character inside the quoted string"));
                }
                c => content.push(c),
            }
        }
        if is_dot_string(&content) {
            return Ok(content);
        }
        let mut out = String::with_capacity(content.len() + 2);
        out.push('"');
        for c in content.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        return Ok(out);
    }
    if raw.starts_with('.') || raw.ends_with('.') || raw.contains("..") {
        return Err(bad(
            "dots must separate words (no leading, trailing or double dot)",
        ));
    }
    if !is_dot_string(raw) {
        return Err(bad(
            "it contains a character that needs quoting (space, comma, brackets, ...)",
        ));
    }
    Ok(raw.to_string())
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The envelope sender: the null reverse path `<>` (bounces, DSNs) or a mailbox.
///
/// It displays in the bracketed form log lines use: `<>` or `<user@example.com>`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub enum ReversePath {
    /// `<>`: mail that must never be bounced (DSNs, bounces, auto-replies).
    #[default]
    Null,
    /// An ordinary sender address.
    Address(Address),
}

impl ReversePath {
    /// Parses `<>`, the empty string, or an address with or without brackets.
    pub fn parse(input: &str) -> Result<ReversePath, AddressError> {
        match input {
            "" | "<>" => Ok(ReversePath::Null),
            other => Address::parse(other).map(ReversePath::Address),
        }
    }

    /// True for `<>`.
    pub fn is_null(&self) -> bool {
        matches!(self, ReversePath::Null)
    }

    /// The sender's address, if not null.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Address(a) => Some(a),
        }
    }
}

impl From<Address> for ReversePath {
    fn from(a: Address) -> Self {
        ReversePath::Address(a)
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Address(a) => write!(f, "<{a}>"),
        }
    }
}

impl fmt::Debug for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReversePath({self})")
    }
}

impl FromStr for ReversePath {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReversePath::parse(s)
    }
}

impl Serialize for ReversePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ReversePath::Null => s.serialize_str("<>"),
            ReversePath::Address(a) => s.collect_str(a),
        }
    }
}

impl<'de> Deserialize<'de> for ReversePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ReversePath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
