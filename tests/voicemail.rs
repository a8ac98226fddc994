//! End-to-end runs of `examples/voicemail.rs`: the self-contained `--demo`, and a send through
//! a configured smart host (Postfix's smtp-sink) with the recording checked on arrival.

mod support;
use support::examples;
use support::sink;

use std::process::Command;

use examples::{Site, example_binary, run, stderr, stdout};
use sink::{Sink, free_port};

#[test]
fn the_demo_runs_end_to_end_without_network_and_exits_0() {
    let out = Command::new(example_binary("voicemail"))
        .arg("--demo")
        .output()
        .expect("run the voicemail demo");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let log = text
        .lines()
        .find(|l| l.contains(": to=<alice@demo.example>, delay="))
        .unwrap_or_else(|| panic!("no log line in:\n{text}"));
    assert!(
        log.contains(
            ", mailer=relay, relay=[127.0.0.1], dsn=2.0.0, stat=Sent (250 2.0.0 OK queued as "
        ),
        "{log}"
    );
    assert!(
        text.contains("  Subject: New voicemail from +1 555 0100 (1 s)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  attachment voicemail.wav (audio/wav, 16044 octets, identical to the recording)\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn with_a_configuration_it_sends_the_recording_through_the_smart_host() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    wav.extend_from_slice(&[7u8; 300]);
    std::fs::write(site.path("recording.wav"), &wav).unwrap();
    let mut cmd = site.command("voicemail");
    cmd.arg("--wav").arg(site.path("recording.wav")).args([
        "--from",
        "vm@ourtest.com",
        "bob@example.com",
    ]);
    let out = run(cmd, "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("stat=Sent (250 2.0.0 Ok)"),
        "{}",
        stdout(&out)
    );
    let dumps = sink.dumped();
    assert_eq!(dumps.len(), 1);
    let dump = &dumps[0];
    assert!(dump.contains("X-Mail-Args: <vm@ourtest.com>"), "{dump}");
    assert!(dump.contains("X-Rcpt-Args: <bob@example.com>"), "{dump}");
    let parsed = mail_parser::MessageParser::default()
        .parse(dump.as_bytes())
        .expect("the delivered message parses");
    let attachment = parsed.attachment(0).expect("an attachment");
    use mail_parser::MimeHeaders;
    assert_eq!(attachment.attachment_name(), Some("voicemail.wav"));
    let ctype = attachment.content_type().unwrap();
    assert_eq!(
        (ctype.c_type.as_ref(), ctype.c_subtype.as_deref()),
        ("audio", Some("wav"))
    );
    assert_eq!(attachment.contents(), &wav[..]);
    assert!(site.queued().is_empty());
}

#[test]
fn a_deferred_delivery_exits_75_and_stays_queued() {
    let site = Site::new(free_port());
    let mut cmd = site.command("voicemail");
    cmd.arg("bob@example.com");
    let out = run(cmd, "");
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("stat=Deferred: connection refused by [127.0.0.1]:"),
        "{}",
        stdout(&out)
    );
    assert_eq!(site.queued().len(), 1);
}

#[test]
fn a_file_that_is_not_a_wav_recording_is_refused() {
    let site = Site::new(free_port());
    site.write("notes.txt", "not audio");
    let mut cmd = site.command("voicemail");
    cmd.arg("--wav")
        .arg(site.path("notes.txt"))
        .arg("bob@example.com");
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        stderr(&out),
        format!(
            "voicemail: {} is not a RIFF/WAVE file\n",
            site.path("notes.txt").display()
        )
    );
    assert!(site.queued().is_empty());
}
