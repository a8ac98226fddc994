//! A parsed mailertable: keys to routes, and the lookup that gives sendmail's precedence.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::path::Path;

use crate::address::Domain;

use super::Route;
use super::error::{KeyProblem, LineError, LineProblem, LoadError};
use super::table_file::{Origin, Warning, WarningKind, content_lines, read_file, split_key};
use super::value::parse_value;

/// A mailertable key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// `example.com`: that domain only.
    Exact(Domain),
    /// `.example.com`: every name below `example.com` (not `example.com` itself).
    Parent(Domain),
    /// `.`: every domain no other key matches.
    CatchAll,
}

impl Key {
    /// Parses a key: case-insensitive, a trailing dot ignored, Unicode names converted to
    /// A-labels.
    pub fn parse(text: &str) -> Result<Key, KeyProblem> {
        if text == "." {
            return Ok(Key::CatchAll);
        }
        if text.starts_with('[') {
            return Err(KeyProblem::AddressLiteral);
        }
        if text.contains('*') {
            return Err(KeyProblem::Wildcard);
        }
        if text.contains('@') {
            return Err(KeyProblem::Address);
        }
        match text.strip_prefix('.') {
            Some(parent) => Ok(Key::Parent(Domain::parse(parent)?)),
            None => Ok(Key::Exact(Domain::parse(text)?)),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Exact(d) => write!(f, "{d}"),
            Key::Parent(d) => write!(f, ".{d}"),
            Key::CatchAll => f.write_str("."),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    route: Route,
}

#[derive(Debug, Clone, Copy)]
enum MatchedKey<'a> {
    Exact(&'a str),
    Parent(&'a str),
    CatchAll,
}

/// The entry a lookup found.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    key: MatchedKey<'a>,
    line: usize,
    route: &'a Route,
}

impl Match<'_> {
    /// The key that matched.
    pub fn key(&self) -> Key {
        let domain = |s: &str| {
            Domain::parse(s).expect("invariant: table keys are stored after parsing as domains")
        };
        match self.key {
            MatchedKey::Exact(s) => Key::Exact(domain(s)),
            MatchedKey::Parent(s) => Key::Parent(domain(s)),
            MatchedKey::CatchAll => Key::CatchAll,
        }
    }

    /// The line the entry is on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The route it gives.
    pub fn route(&self) -> &Route {
        self.route
    }
}

/// A parsed mailertable.
///
/// ```
/// use postrider::route::{Origin, RouteTable};
/// use postrider::Domain;
/// let text = "gmail.com esmtp:[smtp.gmail.com]:587\n.corp.example esmtp:mail.corporate.net\n";
/// let (table, warnings) = RouteTable::parse(text, Origin::named("mailertable"))?;
/// assert!(warnings.is_empty());
/// let m = table.lookup(&Domain::parse("hq.corp.example")?).expect("a .parent key matches");
/// assert_eq!((m.key().to_string(), m.line()), (".corp.example".to_string(), 2));
/// assert!(table.lookup(&Domain::parse("corp.example")?).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RouteTable {
    origin: Origin,
    exact: HashMap<Box<str>, Entry>,
    parents: HashMap<Box<str>, Entry>,
    catch_all: Option<Entry>,
}

impl RouteTable {
    /// A table with no entries.
    pub fn empty(origin: Origin) -> RouteTable {
        RouteTable {
            origin,
            exact: HashMap::new(),
            parents: HashMap::new(),
            catch_all: None,
        }
    }

    /// Parses mailertable text. Every bad line is reported; duplicate keys are warnings (the
    /// first entry is used).
    pub fn parse(text: &str, origin: Origin) -> Result<(RouteTable, Vec<Warning>), LoadError> {
        let mut table = RouteTable::empty(origin);
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for (line, content) in content_lines(text) {
            let (key_text, value) = split_key(content);
            let problem = match (Key::parse(key_text), value) {
                (Err(reason), _) => LineProblem::BadKey {
                    key: key_text.to_string(),
                    reason,
                },
                (Ok(_), "") => LineProblem::NoValue {
                    key: key_text.to_string(),
                },
                (Ok(key), value) => match parse_value(value) {
                    Ok(route) => {
                        if let Some(first_line) = table.insert(&key, line, route) {
                            warnings.push(Warning::at(
                                &table.origin,
                                line,
                                WarningKind::DuplicateKey {
                                    key: key.to_string(),
                                    first_line,
                                },
                            ));
                        }
                        continue;
                    }
                    Err(e) => LineProblem::Value(e),
                },
            };
            errors.push(LineError {
                file: table.origin.clone(),
                line,
                problem,
            });
        }
        if errors.is_empty() {
            Ok((table, warnings))
        } else {
            Err(LoadError::Invalid { errors })
        }
    }

    /// Reads and parses a mailertable file.
    pub fn load(path: &Path) -> Result<(RouteTable, Vec<Warning>), LoadError> {
        let text = read_file(path)?;
        RouteTable::parse(&text, Origin::file(path))
    }

    /// Adds an entry unless the key is taken; returns the line of the entry already there.
    fn insert(&mut self, key: &Key, line: usize, route: Route) -> Option<usize> {
        let entry = Entry { line, route };
        let slot = match key {
            Key::Exact(d) => self.exact.entry(d.as_str().into()),
            Key::Parent(d) => self.parents.entry(d.as_str().into()),
            Key::CatchAll => {
                return match &self.catch_all {
                    Some(first) => Some(first.line),
                    None => {
                        self.catch_all = Some(entry);
                        None
                    }
                };
            }
        };
        match slot {
            MapEntry::Occupied(first) => Some(first.get().line),
            MapEntry::Vacant(v) => {
                v.insert(entry);
                None
            }
        }
    }

    /// The most specific entry for `domain`: exact, then `.parent` keys longest first, then `.`.
    pub fn lookup(&self, domain: &Domain) -> Option<Match<'_>> {
        if let Some((k, e)) = self.exact.get_key_value(domain.as_str()) {
            return Some(Match {
                key: MatchedKey::Exact(k),
                line: e.line,
                route: &e.route,
            });
        }
        if !self.parents.is_empty() {
            for parent in domain.parents() {
                if let Some((k, e)) = self.parents.get_key_value(parent) {
                    return Some(Match {
                        key: MatchedKey::Parent(k),
                        line: e.line,
                        route: &e.route,
                    });
                }
            }
        }
        self.catch_all.as_ref().map(|e| Match {
            key: MatchedKey::CatchAll,
            line: e.line,
            route: &e.route,
        })
    }

    /// Where the table came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.exact.len() + self.parents.len() + usize::from(self.catch_all.is_some())
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exact-domain keys and their lines.
    pub(crate) fn exact_keys(&self) -> impl Iterator<Item = (&str, usize)> {
        self.exact.iter().map(|(k, e)| (&**k, e.line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> RouteTable {
        RouteTable::parse(text, Origin::named("mailertable"))
            .unwrap()
            .0
    }

    fn matched(t: &RouteTable, domain: &str) -> Option<(String, usize)> {
        t.lookup(&Domain::parse(domain).unwrap())
            .map(|m| (m.key().to_string(), m.line()))
    }

    #[test]
    fn keys_are_normalised_when_parsed() {
        assert_eq!(Key::parse("Gmail.COM.").unwrap().to_string(), "gmail.com");
        assert_eq!(
            Key::parse(".Corp.Example.").unwrap().to_string(),
            ".corp.example"
        );
        assert_eq!(Key::parse(".").unwrap(), Key::CatchAll);
        assert_eq!(
            Key::parse("[10.0.0.5]").unwrap_err(),
            KeyProblem::AddressLiteral
        );
        assert_eq!(
            Key::parse("*.example.com").unwrap_err(),
            KeyProblem::Wildcard
        );
        assert_eq!(
            Key::parse("bob@example.com").unwrap_err(),
            KeyProblem::Address
        );
        assert!(matches!(
            Key::parse("..example"),
            Err(KeyProblem::Domain(_))
        ));
    }

    #[test]
    fn the_most_specific_key_wins_regardless_of_file_order() {
        let t = table(
            ".\tesmtp:[catch.example]\n.com esmtp:com.example\n.example.com esmtp:p.example\na.b.example.com esmtp:x.example\n",
        );
        assert_eq!(
            matched(&t, "a.b.example.com"),
            Some(("a.b.example.com".into(), 4))
        );
        assert_eq!(
            matched(&t, "z.b.example.com"),
            Some((".example.com".into(), 3))
        );
        assert_eq!(matched(&t, "example.com"), Some((".com".into(), 2)));
        assert_eq!(matched(&t, "example.org"), Some((".".into(), 1)));
    }

    #[test]
    fn lookups_without_a_match_return_none() {
        let t = table("gmail.com esmtp:[smtp.gmail.com]:587\n");
        assert_eq!(matched(&t, "mail.gmail.com"), None);
        assert_eq!(t.len(), 1);
    }
}
