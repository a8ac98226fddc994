//! Listeners that cannot do their job: a `submission` port where nobody can authenticate
//! (no password file, no users, no TLS), and access or password files that do not parse.

use super::name;
use crate::config::Config;
use crate::doctor::{Check, Finding};
use crate::server::relay::is_loopback;

/// Listeners that cannot do their job: a `submission` port where nobody can authenticate.
pub(crate) fn check(config: &Config, file: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let passwords = match config.server.password_file() {
        Ok(p) => p,
        Err(e) => {
            findings.push(
                Finding::fail(Check::Listener, format!("password file: {e}")).with_fix(
                    "write one user:{SHA512-CRYPT}hash line per user (`doveadm pw -s \
                     SHA512-CRYPT` or `openssl passwd -6` make the hash)",
                ),
            );
            None
        }
    };
    if let Err(e) = config.server.relay_policy() {
        findings.push(
            Finding::fail(Check::Listener, format!("access file: {e}"))
                .with_fix("correct the line(s) named; the daemon refuses to start until then"),
        );
    }
    for l in config.listener.iter().filter(|l| l.kind.requires_auth()) {
        if config.server.passwords.is_none() {
            findings.push(
                Finding::fail(
                    Check::Listener,
                    format!(
                        "{}: every message there needs AUTH, and no password file is configured: \
                         nobody can send through it",
                        name(l)
                    ),
                )
                .with_fix(format!(
                    "set [server] passwords = \"/etc/postrider/passwd\" in {file}"
                )),
            );
        } else if passwords.as_ref().is_some_and(|p| p.users() == 0) {
            findings.push(Finding::warn(
                Check::Listener,
                format!(
                    "{}: the password file has no users: nobody can send through it",
                    name(l)
                ),
            ));
        }
        let plaintext_ok = l.allow_plaintext_auth_from_loopback && is_loopback(l.address.ip());
        if l.certificate.is_none() && !plaintext_ok {
            findings.push(
                Finding::fail(
                    Check::Listener,
                    format!(
                        "{}: AUTH needs TLS and the listener has no certificate: nobody can \
                         authenticate",
                        name(l)
                    ),
                )
                .with_fix(format!(
                    "add certificate = \"...\" and key = \"...\" to this [[listener]] in {file}"
                )),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::parse_config as listener;
    use super::*;

    #[test]
    fn a_submission_listener_needs_passwords_and_tls() {
        let c = listener("[[listener]]\naddress = \"0.0.0.0:587\"\nkind = \"submission\"\n");
        let found = check(&c, "postrider.toml");
        let details: Vec<&str> = found.iter().map(|f| f.detail.as_str()).collect();
        assert_eq!(found.len(), 2, "{details:#?}");
        assert!(
            details[0].contains("no password file is configured"),
            "{details:#?}"
        );
        assert!(details[1].contains("AUTH needs TLS"), "{details:#?}");
        assert!(found.iter().all(|f| f.verdict.label() == "FAIL"));
        // Plain-text AUTH allowed on loopback: no certificate needed.
        let c = listener(
            "[server]\npasswords = \"/nonexistent/passwd\"\n[[listener]]\naddress = \"127.0.0.1:587\"\nkind = \"submission\"\nallow_plaintext_auth_from_loopback = true\n",
        );
        let found = check(&c, "postrider.toml");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].detail.starts_with("password file: "), "{found:#?}");
    }
}
