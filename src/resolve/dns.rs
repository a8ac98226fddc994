//! The default resolver, on hickory-resolver.

/// DNS resolver on hickory-resolver (being built).
pub struct DnsResolver;
