//! The library's SMTP server against real clients: swaks (plain, STARTTLS, implicit TLS, AUTH
//! PLAIN and LOGIN), Python's smtplib and `openssl s_client -starttls smtp`. TLS is real, with
//! a certificate made at test time; AUTH checks a SHA512-CRYPT password file.

mod support;

use std::path::Path;
use std::process::Output;

use postrider::server::ListenerKind;
use support::server::{Client, Options, PASSWORD, PLAIN_BLOB, TestServer, captured_log};
use tokio::process::Command;

const SWAKS: &str = "/usr/bin/swaks";
const OPENSSL: &str = "/usr/bin/openssl";

fn need(binary: &str, package: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: install the Debian package {package}"
    );
}

async fn swaks(port: u16, args: &[&str]) -> Output {
    need(SWAKS, "swaks (and libnet-ssleay-perl for TLS)");
    Command::new(SWAKS)
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", "pbx@example.test", "--helo", "pbx.lan.example"])
        .args(["--header", "Subject: from swaks"])
        .args(["--body", "hello from swaks"])
        .args(args)
        .output()
        .await
        .expect("swaks runs")
}

fn transcript(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn submission(kind: ListenerKind) -> Options {
    Options {
        kind,
        tls: true,
        passwords: true,
        ..Options::default()
    }
}

#[tokio::test]
async fn swaks_relays_from_loopback_in_the_clear() {
    let s = TestServer::start(Options::default()).await;
    let out = swaks(s.port(), &["--to", "alice@example.org"]).await;
    assert!(out.status.success(), "{}", transcript(&out));
    let msgs = s.delivered(1).await;
    assert_eq!(msgs[0].1, ["alice@example.org"]);
    assert!(
        msgs[0]
            .2
            .contains("Received: from pbx.lan.example (unknown [127.0.0.1])"),
        "{}",
        msgs[0].2
    );
    assert!(msgs[0].2.contains("hello from swaks"));
}

#[tokio::test]
async fn swaks_starttls_and_auth_plain_and_login_relay_on_submission() {
    let s = TestServer::start(Options {
        show_auth_user: true,
        ..submission(ListenerKind::Submission)
    })
    .await;
    for mechanism in ["PLAIN", "LOGIN"] {
        let out = swaks(
            s.port(),
            &[
                "--to",
                "bob@example.org",
                "--tls",
                "--auth",
                mechanism,
                "--auth-user",
                "alice",
                "--auth-password",
                PASSWORD,
            ],
        )
        .await;
        assert!(out.status.success(), "{mechanism}: {}", transcript(&out));
    }
    let msgs = s.delivered(2).await;
    for (_, _, body) in &msgs {
        assert!(body.contains("\t(using TLSv1.3 with cipher TLS_"), "{body}");
        assert!(
            body.contains("\t(Authenticated sender: alice)\r\n"),
            "{body}"
        );
        assert!(
            body.contains("with ESMTPSA\r\n\tfor <bob@example.org>;"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn swaks_with_implicit_tls_authenticates_on_submissions() {
    let s = TestServer::start(submission(ListenerKind::Submissions)).await;
    let out = swaks(
        s.port(),
        &[
            "--to",
            "bob@example.org",
            "--tlsc",
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice",
            "--auth-password",
            PASSWORD,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", transcript(&out));
    let msgs = s.delivered(1).await;
    // Off by default: the user name is not told to every recipient.
    assert!(!msgs[0].2.contains("Authenticated sender"), "{}", msgs[0].2);
    assert!(msgs[0].2.contains("with ESMTPSA"), "{}", msgs[0].2);
}

#[tokio::test]
async fn submission_refuses_auth_before_starttls_and_mail_before_auth() {
    let s = TestServer::start(submission(ListenerKind::Submission)).await;
    let (mut c, _) = Client::connect(s.addr).await;
    let ehlo = c.command("EHLO client.example").await;
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH offered in the clear: {ehlo}");
    let r = c.command(&format!("AUTH PLAIN {PLAIN_BLOB}")).await;
    assert!(r.starts_with("538 5.7.11 "), "{r}");
    assert_eq!(c.code("MAIL FROM:<alice@example.test>").await, "530 5.7.0");
    // swaks, told to authenticate without TLS, gets no further either.
    let out = swaks(
        s.port(),
        &[
            "--to",
            "bob@example.org",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            PASSWORD,
        ],
    )
    .await;
    assert!(!out.status.success(), "{}", transcript(&out));
    assert!(s.transport.calls().is_empty());
}

#[tokio::test]
async fn loopback_may_auth_in_the_clear_only_when_the_listener_allows_it() {
    let s = TestServer::start(Options {
        kind: ListenerKind::Submission,
        passwords: true,
        plaintext_auth_from_loopback: true,
        ..Options::default()
    })
    .await;
    let (mut c, _) = Client::connect(s.addr).await;
    let ehlo = c.command("EHLO client.example").await;
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(
        c.code(&format!("AUTH PLAIN {PLAIN_BLOB}")).await,
        "235 2.7.0"
    );
    assert_eq!(c.code("MAIL FROM:<alice@example.test>").await, "250 2.1.0");
    assert_eq!(c.code("RCPT TO:<bob@example.org>").await, "250 2.1.5");
}

const SMTPLIB: &str = r#"
import json, smtplib, ssl, sys
port, user, password, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.ehlo("python.example")
s.starttls(context=ctx)
s.ehlo("python.example")
results = []
try:
    for _ in range(count):
        try:
            # One mechanism per attempt (login() would try PLAIN and then LOGIN).
            s.user, s.password = user, password
            code, text = s.auth("PLAIN", s.auth_plain)
            results.append([code, text.decode()])
            s.sendmail("alice@example.test", ["carol@example.org"], "Subject: smtplib\r\n\r\nhi\r\n")
            results.append(["sent"])
        except smtplib.SMTPAuthenticationError as e:
            results.append([e.smtp_code, e.smtp_error.decode()])
except smtplib.SMTPServerDisconnected as e:
    results.append(["disconnected"])
print(json.dumps(results))
"#;

async fn smtplib(port: u16, user: &str, password: &str, count: u32) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            SMTPLIB,
            &port.to_string(),
            user,
            password,
            &count.to_string(),
        ])
        .output()
        .await
        .expect("python3 runs (Debian package python3)");
    assert!(out.status.success(), "{}", transcript(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", transcript(&out)))
}

#[tokio::test]
async fn smtplib_wrong_passwords_get_535_5_7_8_then_the_door_and_the_right_one_relays() {
    let log = captured_log();
    let s = TestServer::start(submission(ListenerKind::Submission)).await;
    let results = smtplib(s.port(), "alice", "wr0ngpassw0rd", 4).await;
    let shown = format!("{results:?}");
    assert_eq!(results.len(), 4, "{shown}");
    for r in &results[..3] {
        assert_eq!(r[0], 535, "{shown}");
        assert!(r[1].as_str().unwrap().starts_with("5.7.8 "), "{shown}");
    }
    // The third failure ends the session: the fourth attempt finds 421 or a closed socket.
    assert!(
        results[3][0] == "disconnected" || results[3][0] == 421,
        "{shown}"
    );
    let ok = smtplib(s.port(), "alice", PASSWORD, 1).await;
    assert_eq!(ok[0][0], 235, "{ok:?}");
    assert_eq!(ok[1][0], "sent", "{ok:?}");
    assert_eq!(s.delivered(1).await[0].1, ["carol@example.org"]);
    // Neither password, nor the PLAIN blob that carries one, is in any log line; the failure is.
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(text.contains("authentication failed for alice"), "{text}");
    for secret in [
        "wr0ngpassw0rd",
        PASSWORD,
        &PLAIN_BLOB[..20],
        "d3IwbmdwYXNzdzByZA",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} appears in the log:\n{text}"
        );
    }
}

#[tokio::test]
async fn openssl_s_client_negotiates_starttls_and_the_session_starts_over() {
    need(OPENSSL, "openssl");
    let s = TestServer::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let mut child = Command::new(OPENSSL)
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-brief",
            "-connect",
        ])
        .arg(format!("127.0.0.1:{}", s.port()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    // After STARTTLS the client must greet again: MAIL first is refused.
    stdin
        .write_all(b"MAIL FROM:<a@example.test>\nEHLO openssl.example\nQUIT\n")
        .await
        .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("openssl s_client ends")
        .unwrap();
    let text = transcript(&out);
    assert!(text.contains("Protocol version: TLSv1.3"), "{text}");
    assert!(
        text.contains("CN = mail.test.example")
            || text.contains("CN=mail.test.example")
            || text.contains("rcgen"),
        "{text}"
    );
    assert!(text.contains("503 5.5.1 Send HELO or EHLO first"), "{text}");
    let ehlo = text
        .lines()
        .filter(|l| l.starts_with("250"))
        .collect::<Vec<_>>()
        .join("\n");
    // Inside TLS, STARTTLS is no longer offered.
    assert!(
        ehlo.contains("250-PIPELINING") && !ehlo.contains("STARTTLS"),
        "{text}"
    );
    assert!(text.contains("221 2.0.0 Bye"), "{text}");
}

#[tokio::test]
async fn an_unreadable_certificate_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = postrider::server::ServerTls::load(&missing, dir.path().join("key.pem")).unwrap_err();
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    let (_, key) = support::server::write_certificate(dir.path());
    let e = postrider::server::ServerTls::load(dir.path().join("garbage.pem"), &key).unwrap_err();
    assert!(
        e.to_string().contains("garbage.pem: no CERTIFICATE block"),
        "{e}"
    );
}

#[tokio::test]
async fn a_certificate_reload_swaps_the_pair_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::server::write_certificate(dir.path());
    let tls = postrider::server::ServerTls::load(&cert, &key).unwrap();
    let before = tls.config();
    // A renewed certificate (certbot's renew hook, then SIGHUP).
    support::server::write_certificate(dir.path());
    tls.reload().unwrap();
    let renewed = tls.config();
    assert!(!std::sync::Arc::ptr_eq(&before, &renewed));
    // A key that does not match: refused, naming both files; the renewed pair stays.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = support::server::write_certificate(other.path());
    std::fs::copy(&other_key, &key).unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains(&cert.display().to_string()), "{e}");
    assert!(std::sync::Arc::ptr_eq(&renewed, &tls.config()));
}
