//! `TLS-Required: No` (RFC 8689 §3) against an MTA-STS `enforce` domain on loopback:
//! the in-process DNS server publishes the policy, the HTTPS policy host serves it, and the
//! scripted MX host presents a certificate from the trusted test CA for the wrong name, so
//! the policy refuses it while opportunistic TLS would not.

mod support;

use std::sync::Arc;
use std::time::Duration;

use postrider::route::{PolicyTable, TlsLevel};
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};
use postrider::{Delivery, Envelope, RecipientReport};
use support::esmtp::*;
use support::smtp_peer::{Script, ScriptedPeer, SessionLog, Validity, ehlo_reply};
use support::sts_server::{policy, policy_text};
use support::tls_policy::*;

/// Greeting, EHLO with STARTTLS, the handshake, EHLO again (with REQUIRETLS when `rt`).
fn starttls(rt: bool) -> Script {
    let after: &[&str] = if rt { &["REQUIRETLS"] } else { &[] };
    Script::greet(MX, &["PIPELINING", "STARTTLS"])
        .on("STARTTLS", "220 2.0.0 Ready to start TLS")
        .starttls()
        .on("EHLO ", &ehlo_reply(MX, after))
}

/// A message to alice@example.test; `header` goes first in its header section.
fn message(subject: &str, header: Option<&str>, requiretls: bool) -> Delivery {
    let mut env = Envelope::new(
        postrider::ReversePath::parse("pbx@example.com").unwrap(),
        [postrider::Address::parse("alice@example.test").unwrap()],
    );
    env.requiretls = requiretls;
    let text = match header {
        Some(h) => format!("{h}\r\n{}", body(subject)),
        None => body(subject),
    };
    delivery(env, &text)
}

/// An enforce world whose MX presents a trusted certificate for another name, with one
/// scripted session per entry of `scripts`; the transport delivers `batch` in one call.
async fn deliver(
    table: impl FnOnce(u16) -> PolicyTable,
    scripts: Vec<Script>,
    batch: &[Delivery],
) -> (Vec<RecipientReport>, Vec<SessionLog>) {
    let world = StsWorld::start(policy(&policy_text("enforce", &[MX], 86400))).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let wrong_name = world
        .ca
        .server_config(&["not-the-mx.example.test"], Validity::Current);
    let peer = ScriptedPeer::start_with_tls(scripts, Some(wrong_name)).await;
    let t = world.transport(&dns, cache.path(), table(peer.port()));
    let reports = t.deliver_all(&mx_route(peer.port()), batch).await;
    assert_complete(&reports, batch);
    (reports, peer.finish().await)
}

#[tokio::test]
async fn in_one_batch_the_ordinary_message_defers_under_the_policy_and_the_tls_required_no_one_is_delivered()
 {
    // The TLS-Required: No message comes first in the batch; it still must not share the
    // session the policy refused, nor open one the ordinary message could use.
    let batch = [
        message("relaxed", Some("tls-required:\r\n NO"), false),
        message("ordinary", None, false),
    ];
    let (reports, logs) = deliver(
        |_| PolicyTable::new(),
        vec![starttls(false).quit(), starttls(false).accept_one(1).quit()],
        &batch,
    )
    .await;
    assert_deferred_containing(
        report(&reports, &batch[1], 0),
        "4.7.5",
        "required by the MTA-STS policy of example.test (mode enforce)",
    );
    assert_delivered(report(&reports, &batch[0], 0));
    assert_eq!(logs.len(), 2, "{logs:#?}");
    assert!(
        !logs[0].lines.iter().any(|l| l.starts_with("MAIL")),
        "{:#?}",
        logs[0]
    );
    // Opportunistic TLS: STARTTLS was still used for the relaxed message.
    assert!(logs[1].tls, "{:#?}", logs[1]);
    assert_eq!(logs[1].messages.len(), 1);
    let sent = String::from_utf8_lossy(&logs[1].messages[0]).into_owned();
    assert!(sent.contains("Subject: relaxed"), "{sent}");
}

#[tokio::test]
async fn with_requiretls_the_tls_required_header_is_ignored() {
    let batch = [message("both", Some("TLS-Required: No"), true)];
    let (reports, logs) =
        deliver(|_| PolicyTable::new(), vec![starttls(true).quit()], &batch).await;
    assert_deferred_containing(
        report(&reports, &batch[0], 0),
        "4.7.5",
        "required by the MTA-STS policy of example.test (mode enforce)",
    );
    assert!(!logs[0].lines.iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn a_verify_line_in_the_policy_file_is_not_overridden_by_the_header() {
    let batch = [message("pinned", Some("TLS-Required: No"), false)];
    let (reports, logs) = deliver(
        |port| policy_for(&mx_hop(port), tls_policy(TlsLevel::Verify)),
        vec![starttls(false).quit()],
        &batch,
    )
    .await;
    assert_deferred_containing(
        report(&reports, &batch[0], 0),
        "4.7.5",
        "does not match the host name",
    );
    assert!(!logs[0].lines.iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn a_tls_required_field_in_the_body_or_with_another_value_changes_nothing() {
    let in_body = {
        let mut env = Envelope::new(
            postrider::ReversePath::parse("pbx@example.com").unwrap(),
            [postrider::Address::parse("alice@example.test").unwrap()],
        );
        env.requiretls = false;
        delivery(env, &format!("{}TLS-Required: No\r\n", body("in body")))
    };
    let batch = [in_body, message("yes", Some("TLS-Required: Yes"), false)];
    let (reports, _) = deliver(|_| PolicyTable::new(), vec![starttls(false).quit()], &batch).await;
    for m in &batch {
        assert_deferred_containing(report(&reports, m, 0), "4.7.5", "mode enforce");
    }
}

#[tokio::test]
async fn a_session_parked_after_a_tls_required_no_message_never_carries_ordinary_mail() {
    let world = StsWorld::start(policy(&policy_text("enforce", &[MX], 86400))).await;
    let server = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let wrong_name = world
        .ca
        .server_config(&["not-the-mx.example.test"], Validity::Current);
    // The first session would take a second message too, if it were given one.
    let peer = ScriptedPeer::start_with_tls(
        vec![
            starttls(false).accept_one(1).accept_one(1).quit(),
            starttls(false).quit(),
        ],
        Some(wrong_name),
    )
    .await;
    let dns = resolver(&server);
    let mut config = EsmtpConfig {
        connection_cache: Some(Duration::from_secs(30)),
        ..config()
    };
    config.tls_roots = world.roots();
    config.tls_policy = Some(Arc::new(world.outbound(&dns, cache.path())));
    let t = EsmtpTransport::new(config, Arc::new(dns), Arc::new(PolicyTable::new()));
    let route = mx_route(peer.port());
    let relaxed = [message("relaxed", Some("TLS-Required: No"), false)];
    let reports = t.deliver_all(&route, &relaxed).await;
    assert_delivered(report(&reports, &relaxed[0], 0));
    let ordinary = [message("ordinary", None, false)];
    let reports = t.deliver_all(&route, &ordinary).await;
    assert_deferred_containing(
        report(&reports, &ordinary[0], 0),
        "4.7.5",
        "required by the MTA-STS policy of example.test (mode enforce)",
    );
    drop(t);
    let logs = peer.finish().await;
    assert_eq!(logs[0].messages.len(), 1, "{:#?}", logs[0]);
}
