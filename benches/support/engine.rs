//! The engine the benches drive: this bench host's name, a router built from a mailertable
//! or a smart host, and ESMTP with no DNS (every hop is a loopback address). Include with
//! `#[path = "support/engine.rs"] mod engine;`.

#![allow(dead_code)] // each bench uses a part

use std::sync::Arc;

use postrider::Domain;
use postrider::engine::{Engine, EngineBuilder};
use postrider::resolve::StaticResolver;
use postrider::route::{Mailertable, MailertableBuilder, PolicyTable};
use postrider::spool::Spool;
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};

/// The name every bench engine goes by.
pub fn hostname() -> Domain {
    Domain::parse("bench.postrider.test").unwrap()
}

/// An engine builder routing by `routes` (which must load without a warning), with the
/// default limits: add the spool, and the limits a bench wants, then start it.
pub fn builder(routes: MailertableBuilder) -> EngineBuilder {
    let hostname = hostname();
    let (router, warnings) = routes.hostname(hostname.clone()).build().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let transport = EsmtpTransport::new(
        EsmtpConfig::new(hostname.clone()),
        Arc::new(StaticResolver::new()),
        Arc::new(PolicyTable::new()),
    );
    Engine::builder()
        .hostname(hostname)
        .router(Arc::new(router))
        .transport(Arc::new(transport))
}

/// Starts an engine over `spool` that relays every message to `[127.0.0.1]:port`.
pub async fn to_smart_host(spool: Arc<dyn Spool>, port: u16) -> Engine {
    builder(Mailertable::builder().smart_host(format!("[127.0.0.1]:{port}").parse().unwrap()))
        .spool(spool)
        .start()
        .await
        .unwrap()
}
