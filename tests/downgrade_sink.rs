//! The 8BITMIME downgrade and long-line handling against Postfix's smtp-sink (Debian package
//! postfix): with `-8` it offers neither 8BITMIME nor SMTPUTF8. What arrives is valid MIME
//! that mail-parser decodes to the original octets; a DKIM signature made at submission
//! survives the conversion, and one made on the 8-bit form would not.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mail_auth::DkimResult;
use postrider::dkim::MessageSigner;
use postrider::engine::Engine;
use postrider::message::{MAX_LINE, has_long_line};
use postrider::spool::MemorySpool;
use postrider::transport::esmtp::EsmtpTransport;
use postrider::{Address, Delivery, Envelope, Outcome, ReversePath, Route, RouteError, Router};
use support::dkim::{DkimWorld, key_config};
use support::esmtp::*;
use support::messages;
use support::sink::Sink;

/// smtp-sink's record of the MAIL command.
fn mail_args(dump: &str) -> String {
    dump.lines()
        .find(|l| l.starts_with("X-Mail-Args:"))
        .unwrap_or_default()
        .to_string()
}

async fn deliver_to(sink: &Sink, from: &str, body: Vec<u8>) -> postrider::RecipientReport {
    let env = Envelope::new(
        ReversePath::parse(from).unwrap(),
        [Address::parse("alice@example.org").unwrap()],
    );
    let m = Delivery {
        id: postrider::QueueId::generate(),
        recipients: vec![0],
        envelope: Arc::new(env),
        body: body.into(),
    };
    let reports = plain_transport()
        .deliver_all(&literal_route(sink.port()), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    reports[0].clone()
}

#[tokio::test]
async fn an_8bit_voicemail_arrives_at_a_7bit_server_as_mime_that_decodes_to_the_original() {
    let sink = Sink::start_with(&["-8"], true).await;
    let recording = messages::wav(20);
    let msg = messages::voicemail("vm@ourtest.com", "alice@example.org", &recording);
    assert!(!msg.is_ascii());
    let r = deliver_to(&sink, "vm@ourtest.com", msg.clone()).await;
    assert_delivered(&r);
    let dumps = sink.dumped();
    assert_eq!(dumps.len(), 1);
    assert!(
        !mail_args(&dumps[0]).contains("BODY=8BITMIME"),
        "{}",
        mail_args(&dumps[0])
    );
    let got = messages::from_sink_dump(&dumps[0]);
    assert!(got.is_ascii(), "only 7-bit octets went to the server");
    assert!(!has_long_line(&got));
    assert_eq!(messages::decoded_parts(&got), messages::decoded_parts(&msg));
    let parts = messages::decoded_parts(&got);
    assert_eq!(parts[1], recording);
    assert!(
        String::from_utf8_lossy(&parts[0]).contains("Länge"),
        "{:?}",
        String::from_utf8_lossy(&parts[0])
    );
}

#[tokio::test]
async fn a_2_mb_line_is_re_encoded_even_for_a_server_with_8bitmime() {
    let sink = Sink::start_with(&[], true).await;
    let line = "0123456789abcdef;".repeat(2 * 1024 * 1024 / 17);
    let text = format!("CSV export follows.\r\n{line}\r\nend\r\n");
    let msg = messages::text("vm@ourtest.com", "alice@example.org", "csv", &text);
    assert!(has_long_line(&msg));
    assert_delivered(&deliver_to(&sink, "vm@ourtest.com", msg).await);
    let got = messages::from_sink_dump(&sink.dumped()[0]);
    assert!(
        got.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1),
        "no line longer than 998 octets arrived"
    );
    assert!(String::from_utf8_lossy(&got).contains("Content-Transfer-Encoding: quoted-printable"));
    let parts = messages::decoded_parts(&got);
    assert_eq!(parts.len(), 1);
    assert!(
        parts[0] == text.as_bytes(),
        "decoded {} octets, sent {}",
        parts[0].len(),
        text.len()
    );
}

#[tokio::test]
async fn an_8bit_header_to_a_server_without_smtputf8_or_8bitmime_fails_naming_the_field() {
    let sink = Sink::start_with(&["-8"], true).await;
    let msg = "From: <vm@ourtest.com>\r\nTo: <alice@example.org>\r\nSubject: Nachricht für Sie\r\n\r\nHallo\r\n";
    let r = deliver_to(&sink, "vm@ourtest.com", msg.as_bytes().to_vec()).await;
    assert_failed(
        &r,
        "5.6.3",
        &format!(
            "{} does not offer SMTPUTF8 or 8BITMIME, and the message cannot be converted: the \
             header field Subject on line 3 holds 8-bit characters, and there is no 7-bit form \
             of a raw header field; the server must offer SMTPUTF8 or 8BITMIME",
            lit(sink.port())
        ),
    );
    assert_eq!(sink.counts().messages, 0, "nothing was sent");
}

struct To(u16);

#[async_trait]
impl Router for To {
    async fn route(&self, _: &Address) -> Result<Route, RouteError> {
        Ok(literal_route(self.0))
    }
}

/// Submits `body` to an engine (signing with `signer`, if any) that delivers to the sink, and
/// waits for the outcome.
async fn through_engine(
    sink: &Sink,
    signer: Option<Arc<dyn MessageSigner>>,
    from: &str,
    body: Vec<u8>,
) -> Outcome {
    let transport: Arc<EsmtpTransport> = Arc::new(plain_transport());
    let mut builder = Engine::builder()
        .hostname(d(OUR_NAME))
        .spool(Arc::new(MemorySpool::new()))
        .router(Arc::new(To(sink.port())))
        .transport(transport);
    if let Some(s) = signer {
        builder = builder.signer(s);
    }
    let engine = builder.start().await.unwrap();
    let mut events = engine.subscribe();
    let env = Envelope::new(
        ReversePath::parse(from).unwrap(),
        [Address::parse("alice@example.org").unwrap()],
    );
    engine.submit(env, body).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("an outcome within 30 s")
        .unwrap();
    engine.shutdown().await;
    event.outcome
}

#[tokio::test]
async fn a_message_signed_at_submission_still_verifies_after_a_7bit_server() {
    let world = DkimWorld::start(&[key_config("ourtest.com", "pbx2026", "rsa2048.pem")], &[]).await;
    let sink = Sink::start_with(&["-8"], true).await;
    let recording = messages::wav(5);
    let msg = messages::voicemail("vm@ourtest.com", "alice@example.org", &recording);
    let outcome = through_engine(&sink, Some(world.signer.clone()), "vm@ourtest.com", msg).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let got = messages::from_sink_dump(&sink.dumped()[0]);
    assert!(got.starts_with(b"DKIM-Signature: "));
    assert_eq!(world.verify_mail_auth(&got).await, [DkimResult::Pass]);
    world.verify_opendkim(&got).await.unwrap();
    world.verify_dkimpy(&got, 0).await.unwrap();
    assert_eq!(messages::decoded_parts(&got)[1], recording);
}

/// Signs the 8-bit form as it is, as a signer that does not convert first would.
struct SignAsIs(Arc<postrider::dkim::DkimSigner>);

impl MessageSigner for SignAsIs {
    fn sign(
        &self,
        _: &Envelope,
        message: bytes::Bytes,
    ) -> Result<bytes::Bytes, postrider::dkim::SignError> {
        let key = &self.0.keys()[0];
        let field = key.signature_field(&message)?;
        Ok([field.as_bytes(), &message[..]].concat().into())
    }
}

#[tokio::test]
async fn a_signature_made_on_the_8bit_form_would_break_at_a_7bit_server() {
    // Why the signer converts first: the transport's conversion changes the body.
    let world = DkimWorld::start(&[key_config("ourtest.com", "pbx2026", "rsa2048.pem")], &[]).await;
    let sink = Sink::start_with(&["-8"], true).await;
    let msg = messages::eight_bit("vm@ourtest.com", "alice@example.org", "Grüße\r\n");
    let outcome = through_engine(
        &sink,
        Some(Arc::new(SignAsIs(world.signer.clone()))),
        "vm@ourtest.com",
        msg,
    )
    .await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let got = messages::from_sink_dump(&sink.dumped()[0]);
    let results = world.verify_mail_auth(&got).await;
    assert!(
        !matches!(results.as_slice(), [DkimResult::Pass]),
        "{results:?}"
    );
    assert!(world.verify_dkimpy(&got, 0).await.is_err());
}
