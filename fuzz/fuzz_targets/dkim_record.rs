//! Feeds arbitrary bytes, as a TXT record at `selector._domainkey.domain`, to the DKIM key
//! record parser the doctor uses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::dkim::DkimRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = DkimRecord::parse(data) {
        assert_eq!(r.key_type, r.key_type.to_ascii_lowercase());
        // What it renders reads back as the same record.
        let again = DkimRecord::parse(r.text().as_bytes()).expect("a rendered record parses");
        assert_eq!(again, r);
        assert_eq!(r.same_key(&again), !r.is_revoked());
        let line = r.zone_line("s._domainkey.example.com");
        assert!(line.split('"').skip(1).step_by(2).all(|s| s.len() <= 255));
    }
});
