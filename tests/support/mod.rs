//! Support shared by the integration test binaries: each binary declares `mod support;` and
//! uses the parts it needs (real peers started privately, scripted peers, spools, the built
//! example programs).
#![allow(dead_code, unused_imports)] // every binary uses a different part

pub mod dkim;
pub mod dns_server;
pub mod dnssec_server;
pub mod doctor;
pub mod dovecot;
pub mod engine;
pub mod esmtp;
pub mod example_binary;
pub mod examples;
pub mod imap;
pub mod local;
pub mod messages;
pub mod oauth;
pub mod postfix;
pub mod postgres;
pub mod queue_node;
pub mod relay;
pub mod route;
pub mod server;
pub mod shared_spool;
pub mod sink;
pub mod slow_sink;
pub mod smtp_peer;
pub mod spool;
pub mod spool_suite;
pub mod sts_server;
pub mod system_users;
pub mod tls_policy;
pub mod tmpfs;
pub mod token_endpoint;
