//! The RFC 6749 refresh-token grant against a token endpoint on loopback over HTTPS (a test
//! CA trusted only by the transport under test), driving AUTH XOAUTH2 at a scripted SMTP
//! peer: the request's form, caching, a refused token refreshed and retried, a replaced
//! refresh token written back, and an endpoint that is down, refuses or is not trusted.

mod support;

use postrider::oauth2::{OAuth2Mechanism, TokenSpec};
use support::esmtp::*;
use support::oauth::{
    GMAIL_CHALLENGE, USER, one, policy, sasl, starttls_offering, tls_peer, transport_for, xoauth2,
};
use support::smtp_peer::{Script, TestCa};
use support::token_endpoint::{Answer, TokenEndpoint, credentials_file, token};

/// One accepted XOAUTH2 delivery.
fn accepting() -> Script {
    starttls_offering("smtp.test", "AUTH XOAUTH2")
        .on("AUTH XOAUTH2 ", "235 2.7.0 Accepted")
        .accept_one(1)
        .quit()
}

fn auths(log: &support::smtp_peer::SessionLog) -> Vec<String> {
    log.lines
        .iter()
        .filter(|l| l.starts_with("AUTH "))
        .map(|l| sasl(l))
        .collect()
}

#[tokio::test]
async fn the_grant_posts_the_credentials_and_the_token_is_cached_across_connections() {
    let ca = TestCa::new("test CA");
    let endpoint = TokenEndpoint::start(&ca, vec![token("ya29.first", 3599)]).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &endpoint.url(), "1//refresh-1");
    let peer = tls_peer(&ca, vec![accepting(), accepting()]).await;
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds)),
    );
    assert_delivered(&one(&t, peer.port()).await);
    assert_delivered(&one(&t, peer.port()).await);
    let requests = endpoint.requests();
    assert_eq!(
        requests.len(),
        1,
        "one token for two connections: {requests:#?}"
    );
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/token"));
    let form = |k: &str| r.form.get(k).map(String::as_str);
    assert_eq!(form("grant_type"), Some("refresh_token"));
    assert_eq!(form("refresh_token"), Some("1//refresh-1"));
    assert_eq!(form("client_id"), Some("client-1"));
    assert_eq!(form("client_secret"), Some("client-secret-1"));
    assert_eq!(
        form("scope"),
        Some("https://outlook.office365.com/SMTP.Send offline_access")
    );
    let logs = peer.finish().await;
    for log in &logs {
        assert_eq!(log.error, None, "{log:#?}");
        assert_eq!(auths(log), [xoauth2("ya29.first")]);
    }
}

#[tokio::test]
async fn a_token_close_to_its_expiry_is_refreshed_before_the_next_connection() {
    let ca = TestCa::new("test CA");
    // 60 s left is inside the refresh margin: each connection gets a fresh token.
    let endpoint =
        TokenEndpoint::start(&ca, vec![token("short-1", 60), token("short-2", 60)]).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &endpoint.url(), "r");
    let peer = tls_peer(&ca, vec![accepting(), accepting()]).await;
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds)),
    );
    assert_delivered(&one(&t, peer.port()).await);
    assert_delivered(&one(&t, peer.port()).await);
    assert_eq!(endpoint.requests().len(), 2);
    let logs = peer.finish().await;
    assert_eq!(auths(&logs[0]), [xoauth2("short-1")]);
    assert_eq!(auths(&logs[1]), [xoauth2("short-2")]);
}

#[tokio::test]
async fn a_token_the_server_calls_expired_is_refreshed_and_auth_retried_on_the_same_session() {
    let ca = TestCa::new("test CA");
    let endpoint = TokenEndpoint::start(
        &ca,
        vec![token("revoked-early", 3599), token("ya29.fresh", 3599)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &endpoint.url(), "r");
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
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds)),
    );
    assert_delivered(&one(&t, peer.port()).await);
    assert_eq!(endpoint.requests().len(), 2);
    let logs = peer.finish().await;
    assert_eq!(logs.len(), 1, "one session");
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert_eq!(
        auths(&logs[0]),
        [xoauth2("revoked-early"), xoauth2("ya29.fresh")]
    );
}

#[tokio::test]
async fn a_refresh_token_the_endpoint_replaces_is_written_back_to_the_file() {
    let ca = TestCa::new("test CA");
    let endpoint = TokenEndpoint::start(
        &ca,
        vec![Answer::Json(
            200,
            r#"{"access_token":"EwB4","token_type":"Bearer","expires_in":3600,"refresh_token":"M.R3_BAY.rotated"}"#
                .into(),
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &endpoint.url(), "M.R3_BAY.original");
    let before = std::fs::read_to_string(&creds).unwrap();
    let peer = tls_peer(&ca, vec![accepting()]).await;
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds.clone())),
    );
    assert_delivered(&one(&t, peer.port()).await);
    let after = std::fs::read_to_string(&creds).unwrap();
    assert_eq!(
        after,
        before.replace("M.R3_BAY.original", "M.R3_BAY.rotated")
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn an_endpoint_that_is_down_defers_naming_it_and_no_smtp_connection_is_made() {
    let ca = TestCa::new("test CA");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{closed}/token");
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &url, "r");
    let peer = tls_peer(&ca, vec![accepting()]).await;
    let t = transport_for(
        &ca,
        peer.port(),
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds)),
    );
    let r = one(&t, peer.port()).await;
    match &r.outcome {
        postrider::Outcome::Deferred(d) => {
            assert_eq!(d.status.to_string(), "4.7.0");
            assert!(
                d.text.starts_with(&format!(
                    "cannot get an OAuth2 access token from the token endpoint {url}: cannot \
                     connect: "
                )),
                "{d:?}"
            );
            assert!(
                d.text
                    .ends_with(&format!("(needed to authenticate as {USER})")),
                "{d:?}"
            );
        }
        other => panic!("expected a deferral, got {other:?}"),
    }
    assert!(peer.finish().await.is_empty(), "no SMTP connection");
}

#[tokio::test]
async fn a_revoked_refresh_token_defers_with_the_providers_words() {
    let ca = TestCa::new("test CA");
    let endpoint = TokenEndpoint::start(
        &ca,
        vec![Answer::Json(
            400,
            r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity."}"#
                .into(),
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &endpoint.url(), "r");
    let t = transport_for(
        &ca,
        1,
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds)),
    );
    let r = one(&t, 1).await;
    assert_deferred(
        &r,
        "4.7.0",
        &format!(
            "cannot get an OAuth2 access token from the token endpoint {}: HTTP 400: the \
             endpoint refused the refresh token: invalid_grant (AADSTS700082: The refresh token \
             has expired due to inactivity.) (needed to authenticate as {USER})",
            endpoint.url()
        ),
    );
}

#[tokio::test]
async fn an_endpoint_whose_certificate_is_not_trusted_is_refused() {
    let ca = TestCa::new("test CA");
    let stranger = TestCa::new("someone else's CA");
    let endpoint = TokenEndpoint::start(&stranger, vec![token("never", 3600)]).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &endpoint.url(), "secret-refresh");
    let t = transport_for(
        &ca,
        1,
        policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds)),
    );
    let r = one(&t, 1).await;
    match &r.outcome {
        postrider::Outcome::Deferred(d) => {
            assert!(
                d.text.starts_with(&format!(
                    "cannot get an OAuth2 access token from the token endpoint {}: TLS failed: ",
                    endpoint.url()
                )),
                "{d:?}"
            );
            assert!(d.text.contains("UnknownIssuer"), "{d:?}");
        }
        other => panic!("expected a deferral, got {other:?}"),
    }
    assert!(
        endpoint.requests().is_empty(),
        "the refresh token never left"
    );
}
