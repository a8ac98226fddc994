//! A real Postfix (a private instance) relaying to postrider as its `relayhost`, with SASL
//! over STARTTLS, as an office Postfix or a PBX's bundled Postfix hands its mail to a central
//! relay: `smtp_tls_security_level = encrypt`, `smtp_sasl_auth_enable = yes` with a
//! `smtp_sasl_password_maps` entry for postrider's `submission` listener. postrider (the
//! `relay` daemon, a real process) checks the password against its password file and relays
//! to Postfix's smtp-sink. A wrong password leaves the mail deferred in Postfix's queue, never
//! bounced, and postrider's log never shows the password.
//!
//! Postfix's SASL client needs Cyrus SASL's PLAIN/LOGIN plug-ins: the Debian package
//! `libsasl2-modules`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::postfix::{PrivatePostfix, SmtpTls, queue_id};
use support::relay::{HOSTNAME, Relay, free_port};
use support::server::{Client, PASSWORD, PASSWORDS, write_certificate};
use support::sink::Sink;

const LIMIT: Duration = Duration::from_secs(60);

/// The tests of this file take turns. Each picks free ports by binding port 0 and closing it,
/// and Linux readily hands the same port to the next such bind: run side by side, one test's
/// smtp-sink could fail to bind a port the other's relay had just taken, and its start would
/// mistake that listener for its own (seen once: postrider's delivery to the "sink" refused).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SASL_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/sasl2/libplain.so.2";

/// The relay with a `submission` listener (STARTTLS, AUTH against alice's password file) on
/// a free port, relaying to `sink`; returns it and that port.
fn relay_with_submission(sink: &Sink) -> (Relay, u16) {
    let cert_dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_certificate(cert_dir.path());
    let cert = std::fs::read_to_string(cert).unwrap();
    let key = std::fs::read_to_string(key).unwrap();
    let submission = free_port();
    let relay = Relay::start_with(
        sink.port(),
        &format!(
            "[server]\npasswords = \"passwd\"\n\n[[listener]]\naddress = \"127.0.0.1:{submission}\"\n\
             kind = \"submission\"\ncertificate = \"cert.pem\"\nkey = \"key.pem\"\n"
        ),
        &[
            ("passwd", PASSWORDS),
            ("cert.pem", &cert),
            ("key.pem", &key),
        ],
    );
    (relay, submission)
}

/// A private Postfix whose relayhost is postrider's submission port, with `password` for
/// alice in its SASL password map. The map's folder stays alive as long as the instance.
fn postfix_relaying_to(port: u16, password: &str) -> (PrivatePostfix, tempfile::TempDir) {
    assert!(
        Path::new(SASL_PLUGIN).exists(),
        "{SASL_PLUGIN} is missing: install the Debian package libsasl2-modules (Postfix's SASL \
         client has no PLAIN or LOGIN without it)"
    );
    let dir = tempfile::tempdir().unwrap();
    // Postfix's smtp client reads the map after dropping to the postfix user.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let map = dir.path().join("sasl_passwd");
    std::fs::write(&map, format!("[127.0.0.1]:{port} alice:{password}\n")).unwrap();
    std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o644)).unwrap();
    let postfix = PrivatePostfix::builder()
        .relayhost(&format!("[127.0.0.1]:{port}"))
        .smtp_tls(SmtpTls::Encrypt)
        .main_cf("smtp_sasl_auth_enable", "yes")
        .main_cf(
            "smtp_sasl_password_maps",
            &format!("texthash:{}", map.display()),
        )
        // The default (noplaintext) would forbid PLAIN and LOGIN even inside TLS.
        .main_cf("smtp_sasl_security_options", "noanonymous")
        .main_cf("smtp_sasl_tls_security_options", "noanonymous")
        .start();
    (postfix, dir)
}

/// Hands one message to Postfix's smtpd; returns Postfix's queue id.
async fn give_to_postfix(postfix: &PrivatePostfix, subject: &str) -> String {
    let (mut c, greeting) = Client::connect(postfix.addr()).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c.command("EHLO pbx.example.test").await;
    assert_eq!(&c.command("MAIL FROM:<pbx@example.test>").await[..3], "250");
    assert_eq!(&c.command("RCPT TO:<alice@example.org>").await[..3], "250");
    assert_eq!(&c.command("DATA").await[..3], "354");
    let reply = c
        .command(&format!(
            "From: pbx@example.test\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nvoicemail\r\n."
        ))
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    c.command("QUIT").await;
    queue_id(&reply)
}

#[tokio::test]
async fn postfix_relays_through_postrider_with_sasl_over_starttls_to_the_sink() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sink = Sink::start_with(&[], true).await;
    let (relay, submission) = relay_with_submission(&sink);
    let (postfix, _map) = postfix_relaying_to(submission, PASSWORD);
    let qid = give_to_postfix(&postfix, "through postrider").await;

    let delivered = postfix.wait_for_delivery(&qid, "alice@example.org").await;
    assert_eq!(
        delivered.status.as_deref(),
        Some("sent"),
        "{delivered:?}\n{}",
        postfix.log()
    );
    let line = delivered.line.unwrap_or_default();
    assert!(
        line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{submission}")),
        "{line}"
    );
    assert!(line.contains("250 2.0.0 OK queued as "), "{line}");
    assert_eq!(sink.wait_for(1, 0, LIMIT).await.messages, 1);
    let dump = sink.dumped().remove(0).replace("\r\n", "\n");
    assert!(dump.contains("X-Rcpt-Args: <alice@example.org>"), "{dump}");
    assert!(dump.contains("Subject: through postrider"), "{dump}");
    // postrider's trace field: TLS and AUTH, as Postfix writes them (ESMTPSA, RFC 3848).
    assert!(dump.contains("\n\t(using TLSv1."), "{dump}");
    assert!(
        dump.contains(&format!("\tby {HOSTNAME} (postrider) with ESMTPSA")),
        "{dump}"
    );
    relay.wait_for_log("authenticated as alice", 1, LIMIT);
    assert_eq!(relay.logged(PASSWORD), 0, "the password is never logged");
    // Postfix negotiated TLS before AUTH.
    assert!(
        postfix
            .log()
            .lines()
            .any(|l| l.contains("TLS connection established to 127.0.0.1")),
        "{}",
        postfix.log()
    );
}

#[tokio::test]
async fn a_wrong_password_leaves_the_mail_deferred_in_postfix_queue() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sink = Sink::start().await;
    let (relay, submission) = relay_with_submission(&sink);
    let (postfix, _map) = postfix_relaying_to(submission, "not-the-password");
    let qid = give_to_postfix(&postfix, "refused password").await;

    let delivered = postfix.wait_for_delivery(&qid, "alice@example.org").await;
    assert_eq!(
        delivered.status.as_deref(),
        Some("deferred"),
        "never bounced: {delivered:?}\n{}",
        postfix.log()
    );
    let line = delivered.line.unwrap_or_default();
    assert!(line.contains("SASL authentication failed"), "{line}");
    assert!(line.contains("535 5.7.8"), "{line}");
    let queue = postfix.queue();
    assert!(queue.contains(&qid), "still in Postfix's queue: {queue}");
    relay.wait_for_log("authentication failed for alice", 1, LIMIT);
    assert_eq!(relay.logged("not-the-password"), 0);
    assert_eq!(sink.counts().messages, 0);
}
