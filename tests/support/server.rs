//! The library's SMTP server in-process for tests: an engine on a `MemorySpool` with a scripted
//! transport behind it (local and relayed mail alike), a real `Mailertable` (local domains,
//! an `error:` entry), `serve` on a free loopback port, certificates made with rcgen, and a raw
//! client that can connect from any 127.x address.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use postrider::engine::{Clock, Engine};
use postrider::route::Mailertable;
use postrider::server::auth::Authenticator;
use postrider::server::passwd::PasswordFile;
use postrider::server::{
    Endpoint, ListenerKind, RelayPolicy, Server, ServerLimits, ServerTimeouts, ServerTls, serve,
};
use postrider::spool::{MemorySpool, Spool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::engine::{ScriptedTransport, ok};

/// The server's name.
pub const HOSTNAME: &str = "mail.test.example";
/// A domain the mailertable's local-host-names list makes local.
pub const LOCAL_DOMAIN: &str = "local.example";
/// A domain the mailertable refuses with `error:5.7.0:550`.
pub const REFUSED_DOMAIN: &str = "refused.example";

/// `openssl passwd -6 -salt pbxsalt Pbx-Passw0rd-7f3k`: user `alice`, password [`PASSWORD`]
/// (distinctive, so a search of the log for it cannot hit another word).
pub const PASSWORDS: &str = "alice:{SHA512-CRYPT}$6$pbxsalt$bZx5wL4NP5bntWDJUN4Ib6C6Vfgx7huSxlnFbQ6XV10AEvE1.rtFqCPhvk3thJ.LXvNnIZiPI2/aP6xtVkO7u1\n";

/// alice's password.
pub const PASSWORD: &str = "Pbx-Passw0rd-7f3k";
/// `AUTH PLAIN` of alice and her password.
pub const PLAIN_BLOB: &str = "AGFsaWNlAFBieC1QYXNzdzByZC03ZjNr";

/// How to start a test server.
pub struct Options {
    pub kind: ListenerKind,
    pub tls: bool,
    pub policy: RelayPolicy,
    pub passwords: bool,
    pub plaintext_auth_from_loopback: bool,
    pub limits: ServerLimits,
    pub timeouts: ServerTimeouts,
    pub show_auth_user: bool,
    /// The address to listen on.
    pub listen: IpAddr,
    /// For the clients' reverse lookups.
    pub resolver: Option<Arc<dyn postrider::Resolver>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kind: ListenerKind::Smtp,
            tls: false,
            policy: RelayPolicy::default(),
            passwords: false,
            plaintext_auth_from_loopback: false,
            limits: ServerLimits::default(),
            timeouts: ServerTimeouts::default(),
            show_auth_user: false,
            listen: "127.0.0.1".parse().unwrap(),
            resolver: None,
        }
    }
}

/// A running server; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Server,
    pub engine: Engine,
    pub spool: Option<MemorySpool>,
    pub transport: Arc<ScriptedTransport>,
    pub dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(o: Options) -> TestServer {
        TestServer::start_on(MemorySpool::new(), o).await
    }

    /// The envelopes in the (memory) spool: for a test that keeps messages queued (a
    /// transport rule that defers) and looks at what was stored.
    pub async fn stored_envelopes(&self) -> Vec<postrider::Envelope> {
        let spool = self.spool.as_ref().expect("a MemorySpool server");
        spool
            .scan()
            .await
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.envelope)
            .collect()
    }

    pub async fn start_on(spool: MemorySpool, o: Options) -> TestServer {
        let mut s = TestServer::start_with_spool(Arc::new(spool.clone()), o).await;
        s.spool = Some(spool);
        s
    }

    /// With any spool (an `FsSpool` on a full or read-only file system).
    pub async fn start_with_spool(store: Arc<dyn Spool>, o: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let (router, _) = Mailertable::builder()
            .hostname(HOSTNAME.parse().unwrap())
            .local_host_names_text("local-host-names", format!("{LOCAL_DOMAIN}\n"))
            .mailertable_text(
                "mailertable",
                format!("{REFUSED_DOMAIN}  error:5.7.0:550 mail to this domain is not accepted\n"),
            )
            .build()
            .unwrap();
        let router = Arc::new(router);
        let transport = ScriptedTransport::new(Clock::tokio(), Box::new(|_| ok()));
        let engine = Engine::builder()
            .hostname(HOSTNAME.parse().unwrap())
            .spool(store)
            .router(router.clone())
            .transport(transport.clone())
            .local_transport(transport.clone())
            .start()
            .await
            .unwrap();
        let mut builder = Server::builder(engine.clone(), router, HOSTNAME.parse().unwrap())
            .relay_policy(o.policy)
            .limits(o.limits)
            .timeouts(o.timeouts)
            .received_auth_header(o.show_auth_user);
        if let Some(r) = o.resolver {
            builder = builder.resolver(r);
        }
        if o.passwords {
            let file = dir.path().join("passwd");
            std::fs::write(&file, PASSWORDS).unwrap();
            builder = builder.authenticator(
                Arc::new(PasswordFile::load(&file).unwrap()) as Arc<dyn Authenticator>
            );
        }
        let server = builder.build();
        let endpoint = if o.tls {
            let (cert, key) = write_certificate(dir.path());
            Endpoint::with_tls(o.kind, Arc::new(ServerTls::load(cert, key).unwrap()))
        } else {
            Endpoint::new(o.kind)
        }
        .allow_plaintext_auth_from_loopback(o.plaintext_auth_from_loopback);
        let listener = TcpListener::bind((o.listen, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, server.clone(), endpoint, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        TestServer {
            addr,
            server,
            engine,
            spool: None,
            transport,
            dir,
            stop,
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting and waits until every session has ended.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("serve ends within 30 s of its shutdown")
                .unwrap();
        }
    }

    /// The messages the engine was handed, as the transport saw them: (sender, recipients, body).
    pub async fn delivered(&self, count: usize) -> Vec<(String, Vec<String>, String)> {
        for _ in 0..1000 {
            let calls = self.transport.calls();
            let all: Vec<_> = calls
                .iter()
                .flat_map(|c| c.messages.iter())
                .map(|(s, r, b)| {
                    (
                        s.to_string(),
                        r.iter().map(|a| a.to_string()).collect(),
                        String::from_utf8_lossy(b).into_owned(),
                    )
                })
                .collect();
            if all.len() >= count {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {count} messages reached the transport");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A self-signed certificate for `HOSTNAME` and 127.0.0.1, written as PEM files.
pub fn write_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec![HOSTNAME.to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A raw SMTP client: sends exactly the bytes given, reads whole (multi-line) replies.
pub struct Client {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Client {
    /// Connects from 127.0.0.1 and returns the greeting too.
    pub async fn connect(addr: SocketAddr) -> (Client, String) {
        Client::connect_from("127.0.0.1".parse().unwrap(), addr).await
    }

    /// Connects from a chosen local address (127.0.0.2, 127.0.0.3, ...).
    pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> (Client, String) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        let mut c = Client {
            read: BufReader::new(read),
            write,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// The next reply, all its lines joined with `\n`, without line endings.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.read.read_line(&mut line))
                .await
                .expect("a reply within 30 s")
                .unwrap();
            assert!(n > 0, "connection closed; replies so far: {lines:?}");
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    pub async fn send(&mut self, bytes: &str) {
        self.write.write_all(bytes.as_bytes()).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// Sends one command line and returns its reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// The reply's code and enhanced status, `"250 2.1.5"`.
    pub async fn code(&mut self, line: &str) -> String {
        code(&self.command(line).await)
    }

    /// Sends one octet every `interval` until the server answers (or `max` octets went out):
    /// a client that never stops trickling. Returns the answer line.
    pub async fn trickle_until_reply(&mut self, interval: Duration, max: usize) -> String {
        let mut line = String::new();
        for _ in 0..max {
            tokio::select! {
                r = self.read.read_line(&mut line) => {
                    r.unwrap();
                    return line.trim_end().to_string();
                }
                _ = tokio::time::sleep(interval) => {
                    if self.write.write_all(b"x").await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = self.read.read_line(&mut line).await;
        line.trim_end().to_string()
    }

    /// True once the server has closed the connection (reads until end of input).
    pub async fn closed(&mut self) -> bool {
        let mut rest = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.read.read_line(&mut rest)).await,
            Ok(Ok(0))
        )
    }
}

/// The first nine characters of a reply: code and enhanced status.
pub fn code(reply: &str) -> String {
    reply.chars().take(9).collect()
}

/// Everything postrider logs in this test binary, for tests that look for (or for the absence
/// of) a string in the log. Installed once per binary.
pub fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || LogWriter(writer.clone()))
            .with_ansi(false)
            .init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An engine that relays `example.org` through its mailertable to the smtp-sink on
/// `sink_port` with the real ESMTP transport, and the router a [`Server`] is built over.
pub async fn engine_relaying_to(
    sink_port: u16,
    spool: Arc<dyn Spool>,
) -> (Engine, Arc<Mailertable>, postrider::Domain) {
    use postrider::resolve::StaticResolver;
    use postrider::route::PolicyTable;
    use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};

    let hostname: postrider::Domain = HOSTNAME.parse().unwrap();
    let (router, _) = Mailertable::builder()
        .hostname(hostname.clone())
        .mailertable_text(
            "mailertable",
            format!("example.org  esmtp:[127.0.0.1]:{sink_port}\n"),
        )
        .build()
        .unwrap();
    let router = Arc::new(router);
    let transport = EsmtpTransport::new(
        EsmtpConfig::new(hostname.clone()),
        Arc::new(StaticResolver::new()),
        Arc::new(PolicyTable::new()),
    );
    let engine = Engine::builder()
        .hostname(hostname.clone())
        .spool(spool)
        .router(router.clone())
        .transport(Arc::new(transport))
        .start()
        .await
        .unwrap();
    (engine, router, hostname)
}
