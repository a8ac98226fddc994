//! Feeds arbitrary bytes to the `TLS-Required: No` check the transport runs on every spooled
//! message (untrusted: anyone who can send mail writes it), and checks what delivery relies
//! on: no panic, only the header section counts, and a contradicting field always wins.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::message::{HeaderEnd, HeaderSection, MAX_HEADER_SECTION, tls_required_no};

fuzz_target!(|data: &[u8]| {
    let asked = tls_required_no(data);
    let section = HeaderSection::parse(data);
    if asked {
        assert!(section.has("TLS-Required"), "asked without the field");
    }
    // What follows the header section is body: it cannot change the answer.
    if data.len() <= MAX_HEADER_SECTION && section.end() == &HeaderEnd::EmptyLine {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\nTLS-Required: No\r\nTLS-Required: Yes\r\n");
        assert_eq!(tls_required_no(&more), asked);
    }
    // A field with another value in front takes the request back.
    let mut contradicted = b"TLS-Required: Yes\r\n".to_vec();
    contradicted.extend_from_slice(data);
    assert!(!tls_required_no(&contradicted));
});
