//! The 8BITMIME downgrade against a real Postfix (a private instance, Debian package postfix)
//! that does not offer 8BITMIME (`smtpd_discard_ehlo_keywords = 8bitmime`) and relays to
//! smtp-sink: Postfix accepts what postrider sends, relays it, and what arrives is valid MIME
//! that decodes to the original octets, with its DKIM signature intact.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mail_auth::DkimResult;
use postrider::dkim::MessageSigner;
use postrider::message::has_long_line;
use postrider::{Address, Delivery, Envelope, ReversePath};
use support::dkim::{DkimWorld, key_config};
use support::esmtp::*;
use support::messages;
use support::postfix::{PrivatePostfix, queue_id};
use support::sink::Sink;

const RCPT: &str = "alice@example.test";

/// A private Postfix without 8BITMIME that relays everything to `sink`.
fn seven_bit_postfix(sink: &Sink) -> PrivatePostfix {
    PrivatePostfix::builder()
        .discard_ehlo_keywords(&["8bitmime"])
        .relayhost(&format!("[127.0.0.1]:{}", sink.port()))
        .start()
}

/// Delivers `body` to Postfix with postrider's transport; Postfix's queue id.
async fn deliver(pf: &PrivatePostfix, body: Vec<u8>) -> String {
    let env = Envelope::new(
        ReversePath::parse("vm@ourtest.com").unwrap(),
        [Address::parse(RCPT).unwrap()],
    );
    let m = Delivery {
        id: postrider::QueueId::generate(),
        recipients: vec![0],
        envelope: Arc::new(env),
        body: body.into(),
    };
    let reports = plain_transport()
        .deliver_all(&literal_route(pf.port()), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    match &reports[0].outcome {
        postrider::Outcome::Delivered { reply } => queue_id(reply.text()),
        other => panic!(
            "Postfix did not accept the message: {other:?}\n{}",
            pf.log()
        ),
    }
}

/// The message smtp-sink got from Postfix.
async fn relayed(pf: &PrivatePostfix, sink: &Sink, qid: &str) -> Vec<u8> {
    let got = pf.wait_for_delivery(qid, RCPT).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}\n{}", pf.log());
    sink.wait_for(1, 1, Duration::from_secs(10)).await;
    let dumps = sink.dumped();
    assert_eq!(dumps.len(), 1);
    // smtp-sink's own fields go; Postfix's Received: field stays, as it would for a reader.
    messages::from_sink_dump(&dumps[0])
}

#[tokio::test]
async fn postfix_without_8bitmime_gets_a_7bit_voicemail_that_decodes_to_the_original() {
    let sink = Sink::start_with(&[], true).await;
    let pf = seven_bit_postfix(&sink);
    let recording = messages::wav(10);
    let msg = messages::voicemail("vm@ourtest.com", RCPT, &recording);
    let qid = deliver(&pf, msg.clone()).await;
    let got = relayed(&pf, &sink, &qid).await;
    assert!(got.is_ascii());
    assert!(!has_long_line(&got));
    let parts = messages::decoded_parts(&got);
    assert_eq!(parts, messages::decoded_parts(&msg));
    assert_eq!(parts[1], recording);
}

#[tokio::test]
async fn a_signed_8bit_message_keeps_its_signature_through_postfix() {
    let world = DkimWorld::start(&[key_config("ourtest.com", "pbx2026", "rsa2048.pem")], &[]).await;
    let sink = Sink::start_with(&[], true).await;
    let pf = seven_bit_postfix(&sink);
    let text = "Grüße – vous avez un message.\r\n";
    let msg = messages::eight_bit("vm@ourtest.com", RCPT, text);
    let env = Envelope::new(
        ReversePath::parse("vm@ourtest.com").unwrap(),
        [Address::parse(RCPT).unwrap()],
    );
    let signed = world.signer.sign(&env, msg.into()).unwrap().to_vec();
    let qid = deliver(&pf, signed).await;
    let got = relayed(&pf, &sink, &qid).await;
    assert_eq!(messages::decoded_parts(&got), [text.as_bytes()]);
    assert_eq!(world.verify_mail_auth(&got).await, [DkimResult::Pass]);
    world.verify_opendkim(&got).await.unwrap();
    world.verify_dkimpy(&got, 0).await.unwrap();
}
