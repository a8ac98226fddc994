//! `sendmail -bv` and `sendmail -bi` (newaliases) for local mail: the aliases expanded as a
//! delivery would expand them, against the machine's real password database (`root` exists
//! everywhere; `ghost-…` nowhere), and the aliases file checked as a start would read it.

mod support;
use support::examples::{HOSTNAME, Site, stderr, stdout};

use std::process::Output;

fn sendmail(site: &Site, args: &[&str]) -> Output {
    support::examples::sendmail(site, args, "")
}

/// A site whose host name is local, with `[local]` delivering to Maildirs under the site and
/// the aliases file `aliases`.
fn local_site(aliases: &str) -> Site {
    let site = Site::new(1);
    site.write("aliases", aliases);
    site.write(
        "postrider.toml",
        &format!(
            "hostname = \"{HOSTNAME}\"\nspool = \"spool\"\n[dns]\nname_servers = [\"127.0.0.1:1\"]\n\
             [spf]\npolicy = \"off\"\n\
             [local]\nmailbox = \"maildir:{}/%u/Maildir\"\naliases = \"aliases\"\n",
            site.path("mail").display()
        ),
    );
    site
}

#[test]
fn verify_expands_local_aliases_down_to_the_mailbox_of_a_real_user() {
    let site = local_site("postmaster: root\nops: root, jane@example.net\n");
    let out = sendmail(&site, &["-bv", "postmaster"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("postmaster@{HOSTNAME}: mailer=local")),
        "{text}"
    );
    assert_eq!(
        lines[1],
        format!(
            "postmaster... deliverable: mailer local, user root (maildir {}/root/Maildir)",
            site.path("mail").display()
        )
    );

    let out = sendmail(&site, &["-bv", "ops"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("ops... deliverable: mailer local, user root"),
        "{text}"
    );
    assert!(
        text.contains("ops... forwarded: jane@example.net"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("jane@example.net: ")),
        "the forward's own route is shown: {text}"
    );
}

#[test]
fn verify_says_user_unknown_and_exits_67_for_a_name_nobody_has() {
    let ghost = format!("ghost-{}", std::process::id());
    let site = local_site(&format!("helpdesk: {ghost}\n"));
    let out = sendmail(&site, &["-bv", &ghost]);
    assert_eq!(out.status.code(), Some(67), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("{ghost}... User unknown")),
        "{}",
        stdout(&out)
    );
    let out = sendmail(&site, &["-bv", "helpdesk"]);
    assert_eq!(out.status.code(), Some(67), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("helpdesk... User unknown (alias target {ghost})")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn newaliases_prints_the_summary_and_warns_about_unknown_users() {
    let ghost = format!("ghost-{}", std::process::id());
    let site = local_site(&format!("postmaster: root\nsupport: root, {ghost}\n"));
    let out = sendmail(&site, &["-bi"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    let aliases = site.path("aliases");
    assert!(
        text.contains(&format!("{}: 2 aliases, longest ", aliases.display())),
        "{text}"
    );
    assert!(text.contains(&ghost), "the unknown user is named: {text}");
}

#[test]
fn newaliases_names_the_bad_line_of_a_broken_aliases_file_and_exits_78() {
    let site = local_site("postmaster: root\nthis line has no colon\n");
    let out = sendmail(&site, &["-bi"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!("{}:2", site.path("aliases").display())),
        "file and line are named: {text}"
    );
}

#[test]
fn verify_with_v_shows_the_tls_rule_the_policy_file_pins_for_an_mx_domain() {
    let site = Site::new(1);
    site.write("tls-policy", "example.net verify\n");
    site.write(
        "postrider.toml",
        &format!(
            "hostname = \"{HOSTNAME}\"\nspool = \"spool\"\npolicy = \"tls-policy\"\n\
             [dns]\nname_servers = [\"127.0.0.1:1\"]\n[spf]\npolicy = \"off\"\n"
        ),
    );
    let out = sendmail(&site, &["-bv", "user@example.net"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("TLS"),
        "without -v no policy is looked up: {}",
        stdout(&out)
    );
    let out = sendmail(&site, &["-bv", "-v", "user@example.net"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "example.net: TLS verify, pinned by the policy file (discovered policies are not consulted)"
        ),
        "{}",
        stdout(&out)
    );
}
