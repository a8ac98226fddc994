//! DKIM signing at submission, checked by three verifiers that read the key records from a
//! DNS server on loopback: mail-auth's, OpenDKIM's `opendkim-testmsg` and dkimpy's
//! `dkimverify` (Debian packages opendkim-tools, python3-dkim, python3-nacl).

mod support;

use std::sync::Arc;

use mail_auth::DkimResult;
use postrider::config::Config;
use postrider::dkim::MessageSigner;
use postrider::engine::{Clock, Engine};
use postrider::spool::MemorySpool;
use postrider::{Address, Envelope, ReversePath, Spool};
use support::dkim::{DkimWorld, all_pass, key_config};
use support::engine::{DomainRouter, ScriptedTransport, temp};
use support::messages;

const RSA_DOMAIN: &str = "ourtest.com";
const ED_DOMAIN: &str = "ed.example";

async fn world() -> DkimWorld {
    DkimWorld::start(
        &[
            key_config(RSA_DOMAIN, "pbx2026", "rsa2048.pem"),
            key_config(ED_DOMAIN, "ed1", "ed25519.pem"),
        ],
        &[],
    )
    .await
}

/// Submits `body` to an engine that signs with `world`'s keys and returns the message as
/// queued (the transport defers, so it stays in the spool).
async fn queued(signer: Arc<dyn MessageSigner>, from: &str, body: &[u8]) -> Vec<u8> {
    let clock = Clock::tokio();
    let spool = MemorySpool::new();
    let engine = Engine::builder()
        .hostname("pbx.ourtest.com".parse().unwrap())
        .spool(Arc::new(spool.clone()))
        .router(Arc::new(DomainRouter))
        .transport(ScriptedTransport::new(clock, Box::new(|_| temp())))
        .signer(signer)
        .clock(clock)
        .start()
        .await
        .unwrap();
    let env = Envelope::new(
        ReversePath::parse(from).unwrap(),
        [Address::parse("alice@example.org").unwrap()],
    );
    let id = engine.submit(env, body.to_vec()).await.unwrap();
    let stored = spool.body(&id).await.unwrap().to_vec();
    engine.shutdown().await;
    stored
}

#[tokio::test]
async fn a_7bit_message_signed_with_rsa_verifies_with_mail_auth_opendkim_and_dkimpy() {
    let w = world().await;
    let msg = messages::text(
        "vm@ourtest.com",
        "alice@example.org",
        "rsa7bit",
        "You have a new message.\r\n",
    );
    let signed = queued(w.signer.clone(), "vm@ourtest.com", &msg).await;
    assert!(
        signed.starts_with(
            b"DKIM-Signature: v=1; a=rsa-sha256; s=pbx2026; d=ourtest.com; c=relaxed/relaxed;"
        ),
        "{}",
        String::from_utf8_lossy(&signed)
    );
    assert!(signed.ends_with(&msg), "the message itself is unchanged");
    assert_eq!(w.verify_mail_auth(&signed).await, [DkimResult::Pass]);
    w.verify_opendkim(&signed).await.unwrap();
    w.verify_dkimpy(&signed, 0).await.unwrap();
}

#[tokio::test]
async fn an_ed25519_signature_verifies_with_mail_auth_opendkim_and_dkimpy() {
    let w = world().await;
    let msg = messages::text(
        "vm@ed.example",
        "alice@example.org",
        "ed25519",
        "You have a new message.\r\n",
    );
    let signed = queued(w.signer.clone(), "vm@ed.example", &msg).await;
    assert!(signed.starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256; s=ed1; d=ed.example;"));
    assert_eq!(w.verify_mail_auth(&signed).await, [DkimResult::Pass]);
    w.verify_opendkim(&signed).await.unwrap();
    w.verify_dkimpy(&signed, 0).await.unwrap();
}

#[tokio::test]
async fn an_8bit_message_is_signed_in_its_7bit_form_and_still_reads_as_the_original() {
    let w = world().await;
    let text = "Grüße aus dem Büro – vous avez reçu un message vocal.\r\n";
    let msg = messages::eight_bit("vm@ourtest.com", "alice@example.org", text);
    let signed = queued(w.signer.clone(), "vm@ourtest.com", &msg).await;
    assert!(
        signed.is_ascii(),
        "converted to quoted-printable before signing"
    );
    let shown = String::from_utf8_lossy(&signed);
    assert!(
        shown.contains("Content-Transfer-Encoding: quoted-printable"),
        "{shown}"
    );
    assert_eq!(messages::decoded_parts(&signed), [text.as_bytes()]);
    assert_eq!(w.verify_mail_auth(&signed).await, [DkimResult::Pass]);
    w.verify_opendkim(&signed).await.unwrap();
    w.verify_dkimpy(&signed, 0).await.unwrap();
}

#[tokio::test]
async fn a_voicemail_with_a_wav_recording_verifies_and_the_recording_is_intact() {
    let w = world().await;
    // Two minutes at 8 kHz, 16 bit: 1.9 MB of audio, 2.6 MB of message.
    let recording = messages::wav(120);
    let msg = messages::voicemail("vm@ourtest.com", "alice@example.org", &recording);
    assert!(msg.len() > 2_500_000);
    let signed = queued(w.signer.clone(), "vm@ourtest.com", &msg).await;
    assert!(signed.is_ascii());
    let parts = messages::decoded_parts(&signed);
    assert_eq!(parts.len(), 2, "text and recording");
    assert_eq!(parts[1], recording);
    assert_eq!(w.verify_mail_auth(&signed).await, [DkimResult::Pass]);
    w.verify_opendkim(&signed).await.unwrap();
    w.verify_dkimpy(&signed, 0).await.unwrap();
}

#[tokio::test]
async fn a_changed_body_or_header_fails_every_verifier() {
    let w = world().await;
    let msg = messages::text(
        "vm@ourtest.com",
        "alice@example.org",
        "tamper",
        "Call 555-0100 back.\r\n",
    );
    let signed = queued(w.signer.clone(), "vm@ourtest.com", &msg).await;
    let text = String::from_utf8(signed).unwrap();
    for tampered in [
        text.replace("555-0100", "555-0199"),
        text.replace("Subject: tamper", "Subject: tampered"),
    ] {
        let results = w.verify_mail_auth(tampered.as_bytes()).await;
        // A changed body is "neutral (body hash mismatch)" to mail-auth, a changed header a
        // failed signature; neither passes.
        assert!(
            matches!(
                results.as_slice(),
                [DkimResult::Fail(_) | DkimResult::Neutral(_)]
            ),
            "{results:?}"
        );
        assert!(w.verify_opendkim(tampered.as_bytes()).await.is_err());
        assert!(w.verify_dkimpy(tampered.as_bytes(), 0).await.is_err());
    }
}

#[tokio::test]
async fn a_signature_whose_published_key_is_another_fails() {
    let w = DkimWorld::start(&[key_config("wrong.example", "sel", "rsa2048.pem")], &[]).await;
    let msg = messages::text("vm@wrong.example", "a@example.org", "wrongkey", "x\r\n");
    let signed = queued(w.signer.clone(), "vm@wrong.example", &msg).await;
    assert_eq!(w.verify_mail_auth(&signed).await, [DkimResult::Pass]);
    // Another world, whose record for the same selector holds another RSA key.
    let impostor = DkimWorld::start(
        &[key_config("wrong.example", "sel", "rsa2048-other.pem")],
        &[],
    )
    .await;
    let results = impostor.verify_mail_auth(&signed).await;
    assert!(!all_pass(&results), "{results:?}");
    assert!(impostor.verify_opendkim(&signed).await.is_err());
    assert!(impostor.verify_dkimpy(&signed, 0).await.is_err());
}

#[tokio::test]
async fn mail_from_a_domain_without_a_key_is_queued_unsigned() {
    let w = world().await;
    let msg = messages::text("vm@unsigned.example", "a@example.org", "nokey", "x\r\n");
    let queued = queued(w.signer.clone(), "bounces@ourtest.com", &msg).await;
    assert_eq!(
        queued, msg,
        "the envelope sender's domain has a key, but From: decides"
    );
}

#[tokio::test]
async fn a_subdomain_is_signed_by_its_parent_domains_key() {
    let w = world().await;
    let msg = messages::text("vm@pbx.ourtest.com", "a@example.org", "sub", "x\r\n");
    let signed = queued(w.signer.clone(), "vm@pbx.ourtest.com", &msg).await;
    assert!(String::from_utf8_lossy(&signed).contains("d=ourtest.com;"));
    assert_eq!(w.verify_mail_auth(&signed).await, [DkimResult::Pass]);
    w.verify_dkimpy(&signed, 0).await.unwrap();
}

#[tokio::test]
async fn a_domain_with_an_rsa_and_an_ed25519_key_carries_two_signatures_that_both_verify() {
    let w = DkimWorld::start(
        &[
            key_config("both.example", "rsa1", "rsa2048-pkcs1.pem"),
            key_config("both.example", "ed1", "ed25519.der"),
        ],
        &[],
    )
    .await;
    let msg = messages::text("vm@both.example", "a@example.org", "dual", "x\r\n");
    let signed = queued(w.signer.clone(), "vm@both.example", &msg).await;
    assert_eq!(
        w.verify_mail_auth(&signed).await,
        [DkimResult::Pass, DkimResult::Pass]
    );
    w.verify_dkimpy(&signed, 0).await.unwrap();
    w.verify_dkimpy(&signed, 1).await.unwrap();
}

#[test]
fn a_bad_key_file_stops_the_start_up_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("dkim/missing.pem");
    let short = support::dkim::key_file("rsa1024.pem");
    let config = |key: &std::path::Path| {
        Config::parse(
            &format!(
                "[[dkim]]\ndomain = \"ourtest.com\"\nselector = \"s\"\nkey = \"{}\"\n",
                key.display()
            ),
            dir.path().join("postrider.toml"),
        )
        .unwrap()
    };
    let e = config(&missing).dkim_signer().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "DKIM key file {}: cannot read it: ",
            missing.display()
        )),
        "{e}"
    );
    let e = config(&short).dkim_signer().unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "DKIM key file {}: its RSA key is shorter than 2048 bits, which receivers refuse \
             (RFC 8301); generate a new one: openssl genpkey -algorithm RSA -pkeyopt \
             rsa_keygen_bits:2048",
            short.display()
        )
    );
    // A relative key path is relative to the configuration file.
    let c = Config::parse(
        "[[dkim]]\ndomain = \"ourtest.com\"\nselector = \"s\"\nkey = \"dkim/k.pem\"\n",
        "/etc/postrider/postrider.toml",
    )
    .unwrap();
    assert_eq!(
        c.dkim[0].key,
        std::path::Path::new("/etc/postrider/dkim/k.pem")
    );
}

#[tokio::test]
async fn an_engine_assembled_from_the_configuration_signs_with_its_dkim_keys() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mailertable"),
        "example.org error:4.4.1:451 later\n",
    )
    .unwrap();
    let key = support::dkim::key_file("rsa2048.pem");
    let config = Config::parse(
        &format!(
            "hostname = \"pbx.ourtest.com\"\nmailertable = \"mailertable\"\n\
             [spf]\npolicy = \"off\"\n\
             [[dkim]]\ndomain = \"{RSA_DOMAIN}\"\nselector = \"pbx2026\"\nkey = \"{}\"\n",
            key.display()
        ),
        dir.path().join("postrider.toml"),
    )
    .unwrap();
    let parts = config.assemble().await.unwrap();
    assert!(parts.dkim().is_some());
    let spool = MemorySpool::new();
    let engine = parts
        .engine_builder(Arc::new(spool.clone()))
        .start()
        .await
        .unwrap();
    let env = Envelope::new(
        ReversePath::parse("vm@ourtest.com").unwrap(),
        [Address::parse("alice@example.org").unwrap()],
    );
    let msg = messages::text("vm@ourtest.com", "alice@example.org", "assembled", "x\r\n");
    let id = engine.submit(env, msg).await.unwrap();
    let stored = spool.body(&id).await.unwrap().to_vec();
    engine.shutdown().await;
    assert_eq!(w.verify_mail_auth(&stored).await, [DkimResult::Pass]);

    // A bad key file stops the assembly, naming the configuration and the key file.
    let bad = Config::parse(
        "hostname = \"pbx.ourtest.com\"\n[[dkim]]\ndomain = \"ourtest.com\"\nselector = \"s\"\nkey = \"missing.pem\"\n",
        dir.path().join("postrider.toml"),
    )
    .unwrap();
    let e = bad.assemble().await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: [[dkim]]: DKIM key file {}: cannot read it",
            dir.path().join("postrider.toml").display(),
            dir.path().join("missing.pem").display()
        )),
        "{e}"
    );
}
