//! Local delivery: mail for users of this machine, into the mailboxes their mail reader reads.
//!
//! - [`LocalTransport`] is the [`Transport`](crate::Transport) for `Route::Local`: it expands
//!   aliases, then delivers to a Maildir, an mbox file, or Dovecot's LMTP service.
//! - [`Aliases`] reads `/etc/aliases`; [`Virtusertable`] is sendmail's virtusertable, consulted
//!   by the router.
//! - [`UserDb`] says who exists ([`SystemUsers`]: the password database).

pub mod aliases;
pub mod expand;
pub mod targets;
pub mod users;
pub mod virtusertable;

pub use aliases::{
    AliasEntry, AliasLineError, AliasProblem, Aliases, AliasesError, DuplicateAlias,
};
pub use expand::{
    Expanded, Expansion, ExpansionProblem, FileSystem, SourceFile, Sources, Target, TargetSource,
};
pub use targets::{AliasTarget, TargetProblem, parse_targets};
pub use users::{StaticUsers, SystemUsers, User, UserDb, UserDbError};
pub use virtusertable::{VirtualMatch, VirtualTarget, VirtuserProblem, Virtusertable};
