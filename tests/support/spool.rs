//! Helpers for the spool tests: envelopes and bodies that check themselves.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;

use postrider::{Address, Envelope, ReversePath};

/// An envelope whose ENVID names the body it travels with (`body-<seed>-<len>`), so a test can
/// check any message it finds in a spool, including ones whose insert never returned.
pub fn envelope_for(seed: u64, len: usize) -> Envelope {
    let mut env = Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [
            Address::parse("alice@example.org").unwrap(),
            Address::parse("bob@example.net").unwrap(),
        ],
    );
    env.set_envid(&format!("body-{seed}-{len}")).unwrap();
    env
}

/// A plain two-recipient envelope.
pub fn envelope() -> Envelope {
    envelope_for(0, 0)
}

/// The body `envelope_for(seed, len)` describes: a header, then bytes derived from the seed.
pub fn body_for(seed: u64, len: usize) -> Vec<u8> {
    let mut out = format!("X-Seed: {seed}\r\n\r\n").into_bytes();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.truncate(len);
    out
}

/// The (seed, len) an envelope from [`envelope_for`] carries.
pub fn seed_of(env: &Envelope) -> (u64, usize) {
    let envid = env
        .envid
        .as_deref()
        .expect("the test envelope has an ENVID");
    let mut parts = envid.strip_prefix("body-").unwrap().split('-');
    let seed = parts.next().unwrap().parse().unwrap();
    let len = parts.next().unwrap().parse().unwrap();
    (seed, len)
}

/// Names of the files in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}
