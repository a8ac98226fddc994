//! What a command prints about its deliveries on stderr: with `-v` the SMTP conversation
//! (postrider's `postrider::smtp` transcript target) and the sendmail-style log line of every
//! attempt; otherwise errors only, so a cron job stays quiet unless something is wrong.

use std::fmt::{self, Write as _};

use postrider::transport::esmtp::TRANSCRIPT_TARGET;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

const DELIVERY_TARGET: &str = "postrider::delivery";

/// Installs the stderr printer; `program` prefixes warnings and errors (`sendmail: ...`).
pub fn init(program: &'static str, verbose: bool) {
    let filter = if verbose {
        Targets::new()
            .with_target(TRANSCRIPT_TARGET, Level::DEBUG)
            .with_target(DELIVERY_TARGET, Level::INFO)
            .with_target("postrider", Level::WARN)
    } else {
        Targets::new().with_target("postrider", Level::ERROR)
    };
    let _ = tracing_subscriber::registry()
        .with(Printer { program }.with_filter(filter))
        .try_init();
}

struct Printer {
    program: &'static str,
}

#[derive(Default)]
struct Fields {
    message: String,
    peer: Option<String>,
    others: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "peer" => self.peer = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.others, " {name}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "peer" => self.peer = Some(value.to_string()),
            name => {
                let _ = write!(self.others, " {name}={value}");
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for Printer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let line = if meta.target() == TRANSCRIPT_TARGET {
            match (f.message.as_str(), &f.peer) {
                ("connecting", Some(peer)) => format!("Connecting to {peer}..."),
                (m, _) if m.starts_with(">>> ") || m.starts_with("<<< ") => m.to_string(),
                (m, _) => format!("{m}{}", f.others),
            }
        } else if meta.target() == DELIVERY_TARGET {
            // The log line (and an operator note) as an administrator reads it in maillog.
            f.message
        } else {
            let level = match *meta.level() {
                Level::ERROR => "error",
                Level::WARN => "warning",
                _ => "note",
            };
            format!("{}: {level}: {}{}", self.program, f.message, f.others)
        };
        // Never eprintln!: it panics when stderr is closed or full, and this runs inside the
        // engine's tasks, which must go on delivering and release their locks.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
