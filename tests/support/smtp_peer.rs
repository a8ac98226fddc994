//! A scripted SMTP server on 127.0.0.1 for fault injection: each accepted connection plays one
//! [`Script`] (expect a line, send a reply, read the message data, sleep, start TLS, close,
//! hang), and the peer records what the client sent.
//!
//! Sleeps use tokio's clock, so a test with `start_paused = true` runs a five-minute tarpit
//! instantly. Certificates come from [`TestCa`] (rcgen), so TLS is real.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One thing the server does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send these lines (each gets CRLF).
    Send(Vec<String>),
    /// Read one command line; it must start with this text (case-insensitive).
    Expect(String),
    /// Read message data up to the lone dot and keep it (dot-unstuffed, CRLF kept).
    Data,
    /// Wait this long (tokio time).
    Sleep(Duration),
    /// Run the server side of a TLS handshake (after a 220 to STARTTLS, or first for implicit
    /// TLS).
    StartTls,
    /// Close the connection.
    Close,
    /// Never answer again; wait until the client goes away.
    Hang,
    /// Read (and record) lines until the client closes, answering nothing.
    Drain,
}

/// What the server does on one connection.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub steps: Vec<Step>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// Sends a reply; `\n` separates lines (`"250-a\n250 b"`).
    pub fn send(mut self, reply: &str) -> Script {
        self.steps
            .push(Step::Send(reply.split('\n').map(str::to_string).collect()));
        self
    }

    pub fn expect(mut self, prefix: &str) -> Script {
        self.steps.push(Step::Expect(prefix.to_string()));
        self
    }

    /// Expects a command and replies to it.
    pub fn on(self, prefix: &str, reply: &str) -> Script {
        self.expect(prefix).send(reply)
    }

    pub fn data(mut self) -> Script {
        self.steps.push(Step::Data);
        self
    }

    pub fn sleep(mut self, d: Duration) -> Script {
        self.steps.push(Step::Sleep(d));
        self
    }

    pub fn starttls(mut self) -> Script {
        self.steps.push(Step::StartTls);
        self
    }

    pub fn close(mut self) -> Script {
        self.steps.push(Step::Close);
        self
    }

    pub fn hang(mut self) -> Script {
        self.steps.push(Step::Hang);
        self
    }

    pub fn drain(mut self) -> Script {
        self.steps.push(Step::Drain);
        self
    }

    /// `220 name ESMTP`, then EHLO answered with `name` and these extensions.
    pub fn greet(name: &str, extensions: &[&str]) -> Script {
        Script::new()
            .send(&format!("220 {name} ESMTP scripted"))
            .on("EHLO ", &ehlo_reply(name, extensions))
    }

    /// A complete accepted delivery of one message to `rcpts` recipients, without pipelining:
    /// MAIL, RCPT..., DATA, data, 250, then QUIT.
    pub fn accept_one(self, rcpts: usize) -> Script {
        let mut s = self.on("MAIL FROM:", "250 2.1.0 Ok");
        for _ in 0..rcpts {
            s = s.on("RCPT TO:", "250 2.1.5 Ok");
        }
        s.on("DATA", "354 End data with <CR><LF>.<CR><LF>")
            .data()
            .send("250 2.0.0 Ok: queued as SCRIPTED")
    }

    /// QUIT answered with 221, then close.
    pub fn quit(self) -> Script {
        self.on("QUIT", "221 2.0.0 Bye").close()
    }
}

/// An EHLO reply: `250-name`, one line per extension, the last with a space.
pub fn ehlo_reply(name: &str, extensions: &[&str]) -> String {
    let mut lines = vec![name.to_string()];
    lines.extend(extensions.iter().map(|e| e.to_string()));
    let n = lines.len();
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one connection saw.
#[derive(Debug, Clone, Default)]
pub struct SessionLog {
    /// Every command line the client sent, in order.
    pub lines: Vec<String>,
    /// Every message received (after unstuffing).
    pub messages: Vec<Vec<u8>>,
    /// True when TLS was established.
    pub tls: bool,
    /// Why the script stopped early (an unexpected line, a handshake failure, EOF).
    pub error: Option<String>,
}

/// A running scripted server.
pub struct ScriptedPeer {
    addr: SocketAddr,
    acceptor: JoinHandle<()>,
    logs: Arc<Mutex<Vec<Option<SessionLog>>>>,
    sessions: Arc<Mutex<Vec<JoinHandle<()>>>>,
    concurrency: Arc<Mutex<(usize, usize)>>,
}

impl ScriptedPeer {
    /// Serves one script per accepted connection, in order; after the last, it stops
    /// listening, so a further connection is refused.
    pub async fn start(scripts: Vec<Script>) -> ScriptedPeer {
        ScriptedPeer::start_with_tls(scripts, None).await
    }

    /// Same, with a TLS identity for STARTTLS / implicit TLS steps.
    pub async fn start_with_tls(
        scripts: Vec<Script>,
        tls: Option<Arc<ServerConfig>>,
    ) -> ScriptedPeer {
        ScriptedPeer::start_at("127.0.0.1:0".parse().unwrap(), scripts, tls).await
    }

    /// Same, listening on `addr` (another loopback address, or a port another peer uses).
    pub async fn start_at(
        addr: SocketAddr,
        scripts: Vec<Script>,
        tls: Option<Arc<ServerConfig>>,
    ) -> ScriptedPeer {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let logs = Arc::new(Mutex::new(vec![None; scripts.len()]));
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let concurrency = Arc::new(Mutex::new((0usize, 0usize)));
        let (logs2, sessions2, conc2) = (logs.clone(), sessions.clone(), concurrency.clone());
        let acceptor = tokio::spawn(async move {
            for (n, script) in scripts.into_iter().enumerate() {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let logs = logs2.clone();
                let tls = tls.clone();
                let conc = conc2.clone();
                {
                    let mut c = conc.lock().unwrap();
                    c.0 += 1;
                    c.1 = c.1.max(c.0);
                }
                let task = tokio::spawn(async move {
                    let log = play(stream, script, tls).await;
                    conc.lock().unwrap().0 -= 1;
                    logs.lock().unwrap()[n] = Some(log);
                });
                sessions2.lock().unwrap().push(task);
            }
        });
        ScriptedPeer {
            addr,
            acceptor,
            logs,
            sessions,
            concurrency,
        }
    }

    /// The most connections that were open at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.concurrency.lock().unwrap().1
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits for every connection that was made to finish its script and returns what each
    /// saw (connections never made are left out).
    pub async fn finish(self) -> Vec<SessionLog> {
        self.acceptor.abort();
        let tasks: Vec<_> = std::mem::take(&mut *self.sessions.lock().unwrap());
        for t in tasks {
            t.await.unwrap();
        }
        self.logs
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }
}

struct Conn {
    stream: Option<Stream>,
    buf: Vec<u8>,
}

impl Conn {
    async fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                return Ok(line.trim_end_matches(['\r', '\n']).to_string());
            }
            let mut chunk = [0u8; 8192];
            let stream = self.stream.as_mut().ok_or("connection closed")?;
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err("client closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn play(stream: TcpStream, script: Script, tls: Option<Arc<ServerConfig>>) -> SessionLog {
    let mut log = SessionLog::default();
    let mut conn = Conn {
        stream: Some(Stream::Plain(stream)),
        buf: Vec::new(),
    };
    if let Err(e) = run(&mut conn, &script, tls, &mut log).await {
        log.error = Some(e);
    }
    log
}

async fn run(
    conn: &mut Conn,
    script: &Script,
    tls: Option<Arc<ServerConfig>>,
    log: &mut SessionLog,
) -> Result<(), String> {
    for step in &script.steps {
        match step {
            Step::Send(lines) => {
                let mut wire = String::new();
                for l in lines {
                    wire.push_str(l);
                    wire.push_str("\r\n");
                }
                let s = conn.stream.as_mut().ok_or("connection closed")?;
                s.write_all(wire.as_bytes())
                    .await
                    .map_err(|e| format!("write failed: {e}"))?;
            }
            Step::Expect(prefix) => {
                let line = conn.read_line().await?;
                log.lines.push(line.clone());
                if !line
                    .to_ascii_lowercase()
                    .starts_with(&prefix.to_ascii_lowercase())
                {
                    return Err(format!("expected {prefix:?}, got {line:?}"));
                }
            }
            Step::Data => {
                let mut msg = Vec::new();
                loop {
                    let line = conn.read_line().await?;
                    if line == "." {
                        break;
                    }
                    msg.extend_from_slice(line.strip_prefix('.').unwrap_or(&line).as_bytes());
                    msg.extend_from_slice(b"\r\n");
                }
                log.messages.push(msg);
            }
            Step::Sleep(d) => tokio::time::sleep(*d).await,
            Step::StartTls => {
                let config = tls.clone().ok_or("StartTls step without a TLS identity")?;
                if !conn.buf.is_empty() {
                    return Err("client sent data before the TLS handshake".into());
                }
                let Some(Stream::Plain(tcp)) = conn.stream.take() else {
                    return Err("TLS already active".into());
                };
                match TlsAcceptor::from(config).accept(tcp).await {
                    Ok(s) => {
                        conn.stream = Some(Stream::Tls(Box::new(s)));
                        log.tls = true;
                    }
                    Err(e) => return Err(format!("TLS handshake failed: {e}")),
                }
            }
            Step::Close => {
                conn.stream = None;
                return Ok(());
            }
            Step::Hang => {
                // Keep the connection open until the client gives up.
                let mut sink = [0u8; 1024];
                if let Some(s) = conn.stream.as_mut() {
                    while let Ok(n) = s.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
                return Ok(());
            }
            Step::Drain => {
                while let Ok(line) = conn.read_line().await {
                    log.lines.push(line);
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A throw-away certificate authority for tests, made with rcgen.
pub struct TestCa {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// How a server certificate should be (in)valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Current,
    Expired,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate as PEM (a trust anchors file, `[esmtp] trust_anchors`).
    pub fn pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.cert);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    /// A server configuration (ring provider) presenting a certificate for `names` (DNS names
    /// or IP addresses) signed by this CA.
    pub fn server_config(&self, names: &[&str], validity: Validity) -> Arc<ServerConfig> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        match validity {
            Validity::Current => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2099, 1, 1);
            }
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone(), self.cert.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        Arc::new(config)
    }
}
