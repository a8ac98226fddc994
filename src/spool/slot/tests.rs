//! Unit tests of `slot`.

use proptest::prelude::*;

use super::*;

fn id() -> QueueId {
    QueueId::parse("0PC4F8X1RZ3A7KQ2").unwrap()
}

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(1_795_321_500_000_000 + s)
}

fn state(recipients: usize) -> MessageState {
    let mut s = MessageState {
        arrival: at(0),
        size: 4096,
        next_attempt: at(300_000_000),
        attempts: 3,
        held: true,
        warned: false,
        recipients: vec![RecipientState::pending(); recipients],
    };
    if let Some(r) = s.recipients.get_mut(0) {
        r.status = RecipientStatus::Delivered;
        r.attempts = 1;
        r.last_attempt = Some(at(17));
        r.remote_mta = Some("mx.example.org. [192.0.2.1]".into());
    }
    if let Some(r) = s.recipients.get_mut(1) {
        r.attempts = 3;
        r.last_attempt = Some(at(99));
        r.last = Some(Diagnostic::remote(
            Reply::new(451, Some(EnhancedStatus::new(4, 7, 1)), "Greylisted\nlater").unwrap(),
        ));
    }
    if let Some(r) = s.recipients.get_mut(2) {
        r.status = RecipientStatus::Failed;
        r.last = Some(Diagnostic::local(
            EnhancedStatus::new(5, 1, 10),
            "null MX: example.net accepts no mail",
        ));
    }
    s
}

fn slot_of(s: &MessageState, seq: u64) -> Vec<u8> {
    let (payload, fit) = encode_fitting(s, usize::MAX).unwrap();
    assert_eq!(fit, Fit::Whole);
    encode_slot(&id(), seq, &payload)
}

#[test]
fn a_state_round_trips_through_a_slot() {
    for n in [0, 1, 2, 3, 50] {
        let s = state(n);
        let slot = decode_slot(&id(), &slot_of(&s, 7)).unwrap();
        assert_eq!(slot.seq, 7);
        assert_eq!(slot.state, s, "{n} recipients");
    }
}

#[test]
fn a_remote_diagnostic_stores_its_reply_once() {
    let mut s = state(2);
    let with = encode_state(&s, Shorten::None).len();
    s.recipients[1].last.as_mut().unwrap().text = "something else".into();
    let without = encode_state(&s, Shorten::None).len();
    assert!(with < without, "{with} {without}");
    assert_eq!(decode_state(&encode_state(&s, Shorten::None)).unwrap(), s);
}

#[test]
fn the_newest_valid_slot_wins_and_a_torn_one_falls_back_to_the_other() {
    let (old, new) = (state(3), {
        let mut s = state(3);
        s.attempts = 4;
        s.recipients[1].status = RecipientStatus::Delivered;
        s
    });
    let a = slot_of(&old, 5);
    let b = slot_of(&new, 6);
    assert_eq!(newest(&id(), &[&a, &b]).unwrap().1.state, new);
    assert_eq!(newest(&id(), &[&b, &a]).unwrap().0, 0);
    // The write of slot b torn at every octet: the old state, never a mixture.
    for cut in 0..b.len() {
        let mut torn = a.clone();
        torn.resize(b.len().max(a.len()), 0xAA);
        torn[..cut].copy_from_slice(&b[..cut]);
        let (which, slot) = newest(&id(), &[&a, &torn]).unwrap();
        if slot.seq == 6 {
            assert_eq!(slot.state, new, "cut {cut}");
        } else {
            assert_eq!((which, slot.seq, &slot.state), (0, 5, &old), "cut {cut}");
        }
    }
}

#[test]
fn a_slot_of_another_message_does_not_read() {
    let s = slot_of(&state(2), 1);
    let other = QueueId::parse("0PC4F8X1RZ3A7KQ3").unwrap();
    assert_eq!(decode_slot(&other, &s), Err(SlotError::Checksum));
}

#[test]
fn an_unwritten_slot_is_empty_and_two_of_them_say_so() {
    let zeros = vec![0u8; 512];
    assert_eq!(decode_slot(&id(), &zeros), Err(SlotError::Empty));
    assert_eq!(
        newest(&id(), &[&zeros, &zeros]).unwrap_err(),
        [SlotError::Empty, SlotError::Empty]
    );
    assert!(matches!(
        decode_slot(&id(), &[1, 0, 0]),
        Err(SlotError::Truncated { need: 16, have: 3 })
    ));
}

#[test]
fn a_state_too_large_for_its_slot_is_shortened_texts_first() {
    let mut s = state(3);
    let long = "x".repeat(5000);
    s.recipients[2].last = Some(Diagnostic::local(EnhancedStatus::new(5, 1, 1), &long));
    let cap = slot_len(3).unwrap() as usize - SLOT_HEADER_LEN;
    let (payload, fit) = encode_fitting(&s, cap).unwrap();
    assert!(payload.len() <= cap);
    assert_eq!(fit, Fit::TextsShortened(1024));
    let back = decode_state(&payload).unwrap();
    let text = &back.recipients[2].last.as_ref().unwrap().text;
    assert_eq!(text.len(), 1024);
    assert!(text.ends_with(ELLIPSIS));
    // Everything else is intact.
    assert_eq!(back.recipients[0], s.recipients[0]);
    assert_eq!(back.recipients[1], s.recipients[1]);
    assert_eq!(as_stored(&s, fit).unwrap(), back);
}

#[test]
fn the_status_of_every_recipient_always_fits_its_slot() {
    for n in [1usize, 2, 9, 100, 1000, 20_000] {
        let mut s = state(n.max(3));
        s.recipients.truncate(n);
        for (i, r) in s.recipients.iter_mut().enumerate() {
            r.attempts = i as u32;
            r.last_attempt = Some(at(i as u64));
            r.remote_mta = Some("m".repeat(300));
            r.last = Some(Diagnostic::remote(
                Reply::new(450, None, "y".repeat(2000)).unwrap(),
            ));
            if i % 3 == 0 {
                r.status = RecipientStatus::Delivered;
            }
        }
        let cap = slot_len(n).unwrap() as usize - SLOT_HEADER_LEN;
        assert!(cap >= min_payload_len(n));
        let (payload, fit) = encode_fitting(&s, cap).unwrap();
        assert!(fit > Fit::Whole, "{n}");
        let back = decode_state(&payload).unwrap();
        assert_eq!(back.recipients.len(), n);
        for (a, b) in back.recipients.iter().zip(&s.recipients) {
            assert_eq!(
                (a.status, a.attempts, a.last_attempt),
                (b.status, b.attempts, b.last_attempt)
            );
        }
    }
}

#[test]
fn shortening_cuts_on_a_character_boundary() {
    assert_eq!(shorten("héllo wörld", Some(100)), "héllo wörld");
    assert_eq!(shorten("ééééééééééééééé", Some(16)), "éééééé…");
    assert_eq!(shorten("ééé", Some(3)), "é");
    assert_eq!(shorten("abc", Some(0)), "");
}

#[test]
fn slots_are_aligned_and_grow_with_the_recipients() {
    let sizes: Vec<u32> = [1, 2, 8, 9, 100, 10_000]
        .map(|n| slot_len(n).unwrap())
        .into();
    assert!(sizes.iter().all(|s| u64::from(*s) % SLOT_ALIGN == 0));
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(sizes[0], 512);
    assert_eq!(sizes[1], 1024);
    assert!(slot_len(usize::MAX / 2).is_none());
}

#[test]
fn bad_payloads_say_where_they_are_bad() {
    let good = encode_state(&state(3), Shorten::None);
    assert!(matches!(
        decode_state(&good[..good.len() - 1]),
        Err(SlotError::Invalid { .. })
    ));
    let mut extra = good.clone();
    extra.push(0);
    let err = decode_state(&extra).unwrap_err();
    assert!(err.to_string().contains("1 octets follow"), "{err}");
    let mut version = good.clone();
    version[0] = 9;
    assert!(
        decode_state(&version)
            .unwrap_err()
            .to_string()
            .contains("version 9")
    );
    // A count of recipients the payload cannot hold is refused before allocating.
    let mut huge = good[..FIXED_LEN].to_vec();
    huge[FIXED_LEN - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_state(&huge),
        Err(SlotError::Invalid { .. })
    ));
}

#[test]
fn a_stored_reply_is_checked_like_a_new_one() {
    let mut s = state(2);
    s.recipients[1].last = Some(Diagnostic::remote(Reply::new(550, None, "no").unwrap()));
    let mut bytes = encode_state(&s, Shorten::None);
    // Find the reply code 550 and make it 632.
    let pos = bytes
        .windows(2)
        .position(|w| w == 550u16.to_le_bytes())
        .unwrap();
    bytes[pos..pos + 2].copy_from_slice(&632u16.to_le_bytes());
    assert!(matches!(
        decode_state(&bytes),
        Err(SlotError::Invalid { .. })
    ));
}

proptest! {
    #[test]
    fn decoding_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_slot(&id(), &bytes);
        let _ = decode_state(&bytes);
    }

    #[test]
    fn decoding_never_panics_on_a_damaged_payload(flip in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut bytes = encode_state(&state(3), Shorten::None);
        let flip = flip % bytes.len();
        bytes[flip] = byte;
        bytes.truncate(cut.min(bytes.len()));
        if let Ok(s) = decode_state(&bytes) {
            // Whatever decodes is a state that survives its next save unchanged.
            prop_assert_eq!(decode_state(&encode_state(&s, Shorten::None)).unwrap(), s);
        }
    }
}
