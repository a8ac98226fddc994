//! `dkim`: each configured key can be read, and its record is published at
//! `selector._domainkey.domain` with the same public key. The record to publish is printed in
//! the zone-file form, its text cut into the 255-character strings a TXT record holds.

use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::{Check, Doctor, Finding, no_dns};
use crate::dkim::{DkimKeyConfig, DkimRecord, DomainKey, KeyAlgorithm, KeyProblem};
use crate::resolve::DnsResolver;

pub(crate) async fn check(d: &Doctor) -> Vec<Finding> {
    let mut findings = Vec::new();
    for config in &d.config.dkim {
        let key = match DomainKey::load(config) {
            Ok(k) => k,
            Err(e) => {
                findings.push(unusable(config, &e.to_string(), d));
                continue;
            }
        };
        let dns = match &d.dns {
            Ok(dns) => dns,
            Err(e) => {
                findings.push(no_dns(Check::Dkim, e));
                continue;
            }
        };
        findings.push(published(dns, &key).await);
        if key.algorithm() == KeyAlgorithm::Ed25519
            && !d
                .config
                .dkim
                .iter()
                .any(|c| c.domain == config.domain && c.key != config.key && is_rsa(c))
        {
            findings.push(
                Finding::warn(
                    Check::Dkim,
                    format!(
                        "{} is signed with Ed25519 only: not every receiver verifies Ed25519 \
                         signatures yet, and to them the mail is unsigned",
                        config.domain
                    ),
                )
                .with_fix(format!(
                    "add an RSA key for {} as well (another [[dkim]] entry with its own \
                     selector, made with: openssl genpkey -algorithm RSA -pkeyopt \
                     rsa_keygen_bits:2048 -out KEY); both sign (RFC 8463 §5)",
                    config.domain
                )),
            );
        }
    }
    findings
}

fn is_rsa(c: &DkimKeyConfig) -> bool {
    crate::dkim::PrivateKey::load(&c.key)
        .is_ok_and(|k| matches!(k.algorithm(), KeyAlgorithm::Rsa { .. }))
}

fn unusable(config: &DkimKeyConfig, why: &str, d: &Doctor) -> Finding {
    let missing = matches!(
        crate::dkim::PrivateKey::load(&config.key).map_err(|e| e.problem),
        Err(KeyProblem::Read(_))
    );
    let file = config.key.display();
    let fix = if missing {
        format!(
            "make the key: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out \
             {file} (chmod 600, owned by the user postrider runs as), or correct key = in the \
             [[dkim]] entry of {} for {}",
            config.domain,
            d.config_file()
        )
    } else {
        format!(
            "replace {file} with an RSA key of 2048 bits or more or an Ed25519 key (openssl \
             genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {file}), or correct the \
             [[dkim]] entry of {} in {}",
            config.domain,
            d.config_file()
        )
    };
    Finding::fail(
        Check::Dkim,
        format!("mail from {} cannot be signed: {why}", config.domain),
    )
    .with_fix(fix)
}

/// What DNS has at the key's record name, judged against the key.
async fn published(dns: &DnsResolver, key: &DomainKey) -> Finding {
    let name = key.record_name();
    let ours = key.record();
    let publish = format!("publish the TXT record {}", ours.zone_line(&name));
    let texts = match txt_records(dns, &name).await {
        Ok(t) => t,
        Err(Lookup::Missing) => {
            return Finding::fail(
                Check::Dkim,
                format!(
                    "{name} has no DKIM record: receivers cannot verify the signatures of {} \
                     and count the mail as unsigned",
                    key.domain()
                ),
            )
            .with_fix(publish);
        }
        Err(Lookup::Failed(why)) => {
            return Finding::warn(
                Check::Dkim,
                format!("the DKIM record {name} could not be checked: {why}"),
            )
            .with_fix(format!(
                "check that the name servers answer; the record to have is {}",
                ours.zone_line(&name)
            ));
        }
    };
    let parsed: Vec<Result<DkimRecord, String>> = texts
        .iter()
        .map(|t| DkimRecord::parse(t).map_err(|e| e.to_string()))
        .collect();
    let what = format!("the key in {} ({})", key.file().display(), key.algorithm());
    match parsed.iter().flatten().find(|r| r.same_key(ours)) {
        Some(r) if r.testing => Finding::warn(
            Check::Dkim,
            format!(
                "{name} publishes {what}, in testing mode (t=y): receivers treat a failing \
                 signature as no signature"
            ),
        )
        .with_fix(format!(
            "once mail verifies, remove t=y: {}",
            ours.zone_line(&name)
        )),
        Some(_) if texts.len() > 1 => Finding::warn(
            Check::Dkim,
            format!(
                "{name} publishes {what}, and {} other TXT record(s): a receiver may pick another",
                texts.len() - 1
            ),
        )
        .with_fix(format!(
            "keep only one TXT record at {name}: {}",
            ours.zone_line(&name)
        )),
        Some(_) => Finding::pass(
            Check::Dkim,
            format!("{name} publishes {what}: \"{}\"", ours.text()),
        ),
        None => {
            let found = match parsed.first() {
                Some(Err(problem)) => format!("a TXT record that is not a DKIM key: {problem}"),
                Some(Ok(r)) if r.is_revoked() => "a revoked key (empty p=)".to_string(),
                Some(Ok(r)) if r.key_type != ours.key_type => {
                    format!("a {} key, not this {} key", r.key_type, ours.key_type)
                }
                _ => "another key than this one".to_string(),
            };
            Finding::fail(
                Check::Dkim,
                format!("{name} publishes {found}: signatures made with {what} fail to verify"),
            )
            .with_fix(format!(
                "replace the record with {} (or set key = to the key it belongs to)",
                ours.zone_line(&name)
            ))
        }
    }
}

enum Lookup {
    /// NXDOMAIN or no TXT records.
    Missing,
    /// The lookup failed, in the resolver's words.
    Failed(String),
}

/// The TXT records at `name`, each one's strings joined.
async fn txt_records(dns: &DnsResolver, name: &str) -> Result<Vec<Vec<u8>>, Lookup> {
    let query = Name::from_ascii(format!("{name}."))
        .map_err(|e| Lookup::Failed(format!("{name} is not a valid DNS name: {e}")))?;
    match dns.hickory_resolver().lookup(query, RecordType::TXT).await {
        Ok(lookup) => {
            let texts: Vec<Vec<u8>> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .collect();
            if texts.is_empty() {
                Err(Lookup::Missing)
            } else {
                Ok(texts)
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        }))) => Err(Lookup::Missing),
        Err(e) => Err(Lookup::Failed(dns.describe_failure(&e))),
    }
}
