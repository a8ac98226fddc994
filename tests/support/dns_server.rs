//! A real DNS server for tests: hickory-server 0.26 in-process, authoritative for the zones a
//! test gives it, on 127.0.0.1 with UDP and TCP on the same random port.
//!
//! ```ignore
//! let server = DnsServer::start(vec![
//!     Zone::new("example.test")
//!         .mx("@", 10, "mx1")
//!         .a("mx1", "192.0.2.1")
//!         .txt("@", "v=spf1 ip4:192.0.2.0/24 -all"),
//! ])
//! .await;
//! let resolver = DnsResolver::with_name_servers(&[server.addr()], options)?;
//! ```
//!
//! Names in the builder are relative to the zone unless they end with a dot; `@` is the zone
//! itself and `.` the root. Faults: [`DnsServer::builder`] can make chosen names answer
//! SERVFAIL or never answer; [`DnsServer::servfail`] fails everything and [`SilentServer`]
//! never answers at all.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

/// The TTL of records added without [`Zone::ttl`]: long, so a test sees hickory's cache.
pub const DEFAULT_TTL: u32 = 3600;

/// One zone's records.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    ttl: u32,
    records: Vec<Record>,
}

impl Zone {
    /// An empty zone (an SOA and an NS record are added when the server starts).
    pub fn new(origin: &str) -> Zone {
        let mut origin = Name::from_ascii(origin).expect("zone origin");
        origin.set_fqdn(true);
        Zone {
            origin,
            ttl: DEFAULT_TTL,
            records: Vec::new(),
        }
    }

    /// A zone from zone-file text (RFC 1035 master file format); `$ORIGIN` defaults to
    /// `origin`.
    pub fn parse(origin: &str, text: &str) -> Zone {
        let mut zone = Zone::new(origin);
        let (_, sets) = Parser::new(text, None, Some(zone.origin.clone()))
            .parse()
            .unwrap_or_else(|e| panic!("zone text for {origin}: {e}"));
        for set in sets.values() {
            zone.records.extend(set.records_without_rrsigs().cloned());
        }
        zone
    }

    /// The TTL for the records added after this call.
    pub fn ttl(mut self, ttl: u32) -> Zone {
        self.ttl = ttl;
        self
    }

    /// Any record.
    pub fn record(mut self, owner: &str, data: RData) -> Zone {
        let name = self.name(owner);
        self.records.push(Record::from_rdata(name, self.ttl, data));
        self
    }

    /// `owner MX preference exchange`.
    pub fn mx(self, owner: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = self.name(exchange);
        self.record(owner, RData::MX(MX::new(preference, exchange)))
    }

    /// `owner A address`.
    pub fn a(self, owner: &str, addr: &str) -> Zone {
        let ip = addr.parse().expect("IPv4 address");
        self.record(owner, RData::A(A(ip)))
    }

    /// `owner AAAA address`.
    pub fn aaaa(self, owner: &str, addr: &str) -> Zone {
        let ip = addr.parse().expect("IPv6 address");
        self.record(owner, RData::AAAA(AAAA(ip)))
    }

    /// `owner CNAME target`.
    pub fn cname(self, owner: &str, target: &str) -> Zone {
        let target = self.name(target);
        self.record(owner, RData::CNAME(CNAME(target)))
    }

    /// `owner PTR target`.
    pub fn ptr(self, owner: &str, target: &str) -> Zone {
        let target = self.name(target);
        self.record(owner, RData::PTR(PTR(target)))
    }

    /// `owner TXT "text"`, split into strings of at most 255 bytes as DNS requires (SPF and
    /// DKIM records longer than that are one record of several strings).
    pub fn txt(self, owner: &str, text: &str) -> Zone {
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(255).collect()
        };
        self.record(owner, RData::TXT(TXT::from_bytes(chunks)))
    }

    fn name(&self, name: &str) -> Name {
        match name {
            "@" => self.origin.clone(),
            "." => Name::root(),
            _ => Name::parse(name, Some(&self.origin)).expect("record name"),
        }
    }

    fn into_handler(self) -> (LowerName, InMemoryZoneHandler) {
        let mut handler = InMemoryZoneHandler::empty(
            self.origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            None,
        );
        let has = |t| {
            self.records
                .iter()
                .any(|r| r.record_type() == t && r.name == self.origin)
        };
        let ns_name = Name::parse("ns", Some(&self.origin)).expect("ns name");
        let mut records = self.records.clone();
        if !has(hickory_server::proto::rr::RecordType::SOA) {
            let soa = SOA::new(
                ns_name.clone(),
                Name::parse("hostmaster", Some(&self.origin)).expect("rname"),
                1,
                3600,
                600,
                86400,
                60,
            );
            records.insert(
                0,
                Record::from_rdata(self.origin.clone(), 60, RData::SOA(soa)),
            );
        }
        if !has(hickory_server::proto::rr::RecordType::NS) {
            records.push(Record::from_rdata(
                self.origin.clone(),
                DEFAULT_TTL,
                RData::NS(NS(ns_name)),
            ));
        }
        for record in records {
            let shown = record.to_string();
            assert!(
                handler.upsert_mut(record, 1),
                "record refused by the zone: {shown}"
            );
        }
        (LowerName::new(&self.origin), handler)
    }
}

/// Chooses zones and faults before starting a [`DnsServer`].
#[derive(Default)]
pub struct DnsServerBuilder {
    zones: Vec<Zone>,
    servfail: HashSet<LowerName>,
    silent: HashSet<LowerName>,
    answer_all: Option<ResponseCode>,
}

impl DnsServerBuilder {
    /// Serves a zone.
    pub fn zone(mut self, zone: Zone) -> DnsServerBuilder {
        self.zones.push(zone);
        self
    }

    /// Queries for `name` (absolute, any type) are answered SERVFAIL.
    pub fn servfail_for(mut self, name: &str) -> DnsServerBuilder {
        self.servfail.insert(lower(name));
        self
    }

    /// Queries for `name` (absolute, any type) are never answered.
    pub fn silent_for(mut self, name: &str) -> DnsServerBuilder {
        self.silent.insert(lower(name));
        self
    }

    /// Every query is answered with `code` (SERVFAIL, REFUSED).
    pub fn answer_all(mut self, code: ResponseCode) -> DnsServerBuilder {
        self.answer_all = Some(code);
        self
    }

    /// Binds 127.0.0.1 (UDP and TCP, one random port) and starts serving.
    pub async fn start(self) -> DnsServer {
        let (udp, tcp) = bind_pair().await;
        self.serve(udp, tcp)
    }

    /// Binds port 53 of a random address in 127.0.0.0/8 instead, for programs that read
    /// `/etc/resolv.conf` (which cannot name a port); a test points one at it in a mount
    /// namespace of its own (see `support::dkim`).
    pub async fn start_on_port_53(self) -> DnsServer {
        for _ in 0..50 {
            let octets: [u8; 3] = rand::random();
            let ip = std::net::Ipv4Addr::new(127, octets[0], octets[1], octets[2].max(2));
            let addr = SocketAddr::from((ip, 53));
            let Ok(udp) = tokio::net::UdpSocket::bind(addr).await else {
                continue;
            };
            if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                return self.serve(udp, tcp);
            }
        }
        panic!(
            "no address of 127.0.0.0/8 has port 53 free for UDP and TCP (binding it needs root)"
        );
    }

    fn serve(self, udp: tokio::net::UdpSocket, tcp: tokio::net::TcpListener) -> DnsServer {
        let mut catalog = Catalog::new();
        for zone in self.zones {
            let (origin, handler) = zone.into_handler();
            catalog.upsert(origin, vec![Arc::new(handler)]);
        }
        let queries = Arc::new(Counters::default());
        let handler = Handler {
            catalog,
            servfail: self.servfail,
            silent: self.silent,
            answer_all: self.answer_all,
            queries: queries.clone(),
        };
        let addr = udp.local_addr().expect("local addr");
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        DnsServer {
            addr,
            queries,
            _server: server,
        }
    }
}

/// A running DNS server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    queries: Arc<Counters>,
    _server: Server<Handler>,
}

impl DnsServer {
    /// A server for `zones`, without faults.
    pub async fn start(zones: Vec<Zone>) -> DnsServer {
        zones
            .into_iter()
            .fold(DnsServer::builder(), DnsServerBuilder::zone)
            .start()
            .await
    }

    /// A server that answers every query SERVFAIL.
    pub async fn servfail() -> DnsServer {
        DnsServer::builder()
            .answer_all(ResponseCode::ServFail)
            .start()
            .await
    }

    /// Zones and faults to choose.
    pub fn builder() -> DnsServerBuilder {
        DnsServerBuilder::default()
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many queries it has received.
    pub fn queries(&self) -> usize {
        self.udp_queries() + self.tcp_queries()
    }

    /// How many queries came over UDP.
    pub fn udp_queries(&self) -> usize {
        self.queries.udp.load(Ordering::SeqCst)
    }

    /// How many queries came over TCP.
    pub fn tcp_queries(&self) -> usize {
        self.queries.tcp.load(Ordering::SeqCst)
    }
}

/// Sockets on one random port that never answer: UDP datagrams are never read, TCP
/// connections are never accepted (the kernel completes the handshake, nothing replies).
pub struct SilentServer {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl SilentServer {
    /// Binds 127.0.0.1.
    pub async fn start() -> SilentServer {
        let (udp, tcp) = bind_pair().await;
        SilentServer {
            udp: udp.into_std().expect("std udp"),
            tcp: tcp.into_std().expect("std tcp"),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.udp.local_addr().expect("local addr")
    }
}

#[derive(Default)]
struct Counters {
    udp: AtomicUsize,
    tcp: AtomicUsize,
}

struct Handler {
    catalog: Catalog,
    servfail: HashSet<LowerName>,
    silent: HashSet<LowerName>,
    answer_all: Option<ResponseCode>,
    queries: Arc<Counters>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        match request.protocol() {
            Protocol::Tcp => &self.queries.tcp,
            _ => &self.queries.udp,
        }
        .fetch_add(1, Ordering::SeqCst);
        let name = request
            .request_info()
            .ok()
            .map(|info| info.query.name().clone());
        let fault = match &name {
            Some(n) if self.silent.contains(n) => {
                return std::future::pending::<ResponseInfo>().await;
            }
            Some(n) if self.servfail.contains(n) => Some(ResponseCode::ServFail),
            _ => self.answer_all,
        };
        match fault {
            Some(code) => {
                let response = MessageResponseBuilder::from_message_request(request)
                    .error_msg(&request.metadata, code);
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(_) => {
                        let mut metadata = Metadata::response_from_request(&request.metadata);
                        metadata.response_code = code;
                        ResponseInfo::from(Header {
                            metadata,
                            counts: Default::default(),
                        })
                    }
                }
            }
            None => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        }
    }
}

fn lower(name: &str) -> LowerName {
    let mut name = Name::from_ascii(name).expect("name");
    name.set_fqdn(true);
    LowerName::new(&name)
}

/// A UDP socket and a TCP listener on the same random port of 127.0.0.1.
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP on 127.0.0.1");
        let addr = udp.local_addr().expect("local addr");
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no port of 127.0.0.1 free for both UDP and TCP after 50 tries");
}

/// An address as the test zones write it, for assertions.
pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("IP address")
}
