//! ESMTP delivery over tokio and rustls.

/// The ESMTP transport (being built).
pub struct EsmtpTransport;
