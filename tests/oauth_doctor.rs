//! The doctor's smart-host check with OAuth2: it names the mechanism that worked, reports a
//! token endpoint that is down as the reason AUTH cannot work, and the policy check flags a
//! credentials file others can read.

mod support;

use std::time::Duration;

use postrider::config::Config;
use postrider::doctor::{Check, Doctor, Finding, Verdict};
use postrider::resolve::{DnsOptions, DnsResolver};
use postrider::transport::esmtp::default_roots;
use support::dns_server::{DnsServer, Zone};
use support::doctor::ConfigDir;
use support::oauth::{USER, starttls_offering};
use support::smtp_peer::{ScriptedPeer, TestCa, Validity};
use support::token_endpoint::{TokenEndpoint, credentials_file, token};

async fn doctor(dir: &ConfigDir, ca: &TestCa, smart_port: u16) -> (Doctor, DnsServer) {
    let server = DnsServer::start(vec![Zone::new("smtp.test").a("@", "127.0.0.1")]).await;
    dir.write(
        "tls-policy",
        &format!(
            "[smtp.test]:{smart_port} verify oauth2=xoauth2 user={USER} token-refresh=m365.oauth\n"
        ),
    );
    dir.write(
        "postrider.toml",
        &format!(
            "hostname = \"pbx.ourtest.com\"\nsmart_host = \"[smtp.test]:{smart_port}\"\n\
             policy = \"tls-policy\"\n"
        ),
    );
    let config = Config::load(dir.config()).unwrap();
    let dns = DnsResolver::with_name_servers(
        &[server.addr()],
        DnsOptions {
            timeout: Duration::from_secs(1),
            attempts: 1,
            ..DnsOptions::default()
        },
    )
    .unwrap();
    let mut roots = default_roots();
    roots.add(ca.cert.clone()).unwrap();
    (
        Doctor::new(config).with_dns(dns).with_tls_roots(roots),
        server,
    )
}

fn of(findings: &[Finding], check: Check) -> Finding {
    let f: Vec<&Finding> = findings.iter().filter(|f| f.check == check).collect();
    assert_eq!(f.len(), 1, "{findings:#?}");
    f[0].clone()
}

#[tokio::test]
async fn the_smart_host_check_names_the_oauth2_mechanism_that_worked() {
    let ca = TestCa::new("test CA");
    let endpoint = TokenEndpoint::start(&ca, vec![token("ya29.doctor", 3599)]).await;
    let peer = ScriptedPeer::start_with_tls(
        vec![
            starttls_offering("smtp.test", "AUTH PLAIN LOGIN XOAUTH2")
                .on("AUTH XOAUTH2 ", "235 2.7.0 Accepted")
                .on("QUIT", "221 2.0.0 Bye")
                .close(),
        ],
        Some(ca.server_config(&["smtp.test"], Validity::Current)),
    )
    .await;
    let dir = ConfigDir::new();
    credentials_file(&dir.path(""), &endpoint.url(), "r");
    let (d, _dns) = doctor(&dir, &ca, peer.port()).await;
    let findings = d.check_smart_host().await;
    let auth = of(&findings, Check::SmartHostAuth);
    assert_eq!(auth.verdict, Verdict::Pass, "{auth}");
    assert_eq!(
        auth.detail,
        format!(
            "smtp.test [127.0.0.1]:{} accepts the OAuth2 token of {USER} (AUTH XOAUTH2)",
            peer.port()
        )
    );
    assert_eq!(endpoint.requests().len(), 1);
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert!(logs[0].lines.iter().all(|l| !l.starts_with("MAIL")));
    // The credentials file is mode 600: the policy check has nothing to say.
    assert_eq!(of(&d.check_policy(), Check::Policy).verdict, Verdict::Pass);
}

#[tokio::test]
async fn a_token_endpoint_that_is_down_fails_the_auth_check_naming_it() {
    let ca = TestCa::new("test CA");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{closed}/token");
    let dir = ConfigDir::new();
    let creds = credentials_file(&dir.path(""), &url, "r");
    {
        // Readable by others: the policy check says so.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (d, _dns) = doctor(&dir, &ca, 1).await;
    let findings = d.check_smart_host().await;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(
        (f.check, f.verdict),
        (Check::SmartHostAuth, Verdict::Fail),
        "{f}"
    );
    assert!(
        f.detail.starts_with(&format!(
            "cannot get an OAuth2 access token from the token endpoint {url}: cannot connect: "
        )),
        "{f}"
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .starts_with("check the OAuth2 token source of [smtp.test]:1 in "),
        "{f}"
    );
    let policy = d.check_policy();
    let warn = policy
        .iter()
        .find(|f| f.verdict == Verdict::Warn)
        .unwrap_or_else(|| panic!("{policy:#?}"));
    assert_eq!(
        warn.detail,
        format!(
            "{}: holds passwords but can be read by group or others (mode 0644); run chmod 600 on it",
            creds.display()
        )
    );
}
