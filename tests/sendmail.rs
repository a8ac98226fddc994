//! End-to-end runs of `examples/sendmail.rs` against a temporary spool and Postfix's
//! smtp-sink as the smart host: submitting (arguments, `-t`, dots), the delivery modes, `-bp`
//! after a deferral, `-q` and its filters, `-v`, the exit codes, concurrent commands on one
//! spool delivering each message exactly once, an SMTP session on standard input (`-bs`), and
//! the daemon (`-bd`) with swaks as its client.

mod support;
use support::examples;
use support::relay;
use support::sink;

use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use examples::{HOSTNAME, Site, run, sendmail, stderr, stdout};
use sink::{Sink, free_port};

/// Real-time limit for what a detached process does; it only matters when something is broken.
const LIMIT: Duration = Duration::from_secs(20);

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// The queue id the `-v` output starts with (`ID: queued`).
fn queued_id(out: &Output) -> String {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.ends_with(": queued"))
        .unwrap_or_else(|| panic!("no queue id in: {err}"));
    line.trim_end_matches(": queued").to_string()
}

/// Waits (real time) until `done` holds; false if it never did within `LIMIT`.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    done()
}

/// The message part of a smtp-sink dump (after its X- lines and its Received line).
fn header_value<'a>(dump: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    dump.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

#[tokio::test]
async fn recipients_as_arguments_are_delivered_with_the_missing_header_fields_added() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let out = sendmail(
        &site,
        &[
            "-odi",
            "-F",
            "Voice Mail",
            "-f",
            "pbx",
            "alice@example.org",
            "Bob <bob@example.net>, carol@example.net",
        ],
        "Subject: hello\n\nline one\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "interactive mode is silent on success");
    let dumps = sink.dumped();
    assert_eq!(dumps.len(), 1);
    let dump = &dumps[0];
    assert_eq!(
        header_value(dump, "X-Rcpt-Args"),
        [
            "<alice@example.org>",
            "<bob@example.net>",
            "<carol@example.net>"
        ]
    );
    assert_eq!(
        header_value(dump, "X-Mail-Args")[0].split(' ').next(),
        Some("<pbx@sipserver1.ourtest.com>")
    );
    assert_eq!(
        header_value(dump, "From"),
        ["Voice Mail <pbx@sipserver1.ourtest.com>"]
    );
    assert_eq!(header_value(dump, "Subject"), ["hello"]);
    assert_eq!(header_value(dump, "Date").len(), 1);
    let id = header_value(dump, "Message-ID");
    assert!(
        id.len() == 1 && id[0].ends_with("@sipserver1.ourtest.com>"),
        "{id:?}"
    );
    assert!(
        dump.contains(&format!("Received: by {HOSTNAME} (postrider, from userid ")),
        "{dump}"
    );
    assert!(dump.contains("\n\nline one\n"), "{dump}");
    assert!(
        site.queued().is_empty(),
        "a delivered message leaves the queue"
    );
}

#[tokio::test]
async fn dash_t_takes_recipients_from_the_header_and_removes_bcc() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let message = "From: PBX <pbx@ourtest.com>\n\
                   To: Alice <alice@example.org>, undisclosed-recipients:;\n\
                   Cc: \"Smith, Bob\" <bob@example.net> (boss)\n\
                   Bcc: archive@example.com,\n  carol@example.net\n\
                   Subject: voicemail\n\
                   \n\
                   Bcc: a body line is not a header\n";
    let out = sendmail(&site, &["-odi", "-t", "extra@example.com"], message);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let dump = &sink.dumped()[0];
    assert_eq!(
        header_value(dump, "X-Rcpt-Args"),
        [
            "<extra@example.com>",
            "<alice@example.org>",
            "<bob@example.net>",
            "<archive@example.com>",
            "<carol@example.net>"
        ]
    );
    let expected = "From: PBX <pbx@ourtest.com>\n\
                    To: Alice <alice@example.org>, undisclosed-recipients:;\n\
                    Cc: \"Smith, Bob\" <bob@example.net> (boss)\n\
                    Subject: voicemail\n";
    assert!(
        dump.contains(expected),
        "every other field kept as is:\n{dump}"
    );
    assert_eq!(header_value(dump, "Bcc"), Vec::<&str>::new());
    assert!(!dump.contains("\n  carol@example.net\n"), "{dump}");
    assert!(
        dump.contains("\n\nBcc: a body line is not a header\n"),
        "{dump}"
    );
}

#[tokio::test]
async fn dsn_flags_become_the_envelope_parameters() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let out = sendmail(
        &site,
        &[
            "-odi",
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "vm-0001",
            "a@x.example",
        ],
        "Subject: dsn\n\nx\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let dump = &sink.dumped()[0];
    let mail = header_value(dump, "X-Mail-Args")[0];
    assert!(
        mail.contains("RET=HDRS") && mail.contains("ENVID=vm-0001"),
        "{mail}"
    );
    let rcpt = header_value(dump, "X-Rcpt-Args")[0];
    assert!(rcpt.contains("NOTIFY=SUCCESS,FAILURE"), "{rcpt}");
    for bad in [["-N", "sometimes"], ["-R", "body"], ["-V", "vm\u{e9}"]] {
        let out = sendmail(&site, &["-odq", bad[0], bad[1], "a@x.example"], "x\n");
        assert_eq!(code(&out), Some(64), "{bad:?}: {}", stderr(&out));
    }
    assert!(site.queued().is_empty());
}

#[tokio::test]
async fn a_lone_dot_ends_the_message_unless_dash_i_is_given() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let input = "Subject: dots\n\nbefore\n..stays\n.\nafter\n";
    let out = sendmail(&site, &["-odi", "a@example.org"], input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    for flags in [["-odi", "-i"], ["-odi", "-oi"]] {
        let out = sendmail(&site, &[flags[0], flags[1], "a@example.org"], input);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    }
    let dumps = sink.dumped();
    assert_eq!(dumps.len(), 3);
    let cut: Vec<&String> = dumps.iter().filter(|d| !d.contains("after")).collect();
    assert_eq!(cut.len(), 1, "only the run without -i stops at the dot");
    assert!(cut[0].contains("\n\nbefore\n..stays\n"), "{}", cut[0]);
    for whole in dumps.iter().filter(|d| d.contains("after")) {
        assert!(whole.contains("\n\nbefore\n..stays\n.\nafter\n"), "{whole}");
    }
}

/// `Sun, 22 Nov 2026 04:25:00 +0000` → `Sun Nov 22 04:25`, the mailq date under TZ=UTC.
fn ctime16_utc(t: SystemTime) -> String {
    let r = postrider::time::rfc5322(t);
    let f: Vec<&str> = r.split([',', ' ']).filter(|s| !s.is_empty()).collect();
    format!("{} {} {:>2} {}", f[0], f[2], f[1], &f[4][..5])
}

#[tokio::test]
async fn a_deferred_message_is_listed_in_the_mailq_layout_and_a_queue_run_delivers_it() {
    let port = free_port(); // nothing listens here yet
    let site = Site::new(port);
    let out = sendmail(
        &site,
        &[
            "-v",
            "-f",
            "voicemail@ourtest.com",
            "a@x.example",
            "b@y.example",
        ],
        "Subject: deferred\n\nbody\n",
    );
    assert_eq!(
        code(&out),
        Some(0),
        "deferred is still accepted: {}",
        stderr(&out)
    );
    let id = queued_id(&out);
    assert!(
        stderr(&out).contains("stat=Deferred: connection refused by [127.0.0.1]:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(site.queued(), std::slice::from_ref(&id));

    let mut cmd = site.command("sendmail");
    cmd.arg("-bp").env("TZ", "UTC");
    let listing = run(cmd, "");
    assert_eq!(code(&listing), Some(0), "{}", stderr(&listing));
    let queued = site.queued_message(&id);
    let (arrival, size) = (queued.state.arrival, queued.state.size);
    let reader = site.reader().expect("the spool exists");
    let body = postrider::spool::Spool::body(&reader, &queued.id)
        .await
        .unwrap();
    assert_eq!(body.len() as u64, size);
    assert_eq!(
        stdout(&listing),
        format!(
            "\t\t{spool} (1 request)\n\
             -------Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n\
             {id} {size:>8} {date} <voicemail@ourtest.com>\n\
             {pad}(Deferred: connection refused by [127.0.0.1]:{port})\n\
             \t\t\t\t\t <a@x.example>\n\
             \t\t\t\t\t <b@y.example>\n\
             \t\tTotal requests: 1\n",
            spool = site.spool().canonicalize().unwrap().display(),
            date = ctime16_utc(arrival),
            pad = " ".repeat(17),
        )
    );

    // The smart host comes back; the retry is minutes away, but -q ignores that.
    let sink = Sink::start_on(port, &[], true).await;
    let out = sendmail(&site, &["-q"], "");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "",
        "a queue run is silent without -v (cron mails any output)"
    );
    assert_eq!(stderr(&out), "");
    // smtp-sink writes its dump before it answers the final dot: no waiting needed.
    assert_eq!(sink.dumped().len(), 1);
    assert!(site.queued().is_empty());
    let out = sendmail(&site, &["-bp"], "");
    assert_eq!(
        stdout(&out),
        format!(
            "{} is empty\n\t\tTotal requests: 0\n",
            site.spool().canonicalize().unwrap().display()
        )
    );
    let out = sendmail(&site, &["-q"], "");
    assert_eq!(code(&out), Some(0));
    assert_eq!(sink.dumped().len(), 1, "nothing is delivered twice");
}

#[tokio::test]
async fn queue_runs_can_be_limited_by_recipient_domain_queue_id_and_sender() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let mut ids = Vec::new();
    for (from, to) in [
        ("one@ourtest.com", "a@x.example"),
        ("two@ourtest.com", "b@sub.y.example"),
        ("three@pbx.ourtest.com", "c@z.example"),
        ("four@ourtest.com", "d@w.example"),
    ] {
        let out = sendmail(&site, &["-odq", "-v", "-f", from, to], "Subject: q\n\nq\n");
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        ids.push(queued_id(&out));
    }
    assert_eq!(site.queued().len(), 4, "-odq queues without trying");
    assert_eq!(sink.counts().sessions, 0);

    let delivered = |out: &Output| {
        assert_eq!(code(out), Some(0), "{}", stderr(out));
        let mut rcpts: Vec<String> = sink
            .dumped()
            .iter()
            .flat_map(|d| header_value(d, "X-Rcpt-Args"))
            .map(str::to_string)
            .collect();
        rcpts.sort();
        rcpts
    };
    let out = sendmail(&site, &["-qRy.example"], "");
    assert_eq!(
        delivered(&out),
        ["<b@sub.y.example>"],
        "a domain matches itself and below"
    );
    let out = sendmail(&site, &[&format!("-qI{}", ids[3])], "");
    assert_eq!(delivered(&out), ["<b@sub.y.example>", "<d@w.example>"]);
    let out = sendmail(&site, &["-qS", "pbx.ourtest"], "");
    assert_eq!(
        code(&out),
        Some(64),
        "-qS takes its value glued, as in sendmail"
    );
    let out = sendmail(&site, &["-qSPBX.ourtest"], "");
    assert_eq!(
        delivered(&out),
        ["<b@sub.y.example>", "<c@z.example>", "<d@w.example>"],
        "the sender text matches case-insensitively"
    );
    assert_eq!(site.queued(), [ids[0].clone()]);
}

#[tokio::test]
async fn dash_v_shows_the_smtp_conversation_and_a_queue_run_summary() {
    let port = free_port();
    let site = Site::new(port);
    let out = sendmail(
        &site,
        &["-v", "-f", "vm@ourtest.com", "a@x.example"],
        "Subject: v\n\nv\n",
    );
    assert_eq!(code(&out), Some(0));
    let id = queued_id(&out);
    let sink = Sink::start_on(port, &[], true).await;
    let out = sendmail(&site, &["-q", "-v"], "");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let mut expected = vec![
        format!("Connecting to [127.0.0.1]:{port}..."),
        "<<< 220 ".to_string(),
        format!(">>> EHLO {HOSTNAME}"),
        ">>> MAIL FROM:<vm@ourtest.com>".to_string(),
        ">>> RCPT TO:<a@x.example>".to_string(),
        ">>> DATA".to_string(),
        "<<< 354 ".to_string(),
        ">>> .".to_string(),
        "<<< 250 2.0.0 Ok".to_string(),
        // Recorded as soon as the reply is read, before the session ends.
        format!("{id}: to=<a@x.example>, delay="),
        ">>> QUIT".to_string(),
    ];
    // In order: each expected line is found after the previous one.
    let mut rest = err.as_str();
    for want in expected.drain(..) {
        let at = rest
            .find(&want)
            .unwrap_or_else(|| panic!("{want:?} missing (in order) from:\n{err}"));
        rest = &rest[at + want.len()..];
    }
    assert!(err.contains("stat=Sent (250 2.0.0 Ok)"), "{err}");
    assert_eq!(
        stdout(&out),
        "queue run: 1 message(s) tried: 1 recipient(s) sent, 0 deferred, 0 failed; \
         0 message(s) skipped (another process is delivering them), 0 held\n"
    );
    assert_eq!(sink.dumped().len(), 1);
}

#[tokio::test]
async fn the_default_mode_returns_at_once_and_a_detached_process_delivers() {
    let sink = Sink::start().await;
    let site = Site::new(sink.port());
    let out = sendmail(&site, &["a@x.example"], "Subject: background\n\nb\n");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(
        eventually(|| sink.counts().messages == 1 && site.queued().is_empty()).await,
        "the background attempt did not deliver: {:?}, queue {:?}",
        sink.counts(),
        site.queued()
    );
}

#[tokio::test]
async fn a_permanent_failure_in_interactive_mode_is_reported_and_still_exits_0() {
    let sink = Sink::start_with(&["-f", "RCPT"], false).await;
    let site = Site::new(sink.port());
    let out = sendmail(
        &site,
        &["-odi", "-f", "<>", "nobody@x.example"],
        "Subject: f\n\nf\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("sendmail: nobody@x.example... Failed: "),
        "{err}"
    );
    assert!(
        site.queued().is_empty(),
        "a null sender's failure is not bounced"
    );
}

#[tokio::test]
async fn exit_codes_follow_sysexits() {
    let site = Site::new(free_port());
    // 64 EX_USAGE: no recipient, an unknown flag, a malformed -qI.
    for args in [
        vec![],
        vec!["-x", "a@x.example"],
        vec!["-qIshort"],
        vec!["-bp", "a@x.example"],
    ] {
        let out = sendmail(&site, &args, "");
        assert_eq!(code(&out), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("usage: sendmail"), "{args:?}");
    }
    // 65 EX_DATAERR: -t without recipient fields, a malformed header, a bad argument.
    let out = sendmail(&site, &["-odq", "-t"], "Subject: nobody\n\nx\n");
    assert_eq!(code(&out), Some(65));
    assert_eq!(
        stderr(&out),
        "sendmail: no recipients: the message has no To:, Cc: or Bcc: address\n"
    );
    let out = sendmail(&site, &["-odq", "-t"], "To bob@example.com\n\nx\n");
    assert_eq!(code(&out), Some(65));
    assert!(
        stderr(&out).contains("(the header ended at line 1, \"To bob@example.com\", which is not a \"Name: value\" field)"),
        "{}",
        stderr(&out)
    );
    let out = sendmail(
        &site,
        &["-odq", "-t"],
        "Subject: s\nTo: a@x.example; b@x.example\n\nx\n",
    );
    assert_eq!(code(&out), Some(65));
    assert_eq!(
        stderr(&out),
        "sendmail: To header on line 2: ';' outside a group (separate addresses with ',')\n"
    );
    let out = sendmail(&site, &["-odq", "a b@x.example"], "x\n");
    assert_eq!(code(&out), Some(65), "{}", stderr(&out));
    assert!(site.queued().is_empty(), "nothing refused was queued");
    // 69 EX_UNAVAILABLE: address test mode, periodic runs without a daemon.
    for flag in ["-bt", "-q15m"] {
        let out = sendmail(&site, &[flag], "");
        assert_eq!(code(&out), Some(69), "{flag}: {}", stderr(&out));
    }
    // 75 EX_TEMPFAIL: the spool cannot take the message (here its path is a file).
    site.write(
        "postrider.toml",
        "hostname = \"sipserver1.ourtest.com\"\nspool = \"not-a-dir\"\n",
    );
    site.write("not-a-dir", "");
    let out = sendmail(&site, &["-odq", "a@x.example"], "x\n");
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("sendmail: message not queued: "),
        "{}",
        stderr(&out)
    );
    // 78 EX_CONFIG: a typo in the configuration, with file and line.
    site.write(
        "postrider.toml",
        "hostname = \"sipserver1.ourtest.com\"\nsmart_hots = \"[a.example]\"\n",
    );
    let out = sendmail(&site, &["a@x.example"], "x\n");
    assert_eq!(code(&out), Some(78));
    assert!(
        stderr(&out).starts_with(&format!(
            "sendmail: {}:2: unknown field `smart_hots`",
            site.config().display()
        )),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn unknown_o_options_are_ignored_with_a_warning_and_known_ones_silently() {
    let site = Site::new(free_port());
    let out = sendmail(
        &site,
        &[
            "-odq",
            "-oem",
            "-B8BITMIME",
            "-FCronDaemon",
            "-oQ/var/spool/x",
            "-OTimeout.hoststatus=0m",
            "a@x.example",
        ],
        "x\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "sendmail: warning: option -oQ/var/spool/x is not supported; ignored\n"
    );
    assert_eq!(site.queued().len(), 1);
}

/// Several submissions (interactive and background) and several `-q` runs at once on one
/// spool, with messages already queued for the runs to fight over: the sink must receive each
/// message exactly once.
#[tokio::test]
async fn concurrent_submissions_and_queue_runs_deliver_each_message_exactly_once() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let mut expected = Vec::new();
    for n in 0..12 {
        let subject = format!("queued-{n}");
        let out = sendmail(
            &site,
            &["-odq", "a@x.example"],
            &format!("Subject: {subject}\n\nx\n"),
        );
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        expected.push(subject);
    }
    let mut children = Vec::new();
    for n in 0..8 {
        let mut cmd = site.command("sendmail");
        let subject = format!("new-{n}");
        let mode = if n % 2 == 0 { "-odi" } else { "-odb" };
        cmd.args([mode, "b@y.example"]);
        children.push((cmd, format!("Subject: {subject}\n\ny\n")));
        expected.push(subject);
        let mut cmd = site.command("sendmail");
        cmd.arg("-q");
        children.push((cmd, String::new()));
    }
    let handles: Vec<_> = children
        .into_iter()
        .map(|(cmd, input)| std::thread::spawn(move || run(cmd, &input)))
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    }
    let total = expected.len() as u64;
    assert!(
        eventually(|| site.queued().is_empty() && sink.counts().messages >= total).await,
        "not all delivered: {:?}, still queued {:?}",
        sink.counts(),
        site.queued()
    );
    let dumps = sink.dumped();
    for subject in &expected {
        let copies = dumps
            .iter()
            .filter(|d| header_value(d, "Subject") == [subject.as_str()])
            .count();
        assert_eq!(copies, 1, "{subject} was received {copies} times");
    }
    assert_eq!(dumps.len(), expected.len());
}

/// The reply lines of an SMTP session's output, without line ends.
fn reply_lines(out: &Output) -> Vec<String> {
    let text = stdout(out);
    assert!(
        text.split_inclusive('\n').all(|l| l.ends_with("\r\n")),
        "every reply line ends in CRLF: {text:?}"
    );
    text.lines().map(str::to_string).collect()
}

/// `postrider.toml` of a site, with more lines after it.
fn site_config(port: u16, extra: &str) -> String {
    format!(
        "hostname = \"{HOSTNAME}\"\nspool = \"spool\"\nsmart_host = \"[127.0.0.1]:{port}\"\n\
         [spf]\npolicy = \"off\"\n{extra}"
    )
}

#[tokio::test]
async fn dash_bs_runs_a_pipelined_smtp_session_on_standard_input_and_output() {
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    // All of it in the pipe at once, as a program writing to `sendmail -bs` may send it: two
    // transactions, the second without waiting for the first's reply.
    let input = "EHLO localhost\r\n\
                 MAIL FROM:<php@example.test>\r\nRCPT TO:<alice@example.org>\r\n\
                 RCPT TO:<bob@example.net>\r\nDATA\r\n\
                 Subject: from PHP\r\n\r\n..leading dot\r\nhi\r\n.\r\n\
                 MAIL FROM:<> SIZE=100\r\nRCPT TO:<carol@example.org> NOTIFY=NEVER\r\nDATA\r\n\
                 Subject: second\r\n\r\nx\r\n.\r\n\
                 QUIT\r\n";
    let out = sendmail(&site, &["-odi", "-bs"], input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let lines = reply_lines(&out);
    let codes: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with("250-"))
        .map(|l| l.get(..3).unwrap_or(l))
        .collect();
    assert_eq!(
        codes,
        [
            "220", "250", "250", "250", "250", "354", "250", "250", "250", "354", "250", "221"
        ],
        "{lines:#?}"
    );
    assert_eq!(lines[0], format!("220 {HOSTNAME} ESMTP postrider"));
    assert!(lines.contains(&"250-PIPELINING".to_string()), "{lines:#?}");
    assert!(
        lines.contains(&"250-SIZE 10240000".to_string()),
        "{lines:#?}"
    );
    let queued: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("250 2.0.0 OK queued as "))
        .collect();
    assert_eq!(queued.len(), 2, "{lines:#?}");
    // -odi: both delivered before the command returned.
    let dumps = sink.dumped();
    assert_eq!(dumps.len(), 2, "{dumps:#?}");
    let first = dumps
        .iter()
        .find(|d| header_value(d, "Subject") == ["from PHP"])
        .expect("the first message");
    assert_eq!(
        header_value(first, "X-Rcpt-Args"),
        ["<alice@example.org>", "<bob@example.net>"]
    );
    assert!(
        first.contains(&format!(
            "Received: from localhost (local)\n\tby {HOSTNAME} (postrider) with ESMTP"
        )) || first.contains(&format!(
            "Received: from localhost (local)\r\n\tby {HOSTNAME} (postrider) with ESMTP"
        )),
        "{first}"
    );
    assert!(first.contains("\n.leading dot"), "dot-unstuffed: {first}");
    let second = dumps
        .iter()
        .find(|d| header_value(d, "Subject") == ["second"])
        .expect("the second message");
    assert!(
        header_value(second, "X-Mail-Args")[0].starts_with("<>"),
        "{second}"
    );
    assert!(site.queued().is_empty(), "{:?}", site.queued());
}

#[tokio::test]
async fn dash_bs_queues_with_odq_and_delivers_in_the_background_by_default() {
    let sink = Sink::start().await;
    let site = Site::new(sink.port());
    let session = |subject: &str| {
        format!(
            "HELO localhost\r\nMAIL FROM:<cron@example.test>\r\nRCPT TO:<root@example.org>\r\n\
             DATA\r\nSubject: {subject}\r\n\r\nx\r\n.\r\nQUIT\r\n"
        )
    };
    let out = sendmail(&site, &["-odq", "-bs"], &session("queued"));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(site.queued().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.counts().messages, 0, "-odq delivers nothing");
    let out = sendmail(&site, &["-bs"], &session("background"));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("250 2.0.0 OK queued as "),
        "{}",
        stdout(&out)
    );
    // The detached attempt delivers this session's message only; the -odq one stays.
    assert!(
        eventually(|| sink.counts().messages == 1 && site.queued().len() == 1).await,
        "{:?}, queue {:?}",
        sink.counts(),
        site.queued()
    );
}

#[tokio::test]
async fn dash_bs_accepts_what_its_size_limit_allows_even_with_bare_line_feeds() {
    // SIZE counts what the client sends; the spool holds more (the Received: field, every
    // bare LF made CRLF). Both limits say 100000: a message just under it must be taken.
    let sink = Sink::start().await;
    let site = Site::new(sink.port());
    site.write(
        "postrider.toml",
        &site_config(
            sink.port(),
            "[queue]\nmax_message_size = 100000\n[server.limits]\nmax_message_size = 100000\n",
        ),
    );
    let line = format!("{}\n", "y".repeat(79));
    let mut body = "Subject: big\n\n".to_string() + &line.repeat(99_900 / line.len());
    // The last line ends in CRLF: only <CRLF>.<CRLF> ends the data.
    body.push_str(&"z".repeat(99_900 - body.len() - 2));
    body.push_str("\r\n");
    assert_eq!(body.len(), 99_900);
    let over = format!("{body}{}\r\n", "w".repeat(200));
    let input = format!(
        "EHLO localhost\r\nMAIL FROM:<a@example.test> SIZE=99900\r\nRCPT TO:<b@example.org>\r\n\
         DATA\r\n{body}.\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n\
         {over}.\r\nQUIT\r\n"
    );
    let out = sendmail(&site, &["-odi", "-bs"], &input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let lines = reply_lines(&out);
    let finals: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("250 2.0.0 OK") || l.starts_with("552 "))
        .collect();
    assert_eq!(finals.len(), 2, "{lines:#?}");
    assert!(
        finals[0].starts_with("250 2.0.0 OK queued as "),
        "{lines:#?}"
    );
    assert!(
        finals[1].starts_with("552 5.3.4 Message size exceeds the limit of 100000 octets"),
        "{lines:#?}"
    );
    assert!(
        eventually(|| sink.counts().messages == 1).await,
        "{:?}",
        sink.counts()
    );
}

#[tokio::test]
async fn dash_bs_greets_421_and_exits_75_when_the_spool_cannot_be_opened() {
    let site = Site::new(free_port());
    site.write(
        "postrider.toml",
        "hostname = \"sipserver1.ourtest.com\"\nspool = \"not-a-dir\"\n",
    );
    site.write("not-a-dir", "");
    let out = sendmail(&site, &["-bs"], "EHLO localhost\r\nQUIT\r\n");
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("421 4.3.0 {HOSTNAME} Mail system unavailable, try again later\r\n")
    );
    assert!(
        stderr(&out).starts_with("sendmail: message not queued: "),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn dash_bd_runs_the_daemon_that_swaks_sends_through_and_sigterm_stops() {
    const SWAKS: &str = "/usr/bin/swaks";
    assert!(
        std::path::Path::new(SWAKS).exists(),
        "{SWAKS} is missing: install the Debian package swaks"
    );
    let sink = Sink::start_with(&[], true).await;
    let site = Site::new(sink.port());
    let port = free_port();
    site.write(
        "postrider.toml",
        &site_config(
            sink.port(),
            &format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n"),
        ),
    );
    let log = std::fs::File::create(site.path("daemon.log")).unwrap();
    let mut cmd = site.command("sendmail");
    let mut daemon = cmd
        .args(["-bd", "-q15m"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(site.path("daemon.log")).unwrap_or_default();
    assert!(
        relay::wait_listening(port, &mut daemon),
        "sendmail -bd is not listening on {port}: {}",
        read_log()
    );
    let swaks = std::process::Command::new(SWAKS)
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "pbx@example.test", "--to", "alice@example.org"])
        .args([
            "--header",
            "Subject: via swaks",
            "--body",
            "hello from swaks",
        ])
        .output()
        .unwrap();
    assert!(
        swaks.status.success(),
        "swaks: {}",
        String::from_utf8_lossy(&swaks.stdout)
    );
    let transcript = String::from_utf8_lossy(&swaks.stdout).into_owned();
    assert!(
        transcript.contains("<-  250 2.0.0 OK queued as "),
        "{transcript}"
    );
    assert!(
        eventually(|| sink.counts().messages == 1).await,
        "{:?}: {}",
        sink.counts(),
        read_log()
    );
    let dump = sink.dumped().remove(0);
    assert_eq!(header_value(&dump, "X-Rcpt-Args"), ["<alice@example.org>"]);
    assert_eq!(header_value(&dump, "Subject"), ["via swaks"]);

    let pid = libc::pid_t::try_from(daemon.id()).unwrap();
    // SAFETY: kill(2) with a pid we spawned and have not waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", read_log());
    let log = read_log();
    assert!(
        log.contains(&format!(
            "listening on 127.0.0.1:{port} (smtp) as {HOSTNAME}"
        )),
        "{log}"
    );
    assert!(log.contains("stopping: no new connections"), "{log}");
}
