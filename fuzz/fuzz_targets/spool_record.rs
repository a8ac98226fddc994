//! Feeds bytes to the spool record parser and checks that every record it accepts renders to
//! bytes that parse back to the same record, and keeps the core types' invariants.
//!
//! Arbitrary bytes rarely make a whole valid record, so the first input byte also picks a mode:
//! either the input is the record, or it replaces one field's value in a valid template, which
//! sends the fuzzer straight into that field's parser (addresses, times, ORCPT, replies, ...).
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use postrider::Reply;
use postrider::spool::record::{SpoolRecord, parse, render};

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
    let hole = usize::from(mode) % (FIELDS.len() + 1);
    if hole == FIELDS.len() {
        check(rest);
    } else {
        check(fill(Some(hole), &String::from_utf8_lossy(rest)).as_bytes());
    }
});

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
