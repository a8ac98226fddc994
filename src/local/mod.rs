//! Local delivery: mail for users of this machine, into the mailboxes their mail reader reads.
//!
//! - [`LocalTransport`] is the [`Transport`](crate::Transport) for `Route::Local`: it expands
//!   aliases, then delivers to a Maildir, an mbox file, or Dovecot's LMTP service.
//! - [`Aliases`] reads `/etc/aliases`; [`Virtusertable`] is sendmail's virtusertable, consulted
//!   by the router.
//! - [`UserDb`] says who exists ([`SystemUsers`]: the password database).

pub mod aliases;
pub mod config;
pub mod error;
pub mod expand;
mod file;
mod fsutil;
pub mod lmtp;
pub mod location;
mod lock;
pub mod maildir;
pub mod mbox;
pub mod pipe;
pub mod targets;
pub mod trace;
mod transport;
pub mod users;
pub mod verify;
pub mod virtusertable;

pub use aliases::{
    AliasEntry, AliasLineError, AliasProblem, Aliases, AliasesError, DuplicateAlias,
};
pub use config::{LmtpRecipient, LocalConfig};
pub use error::{StoreError, StoreStep};
pub use expand::{
    Expanded, Expansion, ExpansionProblem, FileSystem, SourceFile, Sources, Target, TargetSource,
};
pub use fsutil::Owner;
pub use lmtp::{LmtpError, LmtpMessage, LmtpSession};
pub use location::{LmtpTarget, LocationError, MailboxLocation, PathTemplate};
pub use maildir::Maildir;
pub use mbox::MboxOptions;
pub use pipe::PipeJob;
pub use targets::{AliasTarget, TargetProblem, parse_targets};
pub use transport::LocalTransport;
pub use users::{StaticUsers, SystemUsers, User, UserDb, UserDbError};
pub use verify::{AliasesCheck, Verdict, Verification, Verified, check_aliases};
pub use virtusertable::{VirtualMatch, VirtualTarget, VirtuserProblem, Virtusertable};
