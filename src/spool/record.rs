//! The spool record format (the `qf` file): versioned, human-readable JSON.
//!
//! Owned by the FsSpool work; see `fs.rs`.
