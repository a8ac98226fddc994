//! Reading a private instance's `maillog_file`: what happened to one queued message.

use std::collections::HashMap;

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
    /// The `status=` of the delivery of `rcpt` (`sent`, `deferred`, `bounced`, ...).
    pub status: Option<String>,
    /// The whole delivery line, for failure messages.
    pub line: Option<String>,
    /// True when the SMTP session that queued it ran over TLS.
    pub tls: bool,
}

/// Postfix's view of message `qid` to `rcpt` in `log`. TLS is tied to the message through the
/// smtpd process that logged both the handshake and the `client=` line.
pub fn scan(log: &str, qid: &str, rcpt: &str) -> Received {
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
                r.line = Some(line.to_string());
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
    let rest = line.split("/smtpd[").nth(1)?;
    rest.split(']').next()
}
