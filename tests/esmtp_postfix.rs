//! EsmtpTransport against a real Postfix smtpd: a private instance per test (its own
//! configuration, queue, log, certificate and loopback port; see `support::postfix`).
//! STARTTLS at each policy level, and a real refusal.

mod support;
use support::esmtp;
use support::postfix::{self, PrivatePostfix, SmtpdTls};

use esmtp::*;
use postrider::resolve::StaticResolver;
use postrider::route::TlsLevel;
use postrider::transport::esmtp::EsmtpTransport;
use postrider::{Mailer, Outcome, Route};

/// A recipient the instances accept and deliver to /dev/null.
const SINK_RCPT: &str = "postrider-sink@localhost";

/// A private Postfix offering STARTTLS (`may`) that delivers `SINK_RCPT` to /dev/null.
fn start_postfix() -> PrivatePostfix {
    PrivatePostfix::builder()
        .smtpd_tls(SmtpdTls::May)
        .alias("postrider-sink", "/dev/null")
        .start()
}

/// Delivers one message to `SINK_RCPT` and returns Postfix's view of it.
async fn deliver_to_postfix(
    pf: &PrivatePostfix,
    t: &EsmtpTransport,
    route: &Route,
) -> postfix::Received {
    let m = message(&[SINK_RCPT], &body("to postfix"));
    let reports = t.deliver_all(route, std::slice::from_ref(&m)).await;
    let r = report(&reports, &m, 0);
    let Outcome::Delivered { reply } = &r.outcome else {
        panic!("Postfix did not accept the message: {r:#?}\n{}", pf.log());
    };
    assert!(reply.text().starts_with("Ok: queued as "), "{reply}");
    let qid = postfix::queue_id(reply.text());
    pf.wait_for_delivery(&qid, SINK_RCPT).await
}

#[tokio::test]
async fn postfix_accepts_mail_over_opportunistic_starttls() {
    let pf = start_postfix();
    let hop = literal_hop(pf.port());
    let t = transport(
        config(),
        StaticResolver::new(),
        policy_for(&hop, tls_policy(TlsLevel::May)),
    );
    let got = deliver_to_postfix(&pf, &t, &literal_route(pf.port())).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(got.tls, "Postfix logged no TLS for the session: {got:?}");
}

#[tokio::test]
async fn postfix_accepts_mail_with_tls_required_but_unverified() {
    let pf = start_postfix();
    let hop = literal_hop(pf.port());
    let t = transport(
        config(),
        StaticResolver::new(),
        policy_for(&hop, tls_policy(TlsLevel::Encrypt)),
    );
    let got = deliver_to_postfix(&pf, &t, &literal_route(pf.port())).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(got.tls, "{got:?}");
}

#[tokio::test]
async fn postfix_accepts_mail_with_a_verified_certificate_for_localhost() {
    let pf = start_postfix();
    let mut cfg = config();
    cfg.add_trust_anchors_pem(pf.ca_pem(), "the private Postfix's CA")
        .unwrap();
    let hop = named_hop("localhost", pf.port());
    let t = transport(
        cfg,
        StaticResolver::new().with_host(d("localhost"), LOCALHOST),
        policy_for(&hop, tls_policy(TlsLevel::Verify)),
    );
    let route = named_route(Mailer::Esmtp, "localhost", pf.port());
    let got = deliver_to_postfix(&pf, &t, &route).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(got.tls, "{got:?}");
}

#[tokio::test]
async fn postfix_without_trust_in_its_certificate_fails_verify_with_the_reason() {
    let pf = start_postfix();
    let hop = named_hop("localhost", pf.port());
    let t = transport(
        config(),
        StaticResolver::new().with_host(d("localhost"), LOCALHOST),
        policy_for(&hop, tls_policy(TlsLevel::Verify)),
    );
    let m = message(&[SINK_RCPT], &body("unverified"));
    let reports = t
        .deliver_all(
            &named_route(Mailer::Esmtp, "localhost", pf.port()),
            std::slice::from_ref(&m),
        )
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.7.5",
        &format!(
            "TLS handshake with localhost [127.0.0.1]:{} failed: the server's certificate has \
             an unknown issuer (not signed by a trusted CA)",
            pf.port()
        ),
    );
}

#[tokio::test]
async fn postfix_refuses_an_unknown_local_user_permanently() {
    let pf = start_postfix();
    let m = message(&["no-such-user-here@localhost"], &body("unknown"));
    let reports = plain_transport()
        .deliver_all(&literal_route(pf.port()), std::slice::from_ref(&m))
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
    let pf = start_postfix();
    let hop = literal_hop(pf.port());
    let t = transport(
        config(),
        StaticResolver::new(),
        policy_for(&hop, tls_policy(TlsLevel::None)),
    );
    let got = deliver_to_postfix(&pf, &t, &literal_route(pf.port())).await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}");
    assert!(!got.tls, "{got:?}");
}
