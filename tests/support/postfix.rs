//! The system Postfix as a real SMTP peer on 127.0.0.1:25, set up by `.ci/setup-postfix.sh`
//! (loopback only, STARTTLS `may` with a self-signed certificate for localhost, the alias
//! `postrider-sink` delivering to /dev/null, log in /var/log/postfix.log).

use std::time::Duration;

use tokio::io::AsyncReadExt;

pub const LOG: &str = "/var/log/postfix.log";
pub const CERT: &str = "/etc/postfix/postrider-test-cert.pem";
/// A recipient Postfix accepts and delivers to /dev/null.
pub const SINK_RCPT: &str = "postrider-sink@localhost";

const SETUP: &str = "run .ci/setup-postfix.sh as root (it installs the Debian package postfix \
                     and configures it loopback-only with STARTTLS)";

/// Fails unless Postfix answers on 127.0.0.1:25 and was set up by the script.
pub async fn require_postfix() {
    assert!(
        std::path::Path::new("/usr/sbin/postfix").exists(),
        "Postfix is not installed: {SETUP}"
    );
    assert!(
        std::path::Path::new(CERT).exists(),
        "{CERT} is missing: {SETUP}"
    );
    let mut s = tokio::net::TcpStream::connect("127.0.0.1:25")
        .await
        .unwrap_or_else(|e| panic!("Postfix is not listening on 127.0.0.1:25 ({e}): {SETUP}"));
    let mut greeting = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut greeting))
        .await
        .expect("Postfix did not greet within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&greeting[..n]);
    assert!(
        text.starts_with("220 "),
        "unexpected greeting on 127.0.0.1:25: {text}"
    );
}

/// The queue id in Postfix's `250 2.0.0 Ok: queued as 9075CB6900`.
pub fn queue_id(reply_text: &str) -> String {
    reply_text
        .rsplit(' ')
        .next()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no queue id in {reply_text:?}"))
        .to_string()
}

/// What Postfix's log says about one queued message.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The `status=` of the local delivery of `rcpt`.
    pub status: Option<String>,
    /// True when the SMTP session that queued it ran over TLS.
    pub tls: bool,
}

/// Waits (real time, up to 20 s) for Postfix to log the delivery of message `qid` to `rcpt`.
pub async fn wait_for_delivery(qid: &str, rcpt: &str) -> Received {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(LOG).unwrap_or_else(|e| panic!("cannot read {LOG}: {e}"));
        let r = scan(&log, qid, rcpt);
        if r.status.is_some() || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scan(log: &str, qid: &str, rcpt: &str) -> Received {
    use std::collections::HashMap;
    let mut tls_by_pid: HashMap<&str, bool> = HashMap::new();
    let mut r = Received::default();
    let client = format!("{qid}: client=");
    let to = format!("{qid}: to=<{rcpt}>");
    for line in log.lines() {
        let Some(pid) = smtpd_pid(line) else {
            if line.contains(&to)
                && let Some(s) = line.split("status=").nth(1)
            {
                r.status = Some(s.split(' ').next().unwrap_or("").to_string());
            }
            continue;
        };
        if line.contains(": connect from ") {
            tls_by_pid.insert(pid, false);
        } else if line.contains("TLS connection established from") {
            tls_by_pid.insert(pid, true);
        } else if line.contains(&client) {
            r.tls = tls_by_pid.get(pid).copied().unwrap_or(false);
        }
    }
    r
}

/// `postfix/smtpd[18018]:` -> `18018`.
fn smtpd_pid(line: &str) -> Option<&str> {
    let rest = line.split("postfix/smtpd[").nth(1)?;
    rest.split(']').next()
}
