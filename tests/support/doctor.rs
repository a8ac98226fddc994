//! Helpers for the doctor tests: a configuration folder, a listener that never accepts (a
//! filtered port), and the built `doctor` example.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::{TcpListener, TcpSocket};

use super::example_binary;

/// A temporary folder holding `postrider.toml` and the files it names.
pub struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: tempfile::tempdir().expect("create a temporary folder"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.path("postrider.toml")
    }

    /// Writes a file (mode 600 for anything named like a policy).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write a test file");
        if name.contains("policy") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod a test file");
        }
        path
    }
}

/// A listener whose backlog is full: new connection attempts get no answer, as when a
/// provider filters the port. Keep it (and the filler) alive while the test runs.
pub struct Filtered {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _filler: std::net::TcpStream,
}

impl Filtered {
    /// On 127.0.0.2 (so an MX record can point at it), on a free port.
    pub fn start() -> Filtered {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let filler = std::net::TcpStream::connect(addr).unwrap();
        Filtered {
            addr,
            _listener: listener,
            _filler: filler,
        }
    }
}

/// A port on 127.0.0.1 with nothing listening.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The `doctor` example binary, refused when missing or stale (see `example_binary`).
pub fn doctor_example() -> PathBuf {
    example_binary::example_binary("doctor")
}
