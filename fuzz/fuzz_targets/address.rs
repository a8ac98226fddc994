//! Feeds arbitrary text to the address, domain, reverse-path, ORCPT and xtext parsers, and checks
//! that what they accept is canonical, within RFC 5321's limits, and survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::address::{MAX_ADDRESS, MAX_DOMAIN, MAX_LABEL, MAX_LOCAL_PART};
use postrider::envelope::{xtext_decode, xtext_encode};
use postrider::{Address, Domain, OriginalRecipient, ReversePath};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    check_domain(text);
    check_address(text);
    check_reverse_path(text);
    check_xtext(text);
    check_orcpt(text);
    // `local\ndomain`: an address built from parts keeps the domain it was given.
    if let Some((local, domain)) = text.split_once('\n')
        && let Ok(domain) = Domain::parse(domain)
        && let Ok(address) = Address::new(local, domain.clone())
    {
        assert_eq!(address.domain(), &domain);
        check_parsed_address(&address);
    }
});

fn check_domain(text: &str) {
    let Ok(domain) = Domain::parse(text) else {
        return;
    };
    check_parsed_domain(&domain);
}

fn check_parsed_domain(domain: &Domain) {
    let name = domain.as_str();
    assert!(name.len() <= MAX_DOMAIN, "{name}");
    assert!(name.is_ascii() && !name.bytes().any(|b| b.is_ascii_uppercase()), "{name}");
    for label in domain.labels() {
        assert!(!label.is_empty() && label.len() <= MAX_LABEL, "{name}");
    }
    assert_eq!(Domain::parse(name).as_ref(), Ok(domain));
    assert_eq!(Domain::parse(&format!("{name}.")).as_ref(), Ok(domain));
    assert!(domain.is_within(domain));
    // Every parent a `.parent` key can name is itself a domain that contains this one.
    for parent in domain.parents() {
        let parent = Domain::parse(parent).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(domain.is_within(&parent) && !parent.is_within(domain), "{name}");
    }
}

fn check_address(text: &str) {
    let Ok(address) = Address::parse(text) else {
        return;
    };
    check_parsed_address(&address);
}

fn check_parsed_address(address: &Address) {
    let shown = address.to_string();
    let local = address.local_part();
    assert!(!local.is_empty() && local.len() <= MAX_LOCAL_PART, "{shown}");
    assert!(shown.len() <= MAX_ADDRESS, "{shown}");
    assert_eq!(shown.len(), local.len() + 1 + address.domain().as_str().len());
    check_parsed_domain(address.domain());
    assert_eq!(Address::parse(&shown).as_ref(), Ok(address), "{shown}");
    assert_eq!(Address::parse(&format!("<{shown}>")).as_ref(), Ok(address));
    assert_eq!(
        Address::new(local, address.domain().clone()).as_ref(),
        Ok(address)
    );
    assert_eq!(address.needs_smtputf8(), !local.is_ascii());
}

fn check_reverse_path(text: &str) {
    let Ok(path) = ReversePath::parse(text) else {
        return;
    };
    let shown = path.to_string();
    assert!(shown.starts_with('<') && shown.ends_with('>'), "{shown}");
    assert!(shown.len() <= MAX_ADDRESS + 2, "{shown}");
    assert_eq!(ReversePath::parse(&shown).as_ref(), Ok(&path), "{shown}");
    assert_eq!(path.is_null(), path.address().is_none());
}

/// RFC 3461 §4: `xtext = *( xchar / hexchar )`, `hexchar = "+" 2HEXDIG`.
fn check_xtext(text: &str) {
    // Any string encodes to xtext that decodes back to it.
    let encoded = xtext_encode(text);
    assert!(encoded.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'='), "{encoded}");
    assert_eq!(xtext_decode(&encoded).as_deref(), Ok(text));
    // Text the decoder accepts has a '+' only as the start of a two-digit hex escape.
    if let Ok(decoded) = xtext_decode(text) {
        let bytes = text.as_bytes();
        let mut escapes = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'+' {
                let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
                assert!(hex.len() == 2 && hex.iter().all(u8::is_ascii_hexdigit), "{text:?}");
                escapes += 1;
                i += 3;
            } else {
                i += 1;
            }
        }
        assert_eq!(decoded.len(), bytes.len() - 2 * escapes);
        assert_eq!(xtext_decode(&xtext_encode(&decoded)), Ok(decoded));
    }
}

fn check_orcpt(text: &str) {
    let Ok(orcpt) = OriginalRecipient::parse_xtext(text) else {
        return;
    };
    assert!(!orcpt.addr_type.is_empty() && !orcpt.address.is_empty());
    assert_eq!(orcpt.addr_type, orcpt.addr_type.to_ascii_lowercase());
    let wire = orcpt.to_xtext();
    assert_eq!(OriginalRecipient::parse_xtext(&wire).as_ref(), Ok(&orcpt), "{wire}");
}
