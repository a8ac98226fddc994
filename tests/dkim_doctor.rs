//! The doctor's `dkim` check against a DNS server on loopback: it prints the record each key
//! needs and says whether the published one matches.

mod support;

use std::time::Duration;

use postrider::config::Config;
use postrider::dkim::DkimRecord;
use postrider::doctor::{Check, Doctor, Finding, Verdict};
use postrider::resolve::{DnsOptions, DnsResolver};
use support::dkim::{domain_key, key_config, key_file};
use support::dns_server::{DnsServer, Zone};
use support::doctor::ConfigDir;

fn resolver(server: &DnsServer) -> DnsResolver {
    DnsResolver::with_name_servers(
        &[server.addr()],
        DnsOptions {
            timeout: Duration::from_secs(1),
            attempts: 1,
            ..DnsOptions::default()
        },
    )
    .unwrap()
}

/// A configuration with one `[[dkim]]` entry per `(domain, selector, key file)`.
fn config(dir: &ConfigDir, keys: &[(&str, &str, &str)]) -> Config {
    let mut toml = String::from("hostname = \"pbx.ourtest.com\"\n");
    for (domain, selector, key) in keys {
        toml.push_str(&format!(
            "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nkey = \"{key}\"\n"
        ));
    }
    dir.write("postrider.toml", &toml);
    Config::load(dir.config()).unwrap()
}

fn record(file: &str) -> DkimRecord {
    domain_key(&key_config("ourtest.com", "s", file))
        .record()
        .clone()
}

async fn dkim_findings(config: Config, server: &DnsServer) -> Vec<Finding> {
    Doctor::new(config)
        .with_dns(resolver(server))
        .check_dkim()
        .await
}

#[tokio::test]
async fn a_published_record_that_matches_the_key_passes_and_is_shown() {
    let rsa = record("rsa2048.pem");
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("pbx2026._domainkey", &rsa.text()),
    ])
    .await;
    let dir = ConfigDir::new();
    let key = key_file("rsa2048.pem");
    let c = config(&dir, &[("ourtest.com", "pbx2026", key.to_str().unwrap())]);
    let findings = dkim_findings(c, &server).await;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!((f.check, f.verdict), (Check::Dkim, Verdict::Pass), "{f}");
    assert_eq!(
        f.detail,
        format!(
            "pbx2026._domainkey.ourtest.com publishes the key in {} (RSA-2048): \"{}\"",
            key.display(),
            rsa.text()
        )
    );
    assert!(
        rsa.text()
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA")
    );
}

#[tokio::test]
async fn a_missing_record_fails_with_the_zone_line_to_publish() {
    let server = DnsServer::start(vec![Zone::new("ourtest.com")]).await;
    let dir = ConfigDir::new();
    let key = key_file("rsa2048.pem");
    let c = config(&dir, &[("ourtest.com", "pbx2026", key.to_str().unwrap())]);
    let f = &dkim_findings(c, &server).await[0];
    assert_eq!(f.verdict, Verdict::Fail, "{f}");
    assert_eq!(
        f.detail,
        "pbx2026._domainkey.ourtest.com has no DKIM record: receivers cannot verify the \
         signatures of ourtest.com and count the mail as unsigned"
    );
    let text = record("rsa2048.pem").text();
    let fix = f.fix.as_deref().unwrap();
    assert_eq!(
        fix,
        format!(
            "publish the TXT record pbx2026._domainkey.ourtest.com. TXT \"{}\" \"{}\"",
            &text[..255],
            &text[255..]
        )
    );
    // The same when the name exists without a TXT record (NODATA rather than NXDOMAIN).
    let nodata = DnsServer::start(vec![
        Zone::new("ourtest.com").a("pbx2026._domainkey", "192.0.2.1"),
    ])
    .await;
    let c = config(&dir, &[("ourtest.com", "pbx2026", key.to_str().unwrap())]);
    let f = &dkim_findings(c, &nodata).await[0];
    assert_eq!(f.verdict, Verdict::Fail, "{f}");
}

#[tokio::test]
async fn a_record_with_another_key_fails_and_says_which_record_to_have() {
    let other = record("rsa2048-other.pem");
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("pbx2026._domainkey", &other.text()),
    ])
    .await;
    let dir = ConfigDir::new();
    let key = key_file("rsa2048.pem");
    let c = config(&dir, &[("ourtest.com", "pbx2026", key.to_str().unwrap())]);
    let f = &dkim_findings(c, &server).await[0];
    assert_eq!(f.verdict, Verdict::Fail, "{f}");
    assert!(
        f.detail.starts_with(
            "pbx2026._domainkey.ourtest.com publishes another key than this one: signatures \
             made with the key in"
        ),
        "{f}"
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains(&record("rsa2048.pem").text()[..200])
    );
}

#[tokio::test]
async fn a_key_in_testing_mode_or_signed_with_ed25519_only_warns() {
    let ed = record("ed25519.pem");
    let testing = ed.text().replace("k=ed25519;", "k=ed25519; t=y;");
    let server = DnsServer::start(vec![
        Zone::new("ed.example").txt("ed1._domainkey", &testing),
    ])
    .await;
    let dir = ConfigDir::new();
    let key = key_file("ed25519.pem");
    let c = config(&dir, &[("ed.example", "ed1", key.to_str().unwrap())]);
    let findings = dkim_findings(c, &server).await;
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert_eq!(findings[0].verdict, Verdict::Warn);
    assert!(
        findings[0].detail.contains("in testing mode (t=y)"),
        "{}",
        findings[0]
    );
    assert_eq!(findings[1].verdict, Verdict::Warn);
    assert!(
        findings[1]
            .detail
            .starts_with("ed.example is signed with Ed25519 only"),
        "{}",
        findings[1]
    );
    // With an RSA key beside it, Ed25519 is no longer a warning.
    let both = DnsServer::start(vec![
        Zone::new("ed.example")
            .txt("ed1._domainkey", &ed.text())
            .txt("rsa1._domainkey", &record("rsa2048.pem").text()),
    ])
    .await;
    let rsa = key_file("rsa2048.pem");
    let c = config(
        &dir,
        &[
            ("ed.example", "ed1", key.to_str().unwrap()),
            ("ed.example", "rsa1", rsa.to_str().unwrap()),
        ],
    );
    let findings = dkim_findings(c, &both).await;
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert!(
        findings.iter().all(|f| f.verdict == Verdict::Pass),
        "{findings:#?}"
    );
}

#[tokio::test]
async fn an_unusable_key_file_fails_naming_the_file_and_why() {
    let server = DnsServer::start(vec![Zone::new("ourtest.com")]).await;
    let dir = ConfigDir::new();
    let missing = dir.path("dkim/none.pem");
    let ec = key_file("ec.pem");
    let c = config(
        &dir,
        &[
            ("ourtest.com", "a", missing.to_str().unwrap()),
            ("ec.example", "b", ec.to_str().unwrap()),
        ],
    );
    let findings = dkim_findings(c, &server).await;
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert_eq!(findings[0].verdict, Verdict::Fail);
    assert!(
        findings[0].detail.starts_with(&format!(
            "mail from ourtest.com cannot be signed: DKIM key file {}: cannot read it",
            missing.display()
        )),
        "{}",
        findings[0]
    );
    assert!(findings[0].fix.as_deref().unwrap().starts_with(&format!(
        "make the key: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {}",
        missing.display()
    )));
    assert_eq!(
        findings[1].detail,
        format!(
            "mail from ec.example cannot be signed: DKIM key file {}: it holds an EC (ECDSA) key; \
             DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256)",
            ec.display()
        )
    );
}

#[tokio::test]
async fn a_dns_failure_is_a_warning_with_the_record_to_have() {
    let server = DnsServer::builder()
        .zone(Zone::new("ourtest.com"))
        .servfail_for("pbx2026._domainkey.ourtest.com.")
        .start()
        .await;
    let dir = ConfigDir::new();
    let key = key_file("ed25519.pem");
    let c = config(&dir, &[("ourtest.com", "pbx2026", key.to_str().unwrap())]);
    let f = &dkim_findings(c, &server).await[0];
    assert_eq!(f.verdict, Verdict::Warn, "{f}");
    assert_eq!(
        f.detail,
        format!(
            "the DKIM record pbx2026._domainkey.ourtest.com could not be checked: SERVFAIL from {}",
            server.addr()
        )
    );
}
