//! What a voicemail server does with postrider: build the "you have a new message" mail with
//! the recording attached, hand it to an embedded engine, and learn what became of it.
//!
//! ```text
//! voicemail --demo [--wav FILE] [-v]
//! voicemail [-C CONFIG] [--wav FILE] [--from ADDRESS] [-v] RECIPIENT...
//! ```
//!
//! The message is built with mail-builder: a text part and an `audio/wav` attachment (the
//! `--wav` file, else one second of a 440 Hz tone, 8 kHz 16-bit mono PCM, generated here).
//! It is submitted, and the command waits for the engine's `DeliveryEvent` of every recipient
//! and prints each as the sendmail-style log line.
//!
//! `--demo` runs end to end on a machine with no network and no mail server: it starts its own
//! loopback SMTP sink (postrider's own `server` module in front of a second engine that keeps
//! what it receives), queues in a
//! temporary spool, uses the sink as the smart host, and prints what the sink received, read
//! back with mail-parser. Without `--demo`, the engine is the one `postrider.toml` describes
//! (default `/etc/postrider/postrider.toml`), usually with a smart host. A real voicemail
//! server keeps one engine running for its whole life; this command starts one per message,
//! over the whole spool, so it also retries whatever earlier runs left queued.
//!
//! Exit status: 0 when every recipient was delivered (and, in the demo, the sink holds the
//! recording intact); 75 when a recipient was deferred (the message stays queued and a queue
//! run delivers it later); 1 when one failed or the demo's check failed; 64 bad arguments;
//! 78 a configuration error.

#[path = "common/transcript.rs"]
mod transcript;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_builder::MessageBuilder;
use mail_parser::{MessageParser, MimeHeaders};
use postrider::config::Config;
use postrider::engine::{DeliveryEvent, Engine};
use postrider::resolve::StaticResolver;
use postrider::route::{Mailertable, PolicyTable, SmartHost};
use postrider::server::{Endpoint, ListenerKind, Server, serve};
use postrider::spool::{FsSpool, MemorySpool};
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};
use postrider::transport::{Next, Reports};
use postrider::{
    Address, Delivery, Domain, EnhancedStatus, Envelope, Outcome, RecipientReport, Reply,
    ReversePath, Route, RouteError, Router, Transport,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast::Receiver;
use tokio::sync::watch;

const EX_FAILED: u8 = 1;
const EX_USAGE: u8 = 64;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
const USAGE: &str = "\
usage: voicemail --demo [--wav FILE] [-v]
       voicemail [-C CONFIG] [--wav FILE] [--from ADDRESS] [-v] RECIPIENT...";

/// How long to wait for the delivery events: longer than a connection attempt to each of two
/// smart-host addresses (30 s each), shorter than a human's patience.
const EVENT_WAIT: Duration = Duration::from_secs(90);

const DEMO_HOST: &str = "pbx.demo.example";
const DEMO_RECIPIENT: &str = "alice@demo.example";

struct Args {
    demo: bool,
    config: PathBuf,
    wav: Option<PathBuf>,
    from: Option<String>,
    verbose: bool,
    recipients: Vec<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        demo: false,
        config: PathBuf::from(DEFAULT_CONFIG),
        wav: None,
        from: None,
        verbose: false,
        recipients: Vec::new(),
    };
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--demo" => args.demo = true,
            "-C" | "--config" => args.config = PathBuf::from(value(&arg)?),
            "--wav" => args.wav = Some(PathBuf::from(value(&arg)?)),
            "--from" => args.from = Some(value(&arg)?),
            "-v" | "--verbose" => args.verbose = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => args.recipients.push(arg),
        }
    }
    match (args.demo, args.recipients.is_empty()) {
        (true, false) => Err("--demo sends to its own sink; give no recipients".into()),
        (false, true) => Err("give a recipient, or --demo".into()),
        _ => Ok(args),
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("voicemail: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    transcript::init("voicemail", args.verbose);
    let recording = match &args.wav {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) if is_wav(&bytes) => bytes,
            Ok(_) => {
                eprintln!("voicemail: {} is not a RIFF/WAVE file", path.display());
                return ExitCode::from(EX_USAGE);
            }
            Err(e) => {
                eprintln!("voicemail: cannot read {}: {e}", path.display());
                return ExitCode::from(EX_USAGE);
            }
        },
        None => tone_wav(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("voicemail: cannot start the async runtime: {e}");
            return ExitCode::from(EX_FAILED);
        }
    };
    let code = runtime.block_on(async {
        if args.demo {
            demo(&recording).await
        } else {
            configured(&args, &recording).await
        }
    });
    ExitCode::from(code)
}

/// The "new voicemail" message: a text part and the recording.
fn voicemail_message(from: &Address, to: &[Address], recording: &[u8]) -> Result<Vec<u8>, String> {
    let seconds = wav_seconds(recording).unwrap_or(0.0);
    let caller = "+1 555 0100";
    MessageBuilder::new()
        .from(("Voicemail".to_string(), from.to_string()))
        .to(to.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .subject(format!("New voicemail from {caller} ({seconds:.0} s)"))
        .text_body(format!(
            "You have a new voicemail from {caller}, {seconds:.1} seconds long.\r\n\
             The recording is attached (voicemail.wav).\r\n"
        ))
        .attachment("audio/wav", "voicemail.wav", recording.to_vec())
        .write_to_vec()
        .map_err(|e| format!("cannot build the message: {e}"))
}

/// Submits the message and waits for one event per recipient; returns them.
async fn send(
    engine: &Engine,
    from: &Address,
    to: &[Address],
    recording: &[u8],
) -> Result<Vec<DeliveryEvent>, String> {
    let message = voicemail_message(from, to, recording)?;
    let mut events = engine.subscribe();
    let envelope = Envelope::new(ReversePath::from(from.clone()), to.iter().cloned());
    let id = engine
        .submit(envelope, message)
        .await
        .map_err(|e| e.to_string())?;
    println!("{id}: queued for {}", list(to));
    wait_for(&mut events, id, to.len()).await
}

async fn wait_for(
    events: &mut Receiver<DeliveryEvent>,
    id: postrider::QueueId,
    count: usize,
) -> Result<Vec<DeliveryEvent>, String> {
    let mut seen = Vec::new();
    let waiting = async {
        while seen.len() < count {
            match events.recv().await {
                Ok(e) if e.id == id => {
                    println!("{}", e.log_line());
                    seen.push(e);
                }
                Ok(_) => {}
                Err(e) => return Err(format!("event stream ended: {e}")),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(EVENT_WAIT, waiting).await {
        Ok(Ok(())) => Ok(seen),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no outcome for {id} after {} s; it stays queued",
            EVENT_WAIT.as_secs()
        )),
    }
}

fn list(to: &[Address]) -> String {
    to.iter()
        .map(|a| format!("<{a}>"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// 0 all delivered, 75 something deferred, 1 something failed.
fn outcome_code(events: &[DeliveryEvent]) -> u8 {
    if events
        .iter()
        .any(|e| matches!(e.outcome, Outcome::Failed(_)))
    {
        EX_FAILED
    } else if events
        .iter()
        .any(|e| matches!(e.outcome, Outcome::Deferred(_)))
    {
        EX_TEMPFAIL
    } else {
        0
    }
}

// ---- with postrider.toml ----------------------------------------------------------------

async fn configured(args: &Args, recording: &[u8]) -> u8 {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voicemail: {e}");
            return EX_CONFIG;
        }
    };
    // One message, then exit: no session kept for a next one.
    let mut config = config;
    config.esmtp.connection_cache = None;
    let parts = match config.assemble().await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("voicemail: {e}");
            return EX_CONFIG;
        }
    };
    for w in parts.warnings() {
        eprintln!("voicemail: warning: {w}");
    }
    let hostname = parts.hostname().clone();
    let from = match &args.from {
        Some(f) => Address::parse(f),
        None => Address::new("voicemail", hostname.clone()),
    };
    let mut to = Vec::new();
    for raw in &args.recipients {
        match Address::parse(raw) {
            Ok(a) => to.push(a),
            Err(e) => {
                eprintln!("voicemail: {raw}: {e}");
                return EX_USAGE;
            }
        }
    }
    let from = match from {
        Ok(f) => f,
        Err(e) => {
            eprintln!("voicemail: --from: {e}");
            return EX_USAGE;
        }
    };
    let spool = match FsSpool::open(&config.spool) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("voicemail: message not queued: {e}");
            return EX_TEMPFAIL;
        }
    };
    let engine = match parts.engine_builder(Arc::new(spool)).start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("voicemail: message not queued: {e}");
            return EX_TEMPFAIL;
        }
    };
    let result = send(&engine, &from, &to, recording).await;
    engine.shutdown().await;
    match result {
        Ok(events) => {
            let code = outcome_code(&events);
            if code == EX_TEMPFAIL {
                println!(
                    "deferred: the message stays in {} and is retried by the next queue run \
                     (`sendmail -q`)",
                    config.spool.display()
                );
            }
            code
        }
        Err(e) => {
            eprintln!("voicemail: {e}");
            EX_TEMPFAIL
        }
    }
}

// ---- --demo -----------------------------------------------------------------------------

async fn demo(recording: &[u8]) -> u8 {
    match run_demo(recording).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("voicemail: demo failed: {e}");
            EX_FAILED
        }
    }
}

async fn run_demo(recording: &[u8]) -> Result<u8, String> {
    let sink = Sink::start()
        .await
        .map_err(|e| format!("cannot start the loopback SMTP sink: {e}"))?;
    println!("demo SMTP sink listening on 127.0.0.1:{}", sink.port);
    let spool_dir = tempfile::tempdir().map_err(|e| format!("cannot create a spool: {e}"))?;
    let spool = FsSpool::open(spool_dir.path()).map_err(|e| e.to_string())?;
    let hostname = Domain::parse(DEMO_HOST).map_err(|e| e.to_string())?;
    let smart_host =
        SmartHost::parse(&format!("[127.0.0.1]:{}", sink.port)).map_err(|e| e.to_string())?;
    let (router, _) = Mailertable::builder()
        .hostname(hostname.clone())
        .smart_host(smart_host)
        .build()
        .map_err(|e| e.to_string())?;
    // The smart host is an address literal: no DNS lookup, so the demo needs no network.
    let transport = EsmtpTransport::new(
        EsmtpConfig::new(hostname.clone()),
        Arc::new(StaticResolver::new()),
        Arc::new(PolicyTable::new()),
    );
    let engine = Engine::builder()
        .hostname(hostname.clone())
        .spool(Arc::new(spool))
        .router(Arc::new(router))
        .transport(Arc::new(transport))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let from = Address::new("voicemail", hostname).map_err(|e| e.to_string())?;
    let to = [Address::parse(DEMO_RECIPIENT).map_err(|e| e.to_string())?];
    let sent = send(&engine, &from, &to, recording).await;
    engine.shutdown().await;
    let events = sent?;
    let code = outcome_code(&events);
    if code != 0 {
        println!("the demo's delivery did not succeed");
        return Ok(code);
    }
    let received = sink.received(1).await;
    sink.stop().await;
    let [message] = received.as_slice() else {
        return Err(format!(
            "the sink holds {} messages, expected 1",
            received.len()
        ));
    };
    describe(message, recording)
}

/// Prints what the sink received, read back with mail-parser; checks the recording arrived
/// byte for byte.
fn describe(m: &SinkMessage, recording: &[u8]) -> Result<u8, String> {
    let parsed = MessageParser::default()
        .parse(&m.data)
        .ok_or("the sink received something that does not parse as a message")?;
    println!(
        "sink received {} octets from {} for {}",
        m.data.len(),
        m.from,
        m.to.join(", ")
    );
    println!("  Subject: {}", parsed.subject().unwrap_or("(none)"));
    let mut intact = false;
    for part in parsed.attachments() {
        let ctype = part
            .content_type()
            .map(|c| match &c.c_subtype {
                Some(sub) => format!("{}/{sub}", c.c_type),
                None => c.c_type.to_string(),
            })
            .unwrap_or_else(|| "(no type)".into());
        let contents = part.contents();
        let same = contents == recording;
        intact |= same && ctype == "audio/wav";
        println!(
            "  attachment {} ({ctype}, {} octets{})",
            part.attachment_name().unwrap_or("(unnamed)"),
            contents.len(),
            if same {
                ", identical to the recording"
            } else {
                ", DIFFERENT from the recording"
            }
        );
    }
    if intact {
        Ok(0)
    } else {
        println!("the recording did not arrive intact");
        Ok(EX_FAILED)
    }
}

// ---- the recording ------------------------------------------------------------------------

/// One second of a 440 Hz tone as a WAV file: RIFF/WAVE, PCM, 8 kHz, mono, 16 bits.
fn tone_wav() -> Vec<u8> {
    const RATE: u32 = 8000;
    const BITS: u16 = 16;
    let samples: Vec<i16> = (0..RATE)
        .map(|n| {
            let t = n as f32 / RATE as f32;
            let fade = (n.min(RATE - n) as f32 / 400.0).min(1.0); // no click at either end
            ((2.0 * std::f32::consts::PI * 440.0 * t).sin() * 0.3 * fade * i16::MAX as f32) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * u32::from(BITS / 8)).to_le_bytes()); // byte rate
    wav.extend_from_slice(&(BITS / 8).to_le_bytes()); // block align
    wav.extend_from_slice(&BITS.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    wav
}

fn is_wav(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

/// The length of a canonical PCM WAV (44-byte header), for the subject line.
fn wav_seconds(bytes: &[u8]) -> Option<f32> {
    let u32_at = |i: usize| Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?));
    let byte_rate = u32_at(28)?;
    (is_wav(bytes) && byte_rate > 0)
        .then(|| bytes.len().saturating_sub(44) as f32 / byte_rate as f32)
}

// ---- the demo's SMTP sink ------------------------------------------------------------------

/// A message the sink accepted.
#[derive(Debug, Clone)]
struct SinkMessage {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

/// The demo's receiving side: postrider's own SMTP server (`postrider::server`) in front of a
/// second engine on a memory spool, whose router makes every recipient local and whose local
/// transport keeps each message for the demo to read back (Postfix's smtp-sink may not be
/// installed where the demo runs).
struct Sink {
    port: u16,
    store: Arc<Mutex<Vec<SinkMessage>>>,
    engine: Engine,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
}

/// Every recipient of the sink is local.
struct EverythingLocal;

#[async_trait::async_trait]
impl Router for EverythingLocal {
    async fn route(&self, _: &Address) -> Result<Route, RouteError> {
        Ok(Route::local())
    }
}

/// The sink's local delivery: keep the message.
struct Keep(Arc<Mutex<Vec<SinkMessage>>>);

#[async_trait::async_trait]
impl Transport for Keep {
    async fn deliver(&self, _: &Route, batch: &[Delivery], reports: &dyn Reports) {
        for d in batch {
            if reports.stopping() {
                return;
            }
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(SinkMessage {
                    from: d.envelope.sender.to_string(),
                    to: d
                        .recipients
                        .iter()
                        .map(|&i| format!("<{}>", d.envelope.recipients[i].address))
                        .collect(),
                    data: d.body.to_vec(),
                });
            let kept = d
                .recipients
                .iter()
                .map(|&i| {
                    let reply = Reply::new(250, Some(EnhancedStatus::OK), "kept by the demo sink")
                        .expect("invariant: a valid 250 reply");
                    RecipientReport::new(d.id, i, Outcome::from_reply(reply), None)
                })
                .collect();
            if reports.record(d.id, kept).await == Next::Stop {
                return;
            }
        }
    }
}

impl Sink {
    async fn start() -> Result<Sink, String> {
        let hostname = Domain::parse("sink.demo.example").map_err(|e| e.to_string())?;
        let store = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::new(Keep(store.clone()));
        let router = Arc::new(EverythingLocal);
        let engine = Engine::builder()
            .hostname(hostname.clone())
            .spool(Arc::new(MemorySpool::new()))
            .router(router.clone())
            .transport(keep.clone())
            .local_transport(keep)
            .start()
            .await
            .map_err(|e| e.to_string())?;
        // Loopback only, and loopback clients are the only ones the default policy trusts.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let server = Server::builder(engine.clone(), router, hostname).build();
        let (stop, mut stopped) = watch::channel(false);
        let served = tokio::spawn(serve(
            listener,
            server,
            Endpoint::new(ListenerKind::Smtp),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        Ok(Sink {
            port,
            store,
            engine,
            stop,
            served,
        })
    }

    /// The messages kept, once `count` have arrived (the sink's engine delivers each just
    /// after its 250) or after a few seconds.
    async fn received(&self, count: usize) -> Vec<SinkMessage> {
        for _ in 0..500 {
            let kept = self.store.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if kept.len() >= count {
                return kept;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.store.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.served.await;
        self.engine.shutdown().await;
    }
}
