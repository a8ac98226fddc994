//! The doctor's listener checks, through the `doctor` example: a certificate made with rcgen
//! that expires in five days, a port-25 listener on the LAN that relays for nobody (the PBX
//! would get "Relaying denied") until the access file names the LAN, and a `mynetworks` that
//! makes an open relay. DNS is an in-process server, so the host name checks pass on loopback.

mod support;
use support::dns_server::{DnsServer, Zone};
use support::doctor::{ConfigDir, doctor_example};

use std::path::Path;

use time::OffsetDateTime;

const HOST: &str = "mail.office.test";

/// A certificate for `names` that ends `days` from now, written as cert.pem and key.pem.
fn certificate(dir: &ConfigDir, names: &[&str], days: i64) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(60);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    dir.write("cert.pem", &cert.pem());
    dir.write("key.pem", &key.serialize_pem());
}

fn write_config(dir: &ConfigDir, dns: &DnsServer, server: &str) {
    dir.write(
        "postrider.toml",
        &format!(
            "hostname = \"{HOST}\"\nspool = \"spool\"\n[dns]\nname_servers = [\"{}\"]\n\
             timeout = \"2s\"\nattempts = 1\n[server]\n{server}\n\
             [[listener]]\naddress = \"0.0.0.0:25\"\ncertificate = \"cert.pem\"\nkey = \"key.pem\"\n",
            dns.addr()
        ),
    );
}

/// (exit code, stdout) of `doctor -C CONFIG --probe-domain none`.
async fn doctor(config: &Path) -> (i32, String) {
    let out = tokio::process::Command::new(doctor_example())
        .arg("-C")
        .arg(config)
        .args(["--probe-domain", "none"])
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(out: &'a str, prefix: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}:\n{out}"));
    (lines[i], lines.get(i + 1).copied().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_reports_certificate_expiry_and_who_may_relay() {
    let dns = DnsServer::start(vec![Zone::new("office.test").a("mail", "192.168.10.10")]).await;
    let dir = ConfigDir::new();
    certificate(&dir, &[HOST], 5);

    // A PBX on the LAN, nothing saying who may relay.
    write_config(&dir, &dns, "");
    let (code, out) = doctor(&dir.config()).await;
    assert_eq!(code, 0, "warnings only:\n{out}");
    let (_, fix) = line(
        &out,
        &format!(
            "WARN  listener-tls: listener 0.0.0.0:25 (smtp): certificate {} expires on ",
            dir.path("cert.pem").display()
        ),
    );
    assert!(fix.contains("SIGHUP"), "{out}");
    let (warn, fix) = line(
        &out,
        "WARN  relaying: listener 0.0.0.0:25 (smtp) relays for nobody",
    );
    assert!(warn.contains("\"550 5.7.1 Relaying denied\""), "{out}");
    assert!(fix.contains("RELAY\" to /etc/mail/access"), "{out}");

    // The access file names the LAN: relaying is fine.
    dir.write(
        "access",
        "Connect:192.168.10 RELAY\nConnect:127.0.0.1 RELAY\n",
    );
    write_config(&dir, &dns, "access = \"access\"");
    let (code, out) = doctor(&dir.config()).await;
    assert_eq!(code, 0, "{out}");
    line(
        &out,
        "PASS  relaying: relaying is open to access file RELAY for 192.168.10.0/24, 127.0.0.1/32 only",
    );

    // Everyone may relay: an open relay, exit 1.
    certificate(&dir, &[HOST], 200);
    write_config(&dir, &dns, "mynetworks = [\"0.0.0.0/0\"]");
    let (code, out) = doctor(&dir.config()).await;
    assert_eq!(code, 1, "{out}");
    let (fail, _) = line(
        &out,
        "FAIL  relaying: mynetworks 0.0.0.0/0 lets every IPv4 client relay",
    );
    assert!(fail.contains("an open relay"), "{out}");
    line(
        &out,
        "PASS  listener-tls: listener 0.0.0.0:25 (smtp): certificate ",
    );
}
