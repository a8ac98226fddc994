//! The virtusertable (sendmail's `FEATURE(virtusertable)`): addresses in local and virtual
//! domains mapped to local users, other addresses, or refusals.
//!
//! ```text
//! info@ourtest.com        bob
//! sales@ourtest.com       sales-team@partner.example
//! joe@ourtest.com         error:nouser 550 No such user here
//! jax@ourtest.com         error:5.7.0:550 Address invalid
//! list+*@ourtest.com      lists
//! @othertest.com          %1@ourtest.com
//! ```
//!
//! For `user+detail@domain` the keys tried are `user+detail@domain`, `user+*@domain`,
//! `user@domain`, then `@domain`, as sendmail does. In the value `%1` is the user (without the
//! detail), `%2` the detail and `%3` `+detail` (empty when there is none). Keys are
//! case-insensitive. A value is a local user name, an address, or `error:` followed by
//! `D.S.N:CODE text`, `CODE text`, or a sendmail error name (`nouser`, `nohost`,
//! `unavailable`, `tempfail`) and an optional `CODE text`. Every domain that appears in a key
//! is a virtual domain: its mail is handled here even when it is not in local-host-names.
//!
//! The file format is makemap's: `#` comment lines, key and value separated by white space,
//! duplicate keys warned about (the first is used), every bad line reported as `file:line`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::address::{Address, Domain};
use crate::route::table_file::{Origin, Warning, WarningKind, content_lines, read_file, split_key};
use crate::route::{LineError, LineProblem, LoadError};
use crate::status::{EnhancedStatus, Reply};

use super::targets::check_name;

/// What is wrong with one virtusertable line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtuserProblem {
    /// The key is not `user@domain`, `user+*@domain` or `@domain`.
    #[error("bad key {key:?}: {reason} (expected user@domain or @domain)")]
    BadKey {
        /// The key as written.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key with nothing after it.
    #[error("key {key:?} has no value (expected e.g. {key} bob)")]
    NoValue {
        /// The key.
        key: String,
    },
    /// The value is not a user, an address or an `error:` value.
    #[error("bad value {value:?}: {reason}")]
    BadValue {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a virtusertable entry sends mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualTarget {
    /// A local user (aliases apply).
    User(String),
    /// Another address.
    Address(Address),
    /// Refuse with this reply.
    Error(Reply),
}

/// The entry a lookup used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualMatch {
    /// Where the mail goes, with `%1`-style macros replaced.
    pub target: VirtualTarget,
    /// The key that matched, as stored (lower case).
    pub key: String,
    /// Its line.
    pub line: usize,
}

#[derive(Debug, Clone)]
enum Value {
    /// A user name or address, possibly with `%1`-style macros.
    Template(String),
    Error(Reply),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    line: usize,
}

/// A parsed virtusertable.
///
/// ```
/// use postrider::local::{Virtusertable, VirtualTarget};
/// use postrider::route::Origin;
/// use postrider::Address;
/// let (v, _) = Virtusertable::parse("info@ourtest.com bob\n@other.example %1%3@ourtest.com\n",
///                                   Origin::named("virtusertable"))?;
/// let m = v.lookup(&Address::parse("Info@OurTest.com")?).unwrap();
/// assert_eq!(m.target, VirtualTarget::User("bob".into()));
/// let m = v.lookup(&Address::parse("ann+news@other.example")?).unwrap();
/// assert_eq!(m.target, VirtualTarget::Address(Address::parse("ann+news@ourtest.com")?));
/// assert!(v.is_virtual(&"other.example".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Virtusertable {
    entries: HashMap<String, Entry>,
    domains: HashSet<String>,
    origin: Origin,
}

impl Virtusertable {
    /// An empty table.
    pub fn empty(origin: Origin) -> Virtusertable {
        Virtusertable {
            entries: HashMap::new(),
            domains: HashSet::new(),
            origin,
        }
    }

    /// Parses virtusertable text.
    pub fn parse(text: &str, origin: Origin) -> Result<(Virtusertable, Vec<Warning>), LoadError> {
        let mut table = Virtusertable::empty(origin.clone());
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for (line, content) in content_lines(text) {
            let fail = |problem| LineError {
                file: origin.clone(),
                line,
                problem: LineProblem::Virtusertable(problem),
            };
            let (key, value) = split_key(content);
            let (key, domain) = match parse_key(key) {
                Ok(k) => k,
                Err(reason) => {
                    errors.push(fail(VirtuserProblem::BadKey {
                        key: key.to_string(),
                        reason,
                    }));
                    continue;
                }
            };
            if value.is_empty() {
                errors.push(fail(VirtuserProblem::NoValue { key }));
                continue;
            }
            let value = match parse_value(value) {
                Ok(v) => v,
                Err(reason) => {
                    errors.push(fail(VirtuserProblem::BadValue {
                        value: value.to_string(),
                        reason,
                    }));
                    continue;
                }
            };
            table.domains.insert(domain);
            match table.entries.get(&key) {
                Some(first) => warnings.push(Warning::at(
                    &origin,
                    line,
                    WarningKind::DuplicateKey {
                        key,
                        first_line: first.line,
                    },
                )),
                None => {
                    table.entries.insert(key, Entry { value, line });
                }
            }
        }
        if errors.is_empty() {
            Ok((table, warnings))
        } else {
            Err(LoadError::Invalid { errors })
        }
    }

    /// Reads and parses a virtusertable file.
    pub fn load(path: &Path) -> Result<(Virtusertable, Vec<Warning>), LoadError> {
        let text = read_file(path)?;
        Virtusertable::parse(&text, Origin::file(path))
    }

    /// The file (or name) the table came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `domain` appears in a key: its mail is handled by this table.
    pub fn is_virtual(&self, domain: &Domain) -> bool {
        self.domains.contains(domain.as_str())
    }

    /// The entry for `address`, trying the keys in sendmail's order.
    pub fn lookup(&self, address: &Address) -> Option<VirtualMatch> {
        let local = address.local_part().to_ascii_lowercase();
        let domain = address.domain().as_str();
        let (user, has_detail) = match local.find('+') {
            Some(i) if i > 0 => (&local[..i], true),
            _ => (local.as_str(), false),
        };
        let mut keys = Vec::with_capacity(4);
        if has_detail {
            keys.push(format!("{local}@{domain}"));
            keys.push(format!("{user}+*@{domain}"));
        }
        keys.push(format!("{user}@{domain}"));
        keys.push(format!("@{domain}"));
        // The macros take the address as written (case kept), not the folded key.
        let written = address.local_part();
        let (w_user, w_detail) = match written.find('+') {
            Some(i) if i > 0 => (&written[..i], Some(&written[i + 1..])),
            _ => (written, None),
        };
        for key in keys {
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            let target = match &entry.value {
                Value::Error(reply) => VirtualTarget::Error(reply.clone()),
                Value::Template(t) => {
                    let text = substitute(t, w_user, w_detail);
                    match resolve(&text) {
                        Ok(t) => t,
                        // A substituted local part can break the grammar (`%1` of a quoted
                        // local part inside a dot-string): refuse that address only.
                        Err(reason) => VirtualTarget::Error(
                            Reply::new(
                                550,
                                Some(EnhancedStatus::new(5, 1, 1)),
                                format!(
                                    "virtusertable entry {key:?} (line {}) gives {text:?}: {reason}",
                                    entry.line
                                ),
                            )
                            .expect("invariant: 550 with 5.1.1 agree"),
                        ),
                    }
                }
            };
            return Some(VirtualMatch {
                target,
                key,
                line: entry.line,
            });
        }
        None
    }
}

/// `user@domain`, `user+*@domain` or `@domain` -> (normalised key, domain).
fn parse_key(key: &str) -> Result<(String, String), String> {
    let Some(at) = key.rfind('@') else {
        return Err("no @".into());
    };
    let (local, domain) = (&key[..at], &key[at + 1..]);
    let domain = Domain::parse(domain).map_err(|e| e.to_string())?;
    if local.is_empty() {
        return Ok((format!("@{domain}"), domain.as_str().to_string()));
    }
    let plain = local.strip_suffix("+*").unwrap_or(local);
    if plain.starts_with('"') {
        Address::parse(&format!("{plain}@{domain}")).map_err(|e| e.to_string())?;
    } else {
        check_name(plain).map_err(str::to_string)?;
    }
    Ok((
        format!("{}@{domain}", local.to_ascii_lowercase()),
        domain.as_str().to_string(),
    ))
}

/// The sendmail error names a virtusertable may use, with their status and default code.
const ERROR_NAMES: [(&str, u8, u16, u16, u16); 5] = [
    ("nouser", 5, 1, 1, 550),
    ("nohost", 5, 1, 2, 550),
    ("unavailable", 5, 0, 0, 550),
    ("tempfail", 4, 0, 0, 451),
    ("noperm", 5, 7, 1, 550),
];

fn parse_value(value: &str) -> Result<Value, String> {
    if let Some(spec) = value.strip_prefix("error:") {
        return parse_error(spec.trim()).map(Value::Error);
    }
    if value.contains(char::is_whitespace) {
        return Err("a user or address has no spaces (refusals start with error:)".into());
    }
    // Check the value with every macro replaced by a plain sample.
    let sample = substitute(value, "user", Some("detail"));
    resolve(&sample)?;
    for (i, _) in value.match_indices('%') {
        match value.as_bytes().get(i + 1) {
            Some(b'1' | b'2' | b'3' | b'%') => {}
            _ => return Err("only %1, %2 and %3 may follow '%'".into()),
        }
    }
    Ok(Value::Template(value.to_string()))
}

fn parse_error(spec: &str) -> Result<Reply, String> {
    let (word, rest) = match spec.find([':', ' ', '\t']) {
        Some(i) => (&spec[..i], spec[i..].trim_start_matches(':').trim()),
        None => (spec, ""),
    };
    let mut status = None;
    let mut default_code = None;
    let mut rest = rest;
    if word.contains('.') {
        status = Some(EnhancedStatus::parse(word).map_err(|e| e.to_string())?);
    } else if let Some(&(_, c, s, d, code)) = ERROR_NAMES
        .iter()
        .find(|(n, ..)| n.eq_ignore_ascii_case(word))
    {
        status = Some(EnhancedStatus::new(c, s, d));
        default_code = Some(code);
    } else {
        rest = spec;
    }
    let rest = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(rest);
    let (code_text, text) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (code, text) = match code_text.parse::<u16>() {
        Ok(c) if code_text.len() == 3 => (c, text),
        _ => match default_code {
            Some(c) => (c, rest),
            None => {
                return Err("no reply code after error: (expected error:D.S.N:CODE text, error:CODE text or error:nouser text)".to_string());
            }
        },
    };
    if !(400..600).contains(&code) {
        return Err(format!(
            "reply code {code} does not refuse mail (use 4xx to defer, 5xx to fail)"
        ));
    }
    let text = match text {
        "" if code >= 500 => "User unknown",
        "" => "mail for this address is deferred by the virtusertable",
        t => t,
    };
    Reply::new(code, status, text).map_err(|e| e.to_string())
}

/// Replaces `%1`, `%2`, `%3` and `%%`.
fn substitute(template: &str, user: &str, detail: Option<&str>) -> String {
    let mut out = String::with_capacity(template.len() + user.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push_str(user),
            Some('2') => out.push_str(detail.unwrap_or("")),
            Some('3') => {
                if let Some(d) = detail {
                    out.push('+');
                    out.push_str(d);
                }
            }
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn resolve(text: &str) -> Result<VirtualTarget, String> {
    if text.contains('@') {
        return Address::parse(text)
            .map(VirtualTarget::Address)
            .map_err(|e| e.to_string());
    }
    check_name(text).map_err(str::to_string)?;
    Ok(VirtualTarget::User(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Virtusertable {
        Virtusertable::parse(text, Origin::named("virtusertable"))
            .unwrap()
            .0
    }

    fn target(v: &Virtusertable, addr: &str) -> Option<VirtualTarget> {
        v.lookup(&Address::parse(addr).unwrap()).map(|m| m.target)
    }

    fn user(u: &str) -> Option<VirtualTarget> {
        Some(VirtualTarget::User(u.into()))
    }

    fn addr(a: &str) -> Option<VirtualTarget> {
        Some(VirtualTarget::Address(Address::parse(a).unwrap()))
    }

    #[test]
    fn keys_are_tried_from_the_most_specific_with_detail() {
        let v = table(
            "bob+lists@x.example lists\nbob+*@x.example bob-other\nbob@x.example bob\n@x.example catchall\n",
        );
        assert_eq!(target(&v, "bob+lists@x.example"), user("lists"));
        assert_eq!(target(&v, "bob+news@x.example"), user("bob-other"));
        assert_eq!(target(&v, "BOB@X.example"), user("bob"));
        assert_eq!(target(&v, "ann@x.example"), user("catchall"));
        assert_eq!(target(&v, "ann@y.example"), None);
        assert_eq!(
            v.lookup(&Address::parse("ann@x.example").unwrap())
                .unwrap()
                .line,
            4
        );
    }

    #[test]
    fn macros_take_user_and_detail_as_written() {
        let v = table("@x.example %1@y.example\n@z.example %1%3@y.example\n@d.example %2\n");
        assert_eq!(target(&v, "Ann+News@x.example"), addr("Ann@y.example"));
        assert_eq!(target(&v, "ann+news@z.example"), addr("ann+news@y.example"));
        assert_eq!(target(&v, "ann@z.example"), addr("ann@y.example"));
        assert_eq!(target(&v, "ann+bob@d.example"), user("bob"));
    }

    #[test]
    fn error_values_read_as_sendmail_writes_them() {
        let v = table(
            "a@x.example error:nouser 550 No such user here\nb@x.example error:5.7.0:550 Address invalid\n\
             c@x.example error:451 try later\nd@x.example error:nouser\n",
        );
        let reply = |a: &str| match target(&v, a) {
            Some(VirtualTarget::Error(r)) => r.one_line(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reply("a@x.example"), "550 5.1.1 No such user here");
        assert_eq!(reply("b@x.example"), "550 5.7.0 Address invalid");
        assert_eq!(reply("c@x.example"), "451 try later");
        assert_eq!(reply("d@x.example"), "550 5.1.1 User unknown");
    }

    #[test]
    fn virtual_domains_are_the_domains_of_the_keys() {
        let v = table("info@virt.example bob\n");
        assert!(v.is_virtual(&Domain::parse("VIRT.example").unwrap()));
        assert!(!v.is_virtual(&Domain::parse("other.example").unwrap()));
    }

    #[test]
    fn bad_lines_are_all_reported_with_their_numbers() {
        let err = Virtusertable::parse(
            "nobody\nx@bad_domain bob\n# ok\ny@x.example\nz@x.example error:250 fine\nw@x.example two words\nv@x.example %9\n",
            Origin::named("virtusertable"),
        )
        .unwrap_err();
        let lines: Vec<usize> = err.line_errors().iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 4, 5, 6, 7], "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("virtusertable:1: bad key \"nobody\": no @"),
            "{text}"
        );
        assert!(
            text.contains("virtusertable:4: key \"y@x.example\" has no value"),
            "{text}"
        );
        assert!(text.contains("does not refuse mail"), "{text}");
    }

    #[test]
    fn duplicate_keys_warn_and_the_first_wins() {
        let (v, w) =
            Virtusertable::parse("a@x.example bob\nA@X.example carol\n", Origin::named("v"))
                .unwrap();
        assert_eq!(target(&v, "a@x.example"), user("bob"));
        assert_eq!(w.len(), 1);
    }
}
