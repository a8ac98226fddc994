//! Feeds arbitrary bytes to the submission agent's header functions (`sendmail -t`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::message::{
    HeaderSection, LocalSubmission, complete_headers, extract_recipients, strip_mbox_from_line,
    truncate_at_lone_dot,
};
use postrider::{Domain, ReversePath};

fuzz_target!(|data: &[u8]| {
    let host = Domain::parse("host.example").expect("invariant: a valid domain");
    let input = truncate_at_lone_dot(data);
    assert!(data.starts_with(input));
    let input = strip_mbox_from_line(input);
    let section = HeaderSection::parse(input);
    assert!(section.fields_end() <= section.body_start() && section.body_start() <= input.len());
    if let Ok(x) = extract_recipients(input, &host) {
        // Only Bcc fields go: what is left re-parses to the other fields, in order.
        let kept: Vec<String> = section
            .fields()
            .iter()
            .filter(|f| !f.is("Bcc") && !f.is("Resent-Bcc"))
            .map(|f| f.name().to_string())
            .collect();
        let again = HeaderSection::parse(&x.message);
        let names: Vec<String> = again.fields().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, kept);
        let sender = ReversePath::Null;
        let out = complete_headers(
            &x.message,
            &LocalSubmission {
                hostname: &host,
                sender: &sender,
                full_name: std::str::from_utf8(data).ok(),
                date: std::time::SystemTime::UNIX_EPOCH,
                unique: "u",
                uid: None,
            },
        );
        let done = HeaderSection::parse(&out);
        for name in ["Received", "From", "Date", "Message-ID"] {
            assert!(done.has(name), "{name} missing");
        }
    }
});
