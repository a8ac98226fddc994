//! Feeds arbitrary octets to the MTA-STS policy parser (RFC 8461 §3.2), then matches a few
//! MX names: no panic, every line number an error names exists, a parsed policy keeps its
//! limits (max_age capped, mx present unless mode none), and a policy printed back through
//! its patterns matches the same hosts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::Domain;
use postrider::tls_policy::{MAX_MAX_AGE, MxPattern, StsMode, StsPolicy, StsPolicyError};

fuzz_target!(|data: &[u8]| {
    match StsPolicy::parse_bytes(data) {
        Ok(policy) => {
            assert!(policy.max_age <= MAX_MAX_AGE);
            assert!(policy.mode == StsMode::None || !policy.mx.is_empty());
            for host in ["mx.example.com", "a.b.example.com", "example.com", "mx1.example.net"] {
                let host = Domain::parse(host).expect("test host");
                let direct = policy.allows_mx(&host);
                let reparsed = policy
                    .mx
                    .iter()
                    .map(|p| MxPattern::parse(&p.to_string()).expect("a printed pattern parses"))
                    .any(|p| p.matches(&host));
                assert_eq!(direct, reparsed);
            }
        }
        Err(e) => {
            let lines = data.split(|b| *b == b'\n').count();
            let line = match e {
                StsPolicyError::NotKeyValue { line, .. }
                | StsPolicyError::BadValue { line, .. } => Some(line),
                StsPolicyError::Duplicate { first, line, .. } => {
                    assert!(first < line);
                    Some(line)
                }
                StsPolicyError::Missing { .. } | StsPolicyError::NotText => None,
            };
            if let Some(line) = line {
                assert!(line >= 1 && line <= lines, "line {line} of {lines}");
            }
        }
    }
});
