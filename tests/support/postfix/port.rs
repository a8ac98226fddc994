//! Loopback ports for private Postfix listeners, leased so that two instances never share one.
//!
//! Postfix's master sets `SO_REUSEPORT` on its inet listeners, so a second instance binding a
//! port the first one already listens on does *not* fail: the kernel then splits connections
//! between the two, and a test would see another test's Postfix. A port is therefore taken in
//! two steps: the kernel names a free one (bind to port 0), and an exclusive `flock` on
//! `<base>/ports/<port>.lock` makes it ours for as long as the lease lives, across threads and
//! test binaries. The lock goes with the process, so a killed test leaves no lease behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::TcpListener;
use std::path::Path;

/// A loopback port reserved for one listener of one instance.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    _lock: File,
}

impl PortLease {
    /// Leases a port that nothing listens on and no other private instance holds.
    pub fn take(base: &Path) -> PortLease {
        let dir = base.join("ports");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // Bounded: each round asks the kernel for a different free port.
        for _ in 0..100 {
            let probe = TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("cannot bind a free port on 127.0.0.1: {e}"));
            let port = probe
                .local_addr()
                .unwrap_or_else(|e| panic!("local address of a bound listener: {e}"))
                .port();
            let path = dir.join(format!("{port}.lock"));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            match lock.try_lock() {
                Ok(()) => return PortLease { port, _lock: lock },
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
            }
        }
        panic!("no free loopback port without a lease in 100 tries");
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// How many sockets listen on 127.0.0.1:`port` (from /proc/net/tcp; more than one means a
/// `SO_REUSEPORT` neighbour shares it).
pub fn listeners(port: u16) -> usize {
    let wanted = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_else(|e| panic!("cannot read /proc/net/tcp: {e}"));
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN
            fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}
