//! The private Postfix instances other tests rely on (`support::postfix`): they are really
//! separate, take their settings, deliver where they are told and nowhere else, fail loudly on
//! a bad setting, and leave no process behind — without touching the machine's Postfix.

mod support;
use support::postfix::{self, Listener, PrivatePostfix, SmtpdTls};
use support::sink::Sink;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One SMTP session: the greeting, then each command and its (possibly multi-line) reply.
/// Returns every reply as its lines.
async fn session(addr: SocketAddr, commands: &[&str]) -> Vec<Vec<String>> {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut replies = vec![read_reply(&mut read).await];
    for command in commands {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        replies.push(read_reply(&mut read).await);
    }
    replies
}

async fn read_reply(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(20), read.read_line(&mut line))
            .await
            .expect("a reply within 20 s")
            .unwrap();
        assert_ne!(n, 0, "connection closed after {lines:?}");
        let line = line.trim_end().to_string();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return lines;
        }
    }
}

/// Sends one message and returns the queue id from Postfix's 250.
async fn send(addr: SocketAddr, from: &str, to: &str) -> String {
    let mail_from = format!("MAIL FROM:<{from}>");
    let rcpt_to = format!("RCPT TO:<{to}>");
    let replies = session(
        addr,
        &[
            "EHLO client.postrider.test",
            &mail_from,
            &rcpt_to,
            "DATA",
            "Subject: private postfix\r\n\r\nHello.\r\n.",
            "QUIT",
        ],
    )
    .await;
    let queued = &replies[5][0];
    assert!(
        queued.starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    postfix::queue_id(queued)
}

fn sink_instance() -> PrivatePostfix {
    PrivatePostfix::builder()
        .alias("postrider-sink", "/dev/null")
        .start()
}

#[tokio::test]
async fn two_instances_at_once_have_their_own_ports_queues_and_logs() {
    let a = sink_instance();
    let b = sink_instance();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.config_dir(), b.config_dir());
    let qid_a = send(a.addr(), "pbx@example.com", "postrider-sink@localhost").await;
    let qid_b = send(b.addr(), "pbx@example.com", "postrider-sink@localhost").await;
    let got_a = a
        .wait_for_delivery(&qid_a, "postrider-sink@localhost")
        .await;
    let got_b = b
        .wait_for_delivery(&qid_b, "postrider-sink@localhost")
        .await;
    assert_eq!(
        got_a.status.as_deref(),
        Some("sent"),
        "{got_a:?}\n{}",
        a.log()
    );
    assert_eq!(
        got_b.status.as_deref(),
        Some("sent"),
        "{got_b:?}\n{}",
        b.log()
    );
    assert!(!a.log().contains(&qid_b), "{}", a.log());
    assert!(!b.log().contains(&qid_a), "{}", b.log());
    assert_eq!(a.queue().trim(), "Mail queue is empty");
}

#[tokio::test]
async fn an_instance_relays_through_its_relayhost_to_smtp_sink() {
    let sink = Sink::start().await;
    let hop = format!("[127.0.0.1]:{}", sink.port());
    let pf = PrivatePostfix::builder().relayhost(&hop).start();
    let qid = send(pf.addr(), "pbx@example.com", "alice@example.test").await;
    let got = pf.wait_for_delivery(&qid, "alice@example.test").await;
    assert_eq!(got.status.as_deref(), Some("sent"), "{got:?}\n{}", pf.log());
    let line = got.line.unwrap_or_default();
    assert!(
        line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", sink.port())),
        "{line}"
    );
    assert_eq!(
        sink.wait_for(1, 1, Duration::from_secs(10)).await.messages,
        1
    );
}

#[tokio::test]
async fn without_a_next_hop_an_instance_refuses_mail_for_other_domains() {
    let pf = sink_instance();
    let replies = session(
        pf.addr(),
        &[
            "EHLO client.postrider.test",
            "MAIL FROM:<pbx@example.com>",
            "RCPT TO:<alice@example.test>",
        ],
    )
    .await;
    assert_eq!(
        replies[3],
        [
            "550 5.7.1 <alice@example.test>: Recipient address rejected: this private test \
          instance delivers nowhere"
        ],
        "{replies:?}"
    );
}

#[tokio::test]
async fn a_second_listener_has_its_own_port_and_options() {
    let pf = PrivatePostfix::builder()
        .smtpd_tls(SmtpdTls::May)
        .listener(Listener::smtpd("submission").option("smtpd_tls_security_level", "encrypt"))
        .start();
    let submission = SocketAddr::new(pf.addr().ip(), pf.listener_port("submission"));
    assert_ne!(submission, pf.addr());
    let on_submission = session(
        submission,
        &["EHLO client.postrider.test", "MAIL FROM:<pbx@example.com>"],
    )
    .await;
    assert_eq!(
        on_submission[2],
        ["530 5.7.0 Must issue a STARTTLS command first"],
        "{on_submission:?}"
    );
    let on_main = session(
        pf.addr(),
        &["EHLO client.postrider.test", "MAIL FROM:<pbx@example.com>"],
    )
    .await;
    assert_eq!(on_main[2], ["250 2.1.0 Ok"], "{on_main:?}");
    assert!(
        pf.log().contains("postfix/submission/smtpd["),
        "{}",
        pf.log()
    );
}

#[tokio::test]
async fn discarded_ehlo_keywords_are_not_offered_and_starttls_follows_the_tls_level() {
    let plain = PrivatePostfix::builder()
        .smtpd_tls(SmtpdTls::None)
        .discard_ehlo_keywords(&["8bitmime"])
        .start();
    let ehlo = &session(plain.addr(), &["EHLO client.postrider.test"]).await[1];
    assert!(!ehlo.iter().any(|l| l.contains("8BITMIME")), "{ehlo:?}");
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert!(ehlo.iter().any(|l| l.contains("PIPELINING")), "{ehlo:?}");

    let tls = PrivatePostfix::builder().smtpd_tls(SmtpdTls::May).start();
    let ehlo = &session(tls.addr(), &["EHLO client.postrider.test"]).await[1];
    assert!(ehlo.iter().any(|l| l.contains("8BITMIME")), "{ehlo:?}");
    assert!(ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
}

#[test]
fn main_cf_parameters_from_the_test_override_the_defaults() {
    let pf = PrivatePostfix::builder()
        .myhostname("mx.private.test")
        .main_cf("smtpd_banner", "$myhostname ESMTP private")
        .main_cf("message_size_limit", "123456")
        .start();
    assert_eq!(pf.postconf("myhostname"), "mx.private.test");
    assert_eq!(pf.postconf("message_size_limit"), "123456");
    assert_eq!(
        pf.postconf("queue_directory"),
        pf.root().join("queue").display().to_string()
    );
}

#[test]
#[should_panic(expected = "unused parameter: smtpd_tls_securty_level=may")]
fn a_misspelt_parameter_fails_the_start_with_postconfs_words() {
    PrivatePostfix::builder()
        .main_cf("smtpd_tls_securty_level", "may")
        .start();
}

#[test]
fn stop_ends_every_process_of_the_instance_even_after_its_master_was_killed() {
    let pf = sink_instance();
    let config_dir = pf.config_dir();
    let master = pf.master_pid();
    // The master starts pickup and qmgr right after it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let daemons = loop {
        let all = pf.processes();
        let daemons: Vec<libc::pid_t> = all.iter().copied().filter(|p| *p != master).collect();
        if !daemons.is_empty() {
            break daemons;
        }
        assert!(
            Instant::now() < deadline,
            "no daemon besides the master: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A stopped daemon cannot notice that its master is gone, so only a kill ends it.
    // SAFETY: kill(2) on the instance's own processes.
    assert_eq!(unsafe { libc::kill(daemons[0], libc::SIGSTOP) }, 0);
    assert_eq!(unsafe { libc::kill(master, libc::SIGKILL) }, 0);
    pf.stop();
    assert_eq!(
        postfix::processes_of(&config_dir),
        Vec::<libc::pid_t>::new()
    );
    assert!(
        !config_dir.exists(),
        "{} was not removed",
        config_dir.display()
    );
}

#[test]
fn an_instance_whose_test_died_is_stopped_and_removed_by_the_next_start() {
    let orphan = sink_instance();
    let config_dir = orphan.config_dir();
    let root = orphan.root().to_path_buf();
    // A test process that is gone: a child that already exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(root.join(postfix::OWNER_FILE), format!("{dead} 1")).unwrap();
    // As if this test had been killed: no destructor runs.
    std::mem::forget(orphan);
    assert!(!postfix::processes_of(&config_dir).is_empty());

    let _next = sink_instance();
    assert_eq!(
        postfix::processes_of(&config_dir),
        Vec::<libc::pid_t>::new()
    );
    assert!(!root.exists(), "{} was left behind", root.display());
}

#[test]
fn the_machine_s_postfix_configuration_is_left_as_it_was() {
    let watched = [
        "/etc/postfix/main.cf",
        "/etc/postfix/master.cf",
        "/etc/aliases",
    ];
    let before: Vec<_> = watched.iter().map(|p| snapshot(Path::new(p))).collect();
    let pf = sink_instance();
    pf.stop();
    let after: Vec<_> = watched.iter().map(|p| snapshot(Path::new(p))).collect();
    assert_eq!(before, after);
}

/// Content and modification time, or the error (a file that does not exist must stay so).
fn snapshot(path: &Path) -> Result<(Vec<u8>, std::time::SystemTime), String> {
    let content = std::fs::read(path).map_err(|e| e.kind().to_string())?;
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| e.to_string())?;
    Ok((content, modified))
}
