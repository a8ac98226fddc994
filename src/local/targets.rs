//! The right-hand side of an alias, an `:include:` file and a `~/.forward` file: a comma-separated
//! list of targets, parsed once into [`AliasTarget`]s.
//!
//! ```text
//! bob, \carol, jane@example.net, /var/log/mail-copy, "|/usr/bin/vacation bob", :include:/etc/mail/staff
//! ```
//!
//! A target is a local name (aliases apply to it again), `\name` (that user's mailbox, no more
//! aliasing), an address (queued anew and routed like any recipient), an absolute path (the
//! file is appended to in mbox format), `|command` (run with the message on its standard input)
//! or `:include:/path` (more targets, read when mail is delivered). Double quotes protect commas
//! and spaces: `"|/usr/bin/procmail -a x"`, `"/var/mail/with space"`, `"john doe"@example.com`.

use std::fmt;
use std::path::PathBuf;

use crate::address::{Address, AddressError, MAX_LOCAL_PART};

/// One target as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AliasTarget {
    /// A local name; aliases apply to it again.
    Local(String),
    /// `\name`: the mailbox of local user `name`, without further aliasing or `.forward`.
    Mailbox(String),
    /// An address: queued anew from the same sender and routed like any recipient.
    Remote(Address),
    /// An absolute path: the file is appended to in mbox format.
    File(PathBuf),
    /// `|command`: run by `/bin/sh -c` with the message on its standard input.
    Pipe(String),
    /// `:include:/path`: targets read from that file when mail is delivered.
    Include(PathBuf),
}

impl fmt::Display for AliasTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasTarget::Local(n) => f.write_str(n),
            AliasTarget::Mailbox(n) => write!(f, "\\{n}"),
            AliasTarget::Remote(a) => write!(f, "{a}"),
            AliasTarget::File(p) => write!(f, "{}", p.display()),
            AliasTarget::Pipe(c) => write!(f, "\"|{c}\""),
            AliasTarget::Include(p) => write!(f, ":include:{}", p.display()),
        }
    }
}

/// Why a target list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetProblem {
    /// Nothing after the colon, or an empty element between commas.
    #[error("empty target (targets are separated by single commas)")]
    Empty,
    /// A `"` without its closing partner.
    #[error("unclosed quote in {text:?}")]
    UnclosedQuote {
        /// The text from the opening quote on.
        text: String,
    },
    /// A target that is not an address, name, path, command or include.
    #[error(
        "{target:?} is not a target: {reason} (expected a user, user@domain, /file, \"|command\" or :include:/file)"
    )]
    Bad {
        /// The target as written.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// An address that does not parse.
    #[error("bad address {target:?}: {source}")]
    Address {
        /// The target as written.
        target: String,
        /// Why the address was refused.
        source: AddressError,
    },
    /// A relative path after `:include:`.
    #[error(":include: needs an absolute path, not {path:?}")]
    RelativeInclude {
        /// The path as written.
        path: String,
    },
    /// A command after `|` that is empty.
    #[error("empty command after '|'")]
    EmptyCommand,
}

/// Splits `text` at commas outside double quotes, trimming each piece.
fn split_list(text: &str) -> Result<Vec<&str>, TargetProblem> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut quote_at = 0;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                quote_at = i;
            }
            ',' if !quoted => {
                pieces.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(TargetProblem::UnclosedQuote {
            text: text[quote_at..].to_string(),
        });
    }
    pieces.push(text[start..].trim());
    Ok(pieces)
}

/// Parses a comma-separated list of targets (at least one).
///
/// ```
/// use postrider::local::{parse_targets, AliasTarget};
/// let t = parse_targets(r#"bob, \carol, "|/usr/bin/vacation bob", jane@example.net"#)?;
/// assert_eq!(t[0], AliasTarget::Local("bob".into()));
/// assert_eq!(t[1], AliasTarget::Mailbox("carol".into()));
/// assert_eq!(t[2], AliasTarget::Pipe("/usr/bin/vacation bob".into()));
/// assert_eq!(t[3].to_string(), "jane@example.net");
/// # Ok::<(), postrider::local::TargetProblem>(())
/// ```
pub fn parse_targets(text: &str) -> Result<Vec<AliasTarget>, TargetProblem> {
    let pieces = split_list(text)?;
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        out.push(parse_target(piece)?);
    }
    Ok(out)
}

/// Parses a list where empty elements are skipped (include and `.forward` files, whose lines
/// may end in a comma or hold nothing).
pub(crate) fn parse_targets_lenient(text: &str) -> Result<Vec<AliasTarget>, TargetProblem> {
    let pieces = split_list(text)?;
    pieces
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(parse_target)
        .collect()
}

/// Removes one level of double quotes and the backslash escapes inside them.
fn unquote(s: &str) -> String {
    let inner = &s[1..s.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_target(piece: &str) -> Result<AliasTarget, TargetProblem> {
    if piece.is_empty() {
        return Err(TargetProblem::Empty);
    }
    let bad = |reason: &str| TargetProblem::Bad {
        target: piece.to_string(),
        reason: reason.to_string(),
    };
    // A quoted string: a quoted local part when `@domain` follows, else the text it holds.
    if let Some(rest) = piece.strip_prefix('"') {
        let close = closing_quote(rest).ok_or_else(|| TargetProblem::UnclosedQuote {
            text: piece.to_string(),
        })?;
        let after = &rest[close + 1..];
        if after.is_empty() {
            let inner = unquote(&piece[..close + 2]);
            let inner = inner.trim();
            if inner.starts_with('|') || inner.starts_with('/') || inner.starts_with(":include:") {
                return classify(inner, piece);
            }
            if inner.contains('@') {
                return classify(inner, piece);
            }
            // "john doe" alone: a local name with a space, which no system user has.
            return Err(bad("a quoted name needs @domain after it"));
        }
        if after.starts_with('@') {
            return Address::parse(piece)
                .map(AliasTarget::Remote)
                .map_err(|source| TargetProblem::Address {
                    target: piece.to_string(),
                    source,
                });
        }
        return Err(bad("text after the closing quote"));
    }
    classify(piece, piece)
}

fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some(i);
        }
    }
    None
}

/// Classifies unquoted target text (`written` is the original, for messages).
fn classify(text: &str, written: &str) -> Result<AliasTarget, TargetProblem> {
    let bad = |reason: &str| TargetProblem::Bad {
        target: written.to_string(),
        reason: reason.to_string(),
    };
    if let Some(cmd) = text.strip_prefix('|') {
        let cmd = cmd.trim();
        if cmd.is_empty() {
            return Err(TargetProblem::EmptyCommand);
        }
        return Ok(AliasTarget::Pipe(cmd.to_string()));
    }
    if let Some(path) = text.strip_prefix(":include:") {
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(TargetProblem::RelativeInclude {
                path: path.to_string(),
            });
        }
        return Ok(AliasTarget::Include(PathBuf::from(path)));
    }
    if text.starts_with('/') {
        if text.contains('\0') {
            return Err(bad("a path cannot hold a NUL"));
        }
        return Ok(AliasTarget::File(PathBuf::from(text)));
    }
    if text.contains(char::is_whitespace) {
        return Err(bad(
            "unexpected space (separate targets with commas; quote commands and paths)",
        ));
    }
    if let Some(name) = text.strip_prefix('\\') {
        check_name(name).map_err(&bad)?;
        return Ok(AliasTarget::Mailbox(name.to_string()));
    }
    if text.contains('@') {
        return Address::parse(text)
            .map(AliasTarget::Remote)
            .map_err(|source| TargetProblem::Address {
                target: written.to_string(),
                source,
            });
    }
    check_name(text).map_err(bad)?;
    Ok(AliasTarget::Local(text.to_string()))
}

/// A local name: what may stand before `@` unquoted (RFC 5321 atext and dots), at most 64
/// octets. User names from a password database fit; anything else cannot name a mailbox.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_LOCAL_PART {
        return Err("a local name is at most 64 octets");
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if !name
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(atext))
    {
        return Err("a local name has letters, digits, '.', and !#$%&'*+-/=?^_`{|}~ only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> AliasTarget {
        let mut v = parse_targets(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v.remove(0)
    }

    #[test]
    fn every_kind_of_target_is_recognised() {
        assert_eq!(one("bob"), AliasTarget::Local("bob".into()));
        assert_eq!(one("\\bob"), AliasTarget::Mailbox("bob".into()));
        assert_eq!(
            one("/var/log/copy"),
            AliasTarget::File("/var/log/copy".into())
        );
        assert_eq!(
            one("|/usr/bin/true"),
            AliasTarget::Pipe("/usr/bin/true".into())
        );
        assert_eq!(
            one(":include:/etc/mail/staff"),
            AliasTarget::Include("/etc/mail/staff".into())
        );
        assert_eq!(
            one(":include: /etc/mail/staff"),
            AliasTarget::Include("/etc/mail/staff".into())
        );
        assert_eq!(one("Jane@Example.NET").to_string(), "Jane@example.net");
    }

    #[test]
    fn quotes_protect_commas_and_spaces() {
        let t = parse_targets(r#""|/bin/echo a, b", "/tmp/with space", "john doe"@example.com"#)
            .unwrap();
        assert_eq!(
            t,
            vec![
                AliasTarget::Pipe("/bin/echo a, b".into()),
                AliasTarget::File("/tmp/with space".into()),
                AliasTarget::Remote(Address::parse("\"john doe\"@example.com").unwrap()),
            ]
        );
        assert_eq!(
            one(r#""|/bin/echo \"hi\"""#),
            AliasTarget::Pipe("/bin/echo \"hi\"".into())
        );
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        let err = |s: &str| parse_targets(s).unwrap_err().to_string();
        assert_eq!(
            err("bob,,carol"),
            "empty target (targets are separated by single commas)"
        );
        assert!(
            err("bob carol").contains("unexpected space"),
            "{}",
            err("bob carol")
        );
        assert!(err("\"|open").starts_with("unclosed quote"));
        assert!(err("bad@@x").starts_with("bad address \"bad@@x\""));
        assert!(err(":include:staff").contains("absolute path"));
        assert_eq!(err("|"), "empty command after '|'");
        assert!(err("\"just words\"").contains("needs @domain"));
        assert!(err("bo(b").contains("is not a target"));
    }

    #[test]
    fn lenient_lists_skip_empty_elements() {
        let t = parse_targets_lenient("bob, ,carol,").unwrap();
        assert_eq!(t.len(), 2);
    }
}
