//! Why a mailertable or local-host-names file was refused: every bad line, each naming the file,
//! the line and the offending text, so one run of `sendmail -bv` shows everything to fix.

use std::fmt;

use crate::address::AddressError;
use crate::status::Severity;

use super::table_file::{Origin, ReadError, one_per_line};
use super::value::ValueError;

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// The key is not a domain, `.domain` or `.`.
    #[error("bad key {key:?}: {reason}")]
    BadKey {
        /// The key as written.
        key: String,
        /// What is wrong with it.
        reason: KeyProblem,
    },
    /// A key with nothing after it.
    #[error("key {key:?} has no value (expected e.g. {key} esmtp:[mail.example.com])")]
    NoValue {
        /// The key as written.
        key: String,
    },
    /// The value is malformed.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A local-host-names entry that is not a host name.
    #[error("bad host name {name:?}: {reason}")]
    BadLocalName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        reason: AddressError,
    },
    /// A virtusertable line that does not parse.
    #[error(transparent)]
    Virtusertable(#[from] crate::local::VirtuserProblem),
}

/// Why a mailertable key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// Not a valid domain.
    #[error(transparent)]
    Domain(#[from] AddressError),
    /// `[192.0.2.1]`.
    #[error("address literals are not routed (postrider refuses recipients like user@[192.0.2.1])")]
    AddressLiteral,
    /// `*.example.com`.
    #[error("wildcards are not supported; .example.com matches every host below example.com")]
    Wildcard,
    /// `user@example.com` (a virtusertable key, not a mailertable one).
    #[error("keys are domains, not addresses")]
    Address,
}

/// One bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The file (or name of the text).
    pub file: Origin,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: LineProblem,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.problem)
    }
}

impl std::error::Error for LineError {}

/// A mailertable or local-host-names file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Lines with errors; one message per line, in file order.
    #[error("{}", one_per_line(errors))]
    Invalid {
        /// Every bad line (at least one).
        errors: Vec<LineError>,
    },
}

impl LoadError {
    /// Permanent for a bad table (an administrator must fix it); a read error decides for
    /// itself.
    pub fn severity(&self) -> Severity {
        match self {
            LoadError::Read(e) => e.severity(),
            LoadError::Invalid { .. } => Severity::Permanent,
        }
    }

    /// The bad lines (empty for a read error).
    pub fn line_errors(&self) -> &[LineError] {
        match self {
            LoadError::Read(_) => &[],
            LoadError::Invalid { errors } => errors,
        }
    }
}
