//! A DNSSEC-signed DNS tree on loopback, for DANE tests: hickory-server 0.26 (feature
//! `dnssec-ring`) signing in process with Ed25519 keys generated at test time.
//!
//! The tree is a private root zone `.` (its key is the test's trust anchor) with child zones
//! below it, each a delegation in the root: a **signed** child gets a DS record in the root
//! for its key; an **unsigned** child gets none (the root's NSEC proves the DS absent, so
//! the child is provably insecure); a **bogus** child is signed, but the root's DS names
//! another key, so nothing in it validates. One server serves every zone; a DS query for a
//! child's apex is answered from the root zone (its parent), as a real hierarchy would —
//! hickory's catalog alone would send it to the child.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::Time;
use hickory_server::proto::dnssec::crypto::Ed25519SigningKey;
use hickory_server::proto::dnssec::rdata::{DNSKEY, DS};
use hickory_server::proto::dnssec::{
    DigestType, DnssecSigner, PublicKeyBuf, SigningKey, TrustAnchors,
};
use hickory_server::proto::rr::{LowerName, Name, RecordType};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// How a child zone is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Signed, with its DS in the root.
    Signed,
    /// Unsigned, no DS: provably insecure.
    Unsigned,
    /// Signed, but the root's DS is for a different key: bogus.
    Bogus,
}

/// A child zone: its origin (one label under the root, e.g. `dane.`) and zone-file text.
pub struct ChildZone {
    pub origin: String,
    pub security: Security,
    pub records: String,
}

pub struct SignedDns {
    addr: SocketAddr,
    root_key: PublicKeyBuf,
    _server: Server<Handler>,
}

struct Key {
    signing: Ed25519SigningKey,
    public: PublicKeyBuf,
}

fn key() -> Key {
    let der = Ed25519SigningKey::generate_pkcs8().expect("Ed25519 key");
    let signing = Ed25519SigningKey::from_pkcs8(&der).expect("Ed25519 key");
    let public = signing.to_public_key().expect("public key");
    Key { signing, public }
}

fn signer(k: Key, origin: &Name) -> DnssecSigner {
    DnssecSigner::new(
        DNSKEY::from_key(&k.public),
        Box::new(k.signing),
        origin.clone(),
        Duration::from_secs(86400),
    )
}

fn name(s: &str) -> Name {
    let mut n = Name::from_ascii(s).expect("name");
    n.set_fqdn(true);
    n
}

fn handler(origin: &Name, text: &str, nsec: bool) -> InMemoryZoneHandler {
    let mut h = InMemoryZoneHandler::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
        nsec.then_some(NxProofKind::Nsec),
    );
    let soa = format!(
        "@ 60 IN SOA ns.{o} hostmaster.{o} 1 3600 600 86400 60\n@ 3600 IN NS ns.{o}\n",
        o = if origin.is_root() {
            String::new()
        } else {
            origin.to_ascii()
        }
    );
    let text = format!("{soa}{text}");
    let (_, sets) = Parser::new(&text, None, Some(origin.clone()))
        .parse()
        .unwrap_or_else(|e| panic!("zone text for {origin}: {e}\n{text}"));
    for set in sets.values() {
        for r in set.records_without_rrsigs() {
            assert!(h.upsert_mut(r.clone(), 1), "record refused: {r}");
        }
    }
    h
}

impl SignedDns {
    /// The root zone (holding `root_records`, e.g. glue) and `children`, served on a random
    /// port of 127.0.0.1 (UDP and TCP).
    pub async fn start(root_records: &str, children: Vec<ChildZone>) -> SignedDns {
        let root = Name::root();
        let root_key = key();
        let root_public = root_key.public.clone();
        let mut delegations = String::new();
        let mut child_handlers = Vec::new();
        for child in &children {
            let origin = name(&child.origin);
            delegations.push_str(&format!("{} 3600 IN NS ns.{}\n", origin, origin));
            let mut h = handler(
                &origin,
                &child.records,
                child.security != Security::Unsigned,
            );
            match child.security {
                Security::Unsigned => {}
                Security::Signed | Security::Bogus => {
                    let k = key();
                    let ds_key = if child.security == Security::Signed {
                        k.public.clone()
                    } else {
                        key().public
                    };
                    let ds = DS::from_key(&ds_key, &origin, DigestType::SHA256).expect("DS");
                    delegations.push_str(&format!(
                        "{} 3600 IN DS {} {} {} {}\n",
                        origin,
                        ds.key_tag(),
                        u8::from(ds.algorithm()),
                        u8::from(ds.digest_type()),
                        hex(ds.digest())
                    ));
                    h.add_zone_signing_key_mut(signer(k, &origin))
                        .expect("zone signing key");
                    h.secure_zone_mut().expect("sign the zone");
                }
            }
            child_handlers.push((origin, h));
        }
        let mut root_handler = handler(&root, &format!("{root_records}{delegations}"), true);
        root_handler
            .add_zone_signing_key_mut(signer(root_key, &root))
            .expect("root signing key");
        root_handler.secure_zone_mut().expect("sign the root");
        let root_handler = Arc::new(root_handler);

        let mut catalog = Catalog::new();
        let mut parent = Catalog::new();
        catalog.upsert(LowerName::new(&root), vec![root_handler.clone()]);
        parent.upsert(LowerName::new(&root), vec![root_handler]);
        let mut apexes = Vec::new();
        for (origin, h) in child_handlers {
            apexes.push(LowerName::new(&origin));
            catalog.upsert(LowerName::new(&origin), vec![Arc::new(h)]);
        }
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(Handler {
            catalog,
            parent,
            apexes,
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        SignedDns {
            addr,
            root_key: root_public,
            _server: server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Trust anchors holding only this tree's root key.
    pub fn anchors(&self) -> TrustAnchors {
        let mut a = TrustAnchors::empty();
        a.insert(&self.root_key);
        a
    }
}

/// A UDP socket and a TCP listener on one random port of 127.0.0.1.
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port of 127.0.0.1 free for both UDP and TCP after 50 tries");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

struct Handler {
    catalog: Catalog,
    parent: Catalog,
    apexes: Vec<LowerName>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let ds_at_cut = request.request_info().ok().is_some_and(|info| {
            info.query.query_type() == RecordType::DS && self.apexes.contains(info.query.name())
        });
        if ds_at_cut {
            self.parent
                .handle_request::<R, T>(request, response_handle)
                .await
        } else {
            self.catalog
                .handle_request::<R, T>(request, response_handle)
                .await
        }
    }
}

/// `_port._tcp.host. TLSA usage selector matching hex` as zone-file text.
pub fn tlsa_line(
    host: &str,
    port: u16,
    usage: u8,
    selector: u8,
    matching: u8,
    data: &[u8],
) -> String {
    format!(
        "_{port}._tcp.{host}. 300 IN TLSA {usage} {selector} {matching} {}\n",
        hex(data)
    )
}
