//! AUTH XOAUTH2 and OAUTHBEARER against scripted SMTP peers with real TLS: the SASL strings
//! as sent, the error challenges answered as the protocols say, tokens from a file and from a
//! command, and a retry with a renewed token.

mod support;

use postrider::oauth2::{OAuth2Mechanism, TokenSpec};
use postrider::resolve::StaticResolver;
use postrider::route::{Origin, PolicyTable};
use support::esmtp::*;
use support::oauth::{
    GMAIL_CHALLENGE, USER, one, policy, sasl, starttls_offering, tls_peer, transport_for, xoauth2,
};
use support::smtp_peer::TestCa;

fn token_file(dir: &tempfile::TempDir, token: &str) -> std::path::PathBuf {
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

#[tokio::test]
async fn xoauth2_sends_user_and_bearer_token_from_the_token_file() {
    let ca = TestCa::new("test CA");
    let peer = tls_peer(
        &ca,
        vec![
            starttls_offering("smtp.test", "AUTH LOGIN XOAUTH2")
                .on("AUTH XOAUTH2 ", "235 2.7.0 Accepted")
                .accept_one(1)
                .quit(),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, "EwBoA8l6BAAU.file-token");
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::File(file)),
    );
    assert_delivered(&one(&t, peer.port()).await);
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert!(logs[0].tls, "the token is sent only after STARTTLS");
    let auth = logs[0]
        .lines
        .iter()
        .find(|l| l.starts_with("AUTH "))
        .unwrap();
    assert_eq!(sasl(auth), xoauth2("EwBoA8l6BAAU.file-token"));
}

#[tokio::test]
async fn oauthbearer_carries_the_gs2_header_host_port_and_the_token_from_a_command() {
    let ca = TestCa::new("test CA");
    let peer = tls_peer(
        &ca,
        vec![
            starttls_offering("smtp.test", "AUTH XOAUTH2 OAUTHBEARER")
                .on("AUTH OAUTHBEARER ", "235 2.7.0 Accepted")
                .accept_one(1)
                .quit(),
        ],
    )
    .await;
    let t = transport_for(
        &ca,
        peer.port(),
        // auto: OAUTHBEARER is offered, so it is preferred.
        policy(
            OAuth2Mechanism::Auto,
            TokenSpec::Command("printf 'ya29.command-token\\n'".into()),
        ),
    );
    assert_delivered(&one(&t, peer.port()).await);
    let port = peer.port();
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    let auth = logs[0]
        .lines
        .iter()
        .find(|l| l.starts_with("AUTH "))
        .unwrap();
    assert!(auth.starts_with("AUTH OAUTHBEARER "));
    assert_eq!(
        sasl(auth),
        format!(
            "n,a={USER},\x01host=smtp.test\x01port={port}\x01auth=Bearer ya29.command-token\x01\x01"
        )
    );
}

#[tokio::test]
async fn an_xoauth2_error_challenge_gets_an_empty_response_and_the_535_defers() {
    let ca = TestCa::new("test CA");
    let peer = tls_peer(
        &ca,
        vec![
            starttls_offering("smtp.test", "AUTH XOAUTH2")
                .on("AUTH XOAUTH2 ", GMAIL_CHALLENGE)
                .on(
                    "",
                    "535-5.7.8 Username and Password not accepted.\n535 5.7.8 Learn more",
                )
                .quit(),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, "expired-token");
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::File(file)),
    );
    let r = one(&t, peer.port()).await;
    // The file still holds the refused token: no retry, and the deferral says what the
    // challenge said. A refused token is this side's to fix (as a refused password is), so
    // the mail waits for the fix instead of bouncing.
    assert_deferred(
        &r,
        "4.7.8",
        &format!(
            "authentication failed at smtp.test:{} for {USER} with AUTH XOAUTH2: 535 5.7.8 \
             Username and Password not accepted. Learn more (OAuth2 status 401, scope \
             https://mail.google.com/); check the OAuth2 account and token source in the \
             policy for this next hop (the mail stays queued)",
            peer.port()
        ),
    );
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    let i = logs[0]
        .lines
        .iter()
        .position(|l| l.starts_with("AUTH XOAUTH2"))
        .unwrap();
    assert_eq!(
        logs[0].lines[i + 1],
        "",
        "an empty response to the challenge"
    );
    assert_eq!(logs[0].lines[i + 2], "QUIT");
}

#[tokio::test]
async fn an_oauthbearer_error_challenge_is_answered_with_the_dummy_0x01() {
    let ca = TestCa::new("test CA");
    // RFC 7628 §4.3's challenge.
    let challenge = "334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=";
    let peer = tls_peer(
        &ca,
        vec![
            starttls_offering("smtp.test", "AUTH OAUTHBEARER")
                .on("AUTH OAUTHBEARER ", challenge)
                .on("AQ==", "535 5.7.8 Authentication credentials invalid")
                .quit(),
        ],
    )
    .await;
    // The policy comes from a policy file, so the deferral names its line.
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("tls-policy");
    let (table, _) = PolicyTable::parse(
        &format!(
            "# OAuth2 for the test relay\n[smtp.test]:{} encrypt oauth2=oauthbearer user={USER} token-file={}\n",
            peer.port(),
            token_file(&dir, "revoked").display()
        ),
        Origin::file(&policy_file),
    )
    .unwrap();
    let mut cfg = config();
    cfg.add_trust_anchor(ca.cert.clone()).unwrap();
    let t = transport(
        cfg,
        StaticResolver::new().with_host(d("smtp.test"), LOCALHOST),
        table,
    );
    let r = one(&t, peer.port()).await;
    match &r.outcome {
        postrider::Outcome::Deferred(d) => assert!(
            d.text.ends_with(&format!(
                "(OAuth2 status invalid_token, scope example_scope); check the OAuth2 account \
                 and token source in {} line 2 (the mail stays queued)",
                policy_file.display()
            )),
            "{d:?}"
        ),
        other => panic!("expected a deferral, got {other:?}"),
    }
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
}

#[tokio::test]
async fn a_refused_token_is_retried_once_when_the_command_gives_a_new_one() {
    let ca = TestCa::new("test CA");
    let peer = tls_peer(
        &ca,
        vec![
            starttls_offering("smtp.test", "AUTH XOAUTH2")
                .on("AUTH XOAUTH2 ", GMAIL_CHALLENGE)
                .on("", "535 5.7.8 Username and Password not accepted")
                .on("AUTH XOAUTH2 ", "235 2.7.0 Accepted")
                .accept_one(1)
                .quit(),
        ],
    )
    .await;
    // The command prints a new token on each run (a counter in a file).
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    let command = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo token-$n",
        c = counter.display()
    );
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Command(command)),
    );
    assert_delivered(&one(&t, peer.port()).await);
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    let auths: Vec<String> = logs[0]
        .lines
        .iter()
        .filter(|l| l.starts_with("AUTH "))
        .map(|l| sasl(l))
        .collect();
    assert_eq!(auths, [xoauth2("token-1"), xoauth2("token-2")]);
}

#[tokio::test]
async fn a_server_without_the_mechanism_asked_for_defers_saying_what_it_offers() {
    let ca = TestCa::new("test CA");
    let peer = tls_peer(
        &ca,
        vec![starttls_offering("smtp.test", "AUTH PLAIN LOGIN XOAUTH2").quit()],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let t = transport_for(
        &ca,
        peer.port(),
        policy(
            OAuth2Mechanism::OAuthBearer,
            TokenSpec::File(token_file(&dir, "t")),
        ),
    );
    let r = one(&t, peer.port()).await;
    assert_deferred(
        &r,
        "4.7.4",
        &format!(
            "smtp.test:{} offers AUTH PLAIN LOGIN XOAUTH2, but the policy asks for OAUTHBEARER",
            peer.port()
        ),
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn a_token_command_that_fails_defers_without_connecting() {
    let ca = TestCa::new("test CA");
    let peer = tls_peer(&ca, vec![]).await;
    let t = transport_for(
        &ca,
        peer.port(),
        policy(
            OAuth2Mechanism::XOAuth2,
            TokenSpec::Command("echo 'no such account' >&2; exit 2".into()),
        ),
    );
    let r = one(&t, peer.port()).await;
    assert_deferred(
        &r,
        "4.7.0",
        &format!(
            "cannot get an OAuth2 access token from the token command echo …: it exited with \
             status 2: no such account (needed to authenticate as {USER})"
        ),
    );
    assert!(
        peer.finish().await.is_empty(),
        "no SMTP connection was made"
    );
}
