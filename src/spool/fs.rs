//! The durable filesystem spool.

/// The crash-safe filesystem spool (being built).
pub struct FsSpool;
