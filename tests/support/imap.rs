//! A small IMAP4rev1 client, enough to read a mailbox back byte for byte: LOGIN, SELECT,
//! `UID FETCH 1:* (BODY.PEEK[])` with literals, LOGOUT. Blocking, with a read timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

/// One message as the server returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub uid: u32,
    pub body: Vec<u8>,
}

impl Imap {
    /// Connects to 127.0.0.1:`port` and logs in.
    pub fn login(port: u16, user: &str, password: &str) -> Imap {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to IMAP");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut imap = Imap {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
            tag: 0,
        };
        let greeting = imap.line();
        assert!(
            greeting.starts_with(b"* OK"),
            "greeting: {}",
            String::from_utf8_lossy(&greeting)
        );
        imap.command(&format!("LOGIN {user} {password}"));
        imap
    }

    fn line(&mut self) -> Vec<u8> {
        let mut l = Vec::new();
        self.reader
            .read_until(b'\n', &mut l)
            .expect("read from IMAP");
        assert!(!l.is_empty(), "IMAP server closed the connection");
        l
    }

    /// Sends a command and returns the untagged lines with their literals, each line joined
    /// with the literal that follows it. Panics unless the server answers OK.
    pub fn command(&mut self, cmd: &str) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.writer
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .unwrap();
        let mut out = Vec::new();
        loop {
            let line = self.line();
            if line.starts_with(tag.as_bytes()) {
                let text = String::from_utf8_lossy(&line);
                assert!(
                    text[tag.len()..].trim_start().starts_with("OK"),
                    "{cmd}: {text}"
                );
                return out;
            }
            let mut literals = Vec::new();
            let mut head = line.clone();
            let mut last = line;
            while let Some(n) = literal_size(&last) {
                let mut lit = vec![0u8; n];
                self.reader.read_exact(&mut lit).unwrap();
                literals.push(lit);
                last = self.line();
                head.extend_from_slice(&last);
            }
            out.push((head, literals));
        }
    }

    /// Selects INBOX and returns every message in UID order.
    pub fn fetch_all(&mut self) -> Vec<Fetched> {
        let selected = self.command("SELECT INBOX");
        let exists = selected.iter().any(|(l, _)| {
            let t = String::from_utf8_lossy(l);
            t.starts_with("* ") && t.trim_end().ends_with(" EXISTS") && !t.starts_with("* 0 ")
        });
        if !exists {
            return Vec::new();
        }
        let mut msgs: Vec<Fetched> = self
            .command("UID FETCH 1:* (UID BODY.PEEK[])")
            .into_iter()
            .filter_map(|(line, mut lits)| {
                let text = String::from_utf8_lossy(&line).to_string();
                let uid = text
                    .split("UID ")
                    .nth(1)?
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()?;
                (!lits.is_empty()).then(|| Fetched {
                    uid,
                    body: lits.remove(0),
                })
            })
            .collect();
        msgs.sort_by_key(|m| m.uid);
        msgs
    }

    pub fn logout(mut self) {
        self.tag += 1;
        let _ = self
            .writer
            .write_all(format!("a{} LOGOUT\r\n", self.tag).as_bytes());
    }
}

/// `{123}` at the end of a line (before CRLF).
fn literal_size(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n").unwrap_or(line);
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&l[open + 1..]).ok()?.parse().ok()
}
