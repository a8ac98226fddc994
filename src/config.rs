//! The TOML configuration file every example reads.
