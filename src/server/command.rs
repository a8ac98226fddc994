//! The SMTP commands a client sends, parsed once into types (RFC 5321 §4.1 with the ESMTP
//! parameters of RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 3461 DSN, RFC 3030
//! CHUNKING, RFC 4954 AUTH and RFC 8689 REQUIRETLS).
//!
//! Pure: a line (without its CRLF) in, a [`Command`] or a [`CommandError`] out, so it is tested
//! and fuzzed without a socket. Whether a command is allowed *now* (sequence, TLS, AUTH) is the
//! session's business, not the parser's.
//!
//! ```
//! use postrider::server::command::{Command, parse_command};
//! let cmd = parse_command(b"MAIL FROM:<pbx@example.com> SIZE=1024 RET=HDRS ENVID=QID+2B1")?;
//! let Command::Mail { from, params } = cmd else { panic!("not MAIL") };
//! assert_eq!(from.to_string(), "<pbx@example.com>");
//! assert_eq!(params.size, Some(1024));
//! assert_eq!(params.envid.as_deref(), Some("QID+1"));
//! assert_eq!(
//!     parse_command(b"RCPT TO:<a@b.example> FOO=1").unwrap_err().reply().one_line(),
//!     "555 5.5.4 RCPT parameter FOO is not supported"
//! );
//! # Ok::<(), postrider::server::command::CommandError>(())
//! ```

use std::fmt;

use crate::address::{Address, AddressError, ReversePath};
use crate::envelope::{Notify, OriginalRecipient, Ret, xtext_decode};
use crate::status::{EnhancedStatus, Reply};

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name`.
    Ehlo(String),
    /// `HELO name`.
    Helo(String),
    /// `MAIL FROM:<path> params`.
    Mail {
        /// The reverse path (`<>` or a mailbox).
        from: ReversePath,
        /// Its ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> params`.
    Rcpt {
        /// The forward path.
        to: ForwardPath,
        /// Its ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets of the chunk that follows the command line.
        size: u64,
        /// True for the last chunk of the message.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy(String),
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism.
        mechanism: Mechanism,
        /// The base64 initial response as sent (`=` is an empty one); decoded by the session.
        initial: Option<String>,
    },
}

impl Command {
    /// The command's verb as the client would write it (for logs and replies).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy(_) => "VRFY",
            Command::Help(_) => "HELP",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
        }
    }
}

/// A SASL mechanism named by `AUTH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616).
    Plain,
    /// `LOGIN` (the de-facto standard draft).
    Login,
    /// Anything else, upper-cased.
    Other(String),
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::Plain => f.write_str("PLAIN"),
            Mechanism::Login => f.write_str("LOGIN"),
            Mechanism::Other(m) => f.write_str(m),
        }
    }
}

/// RCPT's path: a mailbox, or the bare `<postmaster>` every server must accept (RFC 5321
/// §4.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<postmaster>` without a domain.
    Postmaster,
    /// A mailbox. A source route (`<@a,@b:user@c>`) was dropped, as RFC 5321 §4.1.1.3 allows.
    Mailbox(Address),
}

/// What `BODY=` declares (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyParam {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME` (needs BDAT; not offered by this server).
    BinaryMime,
}

/// MAIL's ESMTP parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=`: the size the client announces.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<BodyParam>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`, decoded from xtext.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954 §5), decoded from xtext; `None` also for `AUTH=<>`.
    pub auth: Option<String>,
    /// `REQUIRETLS` (RFC 8689): the message must travel only over authenticated TLS.
    /// Whether the session may take it (it must be inside TLS) is the session's business.
    pub requiretls: bool,
}

/// RCPT's ESMTP parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=`, decoded.
    pub orcpt: Option<OriginalRecipient>,
}

/// Why a command line was refused. Each maps to the reply the client gets ([`CommandError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a command this server knows: 500 5.5.2.
    #[error("command {verb:?} not recognized")]
    Unknown {
        /// The first word of the line (shortened).
        verb: String,
    },
    /// The line is not UTF-8: 500 5.5.2.
    #[error("the command line is not valid UTF-8")]
    NotUtf8,
    /// The arguments do not fit the command: 501 5.5.4.
    #[error("syntax: {usage}")]
    Syntax {
        /// The command's usage, e.g. `MAIL FROM:<address> [parameters]`.
        usage: &'static str,
    },
    /// A parameter this server does not support: 555 5.5.4.
    #[error("{verb} parameter {key} is not supported")]
    UnknownParameter {
        /// MAIL or RCPT.
        verb: &'static str,
        /// The parameter name, upper-cased.
        key: String,
    },
    /// A parameter given twice or with a bad value: 501 5.5.4.
    #[error("bad {key} parameter: {reason}")]
    BadParameter {
        /// The parameter name.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The sender address does not parse: 553 5.1.7.
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The recipient address does not parse: 553 5.1.3.
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
}

impl CommandError {
    /// The reply the client gets.
    pub fn reply(&self) -> Reply {
        let (code, status) = match self {
            CommandError::Unknown { .. } | CommandError::NotUtf8 => (500, (5, 5, 2)),
            CommandError::Syntax { .. } | CommandError::BadParameter { .. } => (501, (5, 5, 4)),
            CommandError::UnknownParameter { .. } => (555, (5, 5, 4)),
            CommandError::BadSender(_) => (553, (5, 1, 7)),
            CommandError::BadRecipient(_) => (553, (5, 1, 3)),
        };
        let text = match self {
            CommandError::Syntax { usage } => format!("Syntax: {usage}"),
            other => sanitize(&other.to_string()),
        };
        Reply::new(
            code,
            Some(EnhancedStatus::new(status.0, status.1, status.2)),
            text,
        )
        .expect("invariant: the code and status classes above agree")
    }
}

/// The longest value of a client's string echoed back in a reply.
const ECHO: usize = 64;

/// Keeps client-supplied text from breaking a reply line: controls go, and it is shortened.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(4 * ECHO)
        .collect()
}

fn shorten(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(ECHO).collect()
}

/// Parses one command line (without the CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::NotUtf8)?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_matches(' ')),
        None => (line.trim_end_matches(' '), ""),
    };
    let upper = verb.to_ascii_uppercase();
    let no_args = |cmd: Command, usage| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax { usage })
        }
    };
    match upper.as_str() {
        "EHLO" | "HELO" => {
            // Only the first word counts: some clients add junk after the name.
            let name = rest.split(' ').next().unwrap_or("");
            if name.is_empty() {
                return Err(CommandError::Syntax {
                    usage: if upper == "EHLO" {
                        "EHLO hostname"
                    } else {
                        "HELO hostname"
                    },
                });
            }
            let name = name.to_string();
            Ok(if upper == "EHLO" {
                Command::Ehlo(name)
            } else {
                Command::Helo(name)
            })
        }
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_args(Command::Data, "DATA"),
        "BDAT" => parse_bdat(rest),
        "RSET" => no_args(Command::Rset, "RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "VRFY" if rest.is_empty() => Err(CommandError::Syntax {
            usage: "VRFY address",
        }),
        "VRFY" => Ok(Command::Vrfy(rest.to_string())),
        "HELP" => Ok(Command::Help((!rest.is_empty()).then(|| rest.to_string()))),
        "AUTH" => parse_auth(rest),
        _ => Err(CommandError::Unknown {
            verb: shorten(verb),
        }),
    }
}

const MAIL_USAGE: &str = "MAIL FROM:<address> [parameters]";
const RCPT_USAGE: &str = "RCPT TO:<address> [parameters]";

fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    let (path, params) =
        path_argument(rest, "FROM:").ok_or(CommandError::Syntax { usage: MAIL_USAGE })?;
    let from = ReversePath::parse(strip_source_route(path)).map_err(CommandError::BadSender)?;
    let mut p = MailParams::default();
    let mut seen = Seen::default();
    for (key, value) in parameters(params)? {
        match key.as_str() {
            "SIZE" => {
                seen.once("SIZE")?;
                let v = value.ok_or_else(|| bad("SIZE", "it needs a value"))?;
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("SIZE", "it must be a number of octets"));
                }
                p.size = Some(
                    v.parse()
                        .map_err(|_| bad("SIZE", "the number is too large"))?,
                );
            }
            "BODY" => {
                seen.once("BODY")?;
                let v = value.ok_or_else(|| bad("BODY", "it needs a value"))?;
                p.body = Some(match v.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyParam::SevenBit,
                    "8BITMIME" => BodyParam::EightBitMime,
                    "BINARYMIME" => BodyParam::BinaryMime,
                    _ => return Err(bad("BODY", "use 7BIT or 8BITMIME")),
                });
            }
            "SMTPUTF8" => {
                seen.once("SMTPUTF8")?;
                if value.is_some() {
                    return Err(bad("SMTPUTF8", "it takes no value"));
                }
                p.smtputf8 = true;
            }
            "RET" => {
                seen.once("RET")?;
                let v = value.ok_or_else(|| bad("RET", "it needs a value"))?;
                p.ret = Some(
                    v.parse()
                        .map_err(|e: crate::EnvelopeError| bad("RET", &e.to_string()))?,
                );
            }
            "ENVID" => {
                seen.once("ENVID")?;
                let v = value.ok_or_else(|| bad("ENVID", "it needs a value"))?;
                let decoded = xtext_decode(v).map_err(|e| bad("ENVID", &e.to_string()))?;
                // The checks of Envelope::set_envid, made here so the client hears them at MAIL.
                let mut probe = crate::Envelope::new(ReversePath::Null, Vec::<Address>::new());
                probe
                    .set_envid(&decoded)
                    .map_err(|e| bad("ENVID", &e.to_string()))?;
                p.envid = Some(decoded);
            }
            "REQUIRETLS" => {
                seen.once("REQUIRETLS")?;
                // RFC 8689 §2: the MAIL FROM parameter REQUIRETLS has no value.
                if value.is_some() {
                    return Err(bad("REQUIRETLS", "it takes no value"));
                }
                p.requiretls = true;
            }
            "AUTH" => {
                seen.once("AUTH")?;
                let v = value.ok_or_else(|| bad("AUTH", "it needs a value"))?;
                if v != "<>" {
                    p.auth = Some(xtext_decode(v).map_err(|e| bad("AUTH", &e.to_string()))?);
                }
            }
            _ => {
                return Err(CommandError::UnknownParameter {
                    verb: "MAIL",
                    key: shorten(&key),
                });
            }
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let (path, params) =
        path_argument(rest, "TO:").ok_or(CommandError::Syntax { usage: RCPT_USAGE })?;
    let path = strip_source_route(path);
    let to = if path.eq_ignore_ascii_case("postmaster") {
        ForwardPath::Postmaster
    } else if path.is_empty() {
        return Err(CommandError::Syntax { usage: RCPT_USAGE });
    } else {
        ForwardPath::Mailbox(Address::parse(path).map_err(CommandError::BadRecipient)?)
    };
    let mut p = RcptParams::default();
    let mut seen = Seen::default();
    for (key, value) in parameters(params)? {
        match key.as_str() {
            "NOTIFY" => {
                seen.once("NOTIFY")?;
                let v = value.ok_or_else(|| bad("NOTIFY", "it needs a value"))?;
                p.notify = Some(
                    v.parse()
                        .map_err(|e: crate::EnvelopeError| bad("NOTIFY", &e.to_string()))?,
                );
            }
            "ORCPT" => {
                seen.once("ORCPT")?;
                let v = value.ok_or_else(|| bad("ORCPT", "it needs a value"))?;
                p.orcpt = Some(
                    OriginalRecipient::parse_xtext(v).map_err(|e| bad("ORCPT", &e.to_string()))?,
                );
            }
            _ => {
                return Err(CommandError::UnknownParameter {
                    verb: "RCPT",
                    key: shorten(&key),
                });
            }
        }
    }
    Ok(Command::Rcpt { to, params: p })
}

fn parse_bdat(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "BDAT size [LAST]";
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(CommandError::Syntax { usage: USAGE })?;
    if size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Syntax { usage: USAGE });
    }
    let size = size
        .parse()
        .map_err(|_| CommandError::Syntax { usage: USAGE })?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax { usage: USAGE }),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax { usage: USAGE });
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "AUTH mechanism [initial-response]";
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or(CommandError::Syntax { usage: USAGE })?;
    let initial = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(CommandError::Syntax { usage: USAGE });
    }
    let mechanism = match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => Mechanism::Plain,
        "LOGIN" => Mechanism::Login,
        other => Mechanism::Other(shorten(other)),
    };
    Ok(Command::Auth { mechanism, initial })
}

/// `FROM:<a@b> SIZE=10` (with `keyword` `FROM:`) → `("a@b", "SIZE=10")`. Angle brackets are
/// required (RFC 5321 §4.1.2); a space after the colon is tolerated, as by most servers. A `>`
/// inside a quoted local part does not close the path.
fn path_argument<'a>(arg: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start_matches(' ');
    let inner = rest.strip_prefix('<')?;
    let close = closing_bracket(inner)?;
    let after = &inner[close + 1..];
    // Parameters are separated from the path by a space.
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    Some((&inner[..close], after.trim_matches(' ')))
}

fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            b'<' if !quoted => return None,
            _ => {}
        }
    }
    None
}

/// `@a,@b:user@c` → `user@c`: RFC 5321 §4.1.1.3 lets a server ignore a source route. The
/// route's hosts are never used, so a source route cannot steer mail anywhere.
fn strip_source_route(path: &str) -> &str {
    if path.starts_with('@')
        && let Some(colon) = path.find(':')
    {
        return &path[colon + 1..];
    }
    path
}

/// `KEY=VALUE KEY2` → `[("KEY", Some("VALUE")), ("KEY2", None)]`, keys upper-cased.
fn parameters(s: &str) -> Result<Vec<(String, Option<&str>)>, CommandError> {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let (k, v) = match w.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (w, None),
            };
            // RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
            if k.is_empty()
                || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || k.starts_with('-')
            {
                return Err(CommandError::Syntax {
                    usage: "parameters are KEYWORD or KEYWORD=value",
                });
            }
            Ok((k.to_ascii_uppercase(), v))
        })
        .collect()
}

fn bad(key: &'static str, reason: &str) -> CommandError {
    CommandError::BadParameter {
        key,
        reason: reason.to_string(),
    }
}

#[derive(Default)]
struct Seen(Vec<&'static str>);

impl Seen {
    fn once(&mut self, key: &'static str) -> Result<(), CommandError> {
        if self.0.contains(&key) {
            return Err(bad(key, "it is given twice"));
        }
        self.0.push(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
