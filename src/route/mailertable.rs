//! sendmail-compatible mailertable routing with a smart host and local domains.

/// The mailertable router (being built).
pub struct Mailertable;
