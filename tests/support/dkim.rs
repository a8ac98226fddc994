//! DKIM verification by three independent verifiers, all reading the key records from a DNS
//! server on loopback: mail-auth's verifier (in process, pointed at the server), and the
//! command-line verifiers of OpenDKIM (`opendkim-testmsg`, Debian package opendkim-tools)
//! and dkimpy (`dkimverify`, Debian package python3-dkim, with python3-nacl for Ed25519).
//!
//! The two commands read `/etc/resolv.conf`, which cannot name a port: the test DNS server
//! listens on port 53 of a random 127.x.y.z address, and each command runs in a mount
//! namespace of its own (`unshare --mount`) where a private resolv.conf naming that address
//! is bind-mounted over `/etc/resolv.conf`. The machine's own file is never touched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use postrider::dkim::{DkimKeyConfig, DkimSigner, DomainKey};
use postrider::resolve::{DnsOptions, DnsResolver};
use tokio::io::AsyncWriteExt;

use super::dns_server::{DnsServer, Zone};

/// A test key in `tests/data/dkim/`.
pub fn key_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dkim")
        .join(name)
}

/// One `[[dkim]]` entry for a test key.
pub fn key_config(domain: &str, selector: &str, file: &str) -> DkimKeyConfig {
    DkimKeyConfig {
        domain: domain.parse().expect("a test domain"),
        selector: selector.to_string(),
        key: key_file(file),
        headers: None,
    }
}

/// Signing keys, and a DNS server that publishes their records.
pub struct DkimWorld {
    pub signer: Arc<DkimSigner>,
    pub dns: DnsServer,
    resolv: tempfile::TempDir,
}

impl DkimWorld {
    /// Publishes the record of every key in `configs` (one zone per signing domain), on
    /// port 53 of a loopback address; `extra` adds records (a tampered key, say).
    pub async fn start(configs: &[DkimKeyConfig], extra: &[(&str, &str)]) -> DkimWorld {
        let signer = DkimSigner::load(configs).expect("the test keys load");
        // One zone per signing domain, each with the records under it.
        let mut zones: Vec<(String, Zone)> = Vec::new();
        let mut add = |origin: &str, owner: String, text: &str| {
            let zone = match zones.iter().position(|(o, _)| o == origin) {
                Some(i) => zones.remove(i).1,
                None => Zone::new(&format!("{origin}.")),
            };
            zones.push((origin.to_string(), zone.txt(&owner, text)));
        };
        for key in signer.keys() {
            add(
                key.domain().as_str(),
                format!("{}._domainkey", key.selector()),
                &key.record().text(),
            );
        }
        for (name, text) in extra {
            let (selector, origin) = name.split_once("._domainkey.").expect("a key record name");
            add(origin, format!("{selector}._domainkey"), text);
        }
        let dns = zones
            .into_iter()
            .fold(DnsServer::builder(), |b, (_, z)| b.zone(z))
            .start_on_port_53()
            .await;
        let resolv = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(
            resolv.path().join("resolv.conf"),
            format!(
                "nameserver {}\noptions timeout:2 attempts:2\n",
                dns.addr().ip()
            ),
        )
        .expect("write the private resolv.conf");
        DkimWorld {
            signer: Arc::new(signer),
            dns,
            resolv,
        }
    }

    /// A resolver on the test server.
    pub fn resolver(&self) -> DnsResolver {
        DnsResolver::with_name_servers(&[self.dns.addr()], DnsOptions::default())
            .expect("a resolver on the test server")
    }

    /// mail-auth's verdict on every signature of `message`.
    pub async fn verify_mail_auth(&self, message: &[u8]) -> Vec<DkimResult> {
        let auth = MessageAuthenticator(self.resolver().hickory_resolver().clone());
        let parsed = AuthenticatedMessage::parse(message).expect("mail-auth parses the message");
        auth.verify_dkim(&parsed)
            .await
            .iter()
            .map(|o| o.result().clone())
            .collect()
    }

    /// `opendkim-testmsg` verifying `message` (it checks the first signature): `Ok` when it
    /// passes, else what the verifier printed.
    pub async fn verify_opendkim(&self, message: &[u8]) -> Result<(), String> {
        require("/usr/sbin/opendkim-testmsg", "opendkim-tools");
        self.run_with_resolv_conf(&["/usr/sbin/opendkim-testmsg"], message)
            .await
    }

    /// dkimpy's `dkimverify` on `message`, for the signature at `index` (0 is the first).
    pub async fn verify_dkimpy(&self, message: &[u8], index: usize) -> Result<(), String> {
        require("/usr/bin/dkimverify", "python3-dkim");
        require(
            "/usr/lib/python3/dist-packages/nacl",
            "python3-nacl (dkimpy's Ed25519 support)",
        );
        let index = index.to_string();
        self.run_with_resolv_conf(&["/usr/bin/dkimverify", "--index", &index], message)
            .await
    }

    async fn run_with_resolv_conf(&self, command: &[&str], stdin: &[u8]) -> Result<(), String> {
        require("/usr/bin/unshare", "util-linux");
        let resolv = self.resolv.path().join("resolv.conf");
        let mut child = tokio::process::Command::new("/usr/bin/unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
            .arg(&resolv)
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare (root is needed): {e}"));
        let mut input = child.stdin.take().expect("stdin was piped");
        let body = stdin.to_vec();
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&body).await;
        });
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("the verifier finished within 60 s")
                .expect("the verifier ran");
        let _ = writer.await;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && !said.to_ascii_lowercase().contains("fail") {
            Ok(())
        } else {
            Err(format!("{}: {said}", out.status))
        }
    }
}

/// Fails, naming the Debian package, when a program the test needs is missing.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (apt-get install -y {})",
        package.split_whitespace().next().unwrap_or(package)
    );
}

/// True when every signature mail-auth found passed, and there was at least one.
pub fn all_pass(results: &[DkimResult]) -> bool {
    !results.is_empty() && results.iter().all(|r| *r == DkimResult::Pass)
}

/// The key of `config`, loaded (for its record).
pub fn domain_key(config: &DkimKeyConfig) -> DomainKey {
    DomainKey::load(config).expect("the test key loads")
}
