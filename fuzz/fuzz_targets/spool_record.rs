//! Feeds bytes to every parser of what the spool reads from disk: the format-1 record (still
//! read to convert old spools), the message file of formats 2 and 3 (header, envelope, state
//! slots, the body checksum) and the state codec; checks that whatever they accept survives
//! its own writer unchanged and keeps the core types' invariants.
//!
//! Arbitrary bytes rarely make a whole valid record, so the first input byte picks a mode:
//! the input is a format-1 record, or replaces one field's value in a valid format-1 template
//! (straight into that field's parser: addresses, times, ORCPT, replies, ...), or is a whole
//! message file, or is spliced into a valid message file at an offset it chooses, or is a
//! state payload.
#![no_main]

use std::sync::Once;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use postrider::spool::format::{self, parse_meta};
use postrider::spool::record::{SpoolRecord, parse, render};
use postrider::spool::slot::{self, Fit};
use postrider::spool::{MessageState, RecipientStatus};
use postrider::{Address, Envelope, QueueId, Reply, ReversePath};

/// A valid record with `$N$` holes; `FIELDS[N]` is what fills hole N unless the input does.
const TEMPLATE: &str = r#"{
  "version": $0$,
  "id": $1$,
  "envelope": {
    "sender": $2$,
    "recipients": [
      { "address": $3$, "notify": $4$ },
      { "address": "bob@example.net", "orcpt": $5$ }
    ],
    "ret": $6$,
    "envid": $7$,
    "body": $8$,
    "smtputf8": false
  },
  "state": {
    "arrival": $9$,
    "size": $10$,
    "next_attempt": "2026-11-22T04:30:00.000000Z",
    "attempts": 1,
    "held": false,
    "warned": false,
    "recipients": [
      {
        "status": $11$,
        "attempts": 2,
        "last_attempt": $12$,
        "last": { "status": $13$, "reply": $14$, "text": "deferred" },
        "remote_mta": "mx.example.org. [192.0.2.1]"
      },
      { "status": "delivered" }
    ]
  }
}
"#;

const FIELDS: [&str; 15] = [
    "1",
    "\"0PC4F8X1RZ3A7KQ2\"",
    "\"pbx@example.com\"",
    "\"alice@example.org\"",
    "\"SUCCESS,DELAY\"",
    "\"rfc822;bob@example.net\"",
    "\"HDRS\"",
    "\"voicemail-17\"",
    "\"eightbitmime\"",
    "\"2026-11-22T04:25:00.000000Z\"",
    "4096",
    "\"pending\"",
    "\"2026-11-22T04:26:00.5Z\"",
    "\"4.4.1\"",
    "{ \"code\": 451, \"status\": \"4.4.1\", \"text\": \"try later\\nplease\" }",
];

/// The template with hole `hole` filled by `with` and the others by their defaults, in one pass
/// (so an input that contains `$N$` stays as it is).
fn fill(hole: Option<usize>, with: &str) -> String {
    let mut text = String::with_capacity(TEMPLATE.len() + with.len());
    for (i, piece) in TEMPLATE.split('$').enumerate() {
        if i % 2 == 0 {
            text.push_str(piece);
            continue;
        }
        let n: usize = piece.parse().expect("invariant: template holes are $N$");
        text.push_str(if hole == Some(n) { with } else { FIELDS[n] });
    }
    text
}

fuzz_target!(|data: &[u8]| {
    static TEMPLATE_PARSES: Once = Once::new();
    TEMPLATE_PARSES.call_once(|| {
        if let Err(e) = parse(fill(None, "").as_bytes()) {
            panic!("invariant: the fuzz template is a valid record: {e}");
        }
    });
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mode = usize::from(mode) % (FIELDS.len() + 4);
    match mode.checked_sub(FIELDS.len()) {
        None => check(fill(Some(mode), &String::from_utf8_lossy(rest)).as_bytes()),
        Some(0) => check(rest),
        Some(1) => check_message_file(rest),
        Some(2) => check_spliced(rest),
        _ => check_state_payload(rest),
    }
});

/// A valid format-2 message file with a saved state (both slots used) and a small body.
fn message_file() -> Vec<u8> {
    let id = QueueId::parse("0PC4F8X1RZ3A7KQ2").expect("invariant: a valid id");
    let envelope = Envelope::new(
        ReversePath::parse("pbx@example.com").expect("invariant: a valid sender"),
        [
            Address::parse("alice@example.org").expect("invariant: a valid address"),
            Address::parse("bob@example.net").expect("invariant: a valid address"),
        ],
    );
    let arrival = UNIX_EPOCH + Duration::from_secs(1_795_321_500);
    let body = TEMPLATE_BODY;
    let mut state = MessageState::new(&envelope, body.len() as u64, arrival);
    let mut bytes = format::render(&id, &envelope, &state, body).expect("invariant: renders");
    bytes.extend_from_slice(body);
    state.attempts = 1;
    state.recipients[0].status = RecipientStatus::Delivered;
    let header = format::parse_header(&bytes).expect("invariant: parses");
    let w = format::next_slot_write(&header, Some((0, 1)), &state).expect("invariant: fits");
    let at = w.offset as usize;
    bytes[at..at + w.bytes.len()].copy_from_slice(&w.bytes);
    bytes
}

/// The body of [`message_file`].
const TEMPLATE_BODY: &[u8] = b"Subject: hi\r\n\r\nhello\r\n";

/// What a message file's parser accepts is consistent, and a further save of its state reads
/// back as that state (as shortened to fit), in the slot after the newest.
fn check_message_file(bytes: &[u8]) {
    let Ok(meta) = parse_meta(bytes) else {
        return;
    };
    if meta.seq == u64::MAX {
        // Not reachable by saving (one save per attempt), only by forging a checksum.
        return;
    }
    assert_eq!(meta.envelope.recipients.len(), meta.header.recipients as usize);
    assert_eq!(meta.state.recipients.len(), meta.header.recipients as usize);
    assert_eq!(meta.state.size, meta.header.body_len);
    assert!(meta.slot < 2 && meta.seq > 0);
    // The body's check is total too; where the checksum is the template body's, a body that
    // passes it is the template body (a splice into the body must fail).
    if let Some(body) = bytes.get(meta.header.body_offset() as usize..) {
        let checked = format::check_body(&meta.header, body);
        if meta.header.body_crc == Some(crc32fast::hash(TEMPLATE_BODY)) && checked.is_ok() {
            assert_eq!(body, TEMPLATE_BODY);
        }
    }
    let Ok(w) = format::next_slot_write(&meta.header, Some((meta.slot, meta.seq)), &meta.state)
    else {
        panic!("a state read from a file can be saved back into it");
    };
    assert_eq!(w.offset, meta.header.slot_offset(1 - meta.slot));
    let mut saved = bytes.to_vec();
    let at = w.offset as usize;
    saved[at..at + w.bytes.len()].copy_from_slice(&w.bytes);
    let again = parse_meta(&saved).expect("a saved state reads back");
    assert_eq!(again.seq, meta.seq + 1);
    assert_eq!(again.envelope, meta.envelope);
    let stored = slot::as_stored(&meta.state, w.fit).expect("a stored state decodes");
    assert_eq!(again.state, stored);
    if w.fit == Fit::Whole {
        assert_eq!(again.state, meta.state);
    }
}

/// The input overwrites a valid message file from an offset it picks (first two octets).
fn check_spliced(rest: &[u8]) {
    let mut bytes = message_file();
    let Some((offset, patch)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let offset = usize::from(u16::from_le_bytes(*offset)) % bytes.len();
    let end = (offset + patch.len()).min(bytes.len());
    bytes[offset..end].copy_from_slice(&patch[..end - offset]);
    check_message_file(&bytes);
    // Cut short anywhere before the body, it is refused, never misread.
    if let Ok(header) = format::parse_header(&bytes) {
        let cut = offset % (header.body_offset() as usize).min(bytes.len()).max(1);
        assert!(parse_meta(&bytes[..cut]).is_err());
    }
}

/// A state payload that decodes encodes back to itself, and shortened to any capacity at or
/// above the minimum, it keeps every recipient's status, attempts and last attempt time.
fn check_state_payload(bytes: &[u8]) {
    let Ok(state) = slot::decode_state(bytes) else {
        return;
    };
    let (whole, fit) = slot::encode_fitting(&state, usize::MAX).expect("fits without a limit");
    assert_eq!(fit, Fit::Whole);
    assert_eq!(slot::decode_state(&whole).as_ref(), Ok(&state));
    let min = slot::min_payload_len(state.recipients.len());
    let capacity = min + bytes.len() % (whole.len().saturating_sub(min) + 1);
    let (short, fit) = slot::encode_fitting(&state, capacity).expect("the minimum always fits");
    assert!(short.len() <= capacity);
    let back = slot::decode_state(&short).expect("a shortened state decodes");
    assert_eq!(slot::as_stored(&state, fit).as_ref(), Some(&back));
    for (a, b) in back.recipients.iter().zip(&state.recipients) {
        assert_eq!(
            (a.status, a.attempts, a.last_attempt),
            (b.status, b.attempts, b.last_attempt)
        );
    }
    let id = QueueId::parse("0PC4F8X1RZ3A7KQ2").expect("invariant: a valid id");
    let slot_bytes = slot::encode_slot(&id, 7, &short);
    assert_eq!(slot::decode_slot(&id, &slot_bytes).map(|s| (s.seq, s.state)), Ok((7, back)));
}

fn check(bytes: &[u8]) {
    let record = match parse(bytes) {
        Ok(record) => record,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    check_invariants(&record);
    let rendered = render(&record);
    assert!(rendered.ends_with(b"}\n"));
    let again = parse(&rendered)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&rendered)));
    assert_eq!(again, record, "{}", String::from_utf8_lossy(&rendered));
    assert_eq!(render(&again), rendered, "rendering is deterministic");
}

fn check_invariants(record: &SpoolRecord) {
    assert_eq!(
        record.envelope.recipients.len(),
        record.state.recipients.len()
    );
    for state in &record.state.recipients {
        if let Some(reply) = state.last.as_ref().and_then(|d| d.reply.as_ref()) {
            // A reply read from a record is one `Reply::new` would have built.
            let rebuilt = Reply::new(reply.code(), reply.enhanced(), reply.text());
            assert_eq!(rebuilt.as_ref(), Ok(reply), "{reply:?}");
        }
    }
}
