//! Whether a child process listens on a loopback port, read from /proc rather than by
//! connecting, so no probe session shows in a peer's counters.
//!
//! A listener on the port is not enough: another test of the same binary may have bound the
//! port the child was told to use (ports come from `free_port`, released before the child
//! binds), and the child then exits with "address in use" while the other listener answers
//! in its place. So the listening socket must be one of the child's own descriptors.

use std::net::Ipv4Addr;

/// True when process `pid` holds a socket listening on `ip:port`.
pub fn listens(pid: u32, ip: Ipv4Addr, port: u16) -> bool {
    // /proc/net/tcp writes the address as a little-endian hex word.
    let local = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}
