//! The message file of spool formats 2 and 3: one file per message holding its envelope, its
//! delivery state and its body, so that an insert makes one file durable instead of two, and a
//! state change rewrites a few octets in place instead of writing and renaming a new record.
//!
//! ```text
//! offset    what
//! 0         header, HEADER_LEN (64) octets, little-endian:
//!             0 "PRSPOOL\n"   8 u32 format version (3)   12 u32 header length (64)
//!            16 queue id (16 ASCII characters)
//!            32 u32 envelope length E   36 u32 CRC-32 of the envelope
//!            40 u32 recipient count     44 u32 slot length S (a multiple of 512)
//!            48 u64 body length B       56 u32 CRC-32 of the body (format 2: 0, unused)
//!            60 u32 CRC-32 of octets 0..60
//! 64        the envelope as one line of JSON (E octets), then zeros up to a multiple of 512
//! P         state slot 0 (S octets), then state slot 1 (S octets): see [`super::slot`]
//! P + 2S    the body (B octets); the file ends there
//! ```
//!
//! Format 3 differs from format 2 only in the body's checksum, and that is what lets an insert
//! name its file before the file is durable (see [`super::fs`]): after a power loss, a file
//! whose data never reached the disk fails a checksum (header, envelope, id, slots or body)
//! instead of passing for a message. Format 2 files were durable before they were named, so
//! their body needs no checksum; they are read as they are.
//!
//! The header and envelope never change after the insert; only the slots do, each save
//! writing the slot that does not hold the newest state. The slots start on a 512-octet
//! boundary so that no sector holds parts of both. The envelope stays JSON so an
//! administrator can read it with `head -c 2000`; the state is binary because it must fit a
//! fixed space (see [`super::slot`]).
//!
//! [`render`] and [`parse_meta`] are pure and total: parsing returns an error for any input
//! it cannot read, and never panics.

use super::MessageState;
use super::slot::{self, Fit, SlotError};
use crate::envelope::Envelope;
use crate::queue_id::{QUEUE_ID_LEN, QueueId};

/// The first octets of every message file.
pub const MAGIC: [u8; 8] = *b"PRSPOOL\n";
/// The spool format this release writes (format 1 was the `qf`/`df` pair, see
/// [`super::record`]).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format of this layout that this release reads: format 2, the same file without
/// the body's checksum.
pub const OLDEST_READABLE: u32 = 2;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 64;
/// How much of an offending value an error quotes.
const QUOTE_LIMIT: usize = 40;

/// The fixed header of a message file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message's id (also the file's name).
    pub id: QueueId,
    /// Octets of envelope JSON after the header.
    pub envelope_len: u32,
    /// CRC-32 of the envelope JSON.
    pub envelope_crc: u32,
    /// Recipients in the envelope, and so in every state.
    pub recipients: u32,
    /// Octets of each of the two state slots.
    pub slot_len: u32,
    /// Octets of body.
    pub body_len: u64,
    /// CRC-32 of the body; `None` in a format-2 file.
    pub body_crc: Option<u32>,
}

impl Header {
    /// Where slot 0 starts.
    pub fn slots_offset(&self) -> u64 {
        (HEADER_LEN as u64 + u64::from(self.envelope_len)).div_ceil(slot::SLOT_ALIGN)
            * slot::SLOT_ALIGN
    }

    /// Where slot `index` (0 or 1) starts.
    pub fn slot_offset(&self, index: usize) -> u64 {
        self.slots_offset() + index as u64 * u64::from(self.slot_len)
    }

    /// Where the body starts: everything before it is the metadata a scan reads.
    pub fn body_offset(&self) -> u64 {
        self.slot_offset(2)
    }

    /// The length the file must have.
    pub fn file_len(&self) -> u64 {
        self.body_offset() + self.body_len
    }

    fn render(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        let version = match self.body_crc {
            Some(_) => FORMAT_VERSION,
            None => OLDEST_READABLE,
        };
        h[8..12].copy_from_slice(&version.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h[16..32].copy_from_slice(self.id.as_str().as_bytes());
        h[32..36].copy_from_slice(&self.envelope_len.to_le_bytes());
        h[36..40].copy_from_slice(&self.envelope_crc.to_le_bytes());
        h[40..44].copy_from_slice(&self.recipients.to_le_bytes());
        h[44..48].copy_from_slice(&self.slot_len.to_le_bytes());
        h[48..56].copy_from_slice(&self.body_len.to_le_bytes());
        h[56..60].copy_from_slice(&self.body_crc.unwrap_or(0).to_le_bytes());
        let crc = crc32fast::hash(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// A message file's metadata: everything but the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The header.
    pub header: Header,
    /// The envelope.
    pub envelope: Envelope,
    /// The newest readable state.
    pub state: MessageState,
    /// Which slot holds it (0 or 1).
    pub slot: usize,
    /// Its sequence number.
    pub seq: u64,
}

/// Why a message file could not be read. Every variant is permanent: the spool quarantines
/// such a file instead of retrying it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Zero octets.
    #[error("the message file is empty")]
    Empty,
    /// The file does not start with the format's magic.
    #[error("not a postrider message file (it starts with {found:?})")]
    NotAMessageFile {
        /// Its first octets, as text.
        found: String,
    },
    /// A format this release does not know, e.g. written by a newer postrider.
    #[error(
        "spool format {found} is not supported: this postrider reads formats \
         {OLDEST_READABLE} to {FORMAT_VERSION} (was the spool written by a newer release?)"
    )]
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
    },
    /// Fewer octets than the header says there are.
    #[error("the message file is cut short: its {what} needs {need} octets, {have} present")]
    Truncated {
        /// Which part is short.
        what: &'static str,
        /// Octets needed.
        need: u64,
        /// Octets present.
        have: u64,
    },
    /// The header's checksum does not match.
    #[error("the header's checksum does not match (damage)")]
    HeaderChecksum,
    /// A header field is out of range.
    #[error("the header is invalid: {0}")]
    BadHeader(String),
    /// The envelope's checksum does not match.
    #[error("the envelope's checksum does not match (damage)")]
    EnvelopeChecksum,
    /// The body's checksum does not match: the insert that wrote the file was cut short by a
    /// power loss (its sender was never told the message was accepted), or the disk damaged it.
    #[error(
        "the body's checksum does not match (an insert cut short by a power loss, which was \
         never acknowledged, or damage)"
    )]
    BodyChecksum,
    /// The envelope is not valid JSON or not a valid envelope.
    #[error("the envelope is invalid at column {column}: {detail}")]
    Envelope {
        /// 1-based column in the one-line JSON.
        column: usize,
        /// What the JSON parser said.
        detail: String,
    },
    /// The fields parse but contradict each other.
    #[error("the message file is inconsistent: {0}")]
    Inconsistent(String),
    /// Neither state slot holds a readable state.
    #[error("neither state slot is readable (slot 0: {0}; slot 1: {1})", .slots[0], .slots[1])]
    NoState {
        /// Why each slot failed.
        slots: [SlotError; 2],
    },
    /// The envelope has more recipients than a slot can be sized for.
    #[error("{0} recipients are more than one message file can hold")]
    TooManyRecipients(usize),
}

/// The metadata of a new message file in the current format (header, envelope, slot 0
/// holding `state` as sequence 1, slot 1 reserved), to be followed by `body`.
pub fn render(
    id: &QueueId,
    envelope: &Envelope,
    state: &MessageState,
    body: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let n = envelope.recipients.len();
    let too_many = || FormatError::TooManyRecipients(n);
    if state.recipients.len() != n {
        return Err(FormatError::Inconsistent(format!(
            "the envelope has {n} recipients but the state has {}",
            state.recipients.len()
        )));
    }
    if state.size != body.len() as u64 {
        return Err(FormatError::Inconsistent(format!(
            "the body is {} octets but the state says {}",
            body.len(),
            state.size
        )));
    }
    let mut json = serde_json::to_vec(envelope)
        .expect("invariant: envelopes serialize (string keys, no fallible Serialize impls)");
    json.push(b'\n');
    let slot_len = slot::slot_len(n).ok_or_else(too_many)?;
    let header = Header {
        id: *id,
        envelope_len: u32::try_from(json.len()).map_err(|_| too_many())?,
        envelope_crc: crc32fast::hash(&json),
        recipients: u32::try_from(n).map_err(|_| too_many())?,
        slot_len,
        body_len: state.size,
        body_crc: Some(crc32fast::hash(body)),
    };
    let (payload, _fit) = slot::encode_fitting(state, slot_len as usize - slot::SLOT_HEADER_LEN)
        .expect("invariant: slot_len leaves room for the smallest state");
    let mut out = Vec::with_capacity(header.body_offset() as usize);
    out.extend_from_slice(&header.render());
    out.extend_from_slice(&json);
    out.resize(header.slots_offset() as usize, 0);
    out.extend_from_slice(&slot::encode_slot(id, 1, &payload));
    // Slot 1 is written too (zeros), so its blocks exist before any state update needs them.
    out.resize(header.body_offset() as usize, 0);
    Ok(out)
}

/// A state ready to be written into the slot after the newest one, and how it was fitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotWrite {
    /// Offset in the file.
    pub offset: u64,
    /// The octets to write there.
    pub bytes: Vec<u8>,
    /// How much the state had to be shortened.
    pub fit: Fit,
}

/// Prepares the write that makes `state` the message's state: into the slot that does not
/// hold the newest readable state (`newest`, `None` when neither is readable), with the next
/// sequence number.
pub fn next_slot_write(
    header: &Header,
    newest: Option<(usize, u64)>,
    state: &MessageState,
) -> Result<SlotWrite, FormatError> {
    check_state(header, state)?;
    let (index, seq) = match newest {
        Some((slot, seq)) => (1 - slot.min(1), seq.saturating_add(1)),
        None => (0, 1),
    };
    let capacity = (header.slot_len as usize).saturating_sub(slot::SLOT_HEADER_LEN);
    let (payload, fit) = slot::encode_fitting(state, capacity).ok_or_else(|| {
        FormatError::BadHeader(format!(
            "a slot of {} octets cannot hold {} recipients",
            header.slot_len, header.recipients
        ))
    })?;
    Ok(SlotWrite {
        offset: header.slot_offset(index),
        bytes: slot::encode_slot(&header.id, seq, &payload),
        fit,
    })
}

/// Checks that `state` belongs to a message with this header: the same number of recipients
/// and the same body size.
pub fn check_state(header: &Header, state: &MessageState) -> Result<(), FormatError> {
    if state.recipients.len() as u64 != u64::from(header.recipients) {
        return Err(FormatError::Inconsistent(format!(
            "the envelope has {} recipients but the state has {}",
            header.recipients,
            state.recipients.len()
        )));
    }
    if state.size != header.body_len {
        return Err(FormatError::Inconsistent(format!(
            "the body is {} octets but the state says {}",
            header.body_len, state.size
        )));
    }
    Ok(())
}

/// Checks a body read back against its header: its length, and in format 3 its checksum.
pub fn check_body(header: &Header, body: &[u8]) -> Result<(), FormatError> {
    if body.len() as u64 != header.body_len {
        return Err(FormatError::Truncated {
            what: "body",
            need: header.body_len,
            have: body.len() as u64,
        });
    }
    match header.body_crc {
        Some(crc) if crc32fast::hash(body) != crc => Err(FormatError::BodyChecksum),
        _ => Ok(()),
    }
}

/// Reads the fixed header from the first octets of a file.
pub fn parse_header(bytes: &[u8]) -> Result<Header, FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        let found: String = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTE_LIMIT)]).into();
        return Err(FormatError::NotAMessageFile { found });
    }
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            what: "header",
            need: HEADER_LEN as u64,
            have: bytes.len() as u64,
        });
    }
    let u32_at =
        |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("invariant: 4"));
    let version = u32_at(8);
    if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&version) {
        return Err(FormatError::UnsupportedVersion { found: version });
    }
    if crc32fast::hash(&bytes[..60]) != u32_at(60) {
        return Err(FormatError::HeaderChecksum);
    }
    if u32_at(12) as usize != HEADER_LEN {
        return Err(FormatError::BadHeader(format!(
            "header length {} (expected {HEADER_LEN})",
            u32_at(12)
        )));
    }
    let body_crc = match version {
        FORMAT_VERSION => Some(u32_at(56)),
        _ if u32_at(56) == 0 => None,
        _ => {
            return Err(FormatError::BadHeader(format!(
                "reserved field {} in a format-2 header (expected 0)",
                u32_at(56)
            )));
        }
    };
    let id_text = std::str::from_utf8(&bytes[16..16 + QUEUE_ID_LEN])
        .map_err(|_| FormatError::BadHeader("the queue id is not text".into()))?;
    let id = QueueId::parse(id_text).map_err(|e| FormatError::BadHeader(e.to_string()))?;
    let header = Header {
        id,
        envelope_len: u32_at(32),
        envelope_crc: u32_at(36),
        recipients: u32_at(40),
        slot_len: u32_at(44),
        body_len: u64::from_le_bytes(bytes[48..56].try_into().expect("invariant: 8")),
        body_crc,
    };
    let min_slot =
        slot::SLOT_HEADER_LEN as u64 + slot::min_payload_len(header.recipients as usize) as u64;
    if u64::from(header.slot_len) % slot::SLOT_ALIGN != 0 || u64::from(header.slot_len) < min_slot {
        return Err(FormatError::BadHeader(format!(
            "slot length {} for {} recipients (a multiple of {} of at least {min_slot} expected)",
            header.slot_len,
            header.recipients,
            slot::SLOT_ALIGN
        )));
    }
    if header.body_len > u64::MAX / 2 {
        return Err(FormatError::BadHeader(format!(
            "body length {} is impossible",
            header.body_len
        )));
    }
    Ok(header)
}

/// Reads a message file's metadata from its first octets (at least up to the body; more may
/// follow and are ignored).
pub fn parse_meta(bytes: &[u8]) -> Result<Meta, FormatError> {
    let header = parse_header(bytes)?;
    let need = header.body_offset();
    if (bytes.len() as u64) < need {
        return Err(FormatError::Truncated {
            what: "envelope and state slots",
            need,
            have: bytes.len() as u64,
        });
    }
    let json = &bytes[HEADER_LEN..HEADER_LEN + header.envelope_len as usize];
    if crc32fast::hash(json) != header.envelope_crc {
        return Err(FormatError::EnvelopeChecksum);
    }
    let envelope: Envelope = serde_json::from_slice(json).map_err(|e| FormatError::Envelope {
        column: e.column(),
        detail: e.to_string(),
    })?;
    if envelope.recipients.len() as u64 != u64::from(header.recipients) {
        return Err(FormatError::Inconsistent(format!(
            "the header says {} recipients but the envelope has {}",
            header.recipients,
            envelope.recipients.len()
        )));
    }
    let slot_at = |i: usize| {
        let start = header.slot_offset(i) as usize;
        &bytes[start..start + header.slot_len as usize]
    };
    let (index, newest) = slot::newest(&header.id, &[slot_at(0), slot_at(1)])
        .map_err(|slots| FormatError::NoState { slots })?;
    check_state(&header, &newest.state)?;
    Ok(Meta {
        header,
        envelope,
        state: newest.state,
        slot: index,
        seq: newest.seq,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::address::{Address, ReversePath};
    use crate::envelope::Notify;
    use crate::spool::RecipientStatus;
    use crate::status::{Diagnostic, EnhancedStatus};

    fn id() -> QueueId {
        QueueId::parse("0PC4F8X1RZ3A7KQ2").unwrap()
    }

    fn envelope() -> Envelope {
        let mut e = Envelope::new(
            ReversePath::parse("pbx@example.com").unwrap(),
            [
                Address::parse("alice@example.org").unwrap(),
                Address::parse("bob@example.net").unwrap(),
            ],
        );
        e.recipients[0].notify = Some(Notify::NEVER);
        e.set_envid("voicemail-17").unwrap();
        e
    }

    fn file(body: &[u8]) -> (Vec<u8>, MessageState) {
        let arrival = UNIX_EPOCH + Duration::from_secs(1_795_321_500);
        let state = MessageState::new(&envelope(), body.len() as u64, arrival);
        let mut bytes = render(&id(), &envelope(), &state, body).unwrap();
        bytes.extend_from_slice(body);
        (bytes, state)
    }

    /// The same file as an older release wrote it: format 2, no body checksum.
    fn format_2(bytes: &[u8]) -> Vec<u8> {
        let mut old = bytes.to_vec();
        old[8..12].copy_from_slice(&2u32.to_le_bytes());
        old[56..60].fill(0);
        let crc = crc32fast::hash(&old[..60]);
        old[60..64].copy_from_slice(&crc.to_le_bytes());
        old
    }

    fn body_of<'a>(bytes: &'a [u8], header: &Header) -> &'a [u8] {
        &bytes[header.body_offset() as usize..]
    }

    fn apply(bytes: &mut [u8], w: &SlotWrite) {
        let at = w.offset as usize;
        bytes[at..at + w.bytes.len()].copy_from_slice(&w.bytes);
    }

    #[test]
    fn a_new_file_reads_back_with_its_first_state() {
        let (bytes, state) = file(b"hello\r\n");
        let meta = parse_meta(&bytes).unwrap();
        assert_eq!(meta.header.id, id());
        assert_eq!(meta.envelope, envelope());
        assert_eq!(meta.state, state);
        assert_eq!((meta.slot, meta.seq), (0, 1));
        assert_eq!(meta.header.file_len(), bytes.len() as u64);
        assert_eq!(&bytes[meta.header.body_offset() as usize..], b"hello\r\n");
    }

    #[test]
    fn the_file_begins_with_a_header_and_an_envelope_an_administrator_can_read() {
        let (bytes, _) = file(b"");
        assert!(bytes.starts_with(b"PRSPOOL\n"));
        let text = String::from_utf8_lossy(&bytes[HEADER_LEN..]);
        assert!(
            text.starts_with("{\"sender\":\"pbx@example.com\""),
            "{text}"
        );
        // 512 octets for the header and envelope, two 1 KiB slots (two recipients).
        assert_eq!(bytes.len(), 512 + 2 * 1024);
    }

    #[test]
    fn saves_alternate_slots_and_the_newest_wins() {
        let (mut bytes, mut state) = file(b"x");
        for n in 1..=5u32 {
            let meta = parse_meta(&bytes).unwrap();
            state.attempts = n;
            state.recipients[1].status = RecipientStatus::Delivered;
            let w = next_slot_write(&meta.header, Some((meta.slot, meta.seq)), &state).unwrap();
            assert_eq!(w.fit, Fit::Whole);
            assert_eq!(w.offset, meta.header.slot_offset(1 - meta.slot));
            apply(&mut bytes, &w);
            let again = parse_meta(&bytes).unwrap();
            assert_eq!((again.state.attempts, again.seq), (n, u64::from(n) + 1));
        }
    }

    #[test]
    fn a_torn_save_leaves_the_previous_state() {
        let (mut bytes, mut state) = file(b"x");
        let meta = parse_meta(&bytes).unwrap();
        state.attempts = 1;
        let w = next_slot_write(&meta.header, Some((0, 1)), &state).unwrap();
        apply(&mut bytes, &w);
        let saved = parse_meta(&bytes).unwrap();
        state.attempts = 2;
        state.recipients[0].last = Some(Diagnostic::local(EnhancedStatus::new(4, 4, 1), "later"));
        let w = next_slot_write(&saved.header, Some((saved.slot, saved.seq)), &state).unwrap();
        for cut in 0..w.bytes.len() {
            let mut torn = bytes.clone();
            let at = w.offset as usize;
            torn[at..at + cut].copy_from_slice(&w.bytes[..cut]);
            let read = parse_meta(&torn).unwrap();
            assert!(
                read.state == saved.state || read.state == state,
                "cut {cut}: {:?}",
                read.state
            );
        }
    }

    #[test]
    fn a_state_for_another_message_shape_is_refused() {
        let (bytes, state) = file(b"abc");
        let meta = parse_meta(&bytes).unwrap();
        let mut fewer = state.clone();
        fewer.recipients.pop();
        assert!(matches!(
            next_slot_write(&meta.header, None, &fewer),
            Err(FormatError::Inconsistent(_))
        ));
        let mut bigger = state;
        bigger.size = 4;
        let err = next_slot_write(&meta.header, None, &bigger).unwrap_err();
        assert!(err.to_string().contains("the body is 3 octets"), "{err}");
    }

    #[test]
    fn damage_is_named() {
        let (bytes, _) = file(b"body");
        assert_eq!(parse_meta(b""), Err(FormatError::Empty));
        assert!(matches!(
            parse_meta(b"{\n  \"version\": 1,"),
            Err(FormatError::NotAMessageFile { found }) if found.starts_with('{')
        ));
        let mut v4 = bytes.clone();
        v4[8] = 4;
        let err = parse_meta(&v4).unwrap_err();
        assert_eq!(err, FormatError::UnsupportedVersion { found: 4 });
        assert!(err.to_string().contains("formats 2 to 3"), "{err}");
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(parse_meta(&flipped), Err(FormatError::HeaderChecksum));
        let mut env = bytes.clone();
        env[HEADER_LEN + 3] ^= 1;
        assert_eq!(parse_meta(&env), Err(FormatError::EnvelopeChecksum));
        assert!(matches!(
            parse_meta(&bytes[..600]),
            Err(FormatError::Truncated {
                what: "envelope and state slots",
                ..
            })
        ));
        let mut slots = bytes.clone();
        let h = parse_header(&bytes).unwrap();
        slots[h.slot_offset(0) as usize + 20] ^= 1;
        let err = parse_meta(&slots).unwrap_err();
        assert!(matches!(err, FormatError::NoState { .. }));
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(err.to_string().contains("never written"), "{err}");
    }

    #[test]
    fn a_new_file_carries_its_body_checksum_and_a_changed_body_fails_it() {
        let (bytes, _) = file(b"voicemail.wav\r\n");
        let header = parse_header(&bytes).unwrap();
        assert_eq!(header.body_crc, Some(crc32fast::hash(b"voicemail.wav\r\n")));
        assert_eq!(check_body(&header, body_of(&bytes, &header)), Ok(()));
        let mut torn = bytes.clone();
        let last = torn.len() - 1;
        torn[last] = 0;
        // The metadata still reads: only the body tells a torn insert from a whole one.
        let meta = parse_meta(&torn).unwrap();
        assert_eq!(
            check_body(&meta.header, body_of(&torn, &meta.header)),
            Err(FormatError::BodyChecksum)
        );
        assert!(matches!(
            check_body(&header, &body_of(&bytes, &header)[1..]),
            Err(FormatError::Truncated { what: "body", .. })
        ));
    }

    #[test]
    fn a_format_2_file_reads_without_a_body_checksum() {
        let (bytes, state) = file(b"hello\r\n");
        let old = format_2(&bytes);
        let meta = parse_meta(&old).unwrap();
        assert_eq!(meta.header.body_crc, None);
        assert_eq!(meta.state, state);
        assert_eq!(
            check_body(&meta.header, body_of(&old, &meta.header)),
            Ok(())
        );
        // A format-2 file with something in the reserved field is not one an older release
        // wrote.
        let mut odd = old.clone();
        odd[56] = 1;
        let crc = crc32fast::hash(&odd[..60]);
        odd[60..64].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(parse_meta(&odd), Err(FormatError::BadHeader(_))));
    }

    #[test]
    fn a_body_that_does_not_match_the_state_is_refused_at_render() {
        let state = MessageState::new(&envelope(), 3, UNIX_EPOCH);
        let err = render(&id(), &envelope(), &state, b"four").unwrap_err();
        assert!(err.to_string().contains("the body is 4 octets"), "{err}");
    }

    proptest! {
        #[test]
        fn parsing_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = parse_meta(&bytes);
        }

        #[test]
        fn parsing_never_panics_on_a_damaged_file(flip in 0usize..3000, byte in any::<u8>(), cut in 0usize..3000) {
            let (mut bytes, _) = file(b"hello");
            let flip = flip % bytes.len();
            bytes[flip] = byte;
            bytes.truncate(cut);
            let _ = parse_meta(&bytes);
        }
    }
}
