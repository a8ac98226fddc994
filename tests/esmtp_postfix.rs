//! EsmtpTransport against a real Postfix smtpd on 127.0.0.1:25 (set up by
//! `.ci/setup-postfix.sh`): STARTTLS at each policy level, and a real refusal.

mod support;
use support::esmtp;
use support::postfix;

use esmtp::*;
use postrider::resolve::StaticResolver;
use postrider::route::TlsLevel;
use postrider::transport::esmtp::EsmtpTransport;
use postrider::{Mailer, Outcome, Route};

/// Delivers one message to `postrider-sink@localhost` and returns Postfix's view of it.
async fn deliver_to_postfix(t: &EsmtpTransport, route: &Route) -> postfix::Received {
    postfix::require_postfix().await;
    let m = message(&[postfix::SINK_RCPT], &body("to postfix"));
    let reports = t.deliver_all(route, std::slice::from_ref(&m)).await;
    let r = report(&reports, &m, 0);
    let Outcome::Delivered { reply } = &r.outcome else {
        panic!("Postfix did not accept the message: {r:#?}");
    };
    assert!(reply.text().starts_with("Ok: queued as "), "{reply}");
    let qid = postfix::queue_id(reply.text());
    postfix::wait_for_delivery(&qid, postfix::SINK_RCPT).await
}

#[tokio::test]
async fn postfix_accepts_mail_over_opportunistic_starttls() {
    let hop = literal_hop(25);
    let t = transport(
        config(),
        StaticResolver::new(),
        policy_for(&hop, tls_policy(TlsLevel::May)),
    );
    let got = deliver_to_postfix(&t, &literal_route(25)).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(got.tls, "Postfix logged no TLS for the session: {got:?}");
}

#[tokio::test]
async fn postfix_accepts_mail_with_tls_required_but_unverified() {
    let hop = literal_hop(25);
    let t = transport(
        config(),
        StaticResolver::new(),
        policy_for(&hop, tls_policy(TlsLevel::Encrypt)),
    );
    let got = deliver_to_postfix(&t, &literal_route(25)).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(got.tls, "{got:?}");
}

#[tokio::test]
async fn postfix_accepts_mail_with_a_verified_certificate_for_localhost() {
    postfix::require_postfix().await;
    let mut cfg = config();
    let pem = std::fs::read(postfix::CERT).unwrap();
    cfg.add_trust_anchors_pem(&pem, postfix::CERT).unwrap();
    let hop = named_hop("localhost", 25);
    let t = transport(
        cfg,
        StaticResolver::new().with_host(d("localhost"), LOCALHOST),
        policy_for(&hop, tls_policy(TlsLevel::Verify)),
    );
    let got = deliver_to_postfix(&t, &named_route(Mailer::Esmtp, "localhost", 25)).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(got.tls, "{got:?}");
}

#[tokio::test]
async fn postfix_without_trust_in_its_certificate_fails_verify_with_the_reason() {
    postfix::require_postfix().await;
    let hop = named_hop("localhost", 25);
    let t = transport(
        config(),
        StaticResolver::new().with_host(d("localhost"), LOCALHOST),
        policy_for(&hop, tls_policy(TlsLevel::Verify)),
    );
    let m = message(&[postfix::SINK_RCPT], &body("unverified"));
    let reports = t
        .deliver_all(
            &named_route(Mailer::Esmtp, "localhost", 25),
            std::slice::from_ref(&m),
        )
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.7.5",
        "TLS handshake with localhost [127.0.0.1] failed: the server's certificate has an \
         unknown issuer (not signed by a trusted CA)",
    );
}

#[tokio::test]
async fn postfix_refuses_an_unknown_local_user_permanently() {
    postfix::require_postfix().await;
    let m = message(&["no-such-user-here@localhost"], &body("unknown"));
    let reports = plain_transport()
        .deliver_all(&literal_route(25), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.1.1",
        "550 5.1.1 <no-such-user-here@localhost>: Recipient address rejected: User unknown in \
         local recipient table",
    );
}

#[tokio::test]
async fn with_policy_none_postfix_sees_clear_text() {
    let hop = literal_hop(25);
    let t = transport(
        config(),
        StaticResolver::new(),
        policy_for(&hop, tls_policy(TlsLevel::None)),
    );
    let got = deliver_to_postfix(&t, &literal_route(25)).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(!got.tls, "{got:?}");
}
