//! SMTP replies, RFC 3463 enhanced status codes, and the outcome of one delivery attempt.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Try again later (4xx, 4.x.x, timeouts, a full disk).
    Temporary,
    /// Trying again will not help (5xx, 5.x.x, a malformed address).
    Permanent,
}

/// Why a status or reply string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Not `class.subject.detail` with class 2, 4 or 5 and 1–3 digit numbers.
    #[error("{input:?} is not an enhanced status code (expected e.g. 5.7.0: class 2, 4 or 5)")]
    BadEnhancedStatus {
        /// The text that was refused.
        input: String,
    },
    /// Not a three-digit reply code from 200 to 599.
    #[error("{input:?} is not an SMTP reply code (expected 200-599)")]
    BadReplyCode {
        /// The text that was refused.
        input: String,
    },
    /// The enhanced status class does not agree with the reply code (`550 4.1.1`).
    #[error(
        "reply code {code} and enhanced status {status} disagree on success/temporary/permanent"
    )]
    Mismatch {
        /// The reply code.
        code: u16,
        /// The enhanced status.
        status: EnhancedStatus,
    },
}

/// An RFC 3463 enhanced mail system status code, `class.subject.detail` (`5.1.1`).
///
/// ```
/// use postrider::EnhancedStatus;
/// let s: EnhancedStatus = "4.4.1".parse()?;
/// assert!(s.is_temporary());
/// assert_eq!(s.to_string(), "4.4.1");
/// # Ok::<(), postrider::StatusError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// 2.0.0: delivered.
    pub const OK: EnhancedStatus = EnhancedStatus::new(2, 0, 0);
    /// 4.0.0: unspecified temporary failure.
    pub const TEMPORARY: EnhancedStatus = EnhancedStatus::new(4, 0, 0);
    /// 5.0.0: unspecified permanent failure.
    pub const PERMANENT: EnhancedStatus = EnhancedStatus::new(5, 0, 0);

    /// Builds a status; `class` must be 2, 4 or 5 and the other parts below 1000.
    ///
    /// # Panics
    /// On an out-of-range part: statuses built in code are constants, so this is a programming
    /// error. Text from the network goes through [`EnhancedStatus::parse`].
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
        assert!(
            (class == 2 || class == 4 || class == 5) && subject < 1000 && detail < 1000,
            "invariant: enhanced status parts out of range"
        );
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// Parses `class.subject.detail`.
    pub fn parse(input: &str) -> Result<EnhancedStatus, StatusError> {
        let bad = || StatusError::BadEnhancedStatus {
            input: input.to_string(),
        };
        let mut parts = input.split('.');
        let mut next = |max_digits: usize| -> Result<u16, StatusError> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > max_digits || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let class = next(1)?;
        let subject = next(3)?;
        let detail = next(3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return Err(bad());
        }
        Ok(EnhancedStatus {
            class: class as u8,
            subject,
            detail,
        })
    }

    /// The class: 2 (success), 4 (temporary) or 5 (permanent).
    pub fn class(&self) -> u8 {
        self.class
    }

    /// The subject (the middle number).
    pub fn subject(&self) -> u16 {
        self.subject
    }

    /// The detail (the last number).
    pub fn detail(&self) -> u16 {
        self.detail
    }

    /// True for 2.x.x.
    pub fn is_success(&self) -> bool {
        self.class == 2
    }

    /// True for 4.x.x.
    pub fn is_temporary(&self) -> bool {
        self.class == 4
    }

    /// True for 5.x.x.
    pub fn is_permanent(&self) -> bool {
        self.class == 5
    }

    /// The same subject and detail with another class: `4.4.1` made permanent is `5.4.1`,
    /// which is what a message that expired while deferred reports.
    pub fn with_class(self, class: u8) -> EnhancedStatus {
        EnhancedStatus::new(class, self.subject, self.detail)
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl fmt::Debug for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnhancedStatus({self})")
    }
}

impl FromStr for EnhancedStatus {
    type Err = StatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EnhancedStatus::parse(s)
    }
}

impl Serialize for EnhancedStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EnhancedStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EnhancedStatus::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An SMTP reply: a three-digit code, the enhanced status if the server gave one, and the text.
///
/// A multi-line reply keeps its lines separated by `\n` in `text`, without the code or status
/// prefixes.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ReplyFields")]
pub struct Reply {
    code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<EnhancedStatus>,
    text: String,
}

/// A reply as a spool record stores it, checked by [`Reply::new`] on the way in: a record edited
/// by hand (or damaged) must not yield a reply the rest of the crate assumes cannot exist, such
/// as code 632 or 250 with status 5.1.1.
#[derive(Deserialize)]
struct ReplyFields {
    code: u16,
    #[serde(default)]
    status: Option<EnhancedStatus>,
    text: String,
}

impl TryFrom<ReplyFields> for Reply {
    type Error = StatusError;

    fn try_from(f: ReplyFields) -> Result<Reply, StatusError> {
        Reply::new(f.code, f.status, f.text)
    }
}

impl Reply {
    /// Builds a reply; the code must be 200–599 and agree with the status class if one is given.
    pub fn new(
        code: u16,
        status: Option<EnhancedStatus>,
        text: impl Into<String>,
    ) -> Result<Reply, StatusError> {
        if !(200..600).contains(&code) {
            return Err(StatusError::BadReplyCode {
                input: code.to_string(),
            });
        }
        if let Some(s) = status
            && u16::from(s.class()) != code / 100
        {
            return Err(StatusError::Mismatch { code, status: s });
        }
        Ok(Reply {
            code,
            status,
            text: text.into(),
        })
    }

    /// The three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code the server sent, if any.
    pub fn enhanced(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The enhanced status the server sent, or one derived from the reply code (`X.0.0`).
    /// RFC 3463 has no class 3: an intermediate reply where a final one was due is a protocol
    /// hiccup, so a 3xx without a status reads as 4.0.0 (temporary).
    pub fn status(&self) -> EnhancedStatus {
        self.status.unwrap_or(match self.code / 100 {
            2 => EnhancedStatus::OK,
            5 => EnhancedStatus::PERMANENT,
            _ => EnhancedStatus::TEMPORARY,
        })
    }

    /// The text, lines separated by `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3xx (an intermediate reply such as 354 or 334).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The reply on one line, as log lines and DSN `Diagnostic-Code` fields show it.
    pub fn one_line(&self) -> String {
        let text = self.text.replace('\n', " ");
        match self.status {
            Some(s) => format!("{} {} {}", self.code, s, text),
            None => format!("{} {}", self.code, text),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({})", self.one_line())
    }
}

/// What went wrong in an attempt that did not deliver: the status, the remote reply if there was
/// one, and an explanation an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The enhanced status that classifies the outcome (4.x.x deferred, 5.x.x failed).
    pub status: EnhancedStatus,
    /// The remote server's reply when the outcome came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    /// Words for the log and the DSN, e.g. "Connection timed out with mx.isp.net."
    pub text: String,
}

impl Diagnostic {
    /// A local diagnosis (no remote reply).
    pub fn local(status: EnhancedStatus, text: impl Into<String>) -> Diagnostic {
        Diagnostic {
            status,
            reply: None,
            text: text.into(),
        }
    }

    /// A diagnosis from a remote reply; the text is the reply on one line.
    pub fn remote(reply: Reply) -> Diagnostic {
        Diagnostic {
            status: reply.status(),
            text: reply.one_line(),
            reply: Some(reply),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The result of one attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// The next hop accepted responsibility (2xx after the message data), or the local mailer
    /// stored the message.
    Delivered {
        /// The accepting reply (`250 2.0.0 Ok: queued as ...`).
        reply: Reply,
    },
    /// Not delivered this time; retry later.
    Deferred(Diagnostic),
    /// Not deliverable; the sender gets a DSN.
    Failed(Diagnostic),
}

impl Outcome {
    /// A deferral with a local reason.
    pub fn deferred(status: EnhancedStatus, text: impl Into<String>) -> Outcome {
        Outcome::Deferred(Diagnostic::local(status, text))
    }

    /// A permanent failure with a local reason.
    pub fn failed(status: EnhancedStatus, text: impl Into<String>) -> Outcome {
        Outcome::Failed(Diagnostic::local(status, text))
    }

    /// Classifies a remote reply: 2xx delivered, 4xx deferred, 5xx failed.
    pub fn from_reply(reply: Reply) -> Outcome {
        if reply.is_positive() {
            Outcome::Delivered { reply }
        } else if reply.is_permanent() {
            Outcome::Failed(Diagnostic::remote(reply))
        } else {
            Outcome::Deferred(Diagnostic::remote(reply))
        }
    }

    /// The status this outcome reports (`2.0.0` when the reply carried none).
    pub fn status(&self) -> EnhancedStatus {
        match self {
            Outcome::Delivered { reply } => reply.enhanced().unwrap_or(EnhancedStatus::OK),
            Outcome::Deferred(d) | Outcome::Failed(d) => d.status,
        }
    }

    /// True when the recipient is done with (delivered or failed).
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Deferred(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_regressions_a_stored_reply_is_checked_like_a_new_one() {
        // Found by fuzz/spool_record: a record with code 632 read back as a reply `new` refuses.
        let bad_code: Result<Reply, _> = serde_json::from_str(r#"{"code": 632, "text": ""}"#);
        assert!(bad_code.unwrap_err().to_string().contains("632"));
        let mismatch: Result<Reply, _> =
            serde_json::from_str(r#"{"code": 250, "status": "5.1.1", "text": "no"}"#);
        assert!(mismatch.is_err());
        let good = Reply::new(550, Some(EnhancedStatus::new(5, 1, 1)), "no such user").unwrap();
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), good);
    }

    #[test]
    fn enhanced_status_parses_and_classifies() {
        let s = EnhancedStatus::parse("5.7.0").unwrap();
        assert!(s.is_permanent());
        assert_eq!((s.class(), s.subject(), s.detail()), (5, 7, 0));
        assert_eq!(
            EnhancedStatus::parse("4.4.24").unwrap().to_string(),
            "4.4.24"
        );
        assert!(EnhancedStatus::parse("2.0.0").unwrap().is_success());
    }

    #[test]
    fn malformed_enhanced_status_is_refused() {
        for bad in [
            "", "5", "5.7", "5.7.0.1", "3.0.0", "5.1000.0", "5..1", "x.1.1", "5.1.-1",
        ] {
            assert!(EnhancedStatus::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reply_codes_must_be_in_range_and_agree_with_the_status() {
        assert!(Reply::new(199, None, "x").is_err());
        assert!(Reply::new(600, None, "x").is_err());
        let mismatch = Reply::new(550, Some(EnhancedStatus::new(4, 1, 1)), "x");
        assert!(matches!(mismatch, Err(StatusError::Mismatch { .. })));
        assert!(Reply::new(354, None, "go ahead").unwrap().is_intermediate());
    }

    #[test]
    fn a_reply_without_enhanced_status_derives_one_from_its_code() {
        let r = Reply::new(451, None, "try later").unwrap();
        assert_eq!(r.status().to_string(), "4.0.0");
        assert_eq!(r.one_line(), "451 try later");
    }

    #[test]
    fn an_intermediate_reply_where_a_final_one_was_due_reads_as_temporary() {
        let r = Reply::new(354, None, "go ahead").unwrap();
        assert_eq!(r.status().to_string(), "4.0.0");
        assert!(matches!(Outcome::from_reply(r), Outcome::Deferred(_)));
    }

    #[test]
    fn multi_line_replies_show_on_one_line() {
        let r = Reply::new(
            550,
            Some(EnhancedStatus::new(5, 1, 1)),
            "no such user\nsee docs",
        )
        .unwrap();
        assert_eq!(r.to_string(), "550 5.1.1 no such user see docs");
    }

    #[test]
    fn outcomes_classify_replies_by_code() {
        let ok = Reply::new(250, None, "ok").unwrap();
        assert!(matches!(Outcome::from_reply(ok), Outcome::Delivered { .. }));
        let temp = Reply::new(421, None, "busy").unwrap();
        assert!(matches!(Outcome::from_reply(temp), Outcome::Deferred(_)));
        let perm = Reply::new(554, Some(EnhancedStatus::new(5, 7, 1)), "no").unwrap();
        let o = Outcome::from_reply(perm);
        assert!(o.is_final());
        assert_eq!(o.status().to_string(), "5.7.1");
    }

    #[test]
    fn with_class_keeps_subject_and_detail() {
        assert_eq!(
            EnhancedStatus::new(4, 4, 1).with_class(5).to_string(),
            "5.4.1"
        );
    }
}
