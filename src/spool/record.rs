//! The spool record (the `qf` file): the envelope and delivery state of one message as
//! versioned, pretty-printed JSON, so an administrator can read it as people read sendmail's
//! `qf` files.
//!
//! ```text
//! {
//!   "version": 1,
//!   "id": "0PC4F8X1RZ3A7KQ2",
//!   "envelope": { "sender": "pbx@example.com", "recipients": [ ... ], ... },
//!   "state": { "arrival": "2026-11-22T04:25:00.000000Z", "size": 4096, ... }
//! }
//! ```
//!
//! Both functions are pure (no I/O) and total: [`parse`] returns an error for any input it
//! cannot read, and never panics.

use serde::{Deserialize, Serialize};

use super::MessageState;
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::status::Severity;

/// The record version this release writes and reads.
pub const RECORD_VERSION: u64 = 1;

/// How much of an offending value an error quotes.
const QUOTE_LIMIT: usize = 40;

/// One message's envelope and delivery state, as stored beside its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    /// The message's id (also the file name; a record whose id differs is refused by the spool).
    pub id: QueueId,
    /// The envelope, which never changes.
    pub envelope: Envelope,
    /// The delivery state, which the engine rewrites after every attempt.
    pub state: MessageState,
}

/// Why a record could not be read. Every variant is permanent: rereading the same bytes gives
/// the same answer, so the spool quarantines such a record instead of retrying it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Zero bytes: typically a file that was created but never written.
    #[error("the record is empty")]
    Empty,
    /// The bytes are not UTF-8, so they are not JSON.
    #[error("the record is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The text is not well-formed JSON (a truncated or overwritten file).
    #[error("the record is not valid JSON at line {line}, column {column}: {detail}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON parser said.
        detail: String,
    },
    /// Well-formed JSON, but not an object with a `"version"` field.
    #[error("the record has no \"version\" field (is it a postrider spool record?)")]
    MissingVersion,
    /// A version this release does not know, e.g. written by a newer postrider.
    #[error(
        "record version {found} is not supported: this postrider reads version {RECORD_VERSION} \
         (was the spool written by a newer release?)"
    )]
    UnsupportedVersion {
        /// The version value as written (quoted JSON, truncated).
        found: String,
    },
    /// A version-1 record with a missing, extra-typed or invalid field (a bad address, a
    /// malformed date, ...).
    #[error("the record is invalid at line {line}, column {column}: {detail}")]
    Invalid {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Which field and what is wrong with it.
        detail: String,
    },
    /// The fields parse but contradict each other.
    #[error("the record is inconsistent: {0}")]
    Inconsistent(String),
}

impl RecordError {
    /// Always permanent: the same bytes give the same error however often they are read.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

/// The on-disk shape of version 1, borrowed for writing.
#[derive(Serialize)]
struct RecordOut<'a> {
    version: u64,
    id: &'a QueueId,
    envelope: &'a Envelope,
    state: &'a MessageState,
}

/// The on-disk shape of version 1, owned for reading. Unknown fields are refused, so a typo an
/// administrator made while editing a record is reported instead of silently dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    version: u64,
    id: QueueId,
    envelope: Envelope,
    state: MessageState,
}

/// Renders a record as pretty JSON ending in a newline.
pub fn render(record: &SpoolRecord) -> Vec<u8> {
    let out = RecordOut {
        version: RECORD_VERSION,
        id: &record.id,
        envelope: &record.envelope,
        state: &record.state,
    };
    let mut bytes = serde_json::to_vec_pretty(&out)
        .expect("invariant: records serialize (string keys, no fallible Serialize impls)");
    bytes.push(b'\n');
    bytes
}

/// Parses a record, saying precisely what is wrong when it cannot.
pub fn parse(bytes: &[u8]) -> Result<SpoolRecord, RecordError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(RecordError::Empty);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| RecordError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    match serde_json::from_str::<RecordIn>(text) {
        Ok(r) if r.version == RECORD_VERSION => check(r),
        Ok(r) => Err(RecordError::UnsupportedVersion {
            found: r.version.to_string(),
        }),
        Err(e) => Err(explain(text, e)),
    }
}

fn check(r: RecordIn) -> Result<SpoolRecord, RecordError> {
    let (want, have) = (r.envelope.recipients.len(), r.state.recipients.len());
    if want != have {
        return Err(RecordError::Inconsistent(format!(
            "the envelope has {want} recipients but the state has {have}"
        )));
    }
    Ok(SpoolRecord {
        id: r.id,
        envelope: r.envelope,
        state: r.state,
    })
}

/// Turns a failed full parse into the most useful error: a version we do not know matters
/// more than the fields that version happens to have.
fn explain(text: &str, full: serde_json::Error) -> RecordError {
    use serde_json::error::Category;
    if matches!(
        full.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return RecordError::Syntax {
            line: full.line(),
            column: full.column(),
            detail: full.to_string(),
        };
    }
    // Read only as far as the version, to tell "newer format" from "damaged".
    let probe = serde_json::from_str::<serde_json::Value>(text);
    match probe.as_ref().ok().and_then(|v| v.get("version")) {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(RECORD_VERSION) => {
            RecordError::Invalid {
                line: full.line(),
                column: full.column(),
                detail: full.to_string(),
            }
        }
        Some(v) => RecordError::UnsupportedVersion {
            found: quote(&v.to_string()),
        },
        None => RecordError::MissingVersion,
    }
}

fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_LIMIT {
        s.to_string()
    } else {
        let mut q: String = s.chars().take(QUOTE_LIMIT).collect();
        q.push('…');
        q
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::address::{Address, ReversePath};
    use crate::envelope::{Notify, OriginalRecipient};
    use crate::spool::RecipientStatus;
    use crate::status::{Diagnostic, EnhancedStatus};

    fn record() -> SpoolRecord {
        let mut envelope = Envelope::new(
            ReversePath::parse("pbx@example.com").unwrap(),
            [
                Address::parse("alice@example.org").unwrap(),
                Address::parse("bob@example.net").unwrap(),
            ],
        );
        envelope.recipients[0].notify = Some(Notify::NEVER);
        envelope.recipients[1].orcpt = Some(OriginalRecipient::rfc822(
            &Address::parse("bob@example.net").unwrap(),
        ));
        envelope.set_envid("voicemail-17").unwrap();
        let arrival = UNIX_EPOCH + Duration::from_secs(1_795_321_500);
        let mut state = MessageState::new(&envelope, 4096, arrival);
        state.recipients[1].status = RecipientStatus::Delivered;
        state.recipients[0].attempts = 2;
        state.recipients[0].last_attempt = Some(arrival + Duration::from_secs(300));
        state.recipients[0].last = Some(Diagnostic::local(
            EnhancedStatus::new(4, 4, 1),
            "Connection timed out with mx.example.org.",
        ));
        SpoolRecord {
            id: QueueId::parse("0PC4F8X1RZ3A7KQ2").unwrap(),
            envelope,
            state,
        }
    }

    fn text(r: &SpoolRecord) -> String {
        String::from_utf8(render(r)).unwrap()
    }

    #[test]
    fn a_record_round_trips_through_render_and_parse() {
        let r = record();
        assert_eq!(parse(&render(&r)).unwrap(), r);
    }

    #[test]
    fn the_rendered_record_is_pretty_json_an_administrator_can_read() {
        let t = text(&record());
        assert!(t.starts_with("{\n  \"version\": 1,\n  \"id\": \"0PC4F8X1RZ3A7KQ2\",\n"));
        assert!(t.contains("\"alice@example.org\""));
        assert!(t.contains("\"arrival\": \"2026-11-22T04:25:00.000000Z\""));
        assert!(t.contains("Connection timed out with mx.example.org."));
        assert!(t.ends_with("}\n"));
    }

    #[test]
    fn an_empty_record_says_it_is_empty() {
        assert_eq!(parse(b""), Err(RecordError::Empty));
        assert_eq!(parse(b" \n"), Err(RecordError::Empty));
    }

    #[test]
    fn a_truncated_record_is_a_syntax_error_with_its_position() {
        let full = render(&record());
        let cut = &full[..full.len() / 2];
        match parse(cut) {
            Err(RecordError::Syntax { line, .. }) => assert!(line > 1),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn binary_garbage_is_not_utf8() {
        assert_eq!(
            parse(b"{\"version\": \xff}"),
            Err(RecordError::NotUtf8 { offset: 12 })
        );
    }

    #[test]
    fn a_future_version_is_reported_as_unsupported_not_as_damage() {
        let t = text(&record()).replace("\"version\": 1", "\"version\": 2");
        assert_eq!(
            parse(t.as_bytes()),
            Err(RecordError::UnsupportedVersion { found: "2".into() })
        );
        // A newer format may have different fields; the version still decides the message.
        let t = r#"{"version": 7, "queue": {"anything": true}}"#;
        let err = parse(t.as_bytes()).unwrap_err();
        assert_eq!(err, RecordError::UnsupportedVersion { found: "7".into() });
        assert!(err.to_string().contains("newer release"));
        let t = r#"{"version": "one"}"#;
        assert_eq!(
            parse(t.as_bytes()),
            Err(RecordError::UnsupportedVersion {
                found: "\"one\"".into()
            })
        );
    }

    #[test]
    fn json_without_a_version_is_not_a_record() {
        assert_eq!(parse(b"[1, 2, 3]"), Err(RecordError::MissingVersion));
        assert_eq!(
            parse(br#"{"id": "0PC4F8X1RZ3A7KQ2"}"#),
            Err(RecordError::MissingVersion)
        );
    }

    #[test]
    fn a_bad_field_is_named_with_its_line() {
        let t = text(&record()).replace("alice@example.org", "alice@@example.org");
        match parse(t.as_bytes()) {
            Err(RecordError::Invalid { line, detail, .. }) => {
                assert!(line > 3, "line {line}");
                assert!(detail.contains("alice@@example.org"), "{detail}");
            }
            other => panic!("expected an invalid field, got {other:?}"),
        }
        let t = text(&record()).replace("\"size\": 4096", "\"size\": -1");
        assert!(matches!(
            parse(t.as_bytes()),
            Err(RecordError::Invalid { .. })
        ));
    }

    #[test]
    fn a_misspelt_field_is_refused_rather_than_dropped() {
        let t = text(&record()).replace("\"state\"", "\"sate\"");
        match parse(t.as_bytes()) {
            Err(RecordError::Invalid { detail, .. }) => assert!(detail.contains("sate")),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_state_that_does_not_match_the_envelope_is_inconsistent() {
        let mut r = record();
        r.state.recipients.pop();
        assert!(matches!(
            parse(&render(&r)),
            Err(RecordError::Inconsistent(_))
        ));
    }

    #[test]
    fn a_record_with_an_unsafe_id_is_refused() {
        let t = text(&record()).replace("0PC4F8X1RZ3A7KQ2", "../../etc/passwd");
        assert!(matches!(
            parse(t.as_bytes()),
            Err(RecordError::Invalid { .. })
        ));
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(deep.as_bytes()).is_err());
        let deep = format!(
            "{{\"version\": {}1{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse(deep.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_a_damaged_record(
            cut in 0usize..2000,
            flip in 0usize..2000,
            byte in any::<u8>(),
        ) {
            let mut bytes = render(&record());
            let flip = flip % bytes.len();
            bytes[flip] = byte;
            bytes.truncate(cut.min(bytes.len()));
            let _ = parse(&bytes);
        }
    }
}
