//! `Config::assemble`: a `postrider.toml` becomes the engine's parts, with every knob of the
//! file reaching the part it configures, and errors that name the file and line.

use std::time::Duration;

use postrider::config::{AssembleError, Config, Notice};

/// A configuration that needs no DNS (a configured host name, a name server nobody asks).
fn parse(extra: &str) -> Config {
    let dir = std::env::temp_dir();
    Config::parse(
        &format!(
            "hostname = \"mta.example.com\"\nspool = \"spool\"\n{extra}\n[dns]\nname_servers = [\"127.0.0.1:9\"]\n"
        ),
        dir.join("postrider.toml"),
    )
    .unwrap()
}

#[tokio::test]
async fn the_esmtp_and_queue_sections_reach_the_transport_and_the_engine() {
    let config = parse(
        "[esmtp]\nconnection_cache = \"off\"\n[esmtp.timeouts]\nconnect = \"5s\"\ngreeting = \"20s\"\n\
         [queue]\ndestination_concurrency = 3\nshutdown_grace = \"7s\"\nmax_message_size = 2048\n",
    );
    let parts = config.assemble().await.unwrap();
    let esmtp = parts.esmtp().config();
    assert_eq!(esmtp.timeouts.connect, Duration::from_secs(5));
    assert_eq!(esmtp.timeouts.greeting, Duration::from_secs(20));
    assert_eq!(
        esmtp.timeouts.data_term,
        Duration::from_secs(600),
        "unnamed phases keep RFC 5321's limits"
    );
    assert_eq!(esmtp.connection_cache, None);
    assert_eq!(esmtp.max_connections_per_hop, 3, "one knob for both limits");
    assert_eq!(parts.limits().max_deliveries_per_hop, 3);
    assert_eq!(parts.limits().shutdown_grace, Duration::from_secs(7));
    assert_eq!(parts.limits().max_message_size, 2048);
    assert_eq!(parts.hostname().as_str(), "mta.example.com");
}

#[tokio::test]
async fn by_default_the_transport_keeps_sessions_for_two_seconds() {
    let parts = parse("").assemble().await.unwrap();
    assert_eq!(
        parts.esmtp().config().connection_cache,
        Some(Duration::from_secs(2))
    );
    assert_eq!(parts.limits().max_deliveries_per_hop, 20);
}

#[tokio::test]
async fn a_broken_mailertable_is_an_error_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mt"),
        "ok.example esmtp:[a.example]\nbad.example frob:x\n",
    )
    .unwrap();
    let config = Config::parse(
        "hostname = \"mta.example.com\"\nmailertable = \"mt\"\n[dns]\nname_servers = [\"127.0.0.1:9\"]\n",
        dir.path().join("postrider.toml"),
    )
    .unwrap();
    let err = config.assemble().await.unwrap_err();
    assert!(matches!(err, AssembleError::Tables(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}:2:", dir.path().join("mt").display())),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreadable_trust_anchor_file_is_named() {
    let config = parse("[esmtp]\ntrust_anchors = \"/nonexistent/ca.pem\"\n");
    let err = config.assemble().await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn a_zero_destination_concurrency_is_refused() {
    let err = parse("[queue]\ndestination_concurrency = 0\n")
        .assemble()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("destination_concurrency = 0"),
        "{err}"
    );
}

#[tokio::test]
async fn a_single_label_host_name_works_with_a_warning_that_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(
        "hostname = \"vm\"\n[dns]\nname_servers = [\"127.0.0.1:9\"]\ntimeout = \"100ms\"\nattempts = 1\n",
        dir.path().join("postrider.toml"),
    )
    .unwrap();
    let parts = config.assemble().await.unwrap();
    assert_eq!(parts.hostname().as_str(), "vm");
    let warning = parts
        .warnings()
        .iter()
        .find(|w| matches!(w, Notice::Unqualified { .. }))
        .expect("a warning about the short name");
    let text = warning.to_string();
    assert!(
        text.contains("unable to qualify my own domain name (vm)"),
        "{text}"
    );
    assert!(text.contains("using the short name vm"), "{text}");
}
