//! The delivery state of a message file (formats 2 and 3 have the same slots): a compact
//! binary encoding of [`MessageState`] written into one of two fixed-size **slots** reserved
//! when the message was inserted, so recording "recipient X delivered" rewrites bytes the file
//! already has and never needs a new block of the disk.
//!
//! ```text
//! slot (SLOT_HEADER_LEN octets, then the payload; the rest of the slot is ignored)
//!   0  u64  sequence number: 0 = never written; each save writes the other slot with the
//!           newest sequence + 1, so a torn write leaves the previous state readable
//!   8  u32  payload length L
//!  12  u32  CRC-32 of the queue id, octets 0..12 and the payload
//!  16  L    payload
//!
//! payload (all integers little-endian; times are microseconds since 1970, 0 for earlier)
//!   u8   codec version (1)
//!   u64  arrival        u64 size        u64 next attempt    u32 attempts
//!   u8   flags: 1 held, 2 warned
//!   u32  recipient count, then per recipient:
//!        u8  status (0 pending, 1 delivered, 2 failed) | 0x10 last attempt | 0x20 diagnostic
//!            | 0x40 remote MTA
//!        u32 attempts   [u64 last attempt]   [diagnostic]   [string remote MTA]
//!   diagnostic: u8 flags (1 reply, 2 text is the reply on one line and not stored,
//!        4 the reply has an enhanced status), status (u8 class, u16 subject, u16 detail),
//!        [u16 reply code, [status], string reply text], [string text]
//!   string: u32 length, UTF-8
//! ```
//!
//! The id in the checksum means a slot can only ever be read as the state of the message that
//! wrote it. A state that does not fit its slot is shortened ([`encode_fitting`]): diagnostic
//! texts first, then the remote MTA names, then the diagnostics; the per-recipient status,
//! attempt count and last attempt time always fit, because [`slot_len`] reserves room for them.
//!
//! Every function here is pure and total: decoding returns an error for any input it cannot
//! read, and never panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{MessageState, RecipientState, RecipientStatus};
use crate::queue_id::QueueId;
use crate::status::{Diagnostic, EnhancedStatus, Reply};

/// Octets of a slot before its payload.
pub const SLOT_HEADER_LEN: usize = 16;
/// Slots are whole multiples of this, and start at such an offset, so that a torn write of
/// one slot (a sector written or not) can never touch the other.
pub const SLOT_ALIGN: u64 = 512;
/// The state codec this release writes and reads.
pub const CODEC_VERSION: u8 = 1;

/// The payload before the recipients: version, three times/sizes, attempts, flags, count.
const FIXED_LEN: usize = 1 + 8 + 8 + 8 + 4 + 1 + 4;
/// The least a recipient can take: status, attempts, last attempt time.
const MIN_RECIPIENT_LEN: usize = 1 + 4 + 8;
/// Room for diagnostic texts per recipient, for the first few recipients and beyond.
const TEXT_ROOM_FIRST: usize = 400;
const FIRST_RECIPIENTS: usize = 8;
const TEXT_ROOM_MORE: usize = 96;
/// At most this much room for texts in one slot, however many recipients.
const TEXT_ROOM_MAX: usize = 64 * 1024;
/// Text lengths tried when a state does not fit, longest first.
const TEXT_LIMITS: [usize; 5] = [1024, 256, 64, 16, 0];
/// What a shortened text ends with.
const ELLIPSIS: &str = "…";

const STATUS_MASK: u8 = 0x0f;
const HAS_LAST_ATTEMPT: u8 = 0x10;
const HAS_DIAGNOSTIC: u8 = 0x20;
const HAS_REMOTE_MTA: u8 = 0x40;
const DIAG_REPLY: u8 = 1;
const DIAG_TEXT_IS_REPLY: u8 = 2;
const DIAG_REPLY_STATUS: u8 = 4;
const HELD: u8 = 1;
const WARNED: u8 = 2;

/// Why a slot or state payload could not be read. Permanent: the same bytes give the same
/// answer, and the spool falls back to the other slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Sequence number 0: the slot was reserved but never written.
    #[error("the slot was never written")]
    Empty,
    /// Fewer octets than the slot header or its payload length says.
    #[error("the slot is cut short: {need} octets needed, {have} present")]
    Truncated {
        /// Octets the slot needs.
        need: usize,
        /// Octets there are.
        have: usize,
    },
    /// The checksum does not match: a write that was torn by a crash, or damage.
    #[error("the slot's checksum does not match (a torn write or damage)")]
    Checksum,
    /// The payload checks out but is not a state this release can read.
    #[error("the state in the slot is invalid at offset {offset}: {reason}")]
    Invalid {
        /// Offset in the payload.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A state decoded from a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Its sequence number (higher is newer).
    pub seq: u64,
    /// The state.
    pub state: MessageState,
}

/// How much a state had to be shortened to fit its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fit {
    /// Stored as given.
    Whole,
    /// Diagnostic texts and remote MTA names were cut to this many octets (0: emptied).
    TextsShortened(usize),
    /// Texts emptied and remote MTA names dropped.
    RemoteMtaDropped,
    /// Diagnostics and remote MTA names dropped; status, attempts and times kept.
    DiagnosticsDropped,
}

/// The slot length (each of the two) for a message with `recipients` recipients: room for
/// the smallest state of that many recipients, plus room for diagnostic texts, rounded up to
/// [`SLOT_ALIGN`]. `None` when it would exceed `u32` (no envelope is that large).
pub fn slot_len(recipients: usize) -> Option<u32> {
    let minimum = SLOT_HEADER_LEN
        .checked_add(FIXED_LEN)?
        .checked_add(recipients.checked_mul(MIN_RECIPIENT_LEN)?)?;
    let texts = (TEXT_ROOM_FIRST * recipients.min(FIRST_RECIPIENTS))
        .saturating_add(TEXT_ROOM_MORE.saturating_mul(recipients.saturating_sub(FIRST_RECIPIENTS)))
        .min(TEXT_ROOM_MAX);
    let len = minimum.checked_add(texts)? as u64;
    let aligned = len.div_ceil(SLOT_ALIGN).checked_mul(SLOT_ALIGN)?;
    u32::try_from(aligned).ok()
}

/// The smallest payload a state of `recipients` recipients can be encoded in.
pub fn min_payload_len(recipients: usize) -> usize {
    FIXED_LEN + recipients * MIN_RECIPIENT_LEN
}

/// Encodes `state` in at most `capacity` payload octets, shortening it as little as needed.
/// `None` only when even the smallest form does not fit, i.e. `capacity` is below
/// [`min_payload_len`] (a slot sized by [`slot_len`] never is).
pub fn encode_fitting(state: &MessageState, capacity: usize) -> Option<(Vec<u8>, Fit)> {
    let whole = encode_state(state, Shorten::None);
    if whole.len() <= capacity {
        return Some((whole, Fit::Whole));
    }
    for limit in TEXT_LIMITS {
        let bytes = encode_state(state, Shorten::Texts(limit));
        if bytes.len() <= capacity {
            return Some((bytes, Fit::TextsShortened(limit)));
        }
    }
    for (shorten, fit) in [
        (Shorten::NoRemoteMta, Fit::RemoteMtaDropped),
        (Shorten::Minimal, Fit::DiagnosticsDropped),
    ] {
        let bytes = encode_state(state, shorten);
        if bytes.len() <= capacity {
            return Some((bytes, fit));
        }
    }
    None
}

/// What a state read back from a payload encoded with this `fit` looks like: the state as the
/// spool will return it (texts cut, names or diagnostics dropped).
pub fn as_stored(state: &MessageState, fit: Fit) -> Option<MessageState> {
    let shorten = match fit {
        Fit::Whole => Shorten::None,
        Fit::TextsShortened(limit) => Shorten::Texts(limit),
        Fit::RemoteMtaDropped => Shorten::NoRemoteMta,
        Fit::DiagnosticsDropped => Shorten::Minimal,
    };
    decode_state(&encode_state(state, shorten)).ok()
}

/// A whole slot: header and payload (the caller writes it at the slot's offset; what follows
/// in the slot is ignored).
pub fn encode_slot(id: &QueueId, seq: u64, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("invariant: a payload fits its u32-sized slot");
    let mut out = Vec::with_capacity(SLOT_HEADER_LEN + payload.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    let crc = checksum(id, &out, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one slot of message `id` (the slot's bytes from its start; more may follow).
pub fn decode_slot(id: &QueueId, bytes: &[u8]) -> Result<Slot, SlotError> {
    if bytes.len() < SLOT_HEADER_LEN {
        return Err(SlotError::Truncated {
            need: SLOT_HEADER_LEN,
            have: bytes.len(),
        });
    }
    let seq = u64::from_le_bytes(bytes[0..8].try_into().expect("invariant: 8 octets"));
    if seq == 0 {
        return Err(SlotError::Empty);
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("invariant: 4 octets")) as usize;
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("invariant: 4 octets"));
    let need = SLOT_HEADER_LEN.saturating_add(len);
    if bytes.len() < need {
        return Err(SlotError::Truncated {
            need,
            have: bytes.len(),
        });
    }
    let payload = &bytes[SLOT_HEADER_LEN..need];
    if checksum(id, &bytes[..12], payload) != stored {
        return Err(SlotError::Checksum);
    }
    Ok(Slot {
        seq,
        state: decode_state(payload)?,
    })
}

/// The newest readable slot among `slots` with its index, or every slot's error.
pub fn newest(id: &QueueId, slots: &[&[u8]; 2]) -> Result<(usize, Slot), [SlotError; 2]> {
    match (decode_slot(id, slots[0]), decode_slot(id, slots[1])) {
        (Ok(a), Ok(b)) if b.seq > a.seq => Ok((1, b)),
        (Ok(a), _) => Ok((0, a)),
        (Err(_), Ok(b)) => Ok((1, b)),
        (Err(a), Err(b)) => Err([a, b]),
    }
}

fn checksum(id: &QueueId, head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(id.as_str().as_bytes());
    h.update(head);
    h.update(payload);
    h.finalize()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shorten {
    None,
    Texts(usize),
    NoRemoteMta,
    Minimal,
}

impl Shorten {
    fn text_limit(self) -> Option<usize> {
        match self {
            Shorten::None => None,
            Shorten::Texts(n) => Some(n),
            Shorten::NoRemoteMta | Shorten::Minimal => Some(0),
        }
    }
}

/// `text` cut to at most `limit` octets on a character boundary, marked as cut when there is
/// room for the mark.
fn shorten(text: &str, limit: Option<usize>) -> std::borrow::Cow<'_, str> {
    let Some(limit) = limit else {
        return text.into();
    };
    if text.len() <= limit {
        return text.into();
    }
    let room = if limit >= 4 * ELLIPSIS.len() {
        limit - ELLIPSIS.len()
    } else {
        limit
    };
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text[..end].to_string();
    if room < limit {
        out.push_str(ELLIPSIS);
    }
    out.into()
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

fn put_status(out: &mut Vec<u8>, s: EnhancedStatus) {
    out.push(s.class());
    out.extend_from_slice(&s.subject().to_le_bytes());
    out.extend_from_slice(&s.detail().to_le_bytes());
}

fn encode_state(state: &MessageState, how: Shorten) -> Vec<u8> {
    let limit = how.text_limit();
    let mut out = Vec::with_capacity(min_payload_len(state.recipients.len()) + 64);
    out.push(CODEC_VERSION);
    out.extend_from_slice(&micros(state.arrival).to_le_bytes());
    out.extend_from_slice(&state.size.to_le_bytes());
    out.extend_from_slice(&micros(state.next_attempt).to_le_bytes());
    out.extend_from_slice(&state.attempts.to_le_bytes());
    out.push((u8::from(state.held) * HELD) | (u8::from(state.warned) * WARNED));
    let count = u32::try_from(state.recipients.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for r in state.recipients.iter().take(count as usize) {
        let diagnostic = r.last.as_ref().filter(|_| how != Shorten::Minimal);
        let remote = r
            .remote_mta
            .as_ref()
            .filter(|_| !matches!(how, Shorten::Minimal | Shorten::NoRemoteMta));
        let mut tag = match r.status {
            RecipientStatus::Pending => 0,
            RecipientStatus::Delivered => 1,
            RecipientStatus::Failed => 2,
        };
        if r.last_attempt.is_some() {
            tag |= HAS_LAST_ATTEMPT;
        }
        if diagnostic.is_some() {
            tag |= HAS_DIAGNOSTIC;
        }
        if remote.is_some() {
            tag |= HAS_REMOTE_MTA;
        }
        out.push(tag);
        out.extend_from_slice(&r.attempts.to_le_bytes());
        if let Some(t) = r.last_attempt {
            out.extend_from_slice(&micros(t).to_le_bytes());
        }
        if let Some(d) = diagnostic {
            encode_diagnostic(&mut out, d, limit);
        }
        if let Some(m) = remote {
            put_str(&mut out, &shorten(m, limit));
        }
    }
    out
}

fn encode_diagnostic(out: &mut Vec<u8>, d: &Diagnostic, limit: Option<usize>) {
    let reply = d.reply.as_ref().map(|r| {
        let text = shorten(r.text(), limit);
        // The reply was valid and keeps its code and status: only the text changes.
        Reply::new(r.code(), r.enhanced(), text.into_owned())
            .expect("invariant: a valid reply with a shorter text is valid")
    });
    // A remote diagnostic's text is the reply on one line: stored once, as the reply.
    let text_is_reply = d.reply.as_ref().is_some_and(|r| r.one_line() == d.text);
    let mut flags = 0;
    if reply.is_some() {
        flags |= DIAG_REPLY;
    }
    if text_is_reply {
        flags |= DIAG_TEXT_IS_REPLY;
    }
    if reply.as_ref().is_some_and(|r| r.enhanced().is_some()) {
        flags |= DIAG_REPLY_STATUS;
    }
    out.push(flags);
    put_status(out, d.status);
    if let Some(r) = &reply {
        out.extend_from_slice(&r.code().to_le_bytes());
        if let Some(s) = r.enhanced() {
            put_status(out, s);
        }
        put_str(out, r.text());
    }
    if !text_is_reply {
        put_str(out, &shorten(&d.text, limit));
    }
}

/// Decodes a state payload.
pub fn decode_state(payload: &[u8]) -> Result<MessageState, SlotError> {
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let version = r.u8()?;
    if version != CODEC_VERSION {
        return Err(r.invalid_at(0, format!("state codec version {version} is not supported")));
    }
    let arrival = r.time()?;
    let size = r.u64()?;
    let next_attempt = r.time()?;
    let attempts = r.u32()?;
    let flags_at = r.at;
    let flags = r.u8()?;
    if flags & !(HELD | WARNED) != 0 {
        return Err(r.invalid_at(flags_at, format!("unknown message flags {flags:#04x}")));
    }
    let count = r.u32()? as usize;
    // Each recipient takes at least 5 octets: refuse a count the payload cannot hold before
    // allocating for it.
    if count > r.remaining() / 5 {
        return Err(r.invalid(format!(
            "{count} recipients cannot fit in {} octets",
            r.remaining()
        )));
    }
    let mut recipients = Vec::with_capacity(count);
    for _ in 0..count {
        recipients.push(decode_recipient(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(r.invalid(format!("{} octets follow the state", r.remaining())));
    }
    Ok(MessageState {
        arrival,
        size,
        next_attempt,
        attempts,
        held: flags & HELD != 0,
        warned: flags & WARNED != 0,
        recipients,
    })
}

fn decode_recipient(r: &mut Reader<'_>) -> Result<RecipientState, SlotError> {
    let tag_at = r.at;
    let tag = r.u8()?;
    let status = match tag & STATUS_MASK {
        0 => RecipientStatus::Pending,
        1 => RecipientStatus::Delivered,
        2 => RecipientStatus::Failed,
        other => return Err(r.invalid_at(tag_at, format!("unknown recipient status {other}"))),
    };
    if tag & !(STATUS_MASK | HAS_LAST_ATTEMPT | HAS_DIAGNOSTIC | HAS_REMOTE_MTA) != 0 {
        return Err(r.invalid_at(tag_at, format!("unknown recipient flags {tag:#04x}")));
    }
    let attempts = r.u32()?;
    let last_attempt = if tag & HAS_LAST_ATTEMPT != 0 {
        Some(r.time()?)
    } else {
        None
    };
    let last = if tag & HAS_DIAGNOSTIC != 0 {
        Some(decode_diagnostic(r)?)
    } else {
        None
    };
    let remote_mta = if tag & HAS_REMOTE_MTA != 0 {
        Some(r.string()?)
    } else {
        None
    };
    Ok(RecipientState {
        status,
        attempts,
        last_attempt,
        last,
        remote_mta,
    })
}

fn decode_diagnostic(r: &mut Reader<'_>) -> Result<Diagnostic, SlotError> {
    let flags_at = r.at;
    let flags = r.u8()?;
    if flags & !(DIAG_REPLY | DIAG_TEXT_IS_REPLY | DIAG_REPLY_STATUS) != 0
        || (flags & DIAG_REPLY == 0 && flags & (DIAG_TEXT_IS_REPLY | DIAG_REPLY_STATUS) != 0)
    {
        return Err(r.invalid_at(flags_at, format!("unknown diagnostic flags {flags:#04x}")));
    }
    let status = r.status()?;
    let reply = if flags & DIAG_REPLY != 0 {
        let code_at = r.at;
        let code = r.u16()?;
        let enhanced = if flags & DIAG_REPLY_STATUS != 0 {
            Some(r.status()?)
        } else {
            None
        };
        let text = r.string()?;
        // Checked as a reply from the network would be: no code 632, no 250 with 5.1.1.
        Some(Reply::new(code, enhanced, text).map_err(|e| r.invalid_at(code_at, e.to_string()))?)
    } else {
        None
    };
    let text = match &reply {
        Some(reply) if flags & DIAG_TEXT_IS_REPLY != 0 => reply.one_line(),
        _ => r.string()?,
    };
    Ok(Diagnostic {
        status,
        reply,
        text,
    })
}

/// A cursor over a payload that reports where it failed.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn invalid(&self, reason: String) -> SlotError {
        self.invalid_at(self.at, reason)
    }

    fn invalid_at(&self, offset: usize, reason: String) -> SlotError {
        SlotError::Invalid { offset, reason }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], SlotError> {
        if self.remaining() < n {
            return Err(self.invalid(format!("{n} octets needed, {} left", self.remaining())));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, SlotError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, SlotError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("invariant: 2 octets"),
        ))
    }

    fn u32(&mut self) -> Result<u32, SlotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("invariant: 4 octets"),
        ))
    }

    fn u64(&mut self) -> Result<u64, SlotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("invariant: 8 octets"),
        ))
    }

    fn time(&mut self) -> Result<SystemTime, SlotError> {
        let at = self.at;
        let us = self.u64()?;
        UNIX_EPOCH
            .checked_add(Duration::from_micros(us))
            .ok_or_else(|| self.invalid_at(at, format!("time {us} µs is out of range")))
    }

    fn status(&mut self) -> Result<EnhancedStatus, SlotError> {
        let at = self.at;
        let (class, subject, detail) = (self.u8()?, self.u16()?, self.u16()?);
        EnhancedStatus::parse(&format!("{class}.{subject}.{detail}"))
            .map_err(|e| self.invalid_at(at, e.to_string()))
    }

    fn string(&mut self) -> Result<String, SlotError> {
        let at = self.at;
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.invalid_at(at, format!("a text is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests;
