//! A listener's certificate: the pair loads as the listener would load it, the leaf is valid
//! now and for [`RENEW_WARNING`] more, and it covers the host name clients connect to.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

use super::{date, name};
use crate::address::Domain;
use crate::doctor::{Check, Finding};
use crate::server::ListenerKind;
use crate::server::config::ListenerSection;
use crate::server::tls::ServerTls;

/// A certificate that ends sooner than this is a warning: time to renew (Let's Encrypt renews
/// at 30 days left, so 14 means renewal has been failing for two weeks).
const RENEW_WARNING: Duration = Duration::from_secs(14 * 86_400);

const DAY: u64 = 86_400;

/// The certificate of one listener, judged at `now`. Nothing for a listener without one.
pub(crate) fn check(l: &ListenerSection, hostname: &Domain, now: SystemTime) -> Vec<Finding> {
    let (Some(cert_file), Some(key_file)) = (&l.certificate, &l.key) else {
        return Vec::new();
    };
    let fail = |detail: String| Finding::fail(Check::ListenerTls, detail);
    // What the listener itself would refuse to start with (unreadable, no key, a key of
    // another certificate).
    if let Err(e) = ServerTls::load(cert_file, key_file) {
        return vec![fail(format!("{}: {e}", name(l))).with_fix(
            "point certificate and key of this listener at a PEM certificate chain (leaf \
             first) and its private key, readable by the daemon",
        )];
    }
    let leaf = match leaf(cert_file) {
        Ok(der) => der,
        Err(e) => return vec![fail(format!("{}: {e}", name(l)))],
    };
    let cert = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, c)) => c,
        Err(e) => {
            return vec![fail(format!(
                "{}: {} is not a certificate X.509 can read: {e}",
                name(l),
                cert_file.display()
            ))];
        }
    };
    let file = cert_file.display();
    let mut findings = Vec::new();
    let renew = format!(
        "renew {file} (e.g. `certbot renew`) and send the daemon SIGHUP: it re-reads \
         certificates without dropping sessions"
    );
    let not_after = at(cert.validity().not_after.timestamp());
    let not_before = at(cert.validity().not_before.timestamp());
    let critical = l.kind != ListenerKind::Smtp;
    if now >= not_after {
        findings.push(
            fail(format!(
                "{}: certificate {file} expired on {}: {}",
                name(l),
                date(not_after),
                if critical {
                    "mail clients refuse to send through it"
                } else {
                    "senders that check certificates refuse it"
                }
            ))
            .with_fix(renew),
        );
    } else if now < not_before {
        findings.push(
            fail(format!(
                "{}: certificate {file} is not valid before {} (is this machine's clock right?)",
                name(l),
                date(not_before)
            ))
            .with_fix("check the clock (timedatectl), or use a certificate valid now"),
        );
    } else {
        let left = not_after.duration_since(now).unwrap_or_default();
        if left < RENEW_WARNING {
            findings.push(
                Finding::warn(
                    Check::ListenerTls,
                    format!(
                        "{}: certificate {file} expires on {}, in {} day(s)",
                        name(l),
                        date(not_after),
                        left.as_secs() / DAY
                    ),
                )
                .with_fix(renew),
            );
        }
    }
    let names = names(&cert);
    if !names.iter().any(|n| covers(n, hostname)) {
        let shown = if names.is_empty() {
            "no DNS name".to_string()
        } else {
            names.join(", ")
        };
        let detail = format!(
            "{}: certificate {file} is for {shown}, not for the host name {hostname}: {}",
            name(l),
            if critical {
                "mail clients set up with that name refuse it"
            } else {
                "senders that verify names (DANE, MTA-STS) refuse it"
            }
        );
        let fix = format!(
            "get a certificate whose subjectAltName includes {hostname}, or set hostname to a \
             name it covers"
        );
        findings.push(if critical {
            Finding::fail(Check::ListenerTls, detail).with_fix(fix)
        } else {
            Finding::warn(Check::ListenerTls, detail).with_fix(fix)
        });
    }
    if findings.is_empty() {
        let left = not_after.duration_since(now).unwrap_or_default();
        findings.push(Finding::pass(
            Check::ListenerTls,
            format!(
                "{}: certificate {file} covers {hostname}, valid until {} ({} days)",
                name(l),
                date(not_after),
                left.as_secs() / DAY
            ),
        ));
    }
    findings
}

fn at(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    }
}

/// The first certificate of a PEM file: the leaf.
fn leaf(file: &Path) -> Result<CertificateDer<'static>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| format!("{} holds no CERTIFICATE block", file.display()))?
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// The DNS names a certificate is for: its subjectAltName entries, or (only without any) the
/// subject's common name, as mail clients still accept it.
fn names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

/// RFC 6125: an exact name, or `*.example.com` for one label below `example.com` (never a
/// wildcard over a single label such as `*.com`, which clients refuse).
fn covers(pattern: &str, host: &Domain) -> bool {
    let host = host.as_str();
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(parent) if parent.contains('.') => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        Some(_) => false,
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use time::OffsetDateTime;

    fn cert_files(
        dir: &Path,
        names: &[&str],
        not_after: OffsetDateTime,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn with_cert(kind: &str, cert: &Path, key: &Path) -> Config {
        super::super::parse_config(&format!(
            "[[listener]]\naddress = \"0.0.0.0:587\"\nkind = \"{kind}\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ))
    }

    fn host() -> Domain {
        "mail.example.com".parse().unwrap()
    }

    #[test]
    fn wildcards_cover_one_label_and_exact_names_only_themselves() {
        let h = host();
        assert!(covers("mail.example.com", &h));
        assert!(covers("MAIL.example.com.", &h));
        assert!(covers("*.example.com", &h));
        assert!(!covers("*.mail.example.com", &h));
        assert!(!covers("*.com", &"example.com".parse().unwrap()));
        assert!(!covers("example.com", &h));
    }

    #[test]
    fn a_certificate_is_judged_by_its_end_date_and_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let cases = [
            (
                ["mail.example.com"],
                now + time::Duration::days(90),
                "PASS",
                "covers mail.example.com, valid until",
            ),
            (
                ["mail.example.com"],
                now + time::Duration::days(5),
                "WARN",
                "expires on",
            ),
            (
                ["mail.example.com"],
                now - time::Duration::days(1),
                "FAIL",
                "expired on",
            ),
            (
                ["*.example.com"],
                now + time::Duration::days(90),
                "PASS",
                "covers",
            ),
            (
                ["other.example.org"],
                now + time::Duration::days(90),
                "FAIL",
                "is for other.example.org, not for the host name mail.example.com",
            ),
        ];
        for (names, end, verdict, words) in cases {
            let (c, k) = cert_files(dir.path(), &names, end);
            let config = with_cert("submission", &c, &k);
            let found = check(&config.listener[0], &host(), SystemTime::now());
            assert_eq!(found.len(), 1, "{names:?} {end}: {found:#?}");
            assert_eq!(found[0].verdict.label(), verdict, "{found:#?}");
            assert!(found[0].detail.contains(words), "{found:#?}");
            assert!(
                found[0]
                    .detail
                    .starts_with("listener 0.0.0.0:587 (submission): certificate "),
                "{found:#?}"
            );
        }
        // On port 25 a name mismatch only warns: most senders do not verify.
        let (c, k) = cert_files(
            dir.path(),
            &["other.example.org"],
            now + time::Duration::days(90),
        );
        let found = check(
            &with_cert("smtp", &c, &k).listener[0],
            &host(),
            SystemTime::now(),
        );
        assert_eq!(found[0].verdict.label(), "WARN", "{found:#?}");
    }

    #[test]
    fn an_unreadable_or_mismatched_pair_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc() + time::Duration::days(90);
        let (c, _) = cert_files(dir.path(), &["mail.example.com"], now);
        let other = tempfile::tempdir().unwrap();
        let (_, k2) = cert_files(other.path(), &["mail.example.com"], now);
        let found = check(
            &with_cert("smtp", &c, &k2).listener[0],
            &host(),
            SystemTime::now(),
        );
        assert_eq!(found[0].verdict.label(), "FAIL", "{found:#?}");
        let missing = dir.path().join("missing.pem");
        let found = check(
            &with_cert("smtp", &missing, &k2).listener[0],
            &host(),
            SystemTime::now(),
        );
        assert!(
            found[0].detail.contains(&missing.display().to_string()),
            "{found:#?}"
        );
    }
}
