//! The doctor on loopback: a real DNS server (hickory-server in-process) with the zones of a
//! deliberately broken and of a healthy site, scripted SMTP peers with real TLS (rcgen) for
//! the MX and the smart host, a filtered port, tmpfs mounts for the spool, and the `doctor`
//! example run end to end.

mod support;
use support::dns_server;
use support::smtp_peer;
use support::tmpfs;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use dns_server::{DnsServer, Zone};
use postrider::config::Config;
use postrider::doctor::{Check, Doctor, DoctorOptions, Finding, Verdict};
use postrider::resolve::{DnsOptions, DnsResolver, HostnameSources};
use postrider::transport::esmtp::default_roots;
use rustls::RootCertStore;
use smtp_peer::{Script, ScriptedPeer, TestCa, Validity, ehlo_reply};
use support::doctor::{ConfigDir, Filtered, closed_port, doctor_example};
use tmpfs::Tmpfs;

const USER: &str = "pbx@ourtest.test";
const SECRET: &str = "s3cret-app-password";

/// The zones: `ourtest.test` publishes SPF without this site's public address 203.0.113.5,
/// `good.test` with it; `probe.test`'s MX is on 127.0.0.1, `blocked.test`'s on 127.0.0.2;
/// `smtp.test` is the smart host.
async fn dns() -> DnsServer {
    DnsServer::start(vec![
        Zone::new("ourtest.test").txt("@", "v=spf1 ip4:198.51.100.7 -all"),
        Zone::new("good.test")
            .txt("@", "v=spf1 ip4:203.0.113.5 -all")
            .a("mta", "203.0.113.5"),
        Zone::new("probe.test")
            .mx("@", 10, "mx")
            .a("mx", "127.0.0.1"),
        Zone::new("blocked.test")
            .mx("@", 10, "mx")
            .a("mx", "127.0.0.2"),
        Zone::new("smtp.test").a("@", "127.0.0.1"),
        Zone::new("10.168.192.in-addr.arpa"),
    ])
    .await
}

fn resolver(server: &DnsServer) -> DnsResolver {
    DnsResolver::with_name_servers(
        &[server.addr()],
        DnsOptions {
            timeout: Duration::from_secs(2),
            attempts: 1,
            ..DnsOptions::default()
        },
    )
    .unwrap()
}

/// A configuration folder with `toml` (plus the DNS server) as postrider.toml.
fn config(dir: &ConfigDir, server: &DnsServer, toml: &str) -> Config {
    dir.write(
        "postrider.toml",
        &format!(
            "{toml}\n[dns]\nname_servers = [\"{}\"]\ntimeout = \"2s\"\nattempts = 1\n",
            server.addr()
        ),
    );
    Config::load(dir.config()).unwrap()
}

fn options(probe_domain: Option<&str>, port: u16) -> DoctorOptions {
    DoctorOptions {
        probe_domain: probe_domain.map(|d| d.parse().unwrap()),
        smtp_port: port,
        port25_timeout: Duration::from_millis(200),
        smart_host_timeout: Duration::from_secs(2),
        spool_low_space: 0,
    }
}

/// A doctor on the test DNS server, whose machine is `sipserver1` at 192.168.10.10 with
/// `hosts` as its hosts file.
fn doctor(config: Config, server: &DnsServer, hosts: &Path, options: DoctorOptions) -> Doctor {
    Doctor::new(config)
        .with_dns(resolver(server))
        .with_hostname_sources(&HostnameSources {
            system_hostname: Some("sipserver1".to_string()),
            hosts_file: hosts.to_path_buf(),
            dns: None,
            addresses: Some(vec!["192.168.10.10".parse::<IpAddr>().unwrap()]),
        })
        .with_options(options)
}

fn trusting(ca: &TestCa) -> RootCertStore {
    let mut roots = default_roots();
    roots.add(ca.cert.clone()).unwrap();
    roots
}

/// The one finding of `check`.
fn only(findings: &[Finding], check: Check) -> Finding {
    let of: Vec<&Finding> = findings.iter().filter(|f| f.check == check).collect();
    assert_eq!(of.len(), 1, "one {check} finding expected: {findings:#?}");
    of[0].clone()
}

fn assert_finding(f: &Finding, verdict: Verdict, detail: &str, fix: Option<&str>) {
    assert_eq!(f.verdict, verdict, "{f}");
    assert!(f.detail.contains(detail), "detail lacks {detail:?}:\n{f}");
    match fix {
        Some(fix) => assert!(
            f.fix.as_deref().is_some_and(|x| x.contains(fix)),
            "fix lacks {fix:?}:\n{f}"
        ),
        None => assert_eq!(f.fix, None, "{f}"),
    }
}

/// The smart host: STARTTLS, EHLO again with AUTH, AUTH PLAIN answered with `auth_reply`,
/// QUIT. No MAIL FROM is expected: a MAIL command breaks the script.
fn smart_host_script(auth_reply: &str) -> Script {
    Script::greet("smtp.test", &["PIPELINING", "STARTTLS"])
        .on("STARTTLS", "220 2.0.0 Ready to start TLS")
        .starttls()
        .on(
            "EHLO ",
            &ehlo_reply("smtp.test", &["PIPELINING", "AUTH PLAIN LOGIN"]),
        )
        .on("AUTH PLAIN ", auth_reply)
        .quit()
}

/// A smart host setup on `port`: the policy names it with credentials on line 2.
fn smart_host_config(dir: &ConfigDir, server: &DnsServer, port: u16, level: &str) -> Config {
    dir.write(
        "tls-policy",
        &format!("# next hop   level   credentials\n[smtp.test]:{port} {level} {USER}:{SECRET}\n"),
    );
    config(
        dir,
        server,
        &format!(
            "hostname = \"mta.good.test\"\nspool = \"spool\"\nsmart_host = \"[smtp.test]:{port}\"\npolicy = \"tls-policy\"\n"
        ),
    )
}

fn hosts(dir: &ConfigDir, text: &str) -> std::path::PathBuf {
    dir.write("hosts", text)
}

#[tokio::test]
async fn an_unqualified_host_name_fails_with_the_hosts_line_to_add() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "127.0.0.1 localhost sipserver1\n");
    let c = config(
        &dir,
        &server,
        "[spf]\nsender_domains = [\"ourtest.test\"]\n",
    );
    let d = doctor(c, &server, &hosts, options(None, 25));
    let f = only(&d.check_hostname().await, Check::Hostname);
    assert_eq!(
        f.detail,
        "unable to qualify my own domain name (sipserver1): receivers refuse mail whose EHLO \
         name is a single label"
    );
    assert_eq!(
        f.fix.unwrap(),
        format!(
            "add \"192.168.10.10 sipserver1.ourtest.test sipserver1\" to {} or set the hostname \
             (hostname = \"sipserver1.ourtest.test\" in {})",
            hosts.display(),
            dir.config().display()
        )
    );
    assert_eq!(f.verdict, Verdict::Fail);
}

#[tokio::test]
async fn a_name_only_the_hosts_file_knows_is_a_warning_to_publish_it() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(
        &dir,
        "192.168.10.10 sipserver1.ourtest.test sipserver1\n127.0.0.1 localhost\n",
    );
    let c = config(&dir, &server, "");
    let d = doctor(c, &server, &hosts, options(None, 25));
    let f = only(&d.check_hostname().await, Check::Hostname);
    assert_finding(
        &f,
        Verdict::Warn,
        &format!(
            "sipserver1.ourtest.test is fully qualified, but resolves only through {} \
             (192.168.10.10); DNS says:",
            hosts.display()
        ),
        Some("publish an A record for sipserver1.ourtest.test"),
    );
}

#[tokio::test]
async fn spf_missing_the_public_address_fails_with_the_record_to_publish() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let c = config(
        &dir,
        &server,
        "[spf]\nsender_domains = [\"ourtest.test\", \"good.test\"]\npublic_addresses = [\"203.0.113.5\"]\n",
    );
    let d = doctor(c, &server, &hosts, options(None, 25));
    let findings = d.check_spf().await;
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert_finding(
        &findings[0],
        Verdict::Fail,
        "SPF for ourtest.test does not authorise 203.0.113.5",
        Some(
            "add \"ip4:203.0.113.5\" to the TXT record of ourtest.test: \
             \"v=spf1 ip4:198.51.100.7 ip4:203.0.113.5 -all\", or send through a smart host",
        ),
    );
    assert_finding(
        &findings[1],
        Verdict::Pass,
        "SPF for good.test authorises 203.0.113.5",
        None,
    );
}

#[tokio::test]
async fn with_a_smart_host_an_spf_record_without_this_host_is_only_a_warning() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let c = config(
        &dir,
        &server,
        "smart_host = \"[smtp.test]:587\"\n[spf]\nsender_domains = [\"ourtest.test\"]\npublic_addresses = [\"203.0.113.5\"]\n",
    );
    let d = doctor(c, &server, &hosts, options(None, 25));
    let f = only(&d.check_spf().await, Check::Spf);
    assert_finding(
        &f,
        Verdict::Warn,
        "the smart host sends the rest",
        Some("add \"ip4:203.0.113.5\" to the TXT record of ourtest.test"),
    );
}

#[tokio::test]
async fn a_private_egress_address_is_reported_instead_of_judged() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let c = config(
        &dir,
        &server,
        "[spf]\nsender_domains = [\"ourtest.test\"]\n",
    );
    // No public address: the address towards probe.test's MX (127.0.0.1) is what is seen.
    let d = doctor(c, &server, &hosts, options(Some("probe.test"), 25));
    let f = only(&d.check_spf().await, Check::Spf);
    assert_finding(
        &f,
        Verdict::Warn,
        "127.0.0.1 (this host's address on the route to 127.0.0.1:25) is a private address",
        Some("[spf] public_addresses = [\"203.0.113.5\"]"),
    );
}

#[tokio::test]
async fn a_refused_port_25_fails_with_the_smart_host_advice() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let port = closed_port();
    let c = config(&dir, &server, "");
    let d = doctor(c, &server, &hosts, options(Some("probe.test"), port));
    let f = only(&d.check_port25().await, Check::Port25);
    assert_finding(
        &f,
        Verdict::Fail,
        &format!(
            "outbound port {port} to mx.probe.test [127.0.0.1]:{port} (MX of probe.test): \
             connection refused"
        ),
        Some(&format!(
            "set smart_host = \"[smtp.gmail.com]:587\" (or your provider's submission server) \
             in {}, with credentials in the policy file",
            dir.config().display()
        )),
    );
}

#[tokio::test]
async fn a_filtered_port_25_times_out_and_fails_with_the_smart_host_advice() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let filtered = Filtered::start();
    let port = filtered.addr.port();
    let c = config(&dir, &server, "");
    let d = doctor(c, &server, &hosts, options(Some("blocked.test"), port));
    let f = only(&d.check_port25().await, Check::Port25);
    assert_finding(
        &f,
        Verdict::Fail,
        &format!(
            "outbound port {port} to mx.blocked.test [127.0.0.2]:{port} (MX of blocked.test) \
             timed out after 200ms"
        ),
        Some("your provider probably blocks it; set smart_host = \"[smtp.gmail.com]:587\""),
    );
}

#[tokio::test]
async fn a_silent_peer_on_port_25_fails_for_want_of_a_greeting() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let peer = ScriptedPeer::start(vec![Script::new().hang()]).await;
    let c = config(&dir, &server, "");
    let d = doctor(c, &server, &hosts, options(Some("probe.test"), peer.port()));
    let f = only(&d.check_port25().await, Check::Port25);
    assert_finding(
        &f,
        Verdict::Fail,
        "connected, but no greeting came within 200ms",
        Some("set smart_host = \"[smtp.gmail.com]:587\""),
    );
    peer.finish().await;
}

#[tokio::test]
async fn a_blocked_port_25_is_a_warning_when_a_smart_host_carries_the_mail() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let port = closed_port();
    let c = config(&dir, &server, "smart_host = \"[smtp.test]:587\"\n");
    let d = doctor(c, &server, &hosts, options(Some("probe.test"), port));
    let f = only(&d.check_port25().await, Check::Port25);
    assert_finding(
        &f,
        Verdict::Warn,
        "connection refused",
        Some("goes through your smart host [smtp.test]:587"),
    );
}

#[tokio::test]
async fn a_refusing_greeting_on_port_25_says_the_address_is_probably_listed() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let peer = ScriptedPeer::start(vec![
        Script::new()
            .send("554 5.7.1 Service unavailable; client host listed in PBL")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    let c = config(&dir, &server, "");
    let d = doctor(c, &server, &hosts, options(Some("probe.test"), peer.port()));
    let f = only(&d.check_port25().await, Check::Port25);
    assert_finding(
        &f,
        Verdict::Fail,
        "refuses this host: 554 5.7.1 Service unavailable; client host listed in PBL",
        Some("(127.0.0.1) is probably on a blocklist"),
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn a_bad_smart_host_password_fails_naming_host_user_and_policy_line_not_the_password() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start_with_tls(
        vec![smart_host_script(
            "535 5.7.8 Username and Password not accepted",
        )],
        Some(ca.server_config(&["smtp.test"], Validity::Current)),
    )
    .await;
    let c = smart_host_config(&dir, &server, peer.port(), "encrypt");
    let d = doctor(c, &server, &hosts, options(None, 25)).with_tls_roots(trusting(&ca));
    let findings = d.check_smart_host().await;
    let port = peer.port();
    assert_finding(
        &only(&findings, Check::SmartHost),
        Verdict::Pass,
        &format!(
            "smart host [smtp.test]:{port} answers at smtp.test [127.0.0.1]:{port}: 220 smtp.test ESMTP scripted"
        ),
        None,
    );
    assert_finding(
        &only(&findings, Check::SmartHostTls),
        Verdict::Pass,
        "the certificate is valid for smtp.test",
        None,
    );
    let auth = only(&findings, Check::SmartHostAuth);
    assert_finding(
        &auth,
        Verdict::Fail,
        &format!(
            "authentication failed at smtp.test:{port} for {USER}: 535 5.7.8 Username and \
             Password not accepted"
        ),
        Some(&format!(
            "check the user name and password for [smtp.test]:{port} in {} line 2",
            dir.path("tls-policy").display()
        )),
    );
    for f in &findings {
        assert!(!f.to_string().contains(SECRET), "the password leaked: {f}");
    }
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert!(logs[0].tls);
    assert_eq!(logs[0].lines.last().unwrap(), "QUIT");
}

#[tokio::test]
async fn a_smart_host_certificate_from_an_unknown_ca_is_a_warning_and_auth_is_still_tried() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let ca = TestCa::new("private CA nobody trusts");
    let peer = ScriptedPeer::start_with_tls(
        vec![smart_host_script("235 2.7.0 Authentication successful")],
        Some(ca.server_config(&["smtp.test"], Validity::Current)),
    )
    .await;
    let c = smart_host_config(&dir, &server, peer.port(), "encrypt");
    let d = doctor(c, &server, &hosts, options(None, 25));
    let findings = d.check_smart_host().await;
    assert_finding(
        &only(&findings, Check::SmartHostTls),
        Verdict::Warn,
        "but its certificate would not pass \"verify\": the server's certificate has an \
         unknown issuer (not signed by a trusted CA)",
        Some("keep the policy of"),
    );
    assert_finding(
        &only(&findings, Check::SmartHostAuth),
        Verdict::Pass,
        &format!("accepts the credentials of {USER} (AUTH PLAIN)"),
        None,
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn under_verify_a_certificate_for_another_name_fails() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start_with_tls(
        vec![smart_host_script("235 2.7.0 ok")],
        Some(ca.server_config(&["other.test"], Validity::Current)),
    )
    .await;
    let c = smart_host_config(&dir, &server, peer.port(), "verify");
    let d = doctor(c, &server, &hosts, options(None, 25)).with_tls_roots(trusting(&ca));
    let findings = d.check_smart_host().await;
    assert_finding(
        &only(&findings, Check::SmartHostTls),
        Verdict::Fail,
        "the server's certificate does not match the host name smtp.test (it names other.test)",
        Some("have the certificate fixed"),
    );
    assert!(
        findings.iter().all(|f| f.check != Check::SmartHostAuth),
        "{findings:#?}"
    );
    peer.finish().await;
}

#[tokio::test]
async fn an_unreachable_smart_host_fails_naming_it() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let port = closed_port();
    let c = config(
        &dir,
        &server,
        &format!("smart_host = \"[smtp.test]:{port}\"\n"),
    );
    let d = doctor(c, &server, &hosts, options(None, 25));
    let f = only(&d.check_smart_host().await, Check::SmartHost);
    assert_finding(
        &f,
        Verdict::Fail,
        &format!(
            "smart host [smtp.test]:{port} cannot be reached: connection refused by smtp.test \
             [127.0.0.1]:{port}"
        ),
        Some("check smart_host in"),
    );
}

#[tokio::test]
async fn a_mailertable_with_a_bad_line_fails_naming_file_and_line() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let table = dir.write(
        "mailertable",
        "# routes\ngmail.com  esmtp:[smtp.gmail.com]:587\nwork.test  esmpt:[mail.work.test]\n",
    );
    let c = config(&dir, &server, "mailertable = \"mailertable\"\n");
    let d = Doctor::new(c);
    let f = only(&d.check_mailertable(), Check::Mailertable);
    assert_finding(
        &f,
        Verdict::Fail,
        &format!("{}:3: unknown mailer \"esmpt\"", table.display()),
        Some(&format!("correct line 3 of {}", table.display())),
    );
}

#[tokio::test]
async fn a_policy_file_with_a_bad_line_fails_without_showing_secrets() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let policy = dir.write(
        "tls-policy",
        "*  may\n[smtp.test]:587 encrpyt user:hunter2\n",
    );
    let c = config(&dir, &server, "policy = \"tls-policy\"\n");
    let d = Doctor::new(c);
    let f = only(&d.check_policy(), Check::Policy);
    assert_finding(
        &f,
        Verdict::Fail,
        &format!("{}:2: unknown TLS level \"encrpyt\"", policy.display()),
        Some(&format!("correct line 2 of {}", policy.display())),
    );
    assert!(!f.to_string().contains("hunter2"), "{f}");
}

#[tokio::test]
async fn a_policy_file_others_can_read_is_a_warning_to_chmod_it() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let policy = dir.write("tls-policy", "[smtp.test]:587 encrypt user:pw\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let c = config(&dir, &server, "policy = \"tls-policy\"\n");
    let findings = Doctor::new(c).check_policy();
    assert_eq!(findings[0].verdict, Verdict::Pass);
    assert_finding(
        &findings[1],
        Verdict::Warn,
        "holds passwords but can be read by group or others",
        Some(&format!("chmod 600 {}", policy.display())),
    );
}

#[tokio::test]
async fn a_spool_below_a_regular_file_fails() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let file = dir.write("queue", "");
    let c = config(&dir, &server, "spool = \"queue/spool\"\n");
    let f = only(&Doctor::new(c).check_spool(), Check::Spool);
    assert_finding(
        &f,
        Verdict::Fail,
        &format!("{} is a file, not a directory", file.display()),
        Some("set spool = to a directory"),
    );
}

#[tokio::test]
async fn a_read_only_spool_fails_with_the_remount_fix() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let fs = Tmpfs::mount("1m");
    fs.remount_read_only();
    let c = config(
        &dir,
        &server,
        &format!("spool = \"{}\"\n", fs.path().display()),
    );
    let f = only(&Doctor::new(c).check_spool(), Check::Spool);
    assert_finding(
        &f,
        Verdict::Fail,
        &format!(
            "spool {} is not writable: cannot create {}/.postrider-doctor.",
            fs.path().display(),
            fs.path().display()
        ),
        Some("is mounted read-only: remount it read-write"),
    );
    assert!(f.detail.contains("Read-only file system"), "{f}");
}

#[tokio::test]
async fn a_full_spool_fails_with_the_free_space_fix_and_leaves_nothing_behind() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let fs = Tmpfs::mount("64k");
    fs.fill();
    let c = config(
        &dir,
        &server,
        &format!("spool = \"{}\"\n", fs.path().display()),
    );
    let f = only(&Doctor::new(c).check_spool(), Check::Spool);
    assert_finding(
        &f,
        Verdict::Fail,
        "is not writable: cannot write",
        Some("is full (or over quota): free space there"),
    );
    let left: Vec<_> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["ballast"]);
}

#[tokio::test]
async fn a_healthy_setup_passes_every_check_without_sending_mail() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "127.0.0.1 localhost\n");
    let ca = TestCa::new("test CA");
    let smart = ScriptedPeer::start_with_tls(
        vec![smart_host_script("235 2.7.0 Authentication successful")],
        Some(ca.server_config(&["smtp.test"], Validity::Current)),
    )
    .await;
    let mx = ScriptedPeer::start(vec![
        Script::new()
            .send("220 mx.probe.test ESMTP")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    dir.write(
        "mailertable",
        "gmail.com  esmtp:[smtp.gmail.com]:587\n.corp.test esmtp:mail.corp.test\n",
    );
    dir.write("local-host-names", "good.test\n");
    dir.write(
        "tls-policy",
        &format!(
            "[smtp.test]:{} verify {USER}:{SECRET}\n*  may\n",
            smart.port()
        ),
    );
    let c = config(
        &dir,
        &server,
        &format!(
            "hostname = \"mta.good.test\"\nspool = \"spool\"\nsmart_host = \"[smtp.test]:{}\"\n\
             mailertable = \"mailertable\"\nlocal_host_names = \"local-host-names\"\npolicy = \"tls-policy\"\n\
             [spf]\nsender_domains = [\"good.test\"]\npublic_addresses = [\"203.0.113.5\"]\n",
            smart.port()
        ),
    );
    std::fs::create_dir(dir.path("spool")).unwrap();
    let d = doctor(c, &server, &hosts, options(Some("probe.test"), mx.port()))
        .with_tls_roots(trusting(&ca));
    let findings = d.run().await;
    let checks: Vec<Check> = findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        [
            Check::Hostname,
            Check::Spf,
            Check::Port25,
            Check::SmartHost,
            Check::SmartHostTls,
            Check::SmartHostAuth,
            Check::Mailertable,
            Check::Policy,
            Check::Spool
        ],
        "{findings:#?}"
    );
    for f in &findings {
        assert_eq!(f.verdict, Verdict::Pass, "{f}");
        assert_eq!(f.fix, None, "{f}");
    }
    assert!(
        findings[0]
            .detail
            .contains("mta.good.test is fully qualified and resolves to 203.0.113.5")
    );
    let smart_logs = smart.finish().await;
    assert_eq!(smart_logs[0].error, None, "{:#?}", smart_logs[0]);
    assert!(
        smart_logs[0].lines.iter().all(|l| !l.starts_with("MAIL")),
        "{:#?}",
        smart_logs[0].lines
    );
    assert_eq!(mx.finish().await[0].lines, ["QUIT"]);
}

/// Runs the example on `config` with `args`; returns (exit code, stdout).
async fn run_example(config: &Path, args: &[String]) -> (i32, String) {
    let out = tokio::process::Command::new(doctor_example())
        .arg("-C")
        .arg(config)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (
        out.status.code().unwrap(),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_example_reports_a_broken_setup_and_exits_1() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "127.0.0.1 localhost sipserver1\n");
    let table = dir.write("mailertable", "work.test  esmpt:[mail.work.test]\n");
    dir.write("queue", "");
    config(
        &dir,
        &server,
        "hostname = \"sipserver1\"\nspool = \"queue/spool\"\nmailertable = \"mailertable\"\n\
         [spf]\nsender_domains = [\"ourtest.test\"]\npublic_addresses = [\"203.0.113.5\"]\n",
    );
    let port = closed_port();
    let (code, out) = run_example(
        &dir.config(),
        &[
            "--probe-domain".into(),
            "probe.test".into(),
            "--smtp-port".into(),
            port.to_string(),
            "--timeout".into(),
            "200ms".into(),
            "--hosts-file".into(),
            hosts.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let starts = |prefix: &str| {
        let i = lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starts with {prefix:?}:\n{out}"));
        (lines[i], lines.get(i + 1).copied().unwrap_or_default())
    };
    let (_, fix) = starts("FAIL  hostname: unable to qualify my own domain name (sipserver1)");
    assert!(
        fix.starts_with(
            "      fix: add \"" // the machine's own address comes next
        ) && fix.contains("sipserver1.ourtest.test sipserver1\" to "),
        "{out}"
    );
    let (_, fix) = starts("FAIL  spf: SPF for ourtest.test does not authorise 203.0.113.5");
    assert!(
        fix.starts_with("      fix: add \"ip4:203.0.113.5\" to the TXT record of ourtest.test"),
        "{out}"
    );
    let (line, fix) = starts(&format!(
        "FAIL  port25: outbound port {port} to mx.probe.test"
    ));
    assert!(line.ends_with("connection refused"), "{out}");
    assert!(
        fix.contains("set smart_host = \"[smtp.gmail.com]:587\""),
        "{out}"
    );
    starts(&format!(
        "FAIL  mailertable: {}:1: unknown mailer \"esmpt\"",
        table.display()
    ));
    starts("PASS  policy: no policy file is configured");
    starts("FAIL  spool: spool ");
    assert_eq!(
        lines.last().copied(),
        Some("doctor: 1 passed, 0 warnings, 5 failed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_example_exits_0_on_a_healthy_setup() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let mx = ScriptedPeer::start(vec![
        Script::new()
            .send("220 mx.probe.test ESMTP")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    dir.write("mailertable", "gmail.com  esmtp:[smtp.gmail.com]:587\n");
    config(
        &dir,
        &server,
        "hostname = \"mta.good.test\"\nspool = \".\"\nmailertable = \"mailertable\"\n\
         [spf]\nsender_domains = [\"good.test\"]\npublic_addresses = [\"203.0.113.5\"]\n",
    );
    let (code, out) = run_example(
        &dir.config(),
        &[
            "--probe-domain=probe.test".into(),
            format!("--smtp-port={}", mx.port()),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .all(|l| !l.starts_with("FAIL") && !l.starts_with("WARN")),
        "{out}"
    );
    assert!(out.contains("PASS  port25: outbound port"), "{out}");
    assert!(
        out.ends_with("doctor: 6 passed, 0 warnings, 0 failed\n"),
        "{out}"
    );
    mx.finish().await;
}

#[tokio::test]
async fn the_doctor_example_exits_78_when_the_configuration_cannot_be_read() {
    let dir = ConfigDir::new();
    dir.write("postrider.toml", "smart_hots = \"[x]\"\n");
    let (code, out) = run_example(&dir.config(), &[]).await;
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("unknown field `smart_hots`"), "{out}");
    let (code, out) = run_example(&dir.path("missing.toml"), &[]).await;
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("cannot read"), "{out}");
}

#[tokio::test]
async fn a_smart_host_that_asks_for_auth_without_configured_credentials_is_a_warning() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start_with_tls(
        vec![
            Script::greet("smtp.test", &["STARTTLS"])
                .on("STARTTLS", "220 2.0.0 go ahead")
                .starttls()
                .on("EHLO ", &ehlo_reply("smtp.test", &["AUTH PLAIN LOGIN"]))
                .quit(),
        ],
        Some(ca.server_config(&["smtp.test"], Validity::Current)),
    )
    .await;
    let port = peer.port();
    let c = config(
        &dir,
        &server,
        &format!("smart_host = \"[smtp.test]:{port}\"\n"),
    );
    let d = doctor(c, &server, &hosts, options(None, 25)).with_tls_roots(trusting(&ca));
    let findings = d.check_smart_host().await;
    assert_eq!(only(&findings, Check::SmartHostTls).verdict, Verdict::Pass);
    assert_finding(
        &only(&findings, Check::SmartHostAuth),
        Verdict::Warn,
        &format!(
            "offers AUTH (PLAIN LOGIN), but the policy has no credentials for [smtp.test]:{port}"
        ),
        Some(&format!(
            "create a policy file with the line \"[smtp.test]:{port} encrypt USER:PASSWORD\""
        )),
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn a_full_run_checks_spf_for_the_address_of_the_port_25_connection() {
    let server = dns().await;
    let dir = ConfigDir::new();
    let hosts = hosts(&dir, "");
    let mx = ScriptedPeer::start(vec![
        Script::new()
            .send("220 mx.probe.test ESMTP")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    let c = config(
        &dir,
        &server,
        "hostname = \"mta.good.test\"\n[spf]\nsender_domains = [\"good.test\"]\n",
    );
    let d = doctor(c, &server, &hosts, options(Some("probe.test"), mx.port()));
    let findings = d.run().await;
    assert_finding(
        &only(&findings, Check::Spf),
        Verdict::Warn,
        &format!(
            "not checked: 127.0.0.1 (this host's address on the connection to mx.probe.test \
             [127.0.0.1]:{}) is a private address",
            mx.port()
        ),
        Some("configure the public address"),
    );
    assert_eq!(only(&findings, Check::Port25).verdict, Verdict::Pass);
    mx.finish().await;
}
