//! Everything the scheduler task is told, by the engine handle and by the tasks it spawns.
//!
//! The scheduler owns the queue's index and never waits on a disk or a socket: whatever does
//! I/O runs in a task of its own and reports back with one of these.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::EngineError;
use super::admin::{FlushFilter, FlushSummary};
use super::delivery::{DeliveryEnd, Reported};
use super::finalize::Finalized;
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::route::{Route, RouteError};
use std::collections::HashSet;
use std::time::SystemTime;

use crate::spool::{Claim, ClaimedMessage, MessageState, QueuedMessage, SpoolError};

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<T>;

/// Tells a transport's [`Reports::record`](crate::transport::Reports::record) that the outcome
/// it handed over is durable (`true`) or could not be written (`false`).
pub(crate) type Ack = oneshot::Sender<bool>;

/// An administrator's change to one message.
pub(crate) use super::admin::Action as AdminOp;

/// A message just submitted, still claimed by the spool insert that stored it: its first
/// attempt needs no claim, no re-read of its record and no read of its body.
pub(crate) struct Fresh {
    pub claim: Claim,
    pub body: Bytes,
}

/// What preparing a message found.
pub(crate) enum Prepared {
    Ready {
        claim: Claim,
        envelope: Arc<Envelope>,
        state: MessageState,
        routes: Vec<(usize, Result<Route, RouteError>)>,
    },
    /// Another engine or process holds the claim.
    Busy,
    /// The message left the spool (another process delivered or deleted it).
    Gone,
    /// An administrator held it (possibly from another process).
    Held(MessageState),
    /// The spool failed; try again later.
    Failed(SpoolError),
}

pub(crate) enum Command {
    Submitted {
        id: QueueId,
        /// The message whose attempt queued this one (a DSN, a forwarded copy).
        parent: Option<QueueId>,
        envelope: Envelope,
        state: MessageState,
        /// `None` when the spool could not hand over a claim: the message is scheduled as if
        /// found by a scan.
        fresh: Option<Fresh>,
    },
    /// The ids of the messages this engine is working on (for a listing).
    InFlight(Reply<HashSet<QueueId>>),
    Flush(FlushFilter, Reply<FlushSummary>),
    Admin(AdminOp, QueueId, Reply<Result<(), EngineError>>),
    Shutdown(Option<Reply<()>>),
    Prepared(QueueId, Prepared),
    /// A transport reported one message of delivery `delivery`.
    Recorded {
        delivery: u64,
        id: QueueId,
        reports: Vec<Reported>,
        ack: Ack,
    },
    /// The partial state of a message (some recipients done, others still on their way) was
    /// written, or could not be.
    Saved(QueueId, Result<(), SpoolError>),
    /// A delivery task is over.
    DeliveryEnded(u64, DeliveryEnd),
    Finalized(QueueId, Finalized),
    AdminDone(
        QueueId,
        Result<Option<MessageState>, EngineError>,
        Reply<Result<(), EngineError>>,
    ),
    /// Messages a rescan (index scheduling) read, handed over as it reads on; the number is
    /// its generation.
    ScanFound(u64, Vec<QueuedMessage>),
    /// A rescan ended, after every [`Command::ScanFound`] it sent.
    Scanned(u64, Result<(), SpoolError>),
    /// A batch of due work (batch scheduling): the `seq`-th request, for at most `limit`.
    Claimed {
        seq: u64,
        limit: usize,
        result: Result<Vec<ClaimedMessage>, SpoolError>,
    },
    /// When the spool's next message is due (batch scheduling).
    NextDue(Result<Option<SystemTime>, SpoolError>),
    /// Work may be due at this time because of another engine or an administrator.
    Wake(SystemTime),
    /// A flush of a shared queue made these messages due (batch scheduling).
    FlushMarked {
        ids: Vec<QueueId>,
        summary: FlushSummary,
        reply: Reply<FlushSummary>,
    },
}
