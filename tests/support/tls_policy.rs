//! A small world for outbound TLS policy tests: a recipient domain in the in-process DNS
//! server, its MTA-STS policy host (HTTPS on loopback, test CA), a policy cache directory, an
//! adjustable clock, a TLS-RPT collector, and a transport that trusts only the test CA.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use postrider::https::{HttpsClient, HttpsOptions};
use postrider::resolve::{AddressPreference, DnsOptions, DnsResolver};
use postrider::route::PolicyTable;
use postrider::tls_policy::{MtaSts, OutboundTls, StsCache, TlsReporter};
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};
use postrider::{Domain, Mailer, NextHop, Route};
use rustls::RootCertStore;

use super::dns_server::{DnsServer, Zone};
use super::esmtp;
use super::smtp_peer::TestCa;
use super::sts_server::{PolicyAnswer, PolicyServer};

/// The recipient domain of every test.
pub const DOMAIN: &str = "example.test";
/// Its (first) MX host.
pub const MX: &str = "mx.example.test";

/// A clock the test moves.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<SystemTime>>);

impl TestClock {
    pub fn new() -> TestClock {
        TestClock(Arc::new(Mutex::new(SystemTime::now())))
    }
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    pub fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
    pub fn as_clock(&self) -> postrider::tls_policy::Clock {
        let c = self.0.clone();
        Arc::new(move || *c.lock().unwrap())
    }
}

pub struct StsWorld {
    pub ca: TestCa,
    pub policy: PolicyServer,
    pub clock: TestClock,
    pub reporter: Arc<TlsReporter>,
}

/// The zone of [`DOMAIN`]: MX [`MX`] (and `mx2` when `second_mx`), addresses on 127.0.0.1 /
/// 127.0.0.2, `_mta-sts` TXT with `id` (none when `None`), `mta-sts` on `policy_ip`.
pub fn zone(id: Option<&str>, policy_ip: &str, second_mx: bool) -> Zone {
    let mut z = Zone::new(&format!("{DOMAIN}."))
        .mx("@", 10, &format!("{MX}."))
        .a("mx", "127.0.0.1")
        .a("mx2", "127.0.0.2")
        .a("mta-sts", policy_ip);
    if second_mx {
        z = z.mx("@", 20, &format!("mx2.{DOMAIN}."));
    }
    if let Some(id) = id {
        z = z.txt("_mta-sts", &format!("v=STSv1; id={id};"));
    }
    z
}

impl StsWorld {
    /// A policy host serving `answer`.
    pub async fn start(answer: PolicyAnswer) -> StsWorld {
        let ca = TestCa::new("MTA-STS test CA");
        let policy = PolicyServer::start(&ca, DOMAIN, answer).await;
        StsWorld {
            ca,
            policy,
            clock: TestClock::new(),
            reporter: Arc::new(TlsReporter::new("postrider tests")),
        }
    }

    /// A DNS server for [`zone`] with this `id` and one MX host.
    pub async fn dns(&self, id: Option<&str>) -> DnsServer {
        DnsServer::start(vec![zone(id, &self.policy.ip(), false)]).await
    }

    /// The same with a second MX host, `mx2` (127.0.0.2), of preference 20.
    pub async fn dns_two_mx(&self, id: Option<&str>) -> DnsServer {
        DnsServer::start(vec![zone(id, &self.policy.ip(), true)]).await
    }

    /// The roots the transport trusts: the test CA only.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert.clone()).unwrap();
        roots
    }

    /// MTA-STS through `dns`, caching in `cache` (a directory: the cache survives a new
    /// transport, as it survives a restart).
    pub fn mta_sts(&self, dns: &DnsResolver, cache: &Path) -> MtaSts {
        let https = HttpsClient::with_resolver(
            self.roots(),
            HttpsOptions::default(),
            Arc::new(dns.clone()),
        )
        .unwrap();
        MtaSts::new(dns.clone(), https, StsCache::new(Some(cache.to_path_buf())))
            .with_clock(self.clock.as_clock())
    }

    /// The outbound policy: MTA-STS with TLS-RPT counts.
    pub fn outbound(&self, dns: &DnsResolver, cache: &Path) -> OutboundTls {
        OutboundTls::new(
            Some(self.mta_sts(dns, cache)),
            None,
            Some(self.reporter.clone()),
        )
        .with_clock(self.clock.as_clock())
    }

    /// A transport delivering through `server`'s DNS, with the policy file `table`.
    pub fn transport(
        &self,
        server: &DnsServer,
        cache: &Path,
        table: PolicyTable,
    ) -> EsmtpTransport {
        let dns = resolver(server);
        let mut config: EsmtpConfig = esmtp::config();
        config.tls_roots = self.roots();
        config.tls_policy = Some(Arc::new(self.outbound(&dns, cache)));
        EsmtpTransport::new(config, Arc::new(dns), Arc::new(table))
    }
}

/// A resolver asking only the test server, IPv4 only, short timeouts.
pub fn resolver(server: &DnsServer) -> DnsResolver {
    resolver_at(server.addr())
}

/// The same for any server address.
pub fn resolver_at(addr: std::net::SocketAddr) -> DnsResolver {
    DnsResolver::with_name_servers(
        &[addr],
        DnsOptions {
            timeout: Duration::from_secs(2),
            attempts: 1,
            address_preference: AddressPreference::Ipv4Only,
            randomize_addresses: false,
            ..DnsOptions::default()
        },
    )
    .unwrap()
}

/// Direct MX delivery to [`DOMAIN`], on `port` (the scripted MX hosts listen there).
pub fn mx_route(port: u16) -> Route {
    Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![mx_hop(port)],
    }
}

pub fn mx_hop(port: u16) -> NextHop {
    NextHop::mx(Domain::parse(DOMAIN).unwrap(), Some(port))
}
