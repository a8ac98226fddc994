//! `mailertable` and `policy`: the files parse, with one finding per bad line (naming file and
//! line) and per warning.

use std::path::Path;

use super::{Check, Finding};
use crate::config::Config;
use crate::route::{LoadError, Origin, PolicyError, Warning, WarningKind};

const MAILERTABLE_FORMAT: &str = "DOMAIN MAILER:[HOST]:PORT, e.g. \
     \"gmail.com esmtp:[smtp.gmail.com]:587\" or \".example.com error:5.7.0:550 refused\"";
const LOCAL_HOST_NAMES_FORMAT: &str =
    "host names separated by spaces or lines, e.g. \"ourtest.com\"";
const POLICY_FORMAT: &str = "NEXT-HOP [LEVEL] [OPTION...] [USER:PASSWORD], e.g. \
     \"[smtp.gmail.com]:587 encrypt user@example.com:app-password\"";

pub(crate) fn mailertable(config: &Config) -> Vec<Finding> {
    let check = Check::Mailertable;
    match config.build_router() {
        Ok((router, warnings)) => {
            let mut findings = vec![Finding::pass(
                check,
                match &config.mailertable {
                    Some(p) => format!("{} parses ({})", p.display(), entries(router.len())),
                    None => "no mailertable is configured: mail goes to the smart host, or to \
                             each domain's MX"
                        .to_string(),
                },
            )];
            findings.extend(warnings.iter().map(|w| warning(check, w)));
            findings
        }
        Err(LoadError::Invalid { errors }) => errors
            .iter()
            .map(|e| {
                let format = if is_file(&e.file, config.local_host_names.as_deref()) {
                    LOCAL_HOST_NAMES_FORMAT
                } else {
                    MAILERTABLE_FORMAT
                };
                Finding::fail(check, e.to_string())
                    .with_fix(format!("correct line {} of {} ({format})", e.line, e.file))
            })
            .collect(),
        Err(LoadError::Read(e)) => vec![Finding::fail(check, e.to_string()).with_fix(format!(
            "check that the file exists and is readable, or correct its path (mailertable, \
             local_host_names) in {}",
            config_file(config)
        ))],
    }
}

pub(crate) fn policy(config: &Config) -> Vec<Finding> {
    let check = Check::Policy;
    match config.load_policy() {
        Ok((table, warnings)) => {
            let mut findings = vec![Finding::pass(
                check,
                match &config.policy {
                    Some(p) => format!(
                        "{} parses ({}{})",
                        p.display(),
                        entries(table.len()),
                        if table.has_credentials() {
                            ", with credentials"
                        } else {
                            ""
                        }
                    ),
                    None => "no policy file is configured: TLS when offered, no AUTH, for every \
                             next hop"
                        .to_string(),
                },
            )];
            findings.extend(warnings.iter().map(|w| warning(check, w)));
            findings
        }
        Err(PolicyError::Invalid { errors }) => errors
            .iter()
            .map(|e| {
                Finding::fail(check, e.to_string()).with_fix(format!(
                    "correct line {} of {} ({POLICY_FORMAT})",
                    e.line, e.file
                ))
            })
            .collect(),
        Err(PolicyError::Read(e)) => vec![Finding::fail(check, e.to_string()).with_fix(format!(
            "check that the file exists and is readable, or correct policy = in {}",
            config_file(config)
        ))],
    }
}

fn warning(check: Check, w: &Warning) -> Finding {
    let fix = match (&w.kind, w.line) {
        (WarningKind::DuplicateKey { first_line, .. }, Some(line)) => Some(format!(
            "delete line {line} of {} or merge it into line {first_line}",
            w.file
        )),
        (WarningKind::ShadowedByLocal { .. }, Some(line)) => Some(format!(
            "delete line {line} of {}, or stop treating the domain as local",
            w.file
        )),
        (WarningKind::IgnoredAddressLiteral { .. }, Some(line)) => {
            Some(format!("delete line {line} of {}", w.file))
        }
        (WarningKind::ReadableSecrets { .. }, _) => Some(format!("chmod 600 {}", w.file)),
        _ => None,
    };
    Finding::warn(check, w.to_string()).with_fix_opt(fix)
}

fn entries(n: usize) -> String {
    match n {
        1 => "1 entry".to_string(),
        n => format!("{n} entries"),
    }
}

fn is_file(origin: &Origin, path: Option<&Path>) -> bool {
    path.is_some_and(|p| origin.path() == Some(p))
}

fn config_file(config: &Config) -> String {
    config.file().map_or_else(
        || "the configuration file".to_string(),
        |p| p.display().to_string(),
    )
}
