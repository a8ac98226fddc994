//! The receiving edge: each `[[listener]]`'s certificate (readable, not expired or about to,
//! covering the host name), whether each listener can work (a `submission` port needs a
//! password file and TLS), and who may relay — nobody (the PBX on the LAN gets "Relaying
//! denied") or everybody (an open relay).
//!
//! Nothing is reported for a configuration without listeners: a program that only sends
//! has no receiving edge to check.

mod certificate;
mod relaying;
mod submission;

use std::time::SystemTime;

use super::{Doctor, Finding};
use crate::server::config::ListenerSection;

pub(crate) async fn check(doctor: &Doctor) -> Vec<Finding> {
    let config = doctor.config();
    if config.listener.is_empty() {
        return Vec::new();
    }
    let hostname = doctor.ehlo_name().await;
    let lan = relaying::lan_example(doctor);
    let mut findings = Vec::new();
    for l in &config.listener {
        findings.extend(certificate::check(l, &hostname, SystemTime::now()));
    }
    findings.extend(submission::check(config, &doctor.config_file()));
    findings.extend(relaying::check(config, &doctor.config_file(), &lan));
    findings
}

/// `listener 0.0.0.0:587 (submission)`.
fn name(l: &ListenerSection) -> String {
    format!("listener {} ({})", l.address, l.kind)
}

fn date(t: SystemTime) -> String {
    crate::time::rfc3339(t).chars().take(10).collect()
}

#[cfg(test)]
fn parse_config(text: &str) -> crate::config::Config {
    crate::config::Config::parse(text, "/etc/postrider/postrider.toml")
        .expect("the test's configuration parses")
}
