//! The sendmail command on a spool in trouble: a full disk under a queue run that delivers
//! some recipients and defers others, a spool it may only read, and records set aside in
//! `corrupt/`. Each spool is a private tmpfs (needs root, as the spool tests do).

mod support;
use support::examples::{Site, sendmail, stderr, stdout};
use support::sink::{Sink, free_port};
use support::tmpfs::Tmpfs;

use std::process::Output;

/// A site whose spool is `spool` (an absolute path), the smart host `[127.0.0.1]:smart_host`
/// and `y.example` routed by the mailertable to `[127.0.0.1]:other`.
fn site_on(spool: &std::path::Path, smart_host: u16, other: u16) -> Site {
    let site = Site::new(smart_host);
    site.write(
        "mailertable",
        &format!("y.example esmtp:[127.0.0.1]:{other}\n"),
    );
    site.write(
        "postrider.toml",
        &format!(
            "hostname = \"{}\"\nspool = \"{}\"\nsmart_host = \"[127.0.0.1]:{smart_host}\"\n\
             mailertable = \"mailertable\"\n[spf]\npolicy = \"off\"\n",
            support::examples::HOSTNAME,
            spool.display()
        ),
    );
    site
}

fn queued_ids(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_disk_never_sends_a_delivered_recipient_a_second_copy() {
    let disk = Tmpfs::mount("2m");
    let spool = disk.path().join("spool");
    let sink = Sink::start_on(free_port(), &[], true).await;
    let refused = free_port(); // nothing listens: b@y.example is deferred at every run
    let site = site_on(&spool, sink.port(), refused);

    let out = sendmail(
        &site,
        &["-odq", "a@x.example", "b@y.example"],
        "Subject: voicemail\n\nmessage body\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    disk.fill();
    assert!(disk.free_bytes() < 4096, "the spool's disk is full");

    for run in 1..=3 {
        let out = sendmail(&site, &["-q", "-v"], "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: every outcome was recorded, so the run succeeded: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("cannot record"),
            "run {run}: {}",
            stderr(&out)
        );
        assert_eq!(
            sink.dumped().len(),
            1,
            "run {run}: a@x.example got exactly one copy"
        );
    }
    let listing = sendmail(&site, &["-bp"], "");
    assert_eq!(listing.status.code(), Some(0), "{}", stderr(&listing));
    let text = stdout(&listing);
    assert!(text.contains("(1 request)"), "{text}");
    assert!(text.contains("<b@y.example>"), "{text}");
    assert!(
        !text.contains("<a@x.example>"),
        "the delivered recipient is no longer listed: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mailq_lists_a_spool_it_may_only_read_and_names_quarantined_records() {
    let disk = Tmpfs::mount("4m");
    let spool = disk.path().join("spool");
    let (closed, other) = (free_port(), free_port());
    let site = site_on(&spool, closed, other);
    let out = sendmail(&site, &["-odq", "a@x.example"], "Subject: one\n\nx\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = sendmail(&site, &["-odq", "b@y.example"], "Subject: two\n\ny\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let damaged = spool.join("corrupt").join("0AAAAAAAAAAAAAAA");
    std::fs::write(&damaged, b"not a spool file").unwrap();
    disk.remount_read_only();

    let listing = sendmail(&site, &["-bp"], "");
    assert_eq!(
        listing.status.code(),
        Some(0),
        "a read-only spool is listed: {}",
        stderr(&listing)
    );
    let text = stdout(&listing);
    assert!(text.contains("(2 requests)"), "{text}");
    assert_eq!(queued_ids(&listing).len(), 2, "{text}");
    assert!(
        text.contains("<a@x.example>") && text.contains("<b@y.example>"),
        "{text}"
    );
    assert!(
        stderr(&listing).contains(&damaged.display().to_string()),
        "the quarantined record is named until someone removes it: {}",
        stderr(&listing)
    );
    assert!(damaged.exists(), "mailq changes nothing");
}
