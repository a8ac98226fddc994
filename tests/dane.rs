//! DANE (RFC 7672) for direct MX delivery against a DNSSEC-signed tree served in process
//! (a private root whose key is the only trust anchor, signed, unsigned and bogus child
//! zones) and scripted MX hosts with real TLS: DANE-EE match and mismatch, DANE-TA, a bogus
//! zone, an insecure zone, an MX host whose addresses are insecure, STARTTLS stripped.

mod support;

use std::sync::Arc;

use postrider::resolve::{DnsResolver, SecureResolver, Secured};
use postrider::route::PolicyTable;
use postrider::tls_policy::OutboundTls;
use postrider::transport::esmtp::EsmtpTransport;
use postrider::{Domain, Mailer, NextHop, Route};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use support::dnssec_server::{ChildZone, Security, SignedDns, tlsa_line};
use support::esmtp::*;
use support::smtp_peer::{Script, ScriptedPeer, ehlo_reply};
use support::tls_policy::resolver_at;

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// A server identity: its TLS configuration, leaf certificate and key (SPKI), and the CA
/// certificate when it has one.
struct Identity {
    config: Arc<rustls::ServerConfig>,
    leaf: Vec<u8>,
    spki: Vec<u8>,
    ca: Option<Vec<u8>>,
}

/// A certificate for `names`, self-signed (and expired, to show DANE-EE ignores expiry) or
/// issued by a fresh CA that is sent in the chain.
fn identity(names: &[&str], with_ca: bool) -> Identity {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let (leaf, chain_ca) = if with_ca {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "DANE-TA test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(ca, ca_key);
        (
            params.signed_by(&key, &issuer).unwrap(),
            Some(ca_cert.der().to_vec()),
        )
    } else {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        (params.self_signed(&key).unwrap(), None)
    };
    let mut chain = vec![leaf.der().clone()];
    if let Some(ca) = &chain_ca {
        chain.push(ca.clone().into());
    }
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    Identity {
        config: Arc::new(config),
        leaf: leaf.der().to_vec(),
        spki: rcgen::PublicKeyData::subject_public_key_info(&key),
        ca: chain_ca,
    }
}

fn starttls(name: &str) -> Script {
    Script::greet(name, &["STARTTLS"])
        .on("STARTTLS", "220 2.0.0 Ready")
        .starttls()
        .on("EHLO ", &ehlo_reply(name, &[]))
}

/// The tree: `example.<tld>` in a child zone `<tld>.` of the given security, its MX
/// `mx.example.<tld>` on 127.0.0.1 with `tlsa` (zone-file lines) beside it.
async fn tree(tld: &str, security: Security, tlsa: String) -> SignedDns {
    let records = format!("example 300 IN MX 10 mx.example\nmx.example 300 IN A 127.0.0.1\n{tlsa}");
    SignedDns::start(
        "ns. 3600 IN A 127.0.0.1\n",
        vec![ChildZone {
            origin: format!("{tld}."),
            security,
            records,
        }],
    )
    .await
}

/// A transport with DANE only (no MTA-STS), trusting no CA at all: whatever is verified,
/// DANE verified it.
fn transport(dns: &SignedDns) -> EsmtpTransport {
    let normal: DnsResolver = resolver_at(dns.addr());
    let secure = SecureResolver::new(&normal, Some(dns.anchors())).unwrap();
    let mut config = config();
    config.tls_roots = RootCertStore::empty();
    config.tls_policy = Some(Arc::new(OutboundTls::new(None, Some(secure), None)));
    EsmtpTransport::new(config, Arc::new(normal), Arc::new(PolicyTable::new()))
}

fn route(tld: &str, port: u16) -> Route {
    Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![NextHop::mx(
            Domain::parse(&format!("example.{tld}")).unwrap(),
            Some(port),
        )],
    }
}

async fn send(t: &EsmtpTransport, route: &Route) -> postrider::RecipientReport {
    let m = message(&["alice@example.test"], &body("dane"));
    let reports = t.deliver_all(route, std::slice::from_ref(&m)).await;
    assert_complete(&reports, std::slice::from_ref(&m));
    report(&reports, &m, 0).clone()
}

#[track_caller]
fn assert_deferred_with(r: &postrider::RecipientReport, status: &str, parts: &[&str]) {
    match &r.outcome {
        postrider::Outcome::Deferred(d) => {
            assert_eq!(d.status.to_string(), status, "{r:#?}");
            for p in parts {
                assert!(d.text.contains(p), "{p:?} not in {:?}", d.text);
            }
        }
        other => panic!("expected a deferral, got {other:#?}"),
    }
}

/// A peer on 127.0.0.1 with `id`, and its port.
async fn peer(id: &Identity, scripts: Vec<Script>) -> ScriptedPeer {
    ScriptedPeer::start_with_tls(scripts, Some(id.config.clone())).await
}

#[tokio::test]
async fn the_signed_tree_validates_and_the_bogus_one_does_not() {
    let good = tree("dane", Security::Signed, String::new()).await;
    let secure = SecureResolver::new(&resolver_at(good.addr()), Some(good.anchors())).unwrap();
    let mx = secure
        .mx_hosts(&Domain::parse("example.dane").unwrap())
        .await;
    assert_eq!(
        mx,
        Secured::Secure(vec![Domain::parse("mx.example.dane").unwrap()])
    );
    let plain = tree("plain", Security::Unsigned, String::new()).await;
    let secure = SecureResolver::new(&resolver_at(plain.addr()), Some(plain.anchors())).unwrap();
    assert_eq!(
        secure
            .mx_hosts(&Domain::parse("example.plain").unwrap())
            .await,
        Secured::Insecure
    );
    let bogus = tree("bogus", Security::Bogus, String::new()).await;
    let secure = SecureResolver::new(&resolver_at(bogus.addr()), Some(bogus.anchors())).unwrap();
    assert!(matches!(
        secure
            .mx_hosts(&Domain::parse("example.bogus").unwrap())
            .await,
        Secured::Bogus(_)
    ));
}

#[tokio::test]
async fn dane_ee_accepts_a_matching_key_whatever_its_name_and_expiry() {
    let id = identity(&["not-the-mx.invalid"], false);
    let p = peer(&id, vec![starttls("mx.example.dane").accept_one(1).quit()]).await;
    let dns = tree(
        "dane",
        Security::Signed,
        tlsa_line("mx.example.dane", p.port(), 3, 1, 1, &sha256(&id.spki)),
    )
    .await;
    assert_delivered(&send(&transport(&dns), &route("dane", p.port())).await);
    assert!(p.finish().await[0].tls);
}

#[tokio::test]
async fn dane_ee_defers_a_certificate_that_matches_no_record() {
    let id = identity(&["mx.example.dane"], false);
    let other = identity(&["mx.example.dane"], false);
    let p = peer(&id, vec![starttls("mx.example.dane").accept_one(1).quit()]).await;
    let dns = tree(
        "dane",
        Security::Signed,
        tlsa_line(
            "mx.example.dane",
            p.port(),
            3,
            0,
            2,
            ring::digest::digest(&ring::digest::SHA512, &other.leaf).as_ref(),
        ),
    )
    .await;
    let r = send(&transport(&dns), &route("dane", p.port())).await;
    assert_deferred_with(
        &r,
        "4.7.5",
        &[
            "no TLSA record of mx.example.dane matches the server's certificate (DANE)",
            "TLS required by DANE: DNSSEC-signed TLSA records at _",
        ],
    );
    assert!(
        !p.finish().await[0]
            .lines
            .iter()
            .any(|l| l.starts_with("MAIL"))
    );
}

#[tokio::test]
async fn dane_ta_validates_the_chain_from_the_named_ca_names_included() {
    let id = identity(&["mx.example.dane"], true);
    let ca = id.ca.clone().unwrap();
    let p = peer(&id, vec![starttls("mx.example.dane").accept_one(1).quit()]).await;
    let dns = tree(
        "dane",
        Security::Signed,
        tlsa_line("mx.example.dane", p.port(), 2, 0, 1, &sha256(&ca)),
    )
    .await;
    assert_delivered(&send(&transport(&dns), &route("dane", p.port())).await);
    p.finish().await;

    // The same CA, but a certificate for another name: DANE-TA checks names.
    let wrong = identity(&["elsewhere.example"], true);
    let p = peer(&wrong, vec![starttls("mx.example.dane").quit()]).await;
    let dns = tree(
        "dane",
        Security::Signed,
        tlsa_line(
            "mx.example.dane",
            p.port(),
            2,
            0,
            1,
            &sha256(wrong.ca.as_ref().unwrap()),
        ),
    )
    .await;
    let r = send(&transport(&dns), &route("dane", p.port())).await;
    assert_deferred_with(
        &r,
        "4.7.5",
        &["matches a DANE-TA record but does not validate"],
    );
    p.finish().await;
}

#[tokio::test]
async fn dane_defers_when_starttls_is_stripped() {
    let id = identity(&["mx.example.dane"], false);
    let p = peer(&id, vec![Script::greet("mx.example.dane", &[]).quit()]).await;
    let dns = tree(
        "dane",
        Security::Signed,
        tlsa_line("mx.example.dane", p.port(), 3, 1, 1, &sha256(&id.spki)),
    )
    .await;
    let r = send(&transport(&dns), &route("dane", p.port())).await;
    assert_deferred_with(
        &r,
        "4.7.4",
        &["does not offer STARTTLS", "TLS required by DANE"],
    );
    p.finish().await;
}

#[tokio::test]
async fn a_bogus_zone_defers_instead_of_falling_back() {
    let id = identity(&["mx.example.bogus"], false);
    let p = peer(
        &id,
        vec![Script::greet("mx.example.bogus", &[]).accept_one(1).quit()],
    )
    .await;
    let dns = tree("bogus", Security::Bogus, String::new()).await;
    let r = send(&transport(&dns), &route("bogus", p.port())).await;
    assert_deferred_with(
        &r,
        "4.7.5",
        &["DNSSEC validation of the MX records of example.bogus failed"],
    );
    assert!(
        p.finish().await.is_empty(),
        "no connection to a host learnt from a bogus answer"
    );
}

#[tokio::test]
async fn an_insecure_zone_falls_back_to_the_normal_policy_and_ignores_its_tlsa() {
    let id = identity(&["mx.example.plain"], false);
    let p = peer(
        &id,
        vec![Script::greet("mx.example.plain", &[]).accept_one(1).quit()],
    )
    .await;
    // An unsigned TLSA record that matches nothing: an attacker could have written it.
    let dns = tree(
        "plain",
        Security::Unsigned,
        tlsa_line("mx.example.plain", p.port(), 3, 1, 1, &[0u8; 32]),
    )
    .await;
    assert_delivered(&send(&transport(&dns), &route("plain", p.port())).await);
    assert!(
        !p.finish().await[0].tls,
        "may: clear text when STARTTLS is not offered"
    );
}

#[tokio::test]
async fn tlsa_records_of_an_mx_whose_addresses_are_insecure_do_not_apply() {
    let id = identity(&["mx.example.dane"], false);
    let p = peer(
        &id,
        vec![Script::greet("mx.example.dane", &[]).accept_one(1).quit()],
    )
    .await;
    // The MX answer and the TLSA records are signed, but the MX name is an alias into an
    // unsigned zone, so its address could be forged: DANE does not apply (RFC 7672 §2.2.2),
    // and the STARTTLS-less server gets the mail as the normal policy (may) allows.
    let dns = SignedDns::start(
        "ns. 3600 IN A 127.0.0.1\n",
        vec![
            ChildZone {
                origin: "dane.".into(),
                security: Security::Signed,
                records: format!(
                    "example 300 IN MX 10 mx.example\nmx.example 300 IN CNAME mx.plain.\n{}",
                    tlsa_line("mx.example.dane", p.port(), 3, 1, 1, &sha256(&id.spki))
                ),
            },
            ChildZone {
                origin: "plain.".into(),
                security: Security::Unsigned,
                records: "mx 300 IN A 127.0.0.1\n".into(),
            },
        ],
    )
    .await;
    let secure = SecureResolver::new(&resolver_at(dns.addr()), Some(dns.anchors())).unwrap();
    let mx = Domain::parse("mx.example.dane").unwrap();
    assert!(
        matches!(secure.tlsa(&mx, p.port()).await, Secured::Secure(r) if r.len() == 1),
        "the TLSA records themselves are secure"
    );
    assert_eq!(secure.addresses(&mx).await, Secured::Insecure);
    assert_delivered(&send(&transport(&dns), &route("dane", p.port())).await);
    assert!(
        !p.finish().await[0].tls,
        "no DANE: clear text when STARTTLS is not offered"
    );
}

#[tokio::test]
async fn the_address_records_of_a_signed_mx_host_are_secure() {
    let dns = tree("dane", Security::Signed, String::new()).await;
    let secure = SecureResolver::new(&resolver_at(dns.addr()), Some(dns.anchors())).unwrap();
    assert_eq!(
        secure
            .addresses(&Domain::parse("mx.example.dane").unwrap())
            .await,
        Secured::Secure(vec!["127.0.0.1".parse().unwrap()])
    );
}
