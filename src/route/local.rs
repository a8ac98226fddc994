//! Local domains: sendmail's class `w`, read from `local-host-names`, plus the host's own name and
//! `localhost`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::Path;

use crate::address::Domain;

use super::error::{LineError, LineProblem, LoadError};
use super::table_file::{Origin, Warning, WarningKind, content_lines, read_file};

/// Why a domain is local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSource {
    /// Listed in a local-host-names file.
    File {
        /// The file.
        file: Origin,
        /// The line.
        line: usize,
    },
    /// The configured host name.
    Hostname,
    /// `localhost`.
    Localhost,
}

impl fmt::Display for LocalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalSource::File { file, line } => write!(f, "{file}:{line}"),
            LocalSource::Hostname => f.write_str("the configured hostname"),
            LocalSource::Localhost => f.write_str("localhost"),
        }
    }
}

/// The set of local domains.
///
/// ```
/// use postrider::route::{LocalDomains, Origin};
/// use postrider::Domain;
/// let (mut local, _) = LocalDomains::parse("# ours\nourtest.com\n", Origin::named("local-host-names"))?;
/// local.add_localhost();
/// assert!(local.lookup(&Domain::parse("OurTest.com")?).is_some());
/// assert!(local.lookup(&Domain::parse("localhost")?).is_some());
/// assert!(local.lookup(&Domain::parse("mail.ourtest.com")?).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocalDomains {
    names: HashMap<Box<str>, LocalSource>,
}

impl LocalDomains {
    /// No local domains.
    pub fn new() -> LocalDomains {
        LocalDomains::default()
    }

    /// Parses local-host-names text.
    pub fn parse(text: &str, origin: Origin) -> Result<(LocalDomains, Vec<Warning>), LoadError> {
        let mut local = LocalDomains::new();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for (line, content) in content_lines(text) {
            for name in content.split_whitespace() {
                if name.starts_with('[') {
                    warnings.push(Warning::at(
                        &origin,
                        line,
                        WarningKind::IgnoredAddressLiteral {
                            literal: name.to_string(),
                        },
                    ));
                    continue;
                }
                match Domain::parse(name) {
                    Ok(d) => local.insert(
                        d,
                        LocalSource::File {
                            file: origin.clone(),
                            line,
                        },
                    ),
                    Err(reason) => errors.push(LineError {
                        file: origin.clone(),
                        line,
                        problem: LineProblem::BadLocalName {
                            name: name.to_string(),
                            reason,
                        },
                    }),
                }
            }
        }
        if errors.is_empty() {
            Ok((local, warnings))
        } else {
            Err(LoadError::Invalid { errors })
        }
    }

    /// Reads and parses a local-host-names file.
    pub fn load(path: &Path) -> Result<(LocalDomains, Vec<Warning>), LoadError> {
        let text = read_file(path)?;
        LocalDomains::parse(&text, Origin::file(path))
    }

    /// Makes the configured host name local (kept from the file if listed there too).
    pub fn add_hostname(&mut self, hostname: Domain) {
        self.insert(hostname, LocalSource::Hostname);
    }

    /// Makes `localhost` local.
    pub fn add_localhost(&mut self) {
        let localhost = Domain::parse("localhost").expect("invariant: localhost is a valid name");
        self.insert(localhost, LocalSource::Localhost);
    }

    fn insert(&mut self, domain: Domain, source: LocalSource) {
        // The first source is kept so an explanation points at the line an administrator wrote.
        if let Entry::Vacant(v) = self.names.entry(domain.as_str().into()) {
            v.insert(source);
        }
    }

    /// Why `domain` is local, or `None` when it is not.
    pub fn lookup(&self, domain: &Domain) -> Option<&LocalSource> {
        self.names.get(domain.as_str())
    }

    /// The number of local names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no name is local.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(LocalDomains, Vec<Warning>), LoadError> {
        LocalDomains::parse(text, Origin::named("local-host-names"))
    }

    #[test]
    fn names_match_exactly_and_case_insensitively() {
        let (local, warnings) =
            parse("ourtest.com\r\n# comment\r\nMail.OurTest.com sipserver1\r\n").unwrap();
        assert!(warnings.is_empty());
        assert_eq!(local.len(), 3);
        let d = |s| Domain::parse(s).unwrap();
        assert_eq!(
            local.lookup(&d("OURTEST.COM.")),
            Some(&LocalSource::File {
                file: Origin::named("local-host-names"),
                line: 1
            })
        );
        assert!(local.lookup(&d("sipserver1")).is_some());
        assert!(local.lookup(&d("x.ourtest.com")).is_none());
    }

    #[test]
    fn address_literals_are_skipped_with_a_warning() {
        let (local, warnings) = parse("[192.168.10.10]\nourtest.com\n").unwrap();
        assert_eq!(local.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "local-host-names:1: address literal [192.168.10.10] ignored: postrider does not \
             accept recipients like user@[192.168.10.10]"
        );
    }

    #[test]
    fn a_bad_name_is_an_error_naming_line_and_name() {
        let err = parse("ok.example\nbad_name.example\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("local-host-names:2: bad host name \"bad_name.example\": "),
            "{msg}"
        );
    }

    #[test]
    fn a_listed_hostname_keeps_its_file_line() {
        let (mut local, _) = parse("sipserver1.ourtest.com\n").unwrap();
        local.add_hostname(Domain::parse("sipserver1.ourtest.com").unwrap());
        local.add_localhost();
        assert!(matches!(
            local.lookup(&Domain::parse("sipserver1.ourtest.com").unwrap()),
            Some(LocalSource::File { line: 1, .. })
        ));
        assert_eq!(
            local.lookup(&Domain::parse("localhost").unwrap()),
            Some(&LocalSource::Localhost)
        );
    }
}
