//! The MTA-STS policy file (RFC 8461 §3.2): a pure parser over the text served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, and the MX pattern match of §4.1.
//!
//! The grammar is small: `key: value` lines ending in LF or CRLF; `version` must be `STSv1`,
//! `mode` one of `enforce`, `testing`, `none`, `max_age` a number of seconds, and `mx` (one
//! line per pattern) is required unless the mode is `none`. Unknown keys are ignored (§3.2
//! asks for that, so the format can grow); a known key given twice is refused, naming both
//! lines, because a policy that says two things about its mode has no safe reading.

use std::fmt;
use std::time::Duration;

use crate::address::Domain;

/// The longest `max_age` RFC 8461 §3.2 allows (about a year); larger values are cut to it.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(31_557_600);

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StsMode {
    /// Deliver only to listed MX hosts over TLS with a valid certificate.
    Enforce,
    /// Deliver as usual, but report what `enforce` would have refused (TLS-RPT).
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl StsMode {
    /// The mode as written in the policy.
    pub fn name(&self) -> &'static str {
        match self {
            StsMode::Enforce => "enforce",
            StsMode::Testing => "testing",
            StsMode::None => "none",
        }
    }
}

impl fmt::Display for StsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `mx:` line: a host name, or `*.` and a domain, which matches exactly one more label
/// on the left (RFC 8461 §4.1: `*.example.com` matches `mx1.example.com`, not
/// `a.b.example.com` nor `example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MxPattern {
    wildcard: bool,
    /// Lower case, no trailing dot; without the `*.` of a wildcard.
    base: String,
}

impl MxPattern {
    /// Reads a pattern; `None` when it is not a host name or `*.` and one.
    pub fn parse(text: &str) -> Option<MxPattern> {
        let text = text.trim().trim_end_matches('.');
        let (wildcard, base) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let domain = Domain::parse(base).ok()?;
        // A wildcard over a top-level domain alone (`*.com`) would match half the Internet;
        // the RFC's examples always have a registrable domain under the star.
        if wildcard && !domain.as_str().contains('.') {
            return None;
        }
        Some(MxPattern {
            wildcard,
            base: domain.as_str().to_string(),
        })
    }

    /// True when `host` (an MX host name) matches.
    pub fn matches(&self, host: &Domain) -> bool {
        let host = host.as_str().trim_end_matches('.');
        if !self.wildcard {
            return host == self.base;
        }
        match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == self.base,
            None => false,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.base)
    }
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsPolicy {
    /// `mode`.
    pub mode: StsMode,
    /// `max_age`, at most [`MAX_MAX_AGE`].
    pub max_age: Duration,
    /// The `mx` patterns, in file order.
    pub mx: Vec<MxPattern>,
}

/// Why a policy file cannot be used; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsPolicyError {
    /// A line that is not `key: value`.
    #[error("line {line}: {text:?} is not \"key: value\"")]
    NotKeyValue {
        /// The line number.
        line: usize,
        /// The line, cut to 80 characters.
        text: String,
    },
    /// A required field is missing.
    #[error("the policy has no {field} line")]
    Missing {
        /// `version`, `mode`, `max_age` or `mx`.
        field: &'static str,
    },
    /// A known field given twice.
    #[error("line {line}: {field} is given again (first on line {first})")]
    Duplicate {
        /// The field.
        field: &'static str,
        /// The first line.
        first: usize,
        /// The repeated line.
        line: usize,
    },
    /// A field whose value is not allowed.
    #[error("line {line}: {value:?} is not a valid {field} ({expected})")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value, cut to 80 characters.
        value: String,
        /// What was expected.
        expected: &'static str,
        /// The line number.
        line: usize,
    },
    /// The file is not UTF-8 text.
    #[error("the policy is not UTF-8 text")]
    NotText,
}

impl StsPolicy {
    /// Parses a policy file.
    ///
    /// ```
    /// use std::time::Duration;
    /// use postrider::Domain;
    /// use postrider::tls_policy::{StsMode, StsPolicy};
    ///
    /// let policy = StsPolicy::parse(
    ///     "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
    /// )?;
    /// assert_eq!(policy.mode, StsMode::Enforce);
    /// assert_eq!(policy.max_age, Duration::from_secs(604800));
    /// assert!(policy.allows_mx(&Domain::parse("mx1.example.net")?));
    /// assert!(!policy.allows_mx(&Domain::parse("a.b.example.net")?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(text: &str) -> Result<StsPolicy, StsPolicyError> {
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for (n, raw) in text.split('\n').enumerate() {
            let line = n + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = raw.split_once(':') else {
                return Err(StsPolicyError::NotKeyValue {
                    line,
                    text: cut(raw),
                });
            };
            let key = key.trim();
            let value = value.trim();
            let once = |slot: &mut Option<(usize, String)>, field| match slot {
                Some((first, _)) => Err(StsPolicyError::Duplicate {
                    field,
                    first: *first,
                    line,
                }),
                None => {
                    *slot = Some((line, value.to_string()));
                    Ok(())
                }
            };
            match key {
                "version" => once(&mut version, "version")?,
                "mode" => once(&mut mode, "mode")?,
                "max_age" => once(&mut max_age, "max_age")?,
                "mx" => match MxPattern::parse(value) {
                    Some(p) => mx.push(p),
                    None => {
                        return Err(StsPolicyError::BadValue {
                            field: "mx",
                            value: cut(value),
                            expected: "a host name, or *. and a domain",
                            line,
                        });
                    }
                },
                _ if key.is_empty() || key.contains(char::is_whitespace) => {
                    return Err(StsPolicyError::NotKeyValue {
                        line,
                        text: cut(raw),
                    });
                }
                _ => {} // an extension field (RFC 8461 §3.2: ignored)
            }
        }
        let (line, version) = version.ok_or(StsPolicyError::Missing { field: "version" })?;
        if version != "STSv1" {
            return Err(StsPolicyError::BadValue {
                field: "version",
                value: cut(&version),
                expected: "STSv1",
                line,
            });
        }
        let (line, mode_text) = mode.ok_or(StsPolicyError::Missing { field: "mode" })?;
        let mode = match mode_text.as_str() {
            "enforce" => StsMode::Enforce,
            "testing" => StsMode::Testing,
            "none" => StsMode::None,
            _ => {
                return Err(StsPolicyError::BadValue {
                    field: "mode",
                    value: cut(&mode_text),
                    expected: "enforce, testing or none",
                    line,
                });
            }
        };
        let (line, age) = max_age.ok_or(StsPolicyError::Missing { field: "max_age" })?;
        let seconds =
            (!age.is_empty() && age.len() <= 10 && age.bytes().all(|b| b.is_ascii_digit()))
                .then(|| age.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| StsPolicyError::BadValue {
                    field: "max_age",
                    value: cut(&age),
                    expected: "a number of seconds, at most 10 digits",
                    line,
                })?;
        if mx.is_empty() && mode != StsMode::None {
            return Err(StsPolicyError::Missing { field: "mx" });
        }
        Ok(StsPolicy {
            mode,
            max_age: Duration::from_secs(seconds).min(MAX_MAX_AGE),
            mx,
        })
    }

    /// Parses raw octets (what the HTTPS fetch returns).
    pub fn parse_bytes(body: &[u8]) -> Result<StsPolicy, StsPolicyError> {
        StsPolicy::parse(std::str::from_utf8(body).map_err(|_| StsPolicyError::NotText)?)
    }

    /// True when some `mx` pattern matches `host`.
    pub fn allows_mx(&self, host: &Domain) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }

    /// The `mx` patterns as the policy lists them: `mail.example.com, *.example.net`.
    pub fn mx_list(&self) -> String {
        self.mx
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn lf_line_ends_unknown_fields_and_extra_space_are_accepted() {
        let p = StsPolicy::parse(
            "version: STSv1\nmode:testing\nx-future: 1\nmx:  mx.example.com.\nmax_age: 86400\n",
        )
        .unwrap();
        assert_eq!(p.mode, StsMode::Testing);
        assert!(p.allows_mx(&d("MX.example.com")));
        assert_eq!(p.mx_list(), "mx.example.com");
    }

    #[test]
    fn a_wildcard_matches_exactly_one_label() {
        let p = MxPattern::parse("*.example.net").unwrap();
        assert!(p.matches(&d("mx1.example.net")));
        assert!(!p.matches(&d("example.net")));
        assert!(!p.matches(&d("a.b.example.net")));
        assert!(!p.matches(&d("mx1.example.network")));
        assert!(MxPattern::parse("*.com").is_none());
        assert!(MxPattern::parse("mx.*.example").is_none());
    }

    #[test]
    fn every_refusal_names_its_line() {
        let e = StsPolicy::parse("version: STSv1\nmode: strict\nmax_age: 1\nmx: a.example\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: \"strict\" is not a valid mode (enforce, testing or none)"
        );
        let e = StsPolicy::parse("version: STSv1\nmode: none\nmode: enforce\nmax_age: 1\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: mode is given again (first on line 2)"
        );
        let e = StsPolicy::parse("version: STSv1\nmode: enforce\nmax_age: 1\n").unwrap_err();
        assert_eq!(e, StsPolicyError::Missing { field: "mx" });
        let e = StsPolicy::parse("version: STSv2\nmode: none\nmax_age: 1\n").unwrap_err();
        assert!(e.to_string().starts_with("line 1:"), "{e}");
        let e = StsPolicy::parse("version: STSv1\nmode: none\nmax_age: -5\n").unwrap_err();
        assert!(e.to_string().contains("max_age"), "{e}");
        let e = StsPolicy::parse("version STSv1\n").unwrap_err();
        assert!(matches!(e, StsPolicyError::NotKeyValue { line: 1, .. }));
    }

    #[test]
    fn a_none_policy_needs_no_mx_and_max_age_is_capped() {
        let p = StsPolicy::parse("version: STSv1\nmode: none\nmax_age: 9999999999\n").unwrap();
        assert_eq!(p.mode, StsMode::None);
        assert_eq!(p.max_age, MAX_MAX_AGE);
    }

    #[test]
    fn octets_that_are_not_utf8_are_refused() {
        assert_eq!(
            StsPolicy::parse_bytes(b"version: STSv1\xff\n"),
            Err(StsPolicyError::NotText)
        );
    }
}
