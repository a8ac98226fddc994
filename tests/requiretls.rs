//! The receiving side of REQUIRETLS (RFC 8689 §4.1) against a real client, Python's smtplib:
//! the keyword is offered only inside TLS (STARTTLS or the implicit-TLS listener), the MAIL
//! parameter is refused in the clear, and a message taken under it is spooled with the flag.
//! End to end, such a message relayed to a next hop without TLS (Postfix's smtp-sink) is
//! returned, never sent in the clear.

mod support;

use std::sync::Arc;
use std::time::Duration;

use postrider::Outcome;
use postrider::server::{Endpoint, ListenerKind, Server, ServerTls, serve};
use postrider::spool::MemorySpool;
use support::engine::temp;
use support::server::{Options, TestServer, engine_relaying_to, write_certificate};
use support::sink::Sink;
use tokio::process::Command;
use tokio::sync::watch;

/// A client session; prints what it saw as JSON. Modes: `clear` (no TLS; tries REQUIRETLS),
/// `starttls` (sends one message with REQUIRETLS and one without), `implicit` (TLS from the
/// first octet; only looks at EHLO).
const CLIENT: &str = r#"
import json, smtplib, ssl, sys
port, mode = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
out = {}
msg = "From: pbx@example.test\r\nSubject: %s\r\n\r\nvoicemail\r\n"
if mode == "implicit":
    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=30)
    s.ehlo("python.example")
else:
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("python.example")
    out["offered_in_the_clear"] = s.has_extn("requiretls")
    if mode == "clear":
        try:
            s.sendmail("pbx@example.test", ["alice@example.org"], msg % "clear", mail_options=["REQUIRETLS"])
            out["sent"] = True
        except smtplib.SMTPSenderRefused as e:
            out["refused"] = [e.smtp_code, e.smtp_error.decode()]
    else:
        s.starttls(context=ctx)
        s.ehlo("python.example")
out["offered"] = s.has_extn("requiretls")
if mode == "starttls":
    s.sendmail("pbx@example.test", ["alice@example.org"], msg % "requiretls", mail_options=["REQUIRETLS"])
    s.sendmail("pbx@example.test", ["bob@example.org"], msg % "plain")
    out["sent"] = True
s.quit()
print(json.dumps(out))
"#;

async fn smtplib(port: u16, mode: &str) -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string(), mode])
        .output()
        .await
        .expect("python3 runs (Debian package python3)");
    let shown = format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {shown}"))
}

fn with_tls(kind: ListenerKind) -> Options {
    Options {
        kind,
        tls: true,
        ..Options::default()
    }
}

#[tokio::test]
async fn requiretls_is_offered_only_inside_tls_and_refused_in_the_clear_with_5_7_10() {
    let s = TestServer::start(with_tls(ListenerKind::Smtp)).await;
    let clear = smtplib(s.port(), "clear").await;
    assert_eq!(clear["offered"], false, "{clear}");
    let refused = &clear["refused"];
    assert_eq!(refused[0], 530, "{clear}");
    assert!(
        refused[1].as_str().unwrap_or("").starts_with("5.7.10 "),
        "{clear}"
    );
    let upgraded = smtplib(s.port(), "starttls").await;
    assert_eq!(upgraded["offered_in_the_clear"], false, "{upgraded}");
    assert_eq!(upgraded["offered"], true, "{upgraded}");
    assert_eq!(s.delivered(2).await.len(), 2);

    let implicit = TestServer::start(with_tls(ListenerKind::Submissions)).await;
    let on_tls = smtplib(implicit.port(), "implicit").await;
    assert_eq!(on_tls["offered"], true, "{on_tls}");
}

#[tokio::test]
async fn a_message_taken_under_requiretls_is_spooled_with_the_flag_and_the_next_one_without() {
    let s = TestServer::start(with_tls(ListenerKind::Smtp)).await;
    // Deferred, so both stay in the spool to be looked at.
    s.transport.set_rule(Box::new(|_| temp()));
    let out = smtplib(s.port(), "starttls").await;
    assert_eq!(out["sent"], true, "{out}");
    let envelopes = s.stored_envelopes().await;
    assert_eq!(envelopes.len(), 2, "{envelopes:#?}");
    let flag_for = |rcpt: &str| {
        envelopes
            .iter()
            .find(|e| e.recipients[0].address.to_string() == rcpt)
            .map(|e| e.requiretls)
    };
    assert_eq!(flag_for("alice@example.org"), Some(true));
    assert_eq!(flag_for("bob@example.org"), Some(false));
}

/// The first report of an attempt for `rcpt` that settled it (delivered or failed).
async fn settled(
    events: &mut tokio::sync::broadcast::Receiver<postrider::engine::DeliveryEvent>,
    rcpt: &str,
) -> Outcome {
    let wait = async {
        loop {
            let e = events.recv().await.expect("the engine keeps running");
            if e.recipient.to_string() == rcpt && !matches!(e.outcome, Outcome::Deferred(_)) {
                return e.outcome;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no final outcome for {rcpt} within 60 s"))
}

#[tokio::test]
async fn a_requiretls_message_relayed_to_a_next_hop_without_tls_is_returned_and_never_sent() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, router, hostname) =
        engine_relaying_to(sink.port(), Arc::new(MemorySpool::new())).await;
    let mut events = engine.subscribe();
    let server = Server::builder(engine.clone(), router, hostname).build();
    let (cert, key) = write_certificate(dir.path());
    let endpoint = Endpoint::with_tls(
        ListenerKind::Smtp,
        Arc::new(ServerTls::load(cert, key).unwrap()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, mut stopped) = watch::channel(false);
    let served = tokio::spawn(serve(listener, server, endpoint, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    let out = smtplib(port, "starttls").await;
    assert_eq!(out["sent"], true, "{out}");
    // smtp-sink offers no STARTTLS: the REQUIRETLS message is returned (5.7.10), the other
    // one goes as usual.
    match settled(&mut events, "alice@example.org").await {
        Outcome::Failed(d) => {
            assert_eq!(d.status.to_string(), "5.7.10", "{d:#?}");
            assert!(d.text.contains("REQUIRETLS"), "{d:#?}");
        }
        other => panic!("expected a failure, got {other:#?}"),
    }
    assert!(matches!(
        settled(&mut events, "bob@example.org").await,
        Outcome::Delivered { .. }
    ));
    let counts = sink.wait_for(1, 0, Duration::from_secs(30)).await;
    assert_eq!(
        counts.messages, 1,
        "only the plain message reached the sink"
    );
    let _ = stop.send(true);
    served.await.unwrap();
    engine.shutdown().await;
}
