//! An engine that sends everything to a smart host on loopback (`[127.0.0.1]:port`, a sink
//! the bench started), with the default limits and no DNS: the setup of the benches that
//! time the engine's own path. Include with `#[path = "support/smart_host.rs"] mod
//! smart_host;`.

use std::sync::Arc;

use postrider::Domain;
use postrider::engine::Engine;
use postrider::resolve::StaticResolver;
use postrider::route::{Mailertable, PolicyTable};
use postrider::spool::Spool;
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};

/// Starts an engine over `spool` that relays every message to `[127.0.0.1]:port`.
pub async fn engine(spool: Arc<dyn Spool>, port: u16) -> Engine {
    let hostname = Domain::parse("bench.postrider.test").unwrap();
    let (router, _) = Mailertable::builder()
        .smart_host(format!("[127.0.0.1]:{port}").parse().unwrap())
        .hostname(hostname.clone())
        .build()
        .unwrap();
    let transport = EsmtpTransport::new(
        EsmtpConfig::new(hostname.clone()),
        Arc::new(StaticResolver::new()),
        Arc::new(PolicyTable::new()),
    );
    Engine::builder()
        .hostname(hostname)
        .spool(spool)
        .router(Arc::new(router))
        .transport(Arc::new(transport))
        .start()
        .await
        .unwrap()
}
